"""``exhaustion``: drain the packet zone when the cluster zone is exhausted (FreeBSD c. 2007).

Rule: if the cluster zone showed exhaustion during the interval (a CPU asleep in
``zonelimit`` on the cluster keg, a zonelimit sleep, or a failed no-wait cluster
allocation), return the packet zone's whole full-bucket list to the native zones
(zfini frees each packet's cluster); otherwise keep everything.  Other zones are never
trimmed.  ``exhaustion_drain`` is set, so the allocator also drains the packet zone
inline when a cluster allocation finds the keg exhausted, as kern_mbuf.c did from
c. 2007 (``mb_dtor_pack``: ``if (uma_zone_exhausted(zone_clust)) zone_drain(zone_pack)``,
and a failed no-wait ``m_getcl`` drains once and retries).  Waking all sleepers is the
era's other fix and is the ``--wakeup all`` knob, not this policy.

Parameter ``percpu`` (default 0, as in 2007): 1 also flushes the per-CPU buckets
through the safe cross-CPU protocol when the drain fires.  On ``vm_lowmem`` the 2007
kernel's ``uma_reclaim`` still ran ``zone_drain`` on every zone, and so does this.
"""

from __future__ import annotations

from allocator.policy._interface import (
    KEEP,
    ZONE_DRAIN,
    ZONE_PACKET,
    Decision,
    Observation,
    Policy,
    cluster_exhausted,
    whole_list,
)

PARAMS: dict[str, tuple[float, str]] = {
    "percpu": (0.0, "1: also flush per-CPU buckets when the exhaustion drain fires"),
}


class ExhaustionPolicy(Policy):
    """Drain the packet zone's list only when the cluster zone runs out."""

    PARAMS = PARAMS
    name = "exhaustion"
    exhaustion_drain = True

    def __init__(self, params: dict[str, float]) -> None:
        self.percpu = params["percpu"] >= 1

    def decide(self, obs: Observation) -> Decision:
        """Whole packet-zone list on cluster exhaustion, nothing otherwise."""
        if obs.zone != ZONE_PACKET or not cluster_exhausted(obs):
            return KEEP
        return Decision(drain_buckets=whole_list(obs), drain_percpu=self.percpu)

    def vm_lowmem(self, obs: Observation) -> Decision:
        """uma_reclaim (2007): zone_drain."""
        return ZONE_DRAIN
