"""The measurements behind ``bench`` (performance.md): P1..P5 and P8, on the allocator alone.

Each ``measure_*`` fills :class:`Figure` rows with repetitions of a ratio to a floor or
baseline measured in the same process and the same run, interleaved (floor, figure,
floor ...) so that a burst of noise on a shared machine hits both sides.  P6 and P7 are
whole runs; the ``bench`` command measures them (stress/commands/bench.py).

The P3/P4 harness forks its own workers over the allocator API (a fork context, as
the manager does): each is pinned to its core, takes its CPU context, warms its
caches, waits at a barrier, runs a fixed number of ops and sends back its start and
end times (``perf_counter`` is CLOCK_MONOTONIC, comparable across processes).  The
workload is a batch of ``BATCH`` allocations then their frees, so the per-CPU buckets
are exchanged with the zone lists (under the keg lock) every 128 ops, as in a real
mbuf consumer, instead of never leaving the alloc bucket.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import repeat
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
from stress.engine.sched import jitter_point

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
    except BaseException:  # a stop (stopping.Stopped) or a failure: the workers go at once
        for p in procs:
            p.kill()
        raise
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


# --- P1c: the compiled fast path against the C floor (issue 15) -----------------------------------


def measure_compiled_floor(sizes: Sizes, reps: int, p1c: Figure) -> None:
    """P1c: zone alloc+free pairs driven from a compiled loop (``allocator.fastpath.pair_loop``,
    C calls into the compiled fast path) over the C floor (``fastpath.floor_loop``: a
    compiled push+pop pair on an idle bucket of the same arena), interleaved.  n/a when
    the allocator runs interpreted (there is no C floor then)."""
    import importlib

    from allocator import COMPILED

    if not COMPILED:
        p1c.note = "n/a: the allocator runs interpreted (allocator.COMPILED is False)"
        return
    fastpath: Any = importlib.import_module("allocator._compiled.fastpath")
    uma = Uma.create(UmaConfig(ncpus=2, nmbclusters=256))
    try:
        cpu = uma.cpu(0)
        fast = cpu._fast
        cnt, slots = uma.view("ub_cnt"), uma.view("ub_bucket")
        b = uma.geometry.nbuckets - 1  # idle: the pool hands buckets out from 0
        saved = cnt[b]
        n = sizes.pairs * 10  # C loops: ten times the pairs, for a measurable time
        fastpath.pair_loop(fast, ZONE_MBUF, 1000)  # warm: buckets in place
        floors, pairs = [], []
        try:
            for _ in range(reps):
                cnt[b] = 0
                t0 = time.perf_counter_ns()
                fastpath.floor_loop(cnt, slots, b, n)
                t1 = time.perf_counter_ns()
                fastpath.pair_loop(fast, ZONE_MBUF, n)
                t2 = time.perf_counter_ns()
                fastpath.floor_loop(cnt, slots, b, n)
                t3 = time.perf_counter_ns()
                floor = ((t1 - t0) + (t3 - t2)) / 2 / n
                floors.append(floor)
                pairs.append((t2 - t1) / n)
                p1c.values.append(pairs[-1] / floor)
        finally:
            cnt[b] = saved
        p1c.detail = {"pairs_per_rep": n, "c_floor_ns_per_pair": floors, "ns_per_pair": pairs}
        p1c.note = (f"{statistics.median(pairs):.1f} ns per pair from a compiled loop, C floor "
                    f"{statistics.median(floors):.2f} ns per pair")
    finally:
        uma.close()
