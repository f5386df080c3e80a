"""``depot``: reap what sat unused for a whole interval (Bonwick & Adams, USENIX 2001).

"Magazines and Vmem" (the Solaris/illumos kmem depot): each magazine list records the
minimum number of magazines it held during an interval (the working-set low-water
mark); at the next update the previous minimum becomes the reap limit, and a reap
frees min(reap limit, current minimum) magazines: those nobody touched for a whole
interval (``kmem_depot_ws_update`` / ``kmem_depot_ws_reap``).

Rule, with our full buckets as magazines: at the end of interval i let
``m_i = imin_i // bucket_size`` (whole full buckets that stayed on the list throughout
interval i); drain ``min(m_{i-1}, m_i)`` buckets, with ``m_{-1} = 0`` (nothing is
reaped before one full interval has been seen).  Never pre-fills, no exhaustion drain.
The rule lags by design: a bucket must be idle for two consecutive interval minima.

Parameter ``percpu`` (default 0; kmem purges CPU magazines only on a full purge): 1
also flushes per-CPU buckets when the zone saw no allocation during the interval.
"""

from __future__ import annotations

from allocator.policy._interface import Decision, Observation

PARAMS: dict[str, tuple[float, str]] = {
    "percpu": (0.0, "1: also flush per-CPU buckets after an interval with no allocation"),
}


class DepotPolicy:
    """Free min(previous minimum, current minimum) full buckets each interval."""

    name = "depot"
    exhaustion_drain = False

    def __init__(self, params: dict[str, float]) -> None:
        self.percpu = params["percpu"] >= 1
        self.reaplimit = 0  #: the previous interval's minimum, in buckets (ml_reaplimit)

    def decide(self, obs: Observation) -> Decision:
        """Reap min(reaplimit, this interval's minimum); remember this minimum."""
        bs = max(1, obs.bucket_size)
        cur_min = max(0, obs.imin) // bs
        reap = min(self.reaplimit, cur_min)
        self.reaplimit = cur_min
        return Decision(drain_buckets=reap, drain_percpu=self.percpu and obs.allocs == 0 and obs.percpu > 0)
