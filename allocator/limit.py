"""Zone limits: the ``zonelimit`` sleep and its wakeups (uma_core.c uma_zone_slab's
msleep and uma_zfree_internal's wakeup_one, 2005; wakeup of all sleepers c. 2007).

The sleep has no timeout, faithfully: a CPU that sleeps here stays asleep until a free
wakes it.  What makes that safe for the *tester* is that every sleeping CPU is visible
in the arena (``cpu_wchan``, ``cpu_wkeg``, ``cpu_wzone``, ``cpu_wsince``), so the
watchdog can see a wedge and stop the run.

Implementation of msleep: the sleeper queues itself on the keg's FIFO (``uk_sleepq``)
under the keg lock, drops the lock and blocks on its own per-CPU semaphore.  A waker,
holding the keg lock, marks the sleeper woken and posts its semaphore, so a wakeup
between the unlock and the block is never lost (the semaphore counts): FreeBSD's
sleepq_add before the interlock is dropped, sleepq_signal under the same chain lock.
The sleeper also wakes for a cross-CPU drain request (like an IPI: ``Uma.request_cache_drain``
posts the semaphore of every CPU it asks), serves it, and sleeps on if it was not
really woken.

Memory ordering.  The sleep queue and the counters are under the keg lock.  The wait
channel words (:class:`WaitChannel`) are also read without it -- by the watchdog
(``Uma.sleepers``), the token scheduler, and the sleeper itself after its semaphore --
so compiled (``limit.pxd``), each is written and read with an explicit atomic: the
channel is published last with a release store (a reader that sees it, with an acquire
load, sees the keg, zone, time and the cleared woken flag written before it); the waker
sets ``cpu_woken`` with a release store before it posts the semaphore, and the sleeper
reads it with an acquire load after.  Interpreted, each is one memoryview access (x86
TSO; docs/allocator.md "Memory ordering").
"""

from __future__ import annotations

import time
from typing import Any

try:
    import cython
except ImportError:  # an interpreted install without Cython: nothing here is compiled
    from allocator import _cython_shadow as cython  # type: ignore[no-redef, unused-ignore]

from allocator.errors import UmaSleepError
from allocator.layout import HDR_KNOBS, KNOB_WAKEUP_ALL, WCHAN_NONE, WCHAN_ZONELIMIT

from .keg import KegOps
from .lock import P_SLEEP


class WaitChannel:
    """The wait-channel words of every row, as FreeBSD keeps td_wchan / td_wmesg in the
    thread: ``cpu_wchan`` (what the row sleeps on), ``cpu_wkeg``, ``cpu_wzone``,
    ``cpu_wsince`` (what it waited for, since when) and ``cpu_woken`` (a wakeup chose it).

    Written by the sleeper and its waker under the keg lock, read by others without it:
    every access is here, so compiled each is the atomic the module docstring names."""

    def __init__(self, ctx: Any) -> None:
        self.wchan = ctx.cpu_wchan
        self.woken = ctx.cpu_woken
        self.wkeg = ctx.cpu_wkeg
        self.wzone = ctx.cpu_wzone
        self.wsince = ctx.cpu_wsince

    def release(self) -> None:
        """Drop the arena views (compiled: buffer exports), so the arena can be unmapped."""
        self.wchan = self.woken = self.wkeg = self.wzone = self.wsince = None

    def sleep_on(self, row: int, chan: int, k: int, z: int, since: int) -> None:
        """Publish that ``row`` sleeps on ``chan`` (keg lock held): the details and a
        cleared woken flag first, the channel last (release), so a reader that sees the
        channel (``Uma.sleepers`` reads it first) never sees a stale woken flag."""
        if cython.compiled:
            zl_store_relaxed_int(cython.address(self.woken[row]), 0)  # type: ignore[name-defined]  # noqa: F821
            zl_store_relaxed_int(cython.address(self.wkeg[row]), k)  # type: ignore[name-defined]  # noqa: F821
            zl_store_relaxed_int(cython.address(self.wzone[row]), z)  # type: ignore[name-defined]  # noqa: F821
            zl_store_relaxed_ll(cython.address(self.wsince[row]), since)  # type: ignore[name-defined]  # noqa: F821
            zl_store_release_int(cython.address(self.wchan[row]), chan)  # type: ignore[name-defined]  # noqa: F821
        else:
            self.woken[row] = 0
            self.wkeg[row] = k
            self.wzone[row] = z
            self.wsince[row] = since
            self.wchan[row] = chan

    def leave(self, row: int) -> None:
        """``row`` runs again (keg lock re-taken): no wait channel."""
        if cython.compiled:
            zl_store_release_int(cython.address(self.wchan[row]), WCHAN_NONE)  # type: ignore[name-defined]  # noqa: F821
        else:
            self.wchan[row] = WCHAN_NONE

    def wake(self, row: int) -> None:
        """A wakeup chose ``row`` (keg lock held; its semaphore is posted next)."""
        if cython.compiled:
            zl_store_release_int(cython.address(self.woken[row]), 1)  # type: ignore[name-defined]  # noqa: F821
        else:
            self.woken[row] = 1

    def is_woken(self, row: int) -> bool:
        """Whether a wakeup chose ``row`` (the sleeper, after its semaphore)."""
        if cython.compiled:
            return zl_load_acquire_int(cython.address(self.woken[row])) != 0  # type: ignore[name-defined]  # noqa: F821
        return self.woken[row] != 0


class LimitOps(KegOps):
    """zonelimit sleep and wakeup for one CPU context."""

    _wchan: WaitChannel

    def serve(self) -> None:  # implemented in zone.py
        raise NotImplementedError

    def bind_wait_channel(self) -> None:
        """Make this context's :class:`WaitChannel` (allocator/cpu.py, once)."""
        self._wchan = WaitChannel(self)

    def keg_sleep(self, k: int, z: int) -> None:
        """msleep(keg, &keg->uk_lock, PVM, "zonelimit", 0).  Called with the keg lock
        held (the caller found no free item at the limit); returns with it held."""
        row = self.row
        if self._sems is None or not self.is_cpu:
            raise UmaSleepError("only a CPU context may sleep in zonelimit")
        if "lost-wakeup" in self.inject:
            # INJECTED DEFECT: the check ("no free items") and the sleep are not under one
            # lock hold; a free in this window wakes nobody, and we sleep anyway.
            self.unlock(k)
            self.sched_point("lost-wakeup window")
            self.lock(k, P_SLEEP)
        q = k * self.rows
        n = self.uk_nsleep[k]
        self.uk_sleepq[q + n] = row
        self.uk_nsleep[k] = n + 1
        wchan = self._wchan
        wchan.sleep_on(row, WCHAN_ZONELIMIT, k, z, time.monotonic_ns())
        self.uk_sleeps[k] += 1
        self.uc_sleeps[self._sci[z]] += 1
        self.unlock(k)
        self.sched_point("zonelimit sleep")
        self.sched_block()
        sem = self._sems[row]
        while True:
            # Woken by a wakeup, or by a drain request's post (served here, asleep), or by
            # a post left from a request served while running (nothing to do): sleep on
            # unless a wakeup chose us.
            sem.acquire()
            self.serve()
            if wchan.is_woken(row):
                break
        self.sched_unblock()
        self.lock(k, P_SLEEP)
        wchan.leave(row)

    def keg_wakeup(self, k: int) -> None:
        """wakeup_one(keg) (2005) or wakeup(keg) (c. 2007).  Keg lock held."""
        n = self.uk_nsleep[k]
        if n == 0:
            return
        wake_all = bool(self.hdr[HDR_KNOBS] & KNOB_WAKEUP_ALL) and "wake-one" not in self.inject
        cnt = n if wake_all else 1
        q = k * self.rows
        sq = self.uk_sleepq
        sems = self._sems
        wchan = self._wchan
        for i in range(cnt):
            r = sq[q + i]
            wchan.wake(r)
            if sems is not None:
                sems[r].release()
        for i in range(n - cnt):
            sq[q + i] = sq[q + cnt + i]
        self.uk_nsleep[k] = n - cnt
        self.uk_wakeups[k] += cnt
