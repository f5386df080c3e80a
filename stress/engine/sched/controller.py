"""The two ends of controlled scheduling: the manager's :class:`Controller`, the worker's :func:`install`.

Manager::

    ctl = Controller(cfg)        # replay: loads cfg.replay_from/schedule.json; the step plan
    uma = Uma.create(UmaConfig(..., extra=... + sched_arrays(cfg)))
    ctl.prepare(uma)             # before forking: first token, priorities, plan, orphan lock, pipe
    ... fork; each worker k: hooks = install(cpu, uma, cfg, k, ctl.shared) ...
    while running: ctl.callout_due(uma) -> run the callout, ctl.hand_back(uma)
                   ctl.alarm(uma, now, t0) -> a wedge (by step) or a stall (no step for the timeout)
                   ctl.finished(uma, alive) -> every CPU has left, or only sleepers remain
    ctl.recorded(uma)            # after the workers stopped: the Schedule for schedule.json
    ctl.summary(uma)             # the run.json "schedule" block
    ctl.close()

Worker k: :func:`install` sets the CPU's sched hooks for ``cfg.sched`` (and WITNESS with
``--invariants``) and returns :class:`WorkerHooks`: how its loop reads the manager's
stop and load flags, and how it leaves.  Under the token both flags are gated copies
that change only at a sched point, so the step at which a CPU stops or idles is part of
the schedule; nothing in ``uma`` is patched, and no state is kept in this module.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from allocator import KEG_NAMES, ZONE_NAMES
from allocator.layout import ArraySpec
from allocator.witness import Witness, has_witness, witness_arrays
from stress.config import RunConfig
from stress.documents import Schedule, load_schedule
from stress.engine.postmortem import proc_state
from stress.engine.sched.jitter import jitter_point
from stress.engine.sched.pct import DEFAULT_PCT_STEPS
from stress.engine.sched.plan import StepPlan, make_plan
from stress.engine.sched.schedule import (
    BLOCKED,
    CTL_DIVERGED,
    CTL_END,
    CTL_FOLLOWED,
    CTL_NDIVERGED,
    CTL_NGUIDE,
    CTL_NLOG,
    CTL_NREPLAY,
    CTL_ORPHANS,
    CTL_OVERFLOW,
    CTL_PANICKED,
    CTL_STEP,
    CTL_STOP,
    CTL_STOPSTEP,
    CTL_TOKEN,
    CTL_TRIM_FROM,
    CTL_TRIMS,
    CTL_WEDGED,
    CTL_WFREE,
    CTL_WHOW,
    CTL_WKEG,
    CTL_WSINCE,
    END_NAMES,
    WEDGE_HOW,
    prepare_arena,
    read_schedule,
    sched_specs,
)
from stress.engine.sched.token import TokenScheduler
from stress.engine.watchdog import Stall, Wedge
from stress.workloads import drain_rings, workload_class
from stress.workloads.common import CTL_PHASE, CTL_RUN
from stress.workloads.ring import Ring

RUNNABLE_STALL_S = 10.0  #: how long a runnable token holder may go without a step (see Controller.alarm)
RUNNABLE = ("R",)  #: /proc states of a process that runs or waits for a core
CONTROLLED = ("pct", "replay")  #: modes in which the workers run under the token


def pct_steps(cfg: RunConfig) -> int:
    """The PCT period k of a run: the workload's ``PCT_STEPS`` (the race workloads' rounds
    are a few hundred sched points, and a period about that long gives every round a
    fresh chance), else the default."""
    return workload_class(cfg.workload).PCT_STEPS or DEFAULT_PCT_STEPS


def sched_arrays(cfg: RunConfig) -> tuple[ArraySpec, ...]:
    """Every arena array race tooling needs for ``cfg``: the schedule arrays in pct/replay
    mode, the WITNESS tables with --invariants.  The manager adds them to
    ``UmaConfig(extra=...)``."""
    out: tuple[ArraySpec, ...] = ()
    if cfg.sched in CONTROLLED:
        out += sched_specs(cfg.cpus)
    if cfg.invariants:
        out += witness_arrays(cfg.cpus)
    return out


def make_orphan_lock() -> Any:
    """The lock under which an orphan token is taken; make it before forking the CPUs
    (a fork-context lock: its semaphore is unlinked at once and cannot leak)."""
    return multiprocessing.get_context("fork").Lock()


def step_plan(cfg: RunConfig) -> StepPlan:
    """The step plan of a pct run of ``cfg`` (stress.engine.sched.plan)."""
    return make_plan(steps=cfg.steps, duration=cfg.duration, rounds=cfg.rounds, round_length=cfg.round_length,
                     idle=cfg.idle, trim_interval=cfg.trim_interval,
                     trim=cfg.policy != "none" or cfg.page_budget > 0, wedge_timeout=cfg.wedge_timeout,
                     phased=workload_class(cfg.workload).PHASED)


@dataclass(frozen=True)
class Shared:
    """What the Controller makes before fork and every worker inherits: the lock under
    which an orphan token is taken, and the pipe end that wakes the manager for the callout."""

    orphan_lock: Any = None
    trim_fd: int = -1


class Controller:
    """The manager's side: prepares the arena before fork, serves the callout and
    watches the steps during the run, reads the schedule after."""

    def __init__(self, cfg: RunConfig, replay: Schedule | None = None) -> None:
        self.cfg = cfg
        self.mode = cfg.sched
        src = cfg.replay_from
        if replay is None and self.mode == "replay" and src:
            replay = load_schedule(Path(src))
        self.replay = replay
        if self.mode == "replay" and replay is None:
            raise ValueError("--sched replay needs a recorded schedule (python -m stress replay RUN_DIR)")
        if replay is not None:
            self.seed, self.depth, self.steps = replay.seed, replay.depth, replay.steps
            self.plan = StepPlan.from_dict(replay.plan)
        else:
            self.seed, self.depth, self.steps = int(cfg.seed), cfg.pct_depth, pct_steps(cfg)
            self.plan = step_plan(cfg) if self.mode == "pct" else StepPlan()
        self.orphan_lock: Any = None  #: made by prepare(), inherited by the forked workers
        self._trim_r = self._trim_w = -1  #: the callout's wake-up pipe (made by prepare())
        self._step, self._step_since = -1, 0.0
        self._wedge_seen = False

    @property
    def shared(self) -> Shared:
        """What install() needs in each worker (inherited across fork)."""
        return Shared(self.orphan_lock, self._trim_w)

    @property
    def by_step(self) -> bool:
        """Whether the run is placed by step: a controlled run with a plan (every pct run;
        the replay of one).  Its end, rounds, callout and wedge test are the token's."""
        return self.controlled and self.plan.bounded

    @property
    def trim_fd(self) -> int:
        """The pipe end the manager waits on for a callout (-1: none)."""
        return self._trim_r

    @property
    def controlled(self) -> bool:
        """Whether workers run under the token (pct or replay)."""
        return self.mode in CONTROLLED

    def prepare(self, uma: Any) -> None:
        """Write the initial token, priorities and (replay) the recorded switches into the
        arena; make the orphan lock the forked workers inherit."""
        if not self.controlled:
            return
        prepare_arena(uma.view, self.cfg.cpus, self.mode, self.seed, self.depth, self.steps, self.replay,
                      self.plan, os.getpid())
        if self.mode == "replay" and self.cfg.steps > 0:  # replay --steps N: stop at step N at the latest
            ctl = uma.view("sc_ctl")
            ctl[CTL_STOPSTEP] = min(int(ctl[CTL_STOPSTEP]) or self.cfg.steps, self.cfg.steps)
        self.orphan_lock = make_orphan_lock()
        if self.plan.trim_steps:
            self._trim_r, self._trim_w = os.pipe()
            os.set_blocking(self._trim_r, False)
            os.set_blocking(self._trim_w, False)

    def close(self) -> None:
        """Close the callout's pipe (safe twice)."""
        for fd in (self._trim_r, self._trim_w):
            if fd >= 0:
                os.close(fd)
        self._trim_r = self._trim_w = -1

    # --- during the run (the manager's loop) -----------------------------------------------
    def callout_due(self, uma: Any) -> bool:
        """Whether a worker handed the token to the manager for the trimming callout."""
        if self._trim_r >= 0:
            try:
                while os.read(self._trim_r, 64):
                    pass
            except BlockingIOError:
                pass
        return bool(self.by_step and uma.view("sc_ctl")[CTL_TOKEN] == self.cfg.cpus)

    def hand_back(self, uma: Any) -> None:
        """After the callout: the token goes back to the CPU that handed it over."""
        ctl = uma.view("sc_ctl")
        if ctl[CTL_TOKEN] == self.cfg.cpus:
            ctl[CTL_TOKEN] = ctl[CTL_TRIM_FROM]

    def round_now(self, uma: Any) -> int:
        """The round the token holder is in (by step)."""
        return self.plan.round_at(int(uma.view("sc_ctl")[CTL_STEP]))

    def progress(self, uma: Any) -> float:
        """How far the run is, 0..1, by step."""
        return min(1.0, int(uma.view("sc_ctl")[CTL_STEP]) / max(self.plan.budget, 1))

    def finished(self, uma: Any, alive: Sequence[int]) -> bool:
        """Every CPU has left, or the run was stopped and only CPUs asleep remain (nobody
        is left who could wake them; the stop kills them)."""
        if not alive:
            return True
        ctl, state, woken = uma.view("sc_ctl"), uma.view("sc_state"), uma.view("cpu_woken")
        return bool(ctl[CTL_STOP] or ctl[CTL_WEDGED]) and all(state[k] == BLOCKED and not woken[k] for k in alive)

    def alarm(self, uma: Any, now: float, t0: float, timeout: float) -> Wedge | Stall | None:
        """A wedge the token holder found (once), or a stall: the step count stood still
        for ``timeout`` seconds while a CPU held the token (stopped, or stuck outside
        every sched point).  Not while the manager itself holds it, nor when nobody does.

        A holder that is runnable (/proc state R) gets :data:`RUNNABLE_STALL_S`: on a
        loaded machine a runnable process can wait a second or more for a core (seen at
        a load average of 8 on 2 cores, with the race tests' 1 s wedge timeout), and that
        is the machine's load, not a stop; a stopped, sleeping or blocked holder is a
        stall at ``timeout``, and a holder caught in a loop at the longer bound."""
        ctl = uma.view("sc_ctl")
        if ctl[CTL_WEDGED] and not self._wedge_seen:
            self._wedge_seen = True
            return self._wedge(uma, now - t0)
        step, tok = int(ctl[CTL_STEP]), int(ctl[CTL_TOKEN])
        if step != self._step or not 0 <= tok < self.cfg.cpus:
            self._step, self._step_since = step, now
            return None
        held = now - self._step_since
        if held < timeout:
            return None
        if held < max(timeout, RUNNABLE_STALL_S) and proc_state(int(uma.view("sc_pid")[tok]))[0] in RUNNABLE:
            return None  # runnable: starved by the machine's load, not (yet) stopped
        return Stall(at_s=now - t0, cpus=[tok], since_s={tok: self._step_since - t0},
                     how=(f"CPU {tok} held the scheduling token for {now - self._step_since:.1f} s without "
                          f"reaching a sched point (step {step:,})"))

    def _wedge(self, uma: Any, at_s: float) -> Wedge:
        """The wedge the token holder recorded, in the watchdog's terms, placed by step."""
        ctl, wcpus, wstep = uma.view("sc_ctl"), uma.view("sc_wcpus"), uma.view("sc_wstep")
        at = int(ctl[CTL_WEDGED]) - 1
        cpus = [k for k in range(self.cfg.cpus) if wcpus[k]]
        zone = ZONE_NAMES[uma.view("cpu_wzone")[cpus[0]]] if cpus else "?"
        how = WEDGE_HOW.get(int(ctl[CTL_WHOW]), "?")
        quiet = at - int(ctl[CTL_WSINCE])
        words = {"no-progress": f"no CPU made progress for {quiet:,} steps while CPUs slept in zonelimit",
                 "starved": "a CPU slept in one zonelimit sleep for three wedge timeouts while others spun on",
                 "all-blocked": "every CPU was blocked in zonelimit: nobody was left to run",
                 "at-end": f"the run reached its budget with CPUs asleep in zonelimit and no progress for the "
                           f"last {quiet:,} steps"}.get(how, how)
        return Wedge(at_s=at_s, zone=zone, wchan="zonelimit", sleeping_cpus=cpus,
                     asleep_since_s={}, keg=KEG_NAMES[int(ctl[CTL_WKEG])], keg_free_max=int(ctl[CTL_WFREE]),
                     no_progress_s=0.0, how=f"{words} (step {at:,}; by step: {how})", at_step=at,
                     no_progress_steps=quiet, asleep_since_step={k: int(wstep[k]) for k in cpus})

    @property
    def guided(self) -> bool:
        """Whether this replay follows a guide (race --shrink's tries), not a recording."""
        return self.mode == "replay" and self.replay is not None and self.replay.guide

    def recorded(self, uma: Any) -> Schedule | None:
        """The schedule the run folder keeps: what happened (pct, and the replay of a
        guide: what ran), what was followed (replay), None in free/jitter mode."""
        if self.mode == "pct" or self.guided:
            return read_schedule(uma.view, self.cfg.cpus, self.seed, self.depth, self.steps)
        return self.replay if self.mode == "replay" else None

    def summary(self, uma: Any) -> dict[str, Any]:
        """The ``schedule`` block of run.json: mode, seed, depth, steps, switches,
        divergence (replay)."""
        d: dict[str, Any] = {"mode": self.mode, "seed": self.seed}
        if self.mode == "jitter":
            d["jitter"] = self.cfg.jitter
        if not self.controlled:
            return d
        ctl = uma.view("sc_ctl")
        d.update(depth=self.depth, steps=self.steps, total_steps=int(ctl[CTL_STEP]),
                 switches=int(ctl[CTL_NLOG]), overflow=bool(ctl[CTL_OVERFLOW]),
                 orphans=int(ctl[CTL_ORPHANS]))
        if self.plan.bounded:
            d.update(budget=self.plan.budget, plan=self.plan.to_dict(), ended_by=END_NAMES.get(int(ctl[CTL_END]), "?"),
                     callouts=int(ctl[CTL_TRIMS]))
            if ctl[CTL_WEDGED]:
                d["wedged_at_step"] = int(ctl[CTL_WEDGED]) - 1
            if ctl[CTL_PANICKED]:
                d["panicked_at_step"] = int(ctl[CTL_PANICKED]) - 1
        if self.guided:
            d["guide"] = {"switches": int(ctl[CTL_NREPLAY]), "passed": int(ctl[CTL_NGUIDE]),
                          "followed": int(ctl[CTL_FOLLOWED])}
        elif self.mode == "replay":
            d["replayed"] = int(ctl[CTL_NLOG])
            d["recorded"] = int(ctl[CTL_NREPLAY])
            d["diverged_at_step"] = int(ctl[CTL_DIVERGED]) - 1 if ctl[CTL_DIVERGED] else None
            d["divergences"] = int(ctl[CTL_NDIVERGED])
        return d


@dataclass(frozen=True)
class WorkerHooks:
    """What worker k's loop calls instead of reading the manager's words itself."""

    stop: Callable[[], bool]  #: has the manager asked this CPU to stop (gated under the token)
    load: Callable[[], bool]  #: is the load on: wl_ctl RUN == 1 (gated under the token)
    leave: Callable[[], None]  #: leave the scheduling protocol, so the others keep running (safe twice)
    phase: Callable[[], int]  #: wl_ctl PHASE (under the token: by step, or gated)
    panicked: Callable[[], None] = lambda: None  #: an allocator panic: under the token, stop the run at this step


def _nothing() -> None:
    """Leaving free or jitter scheduling: nothing to hand over."""


def install(cpu: Any, uma: Any, cfg: RunConfig, k: int, shared: Shared | None = None) -> WorkerHooks:
    """In worker k, after fork and pinning, before the first allocator call: install the
    sched point of ``cfg.sched`` (and WITNESS hooks with --invariants) on ``cpu`` and
    return the loop's hooks.  In pct/replay this blocks until CPU k is first chosen to run."""
    shared = shared or Shared()
    mode = cfg.sched
    wl_ctl = uma.view("wl_ctl")
    witness = None
    if cfg.invariants and has_witness(uma.view):
        witness = Witness(uma.view, k)
        witness.install(cpu)
    if mode not in CONTROLLED:
        if mode == "jitter":
            cpu.sched_point = jitter_point(float(cfg.jitter), (int(cfg.seed) * 1000003 + k) & 0xFFFFFFFF)
        if witness is not None:
            cpu.sched_block = witness.check_sleep
        cpu.instrument()  # the allocator re-chooses its lock pair for the hooks
        return WorkerHooks(stop=uma.stop_requested, load=lambda: wl_ctl[CTL_RUN] == 1, leave=_nothing,
                           phase=lambda: int(wl_ctl[CTL_PHASE]))
    rings = [Ring(uma.view(name), name) for name in drain_rings(cfg)]
    ts = TokenScheduler(uma.view, k, cfg.cpus, on_exhausted=uma.request_stop if mode == "replay" else None,
                        real_stop=uma.stop_requested, real_load=lambda: int(wl_ctl[CTL_RUN]),
                        orphan_lock=shared.orphan_lock, real_phase=lambda: int(wl_ctl[CTL_PHASE]),
                        drained=lambda: not any(len(r) for r in rings), trim_fd=shared.trim_fd,
                        on_stop=uma.request_stop)
    cpu.sched_point = ts.sched_point
    cpu.sched_block = ts.sched_block
    # INVARIANTS' item history records the schedule's step (allocator/history.py).
    cpu.set_step_source(uma.view("sc_ctl"), CTL_STEP)
    if witness is not None:
        check, block = witness.check_sleep, ts.sched_block

        def sched_block() -> None:
            check()
            block()

        cpu.sched_block = sched_block
    cpu.sched_unblock = ts.sched_unblock
    cpu.instrument()  # the allocator re-chooses its lock pair for the hooks
    ts.start()
    return WorkerHooks(stop=ts.stop_requested, load=ts.load, leave=ts.finish, phase=ts.phase,
                       panicked=ts.panicked)
