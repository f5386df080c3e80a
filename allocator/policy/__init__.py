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

One registry of policies, read where it is needed (never copied at import): the
built-ins above, in the order of policies.md, and the plugins the tester registered
(stress/plugins.py resolves ``--policy path/to/file.py:Class``, ``module:Class`` and the
``zonelimit.policies`` entry points and calls :func:`register_policy`).  A policy is a
subclass of :class:`Policy` with its parameters in ``PARAMS`` (docs/extending.md)::

    policy_names()            every name and registered spec, built-ins first
    policy_class(name)        the class (ValueError naming what is allowed)
    policy_params(name)       name -> (default, one-line help) of each tuning parameter
    make_policy(name, params) a fresh instance, parameters checked

``POLICY_NAMES`` and ``POLICY_PARAMS`` are the built-ins only (compare's default list
runs them), kept for the scripts that read them.
"""

from __future__ import annotations

from collections.abc import Mapping

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
    "BUILTIN_POLICIES",
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
    "policy_class",
    "policy_names",
    "policy_params",
    "register_policy",
    "whole_list",
]

#: the built-in policies, in the order of policies.md (the order compare runs them in)
BUILTIN_POLICIES: dict[str, type[Policy]] = {
    cls.name: cls
    for cls in (none.NonePolicy, exhaustion.ExhaustionPolicy, watermark.WatermarkPolicy, depot.DepotPolicy,
                wss.WssPolicy, wss2019.Wss2019Policy, median.MedianPolicy)
}

#: every built-in policy name
POLICY_NAMES: tuple[str, ...] = tuple(BUILTIN_POLICIES)

#: per built-in policy, its parameters: name -> (default, one-line help)
POLICY_PARAMS: dict[str, dict[str, tuple[float, str]]] = {n: dict(c.PARAMS) for n, c in BUILTIN_POLICIES.items()}

#: plugin policies, by the spec that selected them (stress/plugins.py registers them)
_plugins: dict[str, type[Policy]] = {}


def register_policy(spec: str, cls: type[Policy]) -> None:
    """Make ``cls`` the policy selected by ``spec`` (a plugin's spec as the user wrote
    it: ``halve``, ``mypkg.trim:Halve``, ``path/to/file.py:Halve``).  A built-in's name
    cannot be taken; registering a spec again replaces its class (a plugin's source
    changed and was loaded again)."""
    if spec in BUILTIN_POLICIES:
        raise ValueError(f"policy {spec!r} is built in; a plugin needs another name")
    if not (isinstance(cls, type) and issubclass(cls, Policy)):
        raise TypeError(f"policy {spec!r}: {cls!r} is not a subclass of allocator.policy.Policy")
    _plugins[spec] = cls


def policy_names() -> tuple[str, ...]:
    """Every policy that can be made now: the built-ins, then the registered plugins."""
    return POLICY_NAMES + tuple(_plugins)


def policy_class(name: str) -> type[Policy]:
    """The class of policy ``name`` (a built-in name or a registered plugin's spec);
    ValueError with a one-line message naming what is allowed."""
    cls = BUILTIN_POLICIES.get(name) or _plugins.get(name)
    if cls is None:
        raise ValueError(f"unknown policy {name!r} (allowed: {', '.join(policy_names())})")
    return cls


def policy_params(name: str) -> dict[str, tuple[float, str]]:
    """The tuning parameters of policy ``name``: parameter -> (default, one-line help)."""
    return dict(policy_class(name).PARAMS)


def make_policy(name: str, params: Mapping[str, float] | None = None) -> Policy:
    """A fresh policy instance (keep one per zone: policies remember past intervals).

    ``params`` overrides the defaults of :func:`policy_params`; an unknown policy or
    parameter, or a value out of range, raises ValueError with a one-line message
    naming what is allowed (the CLI reports it as a usage error, exit 2)."""
    cls = policy_class(name)
    return cls(check_params(name, dict(params or {}), cls.PARAMS))
