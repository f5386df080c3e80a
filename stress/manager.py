"""The manager: one run, from the arena to the verdict.

Who sends what to whom::

    manager                                   arena (memfd)                 worker k (fork)
    -------                                   -------------                 ---------------
    Uma.create(UmaConfig(extra=rings...)) --> allocator + rings + wl_ctl
    fork N workers (start method "fork") ------------------------------------> pin, uma.cpu(k)
    every ~0.05 s: watchdog (sleepers, ops) <-- cpu_wchan, cpu_ops <--------- m_getcl/m_freem...
    every --interval: uma.stats() -> samples.csv, netstat -m lines
    every --trim-interval: policy callout -> uma.observe / uma.apply
    round schedule: wl_ctl[RUN/ROUND/PHASE] --------------------------------> load on / idle
    stop: wl_ctl RUN=0 (drain), uma.request_stop() -------------------------> loop ends, exit 0
          SIGKILL the CPUs asleep in zonelimit (their sleep cannot be woken)
    worker's traceback <----------------------------------- pipe (text) ---- on an exception
    uma.audit(held: every ring and slot array) -> stress.audit.assess -> verdict
    run folder: run.json, samples.csv, netstat.txt, plot.png, run.log

Why the ``fork`` start method, explicitly: the allocator's locks and per-CPU
semaphores come from a fork context, whose POSIX semaphores are unlinked at creation,
so nothing can leak to /dev/shm even if every process is SIGKILLed (spawn and
forkserver leave ``sem.mp-*`` files behind, architecture.md).  Fork also hands the
workers the arena mapping (a memfd: no name, freed by the kernel with the last
mapping) and is 1.3 ms per child instead of 30-70 ms.  Python 3.14 changes the default,
hence the explicit context.  The manager starts no thread before forking.

Nothing is left behind on any exit path: workers are daemonic, die with the manager
(PR_SET_PDEATHSIG) and are SIGKILLed and reaped in a ``finally``; the arena is closed
there too.  SIGINT and SIGTERM only set a flag: the loop stops the run cleanly, audits
and writes a partial result (exit 130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import platform
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from allocator import ZONE_NAMES, Uma, UmaConfig, netstat_m_lines
from allocator.policy.callout import TrimCallout
from allocator.witness import findings
from stress import audit as audit_mod
from stress import results, sched
from stress.config import RunConfig
from stress.pinning import PinningError, cpu_map, format_cpulist, usable_cores
from stress.ring import RING_PREFIX, Ring, held_mbufs, reset_all
from stress.watchdog import Watchdog, Wedge, describe_death
from stress.worker import EXIT_PANIC, worker_main
from stress.workloads import arena_arrays
from stress.workloads.common import (
    CTL_PHASE,
    CTL_ROUND,
    CTL_RUN,
    STAT_ALLOC_FAILS,
    STAT_BYTES,
    STAT_DROPS,
    STAT_PACKETS,
    STAT_PAYLOAD_ERRORS,
    STAT_SENT,
    STAT_WORDS,
)

log = logging.getLogger("zonelimit")

START_METHOD = "fork"  #: see the module docstring
WATCH_PERIOD = 0.05  #: seconds between two watchdog looks
DRAIN_MAX = 0.5  #: seconds the final drain (load off, in-flight completes) may take
STOP_GRACE = 1.5  #: seconds workers get to see the stop flag before SIGKILL
SLEEPER_SETTLE = 0.02  #: seconds between "only sleepers are left" and killing them
PHASED_WORKLOADS = ("mixed", "netperf-nfs")  #: workloads whose wl_ctl[CTL_PHASE] the manager sets
EXIT_SIGINT = 130
EXIT_SIGTERM = 143

SAMPLE_COLUMNS = [
    "t", "round", "running",
    "mbufs_current", "mbufs_cache", "mbufs_total",
    "clusters_current", "clusters_cache", "clusters_total", "clusters_max",
    "packets_current", "packets_cache",
    *[f"{z}_{c}" for z in ZONE_NAMES for c in ("used", "free", "req", "fail", "sleep")],
    "ops", "ops_per_s", "packets", "sleepers", "cluster_keg_free",
]


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
        sched_locks=cfg.sched in ("pct", "replay"),
        lock_profile=cfg.lock_profile,
        page_budget=cfg.page_budget,
    )


def planned_duration(cfg: RunConfig) -> float:
    """Seconds of load: the rounds (each round plus its idle) or ``--duration``."""
    if cfg.rounds > 0:
        return cfg.rounds * (cfg.round_length + cfg.idle)
    return cfg.duration


@dataclass
class WorkerHandle:
    """The manager's view of worker k."""

    cpu: int
    core: int
    proc: Any  # multiprocessing.Process
    conn: Any  # read end of the worker's pipe
    message: tuple[str, str] | None = None
    killed_asleep: bool = False
    killed_stuck: bool = False


@dataclass
class RunState:
    """Everything the supervision loop accumulates."""

    t0: float = 0.0
    stop_reason: str = "completed"
    signal_name: str | None = None
    wedge: Wedge | None = None
    dead: list[str] = field(default_factory=list)
    panicked: bool = False
    peak: dict[str, int] = field(default_factory=lambda: {
        "clusters_current": 0, "clusters_total": 0, "packet_cache": 0, "mbufs_current": 0})
    rounds: list[dict[str, Any]] = field(default_factory=list)
    samples: int = 0


class Manager:
    """One run: build, fork, supervise, stop, audit, write.  Use :func:`execute`."""

    def __init__(self, cfg: RunConfig, out_dir: Path, echo: Callable[[str], None] | None) -> None:
        self.cfg = cfg
        self.out = Path(out_dir)
        self.echo = echo
        self.state = RunState()
        self.workers: list[WorkerHandle] = []
        self.uma: Any = None
        self.specs: list[Any] = []
        self.mapping: dict[int, int] = {}
        self.progress: Any = None
        self.trim: TrimCallout | None = None
        self.profile_handle: Any = None
        self.profile_lines: list[str] = []
        self._last_ops: tuple[float, int] = (0.0, 0)
        self._log_handler: logging.Handler | None = None

    # --- output ---------------------------------------------------------------------------
    def say(self, lines: list[str]) -> None:
        """Print live lines (through the progress indicator) when a person is watching."""
        if self.echo is None:
            return
        if self.progress is not None:
            self.progress.clear()
        for line in lines:
            self.echo(line)

    # --- the run ----------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Execute the run and return the run.json document (already written)."""
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        self._start_logging()
        doc: dict[str, Any]
        error: str | None = None
        controller = None
        old_handlers = self._install_signals()  # until the result is written: no traceback on Ctrl-C
        try:
            self.mapping = cpu_map(cfg.cpus, cfg.oversubscribe)
            self.specs = arena_arrays(cfg) + list(sched.sched_arrays(cfg))
            controller = sched.Controller(cfg, self._replay_schedule())
            try:
                self.uma = Uma.create(uma_config(cfg, tuple(self.specs)))
            except (OSError, ValueError, MemoryError) as exc:
                raise ArenaError(f"the arena could not be created: {exc}") from exc
            reset_all(self.uma, self.specs)
            controller.prepare(self.uma)
            if cfg.profile:  # py-spy must attach before the fork to follow the workers
                from stress import profile

                self.profile_handle = profile.start(self.out, os.getpid())
            self._fork_workers()
            # After the fork (a fork while the import thread holds the import lock would
            # lock imports up in the child): import matplotlib while the workers run.
            results.preload_plot()
            self._supervise()
        except (ArenaError, PinningError) as exc:
            error = str(exc)
        except Exception:  # noqa: BLE001 - the tester failed: report it, clean up, exit 3
            error = "the manager failed:\n" + traceback.format_exc()
        finally:
            self._stop_workers()
            self._stop_profile()
        try:
            doc = self._finish(error, controller)
        finally:
            if self.uma is not None:
                self.uma.close()
                self.uma = None
            self._stop_logging()
            self._restore_signals(old_handlers)
        return doc

    def _stop_profile(self) -> None:
        """Stop py-spy (after the workers are joined) and keep its lines for the summary."""
        if self.profile_handle is None:
            return
        from stress import profile

        try:
            self.profile_lines = profile.stop(
                self.profile_handle, roles={h.proc.pid: f"cpu{h.cpu}" for h in self.workers})
        except Exception:  # noqa: BLE001 - a profile must never cost the run its result
            self.profile_lines = ["profile: failed:", *traceback.format_exc().splitlines()]
        self.say(self.profile_lines)

    def _replay_schedule(self) -> Any:
        """The schedule to follow in ``--sched replay`` (from RunConfig.replay_from)."""
        src = self.cfg.replay_from
        if self.cfg.sched == "replay" and src:
            return sched.load_schedule(Path(src))
        return None

    def _start_logging(self) -> None:
        """run.log: one inherited O_APPEND FileHandler for the manager and every worker."""
        handler = logging.FileHandler(self.out / "run.log", mode="a", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"))
        root = logging.getLogger("zonelimit")
        root.addHandler(handler)
        root.setLevel(logging.DEBUG if self.cfg.verbosity > 0 else logging.INFO)
        self._log_handler = handler

    def _stop_logging(self) -> None:
        if self._log_handler is not None:
            logging.getLogger("zonelimit").removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None

    def _fork_workers(self) -> None:
        """One process per CPU, fork start method, daemonic, pinned by itself after fork."""
        ctx: Any = multiprocessing.get_context(START_METHOD)
        me = os.getpid()
        ctl = self.uma.view("wl_ctl")
        ctl[CTL_RUN], ctl[CTL_ROUND], ctl[CTL_PHASE] = 1, 0, 0
        self.state.t0 = time.monotonic()
        for k in range(self.cfg.cpus):
            r, w = ctx.Pipe(duplex=False)
            p = ctx.Process(target=worker_main, name=f"zonelimit-cpu{k}",
                            args=(k, self.mapping[k], self.uma, self.cfg, w, me), daemon=True)
            p.start()
            w.close()
            self.workers.append(WorkerHandle(k, self.mapping[k], p, r))
        log.info("started %d workers: %s", len(self.workers),
                 ", ".join(f"CPU {h.cpu} pid {h.proc.pid} core {h.core}" for h in self.workers))

    def _supervise(self) -> None:
        """The loop: rounds, sampling, trimming, watchdog, dead workers, signals."""
        cfg, st, uma = self.cfg, self.state, self.uma
        from stress.monitor import Progress

        planned = planned_duration(cfg)
        self.progress = Progress(planned, enabled=None if self.echo is not None else False)
        ctl = uma.view("wl_ctl")
        dog = Watchdog(uma, cfg.wedge_timeout, st.t0)
        # `none` needs the callout only to answer vm_lowmem, which needs a page budget.
        use_trim = (cfg.policy != "none" or cfg.page_budget > 0) and cfg.sched not in ("pct", "replay")
        trim = TrimCallout(uma, cfg.policy, cfg.policy_params) if use_trim else None
        self.trim = trim
        sampler = results.SampleWriter(self.out / results.SAMPLES_CSV, SAMPLE_COLUMNS)
        self._last_ops = (st.t0, 0)
        next_sample = st.t0 + cfg.interval
        next_trim = st.t0 + cfg.trim_interval
        period = cfg.round_length + cfg.idle
        cur_round = 0
        try:
            self._sample(sampler, st.t0, cur_round, True, echo_netstat=False)
            while True:
                now = time.monotonic()
                el = now - st.t0
                if st.signal_name:
                    st.stop_reason = st.signal_name
                    break
                if self._reap():
                    break
                if el >= planned:
                    break
                if uma.stop_requested() and not any(h.proc.exitcode is None for h in self.workers):
                    break  # a replay reached the recorded stop and every CPU has left
                # the round schedule
                running = True
                if cfg.rounds > 0:
                    r = min(int(el // period), cfg.rounds - 1)
                    running = (el - r * period) < cfg.round_length
                    if r != cur_round:  # the previous round (and its idle) is over
                        self._round_report(cur_round, now)
                        cur_round = r
                    ctl[CTL_ROUND] = r
                ctl[CTL_RUN] = 1 if running else 0
                ctl[CTL_PHASE] = self._phase(el, cur_round)
                # sampling and the callout
                if now >= next_sample:
                    self._sample(sampler, now, cur_round, running, echo_netstat=cfg.rounds == 0)
                    next_sample += cfg.interval * max(1, int((now - next_sample) // cfg.interval) + 1)
                if trim is not None and now >= next_trim:
                    trim.tick()
                    next_trim = now + cfg.trim_interval
                # the watchdog
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
            self._sample(sampler, now, cur_round, False, echo_netstat=False)
            if cfg.rounds > 0 and st.stop_reason == "completed":
                self._round_report(cur_round, now)
            elif cfg.rounds > 0 or st.stop_reason != "completed":
                self._netstat_now(now, f"at stop ({st.stop_reason})")
        finally:
            sampler.close()
            self.progress.close()

    def _phase(self, elapsed: float, cur_round: int) -> int:
        """Two-phase workloads (mixed, netperf-nfs): phase 0 for the first half of the
        rounds (or of the time without rounds), then phase 1."""
        if self.cfg.workload not in PHASED_WORKLOADS:
            return 0
        if self.cfg.rounds > 0:
            return 1 if cur_round >= (self.cfg.rounds + 1) // 2 else 0
        return 1 if elapsed >= self.cfg.duration / 2 else 0

    def _drain(self) -> None:
        """Load off; wait (briefly) until nothing is in flight between CPUs."""
        self.uma.view("wl_ctl")[CTL_RUN] = 0
        rings = [Ring(self.uma.view(s.name), s.name) for s in self.specs
                 if s.name.startswith(RING_PREFIX) and "rxd" not in s.name]
        end = time.monotonic() + DRAIN_MAX
        while time.monotonic() < end:
            if not any(len(r) for r in rings) or self._reap():
                return
            time.sleep(0.01)

    # --- signals ---------------------------------------------------------------------------
    def _install_signals(self) -> dict[int, Any]:
        """SIGINT/SIGTERM only set a flag (main thread only: compare/race may run us elsewhere)."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        old: dict[int, Any] = {}

        def handler(signum: int, frame: Any) -> None:
            self.state.signal_name = signal.Signals(signum).name

        for s in (signal.SIGINT, signal.SIGTERM):
            old[s] = signal.signal(s, handler)
        return old

    @staticmethod
    def _restore_signals(old: dict[int, Any]) -> None:
        for s, h in old.items():
            signal.signal(s, h)

    # --- workers ---------------------------------------------------------------------------
    def _reap(self) -> bool:
        """Collect messages and deaths; True when a worker died during the run."""
        died = False
        for h in self.workers:
            self._read_message(h)
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
                if not any(d.startswith(f"CPU {h.cpu} ") for d in self.state.dead):
                    text = describe_death(h.cpu, h.proc.pid, code, h.message[1] if h.message else None,
                                          self.uma.lock_holders())
                    self.state.dead.append(text)
                    self.state.stop_reason = "worker died"
                    log.error("%s", text)
                died = True
        return died

    @staticmethod
    def _read_message(h: WorkerHandle) -> None:
        try:
            while h.message is None and h.conn.poll():
                h.message = h.conn.recv()
        except (EOFError, OSError):
            pass

    def _stop_workers(self) -> None:
        """Stop flag; let every CPU that is not asleep stop by itself; then SIGKILL the
        CPUs still asleep in zonelimit (nobody is left to wake them, and they sleep at a
        safe point, holding no lock) and any CPU stuck past the grace period; reap all.

        Sleepers are killed only once the others are gone: a CPU being woken by another
        CPU's free re-takes the keg lock, and killing it there would leave the lock held."""
        if not self.workers:
            return
        uma = self.uma
        if uma is not None:
            uma.request_stop()
        wchan = uma.view("cpu_wchan") if uma is not None else None

        def asleep(h: WorkerHandle) -> bool:
            return bool(wchan is not None and wchan[h.cpu])

        alive = [h for h in self.workers if h.proc.is_alive()]
        end = time.monotonic() + STOP_GRACE
        while alive and time.monotonic() < end:
            awake = [h for h in alive if not asleep(h)]
            if not awake:
                time.sleep(SLEEPER_SETTLE)  # a CPU woken just now clears its wchan and runs on
                for h in alive:
                    if asleep(h) and h.proc.is_alive():
                        h.killed_asleep = True
                        log.info("CPU %d (pid %d) asleep in zonelimit at stop: SIGKILL", h.cpu, h.proc.pid)
                        _kill(h.proc.pid)
            multiprocessing.connection.wait([h.proc.sentinel for h in alive], timeout=0.05)
            alive = [h for h in alive if h.proc.is_alive()]
        for h in alive:
            if asleep(h):
                h.killed_asleep = True
            else:
                h.killed_stuck = True
                log.warning("CPU %d (pid %d) did not stop within %.1f s: SIGKILL", h.cpu, h.proc.pid, STOP_GRACE)
            _kill(h.proc.pid)
        for h in self.workers:
            h.proc.join(timeout=5)
            self._read_message(h)
            if h.proc.exitcode is None:  # cannot happen after SIGKILL; never hang on it
                _kill(h.proc.pid)
                h.proc.join(timeout=1)
        if uma is not None and not self.state.dead:
            self._reap()  # a worker that failed while stopping still reports
        for h in self.workers:
            h.conn.close()

    # --- sampling ---------------------------------------------------------------------------
    def _sample(self, sampler: results.SampleWriter, now: float, rnd: int, running: bool,
                echo_netstat: bool) -> None:
        """One row of samples.csv; the netstat -m lines per interval when there are no rounds."""
        uma, st = self.uma, self.state
        stats = uma.stats()
        n = stats.netstat
        ops = sum(uma.cpu_ops())
        t_prev, ops_prev = self._last_ops
        rate = (ops - ops_prev) / (now - t_prev) if now > t_prev else 0.0
        self._last_ops = (now, ops)
        row: dict[str, float] = {
            "t": round(now - st.t0, 3), "round": rnd, "running": int(running),
            "mbufs_current": n.mbufs_current, "mbufs_cache": n.mbufs_cache, "mbufs_total": n.mbufs_total,
            "clusters_current": n.clusters_current, "clusters_cache": n.clusters_cache,
            "clusters_total": n.clusters_total, "clusters_max": n.clusters_max,
            "packets_current": n.packets_current, "packets_cache": n.packets_cache,
            "ops": ops, "ops_per_s": round(rate, 1), "packets": self._stat_sum(STAT_PACKETS),
            "sleepers": len(uma.sleepers()), "cluster_keg_free": uma.keg_free(1),
        }
        for z in stats.zones:
            for c in ("used", "free", "req", "fail", "sleep"):
                row[f"{z.name}_{c}"] = getattr(z, c)
        sampler.write(row)
        st.samples += 1
        pk = st.peak
        pk["clusters_current"] = max(pk["clusters_current"], n.clusters_current)
        pk["clusters_total"] = max(pk["clusters_total"], n.clusters_total)
        pk["packet_cache"] = max(pk["packet_cache"], n.packets_cache)
        pk["mbufs_current"] = max(pk["mbufs_current"], n.mbufs_current)
        if echo_netstat:
            lines = netstat_m_lines(stats, full=self.cfg.verbosity > 0)
            results.append_netstat(self.out, [f"# t={now - st.t0:.1f}s", *lines])
            self.say([f"t={now - st.t0:5.1f}s  " + lines[0], *["            " + ln for ln in lines[1:]]])

    def _round_report(self, rnd: int, now: float) -> None:
        """netstat -m after a round (and its idle), as between two netperf runs in 2005."""
        stats = self.uma.stats()
        lines = netstat_m_lines(stats, full=self.cfg.verbosity > 0)
        n = stats.netstat
        self.state.rounds.append({"round": rnd + 1, "t": round(now - self.state.t0, 3),
                                  "mbufs": [n.mbufs_current, n.mbufs_cache, n.mbufs_total],
                                  "clusters": [n.clusters_current, n.clusters_cache, n.clusters_total,
                                               n.clusters_max]})
        results.append_netstat(self.out, [f"# after round {rnd + 1} (t={now - self.state.t0:.1f}s)", *lines])
        self.say([f"after round {rnd + 1}:", *["  " + ln for ln in lines]])

    def _netstat_now(self, now: float, what: str) -> None:
        lines = netstat_m_lines(self.uma.stats(), full=False)
        results.append_netstat(self.out, [f"# {what} (t={now - self.state.t0:.1f}s)", *lines])
        self.say([f"{what}:", *["  " + ln for ln in lines]])

    def _workload_block(self, duration: float) -> dict[str, Any]:
        """run.json ``workload``: what the consumers counted (wl_stat), summed over CPUs.

        ``packets`` is what the workload's consumers verified: netperf segments
        transmitted by the driver, RPCs completed (nfs), objects freed by a consumer
        (xmalloc) or adopted (larson).
        """
        d = max(duration, 1e-9)
        packets = self._stat_sum(STAT_PACKETS)
        return {
            "name": self.cfg.workload,
            "packets": packets,
            "packets_per_s": round(packets / d, 1),
            "packets_per_s_per_cpu": round(packets / d / max(self.cfg.cpus, 1), 1),
            "sent": self._stat_sum(STAT_SENT),
            "bytes_verified": self._stat_sum(STAT_BYTES),
            "payload_errors": self._stat_sum(STAT_PAYLOAD_ERRORS),
            "alloc_fails": self._stat_sum(STAT_ALLOC_FAILS),
            "rx_drops": self._stat_sum(STAT_DROPS),
        }

    def _stat_sum(self, word: int) -> int:
        a = self.uma.np("wl_stat")
        return int(a[word::STAT_WORDS].sum())

    # --- the end ------------------------------------------------------------------------------
    def _finish(self, error: str | None, controller: Any) -> dict[str, Any]:
        """Audit, verdict, run.json, plot."""
        cfg, st, uma = self.cfg, self.state, self.uma
        stop_t = time.monotonic()
        duration = stop_t - st.t0 if st.t0 else 0.0
        if st.dead and error is None:
            error = "a worker died:\n" + "\n".join(st.dead)
        report = None
        panics: list[Any] = []
        payload_errors = 0
        lock_order = 0
        stats_doc: dict[str, Any] = {"zones": [], "netstat": {}}
        per_cpu_ops: list[int] = []
        packets = 0
        if uma is not None:
            try:
                panics = uma.panics()
                payload_errors = self._stat_sum(STAT_PAYLOAD_ERRORS)
                packets = self._stat_sum(STAT_PACKETS)
                per_cpu_ops = uma.cpu_ops()
                stats_doc = uma.stats().to_dict()
                lock_order = _witness_findings(uma, cfg)
                report = uma.audit(held_mbufs(uma, self.specs))
            except Exception:  # noqa: BLE001 - a damaged arena must still give a result
                tb = traceback.format_exc()
                log.error("audit failed:\n%s", tb)
                if error is None:
                    error = "the audit failed:\n" + tb
        verdict = audit_mod.assess(report, payload_errors=payload_errors, panics=panics,
                                   wedged=st.wedge is not None, lock_order_findings=lock_order, error=error)
        code = verdict.exit_code
        if st.signal_name == "SIGINT":
            code = EXIT_SIGINT
        elif st.signal_name == "SIGTERM":
            code = EXIT_SIGTERM
        total_ops = sum(per_cpu_ops)
        d = max(duration, 1e-9)
        usable = usable_cores()
        doc: dict[str, Any] = {
            "format": results.RUN_FORMAT,
            "version": results.package_version(),
            "config": cfg.to_dict(),
            "host": {"cores": len(usable), "usable_cores": format_cpulist(usable),
                     "python": platform.python_version(), "platform": platform.platform(),
                     "start_method": START_METHOD,
                     "pinning": {str(k): c for k, c in self.mapping.items()}},
            "duration_s": round(duration, 3),
            "verdict": verdict.verdict,
            "exit_code": code,
            "verdict_detail": verdict.reason,
            "ops": {"total": total_ops, "per_s": round(total_ops / d, 1),
                    "per_cpu_per_s": [round(x / d, 1) for x in per_cpu_ops],
                    "packets": packets, "packets_per_s": round(packets / d, 1),
                    "packets_per_cpu_per_s": round(packets / d / max(cfg.cpus, 1), 1)},
            "zones": stats_doc["zones"],
            "netstat": stats_doc["netstat"],
            "peak": dict(st.peak),
            "wedge": st.wedge.to_dict() if st.wedge else None,
            "audit": verdict.block,
            "locks": uma.lock_profile() if (uma is not None and cfg.lock_profile) else [],
            "samples": results.SAMPLES_CSV,
            "rounds": st.rounds,
            "stop": {"reason": st.stop_reason, "signal": st.signal_name,
                     "killed_asleep": [h.cpu for h in self.workers if h.killed_asleep],
                     "killed_stuck": [h.cpu for h in self.workers if h.killed_stuck]},
            "workers": [{"cpu": h.cpu, "pid": h.proc.pid, "core": h.core, "exitcode": h.proc.exitcode}
                        for h in self.workers],
        }
        if uma is not None:
            doc["workload"] = self._workload_block(duration)
        if self.profile_lines:
            doc["profile"] = self.profile_lines
        if self.trim is not None:
            doc["trim"] = self.trim.summary()
        if error:
            doc["error"] = error
        if report is not None and uma is not None:
            doc["audit_lines"] = report.summary_lines()
        if controller is not None and uma is not None and cfg.sched != "free":
            try:
                controller.save(uma, self.out)
                doc["schedule"] = controller.summary(uma)
            except Exception:  # noqa: BLE001
                log.error("schedule not saved:\n%s", traceback.format_exc())
        results.write_run_json(self.out, doc)
        if not (self.out / results.NETSTAT_TXT).exists():
            results.append_netstat(self.out, ["# no netstat -m sample was taken"])
        try:
            results.plot_run(self.out)
        except Exception:  # noqa: BLE001 - a missing plot must not hide the verdict
            log.error("plot failed:\n%s", traceback.format_exc())
        log.info("verdict %s exit %d: %s", verdict.verdict, code, verdict.reason)
        return doc


class ArenaError(Exception):
    """The arena could not be created (exit 3)."""


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _witness_findings(uma: Any, cfg: RunConfig) -> int:
    """Lock-order reversals recorded by WITNESS (with --invariants), 0 otherwise."""
    if not cfg.invariants:
        return 0
    try:
        return len(findings(uma.view))
    except Exception:  # noqa: BLE001
        return 0


def execute(cfg: RunConfig, out_dir: Path, echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run one run of ``cfg``, write its folder ``out_dir``, and return the run.json document.

    ``echo`` receives the live lines (netstat -m per interval or per round); None prints
    nothing.  Used by ``run`` (through :func:`main_run`), ``compare`` and ``race``.
    """
    return Manager(cfg, out_dir, echo).run()


def main_run(cfg: RunConfig) -> int:
    """``python -m stress run``: print the configuration and the CPU map, run, print the
    summary (or only run.json with --json), return the exit code."""
    from stress import monitor

    try:
        mapping = cpu_map(cfg.cpus, cfg.oversubscribe)
    except PinningError as exc:
        print(f"stress: error: argument --cpus: {exc}", file=sys.stderr)
        return 2
    folder = Path(cfg.out) if cfg.out else results.default_run_dir(cfg)
    talk = not cfg.json and cfg.verbosity >= 0

    def echo(line: str) -> None:
        print(line, flush=True)

    if talk:
        echo(monitor.config_line(cfg))
        for line in monitor.mapping_lines(mapping):
            echo(line)
        if cfg.oversubscribe and cfg.cpus > len(usable_cores()):
            print("warning: more CPUs than cores: workers time-share cores and race less", file=sys.stderr)
    doc = execute(cfg, folder, echo if talk else None)
    if cfg.json:
        sys.stdout.write(results.run_json_text(doc))
        sys.stdout.flush()
    elif cfg.verbosity < 0:
        for line in monitor.verdict_lines(doc) + [f"run folder: {folder}"]:
            echo(line)
    else:
        for line in monitor.summary_lines(doc, folder):
            echo(line)
    return int(doc["exit_code"])


def measure_p6_p7(cpus: int = 2, duration: float = 3.0, repeat: int = 3,
                  out_root: Path | None = None) -> dict[str, Any]:
    """Performance figures P6 and P7 of performance.md, for the bench command.

    P6: netperf packets per second per CPU at ``cpus`` (median of ``repeat`` runs, each
    ``duration`` s, modern era) -- from run.json ``ops.packets_per_cpu_per_s``.
    P7: start-and-stop overhead: wall time of ``python -m stress --cpus 2 --duration 1``
    minus 1 s (median of ``repeat``), measured as a user sees it, in a fresh interpreter.
    Returns ``{"p6_packets_per_cpu_per_s": .., "p6_runs": [..], "p7_overhead_s": ..,
    "p7_runs": [..], "p7_target_s": 1.5, "p7_met": bool}``.
    """
    import statistics
    import subprocess
    import tempfile

    p6: list[float] = []
    p7: list[float] = []
    with tempfile.TemporaryDirectory(prefix="zl-bench-", dir=out_root) as tmp:
        for i in range(repeat):
            cfg = RunConfig(cpus=cpus, duration=duration, out=str(Path(tmp) / f"p6-{i}"))
            doc = execute(cfg, Path(cfg.out or tmp))
            p6.append(float(doc["ops"]["packets_per_cpu_per_s"]))
        for i in range(repeat):
            t = time.monotonic()
            subprocess.run([sys.executable, "-m", "stress", "--cpus", "2", "--duration", "1", "--quiet",
                            "--out", str(Path(tmp) / f"p7-{i}")], check=False, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            p7.append(time.monotonic() - t - 1.0)
    o = statistics.median(p7)
    return {"p6_packets_per_cpu_per_s": statistics.median(p6), "p6_runs": p6,
            "p7_overhead_s": o, "p7_runs": p7, "p7_target_s": 1.5, "p7_met": o <= 1.5}
