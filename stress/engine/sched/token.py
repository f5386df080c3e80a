"""TokenScheduler: worker k's side of the token protocol (``--sched pct`` and ``replay``).

Only the CPU holding the token runs between two sched points.  At each sched point the
holder counts a step, lets PCT (or the recording) choose who runs next, records a
switch, hands the token over with one aligned store and spins until it comes back
(docs/races.md; the protocol's diagram is in this package's docstring).  The manager's
stop and load flags are seen only at a sched point, so the step at which a CPU goes idle
or leaves is part of the schedule too.

With a step plan (stress.engine.sched.plan: every pct run, and the replay of one) the
token holder also does, at its sched points, what a free run does by the clock: it
ends the run at the budget (after a short drain), turns the load off and on for the
rounds, hands the token to the manager for the trimming callout when one is due and no
CPU holds an allocator lock, and looks for a wedge every ``check_steps`` steps
(sleepers and no progress for ``wedge_steps``, or one sleep three times as long) and
whenever the last runnable CPU blocks (every CPU blocked: a wedge at once).  Nothing of
it reads a clock, so one seed gives one schedule and one verdict on any machine.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from typing import Any

from stress.config import SCHED_MODES
from stress.engine.sched.pct import PctPeriod, pct_choose, pct_period
from stress.engine.sched.plan import STARVED_FACTOR
from stress.engine.sched.schedule import (
    BLOCKED,
    CTL_CHANGE,
    CTL_DEPTH,
    CTL_DIVERGED,
    CTL_END,
    CTL_FOLLOWED,
    CTL_GUIDE,
    CTL_LOAD,
    CTL_MODE,
    CTL_NDIVERGED,
    CTL_NEXT_TRIM,
    CTL_NGUIDE,
    CTL_NLOAD,
    CTL_NLOADREC,
    CTL_NLOG,
    CTL_NREPLAY,
    CTL_ORPHANS,
    CTL_OVERFLOW,
    CTL_PANICKED,
    CTL_PERIOD,
    CTL_SEED,
    CTL_STEP,
    CTL_STEPS,
    CTL_STOP,
    CTL_STOPSTEP,
    CTL_TOKEN,
    CTL_TRIM_FROM,
    CTL_TRIMS,
    CTL_WEDGED,
    CTL_WFREE,
    CTL_WHOW,
    CTL_WKEG,
    CTL_WOPS,
    CTL_WSINCE,
    END_BUDGET,
    END_MANAGER,
    END_PANIC,
    END_RECORDING,
    END_WEDGED,
    EXITED,
    RUNNABLE,
    WAKING,
    WEDGE_ALL_BLOCKED,
    WEDGE_AT_END,
    WEDGE_NO_PROGRESS,
    WEDGE_STARVED,
    ViewFn,
    label_id,
    read_plan,
)
from stress.process import pid_alive

YIELD_PREFIXES = ("yield", "spin", "retry", "trylock", "wait")
SPIN_LIMIT = 256  #: same label this many times in a row without a switch counts as a yield
# Waiting for the token: spin, then nap (a waiter must not burn a core forever when the
# holder is slow or asleep).  Measured on 2 cores: a hand-over costs about 14 us (71k
# steps/s with a switch at every step, 370k without).
#
# Never sched_yield while waiting.  Beside a CPU hog (Linux 6.x, EEVDF) every yield pushes
# the waiter's deadline a slice later, so when the token comes it waits out the hog's
# slices, at nearly every hand-over: one wake-one hunt seed (45k hand-overs) took 80-190 s
# beside a hog on both cores when its waiters yielded (4096 yields, or even 4, before
# napping), against 10-13 s spinning and napping; on a machine without the hog both take
# about 5 s, and napping alone 10 s.  So a waiter spins in user space for SPIN_NS (cheap:
# the hand-over usually comes within it), then naps, and a nap's timer wake-up does
# preempt a hog.
SPIN_POLLS = 64  #: polls between two looks at the clock
SPIN_NS = 100_000  #: how long a waiter spins before it naps
NAP_S = 0.0001
ORPHAN_NAPS = 64  #: a waiter looks for an orphan token (its holder died) every this many naps (~10 ms)


def is_yield(label: str) -> bool:
    """Whether a sched point says "I cannot progress now" (try-lock retry, ring wait)."""
    return label.startswith(YIELD_PREFIXES)


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
                 orphan_lock: Any = None,
                 real_phase: Callable[[], int] | None = None,
                 drained: Callable[[], bool] | None = None,
                 trim_fd: int = -1,
                 on_stop: Callable[[], None] | None = None) -> None:
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
        #: replaying a guide (race --shrink): its switches followed where possible, the rest
        #: chosen as described in _guide_next, and everything that ran recorded as pct does
        self.guided = self.replay and self.ctl[CTL_GUIDE] == 1
        self.records = not self.replay or self.guided
        self.seed = int(self.ctl[CTL_SEED])
        self.depth = int(self.ctl[CTL_DEPTH])
        self.steps = int(self.ctl[CTL_STEPS])
        self.prio = view("sc_prio")
        self.state = view("sc_state")
        self.pid = view("sc_pid")
        self.log = view("sc_log")
        self.log_cap = len(self.log) // 3
        self.guide_base = self.log_cap - int(self.ctl[CTL_NREPLAY])  #: a guide's first entry (top of the log)
        if self.guided:
            self.log_cap = self.guide_base  # the recording fills the log below the guide
        self.loadlog = view("sc_load")
        # The allocator's "woken" flag: set by the waker under the keg lock, i.e. by the
        # token holder, so reading it keeps the schedule deterministic.  The protocol also
        # runs over bare schedule arrays (no allocator, so nobody sleeps or is woken).
        try:
            self.woken: memoryview | None = view("cpu_woken")
        except KeyError:
            self.woken = None
        # The step plan (none in a protocol test over bare arrays: all zero).
        self.plan = read_plan(view)
        self.real_phase = real_phase  #: the manager's phase word, for a run without a plan
        self.drained = drained  #: whether in-flight work is done (the drain after the budget)
        self.trim_fd = trim_fd  #: written to wake the manager when the token is handed to it
        self.on_stop = on_stop  #: called when the token holder stops the run itself (budget, wedge)
        self.manager = ncpus  #: the token value (and sc_* slot) of the manager
        self.wstep = view("sc_wstep") if self.plan.wedge_steps else None
        self.wcpus = view("sc_wcpus") if self.plan.wedge_steps else None
        try:
            self.cpu_ops: memoryview | None = view("cpu_ops")
            self.wkeg: memoryview | None = view("cpu_wkeg")
            self.keg_free: memoryview | None = view("uk_free")
            self.lock_owner: memoryview | None = view("lock_owner")
        except KeyError:
            self.cpu_ops = self.wkeg = self.keg_free = self.lock_owner = None
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
        plan = self.plan
        # the wedge test first, then the stop: a replay then finds the recorded wedge at
        # the very step its recording stops
        if plan.wedge_steps and not ctl[CTL_STOP] and step % plan.check_steps == 0 and self.cpu_ops is not None:
            self._check_wedge(step, plan.wedge_steps, final=False)
        if not ctl[CTL_STOP]:
            self._gate_stop(step)
        self._gate_load(step)
        if plan.trim_steps and not ctl[CTL_STOP] and step >= ctl[CTL_NEXT_TRIM] and self._locks_free():
            self._trim(step)
        nxt = self._pct_next(step, yielding)
        if self.guided:
            nxt = self._guide_next(step, nxt, yielding)
        elif self.replay:
            nxt = self._replay_next(step, lid, nxt)
        if nxt == k or nxt < 0:
            return
        self._same = 0
        if self.records:
            self._record(step, nxt, lid)
        self._hand(nxt)
        self._wait()

    def stop_requested(self) -> bool:
        """The stop flag as a worker under the token must see it: raised at a sched point
        (pct: the first one after the manager asked; replay: the recorded step), so the
        step at which each CPU leaves its loop is part of the schedule."""
        return bool(self.ctl[CTL_STOP])

    def _gate_stop(self, step: int) -> None:
        ctl, plan = self.ctl, self.plan
        if self.real_stop is not None and self.real_stop():  # the manager: a signal, a stall
            if self.records:
                ctl[CTL_STOPSTEP] = step
            ctl[CTL_STOP] = 1
            ctl[CTL_END] = END_MANAGER
        elif self.replay:
            if step == plan.budget and plan.wedge_steps and self.cpu_ops is not None:
                self._check_wedge(step, min(plan.wedge_steps, max(plan.budget // 2, 1)), final=True)
            if 0 < ctl[CTL_STOPSTEP] <= step:
                ctl[CTL_STOP] = 1
                ctl[CTL_END] = ctl[CTL_END] or END_RECORDING
                if self.on_exhausted is not None:  # the recorded run stopped here: stop ours
                    self.on_exhausted()
        elif plan.budget and step >= plan.budget:
            self._at_budget(step)

    def _at_budget(self, step: int) -> None:
        """Past the budget the load is off; the run stops when in-flight work is done or
        the drain's steps ran out.  At the budget step itself, the wedge test of a run's
        end: sleepers and no progress for half the run (or the wedge steps, if fewer)."""
        plan = self.plan
        if step == plan.budget and plan.wedge_steps and self.cpu_ops is not None:
            if self._check_wedge(step, min(plan.wedge_steps, max(plan.budget // 2, 1)), final=True):
                return
        if step >= plan.budget + plan.drain_steps or (self.drained is not None and self.drained()):
            self._stop_run(step, END_BUDGET)

    def phase(self) -> int:
        """wl_ctl PHASE as a worker under the token sees it: by step with a plan, else
        the manager's word (read at a sched point, like the load)."""
        if self.plan.phase_step:
            return self.plan.phase(int(self.ctl[CTL_STEP]))
        return self.real_phase() if self.real_phase is not None else 0

    # by step: the wedge test and the callout ------------------------------------------
    def _sleepers(self) -> list[int]:
        st, woken = self.state, self.woken
        return [j for j in range(self.ncpus)
                if st[j] == BLOCKED and not (woken is not None and woken[j])]

    def _check_wedge(self, step: int, limit: int, *, final: bool) -> bool:
        """The free watchdog's wedge test, counted in steps (True: wedged, run stopped)."""
        ctl = self.ctl
        sleepers = self._sleepers()
        if not sleepers:
            ctl[CTL_WSINCE] = 0
            return False
        ops_view, wkeg, keg_free = self.cpu_ops, self.wkeg, self.keg_free
        assert ops_view is not None and wkeg is not None and keg_free is not None
        ops = sum(int(ops_view[j]) for j in range(self.ncpus))
        keg = int(wkeg[sleepers[0]])
        free = int(keg_free[keg])
        if ctl[CTL_WSINCE] == 0 or ops != ctl[CTL_WOPS]:
            ctl[CTL_WSINCE], ctl[CTL_WOPS], ctl[CTL_WFREE], ctl[CTL_WKEG] = step, ops, free, keg
            return False
        if free > ctl[CTL_WFREE]:
            ctl[CTL_WFREE] = free
        if step - ctl[CTL_WSINCE] >= limit:
            self._wedged(step, WEDGE_AT_END if final else WEDGE_NO_PROGRESS, sleepers)
            return True
        wstep = self.wstep
        if not final and wstep is not None and any(
                step - wstep[j] >= STARVED_FACTOR * self.plan.wedge_steps for j in sleepers):
            self._wedged(step, WEDGE_STARVED, sleepers)
            return True
        return False

    def _wedged(self, step: int, how: int, sleepers: list[int]) -> None:
        """Record the wedge at ``step`` and stop the run there."""
        ctl = self.ctl
        if self.wcpus is not None:
            for j in sleepers:
                self.wcpus[j] = 1
        if ctl[CTL_WSINCE] == 0:
            ctl[CTL_WSINCE] = step
        ctl[CTL_WHOW] = how
        ctl[CTL_WEDGED] = step + 1
        self._stop_run(step, END_WEDGED)

    def _stop_run(self, step: int, end: int) -> None:
        """The token holder stops the run at ``step`` itself (the budget, a wedge, an
        allocator panic): the stop flag, why (END_*), and the step a recording stops a
        replay at."""
        ctl = self.ctl
        if self.records:
            ctl[CTL_STOPSTEP] = step
        ctl[CTL_STOP] = 1
        ctl[CTL_END] = end
        if self.on_stop is not None:
            self.on_stop()

    def _locks_free(self) -> bool:
        """No allocator lock is held by anyone (the callout may run without waiting)."""
        owner = self.lock_owner
        return owner is not None and not any(owner)

    def _trim(self, step: int) -> None:
        """Hand the token to the manager for the trimming callout, and wait until it
        comes back (the callout runs while every CPU waits: at this very step)."""
        ctl, every = self.ctl, self.plan.trim_steps
        ctl[CTL_NEXT_TRIM] = (step // every + 1) * every
        ctl[CTL_TRIM_FROM] = self.k
        ctl[CTL_TRIMS] += 1
        ctl[CTL_TOKEN] = self.manager
        if self.trim_fd >= 0:
            try:
                os.write(self.trim_fd, b"t")
            except OSError as exc:  # a full pipe already holds a wake-up for the manager
                if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                    raise
        self._wait()

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
        if self.plan.budget:
            v = self.plan.load(step)
        elif self.real_load is None:
            return
        else:
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
        if self.wstep is not None:
            self.wstep[self.k] = self.ctl[CTL_STEP] + 1  # the step of the hand-over below
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

    def panicked(self) -> None:
        """CPU k's allocator panicked: stop the run at this very step.

        FreeBSD's panic() stops every other CPU before it does anything else
        (kern_shutdown.c: vpanic -> stop_cpus_hard), so nothing runs after the panic.
        Under the token the panicking CPU is the one running, so it raises the stop
        itself, at the step it panicked in: the run's end, and the step the race
        command reports, no longer wait for the manager to read the worker's message
        (which made them depend on the load).  The CPUs waiting for the token each
        finish the operation they are in and leave at their next stop check, as at the
        budget.  Call :meth:`finish` afterwards."""
        ctl = self.ctl
        if ctl[CTL_TOKEN] != self.k:
            return
        step = int(ctl[CTL_STEP])
        if not ctl[CTL_PANICKED]:
            ctl[CTL_PANICKED] = step + 1
        if not ctl[CTL_STOP]:  # else already stopping (the budget, a wedge, the recording's stop step)
            self._stop_run(step, END_PANIC)

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
        if self.guided:
            nxt = self._guide_next(step, nxt, False)
        elif self.replay:
            nxt = self._replay_next(step, lid, nxt)
        if self.records:
            self._record(step, nxt, lid)
        if nxt < 0 and self.plan.wedge_steps and not ctl[CTL_STOP]:
            sleepers = self._sleepers()
            if sleepers:  # nobody is left to run, and some sleep: nothing can wake them
                self._wedged(step, WEDGE_ALL_BLOCKED, sleepers)
        self._hand(nxt)

    # choices -----------------------------------------------------------------------------
    def _runnable(self) -> list[bool]:
        """Who may run.  Each state word is read once: a CPU woken from zonelimit moves
        itself from BLOCKED to WAKING without the token (in its own process, as it
        leaves the semaphore), and three reads of a word that changes under them saw
        neither BLOCKED nor WAKING about once in ten thousand steps -- a woken CPU not
        runnable for one choice, and a pct run that did not repeat itself."""
        st, woken = self.state, self.woken
        out = []
        for j in range(self.ncpus):
            s = st[j]
            out.append(s == RUNNABLE or s == WAKING or (s == BLOCKED and woken is not None and woken[j] != 0))
        return out

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

    def _guide_next(self, step: int, pct: int, yielding: bool) -> int:
        """A guide's choice at ``step`` (race --shrink, stress/engine/sched/shrink.py): the
        CPU its switch at this step names, if it is runnable; with no switch here, the
        running CPU continues unless it cannot progress (asleep, gone, or yielding: a
        try-lock retry, a ring wait); otherwise ``pct``, PCT's own choice.  So a guide
        without a switch is "preempt nobody", and a guide holding a pct run's every
        switch runs that very run.  Labels are not checked: a guide is not a recording,
        and what ran is recorded instead (a replay of that recording is exact)."""
        ctl, log, base = self.ctl, self.log, self.guide_base
        i, n = int(ctl[CTL_NGUIDE]), int(ctl[CTL_NREPLAY])
        while i < n and log[3 * (base + i)] < step:  # a switch at a step already passed
            i += 1
        runnable = self._runnable()
        if i < n and log[3 * (base + i)] == step:
            ctl[CTL_NGUIDE] = i + 1
            want = int(log[3 * (base + i) + 1])
            if 0 <= want < self.ncpus and runnable[want]:
                ctl[CTL_FOLLOWED] += 1
                return want
            return pct
        ctl[CTL_NGUIDE] = i
        if not yielding and runnable[self.k] and self.state[self.k] != BLOCKED:
            return self.k
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
        """Spin until the token is ours (SPIN_NS), then nap (NAP_S) between looks.  Take
        an orphan token (nobody holds it, or its holder died) under the orphan lock."""
        ctl, k = self.ctl, self.k
        spin_end = time.perf_counter_ns() + SPIN_NS
        n = 0
        while ctl[CTL_TOKEN] != k:  # spin, looking at the clock every SPIN_POLLS polls
            n += 1
            if n % SPIN_POLLS == 0 and time.perf_counter_ns() >= spin_end:
                break
        naps = 0
        while ctl[CTL_TOKEN] != k:  # nap
            time.sleep(NAP_S)
            naps += 1
            if naps % ORPHAN_NAPS == 0:
                self._maybe_orphan()

    def _maybe_orphan(self) -> None:
        ctl = self.ctl
        tok = ctl[CTL_TOKEN]
        if tok >= 0 and pid_alive(self.pid[tok]):
            # A live holder keeps the token, EXITED or not: finish() marks itself EXITED
            # *before* it hands the token on, and a waiter that took the token in that
            # window made the hand-over unrecorded and a replay diverge (1 run in 3 once
            # waiters looked after their first nap).
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
