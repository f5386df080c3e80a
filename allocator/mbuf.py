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
Compiled, fetchadd is the hardware's (``__atomic_fetch_add``); interpreted, Python has no
cheap atomics, so it is a read-modify-write under one of ``NREF_STRIPES`` striped locks
(architecture.md: the ``atomics`` package costs 4-7 us).  Both in FastPath.ref_add.
"""

from __future__ import annotations

from allocator.layout import (
    EXT_NONE,
    EXT_PACKET,
    HDR_KNOBS,
    KNOB_EXHAUSTION_DRAIN,
    KNOB_REFCOUNT_ATOMIC,
    LOCK_BUCKET,
    M_PKTHDR,
    MCLBYTES,
    MSIZE,
    MT_DATA,
    ZONE_CLUSTER,
    ZONE_MBUF,
    ZONE_PACKET,
)

from .fastpath import FastPath
from .keg import M_NOWAIT, M_WAITOK
from .zone import ZoneOps

_REF_LOCK0 = LOCK_BUCKET + 1  # first refcount stripe lock id


class MbufOps(ZoneOps):
    """m_get, m_gethdr, m_getcl, m_clget, m_copym, m_free, m_freem for one CPU."""

    def _install_mbuf_hooks(self) -> None:
        """Install the zone hooks and bind this CPU's fast path (once, at creation).

        The ctors, the packet dtor, m_getcl, m_freem, mb_free_ext and m_copym are
        allocator/fastpath.py's FastPath (compiled when built); its bound methods are
        stored on the instance, so a consumer's call skips the methods below.  What an
        instrument may replace later -- ``zalloc``/``zfree`` (INVARIANTS, injections),
        ``lock``, ``sched_point`` -- is honoured through ``FastPath.configure``
        (``Cpu.instrument``)."""
        knobs = self.hdr[HDR_KNOBS]
        self._ref_atomic = bool(knobs & KNOB_REFCOUNT_ATOMIC) and "refcount-eq0" not in self.inject
        self._ref_unlocked = "refcount-unlocked" in self.inject
        self._exhaustion_drain = bool(knobs & KNOB_EXHAUSTION_DRAIN)
        fast = FastPath(self, self._ref_atomic, self._ref_unlocked, self._exhaustion_drain)
        payload_m, payload_c = self.payload[0], self.payload[1]
        m_ext = self.m_ext

        def mtod(m: int) -> memoryview:
            """The data of ``m`` (see the method)."""
            c = m_ext[m]
            if c >= 0:
                return payload_c[c * MCLBYTES:(c + 1) * MCLBYTES]
            return payload_m[m * MSIZE:(m + 1) * MSIZE]

        self._ctor = [fast.mb_ctor_mbuf, fast.mb_ctor_clust, fast.mb_ctor_pack]
        self._dtor = [None, None, fast.mb_dtor_pack]
        self._zinit = [None, None, self._mb_zinit_pack]
        self._zfini = [None, None, self._mb_zfini_pack]
        self._mtod = mtod
        self.mtod = mtod  # type: ignore[method-assign]
        self.m_getcl = fast.m_getcl  # type: ignore[method-assign]
        self.m_freem = fast.m_freem  # type: ignore[method-assign]
        self.m_copym = fast.m_copym  # type: ignore[method-assign]
        self._mb_free_ext = fast.mb_free_ext  # type: ignore[method-assign]
        self.bind_fast_path(fast)

    def copy_payload(self, n: int, m: int) -> None:
        """m_copym of a plain mbuf: its 256 bytes copied into ``n``."""
        p = self.payload[0]
        p[n * MSIZE:(n + 1) * MSIZE] = p[m * MSIZE:(m + 1) * MSIZE]

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
        return int(self._fast.m_getcl(how, type_, flags))

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
        return int(self._fast.m_copym(m, how))

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
        self._fast.m_freem(m)

    def mtod(self, m: int) -> memoryview:
        """The data of ``m``: its cluster's 2 KB if it has one, else its 256 bytes."""
        return self._mtod(m)

    # --- free-external ----------------------------------------------------------------
    def _ref_add(self, c: int, delta: int, point: int) -> int:
        """atomic_fetchadd_int(&cl_ref[c], delta): returns the OLD value (FastPath.ref_add)."""
        return int(self._fast.ref_add(c, delta, point))

    def _mb_free_ext(self, m: int) -> None:
        """mb_free_ext: drop ``m``'s cluster reference; the last reference frees it."""
        self._fast.mb_free_ext(m)
