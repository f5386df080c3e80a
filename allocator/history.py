"""The INVARIANTS item history, read back: the last operations on one mbuf or cluster.

Why.  The audit says *that* a cluster was lost or an item owned twice; to say *how*, a
kernel engineer reads what touched the item last -- FreeBSD's memguard and the
``UMA_DEBUG`` / KTR traces serve that purpose; ours is smaller and always on under
INVARIANTS.  Each mbuf and cluster keeps a ring of its last ``HISTORY_DEPTH`` operations
in the arena (``k{keg}_ui_hist``, declared in layout.py), written by the INVARIANTS hooks
of debug.py (``DebugOps.history_record``) where the duplicate free / alloc checks run, so
the plain fast path pays nothing and a run without INVARIANTS has no such arrays at all.

A record is one int64 word (layout.py ``HIST_*``): who (the row: a CPU, the manager or
the off-CPU context), what (``HOP_*``: alloc, free, refcount-inc, refcount-dec, with the
zone), and when: the schedule step when a controlled schedule runs (the tester installs
its step counter with ``Cpu.set_step_source``), else the row's own count of recorded
operations.  :func:`item_history` decodes a ring oldest first; :meth:`HistoryEntry.words`
says it for a person: ``cpu1 refcount-dec mbuf_cluster at step 812``.

Two CPUs recording on one item at the same instant (free or jitter scheduling, on two
cores) may both take the same slot of its ring: one record is then lost.  Under a
controlled schedule only the token holder runs, so nothing is lost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .layout import (
    HIST_NO_ZONE,
    HIST_OP_SHIFT,
    HIST_ROW_BITS,
    HIST_SCHED,
    HIST_STEP_SHIFT,
    HIST_ZONE_SHIFT,
    HOP_NAMES,
    ZONE_NAMES,
)

HISTORY_ITEMS = 4  #: items per kind of finding whose history a report carries


def encode(row: int, op: int, zone: int, step: int, sched: bool) -> int:
    """One history word (layout.py ``HIST_*``); debug.py writes the same inline."""
    return ((step << HIST_STEP_SHIFT) | (HIST_SCHED if sched else 0) | (zone << HIST_ZONE_SHIFT)
            | (op << HIST_OP_SHIFT) | (row + 1))


@dataclass(frozen=True)
class HistoryEntry:
    """One recorded operation on an item."""

    row: int  #: the arena row that did it
    cpu: int  #: the CPU, or -1 for the manager's and the off-CPU context
    context: str  #: ``cpu1``, ``manager``, ``off-cpu``
    op: str  #: alloc / free / refcount-inc / refcount-dec
    zone: str  #: the zone it went through ("" for none)
    step: int
    sched: bool  #: ``step`` is the schedule's step (else the row's own operation count)

    def words(self) -> str:
        """``cpu1 free mbuf_cluster at step 812`` (``op 812 of cpu1`` without a schedule)."""
        when = f"at step {self.step}" if self.sched else f"op {self.step} of {self.context}"
        zone = f" {self.zone}" if self.zone else ""
        return f"{self.context} {self.op}{zone} {when}"


def decode(word: int, ncpus: int) -> HistoryEntry | None:
    """The entry of one history word; None for an empty slot."""
    word = int(word)
    row1 = word & ((1 << HIST_ROW_BITS) - 1)
    if row1 == 0:
        return None
    row = row1 - 1
    op = (word >> HIST_OP_SHIFT) & 0xF
    z = (word >> HIST_ZONE_SHIFT) & 0x3
    if row < ncpus:
        cpu, context = row, f"cpu{row}"
    else:
        cpu, context = -1, "manager" if row == ncpus else "off-cpu"
    return HistoryEntry(row, cpu, context, HOP_NAMES.get(op, f"op{op}"),
                        ZONE_NAMES[z] if z != HIST_NO_ZONE else "", word >> HIST_STEP_SHIFT,
                        bool(word & HIST_SCHED))


def has_history(np_of: Callable[[str], Any]) -> bool:
    """Whether the arena behind ``np_of`` keeps item histories (it ran with INVARIANTS)."""
    try:
        np_of("k0_ui_hist")
    except KeyError:
        return False
    return True


def item_history(np_of: Callable[[str], Any], keg: int, item: int, ncpus: int) -> list[HistoryEntry]:
    """The recorded operations on ``item`` of ``keg``, oldest first (at most the depth);
    [] when the arena keeps no history."""
    if not has_history(np_of):
        return []
    n = int(np_of(f"k{keg}_ui_histn")[item])
    ring = np_of(f"k{keg}_ui_hist")
    depth = len(ring) // len(np_of(f"k{keg}_ui_histn"))
    base = item * depth
    out = []
    for i in range(max(0, n - depth), n):
        e = decode(int(ring[base + i % depth]), ncpus)
        if e is not None:
            out.append(e)
    return out


def history_words(np_of: Callable[[str], Any], keg: int, item: int, ncpus: int) -> list[str]:
    """:func:`item_history` in words, oldest first."""
    return [e.words() for e in item_history(np_of, keg, item, ncpus)]
