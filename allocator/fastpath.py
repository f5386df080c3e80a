"""The per-operation fast paths of one CPU context: one source, two speeds (issue 15).

What runs on every allocation and free (uma_zalloc_arg / uma_zfree_arg's per-CPU cache
hit, the mbuf ctors and the packet dtor of kern_mbuf.c, m_getcl, m_freem, m_copym and
mb_free_ext of uipc_mbuf.c) is this one class.  It is plain Python and runs as such; when
the package was built with a C compiler, Cython compiles this very file (pure-Python
mode: the types are in ``fastpath.pxd`` beside it) into ``allocator._compiled.fastpath``,
where the arena arrays are typed memoryviews, every method is a C function and a call
from one method to another is a C call.  ``allocator/implementation.py`` says which of
the two runs (``allocator.COMPILED``).  Everything that is not a per-CPU cache hit (bucket
exchanges, fills, the keg, sleeps, locks, INVARIANTS) is the CPU context's own code
(zone.py, keg.py, limit.py, debug.py ...), which this class calls back.

Memory ordering: words that processes share without a lock.
  * Compiled, the C compiler may keep an array element in a register across a loop, or
    reorder two stores.  So every such word read or written *here* goes through an
    explicit atomic (``__atomic_*`` builtins, allocator/atomics.pxd): the FULL flag
    (``uk_flags``, read without the keg lock as uma_zfree_arg does: relaxed), the drain
    request (``cpu_drainreq``: acquire, so the mask read after it is the poster's) and
    its answer (``cpu_drained``: release, after the buckets are flushed), and the
    cluster refcount, whose ``atomic_fetchadd_int`` is a real hardware fetch-and-add
    (``__atomic_fetch_add``); the plain test ``*ref_cnt == 1`` before it is a relaxed
    load, as the kernel's read of a ``volatile u_int *``.
  * Interpreted, every element access is a separate memoryview call into C that no
    compiler sees across, so program order is store order; the hardware then keeps it
    on x86 (TSO: stores are not reordered with stores, nor loads with loads).  The
    refcount's fetchadd is a read-modify-write under one of NREF_STRIPES striped locks
    (an uncontended lock pair costs less than any Python atomic).  This relies on x86;
    other architectures are refused (allocator/implementation.py ``check_architecture``).

The race of 2005 is the same code in both modes: ``mb_free_ext`` reads the refcount,
passes the sched point "refcount test", then fetchadds; with ``refcount="buggy-eq0"`` two
CPUs that both read 2 both decrement and neither frees.  Interpreted, the window between
the read and the fetchadd is a few hundred nanoseconds of bytecode; compiled, a few
instructions (docs/performance.md, results/reference/2005).

Hooks.  Sched points, INVARIANTS and the stats-unlocked injection are honoured in both
modes: :meth:`configure` (called by ``Cpu.instrument``) says whether a sched point is
installed -- and hands over the hook itself, ``cpu.sched_point`` as it is at that moment,
which the fast path then calls where the kernel's window is (one vectorcall, no look-up
on the context per point: a hook installed on the context takes effect at the next
``instrument()``, which every installer calls) -- and whether ``cpu.zalloc``/``cpu.zfree``
were replaced by a checking or injected version (then the mbuf paths call those instead
of this class's own).

Errors.  Compiled, every arena access stays bounds-checked with negative indexes wrapped
(Python's memoryview semantics), and every method that indexes the arena propagates the
IndexError (none is ``noexcept``): an index a caller gets wrong raises where the
interpreted code raises, and nothing is written out of bounds (tests/test_differential.py).
Turning the checks off was measured and gained nothing (docs/performance.md "Two modes").
"""

from __future__ import annotations

from typing import Any

try:
    import cython
except ImportError:  # an interpreted install without Cython: nothing here is compiled
    from allocator import _cython_shadow as cython  # type: ignore[no-redef, unused-ignore]

from allocator.layout import (
    BUCKET_MAX,
    EXT_CLUSTER,
    EXT_NONE,
    EXT_PACKET,
    KEG_CLUSTER,
    KEG_MBUF,
    LOCK_BUCKET,
    M_EXT,
    M_PKTHDR,
    MT_DATA,
    NREF_STRIPES,
    PANIC_BAD_DTOR,
    UMA_ZFLAG_FULL,
    ZONE_CLUSTER,
    ZONE_MBUF,
    ZONE_PACKET,
)

M_NOWAIT = 0x0001  # keg.py's flags (a hot module: not imported here, to keep this one standalone)
M_WAITOK = 0x0002
REF_LOCK0 = LOCK_BUCKET + 1  #: first refcount stripe lock id
P_REF_FREE = 10  #: lock.py acquisition points mb_free_ext:refcnt and m_copym:refcnt
P_REF_COPY = 11


class FastPath:
    """The per-operation paths of one CPU context (see the module docstring).

    ``cpu`` is the context (allocator/cpu.py) whose arena views are bound here once and
    whose slow paths and hooks are called back."""

    def __init__(self, cpu: Any, ref_atomic: bool, ref_unlocked: bool, exhaustion_drain: bool) -> None:
        self.cpu = cpu
        self.allocbucket = cpu.uc_allocbucket
        self.freebucket = cpu.uc_freebucket
        self.cnt = cpu.ub_cnt
        self.entries = cpu.ub_entries
        self.slots = cpu.ub_bucket
        self.allocs = cpu.uc_allocs
        self.frees = cpu.uc_frees
        self.ukflags = cpu.uk_flags
        self.m_type = cpu.m_type
        self.m_flags = cpu.m_flags
        self.m_next = cpu.m_next
        self.m_len = cpu.m_len
        self.m_ext = cpu.m_ext
        self.m_exttype = cpu.m_exttype
        self.cl_ref = cpu.cl_ref
        self.ops = cpu.cpu_ops
        self.drainreq = cpu.cpu_drainreq
        self.drainmask = cpu.cpu_drainmask
        self.drained = cpu.cpu_drained
        self.row = cpu.row
        self.rows = cpu.rows
        self.crow = cpu._sci[0]  # counter row: our own, or the stats-unlocked shared one
        self.ref_atomic = ref_atomic
        self.ref_unlocked = ref_unlocked
        self.history = False
        self.ref_slow = ref_unlocked
        self.exhaustion_drain = exhaustion_drain and cpu.is_cpu
        self.sched = False
        self.sched_hook: Any = None
        self.direct = True

    def configure(self, sched: bool, direct: bool, history: bool = False) -> None:
        """``sched``: a sched point is installed (call it where the kernel's window is):
        the context's ``sched_point`` now is the hook the fast path calls until the next
        ``configure``.
        ``direct``: ``cpu.zalloc``/``cpu.zfree`` are this class's own (no INVARIANTS, no
        injection wraps them), so the mbuf paths may call them without the look-up.
        ``history``: INVARIANTS keeps item histories, so each refcount change is recorded
        (``cpu.history_ref``) -- behind the ``ref_slow`` branch ref_add tests anyway."""
        self.sched = sched
        self.sched_hook = self.cpu.sched_point if sched else None
        self.direct = direct
        self.history = history
        self.ref_slow = self.ref_unlocked or history

    def release(self) -> None:
        """Drop every arena view (compiled: the buffer exports), so the arena can be
        unmapped; the context is unusable afterwards."""
        self.cpu = self.sched_hook = None
        self.allocbucket = self.freebucket = self.cnt = self.entries = self.slots = None
        self.allocs = self.frees = self.ops = None
        self.ukflags = self.m_type = self.m_flags = self.m_next = self.m_len = None
        self.m_ext = self.m_exttype = self.cl_ref = None
        self.drainreq = self.drainmask = self.drained = None

    # --- uma_zalloc_arg / uma_zfree_arg, step 1: the per-CPU cache ------------------------
    def zalloc(self, z: int, flags: int = M_WAITOK, udata: int = -1) -> int:
        """uma_zalloc_arg: pop the CPU's alloc bucket (swapped with the free bucket if it
        is empty and the free bucket is not), count the allocation, run the ctor; anything
        else (no bucket, both empty) is the context's slow path.  -1: M_NOWAIT at
        the limit."""
        ci = z * self.rows + self.row
        b = self.allocbucket[ci]
        if b >= 0:
            n = self.cnt[b]
            if n == 0:
                fb = self.freebucket[ci]
                if fb >= 0 and self.cnt[fb] > 0:
                    # Empty, and the free bucket has items: swap them (the slow path's
                    # restart does the same after a lock drop).
                    if self.sched:
                        self.sched_hook("bucket swap")
                    self.allocbucket[ci] = fb
                    self.freebucket[ci] = b
                    b = fb
                    n = self.cnt[b]
            if n:
                n -= 1
                self.cnt[b] = n
                item = self.slots[b * BUCKET_MAX + n]
                self.allocs[z * self.rows + self.crow] += 1
                if z == ZONE_PACKET:
                    self.mb_ctor_pack(item, udata, flags)
                elif z == ZONE_MBUF:
                    self.mb_ctor_mbuf(item, udata, flags)
                else:
                    self.mb_ctor_clust(item, udata, flags)
                return item
        return int(self.cpu._zalloc_slow(z, flags, udata))

    def zfree(self, z: int, item: int, udata: int = -1) -> None:
        """uma_zfree_arg: count, run the dtor; if the keg is FULL bypass the caches (and
        wake a sleeper) through the slab; else push on the CPU's free bucket if it has
        room (swapped with the alloc bucket if that one has fewer items); anything else is
        the context's slow path."""
        self.frees[z * self.rows + self.crow] += 1
        if z == ZONE_PACKET:
            self.mb_dtor_pack(item, udata)
        k = KEG_CLUSTER if z == ZONE_CLUSTER else KEG_MBUF
        if cython.compiled:
            full = zl_load_relaxed_int(cython.address(self.ukflags[k]))  # type: ignore[name-defined]  # noqa: F821
        else:
            full = self.ukflags[k]
        if full & UMA_ZFLAG_FULL:
            self.cpu.zfree_internal(z, item, False)
            return
        ci = z * self.rows + self.row
        b = self.freebucket[ci]
        if b >= 0:
            n = self.cnt[b]
            if n >= self.entries[b]:
                ab = self.allocbucket[ci]
                if ab >= 0 and self.cnt[ab] < n:
                    # Full, and the alloc bucket has room: swap them.
                    if self.sched:
                        self.sched_hook("bucket swap")
                    self.allocbucket[ci] = b
                    self.freebucket[ci] = ab
                    b = ab
                    n = self.cnt[b]
            if n < self.entries[b]:
                self.slots[b * BUCKET_MAX + n] = item
                self.cnt[b] = n + 1
                return
        self.cpu._zfree_slow(z, item)

    def serve(self) -> None:
        """Serve a cross-CPU drain request addressed to this CPU (zone.py's protocol):
        one comparison when there is none.  Workers call it every loop turn."""
        row = self.row
        if cython.compiled:
            req = zl_load_acquire_int(cython.address(self.drainreq[row]))  # type: ignore[name-defined]  # noqa: F821
        else:
            req = self.drainreq[row]
        if req == self.drained[row]:
            return
        self.cpu.cache_drain(row, self.drainmask[row])
        if cython.compiled:
            zl_store_release_int(cython.address(self.drained[row]), req)  # type: ignore[name-defined]  # noqa: F821
        else:
            self.drained[row] = req

    # --- the mbuf zones' ctors and dtor (kern_mbuf.c) ---------------------------------------
    def mb_ctor_mbuf(self, m: int, udata: int, flags: int) -> int:
        """mb_ctor_mbuf: a fresh header; udata carries type | flags << 16."""
        if udata >= 0:
            self.m_type[m] = udata & 0xFFFF
            self.m_flags[m] = (udata >> 16) & 0xFFFF
        else:
            self.m_type[m] = MT_DATA
            self.m_flags[m] = 0
        self.m_next[m] = -1
        self.m_len[m] = 0
        self.m_ext[m] = -1
        self.m_exttype[m] = EXT_NONE
        return 0

    def mb_ctor_clust(self, c: int, m: int, flags: int) -> int:
        """mb_ctor_clust: attach cluster ``c`` to mbuf ``m`` (udata), refcount 1."""
        self.cl_ref[c] = 1
        if m >= 0:
            self.m_ext[m] = c
            self.m_exttype[m] = EXT_CLUSTER
            self.m_flags[m] |= M_EXT
        return 0

    def mb_ctor_pack(self, m: int, udata: int, flags: int) -> int:
        """mb_ctor_pack: reset the header but keep the cluster zinit attached."""
        if udata >= 0:
            self.m_type[m] = udata & 0xFFFF
            self.m_flags[m] = ((udata >> 16) & 0xFFFF) | M_EXT
        else:
            self.m_type[m] = MT_DATA
            self.m_flags[m] = M_EXT
        self.m_next[m] = -1
        self.m_len[m] = 0
        return 0

    def mb_dtor_pack(self, m: int, udata: int) -> None:
        """mb_dtor_pack: the item must be a clean EXT_PACKET cluster with refcount 1;
        c. 2007, if the cluster zone is exhausted, drain the packet zone so sleepers on
        the cluster keg get clusters back (uma_zone_exhausted_nolock: racy on purpose, no
        lock for every free)."""
        c = self.m_ext[m]
        if c < 0 or self.m_exttype[m] != EXT_PACKET or self.cl_ref[c] != 1:
            self.cpu.panic(PANIC_BAD_DTOR, ZONE_PACKET, m, c)
        if self.exhaustion_drain:
            if cython.compiled:
                full = zl_load_relaxed_int(cython.address(self.ukflags[KEG_CLUSTER]))  # type: ignore[name-defined]  # noqa: F821
            else:
                full = self.ukflags[KEG_CLUSTER]
            if full & UMA_ZFLAG_FULL:
                self.cpu.zone_trim(ZONE_PACKET, 1 << 30)

    # --- the mbuf layer (uipc_mbuf.c) --------------------------------------------------------
    def m_getcl(self, how: int = M_WAITOK, type_: int = MT_DATA, flags: int = M_PKTHDR) -> int:
        """m_getcl: an mbuf with a cluster attached, from the packet zone, or -1."""
        if self.direct:
            m = self.zalloc(ZONE_PACKET, how, type_ | (flags << 16))
        else:
            m = int(self.cpu.zalloc(ZONE_PACKET, how, type_ | (flags << 16)))
        if m >= 0:
            self.ops[self.row] += 1
        return m

    def m_freem(self, m: int) -> None:
        """m_freem: free a whole chain (m_free of each mbuf, inlined)."""
        while m >= 0:
            nxt = self.m_next[m]
            self.ops[self.row] += 1
            c = self.m_ext[m]
            if c < 0:
                self._zfree(ZONE_MBUF, m)
            else:
                if cython.compiled:
                    ref = zl_load_relaxed_int(cython.address(self.cl_ref[c]))  # type: ignore[name-defined]  # noqa: F821
                else:
                    ref = self.cl_ref[c]
                if ref == 1 and self.m_exttype[m] == EXT_PACKET:
                    # mb_free_ext's common case, inlined: the only reference to a
                    # packet's cluster; the mbuf goes to the packet zone holding it.
                    self._zfree(ZONE_PACKET, m)
                else:
                    self.mb_free_ext(m)
            m = nxt

    def _zfree(self, z: int, item: int) -> None:
        """The zone free the mbuf layer calls: ours, or the context's wrapped one."""
        if self.direct:
            self.zfree(z, item, -1)
        else:
            self.cpu.zfree(z, item)

    def mb_free_ext(self, m: int) -> None:
        """mb_free_ext: drop ``m``'s cluster reference; the last reference frees it::

            if (*ref_cnt == 1 || atomic_fetchadd_int(ref_cnt, -1) == 0)   /* 2005 */
            if (*ref_cnt == 1 || atomic_fetchadd_int(ref_cnt, -1) == 1)   /* later */
        """
        c = self.m_ext[m]
        if cython.compiled:
            ref = zl_load_relaxed_int(cython.address(self.cl_ref[c]))  # type: ignore[name-defined]  # noqa: F821
        else:
            ref = self.cl_ref[c]
        if ref == 1:
            last = True
        else:
            if self.sched:
                self.sched_hook("refcount test")
            old = self.ref_add(c, -1, P_REF_FREE)
            last = old == 1 if self.ref_atomic else old == 0
        if last:
            if self.m_exttype[m] == EXT_PACKET:
                # The packet zone is special: the mbuf that dropped the last reference
                # goes to the packet zone still holding the cluster.
                if self.cl_ref[c] == 0:
                    self.cl_ref[c] = 1
                self._zfree(ZONE_PACKET, m)
                return
            self.m_ext[m] = -1
            self.m_exttype[m] = EXT_NONE
            self._zfree(ZONE_CLUSTER, c)
        else:
            self.m_ext[m] = -1
            self.m_exttype[m] = EXT_NONE
        self._zfree(ZONE_MBUF, m)

    def m_copym(self, m: int, how: int = M_NOWAIT) -> int:
        """m_copym of one mbuf: a new mbuf sharing ``m``'s cluster (mb_dupcl: refcount + 1,
        same ext type); a plain mbuf is copied byte for byte.  -1 if no mbuf could be had."""
        udata = self.m_type[m] | ((self.m_flags[m] & M_PKTHDR) << 16)
        if self.direct:
            n = self.zalloc(ZONE_MBUF, how, udata)
        else:
            n = int(self.cpu.zalloc(ZONE_MBUF, how, udata))
        if n < 0:
            return -1
        c = self.m_ext[m]
        if c >= 0:
            self.ref_add(c, 1, P_REF_COPY)
            self.m_ext[n] = c
            self.m_exttype[n] = self.m_exttype[m]
            self.m_flags[n] |= M_EXT
        else:
            self.cpu.copy_payload(n, m)
        self.m_len[n] = self.m_len[m]
        self.ops[self.row] += 1
        return n

    def ref_add(self, c: int, delta: int, point: int) -> int:
        """atomic_fetchadd_int(&cl_ref[c], delta): returns the OLD value.  Compiled: the
        hardware's fetch-and-add; interpreted: a read-modify-write under a striped lock.
        The refcount-unlocked injection and INVARIANTS' item history take ``_ref_slow``:
        the plain path tests one flag, as it did before the history existed.  So the
        atomic path is written twice, here and in ``_ref_slow``: folded into one (a
        second flag test after it, or a helper: a Python call) it costs the interpreted
        plain path 14-45 ns per call (docs/performance.md "Two modes", round 4)."""
        if self.ref_slow:
            return self._ref_slow(c, delta, point)
        if cython.compiled:
            return zl_fetch_add_int(cython.address(self.cl_ref[c]), delta)  # type: ignore[name-defined]  # noqa: F821
        cpu = self.cpu
        lk = REF_LOCK0 + (c & (NREF_STRIPES - 1))
        cpu.lock(lk, point)
        try:  # a bad c raises IndexError here: the stripe is released all the same
            old = self.cl_ref[c]
            self.cl_ref[c] = old + delta
        finally:
            cpu.unlock(lk)
        return old

    def _ref_slow(self, c: int, delta: int, point: int) -> int:
        """ref_add for the refcount-unlocked injection and under INVARIANTS: the change
        (injected or atomic), then its record in the cluster's history."""
        if self.ref_unlocked:
            # INJECTED DEFECT (races.md refcount-unlocked): a plain read-modify-write.
            old = self.cl_ref[c]
            if self.sched:
                self.sched_hook("refcount read-modify-write")
            self.cl_ref[c] = old + delta
        elif cython.compiled:
            old = zl_fetch_add_int(cython.address(self.cl_ref[c]), delta)  # type: ignore[name-defined]  # noqa: F821
        else:
            cpu = self.cpu
            lk = REF_LOCK0 + (c & (NREF_STRIPES - 1))
            cpu.lock(lk, point)
            try:
                old = self.cl_ref[c]
                self.cl_ref[c] = old + delta
            finally:
                cpu.unlock(lk)
        if self.history:
            self.cpu.history_ref(c, delta)
        return old


# --- the bench's loops (stress bench, P1c): compiled, they call the fast path in C ---------


def pair_loop(fast: FastPath, z: int, n: int) -> None:
    """``n`` zone alloc+free pairs driven from this module: compiled, a C loop making C
    calls (what the compiled fast path itself costs, against :func:`floor_loop`)."""
    for i in range(n):  # noqa: B007 -- a typed C loop counter
        fast.zfree(z, fast.zalloc(z, M_WAITOK, -1), -1)


def floor_loop(cnt: Any, slots: Any, b: int, n: int) -> int:
    """The floor: ``n`` push+pop pairs on bucket ``b`` of the arena's own arrays (the
    least a zone alloc+free can do).  Compiled, the C floor: a compiler barrier per pair
    keeps every load and store in the loop (else the C compiler folds the pairs away).
    Returns the last item popped (so the pops are used)."""
    base = b * BUCKET_MAX
    item = 0
    for i in range(n):  # noqa: B007 -- a typed C loop counter
        c = cnt[b]
        slots[base + c] = 7
        cnt[b] = c + 1
        c = cnt[b] - 1
        cnt[b] = c
        item = slots[base + c]
        if cython.compiled:
            zl_compiler_barrier()  # type: ignore[name-defined]  # noqa: F821
    return int(item)
