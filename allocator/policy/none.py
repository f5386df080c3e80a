"""``none``: keep everything (FreeBSD -CURRENT, Dec 2005).

Rule: never drain, never pre-fill, never flush per-CPU buckets.  In 2005 a zone's
full-bucket list went back to the keg only through ``zone_drain`` under VM page
shortage, which a machine stuck at ``nmbclusters`` never reaches (uma.md, "Cache
trimming since then").  This is the baseline every fix is measured against: the
packet zone keeps every packet it ever cached, each holding a cluster.
"""

from __future__ import annotations

from allocator.policy._interface import KEEP, Decision, Observation

PARAMS: dict[str, tuple[float, str]] = {}


class NonePolicy:
    """The 2005 behaviour: the bucket cache is never trimmed."""

    name = "none"
    exhaustion_drain = False

    def __init__(self, params: dict[str, float]) -> None:
        self.params = params

    def decide(self, obs: Observation) -> Decision:
        """Keep everything, whatever the observation."""
        return KEEP
