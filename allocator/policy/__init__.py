"""Trimming policies: how much a zone's bucket cache may keep (issues 4 and 9, policies.md).

The pseudo-leak of Dec 2005 is a cache that never gives back what it holds: packets
cached in the packet zone keep their clusters.  A policy decides, at every trim
interval and on every low-memory event, for each zone, how many whole buckets to
return to the native zones (a packet's zfini frees its cluster) or to pre-fill, and
whether to flush the per-CPU buckets through the safe cross-CPU protocol.  The
mechanism, including each kernel's working-set statistics, is the allocator's
(``Uma.observe`` / ``Uma.apply``, allocator/workingset.py); the policies here are pure
decision logic (the callout differences counters into an ``Observation``)::

    policy = make_policy("median", {"k": 2.0})          # one instance per zone
    decision = policy.decide(obs)                       # every --trim-interval
    decision = policy.vm_lowmem(obs)                    # when free pages run short
    uma.apply(zone, decision)

======== =================== ==================================================
name     origin              rule (each module's docstring has the full rule)
======== =================== ==================================================
none     FreeBSD 2005        keep everything; vm_lowmem: zone_drain
exhaust. FreeBSD c. 2007     drain the packet zone when the cluster zone is exhausted
waterm.  rejected in 2005    cached > high: drain down to low
depot    illumos kmem.c      vm_lowmem (kmem_reap): reap min(ml_reaplimit, ml_min) buckets
wss      FreeBSD main 2021   long-term trim after 15 min; vm_lowmem: trim to wss
wss-2019 FreeBSD 2019-2020   vm_lowmem: trim to max(wss, nitems - imin)
median   Dec 2005 proposal   packet zone inside median -/+ k * negative/positive deviation
======== =================== ==================================================

The registry is plain data so that the CLI can offer every parameter as an option
(``POLICY_PARAMS[name][param] = (default, help)``) and a run records them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from allocator.policy import depot, exhaustion, median, none, watermark, wss, wss2019
from allocator.policy._interface import (
    KEEP,
    ZONE_CLUSTER,
    ZONE_DRAIN,
    ZONE_MBUF,
    ZONE_PACKET,
    Decision,
    Observation,
    Policy,
    buckets_above,
    buckets_to_reach,
    check_params,
    cluster_exhausted,
    whole_list,
)

__all__ = [
    "KEEP",
    "POLICY_NAMES",
    "POLICY_PARAMS",
    "ZONE_CLUSTER",
    "ZONE_DRAIN",
    "ZONE_MBUF",
    "ZONE_PACKET",
    "Decision",
    "Observation",
    "Policy",
    "buckets_above",
    "buckets_to_reach",
    "cluster_exhausted",
    "make_policy",
    "whole_list",
]

_REGISTRY: dict[str, tuple[Callable[[dict[str, float]], Policy], dict[str, tuple[float, str]]]] = {
    "none": (none.NonePolicy, none.PARAMS),
    "exhaustion": (exhaustion.ExhaustionPolicy, exhaustion.PARAMS),
    "watermark": (watermark.WatermarkPolicy, watermark.PARAMS),
    "depot": (depot.DepotPolicy, depot.PARAMS),
    "wss": (wss.WssPolicy, wss.PARAMS),
    "wss-2019": (wss2019.Wss2019Policy, wss2019.PARAMS),
    "median": (median.MedianPolicy, median.PARAMS),
}

#: every policy name, in the order of policies.md (the order compare runs them in)
POLICY_NAMES: tuple[str, ...] = tuple(_REGISTRY)

#: per policy, its parameters: name -> (default, one-line help)
POLICY_PARAMS: dict[str, dict[str, tuple[float, str]]] = {n: dict(p) for n, (_, p) in _REGISTRY.items()}


def make_policy(name: str, params: Mapping[str, float] | None = None) -> Policy:
    """A fresh policy instance (keep one per zone: policies remember past intervals).

    ``params`` overrides the defaults of ``POLICY_PARAMS[name]``; an unknown policy or
    parameter, or a value out of range, raises ValueError with a one-line message
    naming what is allowed (the CLI reports it as a usage error, exit 2)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown policy {name!r} (allowed: {', '.join(POLICY_NAMES)})")
    factory, known = _REGISTRY[name]
    return factory(check_params(name, dict(params or {}), known))
