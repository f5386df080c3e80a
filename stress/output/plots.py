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
PLOT_COLUMNS = ("t", "mbufs_current", "mbufs_cache", "clusters_current", "clusters_cache", "clusters_max")
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


def _new_figure(width: float, height: float, ratios: tuple[int, int]) -> tuple[Any, Any, Any]:
    """A 2-panel figure sharing the time axis: (figure, upper axes, lower axes)."""
    global _PLOT_IMPORT
    if _PLOT_IMPORT is not None:
        _PLOT_IMPORT.join()
        _PLOT_IMPORT = None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
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


def _plot_context(folder: Path) -> tuple[str, float | None]:
    """From run.json when it is there: a title (what ran, how it ended) and the wedge time."""
    try:
        doc = load_run(folder, validate=False)  # a title only: the schema's import is not worth it
    except DocumentError:
        return folder.name, None
    c = doc["config"]
    what = (f"{c.get('workload', '?')}, era {c.get('era', '?')} (refcount {c.get('refcount', '?')}, "
            f"wakeup {c.get('wakeup', '?')}, policy {c.get('policy', '?')}), {c.get('cpus', '?')} CPUs")
    wedge = doc.get("wedge")
    at = wedge.get("at_s") if isinstance(wedge, dict) else None
    return f"{folder.name}\n{what}: verdict {doc.get('verdict', '?')}", (
        float(at) if isinstance(at, (int, float)) else None)


def plot_run(folder: Path, title: str | None = None) -> Path:
    """Draw ``folder/plot.png`` from ``folder/samples.csv`` and return its path.

    Two panels sharing the time axis: mbufs (current and cache) and clusters (current,
    cache, and the clusters cached in the packet zone when sampled), the netstat -m
    numbers, with the cluster limit ``clusters_max`` as a dashed line.  The 2005 wedge
    shows as clusters current climbing to the limit while mbufs current stays flat.
    When the limit is far above every curve it is named in the legend instead of drawn,
    so that it does not flatten them.  Columns missing from the CSV are left out.
    """
    folder = Path(folder)
    samples_path = folder / SAMPLES_CSV
    cols = read_samples(samples_path) if samples_path.exists() else {}
    default_title, wedged_at = _plot_context(folder)
    t = cols.get("t", [])

    fig, ax_m, ax_c = _new_figure(9, 6, (1, 1))
    panels = (
        (ax_m, "mbufs", (("mbufs_current", "current"), ("mbufs_cache", "cache"))),
        (ax_c, "mbuf clusters", (("clusters_current", "current"), ("clusters_cache", "cache"),
                                 ("packets_cache", "cached in packet zone"))),
    )
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
        if wedged_at is not None and drawn:
            ax.axvline(wedged_at, color="red", linestyle=":", label=f"wedged at {wedged_at:.1f} s")
        ax.set_ylabel(label)
        if drawn:
            ax.legend(loc="best", fontsize="small", framealpha=0.8)
        else:
            _no_samples(ax)
    ax_m.set_title(title if title is not None else default_title, fontsize="medium")
    return _save(fig, (ax_m, ax_c), folder / PLOT_PNG)


def plot_compare(out: Path, rows: list[dict[str, Any]], folder: Path, limit: float | None) -> Path:
    """compare.png: clusters in use (in flight + stranded in the packet cache) over time,
    one line per configuration (its first repeat), and the cluster limit dashed; below
    it, the stranded part alone (the packet cache), where the policies differ."""
    fig, ax, ax_s = _new_figure(10, 7.5, (3, 2))
    drawn = False
    for i, r in enumerate(rows):
        if not r["runs"]:
            continue
        run_dir = folder / r["runs"][0]["dir"]
        try:
            doc = load_run(run_dir)
        except DocumentError:
            doc = {}
        s = run_series(doc, run_dir)
        t, cur, cache = s.get("t", []), s.get("clusters_current", []), s.get("packets_cache", [])
        style = {"label": r["label"], "linewidth": 1.3, "zorder": 3 + i,
                 "linestyle": "-" if i < 10 else "--"}
        if t and cur:
            y = [a + b for a, b in zip(cur, cache, strict=False)] if cache else cur
            ax.plot(t[:len(y)], y, **style)
            drawn = True
            if limit is None and s.get("clusters_max"):
                limit = max((x for x in s["clusters_max"] if not math.isnan(x)), default=None)
        if t and cache:
            ax_s.plot(t[:len(cache)], cache, **style)
    if limit:
        ax.axhline(limit, linestyle=":", color="gray", linewidth=2.5, zorder=1, label="limit (nmbclusters)")
    ax.set_ylabel("clusters in use\n(in flight + in packet cache)")
    ax.set_title("cluster usage per configuration (first repeat of each)", fontsize="medium")
    ax_s.set_ylabel("stranded clusters\n(in packet cache)")
    if drawn or limit:
        ax.legend(loc="upper left", fontsize="small", ncols=2)
    if not drawn:
        _no_samples(ax)
    return _save(fig, (ax, ax_s), out / COMPARE_PNG)
