"""``wss``: trim the bucket cache to a working-set estimate (FreeBSD 2018 / 2021).

FreeBSD (2018) estimated each zone's working set from the
max and min of its cached item count per 20 s period and trimmed cached full buckets
down to it; FreeBSD 13 (2021, ``zone_domain_update_wss``) counts only what allocation
batches took: ``wss = max(3/4 * wss, imax - bimin)``, where ``imax`` is the cache's
maximum during the period and ``bimin`` the minimum seen by allocations that took a
bucket.  The 3/4 lets the estimate decay geometrically after a load drops.

Rule, per interval: ``wss = max(wss * 3 // 4, max(0, imax - bimin))`` (integer
arithmetic, as in the kernel); then drain the whole buckets above it:
``floor((cached - wss) / bucket_size)`` when ``cached > wss``.  Never pre-fills.
Exhaustion drain as well (``exhaustion_drain`` is set, and on the packet zone a
cluster-exhausted interval drains the whole list), as modern kern_mbuf.c still does.

Parameter ``percpu`` (default 0; FreeBSD flushes per-CPU caches only on a full
reclaim): 1 also flushes per-CPU buckets when the estimate has decayed to zero or on
the exhaustion drain.
"""

from __future__ import annotations

from allocator.policy._interface import (
    ZONE_PACKET,
    Decision,
    Observation,
    buckets_above,
    cluster_exhausted,
    whole_list,
)

PARAMS: dict[str, tuple[float, str]] = {
    "percpu": (0.0, "1: also flush per-CPU buckets when wss reaches 0 or on an exhaustion drain"),
}


class WssPolicy:
    """Trim to wss = max(3/4 wss, imax - bimin)."""

    name = "wss"
    exhaustion_drain = True

    def __init__(self, params: dict[str, float]) -> None:
        self.percpu = params["percpu"] >= 1
        self.wss = 0  #: the working-set estimate in items (uzd_wss)

    def decide(self, obs: Observation) -> Decision:
        """Update the estimate, then drain the whole buckets above it."""
        self.wss = max(self.wss * 3 // 4, max(0, obs.imax - obs.bimin))
        if obs.zone == ZONE_PACKET and cluster_exhausted(obs):
            return Decision(drain_buckets=whole_list(obs), drain_percpu=self.percpu)
        n = buckets_above(obs.cached, self.wss, obs.bucket_size)
        flush = self.percpu and self.wss == 0 and obs.percpu > 0
        return Decision(drain_buckets=n, drain_percpu=flush)
