"""``median``: size the cache by the median and deviation of recent demand (the Dec 2005 proposal).

In Dec 2005 the zonelimit thread proposed returning packet-zone items to their native
zones, sizing the packet cache by "a median and positive/negative deviation method"
rather than high/low watermarks, with refills and drains in batches.  As far as is
known it was never built; this module is that proposal made precise.

Definitions (one instance per zone; every count is in items unless it says buckets)
-------------------------------------------------------------------------------------
``bs``
    the zone's bucket size, ``obs.bucket_size``.
demand ``d_i`` of interval i
    how far allocations drew the zone's full-bucket list down from its peak, plus the
    batches that missed it: ``d_i = max(0, imax_i - bimin_i) + m * bs * fills_i`` when
    ``allocs_i > 0``, else 0.  ``imax - bimin`` is the cache's working swing (as in
    FreeBSD 2021); ``fills`` are allocation batches that found the list empty and went
    to the keg, i.e. demand the cache did not cover, weighted by ``m`` (parameter
    ``miss_weight``, default 0: measured on the reference shapes, counting misses made
    the band, and the pre-fills it drives, larger than any other policy's cache without
    a throughput gain; results/reference/policies/README.md).  Frees alone are not demand.
window ``W``
    the last ``W`` demands, ``d_{i-W+1} .. d_i`` (fewer until W intervals have been
    seen), and likewise the last W allocation counts.  Parameter ``window``, default 8.
median ``M``
    the median of the demand window (mean of the two middle values for an even count).
deviation ``D``
    the median absolute deviation (MAD): ``median(|d - M|)`` over the window,
    unscaled.  MAD ignores a lone spike or gap that would drag a mean/stddev band.
factor ``k``
    parameter ``k``, default 1.0.  The band is ``[lo, hi]`` with
    ``hi = M + k * D`` and ``lo = max(0, M - k * D)``.
quiet interval
    ``allocs_i <= q * median(allocs_{i-W} .. allocs_{i-1})`` (the previous W intervals;
    ``allocs_i == 0`` is always quiet): the load has dropped to a trickle.  Parameter
    ``quiet`` (q), default 0.1.

Rule, at the end of interval i (after appending ``d_i`` to the window), in order
-------------------------------------------------------------------------------
1. **Exhaustion** (packet and cluster zones): if the cluster zone showed exhaustion
   this interval (a sleeper in zonelimit now, a zonelimit sleep, or a failed no-wait
   cluster allocation), drain the whole full-bucket list and flush the per-CPU buckets
   (if ``percpu``).  ``exhaustion_drain`` is set too, so the allocator also drains the
   packet zone inline the moment the cluster keg is found exhausted (c. 2007).
2. **Quiet**: the load has dropped, so the working set is (nearly) empty: drain the
   whole list and, if ``percpu`` and per-CPU buckets hold items, flush them.  This
   bounds recovery after the load drops to about one interval, and is the only rule
   that reaches the per-CPU buckets a moving load leaves behind.
3. **Drain** above the band: if ``cached > hi``, drain ``floor((cached - hi) / bs)``
   whole buckets (the surplus, leaving at least ``hi`` items).
4. **Pre-fill** below the band (packet zone only, as the proposal says: the other
   zones' fills are cheap single-keg fills, and pre-filling the cluster zone would
   only move clusters from the keg into another cache): if ``cached < lo``, the cache
   missed this interval (``fills > 0``) and no cluster pressure was seen, fill
   ``min(max_prefill, ceil((lo - cached) / bs))`` whole buckets from the native zones
   (a packet-zone bucket takes an mbuf and a cluster per item), so that the next
   interval's allocations stay cache hits instead of each CPU filling from the keg
   under the keg lock.  Parameter ``max_prefill`` (buckets per interval; default 0,
   pre-filling off: on the reference shapes every pre-filled bucket showed up as
   stranded clusters, one bucket enough to lose the steady shape, while the throughput
   it could buy stayed below the noise; results/reference/policies/README.md).
5. Otherwise keep everything.

Parameters: ``window`` (W, intervals, >= 1), ``k`` (>= 0), ``quiet`` (0 <= q < 1),
``max_prefill`` (buckets, >= 0), ``miss_weight`` (>= 0), ``percpu`` (0 or 1, default 1:
flush per-CPU buckets on quiet and exhaustion intervals).
"""

from __future__ import annotations

from collections import deque
from statistics import median

from allocator.policy._interface import (
    KEEP,
    ZONE_CLUSTER,
    ZONE_PACKET,
    Decision,
    Observation,
    buckets_above,
    buckets_to_reach,
    cluster_exhausted,
    whole_list,
)

PARAMS: dict[str, tuple[float, str]] = {
    "window": (8.0, "W: how many recent intervals the median is taken over"),
    "k": (1.0, "band half-width in MADs: drain above median + k*MAD, pre-fill below median - k*MAD"),
    "quiet": (0.1, "an interval with at most this fraction of the median allocations drains everything"),
    "max_prefill": (0.0, "at most this many buckets pre-filled per interval (0, the default: never pre-fill)"),
    "miss_weight": (0.0, "weight of keg fills (misses, in buckets) in the demand (0: the list swing alone)"),
    "percpu": (1.0, "1: also flush per-CPU buckets on quiet intervals and on cluster exhaustion"),
}


def demand(obs: Observation, miss_weight: float = 0.0) -> int:
    """Items the zone's allocations drew through its list this interval: the swing
    ``imax - bimin`` plus ``miss_weight * bucket_size`` per keg fill; 0 without allocations."""
    if obs.allocs <= 0:
        return 0
    misses = max(1, obs.bucket_size) * max(0, obs.fills)
    return max(0, obs.imax - obs.bimin) + int(miss_weight * misses)


def band(window: list[int] | deque[int], k: float) -> tuple[float, float, float, float]:
    """(median, MAD, lo, hi) of a non-empty window of demands."""
    m = float(median(window))
    dev = float(median(abs(d - m) for d in window))
    return m, dev, max(0.0, m - k * dev), m + k * dev


class MedianPolicy:
    """Keep the cache inside median(demand) +/- k * MAD, in whole buckets."""

    name = "median"
    exhaustion_drain = True

    def __init__(self, params: dict[str, float]) -> None:
        window = int(params["window"])
        self.k = params["k"]
        self.quiet = params["quiet"]
        self.max_prefill = int(params["max_prefill"])
        self.miss_weight = params["miss_weight"]
        self.percpu = params["percpu"] >= 1
        if window < 1 or self.k < 0 or self.max_prefill < 0 or not 0 <= self.quiet < 1 or self.miss_weight < 0:
            raise ValueError(
                f"policy 'median' needs window >= 1, k >= 0, 0 <= quiet < 1, max_prefill >= 0, "
                f"miss_weight >= 0 (got window={window}, k={self.k}, quiet={self.quiet}, "
                f"max_prefill={self.max_prefill}, miss_weight={self.miss_weight})")
        self.demands: deque[int] = deque(maxlen=window)  #: the last W demands
        self.allocs: deque[int] = deque(maxlen=window)  #: the last W allocation counts
        self.lo = 0.0  #: the band as of the last decision (for reports and tests)
        self.hi = 0.0

    def is_quiet(self, allocs: int) -> bool:
        """Rule 2's test: no allocation, or at most ``quiet`` x the recent median."""
        if allocs <= 0:
            return True
        return bool(self.allocs) and allocs <= self.quiet * median(self.allocs)

    def decide(self, obs: Observation) -> Decision:
        """Record this interval's demand, then apply rules 1-5 of the module docstring."""
        quiet = self.is_quiet(obs.allocs)
        self.allocs.append(max(0, obs.allocs))
        self.demands.append(demand(obs, self.miss_weight))
        _, _, self.lo, self.hi = band(self.demands, self.k)
        bs = max(1, obs.bucket_size)
        if obs.zone in (ZONE_PACKET, ZONE_CLUSTER) and cluster_exhausted(obs):
            return Decision(drain_buckets=whole_list(obs), drain_percpu=self.percpu)
        if quiet:
            flush = self.percpu and obs.percpu > 0
            if obs.cached > 0 or flush:
                return Decision(drain_buckets=whole_list(obs), drain_percpu=flush)
            return KEEP
        hi = int(self.hi)  # floor: the surplus above the band is whole items
        if obs.cached > hi:
            return Decision(drain_buckets=buckets_above(obs.cached, hi, bs))
        lo = int(-(-self.lo // 1))  # ceil
        if (obs.zone == ZONE_PACKET and obs.cached < lo and obs.fills > 0
                and not cluster_exhausted(obs)):
            n = min(self.max_prefill, buckets_to_reach(obs.cached, lo, bs))
            return Decision(prefill_buckets=n)
        return KEEP
