"""allocator: a UMA-style slab allocator in shared memory (our uma.h).

This package is the *system under test*: FreeBSD's UMA of Dec 2005 and the mbuf
zones on top of it, with all state in one shared-memory arena so that worker
processes pinned to real cores act as SMP CPUs.  It knows nothing of workloads, CLIs
or files and never imports ``stress``.  Structure (details in ``allocator/layout.py``):

    zone ──> per-CPU caches ──> buckets ──> keg ──> slabs ──> items

Public surface (everything else is private):

``UmaConfig(ncpus, nmbclusters=25600, refcount="atomic"|"buggy-eq0", wakeup="all"|"one",
invariants=False, exhaustion_drain=False, bucket_cache=True, inject=frozenset(),
extra=(), sched_locks=False, lock_profile=False)``
    Arguments: the allocator's size and semantics; every later FreeBSD fix is its own
    knob so each cause can be shown alone.  ``extra`` declares the tester's arrays
    (rings, held lists) in the same arena.

``Uma.create(cfg) -> Uma``
    Creates the arena, locks and per-CPU semaphores.  Discussion: call it in the
    manager *before* forking the workers (fork start method).

``Uma.attach(path) -> Uma``
    Attaches to a live arena through ``uma.path`` (``/proc/<pid>/fd/<n>``); read-mostly.

``uma.cpu(k) -> Cpu``
    The context of CPU ``k``; only the process acting as CPU k may use it.  Its methods:
    ``m_get(how, type)``, ``m_gethdr(how, type)``, ``m_getcl(how, type, flags)``,
    ``m_clget(m, how) -> bool``, ``m_copym(m) -> int``, ``m_free(m) -> next``,
    ``m_freem(m)``, ``mtod(m) -> memoryview``, ``zalloc(zone, flags, udata) -> item``,
    ``zfree(zone, item)``, ``serve()`` (serve cross-CPU drain requests: call every loop
    turn).  Returns: mbuf/item indices, -1 on failure (M_NOWAIT at the limit).
    Hooks for controlled scheduling: ``sched_point(label)``, ``sched_block()``,
    ``sched_unblock()``, ``lock_hooks``; call ``instrument()`` after changing them.

``uma.stats() -> Stats``; ``vmstat_z_lines(stats)``, ``netstat_m_lines(stats)``
    The one formatter used by live output, reports and tests.

``uma.audit(held_mbufs) -> AuditReport``
    The conservation audit at a quiescent point: free / cached / held / stranded / LOST.
    Under INVARIANTS it carries the history of the first lost / double-owned items.

``uma.item_history(keg, item) -> list[HistoryEntry]``; ``cpu.set_step_source(words, index)``
    INVARIANTS: the last HISTORY_DEPTH operations on an item (who, what, which step), oldest
    first; a controlled scheduler installs its step counter so records carry its steps
    (allocator/history.py).

``uma.sleepers()`` (CPUs asleep; one a wakeup already chose is not), ``uma.keg_free(k)``,
``uma.cpu_ops()``, ``uma.panics()``, ``uma.lock_holders()``, ``uma.lock_profile()``, ``uma.request_stop()``,
``uma.zone_drain(z)``, ``uma.request_cache_drain(cpus, zmask)``,
``uma.observe(z, lowmem)`` / ``uma.counters(z)`` / ``uma.apply(z, decision)`` (trimming;
each kernel's working-set statistics are kept by allocator/workingset.py),
``uma.page_shortage()`` / ``uma.free_pages()`` (the low-memory event, allocator/pageout.py),
``uma.close()``.

``allocator.COMPILED``
    Whether the hot modules run compiled (Cython) or interpreted in this process
    (allocator/implementation.py: ``ZONELIMIT_PURE=1`` forces interpreted).  Read at
    each access (``implementation.use`` may change it), so read it as
    ``allocator.COMPILED`` rather than importing the name.

``uma.manager().lock_within(lock, point, timeout) -> bool``, ``.lock_holder(lock) -> int``
    A lock taken with a timeout, for the manager, which must never block forever on a
    lock a stopped worker holds.  Returns: False with nothing taken on timeout; then the
    owner word names the holder's row (-1: free).

``uma.manager().bound(limit, give_up=None)``
    Every lock the manager's context takes from then on (observe, apply, drains) is
    bounded: not free within ``limit`` seconds, or ``give_up()`` true while waiting,
    raises ``LockTimeout`` (``.lock``, ``.name``, ``.holder`` row, ``.waited``,
    ``.gave_up``) after releasing every lock the context held.
"""

from typing import TYPE_CHECKING

from . import implementation
from .audit import AuditReport
from .cpu import Cpu
from .errors import LockTimeout, UmaPanic, UmaSleepError
from .history import HistoryEntry
from .implementation import UnsupportedArchitecture
from .keg import M_NOWAIT, M_WAITOK
from .layout import (
    EXT_CLUSTER,
    EXT_NONE,
    EXT_PACKET,
    HISTORY_DEPTH,
    KEG_CLUSTER,
    KEG_MBUF,
    KEG_NAMES,
    LOCK_NAMES,
    M_EXT,
    M_PKTHDR,
    MCLBYTES,
    MSIZE,
    MT_DATA,
    MT_HEADER,
    ZONE_CLUSTER,
    ZONE_MBUF,
    ZONE_NAMES,
    ZONE_PACKET,
    ArraySpec,
    Geometry,
    Layout,
)
from .stats import NetstatM, Stats, ZoneStats, netstat_m_lines, vmstat_z_lines
from .uma import INJECTIONS, Panic, PercpuCache, Sleeper, Uma, UmaConfig

__all__ = [
    "COMPILED", "INJECTIONS", "LOCK_NAMES", "EXT_CLUSTER", "EXT_NONE", "EXT_PACKET", "KEG_CLUSTER", "KEG_MBUF",
    "KEG_NAMES", "M_EXT", "M_NOWAIT", "M_PKTHDR", "M_WAITOK", "MCLBYTES", "MSIZE", "MT_DATA", "MT_HEADER",
    "ZONE_CLUSTER", "ZONE_MBUF", "ZONE_NAMES", "ZONE_PACKET",
    "HISTORY_DEPTH",
    "ArraySpec", "AuditReport", "Cpu", "Geometry", "HistoryEntry", "Layout", "LockTimeout", "NetstatM", "Panic",
    "PercpuCache", "Sleeper", "Stats", "Uma", "UmaConfig", "UmaPanic", "UmaSleepError", "UnsupportedArchitecture",
    "ZoneStats", "netstat_m_lines", "vmstat_z_lines",
]


if TYPE_CHECKING:
    COMPILED: bool  #: the process's mode (implementation.COMPILED)
else:

    def __getattr__(name: str) -> object:
        """``allocator.COMPILED``: the mode now (implementation.use changes it), not the
        mode when this package was first imported."""
        if name == "COMPILED":
            return implementation.COMPILED
        raise AttributeError(f"module 'allocator' has no attribute {name!r}")
