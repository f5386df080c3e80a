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

Owner words and memory ordering.  The owner word is FreeBSD's ``mtx_lock`` word reduced
to a label: the semaphore is the lock, the word says who holds it (``_mtx_obtain_lock``
stores the owner with ``atomic_cmpset_acq_ptr``, ``_mtx_release_lock`` clears it with
``atomic_cmpset_rel_ptr``).  Its holder writes it right after the acquire and clears it
right before the release; others read it without the lock (the watchdog's
``Uma.lock_holders``, a bounded lock naming the holder it timed out on, the token
scheduler's "no lock held" test).  Compiled (``lock.pxd``: ``LockOps`` is a C class whose
owner words are a typed memoryview), every owner store is a release store and every
load an acquire load (``allocator/atomics.pxd``): the C compiler may not cache, tear or
move them, and a reader that sees 0 sees the critical section's stores too.  Interpreted,
each is one memoryview access (docs/allocator.md "Memory ordering").  The semaphore's own
acquire and release order the word against the critical section in both modes.

The manager's context is *bounded* (:meth:`LockOps.bound`): every lock it takes comes
free within a time limit or the operation is abandoned with :class:`LockTimeout`, which
names the holder from the owner word.  A worker stopped (SIGSTOP, or descheduled for
seconds) while it holds a zone lock must never make the manager block forever, deaf
to signals.  FreeBSD has no such mutex (mtx_trylock is the nearest); this is the
tester's guard, not a UMA behaviour, and workers never use it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

try:
    import cython
except ImportError:  # an interpreted install without Cython: nothing here is compiled
    from allocator import _cython_shadow as cython  # type: ignore[no-redef, unused-ignore]

from allocator.errors import LockTimeout  # a hot module defines no exception (errors.py says why)
from allocator.layout import LOCK_NAMES, LOCK_POINTS_MAX, LP_NFIELDS, NLOCKS

#: Owner words through C atomics: compiled, True (a C constant, lock.pxd); interpreted,
#: False.  A module constant rather than ``cython.compiled`` at each test: interpreted,
#: one global load (about 3 ns less per test than the attribute, on a pair of ~190 ns).
ATOMIC = cython.compiled

#: seconds a bounded acquire blocks at a time before it asks whether to give up
BOUND_SLICE = 0.05


class BoundedLock:
    """One allocator lock as a bounded context sees it: a blocking ``acquire()`` waits
    in slices of :data:`BOUND_SLICE`, asking ``give_up()`` between them, and raises
    :class:`LockTimeout` after ``limit`` seconds; try-locks and timed acquires pass
    straight through.  Every lock implementation of :class:`LockOps` (plain, profiled,
    hooked) calls ``acquire`` on these, so they stay as they are."""

    __slots__ = ("_lock", "_id", "_ctx", "limit", "give_up")

    def __init__(self, lock: Any, lock_id: int, ctx: LockOps, limit: float,
                 give_up: Callable[[], bool] | None) -> None:
        self._lock, self._id, self._ctx, self.limit, self.give_up = lock, lock_id, ctx, limit, give_up

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Take the lock: at once, within ``timeout``, or within the bound (else raise)."""
        if not block or timeout is not None:
            return bool(self._lock.acquire(block, timeout) if block else self._lock.acquire(False))
        t0 = time.monotonic()
        end = t0 + self.limit
        while True:
            now = time.monotonic()
            if self._lock.acquire(True, max(0.0, min(BOUND_SLICE, end - now))):
                return True
            now = time.monotonic()
            gave_up = self.give_up is not None and self.give_up()
            if gave_up or now >= end:
                holder = self._ctx.lock_holder(self._id)
                self._ctx.release_held()
                raise LockTimeout(self._id, holder, now - t0, gave_up)

    def release(self) -> None:
        self._lock.release()

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

# Hold times are *sampled*: the 1st, (1+HOLD_SAMPLE)th, (1+2*HOLD_SAMPLE)th ... acquisition
# at each (lock, point) is timed from acquire to release, the others are not.  Reading the
# clock costs 60-80 ns here, about as much as the whole uncontended lock/unlock pair, and
# timing every hold made --lock-profile cost 30-40% of the allocator's throughput.
# ``hold_total_ns`` holds the sum of the sampled holds; :func:`hold_samples` says how many
# there were, so a reader scales it by count / samples (Uma.lock_profile does) and
# ``hold_max_ns`` is the longest *sampled* hold.  ``count`` and ``contended`` are exact, and
# so are the waits: an acquisition whose try-lock succeeds waited 0 ns by definition (its
# clock is not read), a contended one is timed every time.
HOLD_SAMPLE = 8
_SAMPLE_MASK = HOLD_SAMPLE - 1
assert HOLD_SAMPLE & _SAMPLE_MASK == 0, "HOLD_SAMPLE must be a power of two"


def hold_samples(count: int) -> int:
    """How many of ``count`` acquisitions at one (lock, point) had their hold timed."""
    return (count + _SAMPLE_MASK) // HOLD_SAMPLE


def lock_label(lock_id: int, point: int) -> str:
    """Human label of an acquisition: lock name @ call site."""
    return f"{LOCK_NAMES[lock_id]} @ {POINTS[point]}"


LABELS = [[lock_label(i, p) for p in range(NPOINTS)] for i in range(NLOCKS)]
# The sched-point labels, made once (a concatenation per acquisition costs ~50 ns).
ACQUIRE_LABELS = [["acquire " + lab for lab in row] for row in LABELS]
SPIN_LABELS = [["spin " + lab for lab in row] for row in LABELS]
RELEASE_LABELS = ["release " + name for name in LOCK_NAMES]
# lockprof offset of each (lock, point)'s first field.
LP_BASES = [[(i * LOCK_POINTS_MAX + p) * NLP for p in range(NPOINTS)] for i in range(NLOCKS)]


class LockOps:
    """Lock and unlock for one CPU context (mixed into :class:`allocator.cpu.Cpu`)."""

    # Set by the deriving context (context.py); compiled, C fields (lock.pxd).
    _mp: list[Any]
    lock_owner: memoryview
    lockprof: memoryview
    row1: int
    sched_point: Callable[[str], None]
    lock_hooks: tuple[Callable[[int, str], None], Callable[[int], None]] | None
    _held_since: list[int]
    _held_point: list[int]

    def instrument(self) -> None:
        """Re-choose the lock implementation after a hook changed (allocator/cpu.py's
        Cpu.instrument, which also tells the fast path)."""
        raise NotImplementedError

    # --- the plain path -------------------------------------------------------------
    def lock(self, i: int, point: int) -> None:
        """Take lock ``i`` at acquisition point ``point``; records the owner."""
        self._mp[i].acquire()
        if ATOMIC:
            zl_store_release_int(cython.address(self.lock_owner[i]), self.row1)  # type: ignore[name-defined]  # noqa: F821
        else:
            self.lock_owner[i] = self.row1

    def unlock(self, i: int) -> None:
        """Release lock ``i`` (called with it held, by its holder)."""
        if ATOMIC:
            zl_store_release_int(cython.address(self.lock_owner[i]), 0)  # type: ignore[name-defined]  # noqa: F821
        else:
            self.lock_owner[i] = 0
        self._mp[i].release()

    # --- the bounded path (the manager) ----------------------------------------------
    def lock_within(self, i: int, point: int, timeout: float) -> bool:
        """Take lock ``i`` at ``point`` if it comes free within ``timeout`` seconds.

        Returns True with the lock held (owner word set, WITNESS hooks told, released
        with :meth:`unlock` as usual), or False with nothing taken.  For the manager:
        a worker stopped (SIGSTOP, or descheduled for long) while it holds a zone lock
        must never make the manager block forever and deaf to signals; on False the
        caller names the holder with :meth:`lock_holder` and gives up.  FreeBSD has no
        such call for a mutex (mtx_trylock is the nearest); this is the tester's guard,
        not a UMA behaviour.  Not under the controlled scheduler (the manager never
        holds the token) and not counted in LOCK_PROFILING."""
        if not self._mp[i].acquire(True, max(timeout, 0.0)):
            return False
        if ATOMIC:
            zl_store_release_int(cython.address(self.lock_owner[i]), self.row1)  # type: ignore[name-defined]  # noqa: F821
        else:
            self.lock_owner[i] = self.row1
        hk = self.lock_hooks
        if hk is not None:
            hk[0](i, POINTS[point])
        return True

    def lock_holder(self, i: int) -> int:
        """The row (CPU number, or the manager's row) whose owner word holds lock ``i``,
        or -1 if the word says free.  The word is written just after the acquire and
        cleared just before the release, so a lock changing hands can read -1 for an
        instant; a holder that stays (stopped, killed) is always named."""
        if ATOMIC:
            return zl_load_acquire_int(cython.address(self.lock_owner[i])) - 1  # type: ignore[name-defined]  # noqa: F821
        return self.lock_owner[i] - 1

    def bound(self, limit: float, give_up: Callable[[], bool] | None = None) -> None:
        """Make every lock this context takes bounded (the manager's context; see the
        module docstring): a lock not free within ``limit`` seconds, or when
        ``give_up()`` turns true while waiting, releases every lock this context holds
        and raises :class:`LockTimeout` naming the holder.  The operation in progress is
        abandoned where it stood; what it had in hand stays recorded in the arena
        (``uc_fillbucket``, ``uc_initem``) for the audit.  Call before use (again to
        change the terms)."""
        raw = [m._lock if isinstance(m, BoundedLock) else m for m in self._mp]  # bound again: new terms
        self._mp = [BoundedLock(m, i, self, limit, give_up) for i, m in enumerate(raw)]
        self.instrument()  # the lock implementations close over the new list

    def release_held(self) -> list[int]:
        """Release every lock whose owner word names this context (an abandoned
        operation's); returns their ids.  Not for the fast paths."""
        out = []
        for i in range(NLOCKS):
            if self.lock_holder(i) == self.row1 - 1:
                self._held_since[i] = 0
                if ATOMIC:
                    zl_store_release_int(cython.address(self.lock_owner[i]), 0)  # type: ignore[name-defined]  # noqa: F821
                else:
                    self.lock_owner[i] = 0
                self._mp[i].release()
                out.append(i)
        return out

    def release_locks(self) -> None:
        """Drop this context's views of the owner words (compiled: a buffer export of the
        arena) and its instrumented lock pair (which closes over them), so the arena can
        be unmapped; the context cannot take a lock afterwards."""
        self.lock_owner = None  # type: ignore[assignment]
        vars(self).pop("lock", None)
        vars(self).pop("unlock", None)

    # --- instrumented path ----------------------------------------------------------
    def lock_mode(self, *, sched: bool, spin: bool, profile: bool, hooks: bool) -> None:
        """Choose the lock implementation for this context (once, before use, and again
        through ``instrument()`` whenever a hook changes).

        The instrumented pair is made here as closures over this context's locks, owner
        word and profile counters, specialised to the instruments in use, so a flag that
        is off costs nothing per acquisition.  ``sched_point`` and ``lock_hooks`` are still
        read from the context at each call (a scheduler may rebind them)."""
        self._spin = spin
        self._profile = profile
        # The pair is an instance attribute that shadows the class's plain methods (set in
        # __dict__: compiled, lock and unlock are C methods, which plain assignment
        # cannot replace); the plain path is the class's own.
        own = vars(self)
        if not (sched or spin or profile or hooks):
            own.pop("lock", None)
            own.pop("unlock", None)
            return
        if profile:
            pair = _profiled_pair(self, sched, spin, hooks)
        else:
            pair = _hooked_pair(self, sched, spin, hooks)
        own["lock"], own["unlock"] = pair


_LockPair = tuple[Callable[[int, int], None], Callable[[int], None]]


def _instrumented(this: LockOps, pair: _LockPair, sched: bool, hooks: bool) -> _LockPair:
    """``pair`` wrapped in sched points (before acquire, after release) and WITNESS-style
    lock hooks (after acquire, before release): the instruments both pair builders share."""
    if not (sched or hooks):
        return pair
    take, give = pair
    acq, rel, points = ACQUIRE_LABELS, RELEASE_LABELS, POINTS

    def lock(i: int, point: int) -> None:
        if sched:
            this.sched_point(acq[i][point])
        take(i, point)
        if hooks:
            hk = this.lock_hooks
            if hk is not None:
                hk[0](i, points[point])

    def unlock(i: int) -> None:
        if hooks:
            hk = this.lock_hooks
            if hk is not None:
                hk[1](i)
        give(i)
        if sched:
            this.sched_point(rel[i])

    return lock, unlock


def _hooked_pair(this: LockOps, sched: bool, spin: bool, hooks: bool) -> _LockPair:
    """lock/unlock with sched points, try-lock spinning and lock hooks, no profiling.
    (Compiled, ``owner`` and ``row1`` are typed in lock.pxd: the owner stores are C
    release stores, as in :meth:`LockOps.lock`.)"""
    mps, owner, row1 = this._mp, this.lock_owner, this.row1
    acq, spn, rel = ACQUIRE_LABELS, SPIN_LABELS, RELEASE_LABELS

    if sched and not (spin or hooks):  # --sched jitter: the common case, one call, no flag tests

        @cython.locals(i=cython.int, point=cython.int)
        def lock_sched(i: int, point: int) -> None:
            this.sched_point(acq[i][point])
            mps[i].acquire()
            if ATOMIC:
                zl_store_release_int(cython.address(owner[i]), row1)  # type: ignore[name-defined]  # noqa: F821
            else:
                owner[i] = row1

        @cython.locals(i=cython.int)
        def unlock_sched(i: int) -> None:
            if ATOMIC:
                zl_store_release_int(cython.address(owner[i]), 0)  # type: ignore[name-defined]  # noqa: F821
            else:
                owner[i] = 0
            mps[i].release()
            this.sched_point(rel[i])

        return lock_sched, unlock_sched

    @cython.locals(i=cython.int, point=cython.int)
    def take(i: int, point: int) -> None:
        mp = mps[i]
        if spin:
            # Controlled scheduling: never block on a lock whose holder is descheduled.
            while not mp.acquire(False):
                this.sched_point(spn[i][point])
        else:
            mp.acquire()
        if ATOMIC:
            zl_store_release_int(cython.address(owner[i]), row1)  # type: ignore[name-defined]  # noqa: F821
        else:
            owner[i] = row1

    @cython.locals(i=cython.int)
    def give(i: int) -> None:
        if ATOMIC:
            zl_store_release_int(cython.address(owner[i]), 0)  # type: ignore[name-defined]  # noqa: F821
        else:
            owner[i] = 0
        mps[i].release()

    return _instrumented(this, (take, give), sched, hooks)


def _profiled_pair(this: LockOps, sched: bool, spin: bool, hooks: bool) -> _LockPair:
    """lock/unlock recording LOCK_PROFILING statistics (see HOLD_SAMPLE), plus whatever
    other instruments are on.  With --lock-profile alone the pair is the profiled
    acquire/release itself, one call each; the slow paths (a contended acquire, a
    sampled hold) are calls of their own.  (Compiled, the owner words and the profile
    counters are typed memoryviews, lock.pxd.)"""
    mps, owner, row1, lp = this._mp, this.lock_owner, this.row1, this.lockprof
    spn, bases = SPIN_LABELS, LP_BASES
    held_since, held_base = this._held_since, this._held_point
    clock = time.perf_counter_ns
    mask = _SAMPLE_MASK

    @cython.locals(i=cython.int, point=cython.int, base=cython.Py_ssize_t, n=cython.longlong, wait=cython.longlong)
    def contended(i: int, point: int, base: int) -> None:
        """The try-lock failed: block (or spin through sched points), count the wait."""
        mp = mps[i]
        t0 = clock()
        if spin:
            # Controlled scheduling: never block on a lock whose holder is descheduled.
            while not mp.acquire(False):
                this.sched_point(spn[i][point])
        else:
            mp.acquire()
        now = clock()
        if ATOMIC:
            zl_store_release_int(cython.address(owner[i]), row1)  # type: ignore[name-defined]  # noqa: F821
        else:
            owner[i] = row1
        n = lp[base] + 1
        lp[base] = n
        lp[base + 1] += 1
        wait = now - t0
        lp[base + 2] += wait
        if wait > lp[base + 3]:
            lp[base + 3] = wait
        if not (n - 1) & mask:
            held_since[i] = now
            held_base[i] = base

    @cython.locals(i=cython.int, base=cython.Py_ssize_t, hold=cython.longlong)
    def sampled_hold(i: int, t0: int) -> None:
        """Release of a sampled acquisition: add its hold time."""
        hold = clock() - t0
        held_since[i] = 0
        base = held_base[i]
        lp[base + 4] += hold
        if hold > lp[base + 5]:
            lp[base + 5] = hold

    @cython.locals(i=cython.int, point=cython.int, base=cython.Py_ssize_t, n=cython.longlong)
    def lock_prof(i: int, point: int) -> None:
        base = bases[i][point]
        if not mps[i].acquire(False):
            contended(i, point, base)
            return
        if ATOMIC:
            zl_store_release_int(cython.address(owner[i]), row1)  # type: ignore[name-defined]  # noqa: F821
        else:
            owner[i] = row1
        n = lp[base] + 1
        lp[base] = n
        if not (n - 1) & mask:
            held_since[i] = clock()
            held_base[i] = base

    @cython.locals(i=cython.int)
    def unlock_prof(i: int) -> None:
        t0 = held_since[i]
        if t0:
            sampled_hold(i, t0)
        if ATOMIC:
            zl_store_release_int(cython.address(owner[i]), 0)  # type: ignore[name-defined]  # noqa: F821
        else:
            owner[i] = 0
        mps[i].release()

    return _instrumented(this, (lock_prof, unlock_prof), sched, hooks)


def make_locks(ctx: Any) -> list[Any]:
    """All allocator locks, from a fork multiprocessing context (see module docstring)."""
    return [ctx.Lock() for _ in range(NLOCKS)]
