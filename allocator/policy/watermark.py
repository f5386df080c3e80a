"""``watermark``: fixed high and low watermarks (the approach the Dec 2005 mail rejects).

Rule: at the end of each interval, if the zone's full-bucket list holds more than
``high`` items, drain the fewest whole buckets that bring it to ``low`` items or
fewer (ceil((cached - low) / bucket_size)); otherwise keep everything.  Never
pre-fills.  The 2005 proposal argued against exactly this: fixed marks are either too
high for a quiet machine (clusters stay stranded) or too low for a busy one (the cache
thrashes against the keg), and no single pair fits every load.  It is here to show it.

Parameters: ``high`` and ``low`` in items (defaults 1024 and 256, i.e. 8 and 2
buckets of 128); ``percpu`` (default 0): 1 also flushes per-CPU buckets whenever the
list is drained.  On ``vm_lowmem`` the kernel underneath (2005-2018) runs
``zone_drain``.
"""

from __future__ import annotations

from allocator.policy._interface import KEEP, ZONE_DRAIN, Decision, Observation, Policy

PARAMS: dict[str, tuple[float, str]] = {
    "high": (1024.0, "drain when the zone's bucket list holds more than this many items"),
    "low": (256.0, "drain down to this many items (in whole buckets)"),
    "percpu": (0.0, "1: also flush per-CPU buckets whenever the list is drained"),
}


class WatermarkPolicy(Policy):
    """cached > high: drain down to low, in whole buckets."""

    PARAMS = PARAMS
    name = "watermark"
    exhaustion_drain = False

    def __init__(self, params: dict[str, float]) -> None:
        self.high = int(params["high"])
        self.low = int(params["low"])
        self.percpu = params["percpu"] >= 1
        if self.low < 0 or self.high < self.low:
            raise ValueError(
                f"policy 'watermark' needs 0 <= low <= high (got low={self.low}, high={self.high})")

    def decide(self, obs: Observation) -> Decision:
        """Drain to ``low`` once ``high`` is exceeded."""
        if obs.cached <= self.high:
            return KEEP
        n = -(-(obs.cached - self.low) // max(1, obs.bucket_size))  # ceil: end at or below low
        return Decision(drain_buckets=n, drain_percpu=self.percpu)

    def vm_lowmem(self, obs: Observation) -> Decision:
        """uma_reclaim of the kernel underneath: zone_drain."""
        return ZONE_DRAIN
