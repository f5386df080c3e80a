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
"""

from __future__ import annotations

from allocator.errors import UmaPanic
from allocator.layout import (
    EXT_PACKET,
    HDR_PANICS,
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
