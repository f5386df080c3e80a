"""An NFS server answering reads: standalone clusters through m_gethdr + m_clget.

Stands for nfsd serving READ RPCs over the network (2005: ``nfsm_reply`` building the
reply with ``m_gethdr`` then ``m_clget`` from the *cluster* zone, not the packet zone).
It is the consumer that starves when the packet zone hoards clusters: its ``m_clget``
sleeps in zonelimit on the cluster keg while the packet zone's cache holds clusters it
will never give back (uma.md, "Pseudo-leak"; policies.md, "Workload shapes").

Per (application = nfsd CPU, driver CPU) pair::

    driver: a request frame arrives in a posted rx buffer (packet zone) -> rg_nfs_req
    nfsd:   pop request, verify, m_freem it; reply = m_gethdr(M_WAITOK) +
            m_clget(M_WAITOK) <- may sleep in zonelimit; payload -> rg_nfs_rep
    driver: pop reply into rg_nfs_done, verify; tx completion frees the batch

At most ``WINDOW`` RPCs are outstanding (the client's concurrency).  A reply for which
no cluster could be had goes out as a plain mbuf (an error reply), so the RPC still
completes.
"""

from __future__ import annotations

from typing import ClassVar

from allocator import M_NOWAIT, M_PKTHDR, M_WAITOK, MT_DATA, ArraySpec
from stress.config import RunConfig
from stress.workloads.common import (
    STAT_ALLOC_FAILS,
    STAT_DROPS,
    STAT_PACKETS,
    STAT_SENT,
    WorkerContext,
    Workload,
    pairs,
    rx_ring_size,
)
from stress.workloads.ring import RING_PREFIX, Ring, ring_spec


def nfs_reply(w: Workload, record: Ring, seq: int, length: int) -> int:
    """nfsm_reply: an mbuf header (m_gethdr) plus a standalone cluster (m_clget), both
    M_WAITOK, carrying ``length`` bytes for ``seq``.  The mbuf is pushed on ``record``
    before m_clget, which may sleep in zonelimit; without a cluster it carries a 64-byte
    error reply.  Returns the mbuf, or -1 (counted) when not even the header came."""
    cpu = w.cpu
    m = cpu.m_gethdr(M_WAITOK, MT_DATA)
    if m < 0:
        w.count(STAT_ALLOC_FAILS)
        return -1
    record.push(m)
    if not cpu.m_clget(m, M_WAITOK):  # the standalone cluster: may sleep in zonelimit
        w.count(STAT_ALLOC_FAILS)
        length = 64  # an error reply fits in the mbuf itself
    w.write_payload(m, seq, length)
    return m


class Nfs(Workload):
    """NFS READ service: requests through the packet zone, replies through m_clget."""

    name: ClassVar[str] = "nfs"
    WINDOW: ClassVar[int] = 16  #: outstanding RPCs per pair
    TXBATCH: ClassVar[int] = 8
    REQ_LEN: ClassVar[int] = 128  #: a READ call
    REPLY_LEN: ClassVar[int] = 1448  #: one cluster of read data

    @classmethod
    def arrays(cls, cfg: RunConfig) -> list[ArraySpec]:
        """Per pair: request, reply, tx-completion and rx-descriptor rings."""
        out: list[ArraySpec] = []
        for p, (a, d) in enumerate(pairs(cfg.cpus)):
            out += [
                ring_spec(f"nfs_req{p}", 2 * cls.WINDOW, f"CPU {d} -> CPU {a}: NFS requests"),
                ring_spec(f"nfs_rep{p}", 2 * cls.WINDOW, f"CPU {a} -> CPU {d}: NFS replies"),
                ring_spec(f"nfs_done{p}", 2 * cls.TXBATCH, f"CPU {d}: replies awaiting tx completion"),
                ring_spec(f"nfs_rxd{p}", min(cls.WINDOW, rx_ring_size(cfg.nmbclusters)),
                          f"CPU {d}: posted rx buffers"),
            ]
        return out

    @classmethod
    def posted_rings(cls, cfg: RunConfig) -> list[str]:
        """The rx descriptor rings: a NIC keeps its receive buffers posted while idle."""
        return [f"{RING_PREFIX}nfs_rxd{p}" for p in range(len(pairs(cfg.cpus)))]

    def __init__(self, ctx: WorkerContext) -> None:
        super().__init__(ctx)
        self.app_pairs = [p for p, (a, _) in enumerate(pairs(ctx.ncpus)) if a == ctx.k]
        self.drv_pairs = [p for p, (_, d) in enumerate(pairs(ctx.ncpus)) if d == ctx.k]
        mine = self.app_pairs + self.drv_pairs
        self.req = {p: ctx.ring(f"nfs_req{p}") for p in mine}
        self.rep = {p: ctx.ring(f"nfs_rep{p}") for p in mine}
        self.done = {p: ctx.ring(f"nfs_done{p}") for p in self.drv_pairs}
        self.rxd = {p: ctx.ring(f"nfs_rxd{p}") for p in self.drv_pairs}
        self.rxd_size = min(self.WINDOW, rx_ring_size(ctx.cfg.nmbclusters))
        self.outstanding = {p: 0 for p in self.drv_pairs}
        self.xid = {p: 0 for p in self.drv_pairs}  # next request id (the RPC xid)
        self.reply_expect = {p: 0 for p in self.drv_pairs}
        self.req_expect = {p: 0 for p in self.app_pairs}

    def turn(self, running: bool, phase: int) -> int:
        """Driver first (completes replies, posts requests), then nfsd."""
        did = 0
        for p in self.drv_pairs:
            did += self.driver(p, running)
        for p in self.app_pairs:
            did += self.nfsd(p)
        return did

    def nfsd(self, p: int) -> int:
        """Serve every queued request: free it, build the reply with m_gethdr + m_clget."""
        req, rep, hold = self.req[p], self.rep[p], self.hold
        did = 0
        while rep.free_space() > 0:
            got = self.consume_head(req, self.req_expect, p)
            if got is None:
                break
            m = nfs_reply(self, hold, got[0], self.REPLY_LEN)
            if m < 0:
                continue  # the request is lost; the driver gives up on it below
            rep.push(m)
            hold.pop()
            self.count(STAT_SENT)
            did += 1
        return did

    def driver(self, p: int, running: bool) -> int:
        """Complete replies, then post new requests while fewer than WINDOW are out."""
        rep, done = self.rep[p], self.done[p]
        did = 0
        while len(done) < self.TXBATCH:
            m = rep.pop()
            if m < 0:
                break
            done.push(m)
            seq, ok = self.read_payload(m)
            if ok:
                self.count(STAT_PACKETS)
                self.check_seq(seq, self.reply_expect[p])
                self.reply_expect[p] = seq + 1
            self.outstanding[p] -= 1
            did += 1
        self.free_ring(done)
        if len(self.rxd[p]) < self.rxd_size:
            self.refill(p)
        while running and self.outstanding[p] < self.WINDOW and self.req[p].free_space() > 0:
            r = self.rxd[p].peek()
            if r < 0:
                self.count(STAT_DROPS)
                break
            self.write_payload(r, self.xid[p], self.REQ_LEN)
            self.req[p].push(r)
            self.rxd[p].advance()
            self.xid[p] += 1
            self.outstanding[p] += 1
            did += 1
            self.refill(p)
        return did

    def refill(self, p: int) -> None:
        """Post rx buffers with m_getcl(M_NOWAIT), as a driver does."""
        rxd = self.rxd[p]
        while len(rxd) < self.rxd_size:
            m = self.cpu.m_getcl(M_NOWAIT, MT_DATA, M_PKTHDR)
            if m < 0:
                self.count(STAT_ALLOC_FAILS)
                return
            rxd.push(m)
