"""``python -m stress compare``: the same seeded workload under several configurations.

Why: a trimming policy is only better than another under the same load, measured the
same way, with the noise of a shared 2-core machine in view.  So compare runs every
configuration ``--repeat R`` times with the same seeds (repeat r uses ``seed + r`` in
every configuration), reduces each run to the figures of policies.md, and prints one
table of median and spread per figure, warning loudly where the spread is too wide to
rank the configurations.

Data flow::

    compare.main(args)
      for each repeat r, for each configuration c:        (interleaved: drift hits all alike)
        stress.manager.execute(RunConfig(c, seed + r), OUT/<c>-r<r>/) -> run.json document
        run_figures(doc, folder)                          -> one row of figures
      summarise(rows)  -> median, min, max, spread per configuration and figure
      OUT/compare.json   format "zonelimit.compare/1" (below)
      OUT/compare.txt    the table exactly as printed, with the warnings and the target check
      OUT/compare.png    cluster usage over time, one line per configuration, and the limit

compare.json (``"zonelimit.compare/1"``)::

    {"format": "zonelimit.compare/1", "version": .., "created": "<ISO time>",
     "base": {resolved options shared by every configuration},
     "repeat": R, "seeds": [..],
     "figures": [{"key": .., "label": .., "unit": .., "better": "lower" | "higher"}, ..],
     "rows": [{"label": "modern:median", "era": .., "policy": .., "refcount": .., "wakeup": ..,
               "summary": {figure: {"median": .., "min": .., "max": .., "spread": .., "n": ..}},
               "runs": [{"dir": "<relative run folder>", "seed": .., "verdict": .., "exit_code": ..,
                         "figures": {figure: value or null}}]}, ..],
     "warnings": ["..."], "target": {"met": bool | null, "checks": ["..."]}}

``spread`` is (max - min) / |median| (0 when every value is equal; null with one run).

Where the figures come from (run.json and the run folder's samples.csv): the sample
columns ``t``, ``clusters_current`` (clusters in flight: netstat -m current),
``packets_cache`` (packets cached in the packet zone, each holding a cluster: the
stranded clusters), ``clusters_max`` (the limit), and ``ops`` (cumulative operations);
run.json's ``ops`` (``per_s``; ``packets_per_s``: what the workload delivered, segments
or RPCs), ``zones`` (``req``, ``fail``, ``sleep``, and ``misses`` when the
runner records it), ``locks`` (``wait_total_us``), ``wedge`` and ``verdict``.  A figure
whose source is missing is null in compare.json and ``-`` in the table, never a guess.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from allocator.policy import POLICY_NAMES, POLICY_PARAMS
from stress.config import ERAS, RunConfig, resolve_era
from stress.results import package_version, read_samples
from stress.workloads import WORKLOADS

COMPARE_FORMAT = "zonelimit.compare/1"
COMPARE_JSON = "compare.json"
COMPARE_TXT = "compare.txt"
COMPARE_PNG = "compare.png"

Execute = Callable[..., dict[str, Any]]
"""``stress.manager.execute(cfg, out_dir, echo=None) -> run.json document``."""

DEFAULT_CONFIGS = ("2005", "2007") + tuple(f"modern:{p}" for p in POLICY_NAMES)
"""The default comparison: --era 2005, --era 2007, --era modern with each policy."""

BUCKET_MAX = 128  #: a recovered cache may keep about one bucket (allocator/layout.py BUCKET_MAX)
EXIT_SIGINT = 130  #: a run's exit code after Ctrl-C (cli.md)
EXIT_SIGTERM = 143  #: a run's exit code after SIGTERM


@dataclass(frozen=True)
class Figure:
    """One column of the compare table."""

    key: str
    label: str
    unit: str
    better: str  # "lower" or "higher"
    fmt: str = "{:,.0f}"


FIGURES: tuple[Figure, ...] = (
    Figure("stranded_avg", "stranded clusters (avg)", "clusters", "lower"),
    Figure("stranded_peak", "stranded clusters (peak)", "clusters", "lower"),
    Figure("inuse_peak", "peak clusters in use", "clusters", "lower"),
    Figure("inflight_peak", "peak clusters in flight", "clusters", "lower"),
    Figure("miss_rate", "miss rate", "%", "lower", "{:.2f}"),
    Figure("ops_per_s", "throughput", "ops/s", "higher"),
    Figure("packets_per_s", "delivered (packets, RPCs)", "/s", "higher"),
    Figure("lock_wait_us_per_op", "lock wait per op", "us", "lower", "{:.3f}"),
    Figure("sleeps", "zonelimit sleeps", "sleeps", "lower"),
    Figure("fails", "failed allocs", "allocs", "lower"),
    Figure("wedged", "wedges", "runs", "lower"),
    Figure("recovery_s", "recovery time", "s", "lower", "{:.2f}"),
)
FIGURE_KEYS = tuple(f.key for f in FIGURES)


class UsageError(ValueError):
    """Bad compare options: one line for stderr, exit 2."""


# --- configurations -----------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One configuration of the comparison: an era, optionally with a policy."""

    label: str
    era: str
    policy: str | None


def parse_configs(text: str) -> list[Variant]:
    """``2005,2007,modern:median`` -> variants; raise UsageError naming what is allowed."""
    out: list[Variant] = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        era, _, policy = item.partition(":")
        if era not in ERAS:
            raise UsageError(f"--configs: unknown era {era!r} in {item!r} (allowed: {', '.join(ERAS)})")
        if policy and policy not in POLICY_NAMES:
            raise UsageError(
                f"--configs: unknown policy {policy!r} in {item!r} (allowed: {', '.join(POLICY_NAMES)})")
        out.append(Variant(item, era, policy or None))
    if not out:
        raise UsageError("--configs: no configuration given (for example: 2005,2007,modern:median)")
    if len({v.label for v in out}) != len(out):
        raise UsageError("--configs: a configuration is listed twice")
    return out


def parse_policy_params(items: Sequence[str]) -> dict[str, dict[str, float]]:
    """``median.k=3`` items -> {"median": {"k": 3.0}}; raise UsageError on a bad item."""
    out: dict[str, dict[str, float]] = {}
    for item in items:
        name, eq, value = item.partition("=")
        policy, dot, param = name.partition(".")
        if not eq or not dot:
            raise UsageError(f"--policy-param: expected POLICY.PARAM=VALUE, got {item!r}")
        if policy not in POLICY_PARAMS:
            allowed = ", ".join(POLICY_NAMES)
            raise UsageError(f"--policy-param: unknown policy {policy!r} (allowed: {allowed})")
        if param not in POLICY_PARAMS[policy]:
            allowed = ", ".join(POLICY_PARAMS[policy]) or "none"
            raise UsageError(
                f"--policy-param: policy {policy!r} has no parameter {param!r} (allowed: {allowed})")
        try:
            out.setdefault(policy, {})[param] = float(value)
        except ValueError:
            raise UsageError(f"--policy-param: {item!r}: {value!r} is not a number") from None
    return out


def variant_config(base: dict[str, Any], v: Variant, seed: int,
                   params: dict[str, dict[str, float]]) -> RunConfig:
    """The RunConfig of one run: the base options, the variant's era preset and policy."""
    knobs = resolve_era(v.era, {"policy": v.policy})
    policy = knobs["policy"]
    return RunConfig(**{**base, **knobs, "era": v.era, "seed": seed,
                        "policy_params": dict(params.get(policy, {}))})


# --- figures of one run -------------------------------------------------------------


def run_series(doc: dict[str, Any], folder: Path) -> dict[str, list[float]]:
    """The per-sample columns of a run: run.json's ``series`` (columns) if present, else samples.csv."""
    series = doc.get("series")
    if isinstance(series, dict) and series:
        return {k: [float(x) if x is not None else math.nan for x in v] for k, v in series.items()}
    samples = doc.get("samples")
    if isinstance(samples, list) and samples and isinstance(samples[0], dict):
        keys = {k for s in samples for k in s}
        return {k: [float(s[k]) if s.get(k) is not None else math.nan for s in samples] for k in keys}
    name = samples if isinstance(samples, str) else "samples.csv"
    path = Path(folder) / name
    return read_samples(path) if path.exists() else {}


def _finite(xs: Sequence[float]) -> list[float]:
    return [x for x in xs if not math.isnan(x)]


def time_average(t: Sequence[float], y: Sequence[float]) -> float | None:
    """Time-weighted mean of a sampled step function (each value holds until the next sample)."""
    pts = [(a, b) for a, b in zip(t, y, strict=False) if not (math.isnan(a) or math.isnan(b))]
    if not pts:
        return None
    if len(pts) == 1 or pts[-1][0] <= pts[0][0]:
        return statistics.fmean(b for _, b in pts)
    area = sum(pts[i][1] * (pts[i + 1][0] - pts[i][0]) for i in range(len(pts) - 1))
    return area / (pts[-1][0] - pts[0][0])


def op_rates(t: Sequence[float], ops: Sequence[float]) -> list[float]:
    """Operations per second between consecutive samples (index i: from sample i-1 to i;
    index 0 and unusable intervals are NaN)."""
    rates = [math.nan]
    for i in range(1, min(len(t), len(ops))):
        dt = t[i] - t[i - 1]
        ok = dt > 0 and not (math.isnan(ops[i]) or math.isnan(ops[i - 1]))
        rates.append((ops[i] - ops[i - 1]) / dt if ok else math.nan)
    return rates


def load_drops(rates: Sequence[float]) -> list[int]:
    """Sample indexes where the operation rate falls below 10% of the busiest rate so far
    after having been above half of it: the moments the load dropped."""
    drops: list[int] = []
    peak = 0.0
    busy = False
    for i, rate in enumerate(rates):
        if math.isnan(rate):
            continue
        peak = max(peak, rate)
        if busy and rate < 0.1 * peak:
            drops.append(i)
            busy = False
        elif peak > 0 and rate >= 0.5 * peak:
            busy = True
    return drops


def recovery_time(t: Sequence[float], ops: Sequence[float], cache: Sequence[float]) -> float | None:
    """Median over load drops of the time from the drop until the packet cache is back
    near the idle working set: at most max(one bucket, 10% of what it held at the drop).
    A drop the cache does not recover from before the load resumes (or the run ends)
    counts as the whole time until then.  None if the load never dropped."""
    n = min(len(t), len(ops), len(cache))
    rates = op_rates(t[:n], ops[:n])
    peak = max(_finite(rates), default=0.0)
    times: list[float] = []
    for i in load_drops(rates):
        start = i - 1  # the last sample taken while the load was still on
        held = 0.0 if math.isnan(cache[start]) else cache[start]
        near = max(float(BUCKET_MAX), 0.1 * held)
        end = n - 1
        for j in range(i, n):
            if not math.isnan(cache[j]) and cache[j] <= near:
                end = j
                break
            if not math.isnan(rates[j]) and rates[j] >= 0.5 * peak:
                end = j  # the load came back first: censored here
                break
        times.append(t[end] - t[start])
    return statistics.median(times) if times else None


def _zone_sum(doc: dict[str, Any], key: str) -> float | None:
    zones = doc.get("zones") or []
    vals = [z.get(key) for z in zones if isinstance(z, dict)]
    if not vals or any(v is None for v in vals):
        return None
    return float(sum(float(v) for v in vals if v is not None))


def run_figures(doc: dict[str, Any], folder: Path) -> dict[str, float | None]:
    """The figures of policies.md for one run (None where the run did not record the source)."""
    s = run_series(doc, folder)
    t = s.get("t", [])
    cache = s.get("packets_cache", [])
    limit = s.get("clusters_max", [])
    if cache and limit:
        # a cached packet holds a cluster, so no more than the limit can be stranded: a
        # larger sample is a torn read of the per-CPU counts taken while workers run
        cache = [c if math.isnan(lim) else min(c, lim) for c, lim in zip(cache, limit, strict=False)]
    current = s.get("clusters_current", [])
    fig: dict[str, float | None] = dict.fromkeys(FIGURE_KEYS)
    if t and cache:
        fig["stranded_avg"] = time_average(t, cache)
        fig["stranded_peak"] = max(_finite(cache), default=None)
    if current:
        fig["inflight_peak"] = max(_finite(current), default=None)
        if cache:
            inuse = [a + b for a, b in zip(current, cache, strict=False)]
            fig["inuse_peak"] = max(_finite(inuse), default=None)
    peak = doc.get("peak") or {}
    if fig["stranded_peak"] is None and peak.get("packet_cache") is not None:
        fig["stranded_peak"] = float(peak["packet_cache"])
    if fig["inflight_peak"] is None and peak.get("clusters_current") is not None:
        fig["inflight_peak"] = float(peak["clusters_current"])
    ops = doc.get("ops") or {}
    if ops.get("per_s") is not None:
        fig["ops_per_s"] = float(ops["per_s"])
    if ops.get("packets_per_s") is not None:
        fig["packets_per_s"] = float(ops["packets_per_s"])
    total_ops = float(ops.get("total") or 0)
    locks = doc.get("locks")
    if locks and total_ops > 0:
        fig["lock_wait_us_per_op"] = sum(float(r.get("wait_total_us") or 0) for r in locks) / total_ops
    req, misses = _zone_sum(doc, "req"), _zone_sum(doc, "misses")
    if req and misses is not None:
        fig["miss_rate"] = 100.0 * misses / req
    fig["sleeps"] = _zone_sum(doc, "sleep")
    fig["fails"] = _zone_sum(doc, "fail")
    fig["wedged"] = 1.0 if doc.get("verdict") == "wedged" or doc.get("wedge") else 0.0
    if t and cache and "ops" in s:
        fig["recovery_s"] = recovery_time(t, s["ops"], cache)
    return fig


# --- summary ------------------------------------------------------------------------


def summarise(values: Sequence[float | None]) -> dict[str, float | int | None]:
    """Median, min, max and relative spread of one figure over repeats (Nones ignored)."""
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not xs:
        return {"median": None, "min": None, "max": None, "spread": None, "n": 0}
    med = statistics.median(xs)
    lo, hi = min(xs), max(xs)
    if len(xs) < 2:
        spread: float | None = None
    elif hi == lo:
        spread = 0.0
    else:
        spread = (hi - lo) / abs(med) if med else math.inf
    return {"median": med, "min": lo, "max": hi, "spread": spread, "n": len(xs)}


def rank_warnings(rows: list[dict[str, Any]], max_spread: float) -> list[str]:
    """Loud warnings where the spread is too wide to rank: a configuration whose figure
    varies by more than ``max_spread`` over repeats while its range overlaps another's."""
    warnings: list[str] = []
    for f in FIGURES:
        if f.key in ("wedged",):
            continue
        wide = []
        for r in rows:
            s = r["summary"][f.key]
            if s["spread"] is None or s["spread"] <= max_spread:
                continue
            overlaps = []
            for o in rows:
                so = o["summary"][f.key]
                apart = so["min"] is None or so["min"] > s["max"] or so["max"] < s["min"]
                if o is not r and not apart:
                    overlaps.append(o["label"])
            if overlaps:
                wide.append(f"{r['label']} (spread {100 * s['spread']:.0f}%, overlaps {', '.join(overlaps)})")
        if wide:
            warnings.append(f"WARNING: {f.label}: spread too wide to rank: " + "; ".join(wide))
    for r in rows:
        for run in r["runs"]:
            if run["verdict"] not in ("ok", "wedged"):
                why = " (expected: the 2005 refcount race)" if r["refcount"] == "buggy-eq0" else ""
                warnings.append(f"WARNING: {r['label']} seed {run['seed']} ({run['dir']}): verdict "
                                f"{run['verdict']}: the run failed an audit{why}; its figures are suspect")
    if rows and rows[0]["summary"]["ops_per_s"]["n"] == 1:
        warnings.append("WARNING: one run per configuration (--repeat 1): no spread known, do not rank on it")
    return warnings


def target_check(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """policies.md's target: median strands fewer clusters than every other policy, keeps
    throughput within 5% of none, and never wedges.  Judged on the medians over repeats;
    ``ok?`` marks a win whose repeat ranges overlap (not significant).  Configurations
    with the 2005 refcount race are left out of the stranding comparison: their clusters
    are lost (a true leak), not stranded, so a low stranded count there is no merit."""
    by = {r["label"]: r for r in rows}
    med = by.get("modern:median")
    if med is None:
        return {"met": None, "checks": ["target: modern:median not among the configurations"]}

    def m(r: dict[str, Any], key: str) -> float | None:
        v = r["summary"][key]["median"]
        return None if v is None else float(v)

    def apart(a: dict[str, Any], b: dict[str, Any], key: str) -> bool:
        sa, sb = a["summary"][key], b["summary"][key]
        if None in (sa["min"], sb["min"]):
            return False
        return bool(sa["max"] < sb["min"] or sb["max"] < sa["min"])

    checks: list[str] = []
    ok = True
    mine = m(med, "stranded_avg")
    for r in rows:
        if r is med:
            continue
        if r["refcount"] == "buggy-eq0":
            checks.append(f"n/a  stranded avg vs {r['label']}: its clusters leak (refcount race), not compared")
            continue
        other = m(r, "stranded_avg")
        if mine is None or other is None:
            checks.append(f"?    stranded avg vs {r['label']}: not measured")
            ok = False
            continue
        won = mine < other or (mine == other == 0)
        ok &= won
        mark = "FAIL" if not won else ("ok  " if apart(med, r, "stranded_avg") or mine == other else "ok? ")
        checks.append(f"{mark} stranded avg {mine:,.0f} vs {r['label']} {other:,.0f}")
    base = by.get("modern:none")
    if base is not None and m(base, "ops_per_s") and m(med, "ops_per_s") is not None:
        ratio = m(med, "ops_per_s") / m(base, "ops_per_s")  # type: ignore[operator]
        good = ratio >= 0.95
        ok &= good
        spreads = [r["summary"]["ops_per_s"]["spread"] for r in (base, med)]
        noise = ", ".join("-" if x is None else f"±{50 * x:.0f}%" for x in spreads)
        checks.append(f"{'ok  ' if good else 'FAIL'} throughput {100 * ratio:.1f}% of {base['label']} "
                      f"(>= 95%; repeat spreads {noise})")
    wedges = sum(1 for run in med["runs"] if run["figures"].get("wedged"))
    ok &= wedges == 0
    checks.append(f"{'ok  ' if wedges == 0 else 'FAIL'} median wedged in {wedges} of {len(med['runs'])} runs")
    return {"met": ok, "checks": checks}


def _cell(f: Figure, s: dict[str, Any]) -> str:
    if s["median"] is None:
        return "-"
    text = f.fmt.format(s["median"])
    if s["median"] == 0 and s["max"]:
        return text + " (max " + f.fmt.format(s["max"]) + ")"
    if s["spread"] is not None and s["spread"] > 0:
        text += f" ±{min(999.0, 50 * s['spread']):.0f}%"  # half the range, relative to the median
    return text


def table_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The compare table: a row per figure, a column per configuration, ``median ±half-range%``."""
    labels = [r["label"] for r in rows]
    cells = [[_cell(f, r["summary"][f.key]) for r in rows] for f in FIGURES]
    names = [f"{f.label} ({f.unit})" for f in FIGURES]
    w0 = max(len(n) for n in names)
    widths = [max(len(lbl), *(len(c[i]) for c in cells)) for i, lbl in enumerate(labels)]
    lines = [" " * w0 + "  " + "  ".join(lbl.rjust(w) for lbl, w in zip(labels, widths, strict=True))]
    for name, row in zip(names, cells, strict=True):
        lines.append(name.ljust(w0) + "  " + "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    return lines


def report_lines(doc: dict[str, Any]) -> list[str]:
    """Everything compare prints at the end (and writes to compare.txt)."""
    base = doc["base"]
    head = (f"compare: workload {base.get('workload')}, {base.get('cpus')} CPUs, nmbclusters "
            f"{base.get('nmbclusters')}, duration {base.get('duration')} s, repeat {doc['repeat']}, "
            f"seeds {','.join(str(s) for s in doc['seeds'])}")
    lines = [head, "values: median over repeats ±half the range (% of the median)", ""]
    lines += table_lines(doc["rows"])
    lines.append("")
    lines += doc["warnings"] or ["spread: every figure's repeats are tight enough to rank"]
    lines.append("")
    met = doc["target"]["met"]
    lines.append("target (policies.md): " + {True: "MET", False: "NOT MET", None: "not judged"}[met])
    lines += ["  " + c for c in doc["target"]["checks"]]
    return lines


# --- the plot -----------------------------------------------------------------------


def plot_compare(out: Path, rows: list[dict[str, Any]], folder: Path, limit: float | None) -> Path:
    """compare.png: clusters in use (in flight + stranded in the packet cache) over time,
    one line per configuration (its first repeat), and the cluster limit dashed; below
    it, the stranded part alone (the packet cache), where the policies differ."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(10, 7.5), dpi=100)
    FigureCanvasAgg(fig)
    ax, ax_s = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    drawn = False
    for i, r in enumerate(rows):
        if not r["runs"]:
            continue
        run_dir = folder / r["runs"][0]["dir"]
        try:
            doc = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
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
                limit = max(_finite(s["clusters_max"]), default=None)
        if t and cache:
            ax_s.plot(t[:len(cache)], cache, **style)
    if limit:
        ax.axhline(limit, linestyle=":", color="gray", linewidth=2.5, zorder=1, label="limit (nmbclusters)")
    ax.set_ylabel("clusters in use\n(in flight + in packet cache)")
    ax.set_title("cluster usage per configuration (first repeat of each)", fontsize="medium")
    ax_s.set_ylabel("stranded clusters\n(in packet cache)")
    ax_s.set_xlabel("time (s)")
    for a in (ax, ax_s):
        a.grid(True, alpha=0.3)
    if drawn or limit:
        ax.legend(loc="upper left", fontsize="small", ncols=2)
    if not drawn:
        ax.text(0.5, 0.5, "no samples", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    path = out / COMPARE_PNG
    fig.savefig(path)
    return path


# --- the command --------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m stress compare`` (developer A's CLI calls this)."""
    parser.add_argument("--cpus", type=int, default=None, metavar="N", help="simulated CPUs (default: usable cores)")
    parser.add_argument("--duration", type=float, default=10.0, metavar="S", help="seconds per run (default 10)")
    parser.add_argument("--workload", default="netperf", metavar="NAME",
                        help="workload shape of every run, e.g. netperf, burst, netperf-nfs (default netperf)")
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS), metavar="LIST",
                        help="comma-separated ERA or ERA:POLICY (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, metavar="R", help="runs per configuration (default 3)")
    parser.add_argument("--nmbclusters", type=int, default=None, metavar="N",
                        help="cluster zone limit (default: run's)")
    parser.add_argument("--rounds", type=int, default=None, metavar="R", help="on/off rounds (default: run's)")
    parser.add_argument("--round-length", type=float, default=None, metavar="S", help="seconds per round")
    parser.add_argument("--idle", type=float, default=None, metavar="S", help="idle seconds between rounds")
    parser.add_argument("--interval", type=float, default=0.25, metavar="S",
                        help="sampling period: the figures are computed from these samples (default 0.25)")
    parser.add_argument("--trim-interval", type=float, default=None, metavar="S", help="policy period (default: run's)")
    parser.add_argument("--wedge-timeout", type=float, default=None, metavar="S", help="wedge timeout (default: run's)")
    parser.add_argument("--page-budget", type=int, default=None, metavar="PAGES",
                        help="pages the VM has for the kegs, 0 = none (default: run's)")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="seed of repeat 1; repeat r uses seed + r - 1")
    parser.add_argument("--policy-param", action="append", default=[], metavar="POLICY.PARAM=VALUE",
                        help="a policy parameter, e.g. median.k=3 (repeatable); see docs/policies.md")
    parser.add_argument("--max-spread", type=float, default=0.10, metavar="F",
                        help="relative spread above which a figure is too noisy to rank (default 0.10)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="folder for the comparison (default results/<stamp>-compare-<workload>-cpus<N>)")
    parser.add_argument("--json", action="store_true", help="print compare.json instead of the table")
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-run lines")


def _base_options(args: argparse.Namespace) -> dict[str, Any]:
    """The RunConfig fields every configuration shares, validated (UsageError if bad)."""
    import os

    cpus = args.cpus if args.cpus is not None else len(os.sched_getaffinity(0))
    cores = len(os.sched_getaffinity(0))
    if not 1 <= cpus <= cores:
        raise UsageError(f"--cpus: must be 1 to {cores}, the usable cores (got {cpus}); "
                         "compare does not oversubscribe")
    if args.workload not in WORKLOADS:
        allowed = ", ".join(WORKLOADS)
        raise UsageError(f"--workload: unknown workload {args.workload!r} (allowed: {allowed})")
    if args.repeat < 1:
        raise UsageError(f"--repeat: must be at least 1 (got {args.repeat})")
    if not args.duration > 0:
        raise UsageError(f"--duration: must be positive (got {args.duration})")
    if not args.max_spread > 0:
        raise UsageError(f"--max-spread: must be positive (got {args.max_spread})")
    base: dict[str, Any] = {"cpus": cpus, "duration": args.duration, "workload": args.workload,
                            "lock_profile": True, "verbosity": -1}
    for opt in ("nmbclusters", "rounds", "round_length", "idle", "interval", "trim_interval",
                "wedge_timeout", "page_budget"):
        v = getattr(args, opt)
        if v is None:
            continue
        if v < 0 or (v == 0 and opt not in ("rounds", "idle", "page_budget")):
            raise UsageError(f"--{opt.replace('_', '-')}: must be positive (got {v})")
        base[opt] = v
    return base


def _compare_dir(args: argparse.Namespace, base: dict[str, Any]) -> Path:
    if args.out:
        out = Path(args.out)
        if out.exists() and any(out.iterdir()):
            raise UsageError(f"--out: {out} exists and is not empty (compare never overwrites results)")
        out.mkdir(parents=True, exist_ok=True)
        return out
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    root = Path("results")
    root.mkdir(exist_ok=True)
    n = 1
    while True:
        out = root / f"{stamp}-compare-{base['workload']}-cpus{base['cpus']}{'' if n == 1 else f'-{n}'}"
        try:
            out.mkdir()
            return out
        except FileExistsError:
            n += 1


def run_compare(args: argparse.Namespace, execute: Execute,
                echo: Callable[[str], None] | None = None) -> tuple[dict[str, Any], Path]:
    """Run every configuration ``--repeat`` times and build the compare.json document."""
    variants = parse_configs(args.configs)
    params = parse_policy_params(args.policy_param)
    base = _base_options(args)
    out = _compare_dir(args, base)
    seeds = [args.seed + r for r in range(args.repeat)]
    rows: list[dict[str, Any]] = []
    for v in variants:
        cfg0 = variant_config(base, v, seeds[0], params)
        rows.append({"label": v.label, "era": v.era, "policy": cfg0.policy, "refcount": cfg0.refcount,
                     "wakeup": cfg0.wakeup, "policy_params": dict(cfg0.policy_params), "runs": []})
    total = len(variants) * len(seeds)
    done = 0
    for r, seed in enumerate(seeds, start=1):  # interleave configurations: drift hits all alike
        for v, row in zip(variants, rows, strict=True):
            cfg = variant_config(base, v, seed, params)
            run_dir = out / f"{v.label.replace(':', '-')}-r{r}"
            run_dir.mkdir()
            doc = execute(cfg, run_dir, echo=None)
            if doc.get("exit_code") in (EXIT_SIGINT, EXIT_SIGTERM):
                # the runner caught Ctrl-C / SIGTERM and stopped its run cleanly: stop here too
                raise KeyboardInterrupt
            figs = run_figures(doc, run_dir)
            row["runs"].append({"dir": run_dir.name, "seed": seed, "verdict": doc.get("verdict"),
                                "exit_code": doc.get("exit_code"), "figures": figs})
            done += 1
            if echo:
                stranded = figs["stranded_avg"]
                echo(f"[{done}/{total}] {v.label} seed {seed}: {doc.get('verdict')}, "
                     f"{figs['ops_per_s'] or 0:,.0f} ops/s, stranded clusters avg "
                     + ("-" if stranded is None else f"{stranded:,.0f}"))
    for row in rows:
        row["summary"] = {k: summarise([run["figures"][k] for run in row["runs"]]) for k in FIGURE_KEYS}
    shared = variant_config(base, variants[0], seeds[0], params).to_dict()
    for knob in ("era", "policy", "refcount", "wakeup", "seed", "policy_params"):
        shared.pop(knob, None)  # these vary per configuration or per repeat
    doc = {
        "format": COMPARE_FORMAT,
        "version": package_version(),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "base": shared,
        "repeat": len(seeds),
        "seeds": seeds,
        "figures": [{"key": f.key, "label": f.label, "unit": f.unit, "better": f.better} for f in FIGURES],
        "rows": rows,
        "max_spread": args.max_spread,
    }
    doc["warnings"] = rank_warnings(rows, args.max_spread)
    doc["target"] = target_check(rows)
    return doc, out


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_safe(v) for v in x]
    return x


def write_compare(out: Path, doc: dict[str, Any]) -> list[str]:
    """Write compare.json, compare.txt and compare.png into ``out``; return the report lines."""
    lines = report_lines(doc)
    (out / COMPARE_JSON).write_text(json.dumps(_json_safe(doc), indent=2, allow_nan=False) + "\n",
                                    encoding="utf-8")
    (out / COMPARE_TXT).write_text("\n".join(lines) + "\n", encoding="utf-8")
    plot_compare(out, doc["rows"], out, doc["base"].get("nmbclusters"))
    return lines


def rebuild(out: Path) -> list[str]:
    """Recompute every figure of a finished comparison from its run folders (after a
    change to how figures are computed) and rewrite its three files; return the report."""
    out = Path(out)
    doc = json.loads((out / COMPARE_JSON).read_text(encoding="utf-8"))
    for row in doc["rows"]:
        for run in row["runs"]:
            run_dir = out / run["dir"]
            run_doc = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
            run["figures"] = run_figures(run_doc, run_dir)
        row["summary"] = {k: summarise([run["figures"][k] for run in row["runs"]]) for k in FIGURE_KEYS}
    doc["figures"] = [{"key": f.key, "label": f.label, "unit": f.unit, "better": f.better} for f in FIGURES]
    spread = float(doc.get("max_spread", 0.10))
    doc["warnings"] = rank_warnings(doc["rows"], spread)
    doc["target"] = target_check(doc["rows"])
    return write_compare(out, doc)


def main(args: argparse.Namespace, execute: Execute | None = None) -> int:
    """``python -m stress compare``: 0 when every run ended with a verdict on the allocator
    (a wedged 2005 run is a result, not a failure of compare), 2 on bad options, 3 if a
    run failed as a tester (verdict "error"), 130 on Ctrl-C."""
    try:
        if execute is None:
            from stress.manager import execute as manager_execute

            execute = manager_execute
        echo = None if args.quiet or args.json else (lambda line: print(line, flush=True))
        doc, out = run_compare(args, execute, echo)
    except UsageError as e:
        print(f"compare: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("compare: interrupted", file=sys.stderr)
        return 130
    lines = write_compare(out, doc)
    if args.json:
        print(json.dumps(_json_safe(doc), indent=2))
    else:
        for line in lines:
            print(line)
        print(f"compare folder: {out}")
    errors = [run for row in doc["rows"] for run in row["runs"] if run["verdict"] == "error"]
    return 3 if errors else 0
