"""Many runs: a list of run configurations in, their run.json documents out.

    commands (compare, and later race/bench)          executor                      runner
    ----------------------------------------          --------                      ------
    [RunRequest(key, cfg, folder), ...] ---------->  LocalExecutor.run(requests)
                                                       for each, in order: --------> execute(cfg, folder)
    on_start(request)  <---------------------------    (its folder, progress: which run is on)
    (request, run.json document) <----------------     yielded as each run ends
    should_stop() / stop() between runs ----------->   no new run starts

Why a seam here: ``compare`` decides *what* to run (variants x seeds, more repeats until
the intervals are tight) and an executor decides *where and when*.  Today runs go one
after the other in this process (:class:`LocalExecutor`); an executor that runs
``--jobs J`` configurations at once on disjoint cores, or sends them to a Dask cluster,
implements the same :class:`Executor` protocol and the commands stay as they are.  An
executor that runs several at once says so (``parallel``): timing figures measured
beside other runs are marked in the comparison.

The executor prints nothing and writes no document of its own: each run writes its own
folder (stress.engine.runner.execute), and the document comes back as a plain dict,
which any process pool or cluster can send.

A run an executor gives up on -- a ``--jobs`` child that ended without run.json, a Dask
task whose workers all died (``KilledWorker``) or that raised -- comes back as a
:class:`LostRun` in place of the document: the other runs are independent and go on, and
the command records which run was lost and why (docs/scale-out.md).  Only the in-process
:class:`LocalExecutor` lets an exception through: there the tester's own traceback is
the answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from stress.config import RunConfig

Execute = Callable[..., dict[str, Any]]
"""``execute(cfg, folder, echo=None) -> run.json document`` (stress.engine.runner.execute)."""


@dataclass(frozen=True)
class RunRequest:
    """One run to make: its configuration, the folder it writes, and the caller's key."""

    key: Any  #: what the caller needs to file the result (compare: variant index and seed)
    config: RunConfig
    folder: Path
    label: str = ""  #: for a person (progress lines)


@dataclass(frozen=True)
class LostRun:
    """A run that will not come back: why, and every attempt at it (a Dask task retried
    on another worker after its worker died has several)."""

    reason: str  #: one line: the exception, or how the child ended
    attempts: tuple[dict[str, str], ...] = ()  #: ``{"worker", "host"}`` of each attempt (cluster only)

    @staticmethod
    def of(exc: BaseException, attempts: Iterable[dict[str, str]] = ()) -> LostRun:
        """From the exception that lost the run, its text on one line (at most 500 characters)."""
        text = " ".join(str(exc).split()) or "no message"
        name = type(exc).__name__
        reason = text if text.startswith(name) else f"{name}: {text}"
        return LostRun(reason[:500], tuple(attempts))

    def record(self, key: dict[str, Any]) -> dict[str, Any]:
        """The document's entry for the lost run: ``key`` (what the command files it by:
        variant and seed), then why and where it was tried."""
        return {**key, "reason": self.reason, "attempts": [dict(a) for a in self.attempts],
                "retried": max(0, len(self.attempts) - 1)}


def drop_if_empty(folder: Path) -> None:
    """A request's folder, made by ``on_start``, whose run never began (stopped before it
    started, or cancelled before its task ran): removed if nothing was written into it
    (a run stopped before writing anything leaves no folder)."""
    try:
        folder.rmdir()
    except OSError:
        pass  # not empty (the run wrote something: it is the command's to keep), or gone


Outcome = dict[str, Any] | LostRun
"""What an executor yields for a request: the run's run.json document, or :class:`LostRun`."""


class Executor(Protocol):
    """Runs requests; yields each one's run.json document as it ends."""

    parallel: bool  #: several runs may share the machine at once (timing figures disturbed)

    def run(self, requests: Iterable[RunRequest], on_start: Callable[[RunRequest], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> Iterator[tuple[RunRequest, Outcome]]:
        """Run every request; yield (request, document or :class:`LostRun`) as each ends.  ``on_start`` is
        called just before a run starts (its folder, progress); no run starts once
        ``should_stop()`` is true or :meth:`stop` was called."""
        ...

    def stop(self) -> None:
        """Start no new run (the ones running finish, or are stopped by their own signal handling)."""
        ...


@dataclass(frozen=True)
class LeaseRule:
    """How an in-process run leases its cores, as ``run`` does (stress/engine/leases.py):
    wait at most ``wait`` seconds for cores others hold, telling ``waiting`` once whom for."""

    wait: float
    waiting: Callable[[str], None] | None = None


class _StopWaiting(Exception):
    """A stop came while a run waited for its cores: it never starts."""


class LocalExecutor:
    """One run after the other, in this process, through ``execute``.

    With a :class:`LeaseRule` each run leases its cores first and runs pinned within them,
    as ``python -m stress run`` does, so a compare or a hunt never measures beside another
    zonelimit run on the same cores.  Cores held past ``wait``: that run comes back as a
    :class:`LostRun` ("not started: gave up after ...") and no other starts, as with
    ``--jobs``.  Without one (a test's ``execute`` that starts no process) nothing is
    leased."""

    parallel = False

    def __init__(self, execute: Execute | None = None, lease: LeaseRule | None = None) -> None:
        if execute is None:
            from stress.engine.runner import execute as runner_execute

            execute = runner_execute
        self.execute = execute
        self.lease = lease
        self.stopped = False
        self._unleased_told = False

    def run(self, requests: Iterable[RunRequest], on_start: Callable[[RunRequest], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> Iterator[tuple[RunRequest, Outcome]]:
        """Run each request in order, yielding its document; nothing starts after a stop."""
        from stress.engine import leases

        def check() -> None:
            if self.stopped or (should_stop is not None and should_stop()):
                raise _StopWaiting

        for req in requests:
            if self.stopped or (should_stop is not None and should_stop()):
                return
            try:
                lease, why = self._take(req.config, check)
            except _StopWaiting:
                return
            except leases.LeaseTimeout as exc:
                self.stopped = True
                yield req, LostRun(f"not started: {exc}")
                return
            with leases.running_in(lease, why):  # the affinity is the lease: workers pin within it
                if on_start is not None:
                    on_start(req)
                req.folder.mkdir(parents=True, exist_ok=True)
                doc = self.execute(req.config, req.folder, echo=None)
            yield req, doc

    def _take(self, cfg: RunConfig, check: Callable[[], None]) -> tuple[Any, str]:
        """The run's lease (None and why when not leasing, or the table is unusable)."""
        from stress.engine import leases

        if self.lease is None:
            return None, ""
        try:
            return leases.acquire(cfg.cpus, waiting=self.lease.waiting, check=check, limit=self.lease.wait), ""
        except OSError as exc:
            why = f"lease table {leases.lease_dir()} unusable: {exc.strerror or exc}"
            if self.lease.waiting is not None and not self._unleased_told:
                self.lease.waiting(f"{why}; running without a core lease")
                self._unleased_told = True
            return None, why

    def stop(self) -> None:
        self.stopped = True

