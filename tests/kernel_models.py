"""Reference models of the kernels' bucket-cache working sets, for the differential tests.

Each class is a transcription of the kernel functions it names, in the kernel's shape
(same names, same statements in the same order, C ``long`` arithmetic on values that
are never negative where it divides), with one zone and one domain.  They are written
independently of allocator/workingset.py and allocator/policy/: a test drives a model
and the project's allocator + policy with the same events and requires the same
numbers step for step.

Sources (transcribed from memory of the source; this machine has no access to the
repositories, so **the commits could not be pinned from here**):

* FreeBSD ``freebsd-src``, ``sys/vm/uma_core.c`` on main since 2021 (the working-set
  rework of that year: ``uzd_bimin``, ``uzd_limin``, ``uzd_timin``):
  ``zone_domain_imax_set``, ``zone_put_bucket``, ``cache_alloc`` (the freshly filled
  bucket's ``atomic_add_long(&zdom->uzd_imax, bucket->ub_cnt)``), ``zone_fetch_bucket``,
  ``zone_domain_update_wss``, ``bucket_cache_reclaim_domain``, ``bucket_cache_reclaim``,
  ``zone_timeout``.
* FreeBSD ``sys/vm/uma_core.c`` of 2019-2020: ``zone_put_bucket``,
  ``zone_try_fetch_bucket``, ``zone_domain_update_wss``, ``bucket_cache_reclaim``.
* illumos ``illumos-gate``, ``usr/src/uts/common/os/kmem.c``: ``kmem_depot_alloc``,
  ``kmem_depot_free``, ``kmem_depot_ws_update``, ``kmem_depot_ws_reap`` (full-magazine
  list only).

Left out of every model as out of the traces' reach: locking, NUMA domains, SMR
sequence numbers, the cross-domain bucket, ``uz_bucket_max``.
"""

from __future__ import annotations

from collections import deque

UMA_TIMEOUT = 20  # sys/vm/uma_int.h


class UmaZoneDomainMain:
    """FreeBSD main: struct uma_zone_domain plus the zone's bucket size."""

    def __init__(self, uz_bucket_size: int, uz_bucket_size_min: int) -> None:
        self.uzd_buckets: deque[int] = deque()  # STAILQ of ub_cnt, head on the left
        self.uzd_nitems = 0
        self.uzd_imax = 0
        self.uzd_imin = 0
        self.uzd_bimin = 0
        self.uzd_wss = 0
        self.uzd_limin = 0
        self.uzd_timin = 0
        self.uz_bucket_size = uz_bucket_size
        self.uz_bucket_size_min = uz_bucket_size_min

    def zone_domain_imax_set(self, nitems: int) -> None:
        old = self.uzd_imax
        if old >= nitems:
            return
        self.uzd_imax = nitems
        # "We are at new maximum, so do the last WSS update for the old bimin and
        # prepare to measure next allocation batch."
        if self.uzd_wss < old - self.uzd_bimin:
            self.uzd_wss = old - self.uzd_bimin
        self.uzd_bimin = nitems

    def zone_put_bucket(self, ub_cnt: int, ws: bool) -> None:
        if ub_cnt == 0:  # "We don't cache empty buckets."
            return
        self.uzd_nitems += ub_cnt
        if ws:
            self.zone_domain_imax_set(self.uzd_nitems)
        else:
            # "Shift the bounds of the current WSS interval to avoid perturbing the estimate."
            self.uzd_imax += ub_cnt
            self.uzd_imin += ub_cnt
            self.uzd_bimin += ub_cnt
            self.uzd_limin += ub_cnt
        self.uzd_buckets.appendleft(ub_cnt)  # STAILQ_INSERT_HEAD (ub_seq == SMR_SEQ_INVALID)

    def cache_alloc_new(self, ub_cnt: int) -> None:
        """cache_alloc after zone_alloc_bucket, the CPU's alloc bucket still empty:
        ``if (new) atomic_add_long(&ZDOM_GET(zone, domain)->uzd_imax, bucket->ub_cnt)``."""
        self.uzd_imax += ub_cnt

    def zone_fetch_bucket(self, reclaim: bool) -> int | None:
        if not self.uzd_buckets:
            return None
        ub_cnt = self.uzd_buckets.popleft()  # STAILQ_REMOVE_HEAD
        assert self.uzd_nitems >= ub_cnt > 0
        self.uzd_nitems -= ub_cnt
        if reclaim:
            # "Shift the bounds of the current WSS interval to avoid perturbing the estimates."
            cnt = min(self.uzd_bimin, ub_cnt)
            self.uzd_imax -= cnt
            self.uzd_bimin -= cnt
            self.uzd_imin -= min(self.uzd_imin, ub_cnt)
            if self.uzd_limin >= ub_cnt:
                self.uzd_limin -= ub_cnt
            else:
                self.uzd_limin = 0
                self.uzd_timin = 0
        elif self.uzd_bimin > self.uzd_nitems:
            self.uzd_bimin = self.uzd_nitems
            if self.uzd_imin > self.uzd_nitems:
                self.uzd_imin = self.uzd_nitems
        return ub_cnt

    def zone_domain_update_wss(self) -> None:
        assert self.uzd_imax >= self.uzd_nitems >= self.uzd_bimin >= self.uzd_imin
        self.uzd_wss = max(self.uzd_wss * 3 // 4, self.uzd_imax - self.uzd_bimin)
        m = self.uzd_imin - self.uzd_wss
        if m >= 0:
            if self.uzd_limin >= m:
                self.uzd_limin = m
            else:
                self.uzd_limin = (m + self.uzd_limin * 255) // 256
            self.uzd_timin += 1
        else:
            self.uzd_limin = 0
            self.uzd_timin = 0
        # "To reduce period edge effects on WSS keep half of the imax."
        self.uzd_imax -= (self.uzd_imax - self.uzd_nitems + 1) // 2
        self.uzd_imin = self.uzd_bimin = self.uzd_nitems

    def bucket_cache_reclaim_domain(self, drain: bool, trim: bool) -> int:
        """Returns the number of buckets freed (the kernel returns whether any was)."""
        freed = 0
        self.zone_domain_update_wss()
        if drain:
            target = 0
        elif trim:
            target = self.uzd_wss
        elif self.uzd_timin > 900 // UMA_TIMEOUT:
            target = self.uzd_nitems - self.uzd_limin // 4
        else:
            return freed
        while self.uzd_buckets and self.uzd_nitems > target:
            if self.zone_fetch_bucket(True) is None:
                break
            freed += 1  # bucket_drain(); bucket_free()
        return freed

    def bucket_cache_reclaim(self, drain: bool) -> int:
        """uma_reclaim(UMA_RECLAIM_TRIM) -> zone_trim -> zone_reclaim -> here."""
        if self.uz_bucket_size > self.uz_bucket_size_min:
            self.uz_bucket_size -= 1
        return self.bucket_cache_reclaim_domain(drain, True)

    def zone_timeout(self) -> int:
        return self.bucket_cache_reclaim_domain(False, False)


class UmaZoneDomain2019:
    """FreeBSD 2019-2020: struct uma_zone_domain of the first working-set estimate."""

    def __init__(self, uz_count: int, uz_count_min: int) -> None:
        self.uzd_buckets: deque[int] = deque()  # TAILQ of ub_cnt, head on the left
        self.uzd_nitems = 0
        self.uzd_imax = 0
        self.uzd_imin = 0
        self.uzd_wss = 0
        self.uz_count = uz_count
        self.uz_count_min = uz_count_min

    def zone_put_bucket(self, ub_cnt: int, ws: bool) -> None:
        if ws:
            self.uzd_buckets.appendleft(ub_cnt)  # TAILQ_INSERT_HEAD
        else:
            self.uzd_buckets.append(ub_cnt)  # TAILQ_INSERT_TAIL
        self.uzd_nitems += ub_cnt
        if ws and self.uzd_imax < self.uzd_nitems:
            self.uzd_imax = self.uzd_nitems

    def zone_try_fetch_bucket(self, ws: bool) -> int | None:
        if not self.uzd_buckets:
            return None
        ub_cnt = self.uzd_buckets.popleft()  # TAILQ_FIRST, TAILQ_REMOVE
        self.uzd_nitems -= ub_cnt
        if ws and self.uzd_imin > self.uzd_nitems:
            self.uzd_imin = self.uzd_nitems
        return ub_cnt

    def zone_domain_update_wss(self) -> None:
        assert self.uzd_imax >= self.uzd_imin
        wss = self.uzd_imax - self.uzd_imin
        self.uzd_imax = self.uzd_imin = self.uzd_nitems
        self.uzd_wss = (4 * wss + self.uzd_wss) // 5

    def bucket_cache_reclaim(self, drain: bool) -> int:
        freed = 0
        # "If the difference nitems - imin is larger than the WSS estimate, then the
        # estimate will grow at the end of this interval and we ignore the historical
        # average."
        target = 0 if drain else max(self.uzd_wss, self.uzd_nitems - self.uzd_imin)
        while self.uzd_nitems > target:
            if not self.uzd_buckets:
                break
            tofree = self.uzd_buckets.pop()  # TAILQ_LAST
            self.uzd_nitems -= tofree
            # "Shift the bounds of the current WSS interval to avoid perturbing the estimate."
            self.uzd_imax -= min(self.uzd_imax, tofree)
            self.uzd_imin -= min(self.uzd_imin, tofree)
            freed += 1
        # "Shrink the zone bucket size to ensure that the per-CPU caches don't grow too large."
        if self.uz_count > self.uz_count_min:
            self.uz_count -= 1
        return freed

    def zone_timeout(self) -> None:
        self.zone_domain_update_wss()


class KmemDepot:
    """illumos: the full-magazine kmem_maglist_t of one cache's depot."""

    def __init__(self) -> None:
        self.ml_list: list[int] = []  # mag_next chain; the head is the end of the list
        self.ml_total = 0
        self.ml_min = 0
        self.ml_reaplimit = 0
        self.ml_alloc = 0

    def kmem_depot_alloc(self) -> int | None:
        if not self.ml_list:
            return None
        mp = self.ml_list.pop()
        self.ml_total -= 1
        if self.ml_total < self.ml_min:
            self.ml_min = self.ml_total
        self.ml_alloc += 1
        return mp

    def kmem_depot_free(self, mp: int) -> None:
        self.ml_list.append(mp)
        self.ml_total += 1

    def kmem_depot_ws_update(self) -> None:
        self.ml_reaplimit = self.ml_min
        self.ml_min = self.ml_total

    def kmem_depot_ws_reap(self) -> int:
        freed = 0
        reap = min(self.ml_reaplimit, self.ml_min)
        while reap > 0:  # "while (reap-- && (mp = kmem_depot_alloc(cp, ...)) != NULL)"
            reap -= 1
            if self.kmem_depot_alloc() is None:
                break
            freed += 1  # kmem_magazine_destroy()
        return freed
