"""Cross-process locks with owner words, instrumentation by substitution.

Every allocator lock is a ``multiprocessing.Lock`` made in a *fork* context before the
workers start (its POSIX semaphore is unlinked at creation, so nothing can leak), plus
an *owner word* in the arena (``lock_owner``: row + 1 of the holder).  The owner word is
what lets the watchdog say "CPU 1 (pid N) died holding the mbuf keg lock" instead of
hanging: a lock whose holder was SIGKILLed stays locked forever.

The plain lock path is two C calls and two memoryview writes.  Instrumentation (sched
points, try-lock spinning for the controlled scheduler, WITNESS hooks, LOCK_PROFILING
statistics) is chosen once per CPU context by :meth:`LockOps.lock_mode` substituting
the ``lock``/``unlock`` methods, so the plain path pays nothing for it.

Acquisition points are small integers (``P_*``) naming the call site, as
LOCK_PROFILING names them by file:line.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .layout import LOCK_NAMES, LOCK_POINTS_MAX, LP_NFIELDS, NLOCKS

# Acquisition points (the call sites that take a lock).
POINTS = (
    "uma_zalloc_arg:zone",  # 0 step 2: bucket exchange with the zone lists
    "zone_alloc_bucket",  # 1 step 3: re-take after bucket_alloc / zinit
    "uma_zalloc_internal",  # 2 step 4: single item from a slab
    "uma_zfree_arg:zone",  # 3 free bucket full: exchange with the zone lists
    "uma_zfree_internal",  # 4 straight to the slab
    "msleep:zonelimit",  # 5 re-take after the zonelimit sleep
    "bucket_alloc",  # 6 bucket zone
    "bucket_free",  # 7 bucket zone
    "zone_drain",  # 8 drain / trim
    "cache_drain",  # 9 per-CPU cache flush (owner, on request)
    "mb_free_ext:refcnt",  # 10 refcount fetchadd
    "m_copym:refcnt",  # 11 refcount add
    "zone_observe",  # 12 trim observation
    "zone_prefill",  # 13 policy refill
)
NPOINTS = len(POINTS)
(P_ZALLOC, P_FILL, P_ZALLOC_INTERNAL, P_ZFREE, P_ZFREE_INTERNAL, P_SLEEP, P_BUCKET_ALLOC,
 P_BUCKET_FREE, P_DRAIN, P_CACHE_DRAIN, P_REF_FREE, P_REF_COPY, P_OBSERVE, P_PREFILL) = range(NPOINTS)

# LOCK_PROFILING fields per (lock, point), int64: count, contended, wait total/max ns,
# hold total/max ns.  Written only while holding that lock, so no further locking.
LP_FIELDS = ("count", "contended", "wait_total_ns", "wait_max_ns", "hold_total_ns", "hold_max_ns")
NLP = len(LP_FIELDS)
assert NLP == LP_NFIELDS and NPOINTS <= LOCK_POINTS_MAX


def lock_label(lock_id: int, point: int) -> str:
    """Human label of an acquisition: lock name @ call site."""
    return f"{LOCK_NAMES[lock_id]} @ {POINTS[point]}"


LABELS = [[lock_label(i, p) for p in range(NPOINTS)] for i in range(NLOCKS)]


class LockOps:
    """Lock and unlock for one CPU context (mixed into :class:`allocator.cpu.Cpu`)."""

    _mp: list[Any]
    lock_owner: memoryview
    lockprof: memoryview
    row1: int
    sched_point: Callable[[str], None]
    lock_hooks: tuple[Callable[[int, str], None], Callable[[int], None]] | None
    _held_since: list[int]
    _held_point: list[int]

    # --- the plain path -------------------------------------------------------------
    def lock(self, i: int, point: int) -> None:
        """Take lock ``i`` at acquisition point ``point``; records the owner."""
        self._mp[i].acquire()
        self.lock_owner[i] = self.row1

    def unlock(self, i: int) -> None:
        """Release lock ``i`` (called with it held, by its holder)."""
        self.lock_owner[i] = 0
        self._mp[i].release()

    # --- instrumented path ----------------------------------------------------------
    def lock_mode(self, *, sched: bool, spin: bool, profile: bool, hooks: bool) -> None:
        """Choose the lock implementation for this context (once, before use)."""
        if not (sched or spin or profile or hooks):
            self.lock = LockOps.lock.__get__(self)  # type: ignore[method-assign]
            self.unlock = LockOps.unlock.__get__(self)  # type: ignore[method-assign]
            return
        self._spin = spin
        self._profile = profile
        self.lock = self._lock_instrumented  # type: ignore[method-assign]
        self.unlock = self._unlock_instrumented  # type: ignore[method-assign]

    def _lock_instrumented(self, i: int, point: int) -> None:
        self.sched_point("acquire " + LABELS[i][point])
        mp = self._mp[i]
        contended = False
        t0 = time.perf_counter_ns() if self._profile else 0
        if self._spin:
            # Controlled scheduling: never block on a lock whose holder is descheduled.
            while not mp.acquire(False):
                contended = True
                self.sched_point("spin " + LABELS[i][point])
        elif not mp.acquire(False):
            contended = True
            mp.acquire()
        self.lock_owner[i] = self.row1
        if self._profile:
            now = time.perf_counter_ns()
            lp = self.lockprof
            base = (i * LOCK_POINTS_MAX + point) * NLP
            wait = now - t0
            lp[base] += 1
            if contended:
                lp[base + 1] += 1
            lp[base + 2] += wait
            if wait > lp[base + 3]:
                lp[base + 3] = wait
            self._held_since[i] = now
            self._held_point[i] = point
        if self.lock_hooks is not None:
            self.lock_hooks[0](i, POINTS[point])

    def _unlock_instrumented(self, i: int) -> None:
        if self.lock_hooks is not None:
            self.lock_hooks[1](i)
        if self._profile:
            hold = time.perf_counter_ns() - self._held_since[i]
            base = (i * LOCK_POINTS_MAX + self._held_point[i]) * NLP
            lp = self.lockprof
            lp[base + 4] += hold
            if hold > lp[base + 5]:
                lp[base + 5] = hold
        self.lock_owner[i] = 0
        self._mp[i].release()
        self.sched_point("release " + LOCK_NAMES[i])


def make_locks(ctx: Any) -> list[Any]:
    """All allocator locks, from a fork multiprocessing context (see module docstring)."""
    return [ctx.Lock() for _ in range(NLOCKS)]
