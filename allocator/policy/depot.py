"""``depot``: reap what fell out of the depot's working set (illumos kmem.c; Bonwick & Adams 2001).

"Magazines and Vmem" (USENIX 2001) and illumos ``usr/src/uts/common/os/kmem.c``
(transcribed from ``illumos/illumos-gate`` @ 03ba8404acefe94916ad776068d4e3f2f585a224): each
cache's depot keeps a list of full magazines with ``ml_total`` (magazines on it) and
``ml_min`` (the fewest it held since the last update; ``kmem_depot_alloc`` lowers it).
Two separate triggers use them:

* **every interval** (``kmem_update`` every ``kmem_reap_interval``, 15 s, ->
  ``kmem_cache_update`` -> ``kmem_depot_ws_update``): ``ml_reaplimit = ml_min;
  ml_min = ml_total``.  Nothing is freed.
* **on memory pressure** (``kmem_reap()``, "Called from the VM system when memory gets
  tight" -> ``kmem_reap_common`` -> ``kmem_reap_start`` -> ``kmem_cache_reap`` ->
  ``kmem_depot_ws_reap``): ``reap = MIN(ml_reaplimit, ml_min)`` magazines, computed
  once, are taken with ``kmem_depot_alloc`` (which lowers ``ml_total`` and ``ml_min``
  as it goes) and destroyed: those nobody touched for the whole previous interval and
  all of the current one.  ``kmem_reap`` throttles itself (a flag cleared
  ``kmem_reap_interval`` after the reap completes); the project's one check per
  interval never asks more often than that.

Here a magazine is a bucket on the zone's full list, whatever its fill, and the
allocator keeps ``ml_total``, ``ml_min`` and ``ml_reaplimit`` and runs
``kmem_depot_ws_update`` at every interval end (allocator/workingset.py).  The page
daemon's low-memory event (allocator/pageout.py; only with a page budget) is
``kmem_reap()``.  Rule:

* interval end: nothing (the allocator updated the working set);
* ``vm_lowmem``: drain ``min(ml_reaplimit, ml_min)`` buckets, then ``keg_drain``
  (illumos frees a slab as soon as its last buffer comes back).

Parameters (both default 0, the kernel's behaviour):

* ``periodic``: 1 also reaps at every interval end (this project's rule before issue 9;
  for comparison, not illumos).
* ``percpu``: 1 also flushes per-CPU buckets after an interval with no allocation
  (illumos purges CPU magazines only when it resizes magazines or destroys the cache).

Left out, with the reason: the empty-magazine list (``cache_empty``) is reaped the same
way in illumos; empty buckets hold no item and no cluster here, so reaping them would
change no figure.  illumos grows the magazine size when depot-lock contention exceeds
``kmem_depot_contention`` (3) per interval (``kmem_cache_update`` ->
``kmem_cache_magazine_resize``: purge every magazine, ``kmem_depot_ws_zero`` +
``kmem_depot_ws_reap``, then the next ``kmem_magtype``); our bucket size is the system
under test's (2005's ``uz_count``, +1 per keg fill up to 128, which spans illumos'
magazine sizes 7..143 for mbuf-sized buffers), and a resize's purge of every CPU's
magazines cannot be done from the manager (the safe cross-CPU protocol only asks each
CPU to flush its own).  The cache's reclaim callback and the defragmenter
(``kmem_cache_reap``'s other steps) have no counterpart in a zone.
"""

from __future__ import annotations

from allocator.policy._interface import KEEP, Decision, Observation, Policy

PARAMS: dict[str, tuple[float, str]] = {
    "periodic": (0.0, "1: also reap at every interval end (not illumos: for comparison)"),
    "percpu": (0.0, "1: also flush per-CPU buckets after an interval with no allocation"),
}


class DepotPolicy(Policy):
    """Reap min(ml_reaplimit, ml_min) buckets when memory is short (kmem_depot_ws_reap)."""

    PARAMS = PARAMS
    name = "depot"
    exhaustion_drain = False

    def __init__(self, params: dict[str, float]) -> None:
        self.periodic = params["periodic"] >= 1
        self.percpu = params["percpu"] >= 1

    def decide(self, obs: Observation) -> Decision:
        """kmem_cache_update: the working-set update is the allocator's; reap only if
        ``periodic``; flush per-CPU buckets after an idle interval if ``percpu``."""
        flush = self.percpu and obs.allocs == 0 and obs.percpu > 0
        if self.periodic:
            d = self.vm_lowmem(obs)
            return Decision(drain_buckets=d.drain_buckets, keg_drain=d.keg_drain, drain_percpu=flush)
        return Decision(drain_percpu=True) if flush else KEEP

    def vm_lowmem(self, obs: Observation) -> Decision:
        """kmem_depot_ws_reap: reap = MIN(ml_reaplimit, ml_min) magazines."""
        reap = min(obs.ml_reaplimit, obs.ml_min)
        return Decision(drain_buckets=reap, keg_drain=True) if reap > 0 else KEEP
