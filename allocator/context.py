"""The execution context: one CPU's bound views of the arena.

A :class:`Context` is what a kernel thread has implicitly: which CPU it runs on and
where every structure is.  It binds the arena's arrays once as memoryview attributes
(the fast paths read ``self.ub_cnt[b]`` and nothing slower) and holds only read-only
views and constants -- all allocator *state* is in the arena.  The mixins that
implement kegs, limits, buckets, zones, mbufs and debugging all derive from it, and
:class:`allocator.cpu.Cpu` assembles them.

Rows: CPUs ``0..ncpus-1`` are worker processes; row ``ncpus`` is the manager, which
runs the trim "callout" and drains but has no per-CPU buckets; row ``ncpus + 1``
holds the shared counters of the ``stats-unlocked`` injection; row ``ncpus + 2`` is the
off-CPU context (``Uma.offcpu``), CPU-less like the manager's but for use inside one
worker, so it never shares counter rows with the manager process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from allocator.arena import Arena
from allocator.layout import BUCKET_MAX, NKEGS, NZONES, ZONE_KEG

from .lock import LockOps


def _noop_label(label: str) -> None:
    """The free-mode sched point: does nothing."""


def _noop() -> None:
    """The free-mode block/unblock hook."""


class Context(LockOps):
    """Bound views of one arena for one row (CPU or manager)."""

    def __init__(self, arena: Arena, row: int, locks: list[Any], sems: list[Any] | None,
                 inject: frozenset[str]) -> None:
        self.arena = arena
        g = arena.layout.geometry
        self.geometry = g
        self.ncpus = g.ncpus
        self.rows = g.rows
        self.row = row
        self.row1 = row + 1
        self.is_cpu = row < g.ncpus
        self.inject = inject
        self._mp = locks
        self._sems = sems
        v = arena.view
        self.hdr = v("hdr")
        self.uk_pages = v("uk_pages")
        self.uk_maxpages = v("uk_maxpages")
        self.uk_cappages = v("uk_cappages")
        self.uk_free = v("uk_free")
        self.uk_flags = v("uk_flags")
        self.uk_part_head = v("uk_part_head")
        self.uk_free_head = v("uk_free_head")
        self.uk_vmtop = v("uk_vmtop")
        self.uk_nsleep = v("uk_nsleep")
        self.uk_sleepq = v("uk_sleepq")
        self.uk_sleeps = v("uk_sleeps")
        self.uk_wakeups = v("uk_wakeups")
        self.m_flags = v("m_flags")
        self.m_type = v("m_type")
        self.m_next = v("m_next")
        self.m_len = v("m_len")
        self.m_ext = v("m_ext")
        self.m_exttype = v("m_exttype")
        self.cl_ref = v("cl_ref")
        self.ub_cnt = v("ub_cnt")
        self.ub_entries = v("ub_entries")
        self.ub_link = v("ub_link")
        self.ub_fresh = v("ub_fresh")
        self.ub_bucket = v("ub_bucket")
        self.ub_pool = v("ub_pool")
        self.uz_count = v("uz_count")
        self.uz_full_head = v("uz_full_head")
        self.uz_full_cnt = v("uz_full_cnt")
        self.uz_full_items = v("uz_full_items")
        self.uz_free_head = v("uz_free_head")
        self.uz_free_cnt = v("uz_free_cnt")
        self.uz_fills = v("uz_fills")
        self.uz_count_min = v("uz_count_min")
        self.uz_imax = v("uz_imax")
        self.uz_imin = v("uz_imin")
        self.uz_bimin = v("uz_bimin")
        self.uz_swing = v("uz_swing")
        self.uzd_nitems = v("uzd_nitems")
        self.uzd_imax = v("uzd_imax")
        self.uzd_imin = v("uzd_imin")
        self.uzd_bimin = v("uzd_bimin")
        self.uzd_wss = v("uzd_wss")
        self.uzd_limin = v("uzd_limin")
        self.uzd_timin = v("uzd_timin")
        self.uzd19_imax = v("uzd19_imax")
        self.uzd19_imin = v("uzd19_imin")
        self.uzd19_wss = v("uzd19_wss")
        self.ml_total = v("ml_total")
        self.ml_min = v("ml_min")
        self.ml_reaplimit = v("ml_reaplimit")
        self.uz_nfill = v("uz_nfill")
        self.uz_noverflow = v("uz_noverflow")
        self.uz_ndrained = v("uz_ndrained")
        self.uz_nprefill = v("uz_nprefill")
        self.uc_allocbucket = v("uc_allocbucket")
        self.uc_freebucket = v("uc_freebucket")
        self.uc_fillbucket = v("uc_fillbucket")
        self.uc_initem = v("uc_initem")
        self.uc_allocs = v("uc_allocs")
        self.uc_frees = v("uc_frees")
        self.uc_fails = v("uc_fails")
        self.uc_sleeps = v("uc_sleeps")
        self.uc_misses = v("uc_misses")
        self.cpu_pid = v("cpu_pid")
        self.cpu_wchan = v("cpu_wchan")
        self.cpu_wkeg = v("cpu_wkeg")
        self.cpu_wzone = v("cpu_wzone")
        self.cpu_wsince = v("cpu_wsince")
        self.cpu_woken = v("cpu_woken")
        self.cpu_drainreq = v("cpu_drainreq")
        self.cpu_drainmask = v("cpu_drainmask")
        self.cpu_drained = v("cpu_drained")
        self.cpu_ops = v("cpu_ops")
        self.lock_owner = v("lock_owner")
        self.panics = v("panics")
        self.lockprof = v("lockprof")
        # Per-keg arrays, indexed [keg][...].
        self.uk_vmstack = [v(f"k{k}_uk_vmstack") for k in range(NKEGS)]
        self.us_freecount = [v(f"k{k}_us_freecount") for k in range(NKEGS)]
        self.us_firstfree = [v(f"k{k}_us_firstfree") for k in range(NKEGS)]
        self.us_list = [v(f"k{k}_us_list") for k in range(NKEGS)]
        self.us_prev = [v(f"k{k}_us_prev") for k in range(NKEGS)]
        self.us_next = [v(f"k{k}_us_next") for k in range(NKEGS)]
        self.ui_next = [v(f"k{k}_ui_next") for k in range(NKEGS)]
        self.ui_state = [v(f"k{k}_ui_state") for k in range(NKEGS)]
        self.payload = [arena.payload(k) for k in range(NKEGS)]
        # INVARIANTS item history (debug.py records it, history.py reads it): only when the
        # arena keeps one; the step word a controlled scheduler installs (set_step_source).
        self.history_depth = g.history
        self.ui_hist = [v(f"k{k}_ui_hist") for k in range(NKEGS)] if g.history else []
        self.ui_histn = [v(f"k{k}_ui_histn") for k in range(NKEGS)] if g.history else []
        self.ui_histclock: Any = v("ui_histclock") if g.history else None
        self._step_words: Any = None
        self._step_index = 0
        # Row indexes of this context in the (zone x row) arrays.
        self._ci = [z * self.rows + row for z in range(NZONES)]
        # Counter rows: the stats-unlocked injection makes every CPU bump one shared row.
        shared = row if "stats-unlocked" not in inject else g.ncpus + 1
        self._sci = [z * self.rows + shared for z in range(NZONES)]
        self._zkeg = ZONE_KEG
        self._wake_one_clears_full = "wake-one" in inject
        self._bmax = BUCKET_MAX
        # Hooks (races.md): no-ops unless a scheduler installs its own.
        self.sched_point: Callable[[str], None] = _noop_label
        self.sched_block: Callable[[], None] = _noop
        self.sched_unblock: Callable[[], None] = _noop
        self.lock_hooks: tuple[Callable[[int, str], None], Callable[[int], None]] | None = None
        self._held_since = [0] * len(locks)
        self._held_point = [0] * len(locks)
        self._spin = False
        self._profile = False
