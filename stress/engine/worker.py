"""A worker: one process per simulated CPU, pinned to its core, running workload roles.

Life of worker k (forked by :mod:`stress.engine.manager`, start method ``fork``)::

    fork ──> SIGINT and SIGTERM ignored (stopping is the manager's: a signal to the group,
             Ctrl-C or `timeout`, reaches it too, and it stops every CPU cleanly)
         ──> prctl(PR_SET_PDEATHSIG, SIGKILL), then getppid() check: never outlive the manager
         ──> pin to core k mod ncores
         ──> cpu = uma.cpu(k); hooks = sched.install (jitter / PCT token / WITNESS hooks)
         ──> loop until hooks.stop():
                 beat                                 wd_beat[k] = turns (the watchdog's heartbeat)
                 cpu.serve()                          cross-CPU cache drain requests
                 workload.turn(hooks.load(), PHASE)   one bounded slice of work
                 nothing to do? yield, then nap       (a sched point labelled "wait-...")
         ──> hooks.leave(); exit 0

Failures cross back to the manager over a one-way pipe as text:

- a Python exception in the tester: ``("error", traceback)`` and exit status 3;
- an allocator panic (INVARIANTS: duplicate free, memory modified after free, ...):
  ``("panic", traceback)`` and exit status 4.  The panic is also recorded in the arena,
  so the verdict comes from the audit, not from the exit status.

A worker asleep in zonelimit cannot be woken (the sleep has no timeout, faithfully):
the manager SIGKILLs it at shutdown.  It sleeps at a safe point, with every mbuf it
holds already recorded in an arena ring, so the audit still accounts for everything.

Logging: workers write to the manager's ``run.log`` through a ``FileHandler`` they
inherit across fork (O_APPEND, one write per record); see docs/runner.md for why not a
queue.  Nothing is logged on the hot path.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import time
import traceback
from typing import Any

from allocator import UmaPanic
from stress.config import RunConfig
from stress.engine import sched
from stress.engine.pinning import die_with_parent, pin_self
from stress.engine.watchdog import BEAT_ARRAY
from stress.options import EX_OK, EX_TESTER
from stress.workloads import WorkerContext, workload_class
from stress.workloads.common import CTL_GO

# A worker's exit status, read by the manager (not the command's exit code, which the verdict decides):
EXIT_OK = EX_OK
EXIT_ERROR = EX_TESTER  #: the tester raised (traceback sent to the manager)
EXIT_PANIC = 4  #: the allocator panicked (recorded in the arena as well)

#: empty turns spent spinning (with sched_yield) before napping: a driver waiting for
#: a packet must answer within microseconds, or the two CPUs never overlap
SPIN_TURNS = 2000
NAP_RUNNING = 0.0005
NAP_IDLE = 0.002
START_NAP = 0.0005  #: seconds between two looks at the start line

log = logging.getLogger("zonelimit.worker")


def worker_main(k: int, core: int, uma: Any, cfg: RunConfig, conn: Any, manager_pid: int,
                shared: sched.Shared | None = None) -> None:
    """Entry point of worker k (the target of its multiprocessing.Process)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    die_with_parent(manager_pid)
    hooks = None
    try:
        pin_self(core)
        cpu = uma.cpu(k)
        hooks = sched.install(cpu, uma, cfg, k, shared)
        ctx = WorkerContext(k=k, ncpus=cfg.cpus, cpu=cpu, uma=uma, cfg=cfg,
                            rng=random.Random(f"{cfg.seed}:{k}"))
        workload = workload_class(cfg.workload)(ctx)
        log.info("CPU %d: pid %d on core %d, workload %s", k, os.getpid(), core, cfg.workload)
        turns = run_loop(uma, cpu, workload, hooks)
        log.info("CPU %d: stop seen after %d turns", k, turns)
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the manager
        kind = "panic" if isinstance(exc, UmaPanic) else "error"
        text = traceback.format_exc()
        try:
            conn.send((kind, text))
        except OSError:
            pass
        log.error("CPU %d: %s\n%s", k, kind, text)
        if kind == "panic" and hooks is not None:
            hooks.panicked()  # under the token: the run stops at the panic's step
        _leave(hooks)
        raise SystemExit(EXIT_PANIC if kind == "panic" else EXIT_ERROR) from None
    _leave(hooks)
    raise SystemExit(EXIT_OK)


def _leave(hooks: sched.WorkerHooks | None) -> None:
    """Leave the scheduling protocol so the other CPUs are not left waiting for us."""
    if hooks is not None:
        try:
            hooks.leave()
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass


def run_loop(uma: Any, cpu: Any, workload: Any, hooks: sched.WorkerHooks) -> int:
    """The worker loop: serve, one workload turn, and back off when there is nothing to do.

    The stop and load flags come through ``hooks``: under the token they are gated
    copies that change only at a sched point (stress.engine.sched.controller)."""
    beat = uma.view(BEAT_ARRAY)
    k = cpu.row
    load = hooks.load
    phase = hooks.phase
    stop = hooks.stop
    serve = cpu.serve
    turn = workload.turn
    # Under the token (pct, replay) the wait-work sched point already lets another CPU
    # run; a nap would only hold the token while sleeping.
    controlled = workload.ctx.cfg.sched in ("pct", "replay")
    if not controlled:
        # The start line (stress.engine.manager's _start_line): set up, wait for the
        # others, so the run's clock counts the workload and not the start-up.
        ctl = uma.view("wl_ctl")
        beat[k] = 0
        while not ctl[CTL_GO] and not stop():
            time.sleep(START_NAP)
    empty = 0
    turns = 0
    while not stop():
        beat[k] = turns
        serve()
        running = load()
        turns += 1
        if turn(running, phase()):
            empty = 0
            continue
        empty += 1
        cpu.sched_point("wait-work")  # controlled scheduling: let another CPU run
        if controlled:
            continue
        if empty < SPIN_TURNS and running:
            os.sched_yield()
        else:
            time.sleep(NAP_RUNNING if running else NAP_IDLE)
    return turns
