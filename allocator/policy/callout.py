"""The trim callout: observation -> policy -> decision -> allocator, once per interval.

Why here: ``Uma.observe(z)`` returns raw numbers (the interval extremes, already reset,
plus *cumulative* counters); a policy wants one interval's worth.  This module turns
the former into :class:`Observation` values by differencing the counters, keeps one
policy instance per zone (policies remember past intervals), and hands each
:class:`Decision` to ``Uma.apply``.  The manager owns the timing: it calls
:meth:`TrimCallout.tick` every ``--trim-interval`` from its own context (the manager
row of the arena), as FreeBSD's ``uma_timeout`` callout ran ``zone_timeout``::

    manager loop                      allocator (arena)                 policy
    ------------                      -----------------                 ------
    callout.tick() --observe(z)-->    zone_observe: read+reset extremes
                   <--raw dict---     counters summed over CPUs
                   difference counters -> Observation ------------------> decide()
                   <----------------------------------------------------- Decision
                   --apply(z, ...)--> per-CPU flush requests, zone_trim, zone_prefill

A per-CPU flush (``drain_percpu``) is a request each CPU serves at its next loop turn
(the safe cross-CPU protocol): the flushed buckets land on the zone's list and go back
to the keg at a later interval's drain, never from another CPU's hands.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol

from allocator.policy import ZONE_CLUSTER, Decision, Observation, Policy, make_policy

#: Observation fields that ``Uma.observe`` reports as running totals (differenced here).
CUMULATIVE = ("fills", "allocs", "frees", "overflows", "cluster_fails", "cluster_sleeps")


class Trimmable(Protocol):
    """What the callout needs of ``allocator.Uma`` (a protocol, so tests can fake it)."""

    def observe(self, z: int) -> dict[str, int]: ...

    def apply(self, z: int, drain_buckets: int = 0, prefill_buckets: int = 0,
              drain_percpu: bool = False) -> dict[str, int]: ...


@dataclass(frozen=True)
class Tick:
    """One zone's part of one interval: what was seen, decided and done (for logs and tests)."""

    observation: Observation
    decision: Decision
    done: Mapping[str, int]


def observation_from(raw: Mapping[str, int], previous: Mapping[str, int] | None, interval: int) -> Observation:
    """The Observation of one interval from two consecutive raw ``Uma.observe`` results:
    running totals become differences (the first interval counts from zero)."""
    names = {f.name for f in fields(Observation)}
    kw: dict[str, int] = {k: int(v) for k, v in raw.items() if k in names}
    for k in CUMULATIVE:
        kw[k] = int(raw[k]) - int(previous[k] if previous is not None else 0)
    kw["interval"] = interval
    return Observation(**kw)


class TrimCallout:
    """One policy per zone, fed every ``tick``.  Construct it in the manager after
    ``Uma.create``; call :meth:`tick` every ``--trim-interval``."""

    def __init__(self, uma: Trimmable, policy: str, params: Mapping[str, float] | None = None,
                 zones: Sequence[int] = (0, 1, 2)) -> None:
        self.uma = uma
        self.policies: dict[int, Policy] = {z: make_policy(policy, params) for z in zones}
        self.previous: dict[int, dict[str, int]] = {}
        self.interval = 0
        self.totals = {"drained": 0, "prefilled": 0, "percpu_flushes": 0}
        # The first tick would see every counter since the start as one interval;
        # take a baseline now so interval 0 covers only the time since construction.
        for z in self.policies:
            self.previous[z] = dict(uma.observe(z))
        self._own_fails = self._callout_cluster_fails()

    def _callout_cluster_fails(self) -> int:
        """Failed cluster allocations made by the callout itself (its M_NOWAIT pre-fills,
        counted on the manager's row).  They are not consumer exhaustion: left in
        ``cluster_fails`` a failed pre-fill would trigger an exhaustion drain of what was
        just filled.  0 when the trimmable has no arena (a test fake)."""
        np_ = getattr(self.uma, "np", None)
        g = getattr(self.uma, "geometry", None)
        if np_ is None or g is None:
            return 0
        return int(np_("uc_fails")[ZONE_CLUSTER * g.rows + g.ncpus])

    @property
    def exhaustion_drain(self) -> bool:
        """Whether the chosen policy wants the c. 2007 inline drain (``UmaConfig.exhaustion_drain``)."""
        return any(p.exhaustion_drain for p in self.policies.values())

    def tick(self) -> list[Tick]:
        """Observe every zone, decide, apply; return what happened per zone."""
        out: list[Tick] = []
        own = self._callout_cluster_fails()
        own_delta, self._own_fails = own - self._own_fails, own
        for z, policy in self.policies.items():
            raw = dict(self.uma.observe(z))
            obs = observation_from(raw, self.previous.get(z), self.interval)
            self.previous[z] = raw
            if own_delta > 0:
                obs = replace(obs, cluster_fails=max(0, obs.cluster_fails - own_delta))
            decision = policy.decide(obs)
            done: Mapping[str, int] = {}
            if decision != Decision():
                done = self.uma.apply(z, drain_buckets=decision.drain_buckets,
                                      prefill_buckets=decision.prefill_buckets,
                                      drain_percpu=decision.drain_percpu)
                self.totals["drained"] += int(done.get("drained", 0))
                self.totals["prefilled"] += int(done.get("prefilled", 0))
                self.totals["percpu_flushes"] += int(decision.drain_percpu)
            out.append(Tick(obs, decision, done))
        self.interval += 1
        return out

    def summary(self) -> dict[str, Any]:
        """What the policy did over the run (for run.json): items drained and pre-filled."""
        return {"intervals": self.interval, **self.totals}


def policy_wants_exhaustion_drain(policy: str) -> bool:
    """``make_policy(policy).exhaustion_drain``: for building ``UmaConfig`` before any arena exists."""
    return make_policy(policy).exhaustion_drain
