"""The two ends of controlled scheduling: the manager's :class:`Controller`, the worker's :func:`install`.

Manager::

    ctl = Controller(cfg)        # replay: loads cfg.replay_from/schedule.json
    uma = Uma.create(UmaConfig(..., extra=... + sched_arrays(cfg)))
    ctl.prepare(uma)             # before forking: first token, priorities, orphan lock
    ... fork; each worker k: hooks = install(cpu, uma, cfg, k, ctl.orphan_lock) ...
    ctl.recorded(uma)            # after the workers stopped: the Schedule for schedule.json
    ctl.summary(uma)             # the run.json "schedule" block

Worker k: :func:`install` sets the CPU's sched hooks for ``cfg.sched`` (and WITNESS with
``--invariants``) and returns :class:`WorkerHooks`: how its loop reads the manager's
stop and load flags, and how it leaves.  Under the token both flags are gated copies
that change only at a sched point, so the step at which a CPU stops or idles is part of
the schedule; nothing in ``uma`` is patched, and no state is kept in this module.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from allocator.layout import ArraySpec
from allocator.witness import Witness, has_witness, witness_arrays
from stress.config import RunConfig
from stress.documents import Schedule, load_schedule
from stress.engine.sched.jitter import jitter_point
from stress.engine.sched.pct import DEFAULT_PCT_STEPS
from stress.engine.sched.schedule import (
    CTL_DIVERGED,
    CTL_NDIVERGED,
    CTL_NLOG,
    CTL_NREPLAY,
    CTL_ORPHANS,
    CTL_OVERFLOW,
    CTL_STEP,
    prepare_arena,
    read_schedule,
    sched_specs,
)
from stress.engine.sched.token import TokenScheduler
from stress.workloads import workload_class
from stress.workloads.common import CTL_RUN

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


class Controller:
    """The manager's side: prepares the arena before fork, reads the schedule after."""

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
        else:
            self.seed, self.depth, self.steps = int(cfg.seed), cfg.pct_depth, pct_steps(cfg)
        self.orphan_lock: Any = None  #: made by prepare(), inherited by the forked workers

    @property
    def controlled(self) -> bool:
        """Whether workers run under the token (pct or replay)."""
        return self.mode in CONTROLLED

    def prepare(self, uma: Any) -> None:
        """Write the initial token, priorities and (replay) the recorded switches into the
        arena; make the orphan lock the forked workers inherit."""
        if not self.controlled:
            return
        prepare_arena(uma.view, self.cfg.cpus, self.mode, self.seed, self.depth, self.steps, self.replay)
        self.orphan_lock = make_orphan_lock()

    def recorded(self, uma: Any) -> Schedule | None:
        """The schedule the run folder keeps: what happened (pct), what was followed
        (replay), None in free/jitter mode."""
        if self.mode == "pct":
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
        if self.mode == "replay":
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


def _nothing() -> None:
    """Leaving free or jitter scheduling: nothing to hand over."""


def install(cpu: Any, uma: Any, cfg: RunConfig, k: int, orphan_lock: Any = None) -> WorkerHooks:
    """In worker k, after fork and pinning, before the first allocator call: install the
    sched point of ``cfg.sched`` (and WITNESS hooks with --invariants) on ``cpu`` and
    return the loop's hooks.  In pct/replay this blocks until CPU k is first chosen to run."""
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
        return WorkerHooks(stop=uma.stop_requested, load=lambda: wl_ctl[CTL_RUN] == 1, leave=_nothing)
    ts = TokenScheduler(uma.view, k, cfg.cpus, on_exhausted=uma.request_stop if mode == "replay" else None,
                        real_stop=uma.stop_requested, real_load=lambda: int(wl_ctl[CTL_RUN]),
                        orphan_lock=orphan_lock)
    cpu.sched_point = ts.sched_point
    cpu.sched_block = ts.sched_block
    if witness is not None:
        check, block = witness.check_sleep, ts.sched_block

        def sched_block() -> None:
            check()
            block()

        cpu.sched_block = sched_block
    cpu.sched_unblock = ts.sched_unblock
    cpu.instrument()  # the allocator re-chooses its lock pair for the hooks
    ts.start()
    return WorkerHooks(stop=ts.stop_requested, load=ts.load, leave=ts.finish)
