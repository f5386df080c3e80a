"""``python -m stress bench``: the figures P1..P8 of performance.md, measured in one run.

Why ratios.  These machines are shared and noisy, so an absolute time says little.
Every figure is a ratio to a floor or baseline measured *in the same run*, and
repetitions are interleaved (floor, then the figure, then the floor again ...) so that
a burst of noise hits both sides.  The table shows the median of the repetitions with
their min and max, marks every missed target, and the JSON keeps the raw numbers.

=====  ======================================================  ===========================
id     what                                                    baseline / target
=====  ======================================================  ===========================
P1     ``cpu.zalloc(mbuf)`` + ``cpu.zfree`` served by the       the floor: the same pair
       per-CPU cache, one CPU, one process                     as an inline memoryview
                                                               pop/push on a bucket of the
                                                               same arena, same loop; <= 4x
P2     ``cpu.m_getcl`` + ``cpu.m_freem`` (packet zone)          the same floor; <= 8x
P3     zone alloc/free ops/s with 2 CPUs (2 processes pinned    the same at 1 CPU; >= 1.8
       to 2 cores) over ops/s with 1 CPU, per-CPU caches on
P4     the same with caches off (every op takes the keg lock)   reported, with the lock
                                                               wait per op and the share of
                                                               contended acquisitions
P5     throughput of a netperf-like op mix (m_getcl, m_copym,   plain; lock profiling and
       m_freem x2) with lock profiling / a no-op sched point    sched points >= 0.90,
       (``--sched jitter`` with P=0) / INVARIANTS               invariants reported
P6     netperf packets per second per CPU at ``--cpus 2``       reported (rises release
       (a real run through ``engine.runner.execute``)           over release)
P7     wall time of ``python -m stress --cpus 2 --duration 1``  <= 1.5 s beyond the 1 s
       minus the duration
P8     arena bytes / raw payload bytes at the default size      <= 1.10
P1c    compiled only: the zone pair driven from a compiled      the C floor: a compiled
       loop (C calls into the compiled fast path)              push/pop pair on the same
                                                               arena arrays; <= 3x
=====  ======================================================  ===========================

Two modes (issue 15).  The bench measures the allocator as this process runs it
(``allocator.COMPILED``, printed first; ``ZONELIMIT_PURE=1`` forces interpreted), and the
targets follow the mode: interpreted P1 <= 4x and P2 <= 8x the floor; compiled, the same
pairs called from Python at most 0.5x and 1x the (interpreted) floor, P1c <= 3x the C
floor, and P3.cpu (scaling on CPU time) >= 1.9x.

The measurements on the allocator alone (P1..P5, P8) are in stress/engine/measure.py;
P6 and P7 are whole runs, measured here.

``bench --compare OLD.json NEW.json`` measures nothing: it sets two bench files side by
side the pyperf way (``pyperf compare_to``): per figure the old and new medians, the
change (new / old) with its 95% bootstrap interval, the Mann-Whitney U p-value, and
whether the change is significant (the interval excludes 1 and p < 0.05; two bench runs
are independent samples, nothing pairs them) -- better or worse by the figure's
direction (:data:`BETTER`), or "not significant".

Exit status: 0 when the measurements ran (missed targets are marked, they are not
errors: this is a measurement, not a test), 2 on bad options, 3 if the bench itself
failed, 130 or 143 when a signal stopped it.

A stop (SIGINT, SIGTERM, to the process or its group) ends the bench at once through
the one stop mechanism (stress.engine.stopping): the measurement in progress is cut
(it runs where a signal raises), a whole run (P6) ends ``interrupted`` and is not
counted, no further figure starts, and no bench file is written: a cut-short
measurement is never recorded.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from stress import documents, options, stats
from stress.config import RunConfig
from stress.engine import stopping
from stress.engine.measure import (
    FULL,
    QUICK,
    Figure,
    Sizes,
    measure_compiled_floor,
    measure_fast_paths,
    measure_instrumentation,
    measure_memory,
    measure_scaling,
)
from stress.output.progress import RunProgress, wanted

HELP = "performance measurements (performance.md)"
DESCRIPTION = HELP
DEFAULT_OUT = Path("results/bench")
FIGURE_IDS = ("P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "P1c")
#: which way each figure is better (ratios to a floor and times: lower; speed-ups and rates: higher)
BETTER = {"P1": "lower", "P2": "lower", "P1c": "lower", "P3": "higher", "P3.cpu": "higher", "P4": "higher",
          "P5.lock": "higher", "P5.sched": "higher", "P5.invariants": "higher", "P6": "higher", "P7": "lower",
          "P8": "lower"}
ROOT = Path(__file__).resolve().parents[2]  #: the checkout: where `python -m stress` finds this copy


# --- P6, P7: whole runs -------------------------------------------------------------------------


def measure_netperf(sizes: Sizes, reps: int, p6: Figure) -> None:
    """P6: a real netperf run at --cpus 2 through the runner: run.json ``ops.packets_per_cpu_per_s``."""
    from stress.engine.runner import execute

    if len(os.sched_getaffinity(0)) < 2:
        p6.note = "n/a: needs 2 usable cores"
        return
    with tempfile.TemporaryDirectory(prefix="zonelimit-bench-") as tmp:
        for i in range(reps):
            cfg = RunConfig(cpus=2, duration=sizes.run_duration, workload="netperf", seed=i, verbosity=-1,
                            out=str(Path(tmp) / f"p6-{i}"))
            doc = execute(cfg, Path(tmp) / f"p6-{i}", None)
            if doc.get("verdict") == "interrupted":  # cut short: not a measurement
                raise stopping.Stopped(str((doc.get("stop") or {}).get("signal") or "SIGINT"))
            p6.values.append(float(doc["ops"]["packets_per_cpu_per_s"]))
            p6.detail.setdefault("verdicts", []).append(doc.get("verdict"))
    p6.detail["counted"] = ["packets"]
    p6.note = f"counted: packets; {sizes.run_duration:g} s runs"


def measure_startstop(sizes: Sizes, p7: Figure) -> None:
    """P7: wall time of ``python -m stress --cpus 2 --duration 1`` beyond its 1 s."""
    if len(os.sched_getaffinity(0)) < 2:
        p7.note = "n/a: needs 2 usable cores"
        return
    with tempfile.TemporaryDirectory(prefix="zonelimit-bench-") as tmp:
        for i in range(sizes.p7_repeat):
            out = Path(tmp) / f"p7-{i}"
            cmd = [sys.executable, "-m", "stress", "--cpus", "2", "--duration", "1", "--quiet",
                   "--out", str(out)]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                                  cwd=ROOT)
            wall = time.perf_counter() - t0
            if proc.returncode not in (0, 1):
                last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
                p7.note = f"n/a: `python -m stress` exited {proc.returncode}: {last}"
                p7.values.clear()
                return
            p7.values.append(wall - 1.0)
            p7.detail.setdefault("wall_s", []).append(wall)
            p7.detail.setdefault("exit_codes", []).append(proc.returncode)
    p7.note = "interpreter start, imports, arena, fork, stop, audit, run folder"


# --- the figures and the table ----------------------------------------------------------------


def mode_line() -> str:
    """Which allocator the bench measures (and why, when interpreted)."""
    import allocator
    from allocator import implementation

    if allocator.COMPILED:
        return "allocator: compiled (Cython; ZONELIMIT_PURE=1 measures the interpreted one)"
    return f"allocator: interpreted ({implementation.WHY_INTERPRETED})"


def new_figures(compiled: bool | None = None) -> dict[str, Figure]:
    """Every figure of performance.md, empty, with its target for the allocator's mode
    (``compiled``; None: this process's, allocator.COMPILED)."""
    if compiled is None:
        import allocator

        compiled = allocator.COMPILED
    if compiled:
        p1 = Figure("P1", "zone alloc+free via per-CPU cache / floor", "x", "<= 0.5x", lambda v: v <= 0.5)
        p2 = Figure("P2", "m_getcl+m_freem / floor", "x", "<= 1x", lambda v: v <= 1.0)
    else:
        p1 = Figure("P1", "zone alloc+free via per-CPU cache / floor", "x", "<= 4x", lambda v: v <= 4.0)
        p2 = Figure("P2", "m_getcl+m_freem / floor", "x", "<= 8x", lambda v: v <= 8.0)
    figs = [
        p1, p2,
        Figure("P1c", "compiled pair from a compiled loop / C floor", "x", "<= 3x", lambda v: v <= 3.0),
        Figure("P3", "scaling 1->2 CPUs, per-CPU caches", "x", ">= 1.8x", lambda v: v >= 1.8),
        Figure("P3.cpu", "the same on CPU time (neighbours excluded)", "x", ">= 1.9x", lambda v: v >= 1.9),
        Figure("P4", "scaling 1->2 CPUs, caches off (keg lock)", "x", "reported"),
        Figure("P5.lock", "throughput --lock-profile / plain", "x", ">= 0.90x", lambda v: v >= 0.90),
        Figure("P5.sched", "throughput sched point (jitter P=0) / plain", "x", ">= 0.90x", lambda v: v >= 0.90),
        Figure("P5.invariants", "throughput --invariants / plain", "x", "reported"),
        Figure("P6", "netperf pkts/s per CPU at --cpus 2", "/s", "reported"),
        Figure("P7", "start+stop beyond --duration 1", "s", "<= 1.5 s", lambda v: v <= 1.5),
        Figure("P8", "arena bytes / payload bytes", "x", "<= 1.10x", lambda v: v <= 1.10),
    ]
    return {f.id: f for f in figs}


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "/s":
        return f"{value:,.0f}"
    if unit == "s":
        return f"{value:.2f}s"
    return f"{value:.2f}x"


def table_lines(figs: Iterable[Figure]) -> list[str]:
    """The bench table: median, min and max of each figure, its target and a mark:
    ``ok``, ``MISSED`` or ``-`` (only reported / not measured), and the note."""
    head = ("id", "figure", "median", "min", "max", "target", "")
    rows = []
    notes = []
    for f in figs:
        lo = min(f.values) if f.values else None
        hi = max(f.values) if f.values else None
        mark = {True: "ok", False: "MISSED", None: "-"}[f.met]
        if not f.values:
            mark = "n/a"
        rows.append((f.id, f.title, _fmt(f.median, f.unit), _fmt(lo, f.unit), _fmt(hi, f.unit), f.target, mark))
        if f.note:
            notes.append(f"  {f.id}: {f.note}")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    right = {2, 3, 4}
    out = []
    for r in [head, *rows]:
        out.append("  ".join(c.rjust(widths[i]) if i in right else c.ljust(widths[i])
                             for i, c in enumerate(r)).rstrip())
    return out + notes


def figure_from_dict(d: dict[str, Any]) -> Figure:
    """A figure of a saved bench file, to print with :func:`table_lines` (``report``); its
    target is judged as recorded."""
    met = d.get("met")
    return Figure(d["id"], d["title"], d["unit"], d["target"], check=None if met is None else (lambda _v: bool(met)),
                  values=list(d["values"]), detail=dict(d.get("detail") or {}), note=d.get("note") or "")


def saved_lines(doc: dict[str, Any], path: Path) -> list[str]:
    """What ``report`` prints for a saved bench file: the table, the missed targets, the host."""
    host = doc.get("host") or {}
    lines = [f"== {path}", f"bench of {doc['created']}: zonelimit {doc['version']}, {host.get('cores')} cores"
             + (f", {host['cpu_model']}" if host.get("cpu_model") else "")
             + (", quick" if doc["quick"] else "") + f", {doc['repeat']} repetitions"]
    lines += table_lines(figure_from_dict(f) for f in doc["figures"].values())
    lines.append(f"missed: {', '.join(doc['missed'])}" if doc["missed"] else "every target met")
    return lines


def busy_warning(load_before: float, load_after: float, cores: int) -> str:
    """A warning when other work shared the cores (1-minute load average above the
    core count, the bench's own processes included): P3/P4 then measure the neighbours."""
    load = max(load_before, load_after)
    if load <= cores + 0.5:
        return ""
    return (f"warning: the machine was busy (load average {load:.1f} on {cores} cores): "
            "scaling figures (P3, P4) and absolute times are unreliable; re-run on an idle machine")


def run_bench(*, quick: bool = False, repeat_n: int | None = None, only: Sequence[str] = FIGURE_IDS,
              echo: Callable[[str], None] = print, progress: RunProgress | None = None,
              stop: stopping.StopSignals | None = None) -> dict[str, Figure]:
    """Measure the figures whose ids (P1..P8) are in ``only``; returns every figure
    (those not measured stay empty, with a note).  ``progress`` counts the steps.  With
    ``stop`` (the command's StopSignals) a stop signal raises :class:`stopping.Stopped` out
    of the measurement in progress (P6's runs stop cleanly and raise it after), and no
    figure starts after it."""
    sizes = QUICK if quick else FULL
    reps = repeat_n if repeat_n is not None else (3 if quick else 5)
    figs = new_figures()
    steps: list[tuple[str, str, Callable[[], None]]] = [
        ("P1", "P1/P2 fast paths", lambda: measure_fast_paths(sizes, reps, figs["P1"], figs["P2"])),
        ("P3", "P3/P4 scaling (forks 1 and 2 pinned workers)",
         lambda: measure_scaling(sizes, max(reps // 2, 1) if quick else reps, figs["P3"], figs["P4"])),
        ("P5", "P5 instrumentation overhead",
         lambda: measure_instrumentation(sizes, reps, {"lock-profile": figs["P5.lock"], "sched": figs["P5.sched"],
                                                        "invariants": figs["P5.invariants"]})),
        ("P6", "P6 netperf rate (real runs)", lambda: measure_netperf(sizes, 1 if quick else min(reps, 3),
                                                                      figs["P6"])),
        ("P7", "P7 start/stop (python -m stress --cpus 2 --duration 1)", lambda: measure_startstop(sizes, figs["P7"])),
        ("P8", "P8 arena memory", lambda: measure_memory(figs["P8"])),
        ("P1c", "P1c compiled pair against the C floor", lambda: measure_compiled_floor(sizes, reps, figs["P1c"])),
    ]
    also = {"P1": "P2", "P3": "P4"}
    chosen = [(key, what, fn) for key, what, fn in steps if key in only or also.get(key) in only]
    if progress is not None:
        progress.plan(len(chosen))
    for key, what, fn in chosen:
        echo(f"bench: {what} ...")
        if progress is not None:
            progress.start(what)
        if stop is None:
            fn()
        elif key == "P6":  # whole runs: they stop by themselves, deferred, and raise after
            stop.check()
            fn()
        else:
            with stop.raising():
                fn()
        if progress is not None:
            progress.done()
    runs = figs["P3"].detail.get("runs", [])
    figs["P3.cpu"].values = [r["cpu_time_scaling"] for r in runs]
    if not runs:
        figs["P3.cpu"].note = figs["P3"].note
    for f in figs.values():
        if not f.values and not f.note:
            f.note = "not measured (--only)"
    return figs


# --- the subcommand ------------------------------------------------------------------------------


def _figure_list(text: str) -> list[str]:
    canon = {i.upper(): i for i in FIGURE_IDS}
    ids = [canon.get(t.strip().upper(), t.strip()) for t in text.split(",") if t.strip()]
    bad = [t for t in ids if t not in FIGURE_IDS]
    if not ids or bad:
        raise argparse.ArgumentTypeError(f"must be a comma list of {','.join(FIGURE_IDS)}, got {text!r}")
    return ids


def compare_lines(old: dict[str, Any], new: dict[str, Any], old_name: str, new_name: str) -> list[str]:
    """``bench --compare``: each figure of two bench documents side by side, its change
    with a 95% interval and a p-value, and the verdict (pyperf's compare_to)."""
    ofigs, nfigs = old["figures"], new["figures"]
    ids = list(dict.fromkeys([*ofigs, *nfigs]))
    head = ("id", "figure", "old", "new", "change", "95% interval", "p", "verdict")
    rows = [head]
    notes = []
    for fid in ids:
        a, b = ofigs.get(fid) or {}, nfigs.get(fid) or {}
        title = str(b.get("title") or a.get("title") or "")
        unit = str(b.get("unit") or a.get("unit") or "x")
        va, vb = list(a.get("values") or []), list(b.get("values") or [])
        c = stats.two_sample_comparison(va, vb, BETTER.get(fid, "lower"))
        if c.verdict == stats.UNMEASURED:
            rows.append((fid, title, _fmt(a.get("median"), unit), _fmt(b.get("median"), unit), "-", "-", "-",
                         "not measured in " + ("both" if not va and not vb else old_name if not va else new_name)))
            continue
        change = (lambda x: f"{x:.3f}x") if c.kind == "ratio" else (lambda x: f"{x:+.3g}")
        interval = "-" if c.low is None else f"[{change(c.low)}, {change(c.high)}]"
        verdict = {stats.BETTER: "significant: better", stats.WORSE: "significant: worse"}.get(c.verdict,
                                                                                          "not significant")
        rows.append((fid, title, _fmt(statistics.median(va), unit), _fmt(statistics.median(vb), unit),
                     change(c.estimate) if c.estimate is not None else "-", interval,
                     "-" if c.p is None else f"{c.p:.3f}", verdict))
        if not c.called:
            notes.append(f"  {fid}: {c.why} ({len(va)} old, {len(vb)} new values)")
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [f"bench --compare: {old_name} -> {new_name}",
             "change = new / old median (a difference where the old median is 0); 95% bootstrap interval; "
             "Mann-Whitney U p;",
             f"significant only where the interval excludes no change and p < {stats.ALPHA:g} "
             f"(needs {stats.MIN_PER_SIDE}+ values per side)", ""]
    lines += ["  ".join(c.rjust(widths[i]) if i in (2, 3, 4) else c.ljust(widths[i]) for i, c in enumerate(r)).rstrip()
              for r in rows]
    return lines + ([""] + notes if notes else [])


def bench_compare(old_path: str, new_path: str) -> int:
    """``bench --compare OLD NEW``: print the comparison; 2 if a file is not a bench file."""
    try:
        old, new = documents.read_bench(Path(old_path)), documents.read_bench(Path(new_path))
    except documents.DocumentError as exc:
        return options.usage_error(f"--compare: {exc}")
    for line in compare_lines(old, new, old_path, new_path):
        print(line)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``bench``."""
    parser.description = (parser.description or "") + (
        "\n\nMeasures P1..P8 of performance.md, each as a ratio to a floor or baseline\n"
        "measured in the same run; prints median, min and max of the repetitions, marks\n"
        "missed targets, and writes <out>/<timestamp>.json (docs/performance.md).\n"
        "Exit 0 when measured (missed targets included), 2 on bad options.")
    parser.add_argument("--quick", action="store_true",
                        help="small op counts and fewer repetitions: seconds, for CI and smoke tests "
                             "(default: full size)")
    parser.add_argument("--repeat", type=options.whole_number(1, 1000), default=None, metavar="N",
                        help="repetitions per figure (default: 5, or 3 with --quick)")
    parser.add_argument("--out", type=str, default=str(DEFAULT_OUT), metavar="DIR",
                        help=f"folder for the <timestamp>.json result (default: {DEFAULT_OUT})")
    parser.add_argument("--only", type=_figure_list, default=list(FIGURE_IDS), metavar="IDS",
                        help="measure only these figures, e.g. P1,P3 (default: all of P1..P8 and P1c)")
    parser.add_argument("--json", action="store_true",
                        help="print the bench JSON to stdout instead of the table (default: the table)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no step lines and no progress, only the table (default: off)")
    parser.add_argument("--compare", nargs=2, default=None, metavar=("OLD.json", "NEW.json"),
                        help="measure nothing: each figure's change from OLD to NEW, with its 95%% interval "
                             "and whether it is significant (pyperf compare_to)")


def main(args: argparse.Namespace) -> int:
    """Run the bench: the table on stdout (or the JSON with --json), the file in --out."""
    if args.compare is not None:
        return bench_compare(*args.compare)
    try:
        options.check_out(args.out, may_hold_files=True)
    except options.UsageError as exc:
        return options.usage_error(exc)
    out_dir = Path(args.out)
    try:  # before minutes of measuring: the folder exists and takes a file
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as exc:
        return options.usage_error(f"--out: cannot write into {out_dir}: {exc.strerror or exc}")

    with RunProgress(0, "steps", enabled=wanted(args.quiet or args.json)) as progress:
        def echo(line: str) -> None:
            if args.quiet:
                return
            if progress.enabled:
                progress.say(line)  # above the bar, on the terminal
            else:
                print(line, file=sys.stderr, flush=True)

        echo(mode_line())
        start = documents.host_start()
        t0 = time.perf_counter()
        with stopping.command_signals() as stop:
            try:
                figs = run_bench(quick=args.quick, repeat_n=args.repeat, only=args.only, echo=echo,
                                 progress=progress, stop=stop)
            except stopping.Stopped:
                pass
            stopped = stop.freeze()
    if stopped:
        print(f"{options.PROG}: bench: stopped by {stopped}; nothing recorded (a cut-short measurement "
              "is not a measurement)", file=sys.stderr)
        return stopping.EXIT_CODES.get(stopped, options.EX_SIGINT)
    elapsed = time.perf_counter() - t0
    doc = documents.bench_document([f.to_dict() for f in figs.values()], quick=args.quick,
                                   repeat_n=args.repeat or (3 if args.quick else 5), elapsed=elapsed,
                                   start=start)
    load0, load1 = (x or 0.0 for x in doc["host"]["loadavg_1min"])
    busy = busy_warning(load0, load1, doc["host"]["cores"])
    try:
        path = documents.write_bench(out_dir, doc)
    except OSError as exc:
        return options.usage_error(f"--out: cannot write into {out_dir}: {exc.strerror}")
    if args.json:
        print(documents.doc_text({"file": str(path), **doc}, documents.BENCH_FORMAT), end="")
    else:
        print(mode_line())
        for line in table_lines(figs.values()):
            print(line)
        missed = doc["missed"]
        print(f"missed: {', '.join(missed)}" if missed else "every target met")
        if busy:
            print(busy)
        print(f"written: {path}")
    return 0
