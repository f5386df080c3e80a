"""``--jobs J``: up to J runs at once on this host, each a ``python -m stress run`` child
on its own disjoint lease of cores.

    JobsExecutor.run(requests)                              (the command's main thread)
      while requests wait and fewer than J run:
        lease = leases.try_acquire(cores the run needs)      None: wait for a run to end
        ChildRun.start(request, lease)  --->  python -m stress run --run-config - --cores L --out DIR
                                              (takes the lease over: it lives as long as the run)
      a child ended  --->  DIR/run.json read  --->  yield (request, document)
                           (none: yield (request, LostRun(why)); the other runs go on)
      cores held by others, none of ours running, for --lease-wait seconds: every waiting
        request comes back as LostRun("not started: ... leased by pid P"); nothing else starts
      a stop (SIGINT/SIGTERM seen by the command): no new child; the running ones get the
        signal (a run stops cleanly and writes its folder, exit 130/143) and are waited for

Why children, not threads or a pool: a run forks its workers, and fork inside a
threaded process copies locks in whatever state other threads left them; a fresh
interpreter per run is what a person starting runs side by side by hand gets, so
``--jobs`` adds nothing a run does not already survive.  The same :class:`ChildRun` runs a
Dask task's run on a worker host (stress/engine/cluster.py).

Every child dies with this process, and its lease with it: a lifeline pipe whose write
end closes when this process dies (stress/engine/lifeline.py; not PR_SET_PDEATHSIG,
which follows the forking *thread*: a Dask task's thread may end before the worker does).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from stress.cpulist import format_cpulist, usable_cores
from stress.engine import leases
from stress.engine.executor import LostRun, Outcome, RunRequest, drop_if_empty
from stress.engine.lifeline import Lifeline
from stress.engine.stopping import StopSignals
from stress.options import EX_SIGINT, EX_SIGTERM, UsageError

POLL_S = 0.05  #: how often the scheduler looks at its children
STDERR_TAIL = 2000  #: characters of a failed child's stderr kept in the error


class ChildRunError(Exception):
    """A child run ended without writing run.json (a crash of the tester, or bad input)."""


def cores_per_run(cpus: int, jobs: int, oversubscribe: bool, ncores: int | None = None) -> int:
    """The cores a run of ``cpus`` CPUs leases when ``jobs`` run at once: all it can use
    (at most the usable cores: a run oversubscribed by design holds what there is), or,
    with --oversubscribe and not enough cores for all, an equal share."""
    n = len(usable_cores()) if ncores is None else ncores
    want = min(cpus, n)
    if jobs * want > n and oversubscribe:
        return max(1, min(want, n // jobs))
    return want


def check_jobs(jobs: int, cpus: Iterable[int], oversubscribe: bool) -> None:
    """J runs of the widest configuration must fit the usable cores, unless --oversubscribe
    (two runs on one core time-share it: neither races as an SMP machine does)."""
    cores = usable_cores()
    widest = max(cpus, default=1)
    need = jobs * min(widest, len(cores))
    if jobs > 1 and need > len(cores) and not oversubscribe:
        raise UsageError(f"--jobs: {jobs} runs of {min(widest, len(cores))} cores need {need} cores, more than the "
                         f"{len(cores)} usable ({format_cpulist(cores)}); lower --jobs or add --oversubscribe")


def child_env(lease: leases.Lease) -> dict[str, str]:
    """The child's environment: ours, plus the lease (and its holder, us) it takes over."""
    return {**os.environ, leases.HANDOVER_ENV: lease.handover()}


def child_argv(lease_cores: list[int], folder: Path) -> list[str]:
    return [sys.executable, "-m", "stress", "run", "--run-config", "-", "--cores", format_cpulist(lease_cores),
            "--out", str(folder)]


class ChildRun:
    """One request as a ``python -m stress run`` child in a lease taken for it."""

    def __init__(self, req: RunRequest, lease: leases.Lease, proc: subprocess.Popen[bytes], err: IO[bytes],
                 line: Lifeline) -> None:
        self.req, self.lease, self.proc, self.err, self.line = req, lease, proc, err, line
        self.signalled = False

    @staticmethod
    def start(req: RunRequest, lease: leases.Lease, oversubscribe: bool = False) -> ChildRun:
        """Start the child; it reads its configuration on stdin and takes the lease over."""
        cfg = req.config.replace(out=str(req.folder), json=False, verbosity=-1)
        if cfg.cpus > len(lease.cores) and not cfg.oversubscribe:
            cfg = cfg.replace(oversubscribe=oversubscribe)
        err = tempfile.TemporaryFile()  # unlinked: nothing is left behind, whatever happens
        line = Lifeline()  # the child dies with this process, whichever thread starts it
        try:
            proc = subprocess.Popen(child_argv(lease.cores, req.folder), stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, stderr=err, env={**child_env(lease), **line.env()},
                                    pass_fds=(line.read_fd,))
        except BaseException:
            line.close()
            err.close()
            raise
        line.started()
        assert proc.stdin is not None
        with proc.stdin:
            proc.stdin.write(json.dumps(cfg.to_dict()).encode())
        return ChildRun(req, lease, proc, err, line)

    def done(self) -> bool:
        return self.proc.poll() is not None

    def signal(self, signum: int) -> None:
        """Pass a stop on: the run stops cleanly and writes its folder (exit 130 / 143)."""
        if not self.signalled and self.proc.poll() is None:
            self.signalled = True
            self.proc.send_signal(signum)

    def stopped_before_it_began(self) -> bool:
        """We passed it a stop and it ended as a stopped command does (130 / 143) without
        run.json: the signal came before its run started, so there is nothing to keep
        (not a lost run)."""
        return self.signalled and self.proc.returncode in (EX_SIGINT, EX_SIGTERM)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.close()

    def close(self) -> None:
        """After the child ended: its lifeline, its lease (nothing to do when the child
        took it over: it died with it) and its stderr file go."""
        self.line.close()
        self.lease.release()
        self.err.close()

    def stderr_tail(self) -> str:
        self.err.seek(0)
        return self.err.read().decode(errors="replace")[-STDERR_TAIL:].strip()

    def result(self) -> dict[str, Any]:
        """The run's run.json document; ChildRunError when the child wrote none."""
        code = self.proc.wait()
        try:
            doc: dict[str, Any] = json.loads((self.req.folder / "run.json").read_text(encoding="utf-8"))
            return doc
        except (OSError, ValueError):
            tail = self.stderr_tail()
            raise ChildRunError(f"{self.req.label or self.req.folder}: `python -m stress run` exited {code} "
                                f"without run.json" + (f":\n{tail}" if tail else "")) from None
        finally:
            self.close()

    def wait(self) -> dict[str, Any]:
        """Block until the run ends (a Dask task's thread; no signals there)."""
        self.proc.wait()
        return self.result()


class _Queue:
    """The requests still to start, drawn from the caller's iterable one at a time."""

    def __init__(self, requests: Iterable[RunRequest]) -> None:
        self._source: Iterator[RunRequest] | None = iter(requests)
        self._head: RunRequest | None = None

    def next(self) -> RunRequest | None:
        """The next request to start (drawn now if need be), or None: none left, or closed."""
        if self._head is None and self._source is not None:
            self._head = next(self._source, None)
            if self._head is None:
                self._source = None
        return self._head

    def take(self) -> None:
        """The next request is starting."""
        self._head = None

    def close(self) -> None:
        """Draw nothing more: a stop, or the cores are not coming."""
        self._head, self._source = None, None


class JobsExecutor:
    """Up to ``jobs`` runs at once, each a child on its own lease (``--jobs J``)."""

    def __init__(self, jobs: int, oversubscribe: bool = False, signals: StopSignals | None = None,
                 lease_wait: float | None = leases.LEASE_WAIT_S, waiting: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.jobs = jobs
        self.oversubscribe = oversubscribe
        self.signals = signals
        self.parallel = jobs > 1
        self.stopped = False
        self.lease_wait = lease_wait  #: seconds to wait for cores others hold, none of ours running
        self.waiting = waiting  #: told once, in words, whom we wait for
        self.clock = clock
        self._blocked_since: float | None = None

    def _blocked(self, want: int) -> str | None:
        """No run of ours is going and others hold the cores the next one needs: say so
        once; past ``lease_wait`` the reason every waiting run is given up."""
        now = self.clock()
        first = self._blocked_since is None
        if self._blocked_since is None:
            self._blocked_since = now
        waited = now - self._blocked_since
        if self.lease_wait is not None and waited >= self.lease_wait:
            return f"not started: gave up after {waited:.0f} s (--lease-wait {self.lease_wait:g}) waiting for " \
                   f"{leases.busy_words(want)}"
        if first and self.waiting is not None:
            self.waiting(f"waiting for {leases.busy_words(want)}" + (
                f" (at most {self.lease_wait:g} s: --lease-wait)" if self.lease_wait is not None else ""))
        return None

    def stop(self) -> None:
        self.stopped = True

    def _stop_signal(self) -> int:
        name = self.signals.name if self.signals is not None else None
        return int(signal.Signals[name]) if name else int(signal.SIGTERM)

    def run(self, requests: Iterable[RunRequest], on_start: Callable[[RunRequest], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> Iterator[tuple[RunRequest, Outcome]]:
        """Start runs while cores and job slots are free; yield each document as its run
        ends.  ``requests`` is drawn one at a time, as a run can start (a ``--budget``
        hunt's seeds are open-ended): none is drawn after a stop."""
        queue = _Queue(requests)
        running: list[ChildRun] = []
        try:
            while running or queue.next() is not None:
                if self.stopped or (should_stop is not None and should_stop()):
                    queue.close()
                    for child in running:
                        child.signal(self._stop_signal())
                while len(running) < self.jobs and (req := queue.next()) is not None:
                    want = cores_per_run(req.config.cpus, self.jobs, self.oversubscribe)
                    lease = leases.try_acquire(want, what=f"job of {os.getpid()}")
                    if lease is None:
                        gave_up = None if running else self._blocked(want)
                        if gave_up is not None:  # held by others too long: this run is lost, no other starts
                            queue.close()
                            yield req, LostRun(gave_up)
                        break  # cores held by others (a hand-started run, or our own runs): wait for them
                    self._blocked_since = None
                    queue.take()
                    try:
                        if on_start is not None:
                            on_start(req)
                        running.append(ChildRun.start(req, lease, self.oversubscribe))
                    except BaseException:
                        lease.release()
                        raise
                ended = [c for c in running if c.done()]
                for child in ended:
                    running.remove(child)
                    try:
                        outcome: Outcome = child.result()
                    except ChildRunError as exc:
                        if child.stopped_before_it_began():
                            drop_if_empty(child.req.folder)
                            continue
                        outcome = LostRun.of(exc)  # a tester crash without run.json: the others go on
                    yield child.req, outcome
                if not ended and (running or queue.next() is not None):
                    time.sleep(POLL_S)
        finally:  # an error, or the caller gave up: no child outlives the scheduler
            for child in running:
                child.kill()
