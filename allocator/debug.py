"""INVARIANTS: poisoning, duplicate free / duplicate alloc detection, panics.

FreeBSD under INVARIANTS fills freed items with 0xdeadc0de (trash_dtor) and checks the
fill on the next allocation (trash_ctor: "Memory modified after free"); per-item
bookkeeping panics on "Duplicate free".  Here each keg item has a state word
(``ui_state``: ITEM_FREE / ITEM_USED) maintained only in INVARIANTS mode, so the plain
fast path pays nothing: :meth:`DebugOps.enable_invariants` substitutes checking
versions of ``zalloc``/``zfree`` for this context.

A panic is recorded in the arena (``panics``: kind, zone, item, cpu, other) so the
manager sees it whichever process found it, and raised as :class:`UmaPanic` in the
finding process, which stops (a kernel would stop too).

The item history (allocator/history.py) is written here too, by the same checking
versions: each consumer alloc and free (a packet's cluster with its mbuf) and, through
the fast path's ``ref_slow`` branch, each refcount change goes into the item's ring
(:meth:`DebugOps.history_record`) -- before the check, so a duplicate free's record is
in the history its panic reports.
"""

from __future__ import annotations

from typing import Any

from allocator.errors import UmaPanic
from allocator.layout import (
    EXT_PACKET,
    HDR_PANICS,
    HIST_OP_SHIFT,
    HIST_SCHED,
    HIST_STEP_SHIFT,
    HIST_ZONE_SHIFT,
    HOP_ALLOC,
    HOP_FREE,
    HOP_REF_DEC,
    HOP_REF_INC,
    ITEM_FREE,
    ITEM_USED,
    MAX_PANICS,
    MCLBYTES,
    MSIZE,
    PANIC_DUP_ALLOC,
    PANIC_DUP_FREE,
    PANIC_MODIFIED_AFTER_FREE,
    PANIC_WORDS,
    POISON,
    ZONE_CLUSTER,
    ZONE_PACKET,
)

from .keg import M_WAITOK
from .mbuf import MbufOps

_SIZES = (MSIZE, MCLBYTES)
_JUNK = (POISON * (MSIZE // 4), POISON * (MCLBYTES // 4))


class DebugOps(MbufOps):
    """INVARIANTS checks for one CPU context."""

    def panic(self, kind: int, zone: int, item: int, other: int = -1) -> None:
        """Record a panic in the arena and raise it here."""
        hdr = self.hdr
        n = hdr[HDR_PANICS]  # racy slot choice is fine: a panic ends the run
        hdr[HDR_PANICS] = n + 1
        if n < MAX_PANICS:
            base = n * PANIC_WORDS
            p = self.panics
            p[base], p[base + 1], p[base + 2], p[base + 3], p[base + 4] = kind, zone, item, self.row, other
        raise UmaPanic(kind, zone, item, self.row, other)

    def enable_invariants(self) -> None:
        """Substitute the checking zalloc/zfree for this context."""
        self.zalloc = self._zalloc_checked  # type: ignore[method-assign]
        self.zfree = self._zfree_checked  # type: ignore[method-assign]

    def set_step_source(self, words: Any, index: int) -> None:
        """Stamp item-history records with ``words[index]`` -- a controlled scheduler's
        step counter in the arena, installed by the tester as it installs sched points --
        instead of this row's own operation count.  The word is read, never written."""
        self._step_words = words
        self._step_index = index

    def history_record(self, k: int, item: int, op: int, z: int) -> None:
        """Append (this row, ``op`` through zone ``z``, the step) to the ring of ``item``
        of keg ``k`` (history.py has the word's layout).  No lock: under a controlled
        schedule only the token holder runs; on two cores at once two records on one
        item may take the same slot (docs/races.md says so)."""
        depth = self.history_depth
        if not depth:
            return
        words = self._step_words
        if words is not None:
            word = (int(words[self._step_index]) << HIST_STEP_SHIFT) | HIST_SCHED
        else:
            clock = self.ui_histclock
            step = clock[self.row]
            clock[self.row] = step + 1
            word = step << HIST_STEP_SHIFT
        word |= (z << HIST_ZONE_SHIFT) | (op << HIST_OP_SHIFT) | self.row1
        count = self.ui_histn[k]
        n = count[item]
        count[item] = n + 1
        self.ui_hist[k][item * depth + n % depth] = word

    def history_ref(self, c: int, delta: int) -> None:
        """A cluster refcount change (FastPath.ref_add under INVARIANTS)."""
        self.history_record(1, c, HOP_REF_INC if delta > 0 else HOP_REF_DEC, ZONE_CLUSTER)

    def _trash_check(self, k: int, item: int, z: int) -> None:
        size = _SIZES[k]
        if self.payload[k][item * size:(item + 1) * size] != _JUNK[k]:
            self.panic(PANIC_MODIFIED_AFTER_FREE, z, item)

    def _trash_fill(self, k: int, item: int) -> None:
        size = _SIZES[k]
        self.payload[k][item * size:(item + 1) * size] = _JUNK[k]

    def _zalloc_checked(self, z: int, flags: int = M_WAITOK, udata: int = -1) -> int:
        item = MbufOps.zalloc(self, z, flags, udata)
        if item < 0:
            return item
        k = self._zkeg[z]
        self.history_record(k, item, HOP_ALLOC, z)
        if z == ZONE_PACKET and self.m_ext[item] >= 0:
            self.history_record(1, self.m_ext[item], HOP_ALLOC, z)  # the cluster comes with it
        st = self.ui_state[k]
        if st[item] != ITEM_FREE:
            self.panic(PANIC_DUP_ALLOC, z, item)
        self._trash_check(k, item, z)
        st[item] = ITEM_USED
        if z == ZONE_PACKET:
            c = self.m_ext[item]
            self._trash_check(1, c, ZONE_CLUSTER)
        return item

    def _zfree_checked(self, z: int, item: int, udata: int = -1) -> None:
        k = self._zkeg[z]
        self.history_record(k, item, HOP_FREE, z)
        if z == ZONE_PACKET and self.m_exttype[item] == EXT_PACKET and self.m_ext[item] >= 0:
            self.history_record(1, self.m_ext[item], HOP_FREE, z)  # cached with its mbuf
        st = self.ui_state[k]
        if st[item] != ITEM_USED:
            c = self.m_ext[item] if k == 0 else -1
            self.panic(PANIC_DUP_FREE, z, item, c)
        st[item] = ITEM_FREE
        self._trash_fill(k, item)
        if z == ZONE_PACKET and self.m_exttype[item] == EXT_PACKET and self.m_ext[item] >= 0:
            # mb_dtor_pack trashes the cluster the cached packet keeps.
            self._trash_fill(1, self.m_ext[item])
        MbufOps.zfree(self, z, item, udata)
