"""The watchdog: wedge detection, dead-worker diagnosis, and the run's time limit.

The allocator's ``zonelimit`` sleep has no timeout, faithfully (uma.md): a CPU that
sleeps there wakes only when a free on the keg wakes it.  The tester must never hang
(architecture.md, hard requirement 6), so the manager asks this module, several times
a second, whether the run is wedged.

**Wedge.**  At least one CPU is asleep in zonelimit and the run makes no progress: the
sum of every CPU's consumer-call counter (``uma.cpu_ops()``) has not moved for
``--wedge-timeout`` seconds while sleepers were present.  Progress by anyone resets
the clock: a CPU asleep while the others keep freeing will be woken, or at least the
system is not wedged yet.  As a backstop, one CPU asleep in a single sleep for three
times the timeout is a wedge even if other CPUs spin on (they may be making "progress"
on the mbuf keg while the sleeper starves forever on the cluster keg).

While sleepers wait, the watchdog records the largest number of free items their keg
had: free items *during* a wedge mean a lost wakeup (the 2005 wake-one defect, or the
``lost-wakeup`` injection), none mean true exhaustion (leak or hoarding).

**Dead worker.**  :func:`describe_death` says how a worker died: its Python traceback
(sent by the worker), or the signal that killed it, and whether it died holding an
allocator lock (``uma.lock_holders()``), which would hang every other CPU.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from typing import Any

#: backstop: one uninterrupted sleep this many wedge timeouts long is a wedge
STARVED_FACTOR = 3.0


@dataclass
class Wedge:
    """What the watchdog saw when it declared the wedge (the run.json ``wedge`` block)."""

    at_s: float
    zone: str
    wchan: str
    sleeping_cpus: list[int]
    asleep_since_s: dict[int, float]
    keg: str
    keg_free_max: int
    no_progress_s: float
    how: str

    def to_dict(self) -> dict[str, Any]:
        """run.json ``wedge``: the cli.md fields, then the details."""
        return {
            "at_s": round(self.at_s, 3),
            "zone": self.zone,
            "wchan": self.wchan,
            "sleeping_cpus": self.sleeping_cpus,
            "asleep_since_s": {str(k): round(v, 3) for k, v in self.asleep_since_s.items()},
            "keg": self.keg,
            "keg_free_meanwhile": self.keg_free_max,
            "free_items_meanwhile": self.keg_free_max > 0,
            "no_progress_s": round(self.no_progress_s, 3),
            "how": self.how,
        }


@dataclass
class Watchdog:
    """Feeds on ``uma.sleepers()``, ``uma.cpu_ops()`` and ``uma.keg_free()``; see the module doc."""

    uma: Any
    timeout: float
    t0: float  #: time.monotonic() of the run's start (CLOCK_MONOTONIC, like since_ns)
    _since: float | None = None
    _ops: int = -1
    _keg_free_max: int = 0

    def check(self, now: float | None = None) -> Wedge | None:
        """One look at the arena; a :class:`Wedge` once the run is wedged, else None."""
        now = time.monotonic() if now is None else now
        sleepers = [s for s in self.uma.sleepers() if s.wchan == "zonelimit"]
        ops = sum(self.uma.cpu_ops())
        if not sleepers:
            self._since = None
            return None
        keg = sleepers[0].keg
        keg_no = 1 if keg == "mbuf_cluster" else 0
        free = self.uma.keg_free(keg_no)
        if self._since is None or ops != self._ops:
            self._since, self._ops, self._keg_free_max = now, ops, free
        else:
            self._keg_free_max = max(self._keg_free_max, free)
        now_ns = time.monotonic_ns()
        longest = max((now_ns - s.since_ns) / 1e9 for s in sleepers)
        stalled = now - self._since
        if stalled >= self.timeout:
            how = f"no CPU made progress for {stalled:.1f} s while CPUs slept in zonelimit"
        elif longest >= STARVED_FACTOR * self.timeout:
            how = f"a CPU slept {longest:.1f} s in one zonelimit sleep while others spun on"
        else:
            return None
        return Wedge(
            at_s=now - self.t0,
            zone=sleepers[0].zone,
            wchan="zonelimit",
            sleeping_cpus=sorted(s.cpu for s in sleepers),
            asleep_since_s={s.cpu: s.since_ns / 1e9 - self.t0 for s in sleepers},
            keg=keg,
            keg_free_max=self._keg_free_max,
            no_progress_s=stalled,
            how=how,
        )


def describe_death(cpu: int, pid: int, exitcode: int | None, traceback_text: str | None,
                   lock_holders: list[tuple[str, int]]) -> str:
    """One paragraph for a dead worker: traceback, or signal, and the locks it held."""
    held = [name for name, row in lock_holders if row == cpu]
    if traceback_text:
        head = f"CPU {cpu} (pid {pid}) raised an exception:\n{traceback_text.rstrip()}"
    elif exitcode is not None and exitcode < 0:
        try:
            sig = signal.Signals(-exitcode).name
        except ValueError:
            sig = f"signal {-exitcode}"
        head = f"CPU {cpu} (pid {pid}) was killed by {sig}"
    else:
        head = f"CPU {cpu} (pid {pid}) exited with status {exitcode}"
    if held:
        head += f"\nCPU {cpu} died holding the {', '.join(held)} lock" + ("s" if len(held) > 1 else "")
    return head
