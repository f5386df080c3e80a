"""WITNESS across processes: the order learnt on one CPU is checked on another.

Plain shared memory stands in for the arena; two forked processes call the lock hooks
the allocator calls (``cpu.lock_hooks``) in opposite orders.  The reversal must be
reported once, with both acquisition points of both orders; the same order on both
CPUs must report nothing.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable

import pytest

from allocator.layout import ITEMSIZE, LOCK_BUCKET, LOCK_KEG_CLUSTER, LOCK_KEG_MBUF, NLOCKS, ArraySpec
from allocator.witness import (
    CLASS_NAMES,
    KIND_NAMES,
    LOR,
    RECURSION,
    SLEEP_LOCKED,
    Witness,
    findings,
    point_name,
    point_slot,
    witness_arrays,
)


class Arrays:
    """witness_arrays carved out of one anonymous shared mapping."""

    def __init__(self, specs: tuple[ArraySpec, ...]) -> None:
        self.mm = mmap.mmap(-1, sum(s.length * ITEMSIZE[s.typecode] + 64 for s in specs))
        buf, off = memoryview(self.mm), 0
        self.views: dict[str, memoryview] = {}
        for s in specs:
            n = s.length * ITEMSIZE[s.typecode]
            raw = buf[off:off + n]
            self.views[s.name] = raw if s.typecode == "B" else raw.cast(s.typecode)  # type: ignore[call-overload]
            off += -(-n // 64) * 64

    def view(self, name: str) -> memoryview:
        return self.views[name]


def _in_child(fn: Callable[[], object]) -> None:
    pid = os.fork()
    if pid == 0:
        try:
            fn()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert status == 0


def _take(w: Witness, first: tuple[int, str], second: tuple[int, str]) -> None:
    w.on_acquire(*first)
    w.on_acquire(*second)
    w.on_release(second[0])
    w.on_release(first[0])


@pytest.mark.smp
def test_reversal_across_processes_names_both_points() -> None:
    a = Arrays(witness_arrays(2))
    _in_child(lambda: _take(Witness(a.view, 0), (LOCK_KEG_MBUF, "zone_alloc_bucket"),
                            (LOCK_KEG_CLUSTER, "mb_zinit_pack")))
    assert findings(a.view) == []
    _in_child(lambda: _take(Witness(a.view, 1), (LOCK_KEG_CLUSTER, "keg_free"),
                            (LOCK_KEG_MBUF, "zone_free_bucket")))
    (f,) = findings(a.view)
    assert f.kind == KIND_NAMES[LOR] and f.cpu == 1
    assert (f.held, f.held_at) == ("mbuf_cluster keg", "keg_free")
    assert (f.taken, f.taken_at) == ("mbuf keg", "zone_free_bucket")
    assert (f.first_at, f.second_at) == ("zone_alloc_bucket", "mb_zinit_pack")
    line = f.line()
    assert "lock order reversal" in line and "zone_alloc_bucket" in line and "keg_free" in line


@pytest.mark.smp
def test_same_order_everywhere_is_clean() -> None:
    a = Arrays(witness_arrays(2))
    for row in (0, 1):
        def same_order(row: int = row) -> None:
            for _ in range(3):
                _take(Witness(a.view, row), (LOCK_KEG_MBUF, "x"), (LOCK_BUCKET, "y"))

        _in_child(same_order)
    assert findings(a.view) == []


def test_two_refcount_stripes_at_once_is_recursion_on_one_class() -> None:
    a = Arrays(witness_arrays(1))
    w = Witness(a.view, 0)
    _take(w, (NLOCKS - 1, "ref a"), (NLOCKS - 2, "ref b"))
    (f,) = findings(a.view)
    assert f.kind == KIND_NAMES[RECURSION] and f.held == f.taken == "refcnt stripe"
    assert CLASS_NAMES[-1] == "refcnt stripe"


def test_sleeping_with_a_lock_held_is_reported_and_release_order_is_free() -> None:
    a = Arrays(witness_arrays(1))
    w = Witness(a.view, 0)
    w.on_acquire(LOCK_KEG_MBUF, "p1")
    w.on_acquire(LOCK_BUCKET, "p2")
    w.on_release(LOCK_KEG_MBUF)  # out of order: allowed
    w.check_sleep()
    (f,) = findings(a.view)
    assert f.kind == KIND_NAMES[SLEEP_LOCKED] and f.held == "bucket zone" and f.held_at == "p2"
    w.on_release(LOCK_BUCKET)
    w.check_sleep()
    assert len(findings(a.view)) == 1


def test_point_table_round_trip() -> None:
    a = Arrays(witness_arrays(1))
    pts = a.view("wt_points")
    s = point_slot(pts, "keg_fetch_slab")
    assert s > 0 and point_slot(pts, "keg_fetch_slab") == s
    assert point_name(pts, s) == "keg_fetch_slab" and point_name(pts, 0) == "?"
    assert point_slot(pts, "other") != s


def test_hooks_chain_with_an_existing_pair() -> None:
    a = Arrays(witness_arrays(1))
    seen: list[str] = []

    class FakeCpu:
        lock_hooks = (lambda i, p: seen.append(f"a{i}"), lambda i: seen.append(f"r{i}"))

    cpu = FakeCpu()
    Witness(a.view, 0).install(cpu)
    cpu.lock_hooks[0](LOCK_BUCKET, "p")
    cpu.lock_hooks[1](LOCK_BUCKET)
    assert seen == [f"a{LOCK_BUCKET}", f"r{LOCK_BUCKET}"]
    assert a.view("wt_nheld")[0] == 0


def test_real_allocator_hooks_are_balanced_and_clean() -> None:
    """Every acquire the allocator reports is released (the held stack returns to
    empty) and the allocator's own lock order has no reversal."""
    from allocator import M_PKTHDR, M_WAITOK, MT_DATA, Uma, UmaConfig

    uma = Uma.create(UmaConfig(ncpus=1, nmbclusters=2048, extra=witness_arrays(1)))
    try:
        cpu = uma.cpu(0)
        w = Witness(uma.view, 0)
        w.install(cpu)
        seen = [0]
        hooks = cpu.lock_hooks
        assert hooks is not None  # installed by Witness.install
        acquire, release = hooks

        def counting(i: int, p: str) -> None:
            seen[0] += 1
            acquire(i, p)

        cpu.lock_hooks = (counting, release)
        cpu.instrument()
        for _ in range(200):
            m = cpu.m_getcl(M_WAITOK, MT_DATA, M_PKTHDR)
            n = cpu.m_copym(m)
            cpu.m_freem(n)
            cpu.m_freem(m)
            m = cpu.m_gethdr(M_WAITOK, MT_DATA)
            assert cpu.m_clget(m, M_WAITOK)
            cpu.m_freem(m)
        # Interpreted, the refcount's fetchadd takes a striped lock (hundreds here);
        # compiled, it is a hardware atomic, and only bucket exchanges and slab fills
        # lock (about 50): either way the hooks must have been called.
        assert seen[0] > 20
        assert uma.view("wt_nheld")[0] == 0
        assert findings(uma.view) == []
    finally:
        uma.close()
