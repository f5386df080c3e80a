"""``wss``: FreeBSD main's working-set estimate (sys/vm/uma_core.c since 2021).

Transcribed from ``CHERI-Alliance/freebsd-src`` sys/vm/uma_core.c @
2c440bb08a01d0790f03fef9f35586bf474b03fd -- a fork of freebsd-src (CHERI changes,
none in the functions named here); the index's upstream copy predates the 2021 rework.

The allocator keeps FreeBSD main's per-zone state and updates it on the events
uma_core.c uses (allocator/workingset.py): ``zone_domain_imax_set`` (a put that raises
``imax`` closes an allocation batch: ``wss = max(wss, old_imax - bimin)``, ``bimin =
nitems``), ``cache_alloc`` (a bucket freshly filled from the keg adds its count to
``imax``), ``zone_put_bucket(ws=false)`` and ``zone_fetch_bucket(reclaim=true)`` (a
flush or a reclaim shifts ``imax``, ``bimin``, ``imin`` and ``limin`` with it), and
``zone_domain_update_wss`` at every period and before every reclaim::

    wss   = max(wss * 3/4, imax - bimin)
    m     = imin - wss;  m >= 0: limin = m if limin >= m else (m + 255 * limin) / 256,
                                 timin++
                         else:   limin = timin = 0
    imax -= (imax - nitems + 1) / 2;  imin = bimin = nitems

This policy is the two triggers that decide what is freed:

* **the periodic callout** (``zone_timeout`` every ``UMA_TIMEOUT`` = 20 s; here every
  ``--trim-interval``) -> ``bucket_cache_reclaim_domain(zone, drain=false, trim=false)``:
  "voluntarily reclaim 1/4 (to reduce first spike) of items not used for a long time":
  once ``timin > 900 / UMA_TIMEOUT`` (45 periods), target ``nitems - limin / 4``; head
  buckets are reclaimed while ``nitems >= target + the head bucket's count`` (never
  below the target), then ``keg_drain`` only if a bucket was freed.  Otherwise
  nothing.
* **a reclaim request** (the page daemon's ``vm_lowmem`` -> ``uma_reclaim(
  UMA_RECLAIM_TRIM)`` -> ``zone_trim`` -> ``zone_reclaim`` -> ``bucket_cache_reclaim``):
  ``uz_bucket_size--`` (not below its initial size), then
  ``bucket_cache_reclaim_domain(trim=true)``: target ``wss``, the same loop; then
  ``keg_drain`` (``zone_reclaim`` runs it whatever was freed).  Without a page budget this never happens (the Dec 2005
  machines had memory to spare), so by default a cache is trimmed only by the
  long-term rule and by the c. 2007 exhaustion drain (``exhaustion_drain`` is set, as
  main's kern_mbuf.c drains the packet zone when the cluster zone is exhausted).

Parameters (all default 0, the kernel's behaviour):

* ``periodic``: 1 trims to ``wss`` at every interval end
  (``bucket_cache_reclaim_domain(trim=true)`` from the callout; not the kernel: for
  comparison with this project's rule before issue 9);
* ``percpu``: 1 also flushes per-CPU buckets on a reclaim request (the kernel does
  that only for ``UMA_RECLAIM_DRAIN_CPU``).

Left out, with the reason: NUMA domains (one domain: the arena is one memory), the
cross-domain bucket, SMR zones, and ``uz_bucket_max`` (2005's list has no bound).
"""

from __future__ import annotations

from allocator.policy._interface import KEEP, Decision, Observation, Policy

PARAMS: dict[str, tuple[float, str]] = {
    "periodic": (0.0, "1: also trim to wss at every interval end (not the kernel: for comparison)"),
    "percpu": (0.0, "1: also flush per-CPU buckets on a reclaim request"),
}

UMA_TIMEOUT = 20  #: "#define UMA_TIMEOUT 20 /* Seconds for callout interval. */" (sys/vm/uma_core.c)
LONG_IDLE = 900 // UMA_TIMEOUT  #: "uzd_timin > 900 / UMA_TIMEOUT": 15 minutes of periods


class WssPolicy(Policy):
    """FreeBSD main: long-term trim every period, trim to wss on a reclaim request."""

    PARAMS = PARAMS
    name = "wss"
    exhaustion_drain = True

    def __init__(self, params: dict[str, float]) -> None:
        self.periodic = params["periodic"] >= 1
        self.percpu = params["percpu"] >= 1

    def decide(self, obs: Observation) -> Decision:
        """zone_timeout -> bucket_cache_reclaim_domain(zone, false, false) (the
        estimate was updated by the allocator, zone_domain_update_wss)."""
        if self.periodic:
            target = obs.wss  # trim=true: "we reclaim items in excess of the zone's estimated working set size"
        elif obs.timin > LONG_IDLE:
            target = obs.cached - obs.limin // 4
        else:
            return KEEP
        if target >= obs.cached:
            return KEEP
        return Decision(reclaim_to=target, keg_drain_if_freed=True)

    def vm_lowmem(self, obs: Observation) -> Decision:
        """uma_reclaim(UMA_RECLAIM_TRIM): bucket_cache_reclaim(zone, drain=false)."""
        return Decision(reclaim_to=obs.wss, shrink_bucket=True, keg_drain=True,
                        drain_percpu=self.percpu and obs.percpu > 0)
