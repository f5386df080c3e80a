"""Kegs and slabs: the back end of one item size (uma_core.c: uma_zone_slab,
slab_zalloc, uma_slab_alloc, uma_zfree_internal's slab half, keg_drain).

A keg holds pages; each page is a slab with a free list of item indices
(``us_firstfree`` -> ``ui_next`` -> ...).  Slabs with some free items sit on the
partial list, wholly free slabs on the free list, full slabs on no list
(``us_list`` says which).  Pages not held by the keg sit on the keg's VM stack.

Lock contract: every function here is called with the keg lock held and returns with
it held; :meth:`KegOps.keg_fetch_slab` may drop and re-take it while it sleeps.
"""

from __future__ import annotations

from allocator.layout import (
    ITEM_FREE,
    MCLBYTES,
    MSIZE,
    POISON,
    UMA_ZFLAG_FULL,
)

from .context import Context

LIST_NONE = 0  # full slab, on no list
LIST_PART = 1
LIST_FREE = 2
LIST_VM = 3

IPERS = (15, 2)  # items per slab, mbuf keg and cluster keg (layout.MBUF_IPERS, CLUSTER_IPERS)
ISIZE = (MSIZE, MCLBYTES)
M_NOWAIT = 0x0001
M_WAITOK = 0x0002
M_NOVM = 0x0200


class KegOps(Context):
    """Slab management for one CPU context."""

    invariants: bool

    # --- slab lists (doubly linked, LIST_INSERT_HEAD order as in FreeBSD) ------------
    def _slab_list_remove(self, k: int, s: int) -> None:
        lst = self.us_list[k][s]
        prev, nxt = self.us_prev[k][s], self.us_next[k][s]
        if prev >= 0:
            self.us_next[k][prev] = nxt
        elif lst == LIST_PART:
            self.uk_part_head[k] = nxt
        else:
            self.uk_free_head[k] = nxt
        if nxt >= 0:
            self.us_prev[k][nxt] = prev
        self.us_list[k][s] = LIST_NONE

    def _slab_list_insert(self, k: int, s: int, lst: int) -> None:
        head = self.uk_part_head[k] if lst == LIST_PART else self.uk_free_head[k]
        self.us_prev[k][s] = -1
        self.us_next[k][s] = head
        if head >= 0:
            self.us_prev[k][head] = s
        if lst == LIST_PART:
            self.uk_part_head[k] = s
        else:
            self.uk_free_head[k] = s
        self.us_list[k][s] = lst

    # --- slab allocation --------------------------------------------------------------
    def slab_zalloc(self, k: int) -> int:
        """Take a page from the keg's VM stack and make it a slab (keg init runs per
        item: under INVARIANTS the payload is filled with junk, FreeBSD's trash_init).
        Returns the slab or -1 when the arena has no page left (VM exhausted)."""
        top = self.uk_vmtop[k]
        if top == 0:
            return -1
        top -= 1
        self.uk_vmtop[k] = top
        s = self.uk_vmstack[k][top]
        ipers = IPERS[k]
        first = s * ipers
        nxt = self.ui_next[k]
        for j in range(ipers - 1):
            nxt[first + j] = first + j + 1
        nxt[first + ipers - 1] = -1
        self.us_firstfree[k][s] = first
        self.us_freecount[k][s] = ipers
        self.uk_pages[k] += 1
        self.uk_free[k] += ipers
        if self.invariants:
            size = ISIZE[k]
            pattern = POISON * (size // 4)
            st = self.ui_state[k]
            for j in range(ipers):
                self.payload[k][(first + j) * size:(first + j + 1) * size] = pattern
                st[first + j] = ITEM_FREE
        return s

    def slab_alloc_item(self, k: int, s: int) -> int:
        """uma_slab_alloc: pop one item off slab ``s`` (which has a free item)."""
        item = self.us_firstfree[k][s]
        self.us_firstfree[k][s] = self.ui_next[k][item]
        n = self.us_freecount[k][s] - 1
        self.us_freecount[k][s] = n
        self.uk_free[k] -= 1
        if n == 0:
            self._slab_list_remove(k, s)  # now full: on no list
        return item

    def slab_free_item(self, k: int, item: int) -> None:
        """The slab half of uma_zfree_internal: push ``item`` back on its slab and move
        the slab between lists as its free count changes."""
        s = item // IPERS[k]
        n = self.us_freecount[k][s]
        if n == 0:
            self._slab_list_insert(k, s, LIST_PART)
        elif n + 1 == IPERS[k]:
            self._slab_list_remove(k, s)
            self._slab_list_insert(k, s, LIST_FREE)
        self.ui_next[k][item] = self.us_firstfree[k][s]
        self.us_firstfree[k][s] = item
        self.us_freecount[k][s] = n + 1
        self.uk_free[k] += 1

    def keg_fetch_slab(self, k: int, z: int, flags: int) -> int:
        """uma_zone_slab (2005): find a slab with a free item, making one if the limit
        allows; at the limit mark the keg FULL and fail (M_NOWAIT) or sleep in
        ``zonelimit`` with no timeout (M_WAITOK), then look again."""
        while True:
            if self.uk_free[k]:
                s = self.uk_part_head[k]
                if s < 0:
                    s = self.uk_free_head[k]
                    self._slab_list_remove(k, s)
                    self._slab_list_insert(k, s, LIST_PART)
                return s
            if flags & M_NOVM:
                return -1
            maxp = self.uk_maxpages[k]
            if (maxp and self.uk_pages[k] >= maxp) or self.uk_vmtop[k] == 0:
                self.uk_flags[k] |= UMA_ZFLAG_FULL
                if flags & M_NOWAIT:
                    return -1
                self.keg_sleep(k, z)  # drops and re-takes the keg lock
                continue  # lost the race? another CPU may have taken what was freed
            s = self.slab_zalloc(k)
            if s >= 0:
                self._slab_list_insert(k, s, LIST_PART)
                return s
            if flags & M_NOWAIT:
                return -1

    def keg_drain(self, k: int) -> int:
        """keg_drain (zone_drain's second half, 2005): return wholly free slabs to the
        VM.  It does NOT clear FULL: only the next free through uma_zfree_internal
        does, and that free wakes one sleeper (2005) -- the others then sleep on while
        the keg has room.  Returns the number of pages released."""
        n = 0
        while True:
            s = self.uk_free_head[k]
            if s < 0:
                break
            self._slab_list_remove(k, s)
            self.us_list[k][s] = LIST_VM
            self.uk_vmstack[k][self.uk_vmtop[k]] = s
            self.uk_vmtop[k] += 1
            self.uk_pages[k] -= 1
            self.uk_free[k] -= IPERS[k]
            n += 1
        return n

    def keg_sleep(self, k: int, z: int) -> None:  # implemented in limit.py
        raise NotImplementedError
