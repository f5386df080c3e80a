"""Buckets: arrays of item indices with a count (uma_int.h struct uma_bucket).

A bucket has ``BUCKET_MAX`` slots of storage in the arena (``ub_bucket``) and a
capacity ``ub_entries`` chosen by :func:`bucket_select` from the bucket zones of
uma_core.c (16/32/64/128).  Unused buckets sit in one pool, our stand-in for the
bucket zones, under their own lock.  ``bucket_alloc`` can fail, as FreeBSD's M_NOWAIT
bucket allocation can; callers then fall back to the slab.
"""

from __future__ import annotations

from allocator.layout import BUCKET_SIZES, LOCK_BUCKET

from .context import Context
from .lock import P_BUCKET_ALLOC, P_BUCKET_FREE


def bucket_select(count: int) -> int:
    """The capacity of the smallest bucket zone holding ``count`` items."""
    for size in BUCKET_SIZES:
        if size >= count:
            return size
    return BUCKET_SIZES[-1]


class BucketOps(Context):
    """Bucket pool operations (any context; takes the bucket lock)."""

    def bucket_alloc(self, count: int) -> int:
        """A fresh empty bucket sized for ``count`` items, or -1 if none is left."""
        self.lock(LOCK_BUCKET, P_BUCKET_ALLOC)
        b = self.ub_pool[0]
        if b >= 0:
            self.ub_pool[0] = self.ub_link[b]
            self.ub_pool[1] -= 1
        self.unlock(LOCK_BUCKET)
        if b >= 0:
            self.ub_cnt[b] = 0
            self.ub_entries[b] = bucket_select(count)
            self.ub_link[b] = -1
        return b

    def bucket_free(self, b: int) -> None:
        """Return an empty bucket to the pool."""
        self.ub_cnt[b] = 0
        self.lock(LOCK_BUCKET, P_BUCKET_FREE)
        self.ub_link[b] = self.ub_pool[0]
        self.ub_pool[0] = b
        self.ub_pool[1] += 1
        self.unlock(LOCK_BUCKET)
