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
"""

from __future__ import annotations

import argparse
import contextlib
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


class Executor(Protocol):
    """Runs requests; yields each one's run.json document as it ends."""

    parallel: bool  #: several runs may share the machine at once (timing figures disturbed)

    def run(self, requests: Iterable[RunRequest], on_start: Callable[[RunRequest], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> Iterator[tuple[RunRequest, dict[str, Any]]]:
        """Run every request; yield (request, document) as each ends.  ``on_start`` is
        called just before a run starts (its folder, progress); no run starts once
        ``should_stop()`` is true or :meth:`stop` was called."""
        ...

    def stop(self) -> None:
        """Start no new run (the ones running finish, or are stopped by their own signal handling)."""
        ...


class LocalExecutor:
    """One run after the other, in this process, through ``execute``."""

    parallel = False

    def __init__(self, execute: Execute | None = None) -> None:
        if execute is None:
            from stress.engine.runner import execute as runner_execute

            execute = runner_execute
        self.execute = execute
        self.stopped = False

    def run(self, requests: Iterable[RunRequest], on_start: Callable[[RunRequest], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> Iterator[tuple[RunRequest, dict[str, Any]]]:
        """Run each request in order, yielding its document; nothing starts after a stop."""
        for req in requests:
            if self.stopped or (should_stop is not None and should_stop()):
                return
            if on_start is not None:
                on_start(req)
            req.folder.mkdir(parents=True, exist_ok=True)
            yield req, self.execute(req.config, req.folder, echo=None)

    def stop(self) -> None:
        self.stopped = True


def add_arguments(group: argparse._ArgumentGroup) -> None:
    """--jobs, --oversubscribe and --cluster: where a multi-run command's runs run."""
    from stress import options

    group.add_argument("--jobs", type=options.whole_number(1, options.MAX_CPUS), default=1, metavar="J",
                       help="up to J runs at once, each a child `run` on its own disjoint cores; J x cores per "
                            "run beyond the usable cores is refused unless --oversubscribe; timings measured "
                            "side by side are marked parallel (default 1: one after the other, in this process)")
    group.add_argument("--cluster", default=None, metavar="ADDRESS",
                       help="send each run to a Dask scheduler, tls://HOST:8786 (or tcp:// on a trusted network "
                            "only); needs pip install 'zonelimit[cluster]' (default: run here; docs/scale-out.md)")
    group.add_argument("--cluster-cert", default=None, metavar="FILE", help="with tls://: client certificate "
                       "(default: Dask's configuration)")
    group.add_argument("--cluster-key", default=None, metavar="FILE", help="with tls://: its private key "
                       "(default: Dask's configuration)")
    group.add_argument("--cluster-ca", default=None, metavar="FILE", help="with tls://: the CA that signed the "
                       "scheduler's and workers' certificates (default: Dask's configuration)")


@contextlib.contextmanager
def opened(args: argparse.Namespace, signals: Any, execute: Execute | None = None,
           oversubscribe: bool = False) -> Iterator[Executor]:
    """The executor ``args`` ask for (--jobs, --cluster), closed after; UsageError when
    the cluster cannot be used (no Dask, unreachable, other code on a worker).  Whether J
    runs fit the cores is the command's check (stress.engine.jobs.check_jobs), once it
    knows its configurations."""
    from stress.options import UsageError

    if args.cluster is not None:
        if args.jobs != 1:
            raise UsageError("--jobs: not with --cluster (the cluster's workers decide how many run at once)")
        from stress.engine.cluster import ClusterExecutor, connect

        client = connect(args.cluster, args.cluster_cert, args.cluster_key, args.cluster_ca)
        cluster = ClusterExecutor(client, signals, oversubscribe)
        try:
            yield cluster
        finally:
            cluster.close()
        return
    if args.cluster_cert or args.cluster_key or args.cluster_ca:
        raise UsageError("--cluster-cert/--cluster-key/--cluster-ca: only with --cluster tls://...")
    if args.jobs == 1:
        yield LocalExecutor(execute)
        return
    from stress.engine.jobs import JobsExecutor

    yield JobsExecutor(args.jobs, oversubscribe, signals)
