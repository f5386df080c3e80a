"""Zones: the front end, with per-CPU caches and the zone bucket lists
(uma_core.c of Dec 2005: uma_zalloc_arg, zone_alloc_bucket, uma_zalloc_internal,
uma_zfree_arg, uma_zfree_internal, bucket_cache_drain, cache_drain).

The per-CPU cache of zone ``z`` on CPU ``c`` is an alloc bucket and a free bucket
(``uc_allocbucket``/``uc_freebucket`` at row ``z * rows + c``) that only CPU ``c``'s
process touches, without a lock: that process *is* the CPU, so its program order is
the critical section.  Everything else -- the zone's full-bucket list (no bound, no
trimming in 2005) and empty-bucket list, ``uz_count``, fills -- is under the zone
lock, which in 2005 is the keg lock (so ``mbuf`` and ``mbuf_packet`` share it).

Allocation order, free order and the FULL bypass are as in layout.py's summary.  Every
place that drops and re-takes a lock re-checks what it read before ("lost the race?").

Another CPU's per-CPU buckets are never touched directly: a drainer posts a request
(``cpu_drainreq``) that the owner serves at its next :meth:`ZoneOps.serve` (every
worker loop turn, every slow path, and while asleep in zonelimit).  That is the safe
protocol; FreeBSD later did the same by binding the draining thread to each CPU.
"""

from __future__ import annotations

from collections.abc import Callable

from allocator.layout import (
    BUCKET_MAX,
    HDR_KNOBS,
    KNOB_NO_BUCKETS,
    NZONES,
    PANIC_EMPTY_BUCKET,
    UMA_ZFLAG_FULL,
)

from .bucket import BucketOps
from .fastpath import FastPath
from .keg import M_NOWAIT, M_WAITOK
from .limit import LimitOps
from .lock import (
    P_CACHE_DRAIN,
    P_DRAIN,
    P_FILL,
    P_OBSERVE,
    P_PREFILL,
    P_ZALLOC,
    P_ZALLOC_INTERNAL,
    P_ZFREE,
    P_ZFREE_INTERNAL,
)
from .workingset import FETCH_ALLOC, FETCH_RECLAIM, PUT_FRESH, PUT_SHIFT, PUT_WS, WorkingSetOps

Ctor = Callable[[int, int, int], int]  # (item, udata, flags) -> 0 or errno
Dtor = Callable[[int, int], None]  # (item, udata)
Zinit = Callable[[int, int], int]  # (item, flags) -> 0 or errno
Zfini = Callable[[int], None]  # (item)


class ZoneOps(LimitOps, BucketOps, WorkingSetOps):
    """Zone allocation and free for one CPU context."""

    _ctor: list[Ctor | None]
    _dtor: list[Dtor | None]
    _zinit: list[Zinit | None]
    _zfini: list[Zfini | None]

    def panic(self, kind: int, zone: int, item: int, other: int = -1) -> None:
        """Record a panic and raise it (implemented in debug.py)."""
        raise NotImplementedError

    # --- the fast paths -----------------------------------------------------------------
    # The per-CPU cache hit is allocator/fastpath.py's FastPath (compiled when built: one
    # source, two speeds).  bind_fast_path() stores its bound methods as the *instance*
    # attributes ``zalloc``/``zfree``/``serve``, so a consumer's call skips this class.
    # The methods below are the same operations for the class (INVARIANTS calls them as
    # the unchecked pop); both run the one FastPath.
    _fast: FastPath

    def zalloc(self, z: int, flags: int = M_WAITOK, udata: int = -1) -> int:
        """uma_zalloc_arg: an item of zone ``z``, or -1 (M_NOWAIT at the limit)."""
        return int(self._fast.zalloc(z, flags, udata))

    def zfree(self, z: int, item: int, udata: int = -1) -> None:
        """uma_zfree_arg: give ``item`` back to zone ``z``."""
        self._fast.zfree(z, item, udata)

    def bind_fast_path(self, fast: FastPath) -> None:
        """Make ``fast`` this context's fast path (once, at creation)."""
        self._fast = fast
        self.zalloc = fast.zalloc  # type: ignore[method-assign]
        self.zfree = fast.zfree  # type: ignore[method-assign]
        self.serve = fast.serve  # type: ignore[method-assign]

    # --- zone list helpers (zone lock held) -----------------------------------------------
    def zone_put_bucket(self, z: int, b: int, how: int) -> None:
        """Push full bucket ``b`` on zone ``z``'s list (LIFO, as LIST_INSERT_HEAD in 2005
        and STAILQ_INSERT_HEAD in FreeBSD main) and record the event for the working-set
        statistics: ``how`` is PUT_WS, PUT_SHIFT or PUT_FRESH (allocator/workingset.py)."""
        self.ub_link[b] = self.uz_full_head[z]
        self.uz_full_head[z] = b
        self.uz_full_cnt[z] += 1
        cnt = self.ub_cnt[b]
        self.uz_full_items[z] += cnt
        self.ws_put(z, b, cnt, how)

    def zone_fetch_bucket(self, z: int, how: int) -> int:
        """Pop the head of zone ``z``'s full list, or -1; ``how`` is FETCH_ALLOC or
        FETCH_RECLAIM (a drain: the working-set bounds move down with it)."""
        b = self.uz_full_head[z]
        if b < 0:
            return -1
        self.uz_full_head[z] = self.ub_link[b]
        self.uz_full_cnt[z] -= 1
        cnt = self.ub_cnt[b]
        self.uz_full_items[z] -= cnt
        self.ws_fetch(z, b, cnt, how)
        return b

    def _free_push(self, z: int, b: int) -> None:
        self.ub_link[b] = self.uz_free_head[z]
        self.uz_free_head[z] = b
        self.uz_free_cnt[z] += 1

    def _free_pop(self, z: int) -> int:
        b = self.uz_free_head[z]
        if b >= 0:
            self.uz_free_head[z] = self.ub_link[b]
            self.uz_free_cnt[z] -= 1
        return b

    # --- allocation slow path -----------------------------------------------------------
    def _zalloc_slow(self, z: int, flags: int, udata: int) -> int:
        self.serve()  # a pending drain request (FastPath.serve: one acquire load when none)
        if not self.is_cpu or self.hdr[HDR_KNOBS] & KNOB_NO_BUCKETS:
            return self.zalloc_internal(z, flags, udata)
        k = self._zkeg[z]
        ci = self._ci[z]
        while True:  # zalloc_restart
            ab = self.uc_allocbucket[ci]
            if ab >= 0 and self.ub_cnt[ab] == 0:
                fb = self.uc_freebucket[ci]
                if fb >= 0 and self.ub_cnt[fb] > 0:
                    self.sched_point("bucket swap")
                    self.uc_allocbucket[ci] = fb
                    self.uc_freebucket[ci] = ab
                    return ZoneOps.zalloc(self, z, flags, udata)  # the unchecked pop
            elif ab >= 0:
                return ZoneOps.zalloc(self, z, flags, udata)  # the unchecked pop
            self.lock(k, P_ZALLOC)
            # Our old alloc bucket (empty) goes on the zone's empty list.
            ab = self.uc_allocbucket[ci]
            if ab >= 0:
                self.uc_allocbucket[ci] = -1
                self._free_push(z, ab)
            b = self.zone_fetch_bucket(z, FETCH_ALLOC)
            if b >= 0 and self.ub_cnt[b] == 0:
                # KASSERT(bucket->ub_cnt != 0): only a broken cache protocol (the
                # cache-drain-unsafe injection) can put an empty bucket on this list.
                self.unlock(k)
                self.panic(PANIC_EMPTY_BUCKET, z, b)
            if b >= 0:
                self.sched_point("bucket exchange")
                self.uc_allocbucket[ci] = b
                self.unlock(k)
                return ZoneOps.zalloc(self, z, flags, udata)  # the unchecked pop
            # Bump up our uz_count so we get here less.
            if self.uz_count[z] < BUCKET_MAX:
                self.uz_count[z] += 1
            self.uc_misses[self._sci[z]] += 1
            got = self.zone_alloc_bucket(z, flags)
            self.unlock(k)
            if not got:
                # We may not be able to get a bucket, so return an actual item.
                return self.zalloc_internal(z, flags, udata)
            # Restart: the filled bucket is on the full list for whoever gets there first.

    def zone_alloc_bucket(self, z: int, flags: int, how: int = PUT_FRESH) -> bool:
        """Fill a bucket from the keg and put it on the zone's full list.  Called with
        the zone lock held, returns with it held (drops it around bucket_alloc, zinit
        and any zonelimit sleep).  Fails when the zone already has ``ncpus`` fills
        running (uz_fills) or no item could be had.  ``how``: PUT_FRESH for an
        allocation's fill (the CPU takes it at its restart), PUT_SHIFT for a pre-fill."""
        k = self._zkeg[z]
        origflags = flags
        b = self._free_pop(z)  # try the zone's empty list first: no extra buckets
        if b < 0:
            self.unlock(k)
            b = self.bucket_alloc(self.uz_count[z])
            self.lock(k, P_FILL)
            if b < 0:
                return False
        if self.uz_fills[z] >= self.ncpus:
            self.bucket_free(b)
            return False
        self.uz_fills[z] += 1
        ci = self._ci[z]
        self.uc_fillbucket[ci] = b  # in our hands, on no list: the audit looks here
        cnt = self.ub_cnt
        slots = self.ub_bucket
        base = b * BUCKET_MAX
        maxn = min(self.ub_entries[b], self.uz_count[z])
        saved = cnt[b]
        while cnt[b] < maxn:
            s = self.keg_fetch_slab(k, z, flags)
            if s < 0:
                break
            while self.us_freecount[k][s] and cnt[b] < maxn:
                slots[base + cnt[b]] = self.slab_alloc_item(k, s)
                cnt[b] += 1
            flags |= M_NOWAIT  # don't block on the next fill
        zinit = self._zinit[z]
        if zinit is not None:
            # Safe to unlock: the slabs are on their keg lists and the bucket is ours.
            self.unlock(k)
            i = saved
            n = cnt[b]
            while i < n:
                if zinit(slots[base + i], origflags) != 0:
                    break
                i += 1
            if i != n:
                # Couldn't initialize the whole bucket: put the rest back on the slabs.
                for j in range(i, n):
                    self.zfree_internal(z, slots[base + j], True)
                cnt[b] = i
            self.lock(k, P_FILL)
        self.uz_fills[z] -= 1
        self.uc_fillbucket[ci] = -1
        if cnt[b]:
            self.uz_nfill[z] += 1
            self.zone_put_bucket(z, b, how)
            return True
        self.bucket_free(b)
        return False

    def zalloc_internal(self, z: int, flags: int, udata: int) -> int:
        """uma_zalloc_internal: one item straight from a slab (zinit and ctor run)."""
        k = self._zkeg[z]
        self.lock(k, P_ZALLOC_INTERNAL)
        s = self.keg_fetch_slab(k, z, flags)
        if s < 0:
            self.unlock(k)
            self.uc_fails[self._sci[z]] += 1
            return -1
        item = self.slab_alloc_item(k, s)
        self.unlock(k)
        self.uc_misses[self._sci[z]] += 1
        zinit = self._zinit[z]
        if zinit is not None:
            ci = self._ci[z]
            self.uc_initem[ci] = item  # between keg and zone: the audit looks here
            rc = zinit(item, flags)
            self.uc_initem[ci] = -1
            if rc != 0:
                self.zfree_internal(z, item, True)
                self.uc_fails[self._sci[z]] += 1
                return -1
        self.uc_allocs[self._sci[z]] += 1
        ctor = self._ctor[z]
        if ctor is not None:
            ctor(item, udata, flags)
        return item

    # --- free slow path -------------------------------------------------------------------
    def _zfree_slow(self, z: int, item: int) -> None:
        if not self.is_cpu or self.hdr[HDR_KNOBS] & KNOB_NO_BUCKETS:
            self.zfree_internal(z, item, False)
            return
        k = self._zkeg[z]
        ci = self._ci[z]
        cnt = self.ub_cnt
        while True:  # zfree_restart
            fb = self.uc_freebucket[ci]
            if fb >= 0:
                n = cnt[fb]
                if n < self.ub_entries[fb]:
                    self.ub_bucket[fb * BUCKET_MAX + n] = item
                    cnt[fb] = n + 1
                    return
                ab = self.uc_allocbucket[ci]
                if ab >= 0 and cnt[ab] < n:
                    # Swap them if we have room in the alloc bucket.
                    self.sched_point("bucket swap")
                    self.uc_allocbucket[ci] = fb
                    self.uc_freebucket[ci] = ab
                    continue
            self.lock(k, P_ZFREE)
            fb = self.uc_freebucket[ci]
            self.uc_freebucket[ci] = -1
            if fb >= 0:
                self.sched_point("bucket exchange")
                self.zone_put_bucket(z, fb, PUT_WS)  # the list has no bound and no trimming (2005)
            b = self._free_pop(z)
            if b >= 0:
                self.uc_freebucket[ci] = b
                self.unlock(k)
                continue
            self.unlock(k)
            b = self.bucket_alloc(self.uz_count[z])
            if b >= 0:
                self.lock(k, P_ZFREE)
                self._free_push(z, b)
                self.unlock(k)
                continue
            break
        # If nothing else caught this, we'll just do an internal free.
        self.uz_noverflow[z] += 1
        self.zfree_internal(z, item, False)

    def zfree_internal(self, z: int, item: int, skip_fini: bool) -> None:
        """uma_zfree_internal: zone fini (unless skipped), then back to the slab; at
        the limit, clear FULL if pages dropped below it and wake sleepers."""
        if not skip_fini:
            zfini = self._zfini[z]
            if zfini is not None:
                zfini(item)
        k = self._zkeg[z]
        self.lock(k, P_ZFREE_INTERNAL)
        self.slab_free_item(k, item)
        if self.uk_flags[k] & UMA_ZFLAG_FULL:
            if self.uk_pages[k] < self.uk_maxpages[k] or self._wake_one_clears_full:
                # INJECTED DEFECT wake-one (races.md): the free clears FULL even though
                # the keg is still at its limit, and wakes one sleeper; later frees go
                # to the caches and wake nobody.
                self.uk_flags[k] &= ~UMA_ZFLAG_FULL
            # We can handle one more allocation.
            self.keg_wakeup(k)
        self.unlock(k)

    # --- drains ---------------------------------------------------------------------------
    def bucket_drain(self, z: int, b: int) -> int:
        """Free every item of bucket ``b`` (ours, on no list) to the keg; zfini runs."""
        n = self.ub_cnt[b]
        base = b * BUCKET_MAX
        ci = self._ci[z]
        self.uc_fillbucket[ci] = b
        while self.ub_cnt[b]:
            i = self.ub_cnt[b] - 1
            item = self.ub_bucket[base + i]
            self.ub_cnt[b] = i
            self.zfree_internal(z, item, False)
        self.uc_fillbucket[ci] = -1
        self.uz_ndrained[z] += n
        return n

    def zone_trim(self, z: int, nbuckets: int) -> int:
        """Return up to ``nbuckets`` full buckets from the zone's list to the native
        zones (whole buckets; a packet item's zfini frees its cluster).  Returns the
        number of items returned.  Any context; takes the zone lock."""
        return self.zone_reclaim(z, nbuckets, -1)[1]

    def zone_reclaim(self, z: int, nbuckets: int, target: int, past: bool = False) -> tuple[int, int]:
        """Take buckets off the head of zone ``z``'s list with zone_fetch_bucket(reclaim)
        and free their items to the keg, at most ``nbuckets`` of them and, if
        ``target >= 0``, only while the head bucket fits above ``target`` items:
        FreeBSD main's bucket_cache_reclaim_domain loop ("while ((bucket =
        STAILQ_FIRST(&zdom->uzd_buckets)) != NULL && zdom->uzd_nitems >= target +
        bucket->ub_cnt)").  With ``past``, FreeBSD 2019's bucket_cache_reclaim loop
        instead ("while (zdom->uzd_nitems > target)": the last bucket may take the
        count below the target).  Returns (buckets, items) freed."""
        k = self._zkeg[z]
        items = buckets = 0
        while buckets < nbuckets:
            self.lock(k, P_DRAIN)
            if target >= 0:
                head = self.uz_full_head[z]
                nitems = self.uzd_nitems[z]
                if head < 0 or (nitems <= target if past else nitems < target + self.ub_cnt[head]):
                    self.unlock(k)
                    break
            b = self.zone_fetch_bucket(z, FETCH_RECLAIM)
            if b >= 0:
                self.uc_fillbucket[self._ci[z]] = b  # in hand before the lock drops
            self.unlock(k)
            if b < 0:
                break
            items += self.bucket_drain(z, b)
            self.bucket_free(b)
            buckets += 1
        return buckets, items

    def zone_shrink_bucket(self, z: int) -> None:
        """bucket_cache_reclaim: "Shrink the zone bucket size to ensure that the per-CPU
        caches don't grow too large": uz_count-- down to its initial value."""
        k = self._zkeg[z]
        self.lock(k, P_DRAIN)
        if self.uz_count[z] > self.uz_count_min[z]:
            self.uz_count[z] -= 1
        self.unlock(k)

    def zone_drain(self, z: int) -> int:
        """zone_drain (2005): empty the zone's full-bucket list back to the keg and free
        its empty buckets (bucket_cache_drain), then return wholly free slabs to the VM
        (keg_drain).  Per-CPU buckets are untouched, as in 2005.  Returns items freed."""
        items = self.bucket_cache_drain(z)[1]
        self.zone_keg_drain(z)
        return items

    def bucket_cache_drain(self, z: int) -> tuple[int, int]:
        """bucket_cache_drain (2005): every full bucket's items back to the keg (as
        reclaim fetches), every empty bucket back to the bucket pool.  Returns the
        (full buckets, items) freed."""
        done = self.zone_reclaim(z, 1 << 30, -1)
        k = self._zkeg[z]
        self.lock(k, P_DRAIN)
        freed = []
        while True:
            b = self._free_pop(z)
            if b < 0:
                break
            freed.append(b)
        self.unlock(k)
        for b in freed:
            self.bucket_free(b)
        return done

    def zone_keg_drain(self, z: int) -> int:
        """keg_drain of zone ``z``'s keg under its lock: wholly free slabs back to the
        VM (what frees pages when memory is short).  Returns pages released."""
        k = self._zkeg[z]
        self.lock(k, P_DRAIN)
        n = self.keg_drain(k)
        self.unlock(k)
        return n

    def zone_prefill(self, z: int, nbuckets: int) -> int:
        """Fill up to ``nbuckets`` buckets from the keg (M_NOWAIT: a policy refill must
        never sleep) onto the zone's full list.  Returns items added."""
        k = self._zkeg[z]
        added = 0
        for _ in range(nbuckets):
            self.lock(k, P_PREFILL)
            before = self.uz_full_items[z]
            got = self.zone_alloc_bucket(z, M_NOWAIT, PUT_SHIFT)  # a refill is not demand
            gained = self.uz_full_items[z] - before if got else 0
            self.unlock(k)
            if not got:
                break
            added += max(gained, 0)
        self.uz_nprefill[z] += added
        return added

    def cache_drain(self, row: int, zmask: int) -> None:
        """Flush CPU ``row``'s alloc and free buckets of the zones in ``zmask`` to the
        zone lists.  Only the owner may call this for its own row (via serve()); the
        cache-drain-unsafe injection calls it for another CPU, which is the defect."""
        for z in range(NZONES):
            if not zmask & (1 << z):
                continue
            k = self._zkeg[z]
            ci = z * self.rows + row
            self.lock(k, P_CACHE_DRAIN)
            for arr in (self.uc_allocbucket, self.uc_freebucket):
                b = arr[ci]
                if b >= 0:
                    self.sched_point("cache drain")
                    arr[ci] = -1
                    if self.ub_cnt[b]:
                        self.zone_put_bucket(z, b, PUT_SHIFT)  # ws=false: not demand
                    else:
                        self._free_push(z, b)
            self.unlock(k)

    def serve(self) -> None:
        """Serve pending cross-CPU requests addressed to this CPU (cache drains).
        Workers call this every loop turn; it costs one comparison when idle
        (FastPath.serve: the request is read with an acquire load when compiled)."""
        self._fast.serve()

    # --- trimming observations ------------------------------------------------------------
    def zone_observe(self, z: int, interval_end: bool) -> dict[str, int]:
        """The working-set statistics of zone ``z`` for a policy, under the zone lock.

        ``interval_end`` (the trim callout's period, FreeBSD's zone_timeout): the
        interval's demand extremes, read and reset, and every kernel's periodic update
        (allocator/workingset.py).  Otherwise (a reclaim request from vm_lowmem): only
        FreeBSD main's zone_domain_update_wss, which bucket_cache_reclaim_domain runs
        before it trims; the demand extremes so far are read and kept."""
        k = self._zkeg[z]
        self.lock(k, P_OBSERVE)
        if interval_end:
            out = self.ws_interval_end(z)
        else:
            self.zone_domain_update_wss(z)
            out = self.ws_demand(z)
        out.update(self.ws_state(z))
        out["bucket_size"] = self.uz_count[z]
        self.unlock(k)
        return out

