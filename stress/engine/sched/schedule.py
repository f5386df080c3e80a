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
CTL_WORDS = 20
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
    """The schedule arrays for ``ncpus`` CPUs (``sc_`` prefix)."""
    return (
        ArraySpec("sc_ctl", "q", CTL_WORDS, "schedule control: token, step, log counts (CTL_*)"),
        ArraySpec("sc_prio", "q", max(ncpus, 1), "PCT priority per CPU"),
        ArraySpec("sc_state", "q", max(ncpus, 1), "RUNNABLE / BLOCKED / WAKING / EXITED per CPU"),
        ArraySpec("sc_pid", "q", max(ncpus, 1), "pid of the worker under the token protocol"),
        ArraySpec("sc_log", "q", 3 * log_entries, "switches: step, cpu, label id"),
        ArraySpec("sc_load", "q", 2 * LOAD_ENTRIES, "load flag changes: step, value"),
    )


def prepare_arena(view: ViewFn, ncpus: int, mode: str, seed: int, depth: int, steps: int,
                  replay: Schedule | None = None) -> None:
    """Initialise the schedule arrays: period 0 priorities, the token on the CPU that
    PCT runs first, and in replay mode the recorded switches."""
    ctl, prio, state, log = view("sc_ctl"), view("sc_prio"), view("sc_state"), view("sc_log")
    for i in range(len(ctl)):
        ctl[i] = 0
    plan = pct_period(seed, 0, ncpus, depth, steps)
    for j in range(ncpus):
        prio[j] = plan.priorities[j]
        state[j] = RUNNABLE
    ctl[CTL_MODE] = SCHED_MODES.index(mode)
    ctl[CTL_SEED], ctl[CTL_DEPTH], ctl[CTL_STEPS] = seed, depth, steps
    ctl[CTL_LOAD] = 1
    first = pct_choose(prio, [True] * ncpus, -1, False)
    if replay is not None:
        if replay.ncpus != ncpus:
            raise ValueError(f"schedule recorded for {replay.ncpus} CPUs, run has {ncpus}")
        cap = len(log) // 3
        sw = replay.switches[:cap]
        for i, (step, cpu, lid) in enumerate(sw):
            log[3 * i], log[3 * i + 1], log[3 * i + 2] = step, cpu, lid
        ctl[CTL_NREPLAY] = len(sw)
        ctl[CTL_STOPSTEP] = replay.stop_step
        loadlog = view("sc_load")
        ch = replay.load_changes[:len(loadlog) // 2]
        for i, (step, v) in enumerate(ch):
            loadlog[2 * i], loadlog[2 * i + 1] = step, v
        ctl[CTL_NLOADREC] = len(ch)
        if sw and sw[0][0] == 0:  # step 0: the first CPU to run
            first = sw[0][1]
            ctl[CTL_NLOG] = 1
    elif mode == "pct":
        log[0], log[1], log[2] = 0, first, label_id("start")
        ctl[CTL_NLOG] = 1
    ctl[CTL_TOKEN] = first


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
                    overflow=bool(ctl[CTL_OVERFLOW]))
