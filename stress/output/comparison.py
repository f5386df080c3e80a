"""What ``compare`` computes and prints: the figures of policies.md for every run, their
statistics over repeats, each variant judged against the baseline, and the table.

Why: a trimming policy is only better than another under the same load, measured the
same way, and a difference is only real where the noise of a shared machine cannot
explain it.  So every run is reduced to the same figures (:func:`run_figures`); each
variant's repeats to a median and its 95% interval; each variant is compared with the
baseline pair by pair (same seed), and a difference is *called* only where the paired
interval excludes "no change" and the signed-rank test agrees (stress/stats.py).  The
table says "not distinguishable", and how many more repeats might tell, everywhere else.

Where the figures come from (run.json and the run folder's samples.csv): the sample
columns ``t``, ``clusters_current`` (clusters in flight: netstat -m current),
``packets_cache`` (packets cached in the packet zone, each holding a cluster: the
stranded clusters), ``clusters_max`` (the limit), and ``ops`` (cumulative operations);
run.json's ``ops`` (``per_s``; ``packets_per_s``: what the workload delivered, segments
or RPCs), ``zones`` (``req``, ``fail``, ``sleep``, and ``misses`` when the
runner records it), ``locks`` (``wait_total_us``), ``wedge`` and ``verdict``.  A figure
whose source is missing is null in compare.json and ``-`` in the table, never a guess.

The analysis (:func:`analyse`) is a pure function of the runs and the plan in a
compare.json document, so ``compare``, ``compare --resume``, ``compare --merge`` and
``report`` compute the same table from the same runs.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from allocator.layout import BUCKET_MAX
from stress import stats
from stress.samples import SAMPLES_CSV, read_samples


@dataclass(frozen=True)
class Figure:
    """One figure of the comparison."""

    key: str
    label: str
    unit: str
    better: str  #: "lower" or "higher"
    fmt: str = "{:,.0f}"
    key_figure: bool = False  #: --precision waits for this one (policies.md's three questions)
    timing: bool = False  #: a time or rate: disturbed by other processes on the cores


FIGURES: tuple[Figure, ...] = (
    Figure("stranded_avg", "stranded clusters (avg)", "clusters", "lower", key_figure=True),
    Figure("stranded_peak", "stranded clusters (peak)", "clusters", "lower"),
    Figure("inuse_peak", "peak clusters in use", "clusters", "lower"),
    Figure("inflight_peak", "peak clusters in flight", "clusters", "lower"),
    Figure("miss_rate", "miss rate", "%", "lower", "{:.2f}"),
    Figure("ops_per_s", "throughput", "ops/s", "higher", key_figure=True, timing=True),
    Figure("packets_per_s", "delivered (packets, RPCs)", "/s", "higher", timing=True),
    Figure("lock_wait_us_per_op", "lock wait per op", "us", "lower", "{:.3f}", key_figure=True, timing=True),
    Figure("sleeps", "zonelimit sleeps", "sleeps", "lower"),
    Figure("fails", "failed allocs", "allocs", "lower"),
    Figure("wedged", "wedges", "runs", "lower"),
    Figure("recovery_s", "recovery time", "s", "lower", "{:.2f}", timing=True),
)
FIGURE_KEYS = tuple(f.key for f in FIGURES)
KEY_FIGURES = tuple(f.key for f in FIGURES if f.key_figure)
BY_KEY = {f.key: f for f in FIGURES}
NOISY_SHARE = 0.10  #: others took more than this share of a run's cores: its timing figures are disturbed


def figure_specs() -> list[dict[str, Any]]:
    """compare.json ``figures``: what each figure is, which way is better, key or timing."""
    return [{"key": f.key, "label": f.label, "unit": f.unit, "better": f.better, "key_figure": f.key_figure,
             "timing": f.timing} for f in FIGURES]


# --- figures of one run -------------------------------------------------------------



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




# --- statistics over repeats ----------------------------------------------------------


def pair_key(run: dict[str, Any]) -> tuple[str, int]:
    """What pairs two runs of different variants: the same seed in the same comparison
    (``origin``: the compare a merged run came from; "" for a comparison's own runs)."""
    return str(run.get("origin") or ""), int(run["seed"])


def figure_values(runs: Sequence[dict[str, Any]], key: str) -> list[float | None]:
    """One figure over runs (None where a run did not measure it)."""
    return [(run.get("figures") or {}).get(key) for run in runs]


def variant_summary(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """A variant's ``summary``: per figure, the median over its runs and its 95% interval."""
    return {k: stats.median_interval(figure_values(runs, k)).to_dict() for k in FIGURE_KEYS}


def paired_values(base: Sequence[dict[str, Any]], runs: Sequence[dict[str, Any]],
                  key: str) -> list[tuple[float | None, float | None]]:
    """(baseline, variant) values of one figure for every seed both ran, in seed order."""
    mine = {pair_key(r): r for r in runs}
    out = []
    for b in sorted(base, key=pair_key):
        r = mine.get(pair_key(b))
        if r is not None:
            out.append(((b.get("figures") or {}).get(key), (r.get("figures") or {}).get(key)))
    return out


def variant_versus(base: Sequence[dict[str, Any]], runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """A variant's ``versus``: per figure, the paired comparison with the baseline."""
    return {f.key: stats.paired_comparison(paired_values(base, runs, f.key), f.better).to_dict() for f in FIGURES}


def complete_repeats(variants: Sequence[dict[str, Any]]) -> int:
    """Seeds (pair keys) that every variant has run: the repeats of the comparison."""
    keys = [{pair_key(r) for r in v["runs"]} for v in variants]
    return len(set.intersection(*keys)) if keys else 0


def others_share(run: dict[str, Any]) -> float | None:
    """The share of a run's cores that other processes took (run.json ``noise``)."""
    noise = run.get("noise") or {}
    share = noise.get("others_share") if isinstance(noise, dict) else None
    return float(share) if isinstance(share, (int, float)) else None


def disturbed(run: dict[str, Any]) -> bool:
    """A run whose timing figures others disturbed: noisy cores, or runs in parallel."""
    share = others_share(run)
    return bool(run.get("parallel")) or (share is not None and share > NOISY_SHARE)


def noise_summary(variants: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """compare.json ``noise``: how many runs were disturbed, and the worst share."""
    runs = [r for v in variants for r in v["runs"]]
    shares = [s for r in runs if (s := others_share(r)) is not None]
    return {"runs": len(runs), "measured": len(shares), "disturbed": sum(disturbed(r) for r in runs),
            "parallel": sum(bool(r.get("parallel")) for r in runs),
            "max_others_share": max(shares) if shares else None, "threshold": NOISY_SHARE}


def precision_status(doc: dict[str, Any]) -> dict[str, Any] | None:
    """With ``--precision``: which key figures' intervals are still wider than asked
    (half-width over median), whether the target is reached, and whether compare gave
    up (``--max-repeat`` repeats done and still too wide).  None without --precision."""
    plan = doc.get("plan") or {}
    target = plan.get("precision")
    if target is None:
        return None
    wide = []
    for v in doc["variants"]:
        for k in KEY_FIGURES:
            est = stats.median_interval(figure_values(v["runs"], k))
            if not stats.precise(est, target):
                wide.append({"variant": v["name"], "figure": k, "relative_half_width": est.relative_half_width()})
    repeats = complete_repeats(doc["variants"])
    reached = not wide and repeats >= int(plan.get("repeat") or 0)
    max_repeat = plan.get("max_repeat")
    gave_up = not reached and max_repeat is not None and repeats >= int(max_repeat)
    return {"target": target, "repeats": repeats, "reached": reached, "gave_up": gave_up, "wide": wide}


def _refcount(doc: dict[str, Any], v: dict[str, Any]) -> Any:
    return (v.get("config") or {}).get("refcount", (doc.get("base") or {}).get("refcount"))


def warnings_for(doc: dict[str, Any]) -> list[str]:
    """Loud lines: runs that failed an audit, disturbed timing figures, too few pairs to
    call anything, a precision target given up on, a comparison cut short."""
    out: list[str] = []
    variants = doc["variants"]
    state = doc.get("state")
    if state in ("partial", "running"):
        stop = doc.get("stop") or {}
        how = f"stopped by {stop['reason']}" if stop.get("reason") else "did not finish (killed?)"
        out.append(f"WARNING: PARTIAL comparison: {how}; every figure is from the runs that finished. "
                   "Complete it with: python -m stress compare --resume <this folder>")
    prec = doc.get("precision")
    if prec and prec.get("gave_up"):
        wide = ", ".join(f"{w['variant']} {BY_KEY[w['figure']].label} "
                         + _pct(w["relative_half_width"]) for w in prec["wide"][:6])
        out.append(f"WARNING: PRECISION NOT REACHED: gave up after {prec['repeats']} repeats (--max-repeat): "
                   f"still wider than ±{100 * prec['target']:g}% of the median: {wide}")
    pairs = complete_repeats(variants)
    if len(variants) > 1 and pairs < stats.MIN_PAIRS:
        out.append(f"NOTE: {pairs} paired repeat{'s' if pairs != 1 else ''}: with fewer than {stats.MIN_PAIRS} "
                   f"the signed-rank test cannot reach p < {stats.ALPHA:g}, so no difference can be called yet "
                   f"(--repeat {stats.MIN_PAIRS} or more, or --precision)")
    noise = doc.get("noise") or noise_summary(variants)
    if noise["disturbed"]:
        top = noise.get("max_others_share")
        share = f"; other processes took up to {100 * top:.0f}% of a run's cores" if top else ""
        par = f", {noise['parallel']} run beside other runs" if noise.get("parallel") else ""
        out.append(f"WARNING: noise: {noise['disturbed']} of {noise['runs']} runs disturbed{par}{share} "
                   f"(over {100 * NOISY_SHARE:.0f}% counts): their timing figures (throughput, delivered, lock wait, "
                   "recovery) are marked ~ and may be wrong")
    for v in variants:
        for run in v["runs"]:
            if run.get("verdict") not in ("ok", "wedged"):
                why = " (expected: the 2005 refcount race)" if _refcount(doc, v) == "buggy-eq0" else ""
                out.append(f"WARNING: {v['name']} seed {run['seed']} ({run['dir']}): verdict {run.get('verdict')}: "
                           f"the run failed an audit{why}; its figures are suspect")
    return out


def analyse(doc: dict[str, Any]) -> dict[str, Any]:
    """Fill a compare document's statistics from its runs and plan (in place; returned):
    every variant's ``summary`` and ``versus``, ``seeds``, ``repeats``, ``noise``,
    ``precision`` and ``warnings``.  Pure: the same runs give the same document."""
    variants = doc["variants"]
    baseline = next((v for v in variants if v.get("baseline")), variants[0] if variants else None)
    for v in variants:
        v["runs"].sort(key=pair_key)
        v["summary"] = variant_summary(v["runs"])
        v["versus"] = None if v is baseline or baseline is None else variant_versus(baseline["runs"], v["runs"])
    doc["figures"] = figure_specs()
    doc["seeds"] = sorted({int(r["seed"]) for v in variants for r in v["runs"]})
    doc["repeats"] = complete_repeats(variants)
    doc["noise"] = noise_summary(variants)
    doc["precision"] = precision_status(doc)
    doc["warnings"] = warnings_for(doc)
    return doc


# --- the table ----------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    if x is None:
        return "±?"
    return "±inf" if math.isinf(x) else f"±{100 * x:.1f}%"


def _num(f: Figure, x: float | None) -> str:
    return "-" if x is None else f.fmt.format(x)


def _change(kind: str, x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.3g}x" if kind == "ratio" else f"{x:+.3g}"


def _p(p: float | None) -> str:
    if p is None:
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def verdict_text(c: dict[str, Any]) -> str:
    """A comparison's verdict for the table: better / worse, or not distinguishable and
    how many more repeats might tell."""
    verdict = c["verdict"]
    if verdict != stats.UNDISTINGUISHED:
        return verdict
    more = c.get("more_repeats")
    if more is None:
        return f"{verdict} (no difference seen)"
    count = f"{more} more repeat{'s' if more != 1 else ''}" if more <= 1000 else "over 1000 more repeats"
    return f"{verdict} ({c['why']}; ~{count} at this spread)"


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(r)).rstrip()
            for r in rows]


def _disturbed_figure(f: Figure, v: dict[str, Any]) -> bool:
    """A timing figure that a variant measured in a disturbed run (marked ``~``)."""
    return f.timing and any(disturbed(r) and (r.get("figures") or {}).get(f.key) is not None for r in v["runs"])


def overview_lines(doc: dict[str, Any]) -> list[str]:
    """Figures by variants: the median, ``(+)`` / ``(-)`` where a difference from the
    baseline was called better / worse, ``~`` where timing runs were disturbed."""
    variants = doc["variants"]
    head = [""] + [v["name"] + (" (baseline)" if v.get("baseline") else "") for v in variants]
    rows = [head]
    for f in FIGURES:
        row = [f"{f.label} ({f.unit})"]
        for v in variants:
            cell = _num(f, v["summary"][f.key]["median"])
            c = (v.get("versus") or {}).get(f.key)
            if c and c["verdict"] in (stats.BETTER, stats.WORSE):
                cell += " (+)" if c["verdict"] == stats.BETTER else " (-)"
            if _disturbed_figure(f, v):
                cell += " ~"
            row.append(cell)
        rows.append(row)
    return _table(rows, set(range(1, len(head))))


def figure_lines(doc: dict[str, Any], f: Figure) -> list[str]:
    """One figure in detail: per variant the median, its interval, and against the
    baseline the paired change, its interval, the p-value and the verdict."""
    key = " key figure," if f.key_figure else ""
    timing = " timing," if f.timing else ""
    lines = [f"{f.label} ({f.unit}; {f.better} is better;{key}{timing} n = runs)".replace(";)", ")")]
    rows = [["  variant", "n", "median", "95% interval", "vs baseline", "95% interval", "p", "verdict"]]
    for v in doc["variants"]:
        s = v["summary"][f.key]
        interval = "-" if s["low"] is None else f"[{_num(f, s['low'])}, {_num(f, s['high'])}]"
        name = "  " + v["name"] + (" ~" if _disturbed_figure(f, v) else "")
        c = (v.get("versus") or {}).get(f.key)
        if v.get("baseline") or c is None:
            rows.append([name, str(s["n"]), _num(f, s["median"]), interval, "baseline", "", "", ""])
            continue
        ci = "-" if c["low"] is None else f"[{_change(c['kind'], c['low'])}, {_change(c['kind'], c['high'])}]"
        rows.append([name, str(s["n"]), _num(f, s["median"]), interval, _change(c["kind"], c["estimate"]), ci,
                     _p(c["p"]), verdict_text(c)])
    return lines + _table(rows, {1, 2, 4})


LOUD = ("WARNING: PARTIAL", "WARNING: PRECISION")  #: warnings also shown at the top of the table


def report_lines(doc: dict[str, Any]) -> list[str]:
    """Everything compare prints at the end (and writes to compare.txt)."""
    base = doc.get("base") or {}
    variants = doc["variants"]
    seeds = doc.get("seeds") or []
    seed_text = f"seeds {seeds[0]}..{seeds[-1]}" if seeds else "no seed finished"
    baseline = next((v["name"] for v in variants if v.get("baseline")), "-")
    cpus = base.get("cpus", "per-variant")
    lines = [f"compare: workload {base.get('workload', 'per variant')}, {cpus} CPU{'' if cpus == 1 else 's'}, "
             f"nmbclusters {base.get('nmbclusters', 'per variant')}, duration {base.get('duration', 'per variant')} s; "
             f"{len(variants)} variants, {doc.get('repeats', 0)} repeats ({seed_text}); baseline {baseline}",
             f"state: {doc.get('state', 'complete')}"]
    lines += [w for w in doc["warnings"] if w.startswith(LOUD)]
    lines += ["",
              "median over repeats and its 95% bootstrap interval; against the baseline, pair by pair (same seed):",
              "the median ratio variant/baseline (a difference, +/-, where the baseline is 0), its 95% interval and",
              f"the Wilcoxon signed-rank p. A difference is called only where the interval excludes no change and "
              f"p < {stats.ALPHA:g}.",
              "",
              "overview: median; (+) better, (-) worse than the baseline (called); ~ timing disturbed by noise", ""]
    lines += overview_lines(doc)
    for f in FIGURES:
        lines += [""] + figure_lines(doc, f)
    lines.append("")
    prec = doc.get("precision")
    if prec is not None:
        if prec["reached"]:
            lines.append(f"precision: every key figure's 95% interval within ±{100 * prec['target']:g}% of its "
                         f"median after {prec['repeats']} repeats")
        elif not prec["gave_up"]:
            lines.append(f"precision: not reached after {prec['repeats']} repeats (the comparison did not finish)")
    lines += [w for w in doc["warnings"] if not w.startswith(LOUD)]
    if not doc["warnings"]:
        lines.append("no warnings: every run passed its audit, no run was disturbed")
    return lines
