"""``--jobs J``: up to J runs at once on this host, each a ``python -m stress run`` child
on its own disjoint lease of cores.

    JobsExecutor.run(requests)                              (the command's main thread)
      while requests wait and fewer than J run:
        lease = leases.try_acquire(cores the run needs)      None: wait for a run to end
        ChildRun.start(request, lease)  --->  python -m stress run --run-config - --cores L --out DIR
                                              (takes the lease over: it lives as long as the run)
      a child ended  --->  DIR/run.json read  --->  yield (request, document)
      a stop (SIGINT/SIGTERM seen by the command): no new child; the running ones get the
        signal (a run stops cleanly and writes its folder, exit 130/143) and are waited for

Why children, not threads or a pool: a run forks its workers, and fork inside a
threaded process copies locks in whatever state other threads left them; a fresh
interpreter per run is what a person starting runs side by side by hand gets, so
``--jobs`` adds nothing a run does not already survive.  The same :class:`ChildRun` runs a
Dask task's run on a worker host (stress/engine/cluster.py).

Every child dies with this process (``prctl(PR_SET_PDEATHSIG)``, as workers do with their
manager: stress/engine/pinning.py), and its lease with it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from stress.cpulist import format_cpulist, usable_cores
from stress.engine import leases
from stress.engine.executor import RunRequest
from stress.engine.stopping import StopSignals
from stress.options import UsageError

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

    def __init__(self, req: RunRequest, lease: leases.Lease, proc: subprocess.Popen[bytes], err: IO[bytes]) -> None:
        self.req, self.lease, self.proc, self.err = req, lease, proc, err
        self.signalled = False

    @staticmethod
    def start(req: RunRequest, lease: leases.Lease, oversubscribe: bool = False) -> ChildRun:
        """Start the child; it reads its configuration on stdin and takes the lease over."""
        cfg = req.config.replace(out=str(req.folder), json=False, verbosity=-1)
        if cfg.cpus > len(lease.cores) and not cfg.oversubscribe:
            cfg = cfg.replace(oversubscribe=oversubscribe)
        err = tempfile.TemporaryFile()  # unlinked: nothing is left behind, whatever happens
        proc = subprocess.Popen(child_argv(lease.cores, req.folder), stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=err, env=child_env(lease))
        assert proc.stdin is not None
        with proc.stdin:
            proc.stdin.write(json.dumps(cfg.to_dict()).encode())
        return ChildRun(req, lease, proc, err)

    def done(self) -> bool:
        return self.proc.poll() is not None

    def signal(self, signum: int) -> None:
        """Pass a stop on: the run stops cleanly and writes its folder (exit 130 / 143)."""
        if not self.signalled and self.proc.poll() is None:
            self.signalled = True
            self.proc.send_signal(signum)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.close()

    def close(self) -> None:
        self.lease.release()  # nothing to do when the child took it over (it died with it)
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


class JobsExecutor:
    """Up to ``jobs`` runs at once, each a child on its own lease (``--jobs J``)."""

    def __init__(self, jobs: int, oversubscribe: bool = False, signals: StopSignals | None = None) -> None:
        self.jobs = jobs
        self.oversubscribe = oversubscribe
        self.signals = signals
        self.parallel = jobs > 1
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True

    def _stop_signal(self) -> int:
        name = self.signals.name if self.signals is not None else None
        return int(signal.Signals[name]) if name else int(signal.SIGTERM)

    def run(self, requests: Iterable[RunRequest], on_start: Callable[[RunRequest], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> Iterator[tuple[RunRequest, dict[str, Any]]]:
        """Start runs while cores and job slots are free; yield each document as its run ends."""
        pending = deque(requests)
        running: list[ChildRun] = []
        try:
            while pending or running:
                if self.stopped or (should_stop is not None and should_stop()):
                    pending.clear()
                    for child in running:
                        child.signal(self._stop_signal())
                while pending and len(running) < self.jobs:
                    req = pending[0]
                    want = cores_per_run(req.config.cpus, self.jobs, self.oversubscribe)
                    lease = leases.try_acquire(want, what=f"job of {os.getpid()}")
                    if lease is None:
                        break  # cores held by others (a hand-started run): wait for them
                    pending.popleft()
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
                    yield child.req, child.result()
                if not ended:
                    time.sleep(POLL_S)
        finally:  # an error, or the caller gave up: no child outlives the scheduler
            for child in running:
                child.kill()
