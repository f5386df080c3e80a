"""WITNESS: lock-order checking across processes (after FreeBSD's sys/kern/subr_witness.c).

What and why
============

A lock-order reversal is a deadlock waiting for its interleaving: CPU 0 takes A then
B, CPU 1 takes B then A, and one day they do it at the same moment.  WITNESS catches
the *possibility* on the first run that shows both orders, however they interleave:
it records, for every pair of lock classes, the first order in which they were held
together and where (the two acquisition points), and reports any later acquisition in
the opposite order, again with both points.  It also reports recursion (taking a
lock of a class already held: our locks are not recursive; two refcount stripes at
once is the same class twice) and sleeping in zonelimit with a lock held.

Everything lives in the arena so that the order learnt on CPU 0 is checked on CPU 1,
and so that the manager can read the findings after the run (verdict class
``lock-order``).  The tables are declared by :func:`witness_arrays` and handed to the
arena by the tester as extra arrays (``UmaConfig(extra=...)``)::

    wt_order   int32[NCLASS * NCLASS * 2]  (a, b) -> point of a, point of b, the first
                                           time b was taken with a held; 0 = unseen
    wt_points  uint8[MAX_POINTS * POINT_BYTES]  acquisition point names (slot = crc32)
    wt_held    int32[rows * DEPTH * 2]     per CPU row: stack of (lock id, point slot)
    wt_nheld   int32[rows]                 depth of that stack
    wt_rev     int32[MAX_REVERSALS * REV_WORDS]  findings (kind, cpu, classes, points)
    wt_ctl     int64[4]                    findings written, findings lost

Writes to ``wt_order`` and ``wt_points`` race between CPUs only when two CPUs learn
the same pair at once; both write the same kind of record and either is a correct
"first seen" witness, so no lock is needed (WITNESS's own lock would itself be
checked...).  A finding's slot is claimed by a racy increment of ``wt_ctl[0]``: two
simultaneous findings may share a slot (one is overwritten), never lose the count of
"at least one".

Cost: one Python call per lock operation (about a microsecond); enabled only with
``--invariants``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .layout import LOCK_NAMES, NLOCKS, ArraySpec

DEPTH = 8  #: locks one CPU may hold at once (deeper: a finding of kind OVERFLOW)
MAX_POINTS = 256  #: distinct acquisition points remembered by name
POINT_BYTES = 48  #: bytes of a point name (longer names are cut)
MAX_REVERSALS = 64
REV_WORDS = 8  #: kind, cpu, held lock, held point, taken lock, taken point, 1st point, 2nd point

# finding kinds
LOR = 1  #: lock order reversal
RECURSION = 2  #: a lock of a class already held
SLEEP_LOCKED = 3  #: sleeping in zonelimit with a lock held
OVERFLOW = 4  #: more than DEPTH locks held
KIND_NAMES = {LOR: "lock order reversal", RECURSION: "recursion on a non-recursive lock",
              SLEEP_LOCKED: "sleeping with a lock held", OVERFLOW: "too many locks held"}


def _lock_class_name(name: str) -> str:
    """The class of a lock: its name without a trailing number (refcount stripes are one class)."""
    head, _, tail = name.rpartition(" ")
    return head if head and tail.isdigit() else name


CLASS_NAMES: tuple[str, ...] = tuple(dict.fromkeys(_lock_class_name(n) for n in LOCK_NAMES))
LOCK_CLASS: tuple[int, ...] = tuple(CLASS_NAMES.index(_lock_class_name(n)) for n in LOCK_NAMES)
NCLASS = len(CLASS_NAMES)


def witness_arrays(ncpus: int) -> tuple[ArraySpec, ...]:
    """The WITNESS tables for ``ncpus`` CPUs (one row per context row of the arena:
    the CPUs, the manager, the shared-counter row, the off-CPU row)."""
    rows = ncpus + 3
    return (
        ArraySpec("wt_order", "i", NCLASS * NCLASS * 2, "first order seen per class pair: two points"),
        ArraySpec("wt_points", "B", MAX_POINTS * POINT_BYTES, "acquisition point names"),
        ArraySpec("wt_held", "i", rows * DEPTH * 2, "per CPU row: held (lock id, point slot)"),
        ArraySpec("wt_nheld", "i", rows, "per CPU row: locks held"),
        ArraySpec("wt_rev", "i", MAX_REVERSALS * REV_WORDS, "findings: kind, cpu, locks, points"),
        ArraySpec("wt_ctl", "q", 4, "findings written, findings lost"),
    )


def point_slot(points: memoryview, name: str) -> int:
    """The slot (1-based; 0 = unknown) of acquisition point ``name``, registering it."""
    raw = name.encode()[:POINT_BYTES - 1]
    h = zlib.crc32(raw) % MAX_POINTS
    for probe in range(MAX_POINTS):
        s = (h + probe) % MAX_POINTS
        off = s * POINT_BYTES
        n = points[off]
        if n == 0:
            points[off + 1:off + 1 + len(raw)] = raw
            points[off] = len(raw)
            return s + 1
        if n == len(raw) and bytes(points[off + 1:off + 1 + n]) == raw:
            return s + 1
    return 0


def point_name(points: memoryview, slot: int) -> str:
    """The name registered in ``slot`` (1-based), or ``?``."""
    if slot <= 0:
        return "?"
    off = (slot - 1) * POINT_BYTES
    n = points[off]
    return bytes(points[off + 1:off + 1 + n]).decode(errors="replace") if n else "?"


class Witness:
    """CPU row ``row``'s lock-order checker.  :meth:`install` sets ``cpu.lock_hooks``."""

    def __init__(self, view: Callable[[str], memoryview], row: int) -> None:
        self.row = row
        self.order = view("wt_order")
        self.points = view("wt_points")
        self.held = view("wt_held")
        self.nheld = view("wt_nheld")
        self.rev = view("wt_rev")
        self.ctl = view("wt_ctl")
        self.base = row * DEPTH * 2
        self._slots: dict[str, int] = {}

    def install(self, cpu: Any) -> None:
        """Chain our hooks with any already on ``cpu.lock_hooks`` (lock profiling)."""
        prev = getattr(cpu, "lock_hooks", None)
        if prev is None:
            cpu.lock_hooks = (self.on_acquire, self.on_release)
            return
        pa, pr = prev

        def on_acquire(lock_id: int, point: str) -> None:
            self.on_acquire(lock_id, point)
            pa(lock_id, point)

        def on_release(lock_id: int) -> None:
            pr(lock_id)
            self.on_release(lock_id)

        cpu.lock_hooks = (on_acquire, on_release)

    def _slot(self, point: str) -> int:
        s = self._slots.get(point)
        if s is None:
            s = self._slots[point] = point_slot(self.points, point)
        return s

    def on_acquire(self, lock_id: int, point: str) -> None:
        """Lock ``lock_id`` is being taken at ``point``: check it against every held lock,
        learn the new orders, push it."""
        slot = self._slot(point)
        cls = LOCK_CLASS[lock_id]
        n = self.nheld[self.row]
        held, base, order = self.held, self.base, self.order
        for i in range(min(n, DEPTH)):
            h = held[base + 2 * i]
            hslot = held[base + 2 * i + 1]
            hc = LOCK_CLASS[h]
            if hc == cls:
                self._report(RECURSION, h, hslot, lock_id, slot, 0, 0)
                continue
            rev = (cls * NCLASS + hc) * 2  # was cls taken before hc, somewhere, once?
            if order[rev]:
                self._report(LOR, h, hslot, lock_id, slot, order[rev], order[rev + 1])
                continue
            fwd = (hc * NCLASS + cls) * 2
            if not order[fwd]:
                order[fwd + 1] = slot
                order[fwd] = hslot or -1
        if n >= DEPTH:
            self._report(OVERFLOW, lock_id, slot, lock_id, slot, 0, 0)
        else:
            held[base + 2 * n] = lock_id
            held[base + 2 * n + 1] = slot
        self.nheld[self.row] = n + 1

    def on_release(self, lock_id: int) -> None:
        """Lock ``lock_id`` was released: drop its most recent entry (any order allowed)."""
        n = self.nheld[self.row]
        held, base = self.held, self.base
        for i in range(min(n, DEPTH) - 1, -1, -1):
            if held[base + 2 * i] == lock_id:
                for j in range(i, min(n, DEPTH) - 1):
                    held[base + 2 * j] = held[base + 2 * j + 2]
                    held[base + 2 * j + 1] = held[base + 2 * j + 3]
                break
        self.nheld[self.row] = max(n - 1, 0)

    def check_sleep(self, what: str = "zonelimit") -> None:
        """About to sleep: any lock held is a finding (FreeBSD: "sleeping with ... locked")."""
        n = self.nheld[self.row]
        if n:
            h = self.held[self.base]
            self._report(SLEEP_LOCKED, h, self.held[self.base + 1], h, self._slot(what), 0, 0)

    def _report(self, kind: int, held: int, hslot: int, taken: int, tslot: int,
                first: int, second: int) -> None:
        i = self.ctl[0]
        self.ctl[0] = i + 1
        if i >= MAX_REVERSALS:
            self.ctl[1] += 1
            return
        r = i * REV_WORDS
        rec = (kind, self.row, held, hslot, taken, tslot, first, second)
        for j, v in enumerate(rec):
            self.rev[r + j] = v


@dataclass(frozen=True)
class Finding:
    """One WITNESS finding, with both acquisition points."""

    kind: str
    cpu: int
    held: str  #: lock held (class name)
    held_at: str  #: where it was taken
    taken: str  #: lock being taken
    taken_at: str  #: where
    first_at: str  #: for a reversal: where the established order took the first lock
    second_at: str  #: ... and the second

    def line(self) -> str:
        """One line for a report, in the spirit of WITNESS's console message."""
        if self.kind == KIND_NAMES[LOR]:
            return (f"lock order reversal on CPU {self.cpu}: 1st {self.held} @ {self.held_at}, "
                    f"2nd {self.taken} @ {self.taken_at}; established order: "
                    f"1st {self.taken} @ {self.first_at}, 2nd {self.held} @ {self.second_at}")
        if self.kind == KIND_NAMES[SLEEP_LOCKED]:
            return f"sleeping in {self.taken_at} on CPU {self.cpu} with {self.held} @ {self.held_at} held"
        return (f"{self.kind} on CPU {self.cpu}: {self.held} @ {self.held_at} held, "
                f"{self.taken} @ {self.taken_at} taken")

    def to_dict(self) -> dict[str, Any]:
        """The run.json form."""
        return dict(self.__dict__)


def findings(view: Callable[[str], memoryview]) -> list[Finding]:
    """Every finding recorded in the arena (any process may call this after the run)."""
    ctl, rev, points = view("wt_ctl"), view("wt_rev"), view("wt_points")
    out = []
    for i in range(min(int(ctl[0]), MAX_REVERSALS)):
        k, cpu, h, hs, t, ts, f, s = (int(rev[i * REV_WORDS + j]) for j in range(REV_WORDS))
        if k not in KIND_NAMES:
            continue
        out.append(Finding(KIND_NAMES[k], cpu, CLASS_NAMES[LOCK_CLASS[h]], point_name(points, hs),
                           CLASS_NAMES[LOCK_CLASS[t]], point_name(points, ts),
                           point_name(points, f), point_name(points, s)))
    return out


def has_witness(view: Callable[[str], memoryview]) -> bool:
    """Whether the arena carries the WITNESS tables (the run had --invariants)."""
    try:
        view("wt_ctl")
    except (KeyError, ValueError):
        return False
    return True


assert NLOCKS == len(LOCK_CLASS)
