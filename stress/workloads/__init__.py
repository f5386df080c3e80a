"""The workloads, one module each, by their ``--workload`` name; and the workload registry.

Each module's docstring names the real workload it stands for.  :data:`WORKLOADS` maps
the built-in names to their classes; plugin workloads (``--workload
path/to/file.py:Class``, ``module:Class`` or a ``zonelimit.workloads`` entry point) are
resolved by stress/plugins.py and registered here under their spec
(:func:`register_workload`).  Everything that needs a workload's class asks
:func:`workload_class`, so a plugin is never copied into another table.

:func:`arena_arrays` is every extra arena array a run of that workload declares (rings,
held lists, counters), before fork; :func:`drain_rings` the rings the final drain waits
for.  The stable surface a workload is written against (docs/extending.md) is what this
package exports: :class:`Workload` and :class:`WorkerContext`
(:mod:`stress.workloads.common`), :class:`Ring`, :class:`Slots`, :func:`ring_spec` and
:func:`slots_spec` (:mod:`stress.workloads.ring`, where a workload keeps every mbuf it
holds), the per-CPU counters ``STAT_*`` and :func:`pairs`.
"""

from __future__ import annotations

from allocator import ArraySpec
from stress.config import RunConfig
from stress.workloads.burst import Burst
from stress.workloads.common import (
    STAT_ALLOC_FAILS,
    STAT_BYTES,
    STAT_DROPS,
    STAT_PACKETS,
    STAT_PAYLOAD_ERRORS,
    STAT_SENT,
    WorkerContext,
    Workload,
    common_arrays,
    control_specs,
    pairs,
)
from stress.workloads.larson import Larson
from stress.workloads.mixed import Mixed
from stress.workloads.netperf import Netperf
from stress.workloads.netperf_nfs import NetperfNfs
from stress.workloads.netperf_rr import NetperfRR
from stress.workloads.nfs import Nfs
from stress.workloads.races import RaceDrain, RaceLimit, RaceWakeOne
from stress.workloads.ring import Ring, Slots, ring_spec, slots_spec
from stress.workloads.xmalloc import Xmalloc

#: the built-in workloads, by name
WORKLOADS: dict[str, type[Workload]] = {
    cls.name: cls for cls in (Netperf, NetperfRR, Nfs, Xmalloc, Larson, Mixed, NetperfNfs, Burst,
                              RaceLimit, RaceWakeOne, RaceDrain)
}

#: plugin workloads, by the spec that selected them (stress/plugins.py registers them)
_plugins: dict[str, type[Workload]] = {}

__all__ = [
    "STAT_ALLOC_FAILS", "STAT_BYTES", "STAT_DROPS", "STAT_PACKETS", "STAT_PAYLOAD_ERRORS", "STAT_SENT",
    "WORKLOADS", "Ring", "Slots", "WorkerContext", "Workload", "arena_arrays", "drain_rings", "pairs",
    "register_workload", "ring_spec", "slots_spec", "workload_class", "workload_names",
]


def register_workload(spec: str, cls: type[Workload]) -> None:
    """Make ``cls`` the workload selected by ``spec`` (a plugin's spec as the user wrote
    it).  A built-in's name cannot be taken; registering a spec again replaces its class."""
    if spec in WORKLOADS:
        raise ValueError(f"workload {spec!r} is built in; a plugin needs another name")
    if not (isinstance(cls, type) and issubclass(cls, Workload)):
        raise TypeError(f"workload {spec!r}: {cls!r} is not a subclass of stress.workloads.Workload")
    _plugins[spec] = cls


def workload_names() -> tuple[str, ...]:
    """Every workload that can run now: the built-ins, then the registered plugins."""
    return tuple(WORKLOADS) + tuple(_plugins)


def workload_class(name: str) -> type[Workload]:
    """The class of ``--workload name`` (KeyError names the known ones)."""
    cls = WORKLOADS.get(name) or _plugins.get(name)
    if cls is None:
        raise KeyError(f"unknown workload {name!r}; known: {', '.join(workload_names())}")
    return cls


def arena_arrays(cfg: RunConfig) -> list[ArraySpec]:
    """Every extra arena array a run of ``cfg.workload`` needs."""
    return control_specs(cfg.cpus) + common_arrays(cfg) + workload_class(cfg.workload).arrays(cfg)


def drain_rings(cfg: RunConfig) -> list[str]:
    """The rings the manager's final drain waits to see empty: every CPU's scratch slot
    and the workload's :meth:`~Workload.drained_rings`."""
    return [s.name for s in common_arrays(cfg)] + workload_class(cfg.workload).drained_rings(cfg)
