"""The schedule in the arena: the ``sc_`` arrays, their control words, and a recording in and out.

Only the token holder writes these arrays (docs/races.md), so they need no lock.  The
manager writes them before the workers fork (:func:`prepare_arena`: the first token,
period 0's priorities and, to replay, the recorded switches) and reads the recording
back after they stopped (:func:`read_schedule`, a :class:`~stress.documents.Schedule`
that the run folder keeps as schedule.json).
"""

from __future__ import annotations

import zlib
from typing import Protocol

from allocator.layout import ArraySpec
from stress.config import SCHED_MODES
from stress.documents import Schedule
from stress.engine.sched.pct import pct_choose, pct_period
from stress.engine.sched.plan import StepPlan

LOG_ENTRIES = 1 << 18  #: switches recorded in the arena (2 MB); beyond: overflow, not recorded

# sc_ctl words
CTL_TOKEN = 0  #: CPU allowed to run; -1 nobody (all asleep or exited)
CTL_STEP = 1  #: sched points passed under the token
CTL_NLOG = 2  #: switches recorded (pct) / replayed (replay)
CTL_NREPLAY = 3  #: switches preloaded for replay
CTL_DIVERGED = 4  #: first divergent step + 1, 0 none
CTL_NDIVERGED = 5  #: divergences seen
CTL_OVERFLOW = 6  #: 1 if switches were not recorded for lack of room
CTL_MODE = 7  #: index in SCHED_MODES
CTL_PERIOD = 8  #: current PCT period
CTL_CHANGE = 9  #: change points of the period already applied
CTL_ORPHANS = 10  #: times an orphan token was taken
CTL_SEED = 11  #: PCT seed (written by prepare_arena; workers read the plan from here)
CTL_DEPTH = 12  #: PCT depth d
CTL_STEPS = 13  #: PCT period k
CTL_STOP = 14  #: the stop flag as the workers see it: raised only at a sched point (deterministic)
CTL_STOPSTEP = 15  #: pct: step at which the stop was raised; replay: step at which to raise it
CTL_LOAD = 16  #: the manager's load flag (wl_ctl RUN) as the workers see it: changes only at a sched point
CTL_NLOAD = 17  #: load flag changes recorded (pct) / applied (replay)
CTL_NLOADREC = 18  #: load flag changes preloaded for replay
CTL_GUIDE = 19  #: replay of a *guide* (race --shrink): follow its switches where possible, record what ran
# the step plan (stress.engine.sched.plan), written by prepare_arena, read by the token holder
CTL_BUDGET = 20  #: steps of the run (0: unbounded: the recording or the manager ends it)
CTL_DRAIN_STEPS = 21  #: steps after the budget for in-flight work to complete
CTL_ROUND_STEPS = 22  #: steps per round (0: no rounds)
CTL_ROUND_ON = 23  #: loaded steps per round
CTL_PHASE_STEP = 24  #: step at which a PHASED workload turns to phase 1 (0: never)
CTL_TRIM_STEPS = 25  #: the trimming callout's period in steps (0: no callout)
CTL_WEDGE_STEPS = 26  #: the wedge timeout in steps (0: no wedge test by step)
CTL_CHECK_STEPS = 27  #: the token holder looks for a wedge every this many steps
# what the token holder found and did, by step
CTL_NEXT_TRIM = 28  #: the step from which the next callout is due
CTL_TRIM_FROM = 29  #: the CPU that handed the token to the manager for the callout
CTL_TRIMS = 30  #: callouts run under the token
CTL_WSINCE = 31  #: step since which sleepers saw no progress (0: no sleeper)
CTL_WOPS = 32  #: the progress count (sum of cpu_ops) at CTL_WSINCE
CTL_WFREE = 33  #: the most free items the sleepers' keg had meanwhile
CTL_WEDGED = 34  #: the step of the wedge + 1 (0: none)
CTL_WHOW = 35  #: WEDGE_* : how the wedge was found
CTL_WKEG = 36  #: the keg the first sleeper waited on
CTL_END = 37  #: END_* : why the workers were stopped
CTL_NGUIDE = 38  #: guide entries passed (a guide's entries sit at the top of sc_log, CTL_NREPLAY of them)
CTL_FOLLOWED = 39  #: guide entries followed (the CPU it named was runnable at its step)
CTL_PANICKED = 40  #: the step of the first allocator panic + 1 (0: none); the run stopped there
CTL_WORDS = 41

WEDGE_NO_PROGRESS = 1  #: sleepers and no progress for wedge_steps
WEDGE_STARVED = 2  #: one sleep of STARVED_FACTOR x wedge_steps while others spun on
WEDGE_ALL_BLOCKED = 3  #: every CPU blocked at once: nobody is left to run
WEDGE_AT_END = 4  #: at the budget: sleepers and no progress for half the run (a short run)
WEDGE_HOW = {WEDGE_NO_PROGRESS: "no-progress", WEDGE_STARVED: "starved", WEDGE_ALL_BLOCKED: "all-blocked",
             WEDGE_AT_END: "at-end"}
END_BUDGET = 1  #: the budget (and the drain) ran out
END_WEDGED = 2  #: a wedge by step
END_MANAGER = 3  #: the manager asked (a signal, a stall, a dead worker)
END_RECORDING = 4  #: replay: the recording's stop step
END_PANIC = 5  #: an allocator panic: the panicking CPU stopped the run at its step
END_NAMES = {0: "", END_BUDGET: "budget", END_WEDGED: "wedged", END_MANAGER: "manager", END_RECORDING: "recording",
             END_PANIC: "panic"}
LOAD_ENTRIES = 4096  #: load flag changes recorded (a round switches it twice)

# sc_state values
RUNNABLE = 0
BLOCKED = 1  #: asleep in zonelimit
WAKING = 2  #: woken, waiting for the token
EXITED = 3
STATE_NAMES = ("runnable", "blocked", "waking", "exited")


def label_id(label: str) -> int:
    """A stable 31-bit id of a sched point label (recorded next to each switch)."""
    return zlib.crc32(label.encode()) & 0x7FFFFFFF


class ViewFn(Protocol):
    """How the scheduler reaches its arrays: ``uma.view`` or a test's plain mapping."""

    def __call__(self, name: str) -> memoryview: ...


def sched_specs(ncpus: int, log_entries: int = LOG_ENTRIES) -> tuple[ArraySpec, ...]:
    """The schedule arrays for ``ncpus`` CPUs (``sc_`` prefix).  The per-CPU arrays have
    one more entry, ``ncpus``: the manager, which holds the token while it runs the
    trimming callout (never chosen by PCT: it is handed the token, and hands it back)."""
    n = max(ncpus, 1) + 1
    return (
        ArraySpec("sc_ctl", "q", CTL_WORDS, "schedule control: token, step, log counts (CTL_*)"),
        ArraySpec("sc_prio", "q", n, "PCT priority per CPU"),
        ArraySpec("sc_state", "q", n, "RUNNABLE / BLOCKED / WAKING / EXITED per CPU"),
        ArraySpec("sc_pid", "q", n, "pid of the worker under the token protocol (ncpus: the manager)"),
        ArraySpec("sc_wstep", "q", n, "per CPU: the step at which it blocked in zonelimit"),
        ArraySpec("sc_wcpus", "q", n, "per CPU: 1 if asleep in zonelimit when the wedge was found"),
        ArraySpec("sc_log", "q", 3 * log_entries, "switches: step, cpu, label id"),
        ArraySpec("sc_load", "q", 2 * LOAD_ENTRIES, "load flag changes: step, value"),
    )


def prepare_arena(view: ViewFn, ncpus: int, mode: str, seed: int, depth: int, steps: int,
                  replay: Schedule | None = None, plan: StepPlan | None = None, manager_pid: int = 0) -> None:
    """Initialise the schedule arrays: period 0 priorities, the token on the CPU that
    PCT runs first, the step plan (none: unbounded, no callout, no wedge test by step),
    and in replay mode the recorded switches."""
    ctl, prio, state, log = view("sc_ctl"), view("sc_prio"), view("sc_state"), view("sc_log")
    for i in range(len(ctl)):
        ctl[i] = 0
    period0 = pct_period(seed, 0, ncpus, depth, steps)
    for j in range(ncpus):
        prio[j] = period0.priorities[j]
        state[j] = RUNNABLE
    if len(state) > ncpus:  # the manager's slot (arrays of sched_specs)
        prio[ncpus], state[ncpus] = 0, RUNNABLE
        view("sc_pid")[ncpus] = manager_pid
    ctl[CTL_MODE] = SCHED_MODES.index(mode)
    ctl[CTL_SEED], ctl[CTL_DEPTH], ctl[CTL_STEPS] = seed, depth, steps
    ctl[CTL_LOAD] = 1
    plan = plan or StepPlan()
    ctl[CTL_BUDGET], ctl[CTL_DRAIN_STEPS] = plan.budget, plan.drain_steps
    ctl[CTL_ROUND_STEPS], ctl[CTL_ROUND_ON], ctl[CTL_PHASE_STEP] = plan.round_steps, plan.round_on, plan.phase_step
    ctl[CTL_TRIM_STEPS], ctl[CTL_WEDGE_STEPS], ctl[CTL_CHECK_STEPS] = plan.trim_steps, plan.wedge_steps, \
        plan.check_steps
    ctl[CTL_NEXT_TRIM] = plan.trim_steps
    ctl[CTL_LOAD] = plan.load(0)
    first = pct_choose([prio[j] for j in range(ncpus)], [True] * ncpus, -1, False)
    if replay is not None:
        if replay.ncpus != ncpus:
            raise ValueError(f"schedule recorded for {replay.ncpus} CPUs, run has {ncpus}")
        cap = len(log) // 3
        if replay.guide:  # at the top of the log, leaving the bottom for the recording
            cap //= 2
        sw = replay.switches[:cap]
        base = len(log) // 3 - len(sw) if replay.guide else 0
        for i, (step, cpu, lid) in enumerate(sw):
            j = base + i
            log[3 * j], log[3 * j + 1], log[3 * j + 2] = step, cpu, lid
        ctl[CTL_NREPLAY] = len(sw)
        ctl[CTL_STOPSTEP] = replay.stop_step
        loadlog = view("sc_load")
        ch = replay.load_changes[:len(loadlog) // 2]
        for i, (step, v) in enumerate(ch):
            loadlog[2 * i], loadlog[2 * i + 1] = step, v
        ctl[CTL_NLOADREC] = len(ch)
        if sw and sw[0][0] == 0 and 0 <= sw[0][1] < ncpus:  # step 0: the first CPU to run
            first = sw[0][1]
            ctl[CTL_NLOG] = 1
        if replay.guide:  # the recording starts as a pct run's does; the guide is consumed apart
            ctl[CTL_GUIDE] = 1
            ctl[CTL_NGUIDE] = 1 if sw and sw[0][0] == 0 else 0
            log[0], log[1], log[2] = 0, first, label_id("start")
            ctl[CTL_NLOG] = 1
    elif mode == "pct":
        log[0], log[1], log[2] = 0, first, label_id("start")
        ctl[CTL_NLOG] = 1
    ctl[CTL_TOKEN] = first


def read_plan(view: ViewFn) -> StepPlan:
    """The step plan as written into the arena."""
    ctl = view("sc_ctl")
    return StepPlan(budget=int(ctl[CTL_BUDGET]), drain_steps=int(ctl[CTL_DRAIN_STEPS]),
                    round_steps=int(ctl[CTL_ROUND_STEPS]), round_on=int(ctl[CTL_ROUND_ON]),
                    phase_step=int(ctl[CTL_PHASE_STEP]), trim_steps=int(ctl[CTL_TRIM_STEPS]),
                    wedge_steps=int(ctl[CTL_WEDGE_STEPS]), check_steps=int(ctl[CTL_CHECK_STEPS]))


def read_schedule(view: ViewFn, ncpus: int, seed: int, depth: int, steps: int) -> Schedule:
    """The switches recorded in the arena, as a :class:`Schedule`."""
    ctl, log = view("sc_ctl"), view("sc_log")
    n = min(int(ctl[CTL_NLOG]), len(log) // 3)
    sw = [(int(log[3 * i]), int(log[3 * i + 1]), int(log[3 * i + 2])) for i in range(n)]
    loadlog = view("sc_load")
    m = min(int(ctl[CTL_NLOAD]), len(loadlog) // 2)
    load = [(int(loadlog[2 * i]), int(loadlog[2 * i + 1])) for i in range(m)]
    return Schedule(seed=seed, ncpus=ncpus, depth=depth, steps=steps, switches=sw, load_changes=load,
                    total_steps=int(ctl[CTL_STEP]), stop_step=int(ctl[CTL_STOPSTEP]),
                    overflow=bool(ctl[CTL_OVERFLOW]), plan=read_plan(view).to_dict())
