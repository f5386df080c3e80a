"""The manager: one run, from the arena to the verdict, returned as a RunOutcome.

Who sends what to whom::

    manager                                   arena (memfd)                 worker k (fork)
    -------                                   -------------                 ---------------
    Uma.create(UmaConfig(extra=rings...)) --> allocator + rings + wl_ctl
    fork N workers (start method "fork") ------------------------------------> pin, uma.cpu(k)
    every ~0.05 s: watchdog (sleepers, ops, <-- cpu_wchan, cpu_ops, wd_beat <- m_getcl/m_freem...
                   heartbeats: wedge, stall)
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
there too.  SIGINT and SIGTERM only set a flag (:class:`StopSignals`) and, through the
hook the manager registers, the arena's stop flag: the workers leave at once, the loop
and every bounded wait see it within 50 ms, the run is stopped (a short grace), audited,
and the outcome says ``interrupted`` (exit 130 for SIGINT, 143 for SIGTERM).

The manager never blocks forever: every lock its context takes is bounded by the wedge
timeout (``Cpu.bound``: a worker stopped while holding a zone lock ends the run
``stalled``, naming the holder), its waits are short and see a signal, and a CPU that
stops making progress without sleeping on a known wait channel is a stall too, with a
post-mortem (stress.engine.postmortem) in stacks.txt: every CPU's stack and the
manager's, the stalled CPUs first, taken before any process is killed.
"""

from __future__ import annotations

import gc
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

from allocator import LockTimeout, Uma, UmaConfig
from allocator.policy.callout import TrimCallout
from allocator.witness import findings
from stress import audit
from stress.config import RunConfig
from stress.documents import Schedule
from stress.engine import live, postmortem, sched
from stress.engine.pinning import PinningError, cpu_map
from stress.engine.sampler import Sampler, empty_peak
from stress.engine.stopping import (
    SIGNAL_GRACE,
    STOP_GRACE,
    StopSignals,
    WorkerHandle,
    read_message,
    stop_workers,
)
from stress.engine.watchdog import BEAT_ARRAY, Stall, Watchdog, Wedge, describe_death, watch_arrays
from stress.engine.worker import EXIT_PANIC, worker_main
from stress.outcome import RunOutcome, WorkerRecord
from stress.output import plots, profile
from stress.output.monitor import Progress
from stress.workloads import arena_arrays, drain_rings, workload_class
from stress.workloads.common import CTL_GO, CTL_PHASE, CTL_ROUND, CTL_RUN, counter_totals
from stress.workloads.ring import Ring, held_mbufs, reset_all

log = logging.getLogger("zonelimit")

START_METHOD = "fork"  #: see the module docstring
WATCH_PERIOD = 0.05  #: seconds between two watchdog looks
START_POLL = 0.001  #: seconds between two looks at the start line
DRAIN_MAX = 0.5  #: seconds the final drain (load off, in-flight completes) may take


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
    stall: Stall | None = None
    panicked: bool = False
    stacks_taken: bool = False  #: stacks.txt written (a wedge's or a panic's post-mortem)
    stopped_at: float | None = None  #: time.monotonic() when the run's stop began
    workers_gone_s: float | None = None  #: seconds from the stop signal until every worker was reaped
    startup_s: float | None = None  #: seconds from the fork until every CPU stood at the start line


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
        self.dog: Watchdog | None = None
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
            with self.signals.on_stop(self._signalled):
                self.mapping = cpu_map(cfg.cpus, cfg.oversubscribe)
                self.specs = arena_arrays(cfg) + list(sched.sched_arrays(cfg)) + watch_arrays(cfg.cpus)
                self.controller = sched.Controller(cfg)
                try:
                    self.uma = Uma.create(uma_config(cfg, tuple(self.specs)))
                except (OSError, ValueError, MemoryError) as exc:
                    raise ArenaError(f"the arena could not be created: {exc}") from exc
                reset_all(self.uma, self.specs)
                self._publish()
                self.controller.prepare(self.uma)
                if self.signals.requested:  # stopped while the arena was made: start nothing
                    self.uma.request_stop()
                    self.state.stop_reason = "interrupted"
                else:
                    if cfg.profile:  # py-spy must attach before the fork to follow the workers
                        self.profile_handle = profile.start(self.out, os.getpid())
                    self._fork_workers()
                    # Every lock the manager's context takes is bounded (after the fork: the
                    # workers never see this context).  A stop signal cuts the wait short.
                    # Under the token the manager never spins through sched points: it runs
                    # the callout only when no lock is held, while every CPU waits.
                    mgr = self.uma.manager()
                    mgr.sched_locks = False
                    mgr.bound(cfg.wedge_timeout, lambda: self.signals.requested)
                    # After the fork (a fork while the import thread holds the import lock would
                    # lock imports up in the child): import matplotlib while the workers run.
                    if not self.signals.requested:
                        plots.preload_plot()
                    self._supervise()
        except (ArenaError, PinningError) as exc:
            error = str(exc)
        except Exception:  # noqa: BLE001 - the tester failed: report it, clean up, exit 3
            error = "the manager failed:\n" + traceback.format_exc()
        finally:
            if self.workers:
                if self.state.stopped_at is None:
                    self.state.stopped_at = time.monotonic()
                grace = SIGNAL_GRACE if self.signals.requested else STOP_GRACE
                stop_workers(self.workers, self.uma, grace, before_kill=self._stuck)
                if self.signals.at is not None:
                    self.state.workers_gone_s = max(0.0, time.monotonic() - self.signals.at)
                if self.uma is not None and not self.dead:
                    self._reap()  # a worker that failed while stopping still reports
                for h in self.workers:
                    h.conn.close()
            self._stop_profile()
            if self.controller is not None:
                self.controller.close()
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

    def _signalled(self) -> None:
        """The stop hook (called from the signal handler): raise the arena's stop flag,
        so every worker leaves at its next loop turn whatever the manager is doing."""
        if self.uma is not None:
            self.uma.request_stop()

    def _fork_workers(self) -> None:
        """One process per CPU, fork start method, daemonic, pinned by itself after fork."""
        ctx: Any = multiprocessing.get_context(START_METHOD)
        me = os.getpid()
        ctl = self.uma.view("wl_ctl")
        ctl[CTL_RUN], ctl[CTL_ROUND], ctl[CTL_PHASE], ctl[CTL_GO] = 1, 0, 0, 0
        controlled = self.cfg.sched in sched.controller.CONTROLLED
        beats = self.uma.view(BEAT_ARRAY)
        for k in range(self.cfg.cpus):
            beats[k] = -1  # not at the start line yet (worker.run_loop writes 0 there)
        self.state.t0 = time.monotonic()
        shared = self.controller.shared if self.controller is not None else None
        # The parent's objects are frozen across the forks (the gc.freeze recipe of the
        # Python docs): a collection in a child then never walks the parent's heap, which
        # in a large parent (an in-process run late in a pytest session) copied it page
        # by page on write and took seconds of the worker's start-up.
        gc.freeze()
        try:
            for k in range(self.cfg.cpus):
                r, w = ctx.Pipe(duplex=False)
                p = ctx.Process(target=worker_main, name=f"zonelimit-cpu{k}",
                                args=(k, self.mapping[k], self.uma, self.cfg, w, me, shared), daemon=True)
                p.start()
                w.close()
                self.workers.append(WorkerHandle(k, self.mapping[k], p, r))
        finally:
            gc.unfreeze()
        log.info("started %d workers: %s", len(self.workers),
                 ", ".join(f"CPU {h.cpu} pid {h.proc.pid} core {h.core}" for h in self.workers))
        if not controlled:
            self._start_line(ctl, beats)

    def _start_line(self, ctl: Any, beats: Any) -> None:
        """Free and jitter runs: wait until every CPU has set itself up and stands at the
        start line of its loop, then let them all go and start the run's clock.

        Why: the run's length is the workload's, not the start-up's.  A worker forked
        from a large parent (pytest late in a session, beside a CPU hog on each core)
        spent more than a 1.5 s run setting up, made no allocator call, and the run was
        judged ``stalled`` (``never_ran``): a false verdict made by the start-up.  The
        wait is bounded by the wedge timeout: a CPU that is not at the line by then (a
        stopped or looping worker) is left to the watchdog, which reports it stalled;
        a worker that died and a stop signal end the wait at once.  Under pct and replay
        the run is placed by step and its CPUs start under the token instead."""
        begin = time.monotonic()
        deadline = begin + self.cfg.wedge_timeout
        while time.monotonic() < deadline and not self.signals.requested:
            if all(int(beats[h.cpu]) >= 0 or h.proc.exitcode is not None for h in self.workers):
                break
            time.sleep(START_POLL)
        ctl[CTL_GO] = 1
        self.state.t0 = time.monotonic()
        self.state.startup_s = self.state.t0 - begin
        log.info("CPUs at the start line after %.3f s: go", self.state.startup_s)

    def _supervise(self) -> None:
        """The loop: rounds, sampling, trimming, watchdog, dead workers, signals.

        A run placed by step (pct, and the replay of one: ``Controller.by_step``) is
        driven by the token holder: its end, rounds, callout periods and wedge test are
        steps (stress.engine.sched.plan).  The loop then only serves the callout when a
        worker hands it the token, watches for the wedge the holder found or for steps
        that stand still (a stall), and ends when the workers have left."""
        cfg, st, uma = self.cfg, self.state, self.uma
        assert self.controller is not None
        ctrl = self.controller
        by_step = ctrl.by_step
        planned = planned_duration(cfg)
        self.progress = Progress(planned, enabled=None if self.echo is not None else False)
        ctl = uma.view("wl_ctl")
        beats = None if cfg.sched in sched.controller.CONTROLLED else uma.view(BEAT_ARRAY)
        dog = self.dog = Watchdog(uma, cfg.wedge_timeout, st.t0, beats,
                                  lambda k: k < len(self.workers) and self.workers[k].proc.exitcode is None)
        # `none` needs the callout only to answer vm_lowmem, which needs a page budget.
        wants_trim = cfg.policy != "none" or cfg.page_budget > 0
        if wants_trim and (cfg.sched not in sched.controller.CONTROLLED or ctrl.plan.trim_steps):
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
                if self.signals.requested:
                    st.stop_reason = "interrupted"
                    break
                if self._reap():
                    break
                alive = [h.cpu for h in self.workers if h.proc.exitcode is None]
                running = True
                if by_step:
                    if self.trim is not None and ctrl.callout_due(uma) and not self._callout_under_token():
                        break
                    alarm = ctrl.alarm(uma, time.monotonic(), st.t0, cfg.wedge_timeout)
                    if alarm is None and ctrl.finished(uma, alive):
                        break
                    r = ctrl.round_now(uma)
                    if cfg.rounds > 0 and r != cur_round:
                        sampler.after_round(cur_round, now)
                        cur_round = r
                else:
                    if el >= planned:
                        break
                    if uma.stop_requested() and not alive:
                        break  # a replay reached the recorded stop and every CPU has left
                    if cfg.rounds > 0:  # the round schedule
                        r = min(int(el // period), cfg.rounds - 1)
                        running = (el - r * period) < cfg.round_length
                        if r != cur_round:  # the previous round (and its idle) is over
                            sampler.after_round(cur_round, now)
                            cur_round = r
                        ctl[CTL_ROUND] = r
                    ctl[CTL_RUN] = 1 if running else 0
                    ctl[CTL_PHASE] = phase(cfg, el, cur_round)
                    if self.trim is not None and now >= next_trim:
                        if not self._trim_tick():
                            break
                        next_trim = time.monotonic() + cfg.trim_interval
                    alarm = dog.check(time.monotonic())
                if now >= next_sample:
                    sampler.sample(now, cur_round, running, print_netstat=cfg.rounds == 0)
                    next_sample += cfg.interval * max(1, int((now - next_sample) // cfg.interval) + 1)
                if isinstance(alarm, Stall):
                    self._stalled(alarm)
                    break
                if alarm is not None:
                    st.wedge = alarm
                    st.stop_reason = "wedged"
                    log.warning("wedged: %s", alarm.to_dict())
                    self._stacks_of_all(f"wedged at {alarm.at_s:.1f} s in [{alarm.wchan}] on {alarm.zone}")
                    break
                shown = ctrl.progress(uma) * planned if by_step else el
                self.progress.update(shown, f"round {cur_round + 1}/{cfg.rounds}" if cfg.rounds else "")
                waitables: list[Any] = [h.proc.sentinel for h in self.workers] + [h.conn for h in self.workers]
                if ctrl.trim_fd >= 0:
                    waitables.append(ctrl.trim_fd)
                limit = WATCH_PERIOD if by_step else min(WATCH_PERIOD, planned - el)
                timeout = max(0.0, min(limit, next_sample - time.monotonic()))
                multiprocessing.connection.wait(waitables, timeout=timeout)
            if st.stop_reason == "completed" and not by_step:
                self._judge_whole_run(time.monotonic())
            if st.stop_reason == "completed" and not by_step and any(h.proc.exitcode is None for h in self.workers):
                self._drain()
            now = time.monotonic()
            st.stopped_at = now
            sampler.sample(now, cur_round, False, print_netstat=False)
            if cfg.rounds > 0 and st.stop_reason == "completed":
                sampler.after_round(cur_round, now)
            elif cfg.rounds > 0 or st.stop_reason != "completed":
                sampler.at_stop(now, st.stop_reason)
        finally:
            sampler.close()
            self.progress.close()

    def _callout_under_token(self) -> bool:
        """The trimming callout, run while the manager holds the token (every CPU waits,
        no lock is held); the token goes back whatever happens.  False: the run ends."""
        assert self.controller is not None
        try:
            return self._trim_tick()
        finally:
            self.controller.hand_back(self.uma)

    def _trim_tick(self) -> bool:
        """One trimming callout tick with the manager's bounded locks; False when it could
        not finish: a lock it could not take in time (the run is stalled) or a stop."""
        assert self.trim is not None
        try:
            self.trim.tick()
        except LockTimeout as exc:
            if exc.gave_up or self.signals.requested:
                self.state.stop_reason = "interrupted"
                return False
            self._lock_stall(exc, "the trimming callout")
            return False
        return True

    def _who(self, row: int) -> str:
        """The holder a lock's owner word names, in words."""
        ncpus = self.cfg.cpus
        if 0 <= row < ncpus:
            pid = self.workers[row].proc.pid if row < len(self.workers) else None
            return f"CPU {row}" + (f" (pid {pid})" if pid else "")
        if row == ncpus:
            return "the manager itself"
        if row < 0:
            return "nobody (the lock changed hands as the wait ended)"
        return f"arena row {row} (a worker's off-CPU context)"

    def _lock_stall(self, exc: LockTimeout, what: str) -> None:
        """The manager could not take a lock within the wedge timeout: the run is stalled,
        and the holder (from the owner word) is named and examined."""
        st = self.state
        now = time.monotonic()
        holder = exc.holder
        cpus = [holder] if 0 <= holder < self.cfg.cpus else []
        how = (f"{what} could not take the {exc.name} lock within {exc.waited:.1f} s: "
               f"{self._who(holder)} holds it")
        stall = Stall(at_s=now - st.t0, cpus=cpus, how=how,
                      lock={"name": exc.name, "holder_row": holder, "holder": self._who(holder),
                            "waited_s": round(exc.waited, 3), "by": what})
        self._stalled(stall)

    def _stalled(self, stall: Stall) -> None:
        """Record a stall and take the post-mortem of its CPUs before anything is killed."""
        st = self.state
        st.stall = stall
        st.stop_reason = "stalled"
        holders = [(name, row) for name, row in self.uma.lock_holders()]
        if holders:
            stall.how += "; locks held: " + ", ".join(f"{name} by {self._who(row)}" for name, row in holders)
        log.error("stalled: %s", stall.how)
        self._postmortem(stall, [self.workers[k] for k in stall.cpus if k < len(self.workers)],
                         f"stalled at {stall.at_s:.1f} s: {stall.how}")

    def _postmortem(self, stall: Stall, handles: list[WorkerHandle], title: str) -> None:
        """A stall's post-mortem, before any process is killed: the /proc state and py-spy
        stack of every CPU and of the manager into stacks.txt -- the stalled CPUs
        (``handles``) first, then the others, as a wedge's or a panic's post-mortem has
        them all: what the rest was doing is often why the stalled one cannot go on --
        and the stalled CPUs' states into ``stall`` (run.json, the summary)."""
        stalled = {h.cpu for h in handles}
        others = [h for h in self.workers if h.cpu not in stalled]
        processes = ([(h.proc.pid, f"CPU {h.cpu}") for h in [*handles, *others]]
                     + [(os.getpid(), "the manager")])
        reports = postmortem.capture_all(processes)
        mine = reports[:len(handles)]
        stall.processes = [r.to_dict() for r in mine]
        if mine:
            stall.how += "; " + "; ".join(r.line() for r in mine)
        notes = [f"stalled: {', '.join(f'CPU {k}' for k in sorted(stalled)) or 'no CPU named'}; "
                 "every CPU's and the manager's stack follow, the stalled first"]
        try:
            stall.stacks = postmortem.write_stacks(self.out, title, reports, notes).name
            self.state.stacks_taken = True
        except OSError as exc:
            log.error("stacks.txt not written: %s", exc)

    def _stacks_of_all(self, title: str) -> None:
        """A wedge's or a panic's post-mortem, before any process is killed: every CPU's
        and the manager's /proc state and py-spy stack into stacks.txt (the stall's
        own post-mortem, of its CPUs, is :meth:`_postmortem`'s)."""
        if self.state.stacks_taken:
            return
        self.state.stacks_taken = True
        processes = [(h.proc.pid, f"CPU {h.cpu}") for h in self.workers] + [(os.getpid(), "the manager")]
        try:
            postmortem.write_stacks(self.out, title, postmortem.capture_all(processes))
        except OSError as exc:
            log.error("stacks.txt not written: %s", exc)

    def _stuck(self, stuck: list[WorkerHandle]) -> None:
        """stop_workers' ``before_kill``: CPUs that did not stop within the grace period.
        A stall of its own unless the run already ended for a reason that explains it (a
        stall, a dead worker holding a lock, a signal's short grace)."""
        st = self.state
        cpus = [h.cpu for h in stuck]
        if st.stall is not None or self.dead or st.panicked or self.signals.requested:
            log.warning("CPUs %s did not stop in time: SIGKILL", cpus)
            return
        now = time.monotonic()
        stall = Stall(at_s=now - st.t0, cpus=cpus,
                      how=(f"CPU{'s' if len(cpus) > 1 else ''} {', '.join(map(str, cpus))} did not stop within "
                           f"{STOP_GRACE:g} s of the stop flag"))
        st.stall = stall
        log.error("stalled at the stop: %s", stall.how)
        self._postmortem(stall, stuck, f"stuck at the stop ({stall.at_s:.1f} s): {stall.how}")

    def _judge_whole_run(self, now: float) -> None:
        """A run that reached its planned end is not ``ok`` just because it was shorter
        than the wedge timeout (``--nmbclusters 2 --duration 2``, whose CPUs fall asleep
        in zonelimit within milliseconds, used to be): a CPU that never turned its loop
        nor slept on a known wait channel is a stall (:meth:`Watchdog.never_ran`, the
        tester did not run); CPUs asleep in zonelimit for half the run with no progress
        by anyone meanwhile are the allocator's wedge (:meth:`Watchdog.at_end`)."""
        st = self.state
        if self.dog is None:
            return
        stall = self.dog.never_ran()
        if stall is not None:
            self._stalled(stall)
            return
        wedge = self.dog.at_end(now)
        if wedge is not None:
            st.wedge = wedge
            st.stop_reason = "wedged"
            log.warning("wedged at the end: %s", wedge.to_dict())

    def _drain(self) -> None:
        """Load off; wait (briefly) until the workload's in-flight rings are empty."""
        self.uma.view("wl_ctl")[CTL_RUN] = 0
        rings = [Ring(self.uma.view(name), name) for name in drain_rings(self.cfg)]
        end = time.monotonic() + DRAIN_MAX
        while time.monotonic() < end:
            if not any(len(r) for r in rings) or self._reap() or self.signals.requested:
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
                    last = h.message[1].strip().splitlines()[-1:] if h.message else []  # the exception's line
                    self._stacks_of_all(f"panic on CPU {h.cpu}" + (f": {last[0]}" if last else ""))
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

    def killed_mid_operation(self) -> list[int]:
        """CPUs whose process ended anywhere but at the zonelimit safe point or the end
        of its loop: SIGKILLed stuck at the stop, killed by a signal, or left by an
        exception (a panic included).  What they held is set aside by the audit."""
        out = []
        for h in self.workers:
            code = h.proc.exitcode
            if h.killed_asleep:
                continue
            if h.killed_stuck or (code is not None and code != 0):
                out.append(h.cpu)
        return out

    def _witness(self) -> int:
        """WITNESS findings after an --invariants run.  A checker that fails (damaged
        tables) is the tester's failure: it raises, and the run ends ``error``, never
        with "0 lock-order findings"."""
        if not self.cfg.invariants:
            return 0
        return len(findings(self.uma.view))

    def _outcome(self, error: str | None) -> RunOutcome:
        """Audit the quiescent arena and gather everything run.json needs."""
        cfg, st, uma = self.cfg, self.state, self.uma
        end = st.stopped_at if st.stopped_at is not None else time.monotonic()
        duration = end - st.t0 if st.t0 else 0.0
        if self.dead and error is None:
            error = "a worker died:\n" + "\n".join(self.dead)
        report = None
        panics: list[Any] = []
        payload_errors = lock_order = 0
        killed = self.killed_mid_operation()
        o = RunOutcome(duration_s=duration, verdict="error", exit_code=3, verdict_detail="", audit={},
                       start_method=START_METHOD, mapping=dict(self.mapping), peak=empty_peak())
        o.planned_s = planned_duration(cfg)
        if uma is not None:
            if st.wedge is not None or st.stall is not None or st.panicked:  # kept for report --audit
                postmortem.snapshot_arena(uma, self.out)
            try:
                panics = uma.panics()
                o.counters = counter_totals(uma)
                payload_errors = o.counters["payload_errors"]
                o.per_cpu_ops = uma.cpu_ops()
                o.stats = uma.stats().to_dict()
                report = uma.audit(held_mbufs(uma, self.specs))
                if killed:
                    report.set_aside(killed, audit.KILLED_HAND)
            except Exception:  # noqa: BLE001 - a damaged arena must still give a result
                tb = traceback.format_exc()
                log.error("audit failed:\n%s", tb)
                error = error or "the audit failed:\n" + tb
            try:
                lock_order = self._witness()
            except Exception:  # noqa: BLE001 - a checker that fails is the tester's failure
                tb = traceback.format_exc()
                log.error("WITNESS checker failed:\n%s", tb)
                error = error or "the WITNESS checker failed:\n" + tb
        signal_name = self.signals.name
        at = (self.signals.at - st.t0) if (self.signals.at is not None and st.t0) else 0.0
        interrupted = f"interrupted at {min(at, duration):.1f} s of {o.planned_s:g} s by {signal_name}"
        ctrl = self.controller
        if signal_name and ctrl is not None and ctrl.by_step and uma is not None:
            ctl = uma.view("sc_ctl")  # the step at which the workers saw the stop
            stopped = int(ctl[sched.schedule.CTL_STOPSTEP]) or int(ctl[sched.CTL_STEP])
            interrupted = f"interrupted at step {stopped:,} of {ctrl.plan.budget:,} by {signal_name}"
        verdict = audit.assess(report, payload_errors=payload_errors, panics=panics,
                               wedged=st.wedge is not None, lock_order_findings=lock_order, error=error,
                               stalled=st.stall.reason() if st.stall is not None else None,
                               signal=signal_name, interrupted=interrupted)
        o.verdict, o.verdict_detail, o.audit = verdict.verdict, verdict.reason, verdict.block
        o.exit_code = verdict.exit_code
        o.audit_verdict, o.audit_detail = verdict.audit_verdict, verdict.audit_reason
        if self.sampler is not None:
            o.peak, o.rounds = dict(self.sampler.peak), self.sampler.rounds
        o.wedge = st.wedge.to_dict() if st.wedge else None
        o.stall = st.stall.to_dict() if st.stall else None
        o.locks = uma.lock_profile() if (uma is not None and cfg.lock_profile) else []
        o.stop_reason = "interrupted" if signal_name else st.stop_reason
        o.signal = signal_name
        o.signal_at_s = round(at, 3) if signal_name else None
        o.workers_gone_s = st.workers_gone_s
        o.startup_s = st.startup_s
        o.killed_mid_operation = killed
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
