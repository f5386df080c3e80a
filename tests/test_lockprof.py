"""``--lock-profile``: LOCK_PROFILING counts are exact in a controlled single-CPU run,
contention shows on two cores with the per-CPU caches off, the table has FreeBSD's
columns, and a run records the rows in run.json "locks"."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from allocator import M_WAITOK, ZONE_MBUF, Uma, UmaConfig
from allocator.layout import LOCK_NAMES, LOCK_POINTS_MAX, LP_NFIELDS, NLOCKS
from allocator.lock import HOLD_SAMPLE, POINTS, hold_samples
from stress.engine.measure import run_scaling
from stress.output.profile import LOCK_COLUMNS, lock_profile_lines

N = 137


def _rows_by_point(uma: Uma, lock: str) -> dict[str, dict]:
    return {r["point"]: r for r in uma.lock_profile() if r["lock"] == lock}


def test_no_bucket_mode_counts_exactly_two_acquisitions_per_pair():
    uma = Uma.create(UmaConfig(ncpus=1, nmbclusters=64, bucket_cache=False, lock_profile=True))
    try:
        cpu = uma.cpu(0)
        for _ in range(N):
            cpu.zfree(ZONE_MBUF, cpu.zalloc(ZONE_MBUF, M_WAITOK))
        rows = _rows_by_point(uma, "mbuf keg")
        assert set(rows) == {"uma_zalloc_internal", "uma_zfree_internal"}
        assert rows["uma_zalloc_internal"]["count"] == N and rows["uma_zfree_internal"]["count"] == N
        assert sum(r["count"] for r in uma.lock_profile()) == 2 * N  # and no other lock was taken
        for r in rows.values():
            assert r["contended"] == 0  # one process: nobody to wait for
            assert r["hold_total_us"] > 0 and r["hold_max_us"] <= r["hold_total_us"]
            assert r["wait_max_us"] <= r["wait_total_us"]
    finally:
        uma.close()


def test_per_cpu_cache_hits_take_no_lock():
    uma = Uma.create(UmaConfig(ncpus=1, nmbclusters=64, lock_profile=True))
    try:
        cpu = uma.cpu(0)
        cpu.zfree(ZONE_MBUF, cpu.zalloc(ZONE_MBUF, M_WAITOK))  # first fill takes the keg lock
        before = sum(r["count"] for r in uma.lock_profile())
        for _ in range(N):
            cpu.zfree(ZONE_MBUF, cpu.zalloc(ZONE_MBUF, M_WAITOK))
        assert sum(r["count"] for r in uma.lock_profile()) == before
    finally:
        uma.close()


def test_hold_times_are_sampled_and_scaled_to_every_acquisition():
    # count is exact; the hold of the 1st, (1+S)th, ... acquisition is timed, and the
    # reported total is the sampled sum scaled by count / samples
    assert [hold_samples(n) for n in (0, 1, HOLD_SAMPLE, HOLD_SAMPLE + 1)] == [0, 1, 1, 2]
    uma = Uma.create(UmaConfig(ncpus=1, nmbclusters=64, bucket_cache=False, lock_profile=True))
    try:
        cpu = uma.cpu(0)
        cpu.zfree(ZONE_MBUF, cpu.zalloc(ZONE_MBUF, M_WAITOK))
        one = _rows_by_point(uma, "mbuf keg")["uma_zalloc_internal"]
        assert one["count"] == 1 and one["hold_total_us"] == one["hold_max_us"] > 0  # the first is timed
        for _ in range(N):
            cpu.zfree(ZONE_MBUF, cpu.zalloc(ZONE_MBUF, M_WAITOK))
        row = _rows_by_point(uma, "mbuf keg")["uma_zalloc_internal"]
        raw = uma.arena.np("lockprof").reshape(NLOCKS, LOCK_POINTS_MAX, LP_NFIELDS)
        i, p = LOCK_NAMES.index("mbuf keg"), POINTS.index("uma_zalloc_internal")
        assert int(raw[i, p, 0]) == N + 1
        scaled = int(raw[i, p, 4]) * (N + 1) // hold_samples(N + 1)
        assert row["hold_total_us"] == scaled / 1e3 and scaled > int(raw[i, p, 4])
    finally:
        uma.close()


def test_table_has_freebsd_columns_and_one_row_per_point():
    rows = [
        {"name": "mbuf keg @ uma_zalloc_internal", "count": 10, "contended": 3, "wait_total_us": 50.0,
         "wait_max_us": 20.0, "hold_total_us": 5.0, "hold_max_us": 1.5},
        {"name": "bucket @ bucket_alloc", "count": 4, "contended": 0, "wait_total_us": 0.0,
         "wait_max_us": 0.0, "hold_total_us": 400.0, "hold_max_us": 150.0},
    ]
    lines = lock_profile_lines(rows)
    assert lines[0].split() == list(LOCK_COLUMNS)
    first = lines[1].split()
    # max wait_max total wait_total count avg wait_avg cnt_hold cnt_lock name (most waited first)
    assert first[:9] == ["1.50", "20", "5.00", "50", "10", "0.50", "5.00", "-", "3"]
    assert lines[1].endswith("mbuf keg @ uma_zalloc_internal") and lines[2].endswith("bucket @ bucket_alloc")
    assert lock_profile_lines(rows, top=1)[-1].startswith("... 1 more")
    assert lock_profile_lines([]) == ["lock profile: no lock acquisitions recorded"]


@pytest.mark.smp
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="contention needs two usable cores")
def test_two_cores_without_caches_contend_on_the_keg_lock():
    for _ in range(3):  # two pinned workers at a barrier overlap; a busy host may still starve one
        res = run_scaling(2, 40_000, bucket_cache=False, lock_profile=True)
        keg = [r for r in res["locks"] if r["lock"] == "mbuf keg"]
        # every op, timed or warm-up, took the keg lock exactly once
        assert sum(r["count"] for r in keg) == res["ops"] + res["warmup_ops"]
        if sum(r["contended"] for r in keg) > 0:
            assert sum(r["wait_total_us"] for r in keg) > 0
            return
    pytest.fail("no contended acquisition of the keg lock in three two-core runs")


@pytest.mark.smp
def test_run_records_lock_rows_in_run_json(tmp_path: Path):
    from stress.config import RunConfig
    from stress.engine import runner

    out = tmp_path / "run"
    cfg = RunConfig(cpus=1, duration=0.5, lock_profile=True, verbosity=-1, out=str(out))
    doc = runner.execute(cfg, out, lambda line: None)
    locks = doc["locks"]
    assert locks and all(r["count"] > 0 for r in locks)
    assert {"name", "count", "contended", "wait_total_us", "wait_max_us", "hold_total_us",
            "hold_max_us"} <= set(locks[0])
    plain = runner.execute(cfg.replace(lock_profile=False, out=str(tmp_path / "plain")), tmp_path / "plain",
                            lambda line: None)
    assert plain["locks"] == []


class _FakeContext:
    """A LockOps context outside the allocator: real locks, plain owner and profile words."""

    def __init__(self) -> None:
        import multiprocessing

        from allocator.lock import LockOps

        self.ops = ops = LockOps()
        ctx = multiprocessing.get_context("fork")
        ops._mp = [ctx.Lock() for _ in range(NLOCKS)]
        ops.lock_owner = memoryview(bytearray(8 * NLOCKS)).cast("q")
        ops.lockprof = memoryview(bytearray(8 * NLOCKS * LOCK_POINTS_MAX * LP_NFIELDS)).cast("q")
        ops.row1 = 1
        ops._held_since = [0] * NLOCKS
        ops._held_point = [0] * NLOCKS
        self.events: list[str] = []
        ops.sched_point = self.events.append  # type: ignore[method-assign]
        ops.lock_hooks = (lambda i, p: self.events.append(f"hook+ {i} {p}"),
                          lambda i: self.events.append(f"hook- {i}"))


@pytest.mark.parametrize("profile", [False, True])
@pytest.mark.parametrize("sched,spin,hooks", [(s, p, h) for s in (False, True) for p in (False, True)
                                              for h in (False, True)])
def test_every_lock_mode_keeps_owner_order_and_counts(sched: bool, spin: bool, hooks: bool,
                                                      profile: bool) -> None:
    """Whatever instruments are on: sched point before acquire and after release, hooks
    inside the lock, the owner word set while held, every acquisition counted when profiled."""
    fake = _FakeContext()
    ops = fake.ops
    ops.lock_mode(sched=sched, spin=spin, profile=profile, hooks=hooks)
    for _ in range(HOLD_SAMPLE + 1):
        ops.lock(2, 4)
        assert ops.lock_owner[2] == 1
        ops.unlock(2)
        assert ops.lock_owner[2] == 0
    one = ([f"acquire {LOCK_NAMES[2]} @ {POINTS[4]}"] if sched else []) + \
          ([f"hook+ 2 {POINTS[4]}", "hook- 2"] if hooks else []) + \
          ([f"release {LOCK_NAMES[2]}"] if sched else [])
    assert fake.events == one * (HOLD_SAMPLE + 1)
    base = (2 * LOCK_POINTS_MAX + 4) * LP_NFIELDS
    assert ops.lockprof[base] == (HOLD_SAMPLE + 1 if profile else 0)
    assert ops.lockprof[base + 1] == 0  # nobody else: never contended
    assert ops._held_since[2] == 0  # every sampled hold was closed
