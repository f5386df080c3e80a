"""The allocator as a whole: create or attach an arena, hand out CPU contexts, read
statistics, audit, drain and trim (uma_core.c: uma_startup, zone creation,
uma_reclaim, uma_timeout).

Who calls what::

    manager:  uma = Uma.create(cfg)      # arena + fork-context locks + per-CPU semaphores
              fork workers ──────────────────────────────┐
              uma.stats(), uma.sleepers()  (sampling)     │ worker k:  cpu = uma.cpu(k)
              uma.trim_tick(policies)      (the callout)  │            cpu.m_getcl(...) ...
              uma.request_cache_drain(...) ─ request ───> │            cpu.serve()
              uma.audit(held)              (quiescent)    │
    observer: Uma.attach("/proc/<pid>/fd/<n>").stats()    ┘
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import snapshot
from .arena import Arena
from .audit import AuditReport, audit
from .history import HISTORY_ITEMS, HistoryEntry, history_words, item_history
from .implementation import check_architecture, cpu_class
from .layout import (
    BUCKET_MAX,
    HDR_KNOBS,
    HDR_PAGE_BUDGET,
    HDR_PANICS,
    HDR_STOP,
    HISTORY_DEPTH,
    KEG_CLUSTER,
    KEG_MBUF,
    KEG_NAMES,
    KNOB_EXHAUSTION_DRAIN,
    KNOB_INVARIANTS,
    KNOB_NO_BUCKETS,
    KNOB_REFCOUNT_ATOMIC,
    KNOB_WAKEUP_ALL,
    LOCK_NAMES,
    LOCK_POINTS_MAX,
    LP_NFIELDS,
    MAX_PANICS,
    NKEGS,
    NLOCKS,
    NZONES,
    PANIC_NAMES,
    PANIC_WORDS,
    WCHAN_NAMES,
    ZONE_CLUSTER,
    ZONE_KEG,
    ZONE_NAMES,
    ArraySpec,
    Geometry,
)
from .lock import NPOINTS, POINTS, hold_samples, make_locks
from .pageout import free_pages, page_shortage
from .policy._interface import Decision
from .stats import Stats, compute_stats

if TYPE_CHECKING:
    from .cpu import Cpu

INJECTIONS = ("refcount-eq0", "refcount-unlocked", "lost-wakeup", "wake-one", "cache-drain-unsafe",
              "stats-unlocked")


@dataclass(frozen=True)
class UmaConfig:
    """Allocator semantics and size.  Every later fix is a separate knob."""

    ncpus: int
    nmbclusters: int = 25600
    refcount: str = "atomic"  #: "buggy-eq0" (2005) or "atomic"
    wakeup: str = "all"  #: "one" (2005) or "all" (c. 2007)
    invariants: bool = False
    exhaustion_drain: bool = False  #: c. 2007: drain the packet zone when clusters run out
    bucket_cache: bool = True  #: False: no per-CPU buckets, every op takes the zone lock (P4)
    inject: frozenset[str] = frozenset()
    extra: tuple[ArraySpec, ...] = ()
    sched_locks: bool = False  #: lock acquires spin through sched points (controlled scheduling)
    lock_profile: bool = False
    mbuf_factor: float = 2.0  #: mbuf keg capacity in mbufs per cluster (no limit in 2005)
    page_budget: int = 0  #: pages the VM has for the kegs; 0: none, vm_lowmem never fires (pageout.py)

    def __post_init__(self) -> None:
        if self.ncpus < 1:
            raise ValueError("ncpus must be >= 1")
        if self.nmbclusters < 2:
            raise ValueError("nmbclusters must be >= 2")
        if self.page_budget < 0:
            raise ValueError("page_budget must be >= 0 (0: no budget)")
        if self.refcount not in ("buggy-eq0", "atomic"):
            raise ValueError(f"refcount must be buggy-eq0 or atomic, not {self.refcount}")
        if self.wakeup not in ("one", "all"):
            raise ValueError(f"wakeup must be one or all, not {self.wakeup}")
        bad = set(self.inject) - set(INJECTIONS)
        if bad:
            raise ValueError(f"unknown injection(s) {sorted(bad)}; known: {', '.join(INJECTIONS)}")


@dataclass(frozen=True)
class Sleeper:
    """A CPU asleep on a wait channel."""

    cpu: int
    wchan: str
    keg: str
    zone: str
    since_ns: int  #: CLOCK_MONOTONIC


@dataclass(frozen=True)
class PercpuCache:
    """One CPU's cache of one zone: its alloc and free buckets (items, capacity; 0/0
    when the CPU holds no such bucket)."""

    cpu: int
    zone: str
    alloc_items: int
    alloc_size: int
    free_items: int
    free_size: int


@dataclass(frozen=True)
class Panic:
    """An INVARIANTS finding recorded in the arena."""

    kind: str
    zone: str
    item: int
    cpu: int
    other: int
    #: INVARIANTS: the item's recorded history in words, oldest first (allocator/history.py)
    history: tuple[str, ...] = ()


@dataclass
class Uma:
    """An allocator instance bound to one arena (see allocator/__init__.py)."""

    arena: Arena
    config: UmaConfig | None
    locks: list[Any] | None
    sems: list[Any] | None
    cpu_type: type[Cpu] | None  #: the CPU context class of the mode chosen at creation (implementation.py)
    _manager: Cpu | None = None
    _offcpu: Cpu | None = None
    _cpus: dict[int, Cpu] = field(default_factory=dict)

    # --- creation -----------------------------------------------------------------------
    @staticmethod
    def create(cfg: UmaConfig, compiled: bool | None = None) -> Uma:
        """Create and initialise an arena (uma_startup + the three mbuf zones).  Call in
        the manager before forking; locks and semaphores come from a fork context, so
        their POSIX semaphores are unlinked at once and can never leak.  ``compiled``
        chooses the hot modules' implementation (None: the process's, allocator.COMPILED;
        the differential test drives both side by side)."""
        check_architecture()
        # The item history costs memory and a record per operation: under INVARIANTS only.
        g = Geometry.for_config(cfg.ncpus, cfg.nmbclusters, cfg.mbuf_factor,
                                HISTORY_DEPTH if cfg.invariants else 0)
        arena = Arena.create(g, cfg.extra)
        ctx = multiprocessing.get_context("fork")
        locks = make_locks(ctx)
        sems = [ctx.Semaphore(0) for _ in range(g.rows)]
        uma = Uma(arena, cfg, locks, sems, cpu_class(compiled))
        uma._init_arena()
        return uma

    @staticmethod
    def attach(path: str, readonly: bool = False) -> Uma:
        """Attach to a live arena (read-mostly: no locks, no CPU contexts); ``readonly``
        maps it without write permission (an observer: nothing it does can change the run)."""
        check_architecture()
        return Uma(Arena.attach(path, readonly), None, None, None, None)

    @staticmethod
    def from_snapshot(path: str | os.PathLike[str]) -> Uma:
        """An allocator over an arena rebuilt from a snapshot (allocator/snapshot.py):
        read it, audit it; like an attached arena it has no locks and no CPU contexts."""
        return Uma(snapshot.load(path), None, None, None, None)

    def snapshot(self, path: str | os.PathLike[str]) -> Path:
        """Write every array of the arena to ``path`` (allocator/snapshot.py), payload excepted."""
        return snapshot.save(self.arena, path)

    def _init_arena(self) -> None:
        assert self.config is not None
        cfg, a, g = self.config, self.arena, self.arena.layout.geometry
        knobs = 0
        knobs |= KNOB_REFCOUNT_ATOMIC if cfg.refcount == "atomic" else 0
        knobs |= KNOB_WAKEUP_ALL if cfg.wakeup == "all" else 0
        knobs |= KNOB_INVARIANTS if cfg.invariants else 0
        knobs |= KNOB_NO_BUCKETS if not cfg.bucket_cache else 0
        knobs |= KNOB_EXHAUSTION_DRAIN if cfg.exhaustion_drain else 0
        a.view("hdr")[HDR_KNOBS] = knobs
        a.view("hdr")[HDR_PAGE_BUDGET] = cfg.page_budget
        pages = (g.mbuf_pages, g.cluster_pages)
        for k in range(NKEGS):
            a.view("uk_cappages")[k] = pages[k]
            a.np(f"k{k}_uk_vmstack")[:] = range(pages[k] - 1, -1, -1)
            a.view("uk_vmtop")[k] = pages[k]
            a.np(f"k{k}_us_list")[:] = 3  # on the VM stack
            a.np(f"k{k}_us_prev")[:] = -1
            a.np(f"k{k}_us_next")[:] = -1
            a.np(f"k{k}_us_firstfree")[:] = -1
        a.view("uk_part_head")[KEG_MBUF] = a.view("uk_part_head")[KEG_CLUSTER] = -1
        a.view("uk_free_head")[KEG_MBUF] = a.view("uk_free_head")[KEG_CLUSTER] = -1
        a.view("uk_maxpages")[KEG_CLUSTER] = g.cluster_pages  # nmbclusters, in pages
        a.view("uk_maxpages")[KEG_MBUF] = 0  # no mbuf limit in 2005
        a.np("m_ext")[:] = -1
        nb = g.nbuckets
        link = a.np("ub_link")
        link[:-1] = range(1, nb)
        link[-1] = -1
        a.view("ub_pool")[0] = 0
        a.view("ub_pool")[1] = nb
        for name in ("uz_full_head", "uz_free_head"):
            a.np(name)[:] = -1
        # uz_count: UMA_ZONE_MAXBUCKET for mbuf (and the packet zone inherits it);
        # the cluster zone starts at its items per slab and grows by one per miss.
        a.view("uz_count")[0] = BUCKET_MAX
        a.view("uz_count")[1] = 2
        a.view("uz_count")[2] = BUCKET_MAX
        # A reclaim's uz_count-- stops at the initial size (FreeBSD main's
        # uz_bucket_size_min, set from the zone's first bucket size in zone_ctor).
        a.np("uz_count_min")[:] = a.np("uz_count")
        for name in ("uc_allocbucket", "uc_freebucket", "uc_fillbucket", "uc_initem"):
            a.np(name)[:] = -1

    # --- contexts -----------------------------------------------------------------------
    def cpu(self, k: int) -> Cpu:
        """The context of CPU ``k``: call in the process that acts as CPU k."""
        if self.locks is None or self.config is None or self.cpu_type is None:
            raise RuntimeError("an attached arena has no CPU contexts")
        if not 0 <= k < self.arena.layout.geometry.ncpus:
            raise ValueError(f"cpu {k} out of range")
        c = self._cpus.get(k)
        if c is None:
            self.arena.view("cpu_pid")[k] = os.getpid()
            c = self.cpu_type(self.arena, k, self.locks, self.sems, self.config.inject,
                    sched_locks=self.config.sched_locks, lock_profile=self.config.lock_profile)
            self._cpus[k] = c
        return c

    def manager(self) -> Cpu:
        """The manager's context (row ncpus): drains, trims, prefills; never sleeps and
        has no per-CPU buckets (frees go straight to the slabs)."""
        if self.locks is None or self.config is None or self.cpu_type is None:
            raise RuntimeError("an attached arena has no contexts")
        if self._manager is None:
            row = self.arena.layout.geometry.ncpus
            self.arena.view("cpu_pid")[row] = os.getpid()
            self._manager = self.cpu_type(self.arena, row, self.locks, self.sems, self.config.inject,
                                sched_locks=self.config.sched_locks, lock_profile=self.config.lock_profile)
        return self._manager

    def offcpu(self) -> Cpu:
        """A CPU-less context (row ncpus + 2) for tester code inside ONE worker process
        that must bypass per-CPU caches (single items straight from the slabs) without
        sharing the manager's row.  Like the manager's, it never sleeps."""
        if self.locks is None or self.config is None or self.cpu_type is None:
            raise RuntimeError("an attached arena has no contexts")
        if self._offcpu is None:
            row = self.arena.layout.geometry.ncpus + 2
            self._offcpu = self.cpu_type(self.arena, row, self.locks, self.sems, self.config.inject,
                               sched_locks=self.config.sched_locks, lock_profile=self.config.lock_profile)
        return self._offcpu

    # --- reading ------------------------------------------------------------------------
    @property
    def path(self) -> str:
        return self.arena.path

    @property
    def geometry(self) -> Geometry:
        return self.arena.layout.geometry

    def view(self, name: str) -> memoryview:
        return self.arena.view(name)

    def np(self, name: str) -> Any:
        return self.arena.np(name)

    def stats(self) -> Stats:
        """A snapshot of the zone counters and netstat -m numbers."""
        g = self.geometry
        return compute_stats(self.arena.np, g.rows, g.nclusters)

    def sleepers(self) -> list[Sleeper]:
        """CPUs asleep on a wait channel right now.

        A CPU that a wakeup already chose (``cpu_woken``, set by the waker under the keg
        lock) is not asleep: it is runnable, and keeps its wait channel only until it
        runs again and re-takes the keg lock (msleep's return).  Counting it would make a
        CPU woken but not yet scheduled -- a loaded machine, a stopped process -- look
        like a sleeper beside the very item that woke it: a false lost wakeup.  The
        sleeper clears ``cpu_woken`` before it sets ``cpu_wchan`` (limit.py keg_sleep),
        so reading the channel first never sees a new sleep with a stale woken flag."""
        a = self.arena
        wchan, woken = a.view("cpu_wchan"), a.view("cpu_woken")
        out = []
        for r in range(self.geometry.rows):
            w = wchan[r]
            if w and not woken[r]:
                out.append(Sleeper(r, WCHAN_NAMES.get(w, str(w)), KEG_NAMES[a.view("cpu_wkeg")[r]],
                                   ZONE_NAMES[a.view("cpu_wzone")[r]], a.view("cpu_wsince")[r]))
        return out

    def percpu_buckets(self) -> list[PercpuCache]:
        """Each CPU's per-CPU cache, per zone: the items and capacity of its alloc and
        free buckets, read without a lock (libmemstat's memstat_uma.c reads
        ``uc_allocbucket->ub_cnt`` and ``uc_freebucket->ub_cnt`` of every CPU the same
        way: a snapshot that may be a moment stale, never a stop of the owner)."""
        a, rows, ncpus = self.arena, self.geometry.rows, self.geometry.ncpus
        alloc, free = a.np("uc_allocbucket"), a.np("uc_freebucket")
        cnt, entries = a.np("ub_cnt"), a.np("ub_entries")

        def bucket(b: int) -> tuple[int, int]:
            return (int(cnt[b]), int(entries[b])) if b >= 0 else (0, 0)

        return [PercpuCache(k, ZONE_NAMES[z], *bucket(int(alloc[z * rows + k])), *bucket(int(free[z * rows + k])))
                for k in range(ncpus) for z in range(len(ZONE_NAMES))]

    def keg_free(self, keg: int) -> int:
        """Free items in the keg's slabs now."""
        return int(self.arena.view("uk_free")[keg])

    def keg_full(self, keg: int) -> bool:
        return bool(self.arena.view("uk_flags")[keg] & 1)

    def cpu_ops(self) -> list[int]:
        """Per-CPU progress counters (consumer mbuf calls)."""
        return [int(x) for x in self.arena.np("cpu_ops")[: self.geometry.ncpus]]

    def panics(self) -> list[Panic]:
        a = self.arena
        n = min(int(a.view("hdr")[HDR_PANICS]), MAX_PANICS)
        p = a.view("panics")
        out = []
        for i in range(n):
            b = i * PANIC_WORDS
            z, item = int(p[b + 1]), int(p[b + 2])
            history: tuple[str, ...] = ()
            if 0 <= z < NZONES and item >= 0 and i < HISTORY_ITEMS:
                history = tuple(history_words(a.np, ZONE_KEG[z], item, self.geometry.ncpus))
            out.append(Panic(PANIC_NAMES.get(p[b], str(p[b])), ZONE_NAMES[z] if 0 <= z < NZONES else "?",
                             item, p[b + 3], p[b + 4], history))
        return out

    def item_history(self, keg: int, item: int) -> list[HistoryEntry]:
        """The last operations recorded on ``item`` of ``keg`` (KEG_MBUF / KEG_CLUSTER),
        oldest first: [] unless the arena was created with INVARIANTS (allocator/history.py)."""
        return item_history(self.arena.np, keg, item, self.geometry.ncpus)

    def lock_holders(self) -> list[tuple[str, int]]:
        """(lock name, row) of every lock held now, from the owner words."""
        own = self.arena.view("lock_owner")
        return [(LOCK_NAMES[i], own[i] - 1) for i in range(NLOCKS) if own[i]]

    def lock_profile(self) -> list[dict[str, Any]]:
        """LOCK_PROFILING rows, one per (lock, acquisition point) that was used.  Hold
        times are sampled (allocator.lock.HOLD_SAMPLE): the total is the sampled sum
        scaled by count / samples, the max the longest sampled hold."""
        lp = self.arena.np("lockprof").reshape(NLOCKS, LOCK_POINTS_MAX, LP_NFIELDS)
        rows = []
        for i in range(NLOCKS):
            for p in range(NPOINTS):
                cnt, cont, wt, wm, ht, hm = (int(x) for x in lp[i, p])
                if cnt:
                    ht = ht * cnt // hold_samples(cnt)
                    rows.append({"name": f"{LOCK_NAMES[i]} @ {POINTS[p]}", "lock": LOCK_NAMES[i],
                                 "point": POINTS[p], "count": cnt, "contended": cont,
                                 "wait_total_us": wt / 1e3, "wait_max_us": wm / 1e3,
                                 "hold_total_us": ht / 1e3, "hold_max_us": hm / 1e3,
                                 "wait_avg_us": wt / cnt / 1e3, "hold_avg_us": ht / cnt / 1e3})
        return rows

    # --- control ------------------------------------------------------------------------
    def request_stop(self) -> None:
        self.arena.view("hdr")[HDR_STOP] = 1

    def stop_requested(self) -> bool:
        return bool(self.arena.view("hdr")[HDR_STOP])

    def audit(self, held_mbufs: Iterable[int]) -> AuditReport:
        """The conservation audit (allocator/audit.py) at a quiescent point."""
        return audit(self.arena.np, self.geometry.rows, self.stats(), held_mbufs)

    def zone_drain(self, z: int) -> int:
        """2005 zone_drain of zone ``z`` from the manager's context."""
        return self.manager().zone_drain(z)

    def request_cache_drain(self, cpus: Iterable[int], zmask: int = (1 << NZONES) - 1,
                            by: Cpu | None = None) -> None:
        """The safe cross-CPU protocol: ask each CPU to flush its per-CPU buckets of the
        zones in ``zmask`` to the zone lists; the owner does it at its next serve()
        (a sleeping CPU is poked awake to serve and sleeps on).  Only the manager posts
        requests.  The cache-drain-unsafe injection flushes them from here instead, in
        the context ``by`` of the caller (default: the manager's), as 2005's uma_reclaim
        thread would have run cache_drain on live zones (uma_core.c: cache_drain is only
        safe in zone_dtor, "when the zone is being torn down").  A caller that runs under
        the controlled scheduler passes the context whose sched point it hooked (the race
        workload's off-CPU context): a context without one would spin on a lock held by a
        descheduled CPU without ever passing the token (docs/races.md).

        Every CPU asked has its semaphore posted, asleep or not, as an IPI reaches a CPU
        whatever it does.  Posting only to a CPU whose wait channel said asleep lost
        requests: a CPU past its last serve() but not yet asleep (its channel not yet
        set) was not posted, slept, and served the request only when a free woke it --
        its per-CPU buckets, which the request meant to flush, kept meanwhile.  A post
        to a running CPU is found at its next sleep, which serves whatever is pending
        and sleeps on (limit.py keg_sleep)."""
        a = self.arena
        m = self.manager() if by is None else by
        for c in cpus:
            if "cache-drain-unsafe" in m.inject:
                m.cache_drain(c, zmask)  # INJECTED DEFECT: touching another CPU's cache
                continue
            a.view("cpu_drainmask")[c] |= zmask
            a.view("cpu_drainreq")[c] += 1
            if self.sems is not None:
                self.sems[c].release()

    def cache_drain_done(self, cpus: Iterable[int]) -> bool:
        """True once every CPU in ``cpus`` served its last drain request."""
        a = self.arena
        return all(a.view("cpu_drainreq")[c] == a.view("cpu_drained")[c] for c in cpus)

    def wait_cache_drain(self, cpus: Iterable[int], timeout: float = 5.0) -> bool:
        cpus = list(cpus)
        end = time.monotonic() + timeout
        while not self.cache_drain_done(cpus):
            if time.monotonic() > end:
                return False
            time.sleep(0.001)
        return True

    # --- trimming (the callout) ---------------------------------------------------------
    def observe(self, z: int, lowmem: bool = False) -> dict[str, int]:
        """The raw observation of zone ``z``: the working-set statistics under the zone
        lock (``ZoneOps.zone_observe``: at an interval end every kernel's periodic
        update runs and the demand extremes are reset; with ``lowmem`` only FreeBSD
        main's reclaim-time update), then :meth:`counters`."""
        out = self.manager().zone_observe(z, not lowmem)
        out.update(self.counters(z))
        return {k: int(v) for k, v in out.items()}

    def counters(self, z: int) -> dict[str, int]:
        """Zone ``z``'s running totals and per-CPU contents, read without a lock and
        without touching any statistic (the caller differences the totals).
        ``cluster_fails`` leaves out the manager's own failed M_NOWAIT pre-fills: they
        are not consumer exhaustion."""
        g = self.geometry
        rows = g.rows
        a = self.arena
        ub_cnt = a.np("ub_cnt")
        percpu = 0
        for arr in ("uc_allocbucket", "uc_freebucket"):
            b = a.np(arr)[z * rows:(z + 1) * rows]
            b = b[b >= 0]
            percpu += int(ub_cnt[b].sum())
        cl = ZONE_CLUSTER * rows
        fails = a.np("uc_fails")[cl:cl + rows]
        return {
            "zone": z, "percpu": percpu,
            "fills": int(a.view("uz_nfill")[z]),
            "allocs": int(a.np("uc_allocs")[z * rows:(z + 1) * rows].sum()),
            "frees": int(a.np("uc_frees")[z * rows:(z + 1) * rows].sum()),
            "overflows": int(a.view("uz_noverflow")[z]),
            "sleepers": int(a.view("uk_nsleep")[KEG_CLUSTER]),
            "cluster_fails": int(fails.sum()) - int(fails[g.ncpus]),
            "cluster_sleeps": int(a.np("uc_sleeps")[cl:cl + rows].sum()),
        }

    def apply(self, z: int, decision: Decision) -> dict[str, int]:
        """Carry out a policy decision for zone ``z`` from the manager's context, in
        the order ``Decision`` documents.  Returns what was done: ``drained`` items and
        ``buckets`` taken off the list, ``prefilled`` items, ``pages`` given back to
        the VM, ``keg_drains`` (1 if keg_drain ran)."""
        d = decision
        m = self.manager()
        done = {"drained": 0, "buckets": 0, "prefilled": 0, "pages": 0, "keg_drains": 0}
        if d.drain_percpu:
            self.request_cache_drain(range(self.geometry.ncpus), 1 << z)
        if d.shrink_bucket:
            m.zone_shrink_bucket(z)
        if d.zone_drain:
            done["buckets"], done["drained"] = m.bucket_cache_drain(z)
        else:
            n = (1 << 30) if d.reclaim_to >= 0 else d.drain_buckets
            if n > 0:
                done["buckets"], done["drained"] = m.zone_reclaim(z, n, d.reclaim_to, d.reclaim_past)
        if d.keg_drain or d.zone_drain or (d.keg_drain_if_freed and done["buckets"] > 0):
            done["pages"] = m.zone_keg_drain(z)
            done["keg_drains"] = 1
        if d.prefill_buckets > 0:
            done["prefilled"] = m.zone_prefill(z, d.prefill_buckets)
        return done

    @property
    def page_budget(self) -> int:
        """Pages the VM has for the kegs (0: no budget)."""
        return int(self.arena.view("hdr")[HDR_PAGE_BUDGET])

    def free_pages(self) -> int:
        """The page budget less the pages both kegs hold (meaningless without a budget)."""
        return free_pages(self.page_budget, int(self.arena.np("uk_pages").sum()))

    def page_shortage(self) -> bool:
        """True when the page daemon would fire vm_lowmem now (allocator/pageout.py)."""
        return page_shortage(self.page_budget, int(self.arena.np("uk_pages").sum()))

    @property
    def compiled(self) -> bool:
        """Whether this allocator's CPU contexts are the compiled ones (implementation.py)."""
        return self.cpu_type is not None and self.cpu_type.__module__.startswith("allocator._compiled.")

    def close(self) -> None:
        """Drop the CPU contexts' views and unmap the arena (idempotent)."""
        for c in [*self._cpus.values(), self._manager, self._offcpu]:
            if c is not None:
                c.release()
        self._cpus.clear()
        self._manager = None
        self._offcpu = None
        self.arena.close()
