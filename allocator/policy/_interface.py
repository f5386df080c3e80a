"""The trimming-policy interface: what a policy sees and what it may decide.

Why a separate module: every policy module imports these types, and the package's
``__init__`` imports every policy module to build the registry; keeping the types here
avoids an import cycle.  ``allocator.policy`` re-exports all of it (the public surface).

The mechanism (in the allocator, run by the manager's trim "callout") is, every
``--trim-interval`` and for each zone::

    obs = uma.observe(zone)               # counters since the last interval, then reset
    uma.apply(zone, policy.decide(obs))   # whole buckets: drain, pre-fill, per-CPU flush

A policy is pure decision logic over a sequence of :class:`Observation` values, one
instance per zone, so it can be tested on synthetic sequences without an arena.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

# Zone numbers, as in allocator/layout.py (repeated here so a policy needs no arena).
ZONE_MBUF = 0
ZONE_CLUSTER = 1
ZONE_PACKET = 2


@dataclass(frozen=True)
class Observation:
    """One zone, one trim interval: the numbers every policy decides from.

    Item counts are items, not buckets; ``bucket_size`` converts.  "Cached" means the
    zone's list of full buckets (the depot, in Bonwick's words); per-CPU buckets are
    counted apart in ``percpu``.
    """

    zone: int  #: ZONE_MBUF=0, ZONE_CLUSTER=1, ZONE_PACKET=2
    interval: int  #: interval number (0, 1, 2, ...)
    bucket_size: int  #: the zone's uz_count (items per bucket)
    cached: int  #: items in the zone's full-bucket list now
    percpu: int  #: items in per-CPU buckets now
    imax: int  #: max of ``cached`` during the interval
    imin: int  #: min of ``cached`` during the interval
    bimin: int  #: min of ``cached`` seen by allocations that took a bucket from the list
    fills: int  #: allocation batches that had to go to the keg this interval (misses)
    allocs: int  #: consumer allocations this interval (demand)
    frees: int  #: consumer frees this interval
    overflows: int  #: frees that overflowed past the caches to the slab this interval
    sleepers: int  #: CPUs asleep in zonelimit on the cluster keg now
    cluster_fails: int  #: failed no-wait cluster allocations this interval
    cluster_sleeps: int  #: zonelimit sleeps on the cluster keg this interval


@dataclass(frozen=True)
class Decision:
    """What to do to one zone at the end of an interval.  Counts are whole buckets.

    ``apply`` clamps ``drain_buckets`` to the buckets actually on the full list, so a
    policy that wants the whole list may ask for :func:`whole_list` of the observation.
    """

    drain_buckets: int = 0  #: full buckets to return from the zone's list to the native zones (zfini runs)
    prefill_buckets: int = 0  #: buckets to fill from the native zones (packet zone: mbuf + cluster each)
    drain_percpu: bool = False  #: also flush per-CPU buckets through the safe cross-CPU protocol


KEEP = Decision()  #: the decision that changes nothing


class Policy(Protocol):
    """A trimming policy: one instance per zone, fed one observation per interval."""

    name: str
    exhaustion_drain: bool  #: also drain the packet zone when the cluster zone is exhausted (c. 2007)

    def decide(self, obs: Observation) -> Decision:
        """What to drain or pre-fill now, given this interval's observation."""
        ...


# --- helpers shared by the policies -------------------------------------------------


def cluster_exhausted(obs: Observation) -> bool:
    """True if the cluster zone showed exhaustion this interval: a CPU asleep in
    ``zonelimit`` now, a zonelimit sleep, or a failed no-wait cluster allocation.
    This is the c. 2007 trigger (``uma_zone_exhausted(zone_clust)``)."""
    return obs.sleepers > 0 or obs.cluster_fails > 0 or obs.cluster_sleeps > 0


def whole_list(obs: Observation) -> int:
    """Buckets to ask for to empty the whole full-bucket list.

    Full buckets hold ``bucket_size`` items, except buckets filled before ``uz_count``
    grew, which are smaller; ``cached`` is a safe upper bound on the number of buckets
    (each holds at least one item) and ``apply`` clamps it to the list's length."""
    return obs.cached


def buckets_above(items: int, target: int, bucket_size: int) -> int:
    """Whole buckets that can leave a cache of ``items`` without taking it below
    ``target``: floor((items - target) / bucket_size), never negative."""
    if items <= target or bucket_size <= 0:
        return 0
    return (items - target) // bucket_size


def buckets_to_reach(items: int, target: int, bucket_size: int) -> int:
    """Whole buckets needed to raise a cache of ``items`` to at least ``target``:
    ceil((target - items) / bucket_size), never negative."""
    if items >= target or bucket_size <= 0:
        return 0
    return -(-(target - items) // bucket_size)


def check_params(name: str, given: dict[str, float], known: dict[str, tuple[float, str]]) -> dict[str, float]:
    """The policy's parameters: defaults overridden by ``given``; an unknown name is a
    ValueError whose message names the policy and what is allowed (the CLI turns it
    into a usage error)."""
    unknown = sorted(set(given) - set(known))
    if unknown:
        allowed = ", ".join(sorted(known)) or "none"
        raise ValueError(f"policy {name!r} has no parameter {unknown[0]!r} (allowed: {allowed})")
    out = {k: float(v[0]) for k, v in known.items()}
    out.update({k: float(v) for k, v in given.items()})
    return out
