"""The watchdog: wedge and stall detection, dead-worker diagnosis.

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

**Stall.**  Every CPU is watched, not only the sleepers.  Each worker's loop beats
(``wd_beat``, one word per CPU, written by its own CPU every loop turn); a CPU whose
beat and progress counter have not moved for ``--wedge-timeout`` and which is not
asleep on a known wait channel (``zonelimit``) is *stalled*: stopped by a signal,
descheduled for seconds, blocked on a lock whose holder is stopped, caught in a loop.
That is the tester's failure, not the allocator's (verdict ``stalled``, exit 3), and it
is checked before the wedge: a CPU asleep in zonelimit beside a stalled CPU may be
waiting for a free that the stalled CPU would have made.  The manager takes a
post-mortem of the stalled CPUs (stress.engine.postmortem) before anything is killed.

Under controlled scheduling (pct, replay) only the token holder runs, so beats say
nothing; the scheduler's own step counter is watched instead (stress.engine.sched).

**Dead worker.**  :func:`describe_death` says how a worker died: its Python traceback
(sent by the worker), or the signal that killed it, and whether it died holding an
allocator lock (``uma.lock_holders()``), which would hang every other CPU.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from allocator import KEG_NAMES, ArraySpec

#: backstop: one uninterrupted sleep this many wedge timeouts long is a wedge
STARVED_FACTOR = 3.0
BEAT_ARRAY = "wd_beat"  #: per CPU: loop turns so far, written by that CPU only


def watch_arrays(ncpus: int) -> list[ArraySpec]:
    """The watchdog's arena array: one heartbeat word per CPU, a cache line each (each
    CPU writes its own every loop turn; a shared line would cost the others)."""
    return [ArraySpec(BEAT_ARRAY, "q", max(ncpus, 1), "per CPU: worker loop turns (heartbeat)", stride=8)]


@dataclass
class Stall:
    """CPUs that neither progressed nor slept on a known wait channel (run.json ``stall``).

    Also the manager's own stall: a lock it could not take within the wedge timeout
    (``lock``: the lock and who holds it, from the owner word)."""

    at_s: float
    cpus: list[int]
    how: str
    since_s: dict[int, float] = field(default_factory=dict)
    lock: dict[str, Any] | None = None
    processes: list[dict[str, Any]] = field(default_factory=list)  #: postmortem.ProcessReport.to_dict()
    stacks: str | None = None  #: the stacks file in the run folder

    def reason(self) -> str:
        """One line for the verdict: which CPUs, and how they were found."""
        return self.how

    def to_dict(self) -> dict[str, Any]:
        """run.json ``stall``."""
        d: dict[str, Any] = {"at_s": round(self.at_s, 3), "cpus": self.cpus, "how": self.how,
                             "since_s": {str(k): round(v, 3) for k, v in self.since_s.items()}}
        if self.lock is not None:
            d["lock"] = self.lock
        d["processes"] = self.processes
        d["stacks"] = self.stacks
        return d


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
    at_step: int | None = None  #: pct/replay: the step of the wedge (placed by step)
    no_progress_steps: int | None = None  #: ... and the steps without progress before it
    asleep_since_step: dict[int, int] | None = None  #: ... and when each sleeper blocked

    def to_dict(self) -> dict[str, Any]:
        """run.json ``wedge``: the cli.md fields, then the details."""
        if self.at_step is not None:
            return {"at_s": round(self.at_s, 3), "zone": self.zone, "wchan": self.wchan,
                    "sleeping_cpus": self.sleeping_cpus, "at_step": self.at_step,
                    "asleep_since_step": {str(k): v for k, v in (self.asleep_since_step or {}).items()},
                    "keg": self.keg, "keg_free_meanwhile": self.keg_free_max,
                    "free_items_meanwhile": self.keg_free_max > 0,
                    "no_progress_steps": self.no_progress_steps, "how": self.how}
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
    """Feeds on ``uma.sleepers()``, ``uma.cpu_ops()``, ``uma.keg_free()`` and the
    heartbeats (``beats``: the ``wd_beat`` view; None watches sleepers only); see the
    module doc.  ``alive(k)`` says whether CPU k's process still runs its loop (a CPU
    that left it beats no more, and is no stall)."""

    uma: Any
    timeout: float
    t0: float  #: time.monotonic() of the run's start (CLOCK_MONOTONIC, like since_ns)
    beats: Any = None
    alive: Callable[[int], bool] = lambda k: True
    _since: float | None = None
    _ops: int = -1
    _keg_free_max: int = 0
    _cpu_seen: dict[int, tuple[int, int]] = field(default_factory=dict)
    _cpu_since: dict[int, float] = field(default_factory=dict)

    def check(self, now: float | None = None) -> Wedge | Stall | None:
        """One look at the arena: a :class:`Stall`, else a :class:`Wedge`, else None."""
        now = time.monotonic() if now is None else now
        everyone = self.uma.sleepers()
        stall = self._stalled(now, {s.cpu for s in everyone}) if self.beats is not None else None
        if stall is not None:
            return stall
        sleepers = [s for s in everyone if s.wchan == "zonelimit"]
        ops = sum(self.uma.cpu_ops())
        if not sleepers:
            self._since = None
            return None
        keg = sleepers[0].keg
        free = self.uma.keg_free(KEG_NAMES.index(keg))
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

    def at_end(self, now: float) -> Wedge | None:
        """The wedge test for a run that reached its planned end: a run shorter than
        twice the wedge timeout cannot show a full timeout without progress, so here
        half of it is enough (the user's tolerance, scaled to the run): a CPU asleep in
        zonelimit for at least min(timeout, run / 2), and no progress by anyone for as
        long."""
        self.check(now)  # bring the no-progress clock up to date
        sleepers = [s for s in self.uma.sleepers() if s.wchan == "zonelimit"]
        if not sleepers or self._since is None:
            return None
        run = now - self.t0
        limit = min(self.timeout, run / 2)
        quiet = now - self._since
        longest = max((time.monotonic_ns() - s.since_ns) / 1e9 for s in sleepers)
        if quiet < limit or longest < limit:
            return None
        keg = sleepers[0].keg
        return Wedge(
            at_s=run, zone=sleepers[0].zone, wchan="zonelimit", sleeping_cpus=sorted(s.cpu for s in sleepers),
            asleep_since_s={s.cpu: s.since_ns / 1e9 - self.t0 for s in sleepers}, keg=keg,
            keg_free_max=max(self._keg_free_max, self.uma.keg_free(KEG_NAMES.index(keg))), no_progress_s=quiet,
            how=(f"the run ended after {run:.1f} s with CPUs asleep in zonelimit for {longest:.1f} s and no "
                 f"progress by any CPU for the last {quiet:.1f} s (a run this short is judged on half its "
                 f"length, not the {self.timeout:g} s wedge timeout)"))

    def never_ran(self) -> Stall | None:
        """The stall test for a run that reached its planned end: CPUs whose loop never
        completed a single turn, which made no allocator call and do not sleep on a
        known wait channel -- no progress for the whole run.  (A CPU that ran and then
        stood still for less than the wedge timeout is not judged: a loaded machine can
        keep a runnable process off the CPU for a good part of a short run.)"""
        if self.beats is None:
            return None
        asleep = {s.cpu for s in self.uma.sleepers()}
        ops = self.uma.cpu_ops()
        idle = [k for k in range(len(ops))
                if self.alive(k) and k not in asleep and int(self.beats[k]) <= 0 and int(ops[k]) == 0]
        if not idle:
            return None
        names = ", ".join(str(k) for k in idle)
        return Stall(at_s=time.monotonic() - self.t0, cpus=idle, since_s={k: 0.0 for k in idle},
                     how=(f"CPU{'s' if len(idle) > 1 else ''} {names} never completed a turn of the loop nor "
                          "slept on a known wait channel during the whole run"))

    def _stalled(self, now: float, asleep: set[int]) -> Stall | None:
        """CPUs whose beat and progress stood still for the timeout while not asleep on
        a known wait channel."""
        ops = self.uma.cpu_ops()
        stuck = []
        for k in range(len(ops)):
            seen = (int(self.beats[k]), int(ops[k]))
            if k in asleep or not self.alive(k) or self._cpu_seen.get(k) != seen:
                self._cpu_seen[k] = seen
                self._cpu_since[k] = now
            elif now - self._cpu_since.get(k, now) >= self.timeout:
                stuck.append(k)
        if not stuck:
            return None
        since = {k: self._cpu_since[k] - self.t0 for k in stuck}
        names = ", ".join(str(k) for k in stuck)
        how = (f"CPU{'s' if len(stuck) > 1 else ''} {names} neither made progress nor slept on a known wait "
               f"channel for {now - min(self._cpu_since[k] for k in stuck):.1f} s")
        return Stall(at_s=now - self.t0, cpus=stuck, how=how, since_s=since)


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
