"""Every picture the tester draws: a run's plot.png and a comparison's compare.png.

One layout rule for every figure (:func:`_new_figure` and :func:`_save`): matplotlib's
Agg canvas used directly (no pyplot state, no display needed), stacked panels sharing
the time axis, light grid, y from 0, legends in small type, and fixed margins --
``tight_layout`` measures every text first, which was a third of the drawing time of a
short run (P7).  The data come from the run folder (samples.csv, run.json) through
:mod:`stress.documents`, never from a live arena, so ``report`` redraws a saved run the
same way.

matplotlib takes about 0.7 s to import here, half of a short run's start+stop time:
:func:`preload_plot` starts that import in a thread while the workers run.
"""

from __future__ import annotations

import math
import sys
import threading
from pathlib import Path
from typing import Any

from stress.documents import PLOT_PNG, DocumentError, load_run
from stress.files import write_atomic
from stress.output.comparison import run_series
from stress.samples import SAMPLES_CSV, read_samples

COMPARE_PNG = "compare.png"
#: samples.csv columns that :func:`plot_run` draws (the manager may write more).
PLOT_COLUMNS = ("t", "running", "mbufs_current", "mbufs_cache", "clusters_current", "clusters_cache", "clusters_max",
                "packets_cache")
#: the one set of margins (fractions of the figure): room for two-line y labels
MARGINS = {"left": 0.09, "right": 0.98, "top": 0.91, "bottom": 0.08, "hspace": 0.08}

_PLOT_IMPORT: threading.Thread | None = None


def _import_plotting() -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    from matplotlib.figure import Figure  # noqa: F401


def preload_plot() -> None:
    """Start importing matplotlib (Figure, Agg canvas) in a daemon thread, so that the
    plot at the end of a run does not pay for it (about 0.7 s here, half of a short
    run's start+stop time, P7).  Call it only after the run's last fork: a fork while
    this thread holds the import lock would leave the child's imports locked.  Every
    plot waits for it.  The import costs the same CPU time, only earlier, in the
    manager (while the workers run)."""
    global _PLOT_IMPORT
    if _PLOT_IMPORT is None and "matplotlib.figure" not in sys.modules:
        _PLOT_IMPORT = threading.Thread(target=_import_plotting, name="preload-plot", daemon=True)
        _PLOT_IMPORT.start()


def _figure(width: float, height: float) -> Any:
    """An empty figure on an Agg canvas (after the preload, if one is running)."""
    global _PLOT_IMPORT
    if _PLOT_IMPORT is not None:
        _PLOT_IMPORT.join()
        _PLOT_IMPORT = None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _new_figure(width: float, height: float, ratios: tuple[int, int]) -> tuple[Any, Any, Any]:
    """A 2-panel figure sharing the time axis: (figure, upper axes, lower axes)."""
    fig = _figure(width, height)
    upper, lower = fig.subplots(2, 1, sharex=True, height_ratios=ratios)
    return fig, upper, lower


def _save(fig: Any, axes: tuple[Any, ...], path: Path) -> Path:
    """The layout rule, then the file: grid, y from 0, time axis labelled, fixed margins."""
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
    axes[-1].set_xlabel("time (s)")
    fig.subplots_adjust(**MARGINS)
    return write_atomic(Path(path), lambda f: fig.savefig(f, format="png"))  # whole or not at all


def _no_samples(ax: Any) -> None:
    ax.text(0.5, 0.5, "no samples", ha="center", va="center", transform=ax.transAxes)


def _plot_context(folder: Path) -> tuple[str, float | None, int, dict[str, Any]]:
    """From run.json when it is there: a title (what ran, how it ended), the wedge time,
    the clusters the final audit found lost (a true leak), and the configuration."""
    try:
        doc = load_run(folder, validate=False)  # a title only: the schema's import is not worth it
    except DocumentError:
        return folder.name, None, 0, {}
    c = doc["config"]
    what = (f"{c.get('workload', '?')}, era {c.get('era', '?')} (refcount {c.get('refcount', '?')}, "
            f"wakeup {c.get('wakeup', '?')}, policy {c.get('policy', '?')}), {c.get('cpus', '?')} CPUs")
    wedge = doc.get("wedge")
    at = wedge.get("at_s") if isinstance(wedge, dict) else None
    lost = ((doc.get("audit") or {}).get("lost") or {}).get("cluster") if isinstance(doc.get("audit"), dict) else 0
    return (f"{folder.name}\n{what}: verdict {doc.get('verdict', '?')}",
            float(at) if isinstance(at, (int, float)) else None,
            int(lost) if isinstance(lost, int) else 0, c)


def planned_idle(config: dict[str, Any], end: float) -> list[tuple[float, float]] | None:
    """The idle part of each round as the run planned it (``--rounds R --round-length S
    --idle S``: the manager's schedule), cut at ``end``; None without rounds and idle."""
    try:
        rounds, length, idle = int(config["rounds"]), float(config["round_length"]), float(config["idle"])
    except (KeyError, TypeError, ValueError):
        return None
    if rounds <= 0 or idle <= 0:
        return None
    spans = [(k * (length + idle) + length, (k + 1) * (length + idle)) for k in range(rounds)]
    return [(a, min(b, end)) for a, b in spans if a < end]


def idle_spans(t: list[float], running: list[float]) -> list[tuple[float, float]]:
    """The stretches of time with the load off as the samples saw it (samples.csv
    ``running`` 0), from the first idle sample to the next busy one: the samples bound
    them, every ``--interval``."""
    spans: list[tuple[float, float]] = []
    start: float | None = None
    for ti, r in zip(t, running, strict=False):
        idle = not math.isnan(r) and r == 0
        if idle and start is None:
            start = ti
        elif not idle and start is not None:
            spans.append((start, ti))
            start = None
    if start is not None and t:
        spans.append((start, t[-1]))
    return spans


def plot_run(folder: Path, title: str | None = None) -> Path:
    """Draw ``folder/plot.png`` from ``folder/samples.csv`` and return its path.

    Two panels sharing the time axis: mbufs (current and cache) and clusters (current,
    cache, and the clusters cached in the packet zone when sampled), the netstat -m
    numbers, with the cluster limit ``clusters_max`` as a dashed line.  The 2005 wedge
    shows as clusters current climbing to the limit while mbufs current stays flat.
    When the limit is far above every curve it is named in the legend instead of drawn,
    so that it does not flatten them.  The idle part of each round (load off) is shaded,
    as the run planned it (run.json's rounds), else as the samples saw it.
    Clusters the final audit found lost (the refcount race's true leak) are drawn apart
    from those in use: a red bar at the end of the run, from 0 to the lost count (netstat
    -m counts them in "current": nothing short of an audit can tell them apart while the
    run goes on).  Columns missing from the CSV are left out.
    """
    folder = Path(folder)
    samples_path = folder / SAMPLES_CSV
    cols = read_samples(samples_path) if samples_path.exists() else {}
    default_title, wedged_at, lost, config = _plot_context(folder)
    t = cols.get("t", [])

    fig, ax_m, ax_c = _new_figure(9, 6, (1, 1))
    current = "current (lost included)" if lost else "current"
    panels = (
        (ax_m, "mbufs", (("mbufs_current", "current"), ("mbufs_cache", "cache"))),
        (ax_c, "mbuf clusters", (("clusters_current", current), ("clusters_cache", "cache"),
                                 ("packets_cache", "cached in packet zone"))),
    )
    planned = planned_idle(config, t[-1]) if t else None
    spans = planned if planned is not None else idle_spans(t, cols.get("running", []))
    for ax, label, series in panels:
        drawn = [(name, ys) for col, name in series if (ys := cols.get(col)) and t]
        for name, ys in drawn:
            ax.plot(t, ys, "-", label=name)
        limits = [y for y in cols.get("clusters_max", []) if not math.isnan(y)]
        if ax is ax_c and limits and t:
            top = max((y for _, ys in drawn for y in ys if not math.isnan(y)), default=0.0)
            if top >= 0.2 * max(limits):
                ax.plot(t, cols["clusters_max"], "--", color="black", label="limit (max)")
            else:
                ax.plot([], [], "--", color="black", label=f"limit (max) {max(limits):.0f}, off scale")
            drawn.append(("limit", limits))
        if ax is ax_c and lost and t:
            ax.plot([t[-1]] * 2, [0, lost], "-", color="red", linewidth=4, solid_capstyle="butt",
                    label=f"lost at the end (audit): {lost}")
        for i, (a, b) in enumerate(spans):
            ax.axvspan(a, b, color="0.85", zorder=0, label="idle (load off)" if i == 0 else None)
        if wedged_at is not None and drawn:
            ax.axvline(wedged_at, color="red", linestyle=":", label=f"wedged at {wedged_at:.1f} s")
        ax.set_ylabel(label)
        if drawn:
            ax.legend(loc="best", fontsize="small", framealpha=0.8)
        else:
            _no_samples(ax)
    ax_m.set_title(title if title is not None else default_title, fontsize="medium")
    return _save(fig, (ax_m, ax_c), folder / PLOT_PNG)


def palette(n: int) -> list[Any]:
    """``n`` colours for ``n`` variants: matplotlib's qualitative maps without their greys
    (grey is for limits and shading, never a variant), repeated only past 24."""
    from matplotlib import colormaps

    colours: list[Any] = []
    for name, greys in (("tab10", {7}), ("Dark2", {7}), ("Set1", {8})):
        cmap = colormaps[name]
        colours += [cmap(i) for i in range(cmap.N) if i not in greys]
    return [colours[i % len(colours)] for i in range(n)]


def limit_in_range(limit: float | None, top: float) -> bool:
    """Whether the cluster limit belongs on a time series whose data reach ``top``: only
    when it is near the data (within 15% above the highest point), so that a limit far
    above every curve does not flatten them (it is then named in the legend)."""
    return limit is not None and top > 0 and limit <= 1.15 * top


def _run_series_of(out: Path, run: dict[str, Any]) -> dict[str, list[float]]:
    folder = out / str(run.get("dir", ""))
    try:
        doc = load_run(folder, validate=False)  # its samples are what is drawn
    except DocumentError:
        return {}
    try:
        return run_series(doc, folder)
    except (OSError, ValueError):
        return {}


def _figure_panel(ax: Any, doc: dict[str, Any], key: str, colours: list[Any]) -> None:
    """One key figure: every run a dot, the median a bar and its 95% interval a line,
    the baseline's median a dashed line across."""
    from stress.output.comparison import BY_KEY

    f = BY_KEY[key]
    names = []
    for i, v in enumerate(doc["variants"]):
        values = [r["figures"].get(key) for r in v["runs"] if (r.get("figures") or {}).get(key) is not None]
        n = len(values)
        xs = [i + 0.25 * ((j + 0.5) / n - 0.5) for j in range(n)]  # spread the dots, deterministically
        ax.plot(xs, values, "o", color=colours[i], alpha=0.55, markersize=4, zorder=2)
        s = v["summary"][key]
        if s["median"] is not None:
            ax.plot([i - 0.22, i + 0.22], [s["median"]] * 2, "-", color=colours[i], linewidth=2.5, zorder=3)
            if s["low"] is not None:
                ax.plot([i + 0.3] * 2, [s["low"], s["high"]], "-", color=colours[i], linewidth=1.5, zorder=3)
                ax.plot([i + 0.3], [s["median"]], "_", color=colours[i], markersize=8, zorder=3)
            if v.get("baseline"):
                ax.axhline(s["median"], color=colours[i], linestyle="--", linewidth=0.8, zorder=1)
        names.append(v["name"] + ("\n(baseline)" if v.get("baseline") else ""))
    tilt = len(names) > 3 or max((len(n) for n in names), default=0) > 12  # long names would overlap
    ax.set_xticks(range(len(names)), names, rotation=30 if tilt else 0, ha="right" if tilt else "center",
                  fontsize="small")
    ax.set_title(f"{f.label} ({f.unit}; {f.better} is better)", fontsize="medium")
    ax.grid(True, alpha=0.3)
    ax.set_xlim(-0.6, len(names) - 0.4)


def plot_compare(out: Path, doc: dict[str, Any]) -> Path:
    """compare.png: a panel per key figure (every run a dot, the median a bar and its 95%
    interval a line beside it, the baseline's median dashed across), then clusters in
    use (in flight + stranded in the packet cache) and the stranded clusters alone over
    time, every run of every variant, one colour per variant; the cluster limit only
    where it is in range of the curves."""
    from stress.output.comparison import KEY_FIGURES

    variants = doc["variants"]
    fig = _figure(12, 11)
    colours = palette(len(variants))
    grid = fig.add_gridspec(4, len(KEY_FIGURES), height_ratios=(1.2, 0.45, 1, 0.8), hspace=0.12, wspace=0.3)
    for j, key in enumerate(KEY_FIGURES):
        _figure_panel(fig.add_subplot(grid[0, j]), doc, key, colours)
    ax = fig.add_subplot(grid[2, :])
    ax_s = fig.add_subplot(grid[3, :], sharex=ax)
    ax.tick_params(labelbottom=False)
    top = 0.0
    base_limit = (doc.get("base") or {}).get("nmbclusters")
    limits: dict[int, float] = {}  # variant -> its limit (they differ when nmbclusters varies)
    drawn = False
    for i, v in enumerate(variants):
        label: str | None = v["name"] + (" (baseline)" if v.get("baseline") else "")
        limit = (v.get("config") or {}).get("nmbclusters", base_limit)
        for run in v["runs"]:
            s = _run_series_of(out, run)
            t, cur, cache = s.get("t", []), s.get("clusters_current", []), s.get("packets_cache", [])
            if not (t and cur):
                continue
            y = [a + b for a, b in zip(cur, cache, strict=False)] if cache else cur
            ax.plot(t[:len(y)], y, "-", color=colours[i], linewidth=1.0, alpha=0.7, label=label)
            if cache:
                ax_s.plot(t[:len(cache)], cache, "-", color=colours[i], linewidth=1.0, alpha=0.7)
            top = max(top, max((x for x in y if not math.isnan(x)), default=0.0))
            if limit is None and s.get("clusters_max"):
                limit = max((x for x in s["clusters_max"] if not math.isnan(x)), default=None)
            label = None  # one legend entry per variant
            drawn = True
        if limit is not None:
            limits[i] = float(limit)
    one_limit = len(set(limits.values())) == 1
    for i, limit in limits.items():
        colour = "black" if one_limit else colours[i]
        name = "limit (nmbclusters)" if one_limit else f"limit of {variants[i]['name']}"
        if limit_in_range(limit, top):
            ax.axhline(limit, linestyle=":", color=colour, linewidth=1.5, zorder=1, label=name)
        else:
            ax.plot([], [], ":", color=colour, label=f"{name} {limit:,.0f} (off scale)")
        if one_limit:
            break
    ax.set_ylabel("clusters in use\n(in flight + packet cache)")
    ax.set_title("cluster usage over time: every run, one colour per variant", fontsize="medium")
    ax_s.set_ylabel("stranded clusters\n(in packet cache)")
    ax_s.set_xlabel("time (s)")
    for a in (ax, ax_s):
        a.grid(True, alpha=0.3)
        a.set_ylim(bottom=0)
    if drawn:
        ax.legend(loc="upper left", fontsize="small", ncols=3 if len(variants) > 6 else 2)
    else:
        for a in (ax, ax_s):
            a.text(0.5, 0.5, "no samples (run folders not found)", ha="center", va="center", transform=a.transAxes)
    state = "" if doc.get("state", "complete") == "complete" else f" -- {str(doc['state']).upper()}"
    fig.suptitle(f"compare: {len(variants)} variants, {doc.get('repeats', 0)} repeats{state}", fontsize="large")
    fig.subplots_adjust(left=0.1, right=0.98, top=0.93, bottom=0.05)
    return write_atomic(out / COMPARE_PNG, lambda f: fig.savefig(f, format="png"))  # whole or not at all
