"""Rings and held lists in the arena: where every mbuf a consumer holds is recorded.

Why in the arena: the conservation audit (uma.md, races.md "Oracles") must account for
every mbuf even after a worker was SIGKILLed while asleep in ``zonelimit``.  Anything a
worker keeps in a private Python list dies with it and would read as a leak.  So a
workload never holds an mbuf anywhere but in one of these two containers, and it
records an mbuf in one of them *before* its next allocator call that may sleep.

Two containers, both declared by the workloads as extra arena arrays (``ArraySpec``) and
found again by name prefix, so the manager can collect their contents without knowing
the workload:

``rg_<name>``  :class:`Ring`, a single-producer single-consumer FIFO of int64::

      word 0        rg head  (next slot to pop; written by the consumer only)
      word 8        rg tail  (next slot to push; written by the producer only)
      word 16..     slots, capacity a power of two, index = counter & mask

    head and tail sit 64 bytes apart so producer and consumer do not share a cache
    line.  Counters only grow (int64: no wrap in any run).  Ordering: the producer
    writes the slot, then the tail; the consumer reads the slot, then writes the head.
    On x86 (TSO) stores are not reordered with stores nor loads with loads, and every
    memoryview store is a separate C store between bytecodes, so no fence is needed.
    A ring whose producer and consumer are the same CPU is a private FIFO (a send
    buffer, a tx-completion list) that still lives in the arena.

``hs_<name>``  :class:`Slots`, a fixed array of int64 mbuf indices, ``-1`` = empty, owned
    by one CPU (larson's object table).

Live contents (what the audit counts as *held*) are ``tail - head`` entries of a ring
and the non-negative entries of a slot array; :func:`held_mbufs` gathers them all.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from allocator import ArraySpec

RING_PREFIX = "rg_"
SLOTS_PREFIX = "hs_"
RING_HEAD = 0  #: word index of the consumer's counter
RING_TAIL = 8  #: word index of the producer's counter (64 bytes after the head)
RING_HDR = 16  #: words before the first slot


def ring_spec(name: str, capacity: int, comment: str = "") -> ArraySpec:
    """Declare a ring of ``capacity`` slots (rounded up to a power of two)."""
    cap = 1
    while cap < capacity:
        cap <<= 1
    return ArraySpec(RING_PREFIX + name, "q", RING_HDR + cap, comment or f"ring {name}")


def slots_spec(name: str, nslots: int, comment: str = "") -> ArraySpec:
    """Declare a held-slot array of ``nslots`` entries (initialised empty by :func:`reset`)."""
    return ArraySpec(SLOTS_PREFIX + name, "q", nslots, comment or f"held slots {name}")


class Ring:
    """SPSC FIFO of int64 over an arena array; see the module docstring for the layout."""

    __slots__ = ("a", "cap", "mask", "name")

    def __init__(self, view: memoryview, name: str = "") -> None:
        self.a = view
        self.cap = len(view) - RING_HDR
        self.mask = self.cap - 1
        self.name = name
        assert self.cap > 0 and self.cap & self.mask == 0, "ring capacity must be a power of two"

    def __len__(self) -> int:
        a = self.a
        return int(a[RING_TAIL] - a[RING_HEAD])

    def free_space(self) -> int:
        """Slots a producer may still fill."""
        a = self.a
        return int(self.cap - (a[RING_TAIL] - a[RING_HEAD]))

    def push(self, x: int) -> bool:
        """Producer: append ``x``; False if full."""
        a = self.a
        t = a[RING_TAIL]
        if t - a[RING_HEAD] >= self.cap:
            return False
        a[RING_HDR + (t & self.mask)] = x
        a[RING_TAIL] = t + 1
        return True

    def peek(self) -> int:
        """Consumer: the oldest entry without removing it; -1 if empty."""
        a = self.a
        h = a[RING_HEAD]
        if h == a[RING_TAIL]:
            return -1
        return int(a[RING_HDR + (h & self.mask)])

    def advance(self) -> None:
        """Consumer: drop the oldest entry (after :meth:`peek` returned it)."""
        self.a[RING_HEAD] += 1

    def pop(self) -> int:
        """Consumer: remove and return the oldest entry; -1 if empty."""
        a = self.a
        h = a[RING_HEAD]
        if h == a[RING_TAIL]:
            return -1
        x = a[RING_HDR + (h & self.mask)]
        a[RING_HEAD] = h + 1
        return int(x)

    def contents(self) -> list[int]:
        """Every live entry, oldest first (manager side, at a quiescent point)."""
        a = self.a
        h, t = int(a[RING_HEAD]), int(a[RING_TAIL])
        if t - h > self.cap or t < h:  # torn or corrupted counters: report what is sane
            h = max(h, t - self.cap)
        return [int(a[RING_HDR + (i & self.mask)]) for i in range(h, t)]

    def reset(self) -> None:
        """Empty the ring (manager, before the workers start)."""
        self.a[RING_HEAD] = 0
        self.a[RING_TAIL] = 0


class Slots:
    """A CPU's table of held mbufs: index -> mbuf or -1."""

    __slots__ = ("a", "n", "name")

    def __init__(self, view: memoryview, name: str = "") -> None:
        self.a = view
        self.n = len(view)
        self.name = name

    def __getitem__(self, i: int) -> int:
        return int(self.a[i])

    def __setitem__(self, i: int, m: int) -> None:
        self.a[i] = m

    def contents(self) -> list[int]:
        """Every held mbuf (manager side, at a quiescent point)."""
        return [int(x) for x in self.a if x >= 0]

    def reset(self) -> None:
        """Mark every slot empty."""
        for i in range(self.n):
            self.a[i] = -1


def open_containers(uma: Any, specs: Iterable[ArraySpec]) -> list[Ring | Slots]:
    """Wrap every ring and slot array among ``specs`` (other arrays are skipped)."""
    out: list[Ring | Slots] = []
    for s in specs:
        if s.name.startswith(RING_PREFIX):
            out.append(Ring(uma.view(s.name), s.name))
        elif s.name.startswith(SLOTS_PREFIX):
            out.append(Slots(uma.view(s.name), s.name))
    return out


def reset_all(uma: Any, specs: Iterable[ArraySpec]) -> None:
    """Empty every ring and slot array (the arena starts zeroed: slots must read -1)."""
    for c in open_containers(uma, specs):
        c.reset()


def held_mbufs(uma: Any, specs: Iterable[ArraySpec]) -> list[int]:
    """Every mbuf recorded in any ring or slot array: what consumers hold (for the audit)."""
    held: list[int] = []
    for c in open_containers(uma, specs):
        held.extend(c.contents())
    return held
