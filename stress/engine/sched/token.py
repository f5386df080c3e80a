"""TokenScheduler: worker k's side of the token protocol (``--sched pct`` and ``replay``).

Only the CPU holding the token runs between two sched points.  At each sched point the
holder counts a step, lets PCT (or the recording) choose who runs next, records a
switch, hands the token over with one aligned store and spins until it comes back
(docs/races.md; the protocol's diagram is in this package's docstring).  The manager's
stop and load flags are seen only at a sched point, so the step at which a CPU goes idle
or leaves is part of the schedule too.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from stress.config import SCHED_MODES
from stress.engine.sched.pct import PctPeriod, pct_choose, pct_period
from stress.engine.sched.schedule import (
    BLOCKED,
    CTL_CHANGE,
    CTL_DEPTH,
    CTL_DIVERGED,
    CTL_LOAD,
    CTL_MODE,
    CTL_NDIVERGED,
    CTL_NLOAD,
    CTL_NLOADREC,
    CTL_NLOG,
    CTL_NREPLAY,
    CTL_ORPHANS,
    CTL_OVERFLOW,
    CTL_PERIOD,
    CTL_SEED,
    CTL_STEP,
    CTL_STEPS,
    CTL_STOP,
    CTL_STOPSTEP,
    CTL_TOKEN,
    EXITED,
    RUNNABLE,
    WAKING,
    ViewFn,
    label_id,
)

YIELD_PREFIXES = ("yield", "spin", "retry", "trylock", "wait")
SPIN_LIMIT = 256  #: same label this many times in a row without a switch counts as a yield
# Waiting for the token: poll, then yield the core, then nap (a waiter must not burn a
# core forever when the holder is slow or asleep).  Measured on 2 cores: a hand-over
# costs about 14 us (71k steps/s with a switch at every step, 370k without); the yield
# and nap lengths made no visible difference to a full pct run (about 10k ops/s, bound
# by the workers' own naps while they hold the token).
SPIN_POLLS = 64
YIELD_POLLS = 4096
NAP_S = 0.0001


def is_yield(label: str) -> bool:
    """Whether a sched point says "I cannot progress now" (try-lock retry, ring wait)."""
    return label.startswith(YIELD_PREFIXES)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().split(b")")[-1].split()[0] != b"Z"
    except OSError:
        return False


class TokenScheduler:
    """CPU ``k``'s side of the token protocol (pct and replay).

    Bind :meth:`sched_point`, :meth:`sched_block`, :meth:`sched_unblock` to the CPU's
    hooks; call :meth:`start` before the first allocator call and :meth:`finish` when
    the worker leaves (both done by ``controller.install`` and its ``WorkerHooks.leave``).
    ``orphan_lock`` (a fork-context lock made before fork) serialises taking an orphan
    token; without one (a test of two processes) the take is unserialised.
    """

    def __init__(self, view: ViewFn, k: int, ncpus: int,
                 on_exhausted: Callable[[], None] | None = None,
                 real_stop: Callable[[], bool] | None = None,
                 real_load: Callable[[], int] | None = None,
                 orphan_lock: Any = None) -> None:
        self.on_exhausted = on_exhausted  #: replay: called when the recorded run stopped (stop ours)
        self.real_stop = real_stop  #: the manager's stop flag, read only at sched points
        self.real_load = real_load  #: the manager's load flag (wl_ctl RUN), read only at sched points
        self.orphan_lock = orphan_lock  #: taken to claim an orphan token (nobody's, or a dead holder's)
        self.ctl = view("sc_ctl")
        mode = SCHED_MODES[self.ctl[CTL_MODE]]
        if mode not in ("pct", "replay"):
            raise ValueError(f"TokenScheduler runs pct or replay, not {mode!r}")
        self.k = k
        self.ncpus = ncpus
        self.replay = mode == "replay"
        self.seed = int(self.ctl[CTL_SEED])
        self.depth = int(self.ctl[CTL_DEPTH])
        self.steps = int(self.ctl[CTL_STEPS])
        self.prio = view("sc_prio")
        self.state = view("sc_state")
        self.pid = view("sc_pid")
        self.log = view("sc_log")
        self.log_cap = len(self.log) // 3
        self.loadlog = view("sc_load")
        # The allocator's "woken" flag: set by the waker under the keg lock, i.e. by the
        # token holder, so reading it keeps the schedule deterministic.  The protocol also
        # runs over bare schedule arrays (no allocator, so nobody sleeps or is woken).
        try:
            self.woken: memoryview | None = view("cpu_woken")
        except KeyError:
            self.woken = None
        self._finished = False
        self._last_label = -1
        self._same = 0
        self._plan: PctPeriod | None = None
        self._plan_period = -1

    # the hot path ------------------------------------------------------------------------
    def sched_point(self, label: str) -> None:
        """A sched point: count a step, choose who runs next, hand over, wait our turn."""
        ctl = self.ctl
        k = self.k
        if ctl[CTL_TOKEN] != k:  # not ours (a stray call after finish, or before start)
            self._wait()
            return
        lid = label_id(label)
        if lid == self._last_label:
            self._same += 1
        else:
            self._last_label = lid
            self._same = 0
        yielding = self._same >= SPIN_LIMIT or is_yield(label)
        step = ctl[CTL_STEP] + 1
        ctl[CTL_STEP] = step
        if not ctl[CTL_STOP]:
            self._gate_stop(step)
        self._gate_load(step)
        nxt = self._pct_next(step, yielding)
        if self.replay:
            nxt = self._replay_next(step, lid, nxt)
        if nxt == k or nxt < 0:
            return
        self._same = 0
        if not self.replay:
            self._record(step, nxt, lid)
        self._hand(nxt)
        self._wait()

    def stop_requested(self) -> bool:
        """The stop flag as a worker under the token must see it: raised at a sched point
        (pct: the first one after the manager asked; replay: the recorded step), so the
        step at which each CPU leaves its loop is part of the schedule."""
        return bool(self.ctl[CTL_STOP])

    def _gate_stop(self, step: int) -> None:
        ctl = self.ctl
        if self.replay:
            if 0 < ctl[CTL_STOPSTEP] <= step:
                ctl[CTL_STOP] = 1
                if self.on_exhausted is not None:  # the recorded run stopped here: stop ours
                    self.on_exhausted()
        elif self.real_stop is not None and self.real_stop():
            ctl[CTL_STOPSTEP] = step
            ctl[CTL_STOP] = 1

    def load(self) -> bool:
        """The manager's load flag (wl_ctl RUN) as a worker under the token must see it:
        changed at a sched point (pct: the first one after the manager changed it;
        replay: the recorded step), so the step at which a CPU goes idle for the final
        drain, or between rounds, is part of the schedule too."""
        return self.ctl[CTL_LOAD] == 1

    def _gate_load(self, step: int) -> None:
        ctl, log = self.ctl, self.loadlog
        if self.replay:
            i = ctl[CTL_NLOAD]
            while i < ctl[CTL_NLOADREC] and log[2 * i] <= step:
                ctl[CTL_LOAD] = log[2 * i + 1]
                i += 1
            ctl[CTL_NLOAD] = i
            return
        if self.real_load is None:
            return
        v = self.real_load()
        if v != ctl[CTL_LOAD]:
            ctl[CTL_LOAD] = v
            i = ctl[CTL_NLOAD]
            if 2 * i + 1 < len(log):
                log[2 * i], log[2 * i + 1] = step, v
                ctl[CTL_NLOAD] = i + 1
            else:
                ctl[CTL_OVERFLOW] = 1

    def sched_block(self) -> None:
        """Right before CPU k sleeps in zonelimit: it is not runnable; pass the token."""
        self.state[self.k] = BLOCKED
        self._leave("block")

    def sched_unblock(self) -> None:
        """Right after CPU k wakes from zonelimit: wait until it is chosen again."""
        self.state[self.k] = WAKING
        self._wait()
        self.state[self.k] = RUNNABLE

    def start(self) -> None:
        """Register this CPU and wait for the first turn (CPU of the highest priority
        starts; the Controller put the token there)."""
        self.pid[self.k] = os.getpid()
        self._wait()

    def finish(self) -> None:
        """CPU k leaves for good: never runnable again; pass the token on.  Safe twice."""
        if self._finished:
            return
        self._finished = True
        self.state[self.k] = EXITED
        self._leave("exit")

    def _leave(self, label: str) -> None:
        """CPU k stops being runnable while holding the token: a step that always
        switches (to -1 when nobody is runnable), always recorded."""
        ctl = self.ctl
        if ctl[CTL_TOKEN] != self.k:
            return
        step = ctl[CTL_STEP] + 1
        ctl[CTL_STEP] = step
        lid = label_id(label)
        nxt = self._pct_next(step, False)
        if self.replay:
            nxt = self._replay_next(step, lid, nxt)
        else:
            self._record(step, nxt, lid)
        self._hand(nxt)

    # choices -----------------------------------------------------------------------------
    def _runnable(self) -> list[bool]:
        st, woken = self.state, self.woken
        return [st[j] == RUNNABLE or st[j] == WAKING
                or (st[j] == BLOCKED and woken is not None and woken[j] != 0)
                for j in range(self.ncpus)]

    def _pct_next(self, step: int, yielding: bool) -> int:
        ctl = self.ctl
        period = (step - 1) // self.steps
        if period != ctl[CTL_PERIOD] or self._plan is None or self._plan_period != period:
            plan = pct_period(self.seed, period, self.ncpus, self.depth, self.steps)
            if period != ctl[CTL_PERIOD]:  # first step of a new period: fresh priorities
                ctl[CTL_PERIOD] = period
                ctl[CTL_CHANGE] = 0
                for j, p in enumerate(plan.priorities):
                    self.prio[j] = p
            self._plan, self._plan_period = plan, period
        plan = self._plan
        rel = step - period * self.steps
        i = ctl[CTL_CHANGE]
        if i < len(plan.change_points) and rel >= plan.change_points[i]:
            self.prio[self.k] = plan.lowered(i, self.depth)
            ctl[CTL_CHANGE] = i + 1
        return pct_choose(self.prio, self._runnable(), self.k, yielding)

    def _replay_next(self, step: int, lid: int, pct: int) -> int:
        """The recorded choice at ``step``; ``pct`` (what PCT would do: the priorities
        are kept up to date in replay too) once the recording is used up."""
        ctl = self.ctl
        i = ctl[CTL_NLOG]
        if i >= ctl[CTL_NREPLAY]:
            # past the recording: the recorded run ended here; stop this one too, and
            # continue exactly as the pct run would until every CPU has left
            ctl[CTL_STOP] = 1
            if self.on_exhausted is not None:
                self.on_exhausted()
            return pct
        runnable = self._runnable()
        if self.log[3 * i] == step:
            ctl[CTL_NLOG] = i + 1
            nxt = self.log[3 * i + 1]
            if self.log[3 * i + 2] != lid or (nxt >= 0 and not runnable[nxt]) or (nxt < 0 and any(runnable)):
                self._diverged(step)
                return pct
            return nxt
        if self.log[3 * i] < step:  # a recorded switch we never reached
            self._diverged(step)
            ctl[CTL_NLOG] = i + 1
            return pct
        if runnable[self.k] and self.state[self.k] != BLOCKED:
            return self.k
        # the recording says "continue" but we cannot
        self._diverged(step)
        return pct

    def _diverged(self, step: int) -> None:
        ctl = self.ctl
        if ctl[CTL_DIVERGED] == 0:
            ctl[CTL_DIVERGED] = step + 1
        ctl[CTL_NDIVERGED] += 1

    def _record(self, step: int, nxt: int, lid: int) -> None:
        ctl = self.ctl
        i = ctl[CTL_NLOG]
        if i >= self.log_cap:
            ctl[CTL_OVERFLOW] = 1
            return
        log = self.log
        log[3 * i] = step
        log[3 * i + 1] = nxt
        log[3 * i + 2] = lid
        ctl[CTL_NLOG] = i + 1

    # hand-over and waiting ---------------------------------------------------------------
    def _hand(self, nxt: int) -> None:
        self.ctl[CTL_TOKEN] = nxt

    def _wait(self) -> None:
        """Spin until the token is ours; then yield the core; then sleep briefly.  Take
        an orphan token (nobody holds it, or its holder died) under the orphan lock."""
        ctl = self.ctl
        k = self.k
        n = 0
        while ctl[CTL_TOKEN] != k:
            n += 1
            if n < SPIN_POLLS:
                continue
            if n < YIELD_POLLS:
                os.sched_yield()
                continue
            time.sleep(NAP_S)
            if n % 64 == 0:
                self._maybe_orphan()

    def _maybe_orphan(self) -> None:
        ctl = self.ctl
        tok = ctl[CTL_TOKEN]
        if tok >= 0 and self.state[tok] != EXITED and _pid_alive(self.pid[tok]):
            return
        if tok >= 0 and self.pid[tok] == 0 and self.state[tok] != EXITED:
            return  # the holder has not started yet
        lock = self.orphan_lock
        if lock is not None:
            lock.acquire()
        try:
            if ctl[CTL_TOKEN] == tok:
                if tok >= 0:
                    self.state[tok] = EXITED  # died holding the token: never runnable again
                ctl[CTL_ORPHANS] += 1
                ctl[CTL_TOKEN] = self.k
        finally:
            if lock is not None:
                lock.release()
