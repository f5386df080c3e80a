"""The allocator's exceptions, in a module that is never compiled.

Why a module of their own: the hot modules exist twice at run time, interpreted
(``allocator.zone`` ...) and compiled (``allocator._compiled.zone`` ...; see
allocator/implementation.py).  A class defined in a hot module would exist twice too,
and ``except UmaPanic`` would miss the other mode's panic.  The hot modules import these
absolutely, so both modes raise the same classes.
"""

from __future__ import annotations

from allocator.layout import LOCK_NAMES, PANIC_NAMES, ZONE_NAMES


class UmaPanic(RuntimeError):
    """The allocator found an impossible state (INVARIANTS).  Recorded in the arena."""

    def __init__(self, kind: int, zone: int, item: int, cpu: int, other: int = -1) -> None:
        self.kind, self.zone, self.item, self.cpu, self.other = kind, zone, item, cpu, other
        zname = ZONE_NAMES[zone] if 0 <= zone < len(ZONE_NAMES) else "?"
        super().__init__(f"panic: {PANIC_NAMES.get(kind, kind)}: zone {zname} item {item} cpu {cpu}"
                         + (f" (cluster {other})" if other >= 0 else ""))


class UmaSleepError(RuntimeError):
    """A context that cannot sleep (the manager, an observer) was asked to."""


class LockTimeout(RuntimeError):
    """A bounded context could not take a lock in time (or was told to give up).

    ``lock`` is the lock id, ``name`` its name, ``holder`` the row its owner word named
    when the wait ended (a CPU number, the manager's row, -1 if the word said free),
    ``waited`` the seconds waited, ``gave_up`` True when the wait was cut short by the
    caller (a stop was requested) rather than by the time limit.  Every lock the
    context held was released before this was raised."""

    def __init__(self, lock: int, holder: int, waited: float, gave_up: bool = False) -> None:
        self.lock, self.name, self.holder, self.waited, self.gave_up = lock, LOCK_NAMES[lock], holder, waited, gave_up
        why = "gave up" if gave_up else "timed out"
        super().__init__(f"{why} after {waited:.1f} s waiting for the {self.name} lock (owner word: row {holder})")
