"""``halve``: an example trimming policy -- give back half of the packet zone's cache.

Rule, at the end of every trim interval, for the packet zone only: when its list of full
buckets holds more than ``keep`` items, drain half of those buckets (rounded down), but
never so many that fewer than ``keep`` items stay cached.  The mbuf and cluster zones
are left alone, and ``vm_lowmem`` keeps the base class's answer (``zone_drain``, as
every kernel did from 2005 to 2018).

A plugin policy is pure decision logic: it reads an ``Observation`` and returns a
``Decision`` (whole buckets); the allocator does the draining.
"""

from __future__ import annotations

from allocator.policy import KEEP, ZONE_PACKET, Decision, Observation, Policy, buckets_above


class HalvePolicy(Policy):
    """Packet zone: above ``keep`` items, drain half of the cached buckets."""

    name = "halve"
    PARAMS = {"keep": (256.0, "items the packet zone may always keep cached")}

    def __init__(self, params: dict[str, float]) -> None:
        super().__init__(params)
        self.keep = int(params["keep"])
        if self.keep < 0:
            raise ValueError(f"policy 'halve' needs keep >= 0 (got {self.keep})")

    def decide(self, obs: Observation) -> Decision:
        if obs.zone != ZONE_PACKET or obs.cached <= self.keep:
            return KEEP
        half = obs.buckets // 2
        most = buckets_above(obs.cached, self.keep, obs.bucket_size)
        n = min(half, most)
        return Decision(drain_buckets=n) if n > 0 else KEEP
