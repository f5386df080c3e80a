"""One CPU's view of the allocator: the object a worker process calls.

``Cpu`` assembles the per-concept mixins (lock, keg, limit, bucket, zone, mbuf,
debug) over one :class:`allocator.context.Context`.  A worker gets its ``Cpu`` from
``Uma.cpu(k)`` after fork; the manager gets a non-CPU context (row ``ncpus``) for
drains, trims and prefills, which never uses per-CPU buckets and never sleeps.
"""

from __future__ import annotations

from typing import Any

from allocator.arena import Arena
from allocator.layout import HDR_KNOBS, KNOB_INVARIANTS

from .debug import DebugOps


class Cpu(DebugOps):
    """The per-CPU allocator context (see allocator/__init__.py for the API)."""

    def __init__(self, arena: Arena, row: int, locks: list[Any], sems: list[Any] | None,
                 inject: frozenset[str], *, sched_locks: bool = False, lock_profile: bool = False) -> None:
        super().__init__(arena, row, locks, sems, inject)
        self.invariants = bool(self.hdr[HDR_KNOBS] & KNOB_INVARIANTS)
        self.sched_locks = sched_locks
        self.lock_profile = lock_profile
        self._install_mbuf_hooks()
        self.bind_wait_channel()
        if self.invariants:
            self.enable_invariants()
        if "stats-unlocked" in inject:
            self._inject_stats_unlocked()
        self.instrument()

    def _inject_stats_unlocked(self) -> None:
        """INJECTED DEFECT (races.md ``stats-unlocked``): every CPU bumps one shared
        counter row (Context._sci) with a plain read-modify-write whose read happens
        before the operation and whose write after it, so an increment another CPU
        makes in between is lost and USED drifts from the truth."""
        inner_alloc, inner_free = self.zalloc, self.zfree
        allocs, frees = self.uc_allocs, self.uc_frees

        def zalloc(z: int, flags: int = 2, udata: int = -1) -> int:
            i = self._sci[z]
            v = allocs[i]
            self.sched_point("stats read-modify-write")
            item = inner_alloc(z, flags, udata)
            if item >= 0:
                allocs[i] = v + 1
            return item

        def zfree(z: int, item: int, udata: int = -1) -> None:
            i = self._sci[z]
            v = frees[i]
            self.sched_point("stats read-modify-write")
            inner_free(z, item, udata)
            frees[i] = v + 1

        self.zalloc = zalloc  # type: ignore[method-assign]
        self.zfree = zfree  # type: ignore[method-assign]

    def instrument(self) -> None:
        """(Re)choose the lock implementation after hooks were installed: plain unless
        a sched point, spinning, lock profiling or lock hooks are in use; and tell the
        fast path whether to call the sched point, whether zalloc/zfree are wrapped
        (INVARIANTS, the stats-unlocked injection) and whether refcount changes are
        recorded in the item history (INVARIANTS)."""
        from .context import _noop_label

        sched = self.sched_point is not _noop_label
        self.lock_mode(sched=sched, spin=self.sched_locks,
                       profile=self.lock_profile, hooks=self.lock_hooks is not None)
        self._fast.configure(sched, not (self.invariants or "stats-unlocked" in self.inject),
                             self.invariants and self.history_depth > 0)

    def release(self) -> None:
        """Drop this context's arena views (the compiled fast path, owner words and wait
        channel hold buffer exports that would keep the arena from being unmapped).
        ``Uma.close`` calls it."""
        self._fast.release()
        self._wchan.release()
        self.release_locks()
