"""``none``: keep everything (FreeBSD -CURRENT, Dec 2005).

Rule: at an interval end never drain, never pre-fill, never flush per-CPU buckets.
In 2005 a zone's full-bucket list went back to the keg only through ``zone_drain``
under VM page shortage (the page daemon -> ``uma_reclaim`` -> ``zone_foreach(
zone_drain)``: ``bucket_cache_drain``, then the keg's free slabs; verbatim in
``TrustedBSD/sebsd`` sys/vm/uma_core.c v1.136 @ fd5de6f587183087cf930779701d5713e8ca64cc,
Feb 2006), which a machine stuck at ``nmbclusters`` never reaches (uma.md, "Cache
trimming since then"): so :meth:`NonePolicy.vm_lowmem` drains the whole list, frees the
empty buckets and returns free slabs to the VM, and that happens only in a run with a
page budget (allocator/pageout.py).  This is the baseline every fix is measured
against: the packet zone keeps every packet it ever cached, each holding a cluster.
"""

from __future__ import annotations

from allocator.policy._interface import KEEP, ZONE_DRAIN, Decision, Observation, Policy

PARAMS: dict[str, tuple[float, str]] = {}


class NonePolicy(Policy):
    """The 2005 behaviour: the bucket cache is never trimmed."""

    PARAMS = PARAMS
    name = "none"
    exhaustion_drain = False

    def __init__(self, params: dict[str, float]) -> None:
        self.params = params

    def decide(self, obs: Observation) -> Decision:
        """Keep everything, whatever the observation."""
        return KEEP

    def vm_lowmem(self, obs: Observation) -> Decision:
        """uma_reclaim (2005): zone_drain."""
        return ZONE_DRAIN
