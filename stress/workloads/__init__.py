"""The workloads, one module each, by their ``--workload`` name.

Each module's docstring names the real workload it stands for.  :data:`WORKLOADS` maps
the CLI name to the class; :func:`arena_arrays` is every extra arena array a run of
that workload declares (rings, held lists, counters), before fork; :func:`drain_rings`
the rings the final drain waits for.  :mod:`stress.workloads.ring` is where a workload
keeps every mbuf it holds, and :mod:`stress.workloads.common` the base class: together
the whole surface a workload is written against.
"""

from __future__ import annotations

from allocator import ArraySpec
from stress.config import RunConfig
from stress.workloads.burst import Burst
from stress.workloads.common import WorkerContext, Workload, common_arrays, control_specs
from stress.workloads.larson import Larson
from stress.workloads.mixed import Mixed
from stress.workloads.netperf import Netperf
from stress.workloads.netperf_nfs import NetperfNfs
from stress.workloads.netperf_rr import NetperfRR
from stress.workloads.nfs import Nfs
from stress.workloads.races import RaceDrain, RaceLimit, RaceWakeOne
from stress.workloads.xmalloc import Xmalloc

WORKLOADS: dict[str, type[Workload]] = {
    cls.name: cls for cls in (Netperf, NetperfRR, Nfs, Xmalloc, Larson, Mixed, NetperfNfs, Burst,
                              RaceLimit, RaceWakeOne, RaceDrain)
}

__all__ = ["WORKLOADS", "Workload", "WorkerContext", "arena_arrays", "drain_rings", "workload_class"]


def workload_class(name: str) -> type[Workload]:
    """The class of ``--workload name`` (KeyError names the known ones)."""
    try:
        return WORKLOADS[name]
    except KeyError:
        raise KeyError(f"unknown workload {name!r}; known: {', '.join(WORKLOADS)}") from None


def arena_arrays(cfg: RunConfig) -> list[ArraySpec]:
    """Every extra arena array a run of ``cfg.workload`` needs."""
    return control_specs(cfg.cpus) + common_arrays(cfg) + workload_class(cfg.workload).arrays(cfg)


def drain_rings(cfg: RunConfig) -> list[str]:
    """The rings the manager's final drain waits to see empty: every CPU's scratch slot
    and the workload's :meth:`~Workload.drained_rings`."""
    return [s.name for s in common_arrays(cfg)] + workload_class(cfg.workload).drained_rings(cfg)
