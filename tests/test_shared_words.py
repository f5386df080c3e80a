"""Words processes share without holding the lock that protects them (docs/allocator.md
"Memory ordering"): the owner words and the wait channel.  Compiled, each access is an
explicit C atomic (allocator/atomics.pxd); interpreted, a memoryview access.  These
tests hold, in both modes, that the words say what their lock-free readers (the
watchdog's ``Uma.lock_holders`` and ``Uma.sleepers``, a bounded lock naming its holder)
expect, in every lock mode; and that a cross-CPU drain request posted while a CPU is on
its way to sleep is served while it sleeps.  One process, no sleep, no thread: the
sleeper's own hooks play the other CPUs.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from allocator import KEG_CLUSTER, LOCK_NAMES, M_NOWAIT, M_WAITOK, ZONE_CLUSTER, ZONE_MBUF, Sleeper, Uma, UmaConfig
from allocator.implementation import compiled_available
from allocator.layout import WCHAN_ZONELIMIT
from allocator.lock import P_DRAIN

MODES = [pytest.param(True, id="compiled"), pytest.param(False, id="interpreted")]


def _need(compiled: bool) -> None:
    if compiled and not compiled_available():
        if os.environ.get("ZONELIMIT_REQUIRE_COMPILED", "") not in ("", "0"):
            raise RuntimeError("ZONELIMIT_REQUIRE_COMPILED is set but the compiled allocator is not available")
        pytest.skip("the compiled allocator is not built (pip install . with a C compiler)")


@contextmanager
def _uma(compiled: bool, **cfg: Any) -> Iterator[Uma]:
    _need(compiled)
    uma = Uma.create(UmaConfig(**{"ncpus": 1, "nmbclusters": 64, **cfg}), compiled=compiled)
    assert uma.compiled == compiled
    try:
        yield uma
    finally:
        uma.close()


def _cached(uma: Uma, z: int) -> int:
    """Items in CPU 0's per-CPU cache of zone ``z``."""
    c = uma.percpu_buckets()[z]  # CPU 0's zones come first
    return c.alloc_items + c.free_items


@pytest.mark.parametrize("compiled", MODES)
def test_compiled_contexts_keep_their_owner_words_in_a_c_class(compiled: bool) -> None:
    """Compiled, LockOps is the C class of allocator/lock.pxd (typed owner words, C
    atomics); interpreted, the plain Python class."""
    with _uma(compiled) as uma:
        cpu = uma.cpu(0)
        lockops = importlib.import_module("allocator._compiled.lock" if compiled else "allocator.lock").LockOps
        assert isinstance(cpu, lockops)
        assert type(cpu).__mro__[-2].__module__ == ("allocator._compiled.lock" if compiled else "allocator.lock")


@pytest.mark.parametrize("compiled", MODES)
@pytest.mark.parametrize("profile", [False, True], ids=["plain", "profiled"])
@pytest.mark.parametrize("sched,spin,hooks", [(False, False, False), (True, False, False), (False, True, False),
                                              (False, False, True), (True, True, True)],
                         ids=["bare", "sched", "spin", "hooks", "all"])
def test_the_owner_word_names_the_holder_in_every_lock_mode(compiled: bool, profile: bool, sched: bool, spin: bool,
                                                            hooks: bool) -> None:
    with _uma(compiled, lock_profile=profile, sched_locks=spin) as uma:
        cpu = uma.cpu(0)
        events: list[str] = []
        if sched:
            cpu.sched_point = events.append
        if hooks:
            cpu.lock_hooks = (lambda i, p: events.append(f"+{i}"), lambda i: events.append(f"-{i}"))
        cpu.instrument()
        for lock_id in (1, 5):
            assert uma.lock_holders() == [] and cpu.lock_holder(lock_id) == -1
            cpu.lock(lock_id, P_DRAIN)
            assert uma.lock_holders() == [(LOCK_NAMES[lock_id], 0)]
            assert cpu.lock_holder(lock_id) == 0
            assert uma.view("lock_owner")[lock_id] == 1  # row + 1
            cpu.unlock(lock_id)
            assert uma.lock_holders() == [] and cpu.lock_holder(lock_id) == -1
        assert ("+5" in events) == hooks and any(e.startswith("acquire") for e in events) == sched
        if profile:
            assert sum(row["count"] for row in uma.lock_profile()) == 2


@pytest.mark.parametrize("compiled", MODES)
def test_a_bounded_context_names_itself_and_releases_what_it_holds(compiled: bool) -> None:
    with _uma(compiled, ncpus=2) as uma:
        m = uma.manager()  # row ncpus = 2
        assert m.lock_within(1, P_DRAIN, 1.0)
        m.lock(4, P_DRAIN)
        assert uma.lock_holders() == [(LOCK_NAMES[1], 2), (LOCK_NAMES[4], 2)]
        assert uma.cpu(0).lock_holder(4) == 2  # another context reads the same word
        assert m.release_held() == [1, 4]
        assert uma.lock_holders() == []
        assert uma.cpu(1).lock_within(4, P_DRAIN, 0.0)  # the lock itself was released too
        uma.cpu(1).unlock(4)


@pytest.mark.parametrize("compiled", MODES)
def test_the_wait_channel_reads_as_the_watchdog_expects(compiled: bool) -> None:
    """A sleep is published with its keg, zone and time; a woken CPU is not a sleeper
    (Uma.sleepers); a new sleep clears the woken flag before it shows its channel."""
    with _uma(compiled, ncpus=2) as uma:
        w = uma.cpu(1)._wchan
        assert uma.sleepers() == []
        w.sleep_on(1, WCHAN_ZONELIMIT, KEG_CLUSTER, ZONE_MBUF, 1234)
        assert uma.sleepers() == [Sleeper(1, "zonelimit", "mbuf_cluster", "mbuf", 1234)]
        assert not w.is_woken(1)
        uma.cpu(0)._wchan.wake(1)  # the waker's context, the sleeper's row
        assert w.is_woken(1) and uma.sleepers() == []
        w.leave(1)
        assert uma.view("cpu_wchan")[1] == 0 and uma.sleepers() == []
        w.sleep_on(1, WCHAN_ZONELIMIT, KEG_CLUSTER, ZONE_CLUSTER, 99)
        assert not w.is_woken(1)
        assert uma.sleepers() == [Sleeper(1, "zonelimit", "mbuf_cluster", "mbuf_cluster", 99)]


@pytest.mark.parametrize("compiled", MODES)
def test_a_drain_request_posted_on_the_way_to_a_sleep_is_served_asleep(compiled: bool) -> None:
    """The manager asks CPU 0 to drain its caches after CPU 0's last serve() but before
    it sets its wait channel (here: at its first lock acquisition of an M_WAITOK cluster
    allocation at the limit).  The request must reach the sleep: CPU 0's semaphore holds
    a post when it blocks, and it serves the request asleep, before any wakeup -- which
    the manager then sends (a cluster freed while CPU 0 drains), so the allocation ends.
    Posting only to a CPU whose channel said asleep (before this fix) left the request
    pending until a wakeup."""
    with _uma(compiled) as uma:
        cpu, manager = uma.cpu(0), uma.manager()
        spare = manager.zalloc(ZONE_CLUSTER, M_NOWAIT, -1)
        while cpu.zalloc(ZONE_CLUSTER, M_NOWAIT, -1) >= 0:
            pass
        mbufs = [cpu.m_get(M_NOWAIT) for _ in range(3)]
        for m in mbufs:
            cpu.m_freem(m)  # something in CPU 0's mbuf cache for the drain to flush
        assert uma.keg_full(KEG_CLUSTER) and _cached(uma, ZONE_MBUF) > 0
        state = {"asleep": False, "requested": False, "served_asleep": False, "posted": None}

        def sched_point(label: str) -> None:
            if not state["requested"] and label.startswith("acquire"):
                state["requested"] = True
                uma.request_cache_drain([0], 1 << ZONE_MBUF)
            elif state["asleep"] and label.startswith("acquire") and "cache_drain" in label:
                state["served_asleep"] = True
                manager.zfree(ZONE_CLUSTER, spare)  # FULL: to the slab, and wakes CPU 0

        def sched_block() -> None:
            state["asleep"] = True
            state["posted"] = uma.sems[0].acquire(False)
            if state["posted"]:
                uma.sems[0].release()  # put it back: the sleep is what we test
            else:
                raise AssertionError("the drain request left no post for the sleep: it would sleep through it")

        cpu.sched_point = sched_point
        cpu.sched_block = sched_block
        cpu.instrument()
        assert cpu.zalloc(ZONE_CLUSTER, M_WAITOK, -1) == spare
        assert state == {"asleep": True, "requested": True, "served_asleep": True, "posted": True}
        assert uma.cache_drain_done([0]) and _cached(uma, ZONE_MBUF) == 0
        assert uma.sleepers() == []
