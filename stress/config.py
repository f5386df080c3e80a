"""Run configuration: every option of ``python -m stress run``, resolved once.

The CLI parses and validates options into a :class:`RunConfig`; everything downstream
(manager, workers, results, replay) reads only this object.  ``--era`` is a preset of
allocator semantics; an explicit option always beats the preset (cli.md).

Era presets (uma.md, "The incident" and "Zone limits"):

=========  ===========  =======  ===========  ========================================
era        refcount     wakeup   policy       meaning
=========  ===========  =======  ===========  ========================================
2005       buggy-eq0    one      none         -CURRENT of Dec 2005: the refcount race,
                                              wake one sleeper, no trimming
2007       atomic       all      exhaustion   refcount fixed, packet zone drained when
                                              the cluster zone is exhausted, wake all
modern     atomic       all      median       all fixes plus this project's trimming
=========  ===========  =======  ===========  ========================================
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

ERAS = ("2005", "2007", "modern")
REFCOUNT_MODES = ("buggy-eq0", "atomic")
WAKEUP_MODES = ("one", "all")
SCHED_MODES = ("free", "jitter", "pct", "replay")
#: the race catalogue's injection switches (races.md; the allocator implements the defects)
INJECTIONS = (
    "refcount-eq0",
    "refcount-unlocked",
    "lost-wakeup",
    "wake-one",
    "cache-drain-unsafe",
    "stats-unlocked",
)

ERA_PRESETS: dict[str, dict[str, Any]] = {
    "2005": {"refcount": "buggy-eq0", "wakeup": "one", "policy": "none"},
    "2007": {"refcount": "atomic", "wakeup": "all", "policy": "exhaustion"},
    "modern": {"refcount": "atomic", "wakeup": "all", "policy": "median"},
}


@dataclass(frozen=True)
class RunConfig:
    """Every option of a run, resolved (era knobs applied, defaults filled in)."""

    cpus: int
    duration: float = 10.0
    workload: str = "netperf"
    era: str = "modern"
    policy: str = "median"
    refcount: str = "atomic"
    wakeup: str = "all"
    nmbclusters: int = 25600
    rounds: int = 0  # 0 = one continuous round for the whole duration
    round_length: float = 30.0
    idle: float = 0.0
    interval: float = 1.0
    wedge_timeout: float = 5.0
    trim_interval: float = 1.0
    page_budget: int = 0  # pages the VM has for the kegs; 0 = none, vm_lowmem never fires (allocator/pageout.py)
    seed: int = 0
    inject: tuple[str, ...] = ()
    sched: str = "free"
    jitter: float = 0.0
    pct_depth: int = 3  # PCT bug depth d: d-1 priority change points (races.md)
    steps: int = 0  # pct: scheduling steps of the run; 0 = --duration (or the rounds) at the nominal rate
    #                 (stress.engine.sched.plan.STEPS_PER_S); the run is bounded by steps, not time
    replay_from: str | None = None  # sched "replay": the run folder whose schedule.json is followed
    invariants: bool = False
    lock_profile: bool = False
    profile: bool = False
    oversubscribe: bool = False
    out: str | None = None
    json: bool = False
    verbosity: int = 0  # -1 quiet, 0 normal, 1+ verbose
    policy_params: dict[str, float] = field(default_factory=dict)
    #: plugins this run uses, by kind ("policy", "workload"): spec, name, version, sha256,
    #: ... (stress.plugins.PluginRecord); empty for built-ins
    plugins: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration as recorded in run.json."""
        d = dataclasses.asdict(self)
        d["inject"] = list(self.inject)
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> RunConfig:
        """Rebuild a configuration from run.json (for ``replay``)."""
        names = {f.name for f in dataclasses.fields(RunConfig)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["inject"] = tuple(kw.get("inject", ()))
        return RunConfig(**kw)

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)


def spec_label(spec: str) -> str:
    """A policy or workload as a file-name part: a plugin spec (``path/to/file.py:Halve``,
    ``pkg.mod:Halve``) by its class name, any other character than letters, digits,
    ``_ . -`` replaced by ``_``."""
    name = spec.rpartition(":")[2] or spec
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "_"


def resolve_era(era: str, explicit: dict[str, Any]) -> dict[str, Any]:
    """The era preset's knobs overridden by the options the user gave explicitly."""
    knobs = dict(ERA_PRESETS[era])
    knobs.update({k: v for k, v in explicit.items() if v is not None})
    return knobs
