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
       (a real run through ``stress.manager.execute``)          over release)
P7     wall time of ``python -m stress --cpus 2 --duration 1``  <= 1.5 s beyond the 1 s
       minus the duration
P8     arena bytes / raw payload bytes at the default size      <= 1.10
=====  ======================================================  ===========================

The P3/P4 harness forks its own workers over the allocator API (a fork context, as
the manager does): each is pinned to its core, takes its CPU context, warms its
caches, waits at a barrier, runs a fixed number of ops and sends back its start and
end times (``perf_counter`` is CLOCK_MONOTONIC, comparable across processes).  The
workload is a batch of ``BATCH`` allocations then their frees, so the per-CPU buckets
are exchanged with the zone lists (under the keg lock) every 128 ops, as in a real
mbuf consumer, instead of never leaving the alloc bucket.

Exit status: 0 when the measurements ran (missed targets are marked, they are not
errors: this is a measurement, not a test), 2 on bad options, 3 if the bench itself
failed.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any

from allocator import (
    M_PKTHDR,
    M_WAITOK,
    MCLBYTES,
    MSIZE,
    MT_DATA,
    ZONE_MBUF,
    Geometry,
    Layout,
    Uma,
    UmaConfig,
)

BENCH_FORMAT = "zonelimit.bench/1"
DEFAULT_OUT = Path("results/bench")
FIGURE_IDS = ("P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8")
BATCH = 256  #: P3/P4 items allocated before they are freed (two 128-item buckets)
P5_BATCH = 32  #: P5 packets in flight per turn


@dataclass(frozen=True)
class Sizes:
    """How much work each figure does (``--quick`` shrinks everything)."""

    pairs: int  #: P1/P2 alloc+free pairs per repetition
    scale_ops: int  #: P3/P4 ops per worker per repetition
    nolock_ops: int  #: P4 ops per worker (each one takes the keg lock)
    mix_turns: int  #: P5 turns of P5_BATCH packets per repetition
    run_duration: float  #: P6 run length, seconds
    p7_repeat: int  #: P7 repetitions (each a whole `python -m stress` run)


FULL = Sizes(pairs=200_000, scale_ops=600_000, nolock_ops=100_000, mix_turns=2_000, run_duration=3.0,
             p7_repeat=3)
QUICK = Sizes(pairs=20_000, scale_ops=40_000, nolock_ops=10_000, mix_turns=200, run_duration=1.0,
              p7_repeat=1)


@dataclass
class Figure:
    """One row of the table: repetitions of a value, its target and whether it held."""

    id: str
    title: str
    unit: str  #: "x" (a ratio), "s", "pkts/s/cpu"
    target: str  #: as printed, e.g. "<= 4x"; "" when only reported
    check: Callable[[float], bool] | None = None
    values: list[float] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)
    note: str = ""  #: why there is no value (n/a), or what to read next to it

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    @property
    def met(self) -> bool | None:
        """True/False against the target on the median; None when only reported."""
        m = self.median
        if m is None or self.check is None:
            return None
        return bool(self.check(m))

    def to_dict(self) -> dict[str, Any]:
        """The figure as stored in the bench JSON."""
        return {"id": self.id, "title": self.title, "unit": self.unit, "target": self.target,
                "median": self.median, "min": min(self.values) if self.values else None,
                "max": max(self.values) if self.values else None, "values": self.values,
                "met": self.met, "note": self.note, "detail": self.detail}


# --- P1, P2: one CPU, one process ---------------------------------------------------------


def _floor_loop(n: int, cnt: memoryview, slots: memoryview, b: int, stride: int) -> int:
    """The floor: a pop+push pair on bucket ``b`` written inline, in the same loop shape
    as the measured calls (what a zone alloc+free cannot do with less work)."""
    base = b * stride
    t0 = time.perf_counter_ns()
    for _ in repeat(None, n):
        c = cnt[b]
        slots[base + c] = 7
        cnt[b] = c + 1
        c = cnt[b] - 1
        cnt[b] = c
        slots[base + c]  # noqa: B018 -- the read is the work
    return time.perf_counter_ns() - t0


def _zone_loop(n: int, zalloc: Callable[..., int], zfree: Callable[..., None], z: int) -> int:
    how = M_WAITOK  # the consumer's constants are locals: their look-up is not the allocator's cost
    t0 = time.perf_counter_ns()
    for _ in repeat(None, n):
        zfree(z, zalloc(z, how))
    return time.perf_counter_ns() - t0


def _mbuf_loop(n: int, m_getcl: Callable[..., int], m_freem: Callable[[int], None]) -> int:
    how, mt, flags = M_WAITOK, MT_DATA, M_PKTHDR
    t0 = time.perf_counter_ns()
    for _ in repeat(None, n):
        m_freem(m_getcl(how, mt, flags))
    return time.perf_counter_ns() - t0


def measure_fast_paths(sizes: Sizes, reps: int, p1: Figure, p2: Figure) -> None:
    """P1 and P2: interleaved repetitions of floor, zone pair, packet pair."""
    uma = Uma.create(UmaConfig(ncpus=2, nmbclusters=256))
    try:
        cpu = uma.cpu(0)
        cnt, slots = uma.view("ub_cnt"), uma.view("ub_bucket")
        b = uma.geometry.nbuckets - 1  # the pool hands buckets out from 0: this one stays idle
        stride = len(slots) // uma.geometry.nbuckets  # BUCKET_MAX slots per bucket
        saved = cnt[b]
        n = sizes.pairs
        _zone_loop(1000, cpu.zalloc, cpu.zfree, ZONE_MBUF)  # warm: fill the per-CPU buckets
        _mbuf_loop(1000, cpu.m_getcl, cpu.m_freem)
        floors, zones, mbufs = [], [], []
        gc_was = gc.isenabled()
        gc.disable()
        try:
            for _ in range(reps):
                cnt[b] = 0
                f = _floor_loop(n, cnt, slots, b, stride) / n
                z = _zone_loop(n, cpu.zalloc, cpu.zfree, ZONE_MBUF) / n
                f2 = _floor_loop(n, cnt, slots, b, stride) / n
                m = _mbuf_loop(n, cpu.m_getcl, cpu.m_freem) / n
                floor = (f + f2) / 2
                floors.append(floor)
                zones.append(z)
                mbufs.append(m)
                p1.values.append(z / floor)
                p2.values.append(m / floor)
        finally:
            if gc_was:
                gc.enable()
            cnt[b] = saved
        for fig, ns in ((p1, zones), (p2, mbufs)):
            fig.detail = {"pairs_per_rep": n, "floor_ns_per_pair": floors, "ns_per_pair": ns,
                          "floor_ns_per_pair_median": statistics.median(floors),
                          "ns_per_pair_median": statistics.median(ns)}
            fig.note = (f"{statistics.median(ns):.0f} ns per pair, floor "
                        f"{statistics.median(floors):.0f} ns per pair")
    finally:
        uma.close()


# --- P3, P4: the two-process harness --------------------------------------------------------


def _scale_worker(uma: Uma, k: int, core: int, ops: int, barrier: Any, conn: Any) -> None:
    """One pinned CPU: warm the caches, wait for the others, run ``ops`` zone ops."""
    try:
        os.sched_setaffinity(0, {core})
        cpu = uma.cpu(k)
        zalloc, zfree = cpu.zalloc, cpu.zfree
        held = [0] * BATCH
        turns = max(ops // (2 * BATCH), 1)
        for i in range(BATCH):  # warm: buckets in place, keg slabs carved
            held[i] = zalloc(ZONE_MBUF, M_WAITOK)
        for item in held:
            zfree(ZONE_MBUF, item)
        gc.disable()
        barrier.wait()
        c0 = time.process_time_ns()
        t0 = time.perf_counter_ns()
        for _ in repeat(None, turns):
            for i in range(BATCH):
                held[i] = zalloc(ZONE_MBUF, M_WAITOK)
            for item in held:
                zfree(ZONE_MBUF, item)
        t1 = time.perf_counter_ns()
        conn.send(("ok", t0, t1, turns * 2 * BATCH, time.process_time_ns() - c0))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def run_scaling(ncpus: int, ops: int, *, bucket_cache: bool = True,
                lock_profile: bool = False) -> dict[str, Any]:
    """Run the harness on ``ncpus`` workers pinned to distinct cores; returns the timed
    ops, the untimed warm-up ops, wall ns (first start to last end), ops/s and, with
    ``lock_profile``, the LOCK_PROFILING rows (warm-up included)."""
    import multiprocessing

    cores = sorted(os.sched_getaffinity(0))
    ctx = multiprocessing.get_context("fork")  # the manager's method: locks are inherited
    uma = Uma.create(UmaConfig(ncpus=ncpus, nmbclusters=max(1024, BATCH * ncpus),
                               bucket_cache=bucket_cache, lock_profile=lock_profile))
    procs = []
    try:
        barrier = ctx.Barrier(ncpus)
        pipes = []
        for k in range(ncpus):
            rx, tx = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_scale_worker, args=(uma, k, cores[k % len(cores)], ops, barrier, tx),
                            name=f"bench-cpu{k}", daemon=True)
            p.start()
            tx.close()
            procs.append(p)
            pipes.append(rx)
        results = []
        for rx in pipes:
            if not rx.poll(120):
                raise RuntimeError("bench worker did not report within 120 s")
            results.append(rx.recv())
        for r in results:
            if r[0] != "ok":
                raise RuntimeError(f"bench worker failed:\n{r[1]}")
        start = min(r[1] for r in results)
        end = max(r[2] for r in results)
        total = sum(r[3] for r in results)
        out: dict[str, Any] = {"cpus": ncpus, "ops": total, "warmup_ops": 2 * BATCH * ncpus,
                               "wall_ns": end - start,
                               "ops_per_s": total / ((end - start) / 1e9),
                               # ops per CPU-second of each worker, summed: what the CPUs
                               # would do if each had its core to itself (neighbours excluded)
                               "ops_per_cpu_s": sum(r[3] / max(r[4], 1) * 1e9 for r in results)}
        if lock_profile:
            out["locks"] = uma.lock_profile()
        return out
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join()
        uma.close()


def measure_scaling(sizes: Sizes, reps: int, p3: Figure, p4: Figure) -> None:
    """P3 (caches on) and P4 (caches off, plus the lock wait per op from a profiled run)."""
    if len(os.sched_getaffinity(0)) < 2:
        for fig in (p3, p4):
            fig.note = "n/a: needs 2 usable cores (os.sched_getaffinity)"
        return
    for fig, cache, ops in ((p3, True, sizes.scale_ops), (p4, False, sizes.nolock_ops)):
        runs = []
        for _ in range(reps):
            one = run_scaling(1, ops, bucket_cache=cache)
            two = run_scaling(2, ops, bucket_cache=cache)
            fig.values.append(two["ops_per_s"] / one["ops_per_s"])
            runs.append({"1cpu_ops_per_s": one["ops_per_s"], "2cpu_ops_per_s": two["ops_per_s"],
                         "cpu_time_scaling": two["ops_per_cpu_s"] / one["ops_per_cpu_s"]})
        fig.detail["runs"] = runs
        fig.detail["ops_per_worker"] = ops
        one_med = statistics.median(r["1cpu_ops_per_s"] for r in runs)
        two_med = statistics.median(r["2cpu_ops_per_s"] for r in runs)
        cpu_med = statistics.median(r["cpu_time_scaling"] for r in runs)
        fig.detail["cpu_time_scaling_median"] = cpu_med
        fig.note = (f"{one_med / 1e3:.0f}k ops/s at 1 CPU, {two_med / 1e3:.0f}k ops/s at 2 CPUs; "
                    f"on CPU time (neighbours excluded) {cpu_med:.2f}x")
    prof = run_scaling(2, sizes.nolock_ops, bucket_cache=False, lock_profile=True)
    rows = prof["locks"]
    count = sum(r["count"] for r in rows)
    contended = sum(r["contended"] for r in rows)
    wait_us = sum(r["wait_total_us"] for r in rows)
    p4.detail.update({"profiled_ops": prof["ops"], "lock_acquisitions": count, "contended": contended,
                      "wait_ns_per_op": wait_us * 1e3 / prof["ops"], "locks": rows})
    p4.note += (f"; lock wait {wait_us * 1e3 / prof['ops']:.0f} ns per op, "
                f"{100 * contended / max(count, 1):.0f}% of acquisitions contended")


# --- P5: instrumentation overhead -------------------------------------------------------------


def _mix_loop(turns: int, cpu: Any) -> int:
    """The netperf-like op mix: packets, a copy of each sharing its cluster (refcount 2),
    then the copies and the originals freed (the last reference frees the cluster)."""
    m_getcl, m_copym, m_freem = cpu.m_getcl, cpu.m_copym, cpu.m_freem
    held = [0] * P5_BATCH
    copies = [0] * P5_BATCH
    rng = range(P5_BATCH)
    t0 = time.perf_counter_ns()
    for _ in repeat(None, turns):
        for i in rng:
            m = m_getcl(M_WAITOK, MT_DATA, M_PKTHDR)
            held[i] = m
            copies[i] = m_copym(m, M_WAITOK)
        for n in copies:
            m_freem(n)
        for m in held:
            m_freem(m)
    return time.perf_counter_ns() - t0


P5_VARIANTS = ("lock-profile", "sched", "invariants")


def measure_instrumentation(sizes: Sizes, reps: int, figs: dict[str, Figure]) -> None:
    """P5: interleaved repetitions of the op mix on four arenas (plain and one per
    instrument); each figure is instrumented throughput / plain throughput."""
    from stress.sched import jitter_point

    arenas = {
        "plain": Uma.create(UmaConfig(ncpus=1, nmbclusters=512)),
        "lock-profile": Uma.create(UmaConfig(ncpus=1, nmbclusters=512, lock_profile=True)),
        "sched": Uma.create(UmaConfig(ncpus=1, nmbclusters=512)),
        "invariants": Uma.create(UmaConfig(ncpus=1, nmbclusters=512, invariants=True)),
    }
    try:
        cpus = {name: uma.cpu(0) for name, uma in arenas.items()}
        cpus["sched"].sched_point = jitter_point(0.0, 0)  # --sched jitter with P=0: a real no-op hook
        cpus["sched"].instrument()
        for cpu in cpus.values():
            _mix_loop(10, cpu)
        times: dict[str, list[float]] = {name: [] for name in arenas}
        gc_was = gc.isenabled()
        gc.disable()
        try:
            for _ in range(reps):
                for name, cpu in cpus.items():
                    times[name].append(_mix_loop(sizes.mix_turns, cpu) / (sizes.mix_turns * P5_BATCH))
        finally:
            if gc_was:
                gc.enable()
        for name in P5_VARIANTS:
            fig = figs[name]
            fig.values = [p / t for p, t in zip(times["plain"], times[name], strict=True)]
            fig.detail = {"ns_per_packet": times[name], "plain_ns_per_packet": times["plain"],
                          "packets_per_rep": sizes.mix_turns * P5_BATCH}
            fig.note = (f"{statistics.median(times[name]):.0f} ns per packet vs "
                        f"{statistics.median(times['plain']):.0f} plain")
    finally:
        for uma in arenas.values():
            uma.close()


# --- P6, P7: whole runs -------------------------------------------------------------------------


def _packets(doc: dict[str, Any]) -> tuple[float | None, str]:
    """Packets per second per CPU from a run.json: the runner's packet rate
    (``ops.packets_per_cpu_per_s``), else consumer ops (every m_getcl/m_copym/m_freem)."""
    ops = doc.get("ops") or {}
    if isinstance(ops.get("packets_per_cpu_per_s"), (int, float)):
        return float(ops["packets_per_cpu_per_s"]), "packets"
    wl = doc.get("workload")
    if isinstance(wl, dict):
        for key in ("packets_per_s_per_cpu", "pkts_per_s_per_cpu"):
            if isinstance(wl.get(key), (int, float)):
                return float(wl[key]), "packets"
        pkts = wl.get("packets")
        dur = doc.get("duration_s")
        if isinstance(pkts, (int, float)) and isinstance(dur, (int, float)) and dur > 0:
            ncpu = len((doc.get("ops") or {}).get("per_cpu_per_s") or [0, 0]) or 2
            return float(pkts) / dur / ncpu, "packets"
    per = ops.get("per_cpu_per_s")
    if isinstance(per, list) and per:
        return float(statistics.mean(per)), "consumer ops (run.json has no packet count)"
    return None, "run.json has no ops"


def measure_netperf(sizes: Sizes, reps: int, p6: Figure) -> None:
    """P6: a real netperf run at --cpus 2 through the runner (stress.manager.execute)."""
    from stress.config import RunConfig
    from stress.manager import execute

    if len(os.sched_getaffinity(0)) < 2:
        p6.note = "n/a: needs 2 usable cores"
        return
    kinds = set()
    with tempfile.TemporaryDirectory(prefix="zonelimit-bench-") as tmp:
        for i in range(reps):
            cfg = RunConfig(cpus=2, duration=sizes.run_duration, workload="netperf", seed=i, verbosity=-1,
                            out=str(Path(tmp) / f"p6-{i}"))
            doc = execute(cfg, Path(tmp) / f"p6-{i}", None)
            value, kind = _packets(doc)
            if value is None:
                p6.note = f"n/a: {kind}"
                return
            kinds.add(kind)
            p6.values.append(value)
            p6.detail.setdefault("verdicts", []).append(doc.get("verdict"))
    p6.detail["counted"] = sorted(kinds)
    p6.note = f"counted: {', '.join(sorted(kinds))}; {sizes.run_duration:g} s runs"


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
                                  cwd=Path(__file__).resolve().parent.parent)
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


# --- P8 -------------------------------------------------------------------------------------------


def measure_memory(p8: Figure, ncpus: int = 2, nmbclusters: int = 25600) -> None:
    """P8: arena bytes over raw payload bytes (256 B per mbuf, 2 KB per cluster)."""
    g = Geometry.for_config(ncpus, nmbclusters)
    lay = Layout(g)
    raw = g.nmbufs * MSIZE + g.nclusters * MCLBYTES
    p8.values = [lay.size / raw]
    p8.detail = {"ncpus": ncpus, "nmbclusters": nmbclusters, "arena_bytes": lay.size, "payload_bytes": raw,
                 "metadata_bytes": lay.metadata_bytes}
    p8.note = f"{lay.size / 2**20:.1f} MiB arena for {raw / 2**20:.1f} MiB of payload ({ncpus} CPUs, " \
              f"nmbclusters {nmbclusters})"


# --- the figures, the table, the file -------------------------------------------------------------


def new_figures() -> dict[str, Figure]:
    """Every figure of performance.md, empty, with its target."""
    figs = [
        Figure("P1", "zone alloc+free via per-CPU cache / floor", "x", "<= 4x", lambda v: v <= 4.0),
        Figure("P2", "m_getcl+m_freem / floor", "x", "<= 8x", lambda v: v <= 8.0),
        Figure("P3", "scaling 1->2 CPUs, per-CPU caches", "x", ">= 1.8x", lambda v: v >= 1.8),
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


def bench_doc(figs: dict[str, Figure], *, quick: bool, repeat_n: int, elapsed: float) -> dict[str, Any]:
    """The bench JSON document (format ``zonelimit.bench/1``)."""
    from stress.results import package_version

    return {
        "format": BENCH_FORMAT,
        "version": package_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": {"cores": len(os.sched_getaffinity(0)), "python": platform.python_version(),
                 "platform": platform.platform(), "machine": platform.machine()},
        "quick": quick,
        "repeat": repeat_n,
        "elapsed_s": elapsed,
        "missed": [f.id for f in figs.values() if f.met is False],
        "figures": {f.id: f.to_dict() for f in figs.values()},
    }


def busy_warning(load_before: float, load_after: float, cores: int) -> str:
    """A warning when other work shared the cores (1-minute load average above the
    core count, the bench's own processes included): P3/P4 then measure the neighbours."""
    load = max(load_before, load_after)
    if load <= cores + 0.5:
        return ""
    return (f"warning: the machine was busy (load average {load:.1f} on {cores} cores): "
            "scaling figures (P3, P4) and absolute times are unreliable; re-run on an idle machine")


def write_doc(out_dir: Path, doc: dict[str, Any]) -> Path:
    """Write ``out_dir/<timestamp>.json``; an existing file is never overwritten
    (``-2``, ``-3`` ... are appended)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    n = 1
    while True:
        path = out_dir / (f"{stamp}.json" if n == 1 else f"{stamp}-{n}.json")
        try:
            with open(path, "x") as fh:
                json.dump(doc, fh, indent=2)
                fh.write("\n")
            return path
        except FileExistsError:
            n += 1


def run_bench(*, quick: bool = False, repeat_n: int | None = None, only: Sequence[str] = FIGURE_IDS,
              echo: Callable[[str], None] = print) -> dict[str, Figure]:
    """Measure the figures whose ids (P1..P8) are in ``only``; returns every figure
    (those not measured stay empty, with a note)."""
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
    ]
    also = {"P1": "P2", "P3": "P4"}
    for key, what, fn in steps:
        if key not in only and also.get(key) not in only:
            continue
        echo(f"bench: {what} ...")
        fn()
    for f in figs.values():
        if not f.values and not f.note:
            f.note = "not measured (--only)"
    return figs


# --- the subcommand ------------------------------------------------------------------------------


def _figure_list(text: str) -> list[str]:
    ids = [t.strip().upper() for t in text.split(",") if t.strip()]
    bad = [t for t in ids if t not in FIGURE_IDS]
    if not ids or bad:
        raise argparse.ArgumentTypeError(f"must be a comma list of {','.join(FIGURE_IDS)}, got {text!r}")
    return ids


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``bench`` (called by stress/cli.py, whose value checkers it shares)."""
    from stress.cli import whole_number

    parser.description = (parser.description or "") + (
        "\n\nMeasures P1..P8 of performance.md, each as a ratio to a floor or baseline\n"
        "measured in the same run; prints median, min and max of the repetitions, marks\n"
        "missed targets, and writes <out>/<timestamp>.json (docs/performance.md).\n"
        "Exit 0 when measured (missed targets included), 2 on bad options.")
    parser.add_argument("--quick", action="store_true",
                        help="small op counts and fewer repetitions: seconds, for CI and smoke tests "
                             "(default: full size)")
    parser.add_argument("--repeat", type=whole_number(1, 1000), default=None, metavar="N",
                        help="repetitions per figure (default: 5, or 3 with --quick)")
    parser.add_argument("--out", type=str, default=str(DEFAULT_OUT), metavar="DIR",
                        help=f"folder for the <timestamp>.json result (default: {DEFAULT_OUT})")
    parser.add_argument("--only", type=_figure_list, default=list(FIGURE_IDS), metavar="IDS",
                        help="measure only these figures, e.g. P1,P3 (default: all of P1..P8)")
    parser.add_argument("--json", action="store_true",
                        help="print the bench JSON to stdout instead of the table (default: the table)")


def main(args: argparse.Namespace) -> int:
    """Run the bench: the table on stdout (or the JSON with --json), the file in --out."""
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        print(f"zonelimit: error: --out: {out_dir} exists and is not a folder", file=sys.stderr)
        return 2
    def echo(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    figs = run_bench(quick=args.quick, repeat_n=args.repeat, only=args.only, echo=echo)
    elapsed = time.perf_counter() - t0
    doc = bench_doc(figs, quick=args.quick, repeat_n=args.repeat or (3 if args.quick else 5), elapsed=elapsed)
    doc["host"]["loadavg_1min"] = [load0, os.getloadavg()[0]]
    busy = busy_warning(load0, os.getloadavg()[0], doc["host"]["cores"])
    try:
        path = write_doc(out_dir, doc)
    except OSError as exc:
        print(f"zonelimit: error: --out: cannot write into {out_dir}: {exc.strerror}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        for line in table_lines(figs.values()):
            print(line)
        missed = doc["missed"]
        print(f"missed: {', '.join(missed)}" if missed else "every target met")
        if busy:
            print(busy)
        print(f"written: {path}")
    return 0
