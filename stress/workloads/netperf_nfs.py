"""netperf-nfs: a bulk stream that fills the cluster zone, then an NFS server needing clusters.

Stands for the machine of policies.md's last workload shape: a host first runs a bulk
TCP transfer whose socket buffer grows as long as mbuf clusters can be had (a large
``netperf -s/-S`` send buffer, or a stalled peer with a huge window), then serves NFS
READs whose replies are built from *standalone* clusters (``m_gethdr`` + ``m_clget``
from the cluster zone, 2005's ``nfsm_reply``).  After the stream, every cluster it used
sits in the packet zone's cache, attached to a cached packet.  Under ``none`` nothing
gives them back: the NFS server's ``m_clget`` sleeps in ``zonelimit`` with a half-built
reply and the NFS phase starves.  A trimming policy that returns cached packets to their
native zones lets it run.  (``mixed`` is the same two phases with the ordinary netperf
window, which hoards far less.)

Per (application CPU a, driver CPU d) pair, see :func:`stress.workloads.common.pairs`::

    phase 0: bulk stream (STAT_SENT counts segments)
      a: m = m_getcl(M_NOWAIT)  until it fails: the socket buffer is as large as the
         clusters allow (sbspace);  n = m_copym(m) -> rg_nn_tx<p>;  m -> rg_nn_snd<p>
      d: pop n, verify seq + CRC, m_freem(n)          (transmit; refcount 2 -> 1)
      a: window full and tx ring empty: the peer ACKs the whole window:
         m_freem every m of rg_nn_snd<p>              (last reference: back to the packet zone)
    phase 1: NFS READ service (STAT_PACKETS counts completed RPCs)
      d: a READ request arrives in an rx buffer m_getcl(M_NOWAIT) -> rg_nn_req<p>
         (at most NFS_WINDOW outstanding)
      a: pop request, verify, m_freem it; build the reply: CHAIN x (m_gethdr(M_WAITOK) +
         m_clget(M_WAITOK), may sleep in zonelimit), each recorded in rg_nn_part<p>
         before the next call; a complete chain moves to rg_nn_rep<p>
      d: pop CHAIN replies, verify, m_freem each; the RPC is complete

The phase is the manager's ``wl_ctl[CTL_PHASE]`` when it sets one, else this
workload's own: the second half of the rounds (``wl_ctl[CTL_ROUND]``), or of the
duration from the worker's start.  With the load off (``running`` false) the stream
completes its window and the server completes no new requests.
"""

from __future__ import annotations

import time
from typing import ClassVar

from allocator import M_NOWAIT, M_PKTHDR, MT_DATA, ArraySpec
from stress.config import RunConfig
from stress.workloads.common import (
    CTL_ROUND,
    STAT_ALLOC_FAILS,
    STAT_DROPS,
    STAT_PACKETS,
    STAT_SENT,
    WorkerContext,
    Workload,
    pairs,
)
from stress.workloads.nfs import nfs_reply
from stress.workloads.ring import ring_spec

PHASE_STREAM = 0
PHASE_NFS = 1


def stream_capacity(nmbclusters: int) -> int:
    """Largest socket buffer (segments) of one stream: the cluster limit itself."""
    return max(16, nmbclusters)


class NetperfNfs(Workload):
    """A cluster-hungry bulk stream, then an NFS server replying from standalone clusters."""

    name: ClassVar[str] = "netperf-nfs"
    PHASED: ClassVar[bool] = True
    BURST: ClassVar[int] = 32  #: segments sent per turn
    TXBATCH: ClassVar[int] = 64  #: segments transmitted per driver turn
    MSS: ClassVar[int] = 1448
    NFS_WINDOW: ClassVar[int] = 8  #: outstanding READ RPCs per pair (nfsiod / client concurrency)
    CHAIN: ClassVar[int] = 16  #: clusters per READ reply (rsize 32 KB)
    REQ_LEN: ClassVar[int] = 128
    REPLY_LEN: ClassVar[int] = 1448

    @classmethod
    def arrays(cls, cfg: RunConfig) -> list[ArraySpec]:
        """Per pair: the stream's socket buffer and tx ring, the NFS request, partial-reply
        and reply rings."""
        cap = stream_capacity(cfg.nmbclusters)
        out: list[ArraySpec] = []
        for p, (a, d) in enumerate(pairs(cfg.cpus)):
            out += [
                ring_spec(f"nn_snd{p}", cap, f"CPU {a}: stream socket buffer (packets awaiting ACK)"),
                ring_spec(f"nn_tx{p}", cap, f"CPU {a} -> CPU {d}: segment copies to transmit"),
                ring_spec(f"nn_req{p}", 2 * cls.NFS_WINDOW, f"CPU {d} -> CPU {a}: NFS READ requests"),
                ring_spec(f"nn_part{p}", cls.CHAIN, f"CPU {a}: the reply chain being built"),
                ring_spec(f"nn_rep{p}", 2 * cls.NFS_WINDOW * cls.CHAIN, f"CPU {a} -> CPU {d}: replies"),
            ]
        return out

    def __init__(self, ctx: WorkerContext) -> None:
        super().__init__(ctx)
        plist = pairs(ctx.ncpus)
        self.app_pairs = [p for p, (a, _) in enumerate(plist) if a == ctx.k]
        self.drv_pairs = [p for p, (_, d) in enumerate(plist) if d == ctx.k]
        mine = sorted(set(self.app_pairs + self.drv_pairs))
        self.snd = {p: ctx.ring(f"nn_snd{p}") for p in self.app_pairs}
        self.part = {p: ctx.ring(f"nn_part{p}") for p in self.app_pairs}
        self.tx = {p: ctx.ring(f"nn_tx{p}") for p in mine}
        self.req = {p: ctx.ring(f"nn_req{p}") for p in mine}
        self.rep = {p: ctx.ring(f"nn_rep{p}") for p in mine}
        self.ctl = ctx.uma.view("wl_ctl")
        self.t0 = time.monotonic()
        cfg = ctx.cfg
        self.rounds = cfg.rounds
        self.half = cfg.duration / 2
        # stream state (application side)
        self.snd_nxt = {p: 0 for p in self.app_pairs}
        self.window_full = {p: False for p in self.app_pairs}
        self.tx_expect = {p: 0 for p in self.drv_pairs}
        # NFS state
        self.xid = {p: 0 for p in self.drv_pairs}  # next request id (driver side)
        self.outstanding = {p: 0 for p in self.drv_pairs}
        self.rep_seen = {p: 0 for p in self.drv_pairs}  # reply mbufs of the current RPC
        self.req_expect = {p: 0 for p in self.app_pairs}
        self.serving = {p: -1 for p in self.app_pairs}  # xid whose reply is being built

    def own_phase(self) -> int:
        """The phase by this workload's clock: the second half of the rounds or of the time."""
        if self.rounds > 0:
            return PHASE_NFS if self.ctl[CTL_ROUND] >= (self.rounds + 1) // 2 else PHASE_STREAM
        return PHASE_NFS if time.monotonic() - self.t0 >= self.half else PHASE_STREAM

    def turn(self, running: bool, phase: int) -> int:
        """Driver roles first (they complete work), then the application roles."""
        phase = max(phase, self.own_phase())
        stream = running and phase == PHASE_STREAM
        nfs = running and phase == PHASE_NFS
        did = 0
        for p in self.drv_pairs:
            did += self.transmit(p) + self.nfs_driver(p, nfs)
        for p in self.app_pairs:
            did += self.stream(p, stream) + self.nfsd(p)
        return did

    # --- phase 0: the bulk stream ------------------------------------------------------
    def stream(self, p: int, running: bool) -> int:
        """Fill the socket buffer while clusters last; on the window's ACK free it all."""
        cpu, snd, tx, hold = self.cpu, self.snd[p], self.tx[p], self.hold
        did = 0
        if len(snd) and len(tx) == 0 and (self.window_full[p] or not running):
            # every copy was transmitted: the peer acknowledges the whole window
            while True:
                m = snd.pop()
                if m < 0:
                    break
                cpu.m_freem(m)
                did += 1
            self.window_full[p] = False
            return did
        if not running or self.window_full[p]:
            return did
        while did < self.BURST:
            if snd.free_space() == 0 or tx.free_space() == 0:
                self.window_full[p] = True
                break
            m = cpu.m_getcl(M_NOWAIT, MT_DATA, M_PKTHDR)
            if m < 0:  # no cluster to be had: the socket buffer is as big as it gets
                self.window_full[p] = True
                break
            hold.push(m)
            seq = self.snd_nxt[p]
            self.write_payload(m, seq, self.MSS)
            n = cpu.m_copym(m)
            if n < 0:
                self.count(STAT_ALLOC_FAILS)
                cpu.m_freem(m)
                hold.pop()
                self.window_full[p] = True
                break
            snd.push(m)
            tx.push(n)
            hold.pop()
            self.snd_nxt[p] = seq + 1
            self.count(STAT_SENT)
            did += 1
        return did

    def transmit(self, p: int) -> int:
        """The driver puts segment copies on the wire and frees its reference."""
        tx = self.tx[p]
        did = 0
        while did < self.TXBATCH and self.consume_head(tx, self.tx_expect, p) is not None:
            did += 1
        return did

    # --- phase 1: NFS READ service -----------------------------------------------------
    def nfs_driver(self, p: int, running: bool) -> int:
        """Complete reply chains, then receive new requests while fewer than NFS_WINDOW are out."""
        cpu, rep, req = self.cpu, self.rep[p], self.req[p]
        did = 0
        while True:
            m = rep.peek()
            if m < 0:
                break
            self.read_payload(m)
            cpu.m_freem(m)
            rep.advance()
            did += 1
            self.rep_seen[p] += 1
            if self.rep_seen[p] == self.CHAIN:
                self.rep_seen[p] = 0
                self.outstanding[p] -= 1
                self.count(STAT_PACKETS)  # one READ RPC answered
        while running and self.outstanding[p] < self.NFS_WINDOW and req.free_space() > 0:
            r = cpu.m_getcl(M_NOWAIT, MT_DATA, M_PKTHDR)  # the rx buffer the request lands in
            if r < 0:
                self.count(STAT_DROPS)
                break
            self.write_payload(r, self.xid[p], self.REQ_LEN)
            req.push(r)
            self.xid[p] += 1
            self.outstanding[p] += 1
            did += 1
        return did

    def nfsd(self, p: int) -> int:
        """Serve one request: free it, build its CHAIN-cluster reply, send it whole."""
        req, part, rep = self.req[p], self.part[p], self.rep[p]
        if self.serving[p] < 0 and len(self.snd[p]):
            # The stream's last window is still unacknowledged: the same CPU would sleep in
            # zonelimit for clusters only its own ACK processing can free (a self-deadlock
            # no trimming policy can help).  TCP input and nfsd are different threads; here
            # one CPU runs both, so the ACK goes first.
            return 0
        if self.serving[p] < 0:
            got = self.consume_head(req, self.req_expect, p)
            if got is None:
                return 0
            self.serving[p] = got[0]
        seq = self.serving[p]
        did = 0
        while len(part) < self.CHAIN:  # each part sleeps in zonelimit when the clusters are hoarded
            if nfs_reply(self, part, seq * self.CHAIN + len(part), self.REPLY_LEN) < 0:
                return did
            did += 1
        if rep.free_space() < self.CHAIN:
            return did
        while True:
            m = part.pop()
            if m < 0:
                break
            rep.push(m)
        self.serving[p] = -1
        return did + 1
