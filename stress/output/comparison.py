"""What ``compare`` computes and prints: the figures of policies.md, their summary over
repeats, the ranking warnings, the target check, and the table.

Why: a trimming policy is only better than another under the same load, measured the
same way, with the noise of a shared 2-core machine in view.  So every run is reduced to
the same figures, each configuration's repeats to median and spread, and the table
warns loudly where the spread is too wide to rank.

Where the figures come from (run.json and the run folder's samples.csv): the sample
columns ``t``, ``clusters_current`` (clusters in flight: netstat -m current),
``packets_cache`` (packets cached in the packet zone, each holding a cluster: the
stranded clusters), ``clusters_max`` (the limit), and ``ops`` (cumulative operations);
run.json's ``ops`` (``per_s``; ``packets_per_s``: what the workload delivered, segments
or RPCs), ``zones`` (``req``, ``fail``, ``sleep``, and ``misses`` when the
runner records it), ``locks`` (``wait_total_us``), ``wedge`` and ``verdict``.  A figure
whose source is missing is null in compare.json and ``-`` in the table, never a guess.

``spread`` is (max - min) / |median| (0 when every value is equal; null with one run).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from allocator.layout import BUCKET_MAX
from stress.samples import SAMPLES_CSV, read_samples


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


def figure_specs() -> list[dict[str, str]]:
    """compare.json ``figures``: what each figure is and which way is better."""
    return [{"key": f.key, "label": f.label, "unit": f.unit, "better": f.better} for f in FIGURES]


# --- figures of one run -------------------------------------------------------------


def run_series(doc: dict[str, Any], folder: Path) -> dict[str, list[float]]:
    """The per-sample columns of a run: its samples.csv (run.json ``samples`` names it)."""
    name = doc.get("samples")
    path = Path(folder) / (name if isinstance(name, str) else SAMPLES_CSV)
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


def row_summary(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, float | int | None]]:
    """A configuration's ``summary``: every figure summarised over its runs (repeats)."""
    return {k: summarise([run["figures"][k] for run in runs]) for k in FIGURE_KEYS}


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
