"""Reference models of the kernels' bucket-cache working sets, for the differential tests.

Each class is a transcription of the kernel functions it names, in the kernel's shape:
the same names, the same statements in the same order, the same conditions, C ``long``
arithmetic (every quotient below divides a value that is never negative, so Python's
``//`` is C's ``/`` there), one zone and one domain.  They are written independently
of allocator/workingset.py and allocator/policy/: a test drives a model and the
project's allocator + policy with the same events and requires the same numbers step
for step.

Sources: the verbatim excerpts in the project's kernel notes, each from the stored
index of public GitHub repositories, at the commit its ``read_file`` reported.

* **FreeBSD main** (the 2021 working-set rework: ``uzd_bimin``, ``uzd_limin``,
  ``uzd_timin``): repository ``CHERI-Alliance/freebsd-src``, ``sys/vm/uma_core.c`` at
  commit ``2c440bb08a01d0790f03fef9f35586bf474b03fd`` -- ``zone_domain_imax_set``,
  ``zone_put_bucket``, ``zone_fetch_bucket``, ``cache_alloc``,
  ``zone_domain_update_wss``, ``bucket_cache_reclaim_domain``, ``bucket_cache_reclaim``,
  ``zone_timeout``, ``zone_reclaim``; ``struct uma_zone_domain`` from the same
  repository's ``sys/vm/uma_int.h`` at ``522e4f0e2d6671bb5d2a4679d458ff34d7235382``.
  **This is a fork**, not freebsd/freebsd-src: the index's copy of the upstream file
  predates these functions, so CHERI-Alliance's (which carries CHERI changes, none of
  them inside the functions transcribed here as far as their text shows) is the
  closest named source of modern main.  An unnamed copy in the index has the same
  ``zone_domain_imax_set``.
* **FreeBSD 2019-2020** (``uzd_wss = (4 * wss + uzd_wss) / 5``, trim target
  ``lmax(uzd_wss, uzd_nitems - uzd_imin)``): repository ``freebsd/freebsd-src``
  (upstream), ``sys/vm/uma_core.c`` at ``175219a4059342859000ce09d48ec9f8d671b852``
  (early 2020) -- ``zone_put_bucket``, ``zone_fetch_bucket``, ``cache_alloc``,
  ``zone_domain_update_wss``, ``zone_timeout``, ``bucket_cache_reclaim``,
  ``zone_reclaim``.
* **illumos**: repository ``illumos/illumos-gate``, ``usr/src/uts/common/os/kmem.c`` at
  ``03ba8404acefe94916ad776068d4e3f2f585a224`` -- ``kmem_depot_alloc``,
  ``kmem_depot_free``, ``kmem_depot_ws_update``, ``kmem_depot_ws_reap``; ``kmem_maglist_t``
  from ``usr/src/uts/common/sys/kmem_impl.h`` at ``2af6eb52b537fd75202964edd660905fb4fa601d``.

Left out of every model, as out of the traces' reach: locking (and so the contention
rule ``zone_domain_lock`` uses to grow ``uz_bucket_size``), NUMA domains, SMR sequence
numbers, the cross-domain bucket, ``uz_bucket_max`` / ``uz_bkt_max`` (set only by
``uma_zone_set_maxcache``; no trace reaches a bound), the keg (``keg_drain`` is reported
as "would run", not run), and illumos' empty-magazine list (``cache_empty``), whose
reap frees no buffer.
"""

from __future__ import annotations

from collections import deque

# "#define UMA_TIMEOUT 20 /* Seconds for callout interval. */" -- sys/vm/uma_core.c
# (CHERI-Alliance/freebsd-src @ 2c440bb08a01d0790f03fef9f35586bf474b03fd, and the same
# in freebsd/freebsd-src @ 175219a4059342859000ce09d48ec9f8d671b852).
UMA_TIMEOUT = 20


class UmaZoneDomainMain:
    """FreeBSD main (CHERI-Alliance/freebsd-src @ 2c440bb0): struct uma_zone_domain
    plus the zone's bucket size."""

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
        """zone_domain_imax_set (the atomic_fcmpset loop is one compare here)."""
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
        """zone_put_bucket(zone, domain, bucket, udata, ws)."""
        if ub_cnt == 0:  # "We don't cache empty buckets.  This can happen after a reclaim."
            return  # goto out: bucket_free()
        self.uzd_nitems += ub_cnt
        # "if (__predict_true(zdom->uzd_nitems < zone->uz_bucket_max))": no bound here.
        if ws:
            self.zone_domain_imax_set(self.uzd_nitems)
        else:
            # "Shift the bounds of the current WSS interval to avoid perturbing the
            # estimates."
            self.uzd_imax += ub_cnt
            self.uzd_imin += ub_cnt
            self.uzd_bimin += ub_cnt
            self.uzd_limin += ub_cnt
        # head = bucket->ub_seq == SMR_SEQ_INVALID (no SMR, no KASAN): STAILQ_INSERT_HEAD
        self.uzd_buckets.appendleft(ub_cnt)

    def cache_alloc_new(self, ub_cnt: int) -> None:
        """cache_alloc, a bucket just filled by zone_alloc_bucket (``new``) loaded into
        the CPU's empty alloc bucket: ``if (new) atomic_add_long(&ZDOM_GET(zone,
        domain)->uzd_imax, bucket->ub_cnt)``."""
        self.uzd_imax += ub_cnt

    def zone_fetch_bucket(self, reclaim: bool) -> int | None:
        """zone_fetch_bucket(zone, zdom, reclaim): the bucket's ub_cnt, or None."""
        if not self.uzd_buckets:  # STAILQ_FIRST(&zdom->uzd_buckets) == NULL
            return None
        ub_cnt = self.uzd_buckets.popleft()  # STAILQ_REMOVE_HEAD
        assert self.uzd_nitems >= ub_cnt  # KASSERT "item count underflow"
        assert ub_cnt > 0  # KASSERT "empty bucket in bucket cache"
        self.uzd_nitems -= ub_cnt
        if reclaim:
            # "Shift the bounds of the current WSS interval to avoid perturbing the
            # estimates."
            cnt = min(self.uzd_bimin, ub_cnt)  # lmin
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
        """zone_domain_update_wss."""
        assert self.uzd_imax >= self.uzd_nitems  # MPASS
        assert self.uzd_nitems >= self.uzd_bimin  # MPASS
        assert self.uzd_bimin >= self.uzd_imin  # MPASS
        # "Estimate WSS as modified moving average of biggest allocation batches for
        # each period over few minutes (UMA_TIMEOUT of 20s)."
        self.uzd_wss = max(self.uzd_wss * 3 // 4, self.uzd_imax - self.uzd_bimin)  # lmax
        # "Estimate longtime minimum item count as a combination of recent minimum item
        # count, adjusted by WSS for safety, and the modified moving average over the
        # last several hours (UMA_TIMEOUT of 20s).  timin measures time since limin
        # tried to go negative, that means we were dangerously close to or got out of
        # cache."
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

    def bucket_cache_reclaim_domain(self, drain: bool, trim: bool) -> tuple[int, bool]:
        """bucket_cache_reclaim_domain(zone, drain, trim, domain): returns the number of
        buckets freed and the kernel's ``done`` (whether any was)."""
        done = False
        freed = 0
        # (the cross-domain bucket: none here)
        self.zone_domain_update_wss()
        if drain:
            target = 0
        elif trim:
            target = self.uzd_wss
        elif self.uzd_timin > 900 // UMA_TIMEOUT:
            target = self.uzd_nitems - self.uzd_limin // 4
        else:
            return freed, done
        # "while ((bucket = STAILQ_FIRST(&zdom->uzd_buckets)) != NULL &&
        #     zdom->uzd_nitems >= target + bucket->ub_cnt)": never below the target.
        while self.uzd_buckets and self.uzd_nitems >= target + self.uzd_buckets[0]:
            if self.zone_fetch_bucket(True) is None:
                break
            freed += 1  # bucket_free() -> bucket_drain()
            done = True
        return freed, done

    def bucket_cache_reclaim(self, drain: bool) -> int:
        """bucket_cache_reclaim(zone, drain, domain): "Shrink the zone bucket size to
        ensure that the per-CPU caches don't grow too large", then every domain with
        ``trim = true``.  Returns buckets freed."""
        if self.uz_bucket_size > self.uz_bucket_size_min:
            self.uz_bucket_size -= 1
        return self.bucket_cache_reclaim_domain(drain, True)[0]

    def zone_reclaim(self, drain: bool) -> tuple[int, bool]:
        """zone_reclaim(zone, domain, M_NOWAIT, drain), reached from
        uma_reclaim(UMA_RECLAIM_TRIM) -> uma_reclaim_domain_cb -> uma_zone_reclaim_domain:
        bucket_cache_reclaim, then keg_drain for every zone without UMA_ZFLAG_CACHE.
        Returns (buckets freed, keg_drain runs)."""
        return self.bucket_cache_reclaim(drain), True

    def zone_timeout(self) -> tuple[int, bool]:
        """zone_timeout's "trim:" part: "Trim caches not used for a long time."
        ``if (bucket_cache_reclaim_domain(zone, false, false, i) && (zone->uz_flags &
        UMA_ZFLAG_CACHE) == 0) keg_drain(zone->uz_keg, i)``.  Returns (buckets freed,
        keg_drain runs).  (A zone flagged UMA_ZONE_UNMANAGED or UMA_ZONE_NOTRIM skips
        all of it; the mbuf zones are neither, as far as the notes show.)"""
        return self.bucket_cache_reclaim_domain(False, False)


class UmaZoneDomain2019:
    """FreeBSD 2019-2020 (freebsd/freebsd-src @ 175219a4): struct uma_zone_domain of
    the first working-set estimate, plus the zone's bucket size."""

    def __init__(self, uz_bucket_size: int, uz_bucket_size_min: int) -> None:
        self.uzd_buckets: deque[int] = deque()  # TAILQ of ub_cnt, head on the left
        self.uzd_nitems = 0
        self.uzd_imax = 0
        self.uzd_imin = 0
        self.uzd_wss = 0
        self.uz_bucket_size = uz_bucket_size
        self.uz_bucket_size_min = uz_bucket_size_min

    def zone_put_bucket(self, ub_cnt: int, ws: bool) -> None:
        """zone_put_bucket(zone, zdom, bucket, ws)."""
        if ws:
            self.uzd_buckets.appendleft(ub_cnt)  # TAILQ_INSERT_HEAD
        else:
            self.uzd_buckets.append(ub_cnt)  # TAILQ_INSERT_TAIL
        self.uzd_nitems += ub_cnt
        if ws and self.uzd_imax < self.uzd_nitems:
            self.uzd_imax = self.uzd_nitems

    def cache_alloc_new(self, ub_cnt: int) -> None:
        """cache_alloc, a bucket just filled by zone_alloc_bucket loaded into the CPU's
        empty alloc bucket: ``cache->uc_allocbucket = bucket; zdom->uzd_imax +=
        bucket->ub_cnt;``."""
        self.uzd_imax += ub_cnt

    def zone_fetch_bucket(self) -> int | None:
        """zone_fetch_bucket(zone, zdom): the bucket's ub_cnt, or None."""
        if not self.uzd_buckets:  # TAILQ_FIRST(&zdom->uzd_buckets) == NULL
            return None
        ub_cnt = self.uzd_buckets.popleft()  # TAILQ_REMOVE of the first
        assert self.uzd_nitems >= ub_cnt  # MPASS
        self.uzd_nitems -= ub_cnt
        if self.uzd_imin > self.uzd_nitems:
            self.uzd_imin = self.uzd_nitems
        return ub_cnt

    def zone_domain_update_wss(self) -> None:
        """zone_domain_update_wss: "With an update period of 20s (UMA_TIMEOUT), this
        estimate is dominated by zone activity over the last 100s." """
        assert self.uzd_imax >= self.uzd_imin  # MPASS
        wss = self.uzd_imax - self.uzd_imin
        self.uzd_imax = self.uzd_imin = self.uzd_nitems
        self.uzd_wss = (4 * wss + self.uzd_wss) // 5

    def bucket_cache_reclaim(self, drain: bool) -> int:
        """bucket_cache_reclaim(zone, drain): returns buckets freed."""
        freed = 0
        # "If the difference nitems - imin is larger than the WSS estimate, then the
        # estimate will grow at the end of this interval and we ignore the historical
        # average."
        target = 0 if drain else max(self.uzd_wss, self.uzd_nitems - self.uzd_imin)  # lmax
        while self.uzd_nitems > target:
            if not self.uzd_buckets:  # TAILQ_LAST(...) == NULL
                break
            tofree = self.uzd_buckets.pop()  # TAILQ_LAST, TAILQ_REMOVE
            self.uzd_nitems -= tofree
            # "Shift the bounds of the current WSS interval to avoid perturbing the
            # estimate."
            self.uzd_imax -= min(self.uzd_imax, tofree)  # lmin
            self.uzd_imin -= min(self.uzd_imin, tofree)
            freed += 1  # bucket_drain(); bucket_free()
        # "Shrink the zone bucket size to ensure that the per-CPU caches don't grow too
        # large."
        if self.uz_bucket_size > self.uz_bucket_size_min:
            self.uz_bucket_size -= 1
        return freed

    def zone_reclaim(self, drain: bool) -> tuple[int, bool]:
        """zone_reclaim(zone, M_NOWAIT, drain) from uma_reclaim(UMA_RECLAIM_TRIM) ->
        zone_trim: bucket_cache_reclaim, then keg_drain (no UMA_ZFLAG_CACHE).  Returns
        (buckets freed, keg_drain runs)."""
        return self.bucket_cache_reclaim(drain), True

    def zone_timeout(self) -> tuple[int, bool]:
        """zone_timeout's "update_wss:" part: the estimate only, nothing freed."""
        self.zone_domain_update_wss()
        return 0, False


class KmemDepot:
    """illumos (illumos-gate @ 03ba8404): the full-magazine kmem_maglist_t of one
    cache's depot."""

    def __init__(self) -> None:
        self.ml_list: list[int] = []  # the mag_next chain; its head is the list's end
        self.ml_total = 0
        self.ml_min = 0
        self.ml_reaplimit = 0
        self.ml_alloc = 0

    def kmem_depot_alloc(self) -> int | None:
        """kmem_depot_alloc(cp, &cp->cache_full) (the contention count is left out)."""
        if not self.ml_list:  # (mp = mlp->ml_list) == NULL
            return None
        mp = self.ml_list.pop()  # mlp->ml_list = mp->mag_next
        self.ml_total -= 1
        if self.ml_total < self.ml_min:  # "if (--mlp->ml_total < mlp->ml_min)"
            self.ml_min = self.ml_total
        self.ml_alloc += 1
        return mp

    def kmem_depot_free(self, mp: int) -> None:
        """kmem_depot_free(cp, &cp->cache_full, mp)."""
        self.ml_list.append(mp)  # mp->mag_next = mlp->ml_list; mlp->ml_list = mp
        self.ml_total += 1

    def kmem_depot_ws_update(self) -> None:
        """kmem_depot_ws_update, cache_full's half."""
        self.ml_reaplimit = self.ml_min
        self.ml_min = self.ml_total

    def kmem_depot_ws_reap(self) -> int:
        """kmem_depot_ws_reap, cache_full's half: returns magazines destroyed."""
        freed = 0
        reap = min(self.ml_reaplimit, self.ml_min)  # MIN
        # "while (reap-- && (mp = kmem_depot_alloc(cp, &cp->cache_full)) != NULL)"
        while reap != 0:
            reap -= 1
            if self.kmem_depot_alloc() is None:
                break
            freed += 1  # kmem_magazine_destroy()
        return freed
