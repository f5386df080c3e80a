"""``wss-2019``: FreeBSD's first working-set estimate (sys/vm/uma_core.c, 2019-2020).

Transcribed from ``freebsd/freebsd-src`` sys/vm/uma_core.c @
175219a4059342859000ce09d48ec9f8d671b852 (upstream, early 2020).

The history ``wss`` replaced, kept so the two can be compared.  State (the allocator's,
allocator/workingset.py): ``imax`` (raised by puts with ``ws=true``, a consumer's free,
and by ``cache_alloc``'s ``zdom->uzd_imax += bucket->ub_cnt`` for a bucket just filled
from the keg), ``imin`` (lowered by an allocation's ``zone_fetch_bucket``), both moved down
by a reclaim (``imax -= lmin(imax, tofree)``, likewise ``imin``); at every
``zone_timeout`` ``zone_domain_update_wss``::

    wss  = imax - imin;  imax = imin = nitems;  uzd_wss = (4 * wss + uzd_wss) / 5

Triggers:

* **the periodic callout**: only that update; nothing is freed.
* **a reclaim request** (``vm_lowmem`` -> ``uma_reclaim(UMA_RECLAIM_TRIM)`` ->
  ``bucket_cache_reclaim(zone, drain=false)``): "If the difference nitems - imin is
  larger than the WSS estimate, then the estimate will grow at the end of this
  interval and we ignore the historical average": ``target = lmax(uzd_wss, nitems -
  imin)``; buckets are reclaimed while ``nitems > target``; then ``uz_count--`` (not
  below its initial size) and ``keg_drain``.

Parameters (default 0, the kernel's behaviour): ``periodic`` (1: also trim at every
interval end, for comparison); ``percpu`` (1: also flush per-CPU buckets on a reclaim
request).  ``exhaustion_drain`` is set (kern_mbuf.c of 2019 drained the packet zone on
cluster exhaustion).

Simplification, with its reason: the 2019 list was a TAILQ; ``ws=false`` puts went to
the tail and a reclaim took buckets from the tail (the least recently used), where our
list (2005's) is LIFO from the head for every put and every fetch.  With full buckets
the counts freed are the same; with partly filled ones they can differ.
"""

from __future__ import annotations

from allocator.policy._interface import KEEP, Decision, Observation, Policy

PARAMS: dict[str, tuple[float, str]] = {
    "periodic": (0.0, "1: also trim at every interval end (not the kernel: for comparison)"),
    "percpu": (0.0, "1: also flush per-CPU buckets on a reclaim request"),
}


class Wss2019Policy(Policy):
    """FreeBSD 2019: update every period, trim to max(wss, nitems - imin) on a reclaim request."""

    PARAMS = PARAMS
    name = "wss-2019"
    exhaustion_drain = True

    def __init__(self, params: dict[str, float]) -> None:
        self.periodic = params["periodic"] >= 1
        self.percpu = params["percpu"] >= 1

    def decide(self, obs: Observation) -> Decision:
        """zone_timeout: the update is the allocator's; trim only if ``periodic``."""
        if not self.periodic:
            return KEEP
        target = max(obs.wss19, obs.cached - obs.imin19)
        return Decision(reclaim_to=target, reclaim_past=True, keg_drain=True) if target < obs.cached else KEEP

    def vm_lowmem(self, obs: Observation) -> Decision:
        """bucket_cache_reclaim(zone, drain=false) of 2019."""
        return Decision(reclaim_to=max(obs.wss19, obs.cached - obs.imin19), reclaim_past=True,
                        shrink_bucket=True, keg_drain=True, drain_percpu=self.percpu and obs.percpu > 0)
