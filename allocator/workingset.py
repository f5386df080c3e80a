"""Working-set bookkeeping of a zone's full-bucket list, as three kernels keep it.

Why in the allocator: the statistics a trimming policy decides from are updated on
every bucket that enters or leaves the zone's list, under the zone lock, and FreeBSD's
rules even change the estimate *on a put* (``zone_domain_imax_set``).  A policy that
only saw a snapshot per interval could not reproduce them, and a policy writing its
estimate back would race with those events.  So the allocator keeps each kernel's
per-zone state in the arena and updates it on the events that kernel uses; a policy
(allocator/policy/) decides from it what to reclaim.  Nothing here runs on the
lock-free per-CPU fast path: only when a bucket moves between a CPU and the list.

The events, named after FreeBSD main's ``zone_put_bucket(..., ws)`` and
``zone_fetch_bucket(..., reclaim)``::

    PUT_WS      a consumer's full free bucket (cache_free -> zone_free_bucket(ws=true))
    PUT_SHIFT   a bucket that is not demand: a per-CPU flush (cache_drain_safe_cpu passes
                ws=false), a policy's pre-fill; the bounds move up with it
    PUT_FRESH   a bucket just filled from the keg for an allocation.  In 2005 it goes on
                the list and the filling CPU takes it at its restart; FreeBSD's
                cache_alloc (main and 2019) loads it straight into the CPU (imax +=
                its count).  It is marked ``ub_fresh`` and counts in no estimator's
                item count.
    FETCH_ALLOC  an allocation takes a bucket (zone_fetch_bucket(reclaim=false))
    FETCH_RECLAIM  a drain or trim takes it (zone_fetch_bucket(reclaim=true)): the
                bounds move down with it, so what was reclaimed is never demand

The state kept (layout.py, zone arrays), one set per kernel:

* **interval demand** ``uz_imax, uz_bimin, uz_swing, uz_imin``: FreeBSD main's batch
  measure without its carry-over: ``uz_imax``/``uz_bimin`` are the current allocation
  batch's max and min (a put that raises the max closes the batch, as
  ``zone_domain_imax_set`` does, and its swing ``imax - bimin`` goes into
  ``uz_swing``, the largest closed this interval); ``uz_imin`` the interval's min.
  All reset to the item count at every interval end, and moved by the events above as
  FreeBSD main moves its own, so a drain, flush or pre-fill never reads as demand.
  ``median`` uses ``max(uz_swing, uz_imax - uz_bimin)``.
* **FreeBSD main** (sys/vm/uma_core.c since 2021) ``uzd_nitems, uzd_imax, uzd_imin,
  uzd_bimin, uzd_wss, uzd_limin, uzd_timin``: ``zone_domain_imax_set``,
  ``zone_put_bucket``, ``cache_alloc``, ``zone_fetch_bucket`` and
  ``zone_domain_update_wss`` below.
* **FreeBSD 2019-2020** ``uzd19_imax, uzd19_imin, uzd19_wss`` (the same file then):
  imax raised by ws puts and by ``cache_alloc``'s fresh bucket, imin lowered by
  fetches, both moved down by a reclaim, ``uzd_wss = (4 * (imax - imin) + uzd_wss) / 5``
  at every ``zone_timeout``.
* **illumos** (usr/src/uts/common/os/kmem.c) ``ml_total, ml_min, ml_reaplimit``
  of the full-magazine list, counted in buckets: ``kmem_depot_free``,
  ``kmem_depot_alloc``, ``kmem_depot_ws_update``.

Sources, checked against verbatim excerpts (repository, path, commit):
FreeBSD main = ``CHERI-Alliance/freebsd-src`` sys/vm/uma_core.c @
2c440bb08a01d0790f03fef9f35586bf474b03fd (a fork carrying CHERI changes, none in these
functions; the index's upstream copy predates them); FreeBSD 2019-2020 =
``freebsd/freebsd-src`` sys/vm/uma_core.c @ 175219a4059342859000ce09d48ec9f8d671b852;
illumos = ``illumos/illumos-gate`` usr/src/uts/common/os/kmem.c @
03ba8404acefe94916ad776068d4e3f2f585a224.  tests/kernel_models.py transcribes them and
tests/test_policy_differential.py holds this module to them step for step.
Arithmetic is C ``long`` arithmetic on non-negative values (``//`` is C's ``/`` there).
"""

from __future__ import annotations

from .context import Context

PUT_WS = 0
PUT_SHIFT = 1
PUT_FRESH = 2
FETCH_ALLOC = 0
FETCH_RECLAIM = 1


class WorkingSetOps(Context):
    """The per-zone working-set events, called by zone.py with the zone lock held."""

    def ws_put(self, z: int, b: int, cnt: int, how: int) -> None:
        """A bucket of ``cnt`` items went onto zone ``z``'s full list."""
        if how == PUT_FRESH:
            # cache_alloc (main): "if (new) atomic_add_long(&ZDOM_GET(zone,
            # domain)->uzd_imax, bucket->ub_cnt)"; cache_alloc (2019): "zdom->uzd_imax
            # += bucket->ub_cnt" -- the bucket goes to the CPU, not into the count.
            # illumos: nothing (kmem_cache_alloc without a full magazine takes a single
            # buffer from the slab layer, no depot event).
            self.ub_fresh[b] = 1
            self.uzd_imax[z] += cnt
            self.uzd19_imax[z] += cnt
            self.uz_imax[z] += cnt
            return
        nitems = self.uzd_nitems[z] + cnt
        self.uzd_nitems[z] = nitems
        self.ml_total[z] += 1  # kmem_depot_free: ml_total++
        if how == PUT_WS:
            self.zone_domain_imax_set(z, nitems)  # zone_put_bucket(ws=true)
            if nitems > self.uzd19_imax[z]:  # 2019 zone_put_bucket: ws raises imax
                self.uzd19_imax[z] = nitems
            old = self.uz_imax[z]
            if nitems > old:  # the interval's batch closes as in zone_domain_imax_set
                if old - self.uz_bimin[z] > self.uz_swing[z]:
                    self.uz_swing[z] = old - self.uz_bimin[z]
                self.uz_imax[z] = nitems
                self.uz_bimin[z] = nitems
        else:
            # zone_put_bucket(ws=false): "Shift the bounds of the current WSS interval
            # to avoid perturbing the estimate."  (2019: a ws=false put moved no bound.)
            self.uzd_imax[z] += cnt
            self.uzd_imin[z] += cnt
            self.uzd_bimin[z] += cnt
            self.uzd_limin[z] += cnt
            self.uz_imax[z] += cnt
            self.uz_imin[z] += cnt
            self.uz_bimin[z] += cnt

    def zone_domain_imax_set(self, z: int, nitems: int) -> None:
        """zone_domain_imax_set: a put that raises imax closes the allocation batch:
        the old batch's swing enters wss at once and the next batch starts here."""
        old = self.uzd_imax[z]
        if old >= nitems:
            return
        self.uzd_imax[z] = nitems
        if self.uzd_wss[z] < old - self.uzd_bimin[z]:
            self.uzd_wss[z] = old - self.uzd_bimin[z]
        self.uzd_bimin[z] = nitems

    def ws_fetch(self, z: int, b: int, cnt: int, how: int) -> None:
        """A bucket of ``cnt`` items left zone ``z``'s full list."""
        if self.ub_fresh[b]:
            self.ub_fresh[b] = 0
            if how == FETCH_RECLAIM:
                # A drain took a bucket that was on its way to a CPU (only when another
                # CPU pushed in between): undo cache_alloc's imax add, keeping each
                # kernel's MPASS (main: imax >= nitems; 2019: imax >= imin).
                self.uzd_imax[z] = max(self.uzd_nitems[z], self.uzd_imax[z] - cnt)
                self.uzd19_imax[z] = max(self.uzd19_imin[z], self.uzd19_imax[z] - cnt)
                self.uz_imax[z] = max(self.uzd_nitems[z], self.uz_imax[z] - cnt)
            return
        nitems = self.uzd_nitems[z] - cnt
        self.uzd_nitems[z] = nitems
        total = self.ml_total[z] - 1  # kmem_depot_alloc: --ml_total < ml_min
        self.ml_total[z] = total
        if total < self.ml_min[z]:
            self.ml_min[z] = total
        if how == FETCH_RECLAIM:
            # zone_fetch_bucket(reclaim=true): shift the bounds down with the reclaim.
            k = min(self.uzd_bimin[z], cnt)
            self.uzd_imax[z] -= k
            self.uzd_bimin[z] -= k
            self.uzd_imin[z] -= min(self.uzd_imin[z], cnt)
            if self.uzd_limin[z] >= cnt:
                self.uzd_limin[z] -= cnt
            else:
                self.uzd_limin[z] = 0
                self.uzd_timin[z] = 0
            # 2019 bucket_cache_reclaim: imax -= lmin(imax, tofree); imin likewise.
            self.uzd19_imax[z] -= min(self.uzd19_imax[z], cnt)
            self.uzd19_imin[z] -= min(self.uzd19_imin[z], cnt)
            k = min(self.uz_bimin[z], cnt)
            self.uz_imax[z] -= k
            self.uz_bimin[z] -= k
            self.uz_imin[z] -= min(self.uz_imin[z], cnt)
            return
        # zone_fetch_bucket(reclaim=false): bimin (and imin) follow the count down.
        if self.uzd_bimin[z] > nitems:
            self.uzd_bimin[z] = nitems
            if self.uzd_imin[z] > nitems:
                self.uzd_imin[z] = nitems
        if nitems < self.uzd19_imin[z]:  # 2019 zone_fetch_bucket: "if (zdom->uzd_imin > zdom->uzd_nitems)"
            self.uzd19_imin[z] = nitems
        if self.uz_bimin[z] > nitems:
            self.uz_bimin[z] = nitems
        if self.uz_imin[z] > nitems:
            self.uz_imin[z] = nitems

    def zone_domain_update_wss(self, z: int) -> None:
        """FreeBSD main's zone_domain_update_wss (run by bucket_cache_reclaim_domain:
        every zone_timeout period, and first thing in every reclaim)."""
        nitems = self.uzd_nitems[z]
        imax, imin, bimin = self.uzd_imax[z], self.uzd_imin[z], self.uzd_bimin[z]
        # "Estimate WSS as modified moving average of biggest allocation batches for
        # each period over few minutes."
        wss = max(self.uzd_wss[z] * 3 // 4, imax - bimin)
        self.uzd_wss[z] = wss
        # "Estimate longtime minimum item count as a combination of recent minimum item
        # count, adjusted by WSS for safety, and the modified moving average over the
        # last several hours."  timin: periods since limin tried to go negative.
        m = imin - wss
        if m >= 0:
            limin = self.uzd_limin[z]
            self.uzd_limin[z] = m if limin >= m else (m + limin * 255) // 256
            self.uzd_timin[z] += 1
        else:
            self.uzd_limin[z] = 0
            self.uzd_timin[z] = 0
        # "To reduce period edge effects on WSS keep half of the imax."
        self.uzd_imax[z] = imax - (imax - nitems + 1) // 2
        self.uzd_imin[z] = nitems
        self.uzd_bimin[z] = nitems

    def ws_interval_end(self, z: int) -> dict[str, int]:
        """The end of a trim interval (FreeBSD's zone_timeout, illumos' kmem_update):
        the interval's demand extremes (then reset), and every kernel's periodic
        update: zone_domain_update_wss (main and 2019) and kmem_depot_ws_update."""
        nitems = self.uzd_nitems[z]
        out = self.ws_demand(z)
        self.uz_imax[z] = self.uz_imin[z] = self.uz_bimin[z] = nitems
        self.uz_swing[z] = 0
        self.zone_domain_update_wss(z)
        # 2019 zone_domain_update_wss: wss = imax - imin; imax = imin = nitems;
        # uzd_wss = (4 * wss + uzd_wss) / 5.
        wss19 = self.uzd19_imax[z] - self.uzd19_imin[z]
        self.uzd19_imax[z] = self.uzd19_imin[z] = nitems
        self.uzd19_wss[z] = (4 * wss19 + self.uzd19_wss[z]) // 5
        # kmem_depot_ws_update: ml_reaplimit = ml_min; ml_min = ml_total.
        self.ml_reaplimit[z] = self.ml_min[z]
        self.ml_min[z] = self.ml_total[z]
        return out

    def ws_demand(self, z: int) -> dict[str, int]:
        """The interval's demand statistics so far (zone lock held)."""
        return {"imax": self.uz_imax[z], "imin": self.uz_imin[z], "bimin": self.uz_bimin[z],
                "swing": self.uz_swing[z]}

    def ws_state(self, z: int) -> dict[str, int]:
        """Every kernel's working-set state of zone ``z`` now (zone lock held)."""
        return {
            "cached": self.uzd_nitems[z], "buckets": self.ml_total[z],
            "ws_imax": self.uzd_imax[z], "ws_imin": self.uzd_imin[z], "ws_bimin": self.uzd_bimin[z],
            "wss": self.uzd_wss[z], "limin": self.uzd_limin[z], "timin": self.uzd_timin[z],
            "imax19": self.uzd19_imax[z], "imin19": self.uzd19_imin[z], "wss19": self.uzd19_wss[z],
            "ml_min": self.ml_min[z], "ml_reaplimit": self.ml_reaplimit[z],
        }
