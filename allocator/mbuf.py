"""The mbuf layer on top of the three zones (sys/kern/kern_mbuf.c, sys/sys/mbuf.h and
uipc_mbuf.c of late 2005).

Zones and their hooks (uma.md, "ctor/dtor versus init/fini"):

=============  ==================================  =====================================
zone           ctor / dtor                         zinit / zfini
=============  ==================================  =====================================
mbuf           reset the header / -                -
mbuf_cluster   attach to the mbuf in udata,        -
               refcount 1, EXT_CLUSTER / -
mbuf_packet    reset the header, keep the          take a cluster from mbuf_cluster
               cluster / check it is a clean       (refcount 1, EXT_PACKET) / free
               EXT_PACKET 2 KB cluster, ref 1      that cluster back to mbuf_cluster
=============  ==================================  =====================================

So a packet-zone item in any cache holds a cluster: the pseudo-leak.

The free-external path (mb_free_ext): a cluster is freed by whoever drops its last
reference.  The *test* for "last" is the knob that makes the 2005 true leak::

    if (*ref_cnt == 1 || atomic_fetchadd_int(ref_cnt, -1) == 0)   /* 2005: wrong */
    if (*ref_cnt == 1 || atomic_fetchadd_int(ref_cnt, -1) == 1)   /* later: right */

fetchadd returns the *old* value.  Two CPUs that both read 2 and both decrement leave
0 and neither frees: both mbufs go to the mbuf zone, the cluster is used forever.
Python has no cheap atomics, so fetchadd is a read-modify-write under one of
``NREF_STRIPES`` striped locks (architecture.md: the ``atomics`` package costs 4-7 us).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .keg import M_NOWAIT, M_WAITOK
from .layout import (
    EXT_CLUSTER,
    EXT_NONE,
    EXT_PACKET,
    HDR_KNOBS,
    KEG_CLUSTER,
    KNOB_EXHAUSTION_DRAIN,
    KNOB_REFCOUNT_ATOMIC,
    LOCK_BUCKET,
    M_EXT,
    M_PKTHDR,
    MCLBYTES,
    MSIZE,
    MT_DATA,
    NREF_STRIPES,
    PANIC_BAD_DTOR,
    UMA_ZFLAG_FULL,
    ZONE_CLUSTER,
    ZONE_MBUF,
    ZONE_PACKET,
)
from .lock import P_REF_COPY, P_REF_FREE
from .zone import ZoneOps

_REF_LOCK0 = LOCK_BUCKET + 1  # first refcount stripe lock id


class MbufOps(ZoneOps):
    """m_get, m_gethdr, m_getcl, m_clget, m_copym, m_free, m_freem for one CPU."""

    _fast: dict[str, Callable[..., Any]]  #: the per-CPU closures, by method name

    def _install_mbuf_hooks(self) -> None:
        """Install the zone hooks and bind this CPU's fast paths (once, at creation).

        perf (P2, performance.md): the ctors, the packet dtor, m_getcl, m_freem,
        mb_free_ext, m_copym and mtod are closures over the arena's memoryviews (closure cells, not
        ``self.attr`` look-ups), stored on the instance.  What an instrument may
        replace later -- ``zalloc``/``zfree`` (INVARIANTS, injections), ``lock``,
        ``sched_point`` -- is still looked up on ``self`` at every call."""
        knobs = self.hdr[HDR_KNOBS]
        self._ref_atomic = bool(knobs & KNOB_REFCOUNT_ATOMIC) and "refcount-eq0" not in self.inject
        self._ref_unlocked = "refcount-unlocked" in self.inject
        self._exhaustion_drain = bool(knobs & KNOB_EXHAUSTION_DRAIN)
        m_type, m_flags, m_next, m_len = self.m_type, self.m_flags, self.m_next, self.m_len
        m_ext, m_exttype, cl_ref, uk_flags = self.m_ext, self.m_exttype, self.cl_ref, self.uk_flags
        ops, row = self.cpu_ops, self.row
        this = self

        def mb_ctor_mbuf(m: int, udata: int, flags: int) -> int:
            """mb_ctor_mbuf: a fresh header; udata carries type | flags << 16."""
            if udata >= 0:
                m_type[m] = udata & 0xFFFF
                m_flags[m] = (udata >> 16) & 0xFFFF
            else:
                m_type[m] = MT_DATA
                m_flags[m] = 0
            m_next[m] = -1
            m_len[m] = 0
            m_ext[m] = -1
            m_exttype[m] = EXT_NONE
            return 0

        def mb_ctor_clust(c: int, m: int, flags: int) -> int:
            """mb_ctor_clust: attach cluster ``c`` to mbuf ``m`` (udata), refcount 1."""
            cl_ref[c] = 1
            if m >= 0:
                m_ext[m] = c
                m_exttype[m] = EXT_CLUSTER
                m_flags[m] |= M_EXT
            return 0

        def mb_ctor_pack(m: int, udata: int, flags: int) -> int:
            """mb_ctor_pack: reset the header but keep the cluster zinit attached."""
            if udata >= 0:
                m_type[m] = udata & 0xFFFF
                m_flags[m] = ((udata >> 16) & 0xFFFF) | M_EXT
            else:
                m_type[m] = MT_DATA
                m_flags[m] = M_EXT
            m_next[m] = -1
            m_len[m] = 0
            return 0

        exhaustion_drain = self._exhaustion_drain and self.is_cpu

        def mb_dtor_pack(m: int, udata: int) -> None:
            """mb_dtor_pack: the item must be a clean EXT_PACKET cluster with refcount 1;
            c. 2007, if the cluster zone is exhausted, drain the packet zone so sleepers
            on the cluster keg get clusters back (uma_zone_exhausted_nolock, racy on
            purpose: no lock for every free)."""
            c = m_ext[m]
            if c < 0 or m_exttype[m] != EXT_PACKET or cl_ref[c] != 1:
                this.panic(PANIC_BAD_DTOR, ZONE_PACKET, m, c)
            if exhaustion_drain and uk_flags[KEG_CLUSTER] & UMA_ZFLAG_FULL:
                this.zone_trim(ZONE_PACKET, 1 << 30)

        ref_atomic = self._ref_atomic

        def mb_free_ext(m: int) -> None:
            """mb_free_ext: drop ``m``'s cluster reference; the last reference frees it."""
            c = m_ext[m]
            if cl_ref[c] == 1:
                last = True
            else:
                this.sched_point("refcount test")
                old = this._ref_add(c, -1, P_REF_FREE)
                last = old == 1 if ref_atomic else old == 0
            if last:
                if m_exttype[m] == EXT_PACKET:
                    # The packet zone is special: the mbuf that dropped the last reference
                    # goes to the packet zone still holding the cluster.
                    if cl_ref[c] == 0:
                        cl_ref[c] = 1
                    this.zfree(ZONE_PACKET, m)
                    return
                m_ext[m] = -1
                m_exttype[m] = EXT_NONE
                this.zfree(ZONE_CLUSTER, c)
            else:
                m_ext[m] = -1
                m_exttype[m] = EXT_NONE
            this.zfree(ZONE_MBUF, m)

        def m_getcl(how: int = M_WAITOK, type_: int = MT_DATA, flags: int = M_PKTHDR) -> int:
            """m_getcl: an mbuf with a cluster attached, from the packet zone, or -1."""
            m = this.zalloc(ZONE_PACKET, how, type_ | (flags << 16))
            if m >= 0:
                ops[row] += 1
            return m

        def m_freem(m: int) -> None:
            """m_freem: free a whole chain (m_free of each mbuf, inlined)."""
            while m >= 0:
                nxt = m_next[m]
                ops[row] += 1
                c = m_ext[m]
                if c < 0:
                    this.zfree(ZONE_MBUF, m)
                elif cl_ref[c] == 1 and m_exttype[m] == EXT_PACKET:
                    # mb_free_ext's common case, inlined: the only reference to a
                    # packet's cluster; the mbuf goes to the packet zone holding it.
                    this.zfree(ZONE_PACKET, m)
                else:
                    mb_free_ext(m)
                m = nxt

        payload_m, payload_c = self.payload[0], self.payload[1]

        def m_copym(m: int, how: int = M_NOWAIT) -> int:
            """m_copym of one mbuf (see the method)."""
            n = this.zalloc(ZONE_MBUF, how, m_type[m] | ((m_flags[m] & M_PKTHDR) << 16))
            if n < 0:
                return -1
            c = m_ext[m]
            if c >= 0:
                this._ref_add(c, 1, P_REF_COPY)
                m_ext[n] = c
                m_exttype[n] = m_exttype[m]
                m_flags[n] |= M_EXT
            else:
                payload_m[n * MSIZE:(n + 1) * MSIZE] = payload_m[m * MSIZE:(m + 1) * MSIZE]
            m_len[n] = m_len[m]
            ops[row] += 1
            return n

        def mtod(m: int) -> memoryview:
            """The data of ``m`` (see the method)."""
            c = m_ext[m]
            if c >= 0:
                return payload_c[c * MCLBYTES:(c + 1) * MCLBYTES]
            return payload_m[m * MSIZE:(m + 1) * MSIZE]

        self._ctor = [mb_ctor_mbuf, mb_ctor_clust, mb_ctor_pack]
        self._dtor = [None, None, mb_dtor_pack]
        self._zinit = [None, None, self._mb_zinit_pack]
        self._zfini = [None, None, self._mb_zfini_pack]
        # The one implementation of each; the methods below delegate to these, and the
        # instance attributes make a consumer's call skip the method.
        self._fast = {"m_getcl": m_getcl, "m_freem": m_freem, "m_copym": m_copym, "mtod": mtod,
                      "_mb_free_ext": mb_free_ext}
        for name, fn in self._fast.items():
            setattr(self, name, fn)
        self.bind_fast_paths()

    def _mb_zinit_pack(self, m: int, flags: int) -> int:
        """mb_zinit_pack: take a cluster from the cluster zone (may sleep in zonelimit
        on the cluster keg) and attach it as EXT_PACKET."""
        self.m_ext[m] = -1
        c = self.zalloc(ZONE_CLUSTER, flags, m)
        if c < 0:
            return 12  # ENOMEM
        self.m_exttype[m] = EXT_PACKET
        return 0

    def _mb_zfini_pack(self, m: int) -> None:
        """mb_zfini_pack: free the attached cluster back to the cluster zone."""
        c = self.m_ext[m]
        self.m_ext[m] = -1
        self.m_exttype[m] = EXT_NONE
        self.zfree(ZONE_CLUSTER, c)

    # --- the consumer API -------------------------------------------------------------
    def m_get(self, how: int = M_WAITOK, type_: int = MT_DATA) -> int:
        """m_get: a plain mbuf from the mbuf zone, or -1."""
        m = self.zalloc(ZONE_MBUF, how, type_)
        if m >= 0:
            self.cpu_ops[self.row] += 1
        return m

    def m_gethdr(self, how: int = M_WAITOK, type_: int = MT_DATA) -> int:
        """m_gethdr: an mbuf with a packet header, or -1."""
        m = self.zalloc(ZONE_MBUF, how, type_ | (M_PKTHDR << 16))
        if m >= 0:
            self.cpu_ops[self.row] += 1
        return m

    def m_getcl(self, how: int = M_WAITOK, type_: int = MT_DATA, flags: int = M_PKTHDR) -> int:
        """m_getcl: an mbuf with a cluster attached, from the packet zone, or -1."""
        return int(self._fast["m_getcl"](how, type_, flags))

    def m_clget(self, m: int, how: int = M_WAITOK) -> bool:
        """m_clget: attach a cluster from the cluster zone to ``m`` (EXT_CLUSTER).
        c. 2007: a failed M_NOWAIT allocation drains the packet zone once and retries."""
        c = self.zalloc(ZONE_CLUSTER, how, m)
        if c < 0 and how & M_NOWAIT and self._exhaustion_drain and self.is_cpu:
            self.zone_trim(ZONE_PACKET, 1 << 30)
            c = self.zalloc(ZONE_CLUSTER, how, m)
        if c >= 0:
            self.cpu_ops[self.row] += 1
        return c >= 0

    def m_copym(self, m: int, how: int = M_NOWAIT) -> int:
        """m_copym of a cluster mbuf: a new mbuf sharing ``m``'s cluster (mb_dupcl:
        refcount + 1, same ext type).  A plain mbuf is copied byte for byte.  -1 if no
        mbuf could be had."""
        return int(self._fast["m_copym"](m, how))

    def m_free(self, m: int) -> int:
        """m_free: free one mbuf (and its cluster reference); returns m_next."""
        nxt = self.m_next[m]
        self.cpu_ops[self.row] += 1
        if self.m_ext[m] >= 0:
            self._mb_free_ext(m)
        else:
            self.zfree(ZONE_MBUF, m)
        return nxt

    def m_freem(self, m: int) -> None:
        """m_freem: free a whole chain."""
        self._fast["m_freem"](m)

    def mtod(self, m: int) -> memoryview:
        """The data of ``m``: its cluster's 2 KB if it has one, else its 256 bytes."""
        view: memoryview = self._fast["mtod"](m)
        return view

    # --- free-external ----------------------------------------------------------------
    def _ref_add(self, c: int, delta: int, point: int) -> int:
        """atomic_fetchadd_int(&cl_ref[c], delta): returns the OLD value."""
        ref = self.cl_ref
        if self._ref_unlocked:
            # INJECTED DEFECT: a plain read-modify-write, no lock.
            old = ref[c]
            self.sched_point("refcount read-modify-write")
            ref[c] = old + delta
            return old
        lk = _REF_LOCK0 + (c & (NREF_STRIPES - 1))
        self.lock(lk, point)
        old = ref[c]
        ref[c] = old + delta
        self.unlock(lk)
        return old

    def _mb_free_ext(self, m: int) -> None:
        """mb_free_ext: drop ``m``'s cluster reference; the last reference frees it."""
        self._fast["_mb_free_ext"](m)

