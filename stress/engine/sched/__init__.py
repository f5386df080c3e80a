"""Controlled scheduling at sched points: free, jitter, PCT with a token, and replay.

One module per part (this package re-exports the names other layers use)::

    pct.py         the PCT algorithm as plain logic: priorities, change points, the choice
    schedule.py    the schedule in the arena: sc_* arrays, control words, a recording in and out
    token.py       TokenScheduler: worker k's side of the token protocol (pct, replay)
    jitter.py      the jitter sched point
    controller.py  the manager's side (Controller) and the worker's (install -> WorkerHooks)

What and why
============

The races of races.md live in windows a few bytecodes wide.  Real parallel cores
(``free``) hit them by volume; ``jitter`` widens them with random delays, the way
different interrupt timing (ACPI on) did in 2005; ``pct`` takes the interleaving away
from the OS: only one worker runs between two sched points and a seeded PCT
controller chooses who runs next, so a failing seed fails every time and its schedule
can be written down; ``replay`` follows a written-down schedule exactly.

PCT (Burckhardt, Kothari, Musuvathi, Nagarakatte, ASPLOS 2010, "A randomized
scheduler with probabilistic guarantees of finding bugs"): give the n CPUs distinct
random priorities d, d+1, ..., d+n-1; choose d-1 *change points* among the first k
steps; always run the highest-priority runnable CPU; when the running CPU passes the
i-th change point its priority drops to d-i (below every initial one).  A bug of
depth d shows with probability >= 1/(n k^(d-1)) per run.  A stress run has no known
length, so we run PCT in *periods* of k steps (``pct_steps``): each period draws fresh
priorities and change points from ``(seed, period)``, i.e. one PCT trial per k steps,
all derived from the seed alone.

Who sends what to whom (``pct`` and ``replay``)::

    manager: Controller.prepare(uma) ── writes sc_ctl, sc_prio (and the replay log) ──> arena
             fork workers ───────────────────────────────────────────────────────┐
    worker k (holds the token):                                                     │
        sched_point(label): step += 1; choose next (PCT or the log);                │
                            record a switch in sc_log; sc_ctl[TOKEN] = next;        │
                            spin until sc_ctl[TOKEN] == k                           │
        sched_block():      sc_state[k] = BLOCKED; pass the token (-1 if nobody)     │
        sched_unblock():    sc_state[k] = WAKING; wait for the token                │
        finish():           sc_state[k] = EXITED; pass the token                    │
        hooks.stop():       sc_ctl[STOP], raised at a sched point (recorded step)   │
    manager after the run: Controller.recorded(uma) ── Schedule ──> schedule.json

Only the token holder writes the schedule arrays (``sc_ctl`` words, ``sc_prio``,
``sc_log``), so they need no lock: the token word is the lock, handed over by a single
aligned store.  Two exceptions, both rare: a CPU woken while nobody holds the token
(all CPUs were asleep; the manager woke one) takes the orphan token under the
orphan lock (made by the Controller before fork, passed to each worker); a waiter that
finds the token holder's process dead takes it the same way, so a killed worker cannot
hang the rest.

Memory ordering: this package is never compiled, and the hand-over needs no fence on
x86 (TSO): the holder's stores to the schedule words and the allocator reach memory in
program order, before the one aligned store of ``CTL_TOKEN`` that hands over, and the
next holder's loads after it sees its number are not reordered before that load.
Other machines are refused (allocator.implementation.check_architecture); the shared
words of both packages are listed in docs/allocator.md "Memory ordering".

A CPU asleep in zonelimit is not runnable.  A CPU whose sched point label starts with
one of ``token.YIELD_PREFIXES`` (a try-lock retry, a wait for a ring) says "I cannot
progress": PCT runs someone else if anyone else is runnable, otherwise it keeps it.

The schedule file (``schedule.json``, format ``zonelimit.schedule/1``) holds the PCT
parameters and every *switch*: ``[step, cpu, label]``.  Steps without an entry
continue the running CPU.  Replay hands the token exactly as recorded; a recorded
label that differs from the label the replaying CPU reached is a *divergence*
(counted, first step kept), which means the system under test (or the tester) is
not deterministic under the token, and is reported instead of silently ignored.

The stop flag is part of the schedule: a worker under the token sees the manager's
stop only at a sched point (the first after the manager asked), and that step is
recorded; a replay raises it at the same step, and stops the run when the recording
is used up.  Otherwise the step at which each CPU leaves its loop would depend on the
manager's timer and every replay would diverge at its end.

The run itself is placed by step (plan.py): its length (``--steps``, or ``--duration``
at a nominal rate), its rounds, its drain, the wedge test and the trimming callout.
The manager's callout runs *under the token*: at the first sched point at or after
each period at which no CPU holds an allocator lock, the holder hands the token to the
manager (token value ``ncpus``) and wakes it through a pipe; the manager runs the
callout while every CPU waits and hands the token back.  A CPU blocked in zonelimit is
woken by a free made under the token (a CPU's, or the callout's), so its return is
ordered too.  A drain request pokes a sleeping CPU awake to serve it; its first lock
waits for the token, so the serve is ordered as well.
"""

from __future__ import annotations

from stress.documents import Schedule
from stress.engine.sched.controller import (
    Controller,
    Shared,
    WorkerHooks,
    install,
    make_orphan_lock,
    pct_steps,
    sched_arrays,
    step_plan,
)
from stress.engine.sched.jitter import jitter_point
from stress.engine.sched.pct import PctPeriod, pct_choose, pct_period
from stress.engine.sched.plan import STEPS_PER_S, StepPlan, make_plan
from stress.engine.sched.schedule import (
    BLOCKED,
    CTL_DIVERGED,
    CTL_NDIVERGED,
    CTL_NLOG,
    CTL_ORPHANS,
    CTL_STEP,
    CTL_TOKEN,
    EXITED,
    RUNNABLE,
    STATE_NAMES,
    WAKING,
    label_id,
    prepare_arena,
    read_schedule,
    sched_specs,
)
from stress.engine.sched.token import TokenScheduler

__all__ = [
    "BLOCKED", "CTL_DIVERGED", "CTL_NDIVERGED", "CTL_NLOG", "CTL_ORPHANS", "CTL_STEP", "CTL_TOKEN", "EXITED",
    "RUNNABLE", "STATE_NAMES", "STEPS_PER_S", "WAKING", "Controller", "PctPeriod", "Schedule", "Shared",
    "StepPlan", "TokenScheduler", "WorkerHooks", "install", "jitter_point", "label_id", "make_orphan_lock",
    "make_plan", "pct_choose", "pct_period", "pct_steps", "prepare_arena", "read_schedule", "sched_arrays",
    "sched_specs", "step_plan",
]
