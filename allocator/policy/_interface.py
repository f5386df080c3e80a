"""The trimming-policy interface: what a policy sees and what it may decide.

Why a separate module: every policy module imports these types, and the package's
``__init__`` imports every policy module to build the registry; keeping the types here
avoids an import cycle.  ``allocator.policy`` re-exports all of it (the public surface).

The mechanism (in the allocator, run by the manager's trim "callout") is, every
``--trim-interval`` and for each zone::

    obs = uma.observe(zone)               # interval end: every kernel's periodic update
    uma.apply(zone, policy.decide(obs))   # whole buckets: reclaim, drain, pre-fill, per-CPU flush

and, when the page daemon finds free pages short (``vm_lowmem``; only with a page
budget), for every zone::

    obs = uma.observe(zone, lowmem=True)  # FreeBSD main's reclaim updates its estimate first
    uma.apply(zone, policy.vm_lowmem(obs))

A policy is pure decision logic over a sequence of :class:`Observation` values, one
instance per zone, so it can be tested on synthetic sequences without an arena.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

# Zone numbers, as in allocator/layout.py (repeated here so a policy needs no arena).
ZONE_MBUF = 0
ZONE_CLUSTER = 1
ZONE_PACKET = 2


@dataclass(frozen=True)
class Observation:
    """One zone, one trim interval: the numbers every policy decides from.

    Item counts are items, not buckets; ``bucket_size`` converts.  "Cached" means the
    zone's list of full buckets (the depot, in Bonwick's words); per-CPU buckets are
    counted apart in ``percpu``.  A bucket just filled from the keg for an allocation
    belongs to the CPU that filled it (FreeBSD main's ``cache_alloc``) and is in none
    of the list's counts.

    The demand statistics ``imax``, ``imin``, ``bimin``, ``swing`` are FreeBSD main's
    allocation batches within the interval (allocator/workingset.py), and move with
    what a policy or the kernel reclaims, flushes or pre-fills, so none of that ever
    reads as demand.  The fields after ``cluster_sleeps`` are each kernel's own
    working-set state, as the allocator keeps it, after this observation's update.
    """

    zone: int  #: ZONE_MBUF=0, ZONE_CLUSTER=1, ZONE_PACKET=2
    interval: int  #: interval number (0, 1, 2, ...)
    bucket_size: int  #: the zone's uz_count (items per bucket)
    cached: int  #: items in the zone's full-bucket list now
    percpu: int  #: items in per-CPU buckets now
    imax: int  #: max of ``cached`` in the current allocation batch, plus every bucket filled from the keg for one
    imin: int  #: min of ``cached`` during the interval
    bimin: int  #: min of ``cached`` seen by the current batch's allocations
    fills: int  #: allocation batches that had to go to the keg this interval (misses)
    allocs: int  #: consumer allocations this interval (demand)
    frees: int  #: consumer frees this interval
    overflows: int  #: frees that overflowed past the caches to the slab this interval
    sleepers: int  #: CPUs asleep in zonelimit on the cluster keg now
    cluster_fails: int  #: failed no-wait cluster allocations this interval
    cluster_sleeps: int  #: zonelimit sleeps on the cluster keg this interval
    swing: int = 0  #: largest ``imax - bimin`` of the batches closed this interval (a put raising imax closes one)
    buckets: int = 0  #: full buckets on the list (illumos' ml_total: magazines, whatever their fill)
    ws_imax: int = 0  #: FreeBSD main uzd_imax (half of imax - nitems kept across periods)
    ws_imin: int = 0  #: FreeBSD main uzd_imin
    ws_bimin: int = 0  #: FreeBSD main uzd_bimin (the current allocation batch's minimum)
    wss: int = 0  #: FreeBSD main uzd_wss, the working-set estimate
    limin: int = 0  #: FreeBSD main uzd_limin, the long-term minimum item count
    timin: int = 0  #: FreeBSD main uzd_timin, periods since limin last went to 0
    imax19: int = 0  #: FreeBSD 2019 uzd_imax (this period's maximum so far, plus every bucket filled from the keg)
    imin19: int = 0  #: FreeBSD 2019 uzd_imin (this period's minimum so far)
    wss19: int = 0  #: FreeBSD 2019 uzd_wss, (4 * (imax - imin) + wss) / 5 per period
    ml_min: int = 0  #: illumos ml_min: fewest buckets on the list this interval
    ml_reaplimit: int = 0  #: illumos ml_reaplimit: the previous interval's ml_min


@dataclass(frozen=True)
class Decision:
    """What to do to one zone now.  Counts are whole buckets.

    Every bucket a decision takes off the list is a reclaim (zone_fetch_bucket with
    reclaim=true): the demand bounds move down with it.  ``apply`` clamps
    ``drain_buckets`` to the buckets actually on the full list, so a policy that wants
    the whole list may ask for :func:`whole_list` of the observation.  Order in
    ``apply``: per-CPU flush request, bucket-size decrement, ``zone_drain`` or the
    reclaim (``drain_buckets`` / ``reclaim_to``), ``keg_drain`` (or ``keg_drain_if_freed``),
    pre-fill.
    """

    drain_buckets: int = 0  #: full buckets to return from the zone's list to the native zones (zfini runs)
    prefill_buckets: int = 0  #: buckets to fill from the native zones (packet zone: mbuf + cluster each)
    drain_percpu: bool = False  #: also flush per-CPU buckets through the safe cross-CPU protocol
    #: >= 0: reclaim head buckets while the head bucket fits above this many items,
    #: ``nitems >= reclaim_to + head's count`` (FreeBSD main's
    #: bucket_cache_reclaim_domain loop: never below the target)
    reclaim_to: int = -1
    #: with ``reclaim_to``: FreeBSD 2019's loop instead, ``while (nitems > target)``
    #: (bucket_cache_reclaim @ 175219a4: the last bucket may take it below)
    reclaim_past: bool = False
    shrink_bucket: bool = False  #: uz_count-- down to its initial size (bucket_cache_reclaim)
    zone_drain: bool = False  #: 2005's zone_drain: the whole list, the empty buckets, then keg_drain
    keg_drain: bool = False  #: afterwards return the keg's wholly free slabs to the VM (keg_drain)
    #: keg_drain only if the reclaim freed a bucket (zone_timeout: "if
    #: (bucket_cache_reclaim_domain(zone, false, false, i) && ...) keg_drain(...)")
    keg_drain_if_freed: bool = False


KEEP = Decision()  #: the decision that changes nothing

#: 2005's answer to vm_lowmem, and every kernel's until 2018: uma_reclaim() ran
#: zone_drain on every zone (bucket_cache_drain, then keg_drain).
ZONE_DRAIN = Decision(zone_drain=True)


class Policy(ABC):
    """A trimming policy: the stable base class of every policy, built-in or plugin.

    One instance per zone (a policy remembers past intervals), fed one
    :class:`Observation` per trim interval (:meth:`decide`) and one per low-memory event
    (:meth:`vm_lowmem`); it answers with a :class:`Decision` and touches nothing else.
    A subclass sets :attr:`name`, declares its tuning parameters in :attr:`PARAMS`
    (each becomes ``--policy-param NAME=VALUE``) and implements :meth:`decide`;
    docs/extending.md walks through one.  What is here is the stable API: a plugin
    written against it keeps working across zonelimit versions of the same major
    version.
    """

    #: the name runs and reports show (a plugin's spec is what selects it)
    name: ClassVar[str] = ""
    #: also drain the packet zone inline when the cluster zone is exhausted (c. 2007's
    #: fix in the allocator itself; ``UmaConfig.exhaustion_drain``)
    exhaustion_drain: ClassVar[bool] = False
    #: tuning parameters: name -> (default, one-line help); values are floats
    PARAMS: ClassVar[Mapping[str, tuple[float, str]]] = {}

    def __init__(self, params: dict[str, float]) -> None:
        """``params`` holds every name of :attr:`PARAMS`, defaults filled in
        (:func:`check_params`); raise ValueError (one line) for a value out of range."""
        self.params = params

    @abstractmethod
    def decide(self, obs: Observation) -> Decision:
        """What to drain or pre-fill now, at the end of an interval (zone_timeout)."""

    def vm_lowmem(self, obs: Observation) -> Decision:
        """What to give back when the page daemon finds free pages short (vm_lowmem).

        The default is every kernel's answer from 2005 to 2018: ``uma_reclaim`` ran
        ``zone_drain`` on every zone (:data:`ZONE_DRAIN`)."""
        return ZONE_DRAIN


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


def check_params(name: str, given: Mapping[str, float], known: Mapping[str, tuple[float, str]]) -> dict[str, float]:
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
