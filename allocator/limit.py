"""Zone limits: the ``zonelimit`` sleep and its wakeups (uma_core.c uma_zone_slab's
msleep and uma_zfree_internal's wakeup_one, 2005; wakeup of all sleepers c. 2007).

The sleep has no timeout, faithfully: a CPU that sleeps here stays asleep until a free
wakes it.  What makes that safe for the *tester* is that every sleeping CPU is visible
in the arena (``cpu_wchan``, ``cpu_wkeg``, ``cpu_wzone``, ``cpu_wsince``), so the
watchdog can see a wedge and stop the run.

Implementation of msleep: the sleeper queues itself on the keg's FIFO (``uk_sleepq``)
under the keg lock, drops the lock and blocks on its own per-CPU semaphore.  A waker,
holding the keg lock, marks the sleeper woken and posts its semaphore, so a wakeup
between the unlock and the block is never lost (the semaphore counts).  The sleeper
also wakes for a cross-CPU drain request (like an IPI), serves it, and sleeps on if
it was not really woken.
"""

from __future__ import annotations

import time

from allocator.errors import UmaSleepError
from allocator.layout import HDR_KNOBS, KNOB_WAKEUP_ALL, WCHAN_NONE, WCHAN_ZONELIMIT

from .keg import KegOps
from .lock import P_SLEEP


class LimitOps(KegOps):
    """zonelimit sleep and wakeup for one CPU context."""

    def serve(self) -> None:  # implemented in zone.py
        raise NotImplementedError

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
        self.cpu_woken[row] = 0
        self.cpu_wkeg[row] = k
        self.cpu_wzone[row] = z
        self.cpu_wsince[row] = time.monotonic_ns()
        self.cpu_wchan[row] = WCHAN_ZONELIMIT
        self.uk_sleeps[k] += 1
        self.uc_sleeps[self._sci[z]] += 1
        self.unlock(k)
        self.sched_point("zonelimit sleep")
        self.sched_block()
        sem = self._sems[row]
        while True:
            sem.acquire()
            if self.cpu_drainreq[row] != self.cpu_drained[row]:
                self.serve()
            if self.cpu_woken[row]:
                break
        self.sched_unblock()
        self.lock(k, P_SLEEP)
        self.cpu_wchan[row] = WCHAN_NONE

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
        for i in range(cnt):
            r = sq[q + i]
            self.cpu_woken[r] = 1
            if sems is not None:
                sems[r].release()
        for i in range(n - cnt):
            sq[q + i] = sq[q + cnt + i]
        self.uk_nsleep[k] = n - cnt
        self.uk_wakeups[k] += cnt
