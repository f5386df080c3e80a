"""``--cluster tcp://HOST:8786`` / ``tls://...``: runs as Dask tasks on other hosts.

    client (compare / race)                         a Dask worker host
    -----------------------                         ------------------
    connect(): versions and source digests of every worker must match ours
    ClusterExecutor.run(requests):
      submit(run_task, payload, resources={"cores": n})  --->  run_task (a worker thread)
                                                                 leases.acquire(n)  (the host's lease table:
                                                                   tasks and local runs never share a core)
                                                                 ChildRun: python -m stress run (a subprocess,
                                                                   never a fork of the threaded worker)
                                                                 polls the session's stop flag
      <--- {run.json, samples.csv, netstat.txt, run.log, plot.png, ...} (the run folder's files)
      files written into the request's folder, exactly where a local run writes them
      (requests are drawn lazily: at most twice the workers' cores in tasks at once)
      host.cluster in run.json: the worker, and every attempt (a lost worker's run is retried)

Why a subprocess per run: a run forks its workers, and a fork of the multi-threaded Dask
worker would copy locks other threads hold.  Why a stop flag rather than
``Future.cancel``: Dask cannot interrupt a running task's thread, so a cancelled run
would keep its cores; the task sees the flag (a ``distributed.Variable``), passes the
signal to its run, which stops cleanly and ships its folder (exit 130 / 143), as a local
run does.  Tasks that had not started return at once.

A run never spans hosts (one arena per run, as a kernel's CPUs share one memory).
Worker loss: the scheduler reschedules the task (at most ``distributed.scheduler.
allowed-failures`` times); the attempts are recorded.  A task Dask gives up on
(``KilledWorker``), or one that raised (its run ended without run.json), comes back as a
:class:`~stress.engine.executor.LostRun` with its attempts: the other runs go on, and
the command records the lost run (docs/scale-out.md).

Security: a scheduler runs whatever a connected client sends, so ``tls://`` with a
``distributed.Security`` (``--cluster-ca/-cert/-key`` or Dask's own configuration) is the
default the docs teach (docs/scale-out.md); ``tcp://`` belongs on a trusted network only.
"""

from __future__ import annotations

import functools
import hashlib
import signal
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from stress.config import RunConfig
from stress.engine import leases
from stress.engine.executor import LostRun, Outcome, RunRequest, drop_if_empty
from stress.engine.jobs import ChildRun, ChildRunError
from stress.engine.stopping import StopSignals
from stress.options import UsageError
from stress.workloads import WORKLOADS

INSTALL_HINT = "needs dask.distributed: pip install 'zonelimit[cluster]'"
POLL_S = 0.2  #: how often a task looks at its run and at the stop flag
CONNECT_TIMEOUT_S = 20
PACKAGES = ("allocator", "stress")
#: what the digest covers: the sources, not what a build made from them (a Cython .c or a
#: .so differs between hosts built apart; whether a run ran compiled is in its run.json)
SOURCE_SUFFIXES = (".py", ".pyx", ".pxd", ".json")


class ClusterRunError(Exception):
    """A task cannot run on its worker (other zonelimit code there)."""


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """sha256 over every source file of the packages a run executes (allocator, stress):
    client and workers must run the same code, not merely the same version number.
    (Workloads and policies are the packages' own; a run naming code outside them is
    refused by :func:`check_config`.)"""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parents[2]
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*")):
            if path.is_file() and path.suffix in SOURCE_SUFFIXES:
                h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def identity() -> dict[str, str]:
    """This host's zonelimit: its version and source digest (run on every worker)."""
    from stress.documents import package_version

    return {"version": package_version(), "digest": source_digest(), "host": socket.gethostname()}


def check_config(cfg: RunConfig) -> None:
    """Only code both sides hold: a workload outside the package's registry is refused."""
    if cfg.workload not in WORKLOADS:
        raise UsageError(f"--cluster: workload {cfg.workload!r} is not one of zonelimit's own; "
                         "a plugin cannot be shipped to the workers")


def security(address: str, cert: str | None, key: str | None, ca: str | None) -> Any:
    """The TLS settings for ``tls://``: from the options, else Dask's configuration."""
    from distributed import Security

    if not address.startswith("tls://"):
        if cert or key or ca:
            raise UsageError("--cluster-cert/--cluster-key/--cluster-ca: only with a tls:// scheduler address")
        return None
    if cert or key or ca:
        missing = [n for n, v in (("--cluster-cert", cert), ("--cluster-key", key), ("--cluster-ca", ca)) if not v]
        if missing:
            raise UsageError(f"{missing[0]}: needed with the other --cluster-* TLS options")
        for name, path in (("--cluster-cert", cert), ("--cluster-key", key), ("--cluster-ca", ca)):
            if not Path(str(path)).is_file():
                raise UsageError(f"{name}: {path}: no such file")
        return Security(tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key, require_encryption=True)
    return Security()  # distributed.comm.tls.* of Dask's configuration


def connect(address: str, cert: str | None = None, key: str | None = None, ca: str | None = None) -> Any:
    """A client of the scheduler at ``address`` whose workers all run our zonelimit.

    UsageError (exit 2) without dask.distributed, for a bad address, an unreachable
    scheduler, no worker with a ``cores`` resource, or a worker with other code."""
    if not (address.startswith("tcp://") or address.startswith("tls://")):
        raise UsageError(f"--cluster: want tls://HOST:PORT or tcp://HOST:PORT, got {address!r}")
    try:
        from distributed import Client
    except ImportError:
        raise UsageError(f"--cluster: {INSTALL_HINT}") from None
    sec = security(address, cert, key, ca)
    try:
        client = Client(address, security=sec, timeout=f"{CONNECT_TIMEOUT_S}s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise UsageError(f"--cluster: cannot reach the scheduler at {address}: {exc}") from None
    try:
        check_workers(client)
    except BaseException:
        client.close()
        raise
    return client


def worker_cores(client: Any) -> dict[str, int]:
    """Worker address -> its ``cores`` resource."""
    info = client.scheduler_info().get("workers", {})
    return {addr: int((w.get("resources") or {}).get("cores", 0)) for addr, w in info.items()}


def check_workers(client: Any) -> None:
    """Every worker runs our version and our sources, and some worker offers cores."""
    cores = worker_cores(client)
    if not any(cores.values()):
        raise UsageError("--cluster: no worker offers the resource 'cores': start workers with "
                         "`dask worker SCHEDULER --nworkers 1 --nthreads N --resources cores=N`")
    mine = identity()
    for addr, theirs in client.run(identity).items():
        for what in ("version", "digest"):
            if theirs.get(what) != mine[what]:
                raise UsageError(f"--cluster: worker {addr} ({theirs.get('host')}) runs zonelimit {what} "
                                 f"{theirs.get(what)}, this client {mine[what]}: install the same on both")


# --- on the worker --------------------------------------------------------------------------------


def _stop_requested(flag: Any) -> str:
    try:
        return str(flag.get(timeout=5) or "")
    except Exception:  # noqa: BLE001 - the scheduler gone: the task is lost anyway
        return ""


def run_task(payload: dict[str, Any]) -> dict[str, Any]:
    """On a worker: lease cores, run ``python -m stress run`` there, ship its files back."""
    from distributed import Queue, Variable, get_worker

    mine = identity()
    if (payload["version"], payload["digest"]) != (mine["version"], mine["digest"]):
        raise ClusterRunError(f"worker on {mine['host']} runs other zonelimit code than the client")
    flag = Variable(payload["stop"])
    if _stop_requested(flag):
        return {"cancelled": True}
    worker = get_worker().address
    Queue(payload["started"]).put({"key": payload["key"], "worker": worker, "host": mine["host"]})
    cfg = RunConfig.from_dict(payload["config"])
    lease = None
    limit, since = payload["lease_wait"], time.monotonic()
    while lease is None:  # cores held by local runs or other tasks on this host: wait, at most --lease-wait
        lease = leases.try_acquire(payload["cores"], what=f"dask task {payload['key']}")
        if lease is None:
            if _stop_requested(flag):
                return {"cancelled": True}
            waited = time.monotonic() - since
            if waited >= limit:
                raise ClusterRunError(f"not started: gave up after {waited:.0f} s (--lease-wait {limit:g}) waiting "
                                      f"on {mine['host']} for {leases.busy_words(payload['cores'])}")
            time.sleep(POLL_S)
    with tempfile.TemporaryDirectory(prefix="zonelimit-task-") as tmp:
        folder = Path(tmp) / "run"
        folder.mkdir()
        try:
            child = ChildRun.start(RunRequest(payload["key"], cfg, folder, payload["label"]), lease,
                                   payload["oversubscribe"])
        except BaseException:
            lease.release()
            raise
        try:
            last = time.monotonic()
            while not child.done():
                time.sleep(POLL_S)
                if time.monotonic() - last >= 1.0:
                    last = time.monotonic()
                    stop = _stop_requested(flag)
                    if stop:
                        child.signal(int(signal.Signals[stop]))
            doc = child.result()
        except ChildRunError:
            if child.stopped_before_it_began():
                return {"cancelled": True}
            raise
        except BaseException:
            child.kill()
            raise
        files = {p.name: p.read_bytes() for p in sorted(folder.iterdir())
                 if p.is_file() and not p.name.startswith(".")}
    return {"doc": doc, "files": files, "worker": worker, "host": mine["host"]}


# --- on the client ----------------------------------------------------------------------------------


@dataclass
class Placement:
    """Where a run ran: every attempt's worker (more than one: a lost worker's run was retried)."""

    attempts: list[dict[str, str]]


def _write(data: bytes, f: IO[bytes]) -> None:
    f.write(data)


class ClusterExecutor:
    """Runs requests as Dask tasks; yields each run's document once its files are here."""

    parallel = True

    def __init__(self, client: Any, signals: StopSignals | None = None, oversubscribe: bool = False,
                 lease_wait: float = leases.LEASE_WAIT_S) -> None:
        from distributed import Queue, Variable

        self.client = client
        self.signals = signals
        self.oversubscribe = oversubscribe
        self.lease_wait = lease_wait  #: seconds a task waits for its host's cores (--lease-wait)
        self.session = f"zonelimit-{uuid.uuid4().hex[:12]}"
        self.flag = Variable(f"{self.session}-stop", client=client)
        self.flag.set("")
        self.started = Queue(f"{self.session}-started", client=client)
        self.placements: dict[str, Placement] = {}
        self.stopped: str | None = None
        self.submitted = 0  #: tasks submitted in this session (their keys)
        offered = worker_cores(client)
        self.widest = max(offered.values(), default=1)
        #: tasks submitted at most at once: twice the cores the workers offer, so a worker
        #: that ends a run finds the next queued at the scheduler, while the requests are
        #: drawn as they can run (a --budget hunt's seeds are open-ended)
        self.window = max(2, 2 * sum(offered.values()))

    def stop(self, name: str = "SIGTERM") -> None:
        """Start no new run; running ones are stopped by ``name`` and ship their folders."""
        if self.stopped is None:
            self.stopped = name
            self.flag.set(name)

    def _payload(self, i: int, req: RunRequest) -> dict[str, Any]:
        me = identity()
        cfg = req.config.replace(out=None, json=False, verbosity=-1)
        return {"key": f"{self.session}-{i}", "config": cfg.to_dict(), "label": req.label,
                "cores": min(cfg.cpus, self.widest), "oversubscribe": self.oversubscribe,
                "lease_wait": self.lease_wait, "version": me["version"], "digest": me["digest"],
                "stop": f"{self.session}-stop", "started": f"{self.session}-started"}

    def _drain_started(self) -> None:
        try:
            items = self.started.get(batch=True)
        except Exception:  # noqa: BLE001 - nothing new
            return
        for item in items:
            self.placements.setdefault(item["key"], Placement([])).attempts.append(
                {"worker": item["worker"], "host": item["host"]})

    def run(self, requests: Iterable[RunRequest], on_start: Callable[[RunRequest], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> Iterator[tuple[RunRequest, Outcome]]:
        """Submit requests as tasks, at most :attr:`window` at once, drawn as earlier ones
        end (an open-ended ``--budget`` hunt is never queued up front); yield each run's
        document once its files are here, or a :class:`LostRun`.  A stop (``should_stop``,
        :meth:`stop`) submits nothing more and raises the stop flag."""
        from distributed import wait

        source: Iterator[RunRequest] | None = iter(requests)
        pending: dict[Any, tuple[RunRequest, str]] = {}
        try:
            while True:
                if should_stop is not None and should_stop():
                    name = self.signals.name if self.signals is not None and self.signals.name else "SIGTERM"
                    self.stop(name)
                while source is not None and not self.stopped and len(pending) < self.window:
                    req = next(source, None)
                    if req is None:
                        source = None
                        break
                    check_config(req.config)
                    if on_start is not None:
                        on_start(req)
                    self.submitted += 1
                    payload = self._payload(self.submitted, req)
                    fut = self.client.submit(run_task, payload, key=payload["key"], pure=False,
                                             resources={"cores": payload["cores"]})
                    pending[fut] = (req, payload["key"])
                if not pending:
                    break
                try:
                    done, _ = wait(list(pending), timeout=POLL_S, return_when="FIRST_COMPLETED")
                except TimeoutError:
                    done = set()
                self._drain_started()
                for fut in done:
                    req, key = pending.pop(fut)
                    try:
                        result = fut.result()
                    except Exception as exc:  # noqa: BLE001 - KilledWorker (its workers died), or the task raised
                        yield req, LostRun.of(exc, self.placements.get(key, Placement([])).attempts)
                        continue
                    if result.get("cancelled"):  # stopped before its run began: nothing to keep
                        drop_if_empty(req.folder)
                        continue
                    yield req, self._land(req, key, result)
        finally:
            if pending:  # an error, or the caller gave up: stop every run we started
                self.stop()
                self.client.cancel(list(pending))

    def _land(self, req: RunRequest, key: str, result: dict[str, Any]) -> dict[str, Any]:
        """The shipped files into the request's folder; run.json gains ``host.cluster``."""
        from stress import documents, files

        req.folder.mkdir(parents=True, exist_ok=True)
        for name, data in result["files"].items():
            files.write_atomic(req.folder / name, functools.partial(_write, data))
        doc: dict[str, Any] = result["doc"]
        attempts = self.placements.get(key, Placement([])).attempts
        doc["host"]["cluster"] = {"worker": result["worker"], "host": result["host"],
                                  "attempts": attempts or [{"worker": result["worker"], "host": result["host"]}],
                                  "retried": max(0, len(attempts) - 1)}
        documents.write_run_json(req.folder, doc)
        return doc

    def close(self) -> None:
        try:
            self.flag.delete()
        except Exception:  # noqa: BLE001
            pass
        self.client.close()

