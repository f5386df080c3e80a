"""Which executor a multi-run command uses: ``--jobs J``, ``--cluster ADDRESS``, or neither.

``compare`` and ``race`` share these options and this choice; the executors themselves
are stress.engine.executor (one after the other, here), stress.engine.jobs (J child runs
on disjoint leased cores) and stress.engine.cluster (Dask tasks).  docs/scale-out.md.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from typing import Any

from stress.engine.executor import Execute, Executor, LeaseRule, LocalExecutor
from stress.engine.leases import LEASE_WAIT_S


def add_arguments(group: argparse._ArgumentGroup) -> None:
    """--jobs, --oversubscribe and --cluster: where a multi-run command's runs run."""
    from stress import options

    group.add_argument("--jobs", type=options.whole_number(1, options.MAX_CPUS), default=1, metavar="J",
                       help="up to J runs at once, each a child `run` on its own disjoint cores; J x cores per "
                            "run beyond the usable cores is refused unless --oversubscribe; timings measured "
                            "side by side are marked parallel (default 1: one after the other, in this process)")
    group.add_argument("--lease-wait", type=options.seconds(allow_zero=True), default=None, metavar="S",
                       help="how long to wait for free cores while other runs (not this command's) hold them; then "
                            "the run that waited is recorded as lost, no other starts, the result is partial, exit 3; "
                            "with --cluster: how long a task waits for its host's cores, then that run is lost; "
                            f"0: do not wait (default: {LEASE_WAIT_S:g}; docs/scale-out.md)")
    group.add_argument("--cluster", default=None, metavar="ADDRESS",
                       help="send each run to a Dask scheduler, tls://HOST:8786 (or tcp:// on a trusted network "
                            "only); needs pip install 'zonelimit[cluster]' (default: run here; docs/scale-out.md)")
    group.add_argument("--cluster-cert", default=None, metavar="FILE", help="with tls://: client certificate "
                       "(default: Dask's configuration)")
    group.add_argument("--cluster-key", default=None, metavar="FILE", help="with tls://: its private key "
                       "(default: Dask's configuration)")
    group.add_argument("--cluster-ca", default=None, metavar="FILE", help="with tls://: the CA that signed the "
                       "scheduler's and workers' certificates (default: Dask's configuration)")


def check_arguments(args: argparse.Namespace) -> None:
    """The options that go together (UsageError otherwise), before anything is made."""
    from stress.options import UsageError

    if args.cluster is not None:
        if args.jobs != 1:
            raise UsageError("--jobs: not with --cluster (the cluster's workers decide how many run at once)")
        return
    if args.cluster_cert or args.cluster_key or args.cluster_ca:
        raise UsageError("--cluster-cert/--cluster-key/--cluster-ca: only with --cluster tls://...")


@contextlib.contextmanager
def opened(args: argparse.Namespace, signals: Any, execute: Execute | None = None,
           oversubscribe: bool = False) -> Iterator[Executor]:
    """The executor ``args`` ask for (--jobs, --cluster), closed after; UsageError when
    the cluster cannot be used (no Dask, unreachable, other code on a worker).  Whether J
    runs fit the cores is the command's check (stress.engine.jobs.check_jobs), once it
    knows its configurations."""
    check_arguments(args)
    if args.cluster is not None:
        from stress.engine.cluster import ClusterExecutor, connect

        client = connect(args.cluster, args.cluster_cert, args.cluster_key, args.cluster_ca)
        cluster = ClusterExecutor(client, signals, oversubscribe,
                                  LEASE_WAIT_S if args.lease_wait is None else args.lease_wait)
        try:
            yield cluster
        finally:
            cluster.close()
        return
    from stress.options import warn

    wait = LEASE_WAIT_S if args.lease_wait is None else args.lease_wait
    if args.jobs == 1:  # one after the other here; each real run leases its cores as `run` does
        yield LocalExecutor(execute, None if execute is not None else LeaseRule(wait, warn))
        return
    from stress.engine.jobs import JobsExecutor

    yield JobsExecutor(args.jobs, oversubscribe, signals, waiting=warn, lease_wait=wait)
