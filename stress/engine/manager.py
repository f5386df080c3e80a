"""The manager: one run, from the arena to the verdict, returned as a RunOutcome.

Who sends what to whom::

    manager                                   arena (memfd)                 worker k (fork)
    -------                                   -------------                 ---------------
    Uma.create(UmaConfig(extra=rings...)) --> allocator + rings + wl_ctl
    fork N workers (start method "fork") ------------------------------------> pin, uma.cpu(k)
    every ~0.05 s: watchdog (sleepers, ops) <-- cpu_wchan, cpu_ops <--------- m_getcl/m_freem...
    every --interval: Sampler: uma.stats() -> samples.csv, netstat -m lines
    every --trim-interval: policy callout -> uma.observe / uma.apply
    round schedule: wl_ctl[RUN/ROUND/PHASE] --------------------------------> load on / idle
    stop: wl_ctl RUN=0 (drain), uma.request_stop() -------------------------> loop ends, exit 0
          SIGKILL the CPUs asleep in zonelimit (their sleep cannot be woken)
    worker's traceback <----------------------------------- pipe (text) ---- on an exception
    uma.audit(held: every ring and slot array) -> stress.audit.assess -> RunOutcome

The manager prints nothing and writes no document: live lines go to the ``echo`` it was
given, and :func:`stress.engine.runner.execute` turns the outcome into the run folder.

Why the ``fork`` start method, explicitly: the allocator's locks and per-CPU
semaphores come from a fork context, whose POSIX semaphores are unlinked at creation,
so nothing can leak to /dev/shm even if every process is SIGKILLed (spawn and
forkserver leave ``sem.mp-*`` files behind, architecture.md).  Fork also hands the
workers the arena mapping (a memfd: no name, freed by the kernel with the last
mapping) and is 1.3 ms per child instead of 30-70 ms.  Python 3.14 changes the default,
hence the explicit context.  The manager starts no thread before forking.

Nothing is left behind on any exit path: workers are daemonic, die with the manager
(PR_SET_PDEATHSIG) and are SIGKILLed and reaped in a ``finally``; the arena is closed
there too.  SIGINT and SIGTERM only set a flag (:class:`StopSignals`): the loop stops
the run cleanly and the outcome says so (exit 130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from allocator import Uma, UmaConfig
from allocator.policy.callout import TrimCallout
from allocator.witness import findings
from stress import audit
from stress.config import RunConfig
from stress.documents import Schedule
from stress.engine import live, sched
from stress.engine.pinning import PinningError, cpu_map
from stress.engine.sampler import Sampler, empty_peak
from stress.engine.stopping import StopSignals, WorkerHandle, read_message, stop_workers
from stress.engine.watchdog import Watchdog, Wedge, describe_death
from stress.engine.worker import EXIT_PANIC, worker_main
from stress.options import EX_SIGINT, EX_SIGTERM
from stress.outcome import RunOutcome, WorkerRecord
from stress.output import plots, profile
from stress.output.monitor import Progress
from stress.workloads import arena_arrays, drain_rings, workload_class
from stress.workloads.common import CTL_PHASE, CTL_ROUND, CTL_RUN, counter_totals
from stress.workloads.ring import Ring, held_mbufs, reset_all

log = logging.getLogger("zonelimit")

START_METHOD = "fork"  #: see the module docstring
WATCH_PERIOD = 0.05  #: seconds between two watchdog looks
DRAIN_MAX = 0.5  #: seconds the final drain (load off, in-flight completes) may take
EXIT_BY_SIGNAL = {"SIGINT": EX_SIGINT, "SIGTERM": EX_SIGTERM}


def uma_config(cfg: RunConfig, extra: tuple[Any, ...]) -> UmaConfig:
    """The allocator's configuration for a run: era knobs, INVARIANTS, injections."""
    return UmaConfig(
        ncpus=cfg.cpus,
        nmbclusters=cfg.nmbclusters,
        refcount=cfg.refcount,
        wakeup=cfg.wakeup,
        invariants=cfg.invariants,
        # The c. 2007 inline drain comes with every fix; only `none` (2005) lacks it.
        exhaustion_drain=cfg.policy != "none",
        inject=frozenset(cfg.inject),
        extra=extra,
        sched_locks=cfg.sched in sched.controller.CONTROLLED,
        lock_profile=cfg.lock_profile,
        page_budget=cfg.page_budget,
    )


def planned_duration(cfg: RunConfig) -> float:
    """Seconds of load: the rounds (each round plus its idle) or ``--duration``."""
    if cfg.rounds > 0:
        return cfg.rounds * (cfg.round_length + cfg.idle)
    return cfg.duration


def phase(cfg: RunConfig, elapsed: float, cur_round: int) -> int:
    """wl_ctl[CTL_PHASE] of a PHASED workload: 0 for the first half of the rounds (or of
    the time without rounds), then 1; always 0 for the others."""
    if not workload_class(cfg.workload).PHASED:
        return 0
    if cfg.rounds > 0:
        return 1 if cur_round >= (cfg.rounds + 1) // 2 else 0
    return 1 if elapsed >= cfg.duration / 2 else 0


class ArenaError(Exception):
    """The arena could not be created (exit 3)."""


@dataclass
class RunState:
    """What the supervision loop found out."""

    t0: float = 0.0
    stop_reason: str = "completed"
    wedge: Wedge | None = None
    panicked: bool = False


class Manager:
    """One run: build, fork, supervise, stop, audit.  ``execute`` (stress.engine.runner) drives it."""

    def __init__(self, cfg: RunConfig, out_dir: Path, echo: Callable[[str], None] | None = None,
                 signals: StopSignals | None = None) -> None:
        self.cfg = cfg
        self.out = Path(out_dir)
        self.echo = echo
        self.signals = signals if signals is not None else StopSignals()
        self.state = RunState()
        self.workers: list[WorkerHandle] = []
        self.dead: list[str] = []  #: how each dead worker died (describe_death)
        self.uma: Any = None
        self.specs: list[Any] = []
        self.mapping: dict[int, int] = {}
        self.controller: sched.Controller | None = None
        self.sampler: Sampler | None = None
        self.progress: Progress | None = None
        self.trim: TrimCallout | None = None
        self.profile_handle: Any = None
        self.profile_lines: list[str] = []
        self.recorded_schedule: Schedule | None = None  #: for schedule.json (pct, replay)
        self.live_path: Path | None = None  #: live.json while the run runs (stress.engine.live)

    def say(self, lines: list[str]) -> None:
        """Live lines (through the progress indicator) when a person is watching."""
        if self.echo is None:
            return
        if self.progress is not None:
            self.progress.clear()
        for line in lines:
            self.echo(line)

    def run(self) -> RunOutcome:
        """Execute the run; the arena is gone when this returns, the outcome holds all."""
        cfg = self.cfg
        error: str | None = None
        try:
            self.mapping = cpu_map(cfg.cpus, cfg.oversubscribe)
            self.specs = arena_arrays(cfg) + list(sched.sched_arrays(cfg))
            self.controller = sched.Controller(cfg)
            try:
                self.uma = Uma.create(uma_config(cfg, tuple(self.specs)))
            except (OSError, ValueError, MemoryError) as exc:
                raise ArenaError(f"the arena could not be created: {exc}") from exc
            reset_all(self.uma, self.specs)
            self._publish()
            self.controller.prepare(self.uma)
            if cfg.profile:  # py-spy must attach before the fork to follow the workers
                self.profile_handle = profile.start(self.out, os.getpid())
            self._fork_workers()
            # After the fork (a fork while the import thread holds the import lock would
            # lock imports up in the child): import matplotlib while the workers run.
            plots.preload_plot()
            self._supervise()
        except (ArenaError, PinningError) as exc:
            error = str(exc)
        except Exception:  # noqa: BLE001 - the tester failed: report it, clean up, exit 3
            error = "the manager failed:\n" + traceback.format_exc()
        finally:
            if self.workers:
                stop_workers(self.workers, self.uma)
                if self.uma is not None and not self.dead:
                    self._reap()  # a worker that failed while stopping still reports
                for h in self.workers:
                    h.conn.close()
            self._stop_profile()
        try:
            return self._outcome(error)
        finally:
            live.withdraw(self.live_path)
            self.live_path = None
            if self.uma is not None:
                self.uma.close()
                self.uma = None

    def _publish(self) -> None:
        """live.json in the run folder: where the arena is, for ``stress stat``; at -v
        the path and the command are printed.  A run that cannot write it goes on
        (it loses only the watching)."""
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            self.live_path = live.publish(self.out, self.uma.path, self.cfg.cpus)
        except OSError as exc:
            log.warning("live.json not written: %s", exc)
            return
        if self.cfg.verbosity > 0:
            self.say([f"live: arena {self.uma.path} (pid {os.getpid()}), in {self.live_path}; "
                      f"watch it: python -m stress stat {self.out}"])

    def _fork_workers(self) -> None:
        """One process per CPU, fork start method, daemonic, pinned by itself after fork."""
        ctx: Any = multiprocessing.get_context(START_METHOD)
        me = os.getpid()
        ctl = self.uma.view("wl_ctl")
        ctl[CTL_RUN], ctl[CTL_ROUND], ctl[CTL_PHASE] = 1, 0, 0
        self.state.t0 = time.monotonic()
        orphan_lock = self.controller.orphan_lock if self.controller is not None else None
        for k in range(self.cfg.cpus):
            r, w = ctx.Pipe(duplex=False)
            p = ctx.Process(target=worker_main, name=f"zonelimit-cpu{k}",
                            args=(k, self.mapping[k], self.uma, self.cfg, w, me, orphan_lock), daemon=True)
            p.start()
            w.close()
            self.workers.append(WorkerHandle(k, self.mapping[k], p, r))
        log.info("started %d workers: %s", len(self.workers),
                 ", ".join(f"CPU {h.cpu} pid {h.proc.pid} core {h.core}" for h in self.workers))

    def _supervise(self) -> None:
        """The loop: rounds, sampling, trimming, watchdog, dead workers, signals."""
        cfg, st, uma = self.cfg, self.state, self.uma
        planned = planned_duration(cfg)
        self.progress = Progress(planned, enabled=None if self.echo is not None else False)
        ctl = uma.view("wl_ctl")
        dog = Watchdog(uma, cfg.wedge_timeout, st.t0)
        # `none` needs the callout only to answer vm_lowmem, which needs a page budget.
        if (cfg.policy != "none" or cfg.page_budget > 0) and cfg.sched not in sched.controller.CONTROLLED:
            self.trim = TrimCallout(uma, cfg.policy, cfg.policy_params)
        sampler = self.sampler = Sampler(uma, self.out, st.t0, cfg.verbosity > 0, self.say)
        next_sample = st.t0 + cfg.interval
        next_trim = st.t0 + cfg.trim_interval
        period = cfg.round_length + cfg.idle
        cur_round = 0
        try:
            sampler.sample(st.t0, cur_round, True, print_netstat=False)
            while True:
                now = time.monotonic()
                el = now - st.t0
                if self.signals.name:
                    st.stop_reason = self.signals.name
                    break
                if self._reap() or el >= planned:
                    break
                if uma.stop_requested() and not any(h.proc.exitcode is None for h in self.workers):
                    break  # a replay reached the recorded stop and every CPU has left
                running = True
                if cfg.rounds > 0:  # the round schedule
                    r = min(int(el // period), cfg.rounds - 1)
                    running = (el - r * period) < cfg.round_length
                    if r != cur_round:  # the previous round (and its idle) is over
                        sampler.after_round(cur_round, now)
                        cur_round = r
                    ctl[CTL_ROUND] = r
                ctl[CTL_RUN] = 1 if running else 0
                ctl[CTL_PHASE] = phase(cfg, el, cur_round)
                if now >= next_sample:
                    sampler.sample(now, cur_round, running, print_netstat=cfg.rounds == 0)
                    next_sample += cfg.interval * max(1, int((now - next_sample) // cfg.interval) + 1)
                if self.trim is not None and now >= next_trim:
                    self.trim.tick()
                    next_trim = now + cfg.trim_interval
                wedge = dog.check(now)
                if wedge is not None:
                    st.wedge = wedge
                    st.stop_reason = "wedged"
                    log.warning("wedged: %s", wedge.to_dict())
                    break
                self.progress.update(el, f"round {cur_round + 1}/{cfg.rounds}" if cfg.rounds else "")
                waitables = [h.proc.sentinel for h in self.workers] + [h.conn for h in self.workers]
                timeout = max(0.0, min(WATCH_PERIOD, next_sample - time.monotonic(), planned - el))
                multiprocessing.connection.wait(waitables, timeout=timeout)
            if st.stop_reason == "completed" and any(h.proc.exitcode is None for h in self.workers):
                self._drain()
            now = time.monotonic()
            sampler.sample(now, cur_round, False, print_netstat=False)
            if cfg.rounds > 0 and st.stop_reason == "completed":
                sampler.after_round(cur_round, now)
            elif cfg.rounds > 0 or st.stop_reason != "completed":
                sampler.at_stop(now, st.stop_reason)
        finally:
            sampler.close()
            self.progress.close()

    def _drain(self) -> None:
        """Load off; wait (briefly) until the workload's in-flight rings are empty."""
        self.uma.view("wl_ctl")[CTL_RUN] = 0
        rings = [Ring(self.uma.view(name), name) for name in drain_rings(self.cfg)]
        end = time.monotonic() + DRAIN_MAX
        while time.monotonic() < end:
            if not any(len(r) for r in rings) or self._reap():
                return
            time.sleep(0.01)

    def _reap(self) -> bool:
        """Collect messages and deaths; True when a worker died during the run (a panic
        or an exit the manager did not ask for)."""
        died = False
        for h in self.workers:
            read_message(h)
            code = h.proc.exitcode
            if code is None or h.killed_asleep or h.killed_stuck:
                continue
            if code == EXIT_PANIC or (h.message and h.message[0] == "panic"):
                if not self.state.panicked:
                    self.state.panicked = True
                    self.state.stop_reason = "panic"
                    log.error("CPU %d panicked", h.cpu)
                died = True
                continue
            if code != 0 or not self.uma.stop_requested():
                if not any(d.startswith(f"CPU {h.cpu} ") for d in self.dead):
                    text = describe_death(h.cpu, h.proc.pid, code, h.message[1] if h.message else None,
                                          self.uma.lock_holders())
                    self.dead.append(text)
                    self.state.stop_reason = "worker died"
                    log.error("%s", text)
                died = True
        return died

    def _stop_profile(self) -> None:
        """Stop py-spy (after the workers are joined) and keep its lines for the summary."""
        if self.profile_handle is None:
            return
        try:
            self.profile_lines = profile.stop(
                self.profile_handle, roles={h.proc.pid: f"cpu{h.cpu}" for h in self.workers})
        except Exception:  # noqa: BLE001 - a profile must never cost the run its result
            self.profile_lines = ["profile: failed:", *traceback.format_exc().splitlines()]
        self.say(self.profile_lines)

    def _outcome(self, error: str | None) -> RunOutcome:
        """Audit the quiescent arena and gather everything run.json needs."""
        cfg, st, uma = self.cfg, self.state, self.uma
        duration = time.monotonic() - st.t0 if st.t0 else 0.0
        if self.dead and error is None:
            error = "a worker died:\n" + "\n".join(self.dead)
        report = None
        panics: list[Any] = []
        payload_errors = lock_order = 0
        o = RunOutcome(duration_s=duration, verdict="error", exit_code=3, verdict_detail="", audit={},
                       start_method=START_METHOD, mapping=dict(self.mapping), peak=empty_peak())
        if uma is not None:
            try:
                panics = uma.panics()
                o.counters = counter_totals(uma)
                payload_errors = o.counters["payload_errors"]
                o.per_cpu_ops = uma.cpu_ops()
                o.stats = uma.stats().to_dict()
                lock_order = len(findings(uma.view)) if cfg.invariants else 0
                report = uma.audit(held_mbufs(uma, self.specs))
            except Exception:  # noqa: BLE001 - a damaged arena must still give a result
                tb = traceback.format_exc()
                log.error("audit failed:\n%s", tb)
                error = error or "the audit failed:\n" + tb
        verdict = audit.assess(report, payload_errors=payload_errors, panics=panics,
                               wedged=st.wedge is not None, lock_order_findings=lock_order, error=error)
        o.verdict, o.verdict_detail, o.audit = verdict.verdict, verdict.reason, verdict.block
        o.exit_code = EXIT_BY_SIGNAL.get(self.signals.name or "", verdict.exit_code)
        if self.sampler is not None:
            o.peak, o.rounds = dict(self.sampler.peak), self.sampler.rounds
        o.wedge = st.wedge.to_dict() if st.wedge else None
        o.locks = uma.lock_profile() if (uma is not None and cfg.lock_profile) else []
        o.stop_reason, o.signal = st.stop_reason, self.signals.name
        o.workers = [WorkerRecord(h.cpu, h.proc.pid, h.core, h.proc.exitcode, h.killed_asleep, h.killed_stuck)
                     for h in self.workers]
        o.profile, o.error = self.profile_lines, error
        o.trim = self.trim.summary() if self.trim is not None else None
        if report is not None and uma is not None:
            o.audit_lines = report.summary_lines()
        if self.controller is not None and uma is not None and cfg.sched != "free":
            try:
                o.schedule = self.controller.summary(uma)
                self.recorded_schedule = self.controller.recorded(uma)
            except Exception:  # noqa: BLE001 - a lost schedule must not cost the verdict
                log.error("schedule not read:\n%s", traceback.format_exc())
        return o
