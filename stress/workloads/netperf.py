"""netperf TCP_STREAM: a bulk sender, its NIC driver, and the ACKs coming back.

Stands for ``netperf -t TCP_STREAM -l 30`` in a loop, the load under which SMP
-CURRENT machines wedged in Dec 2005 (uma.md).  CPUs pair up as (application CPU,
driver CPU) -- see :func:`stress.workloads.common.pairs`; with one CPU both roles run
on it.  The data flow of architecture.md, per pair::

    application CPU (sosend / tcp_output / tcp_input)          driver CPU (if_start / rxeof)
    ------------------------------------------------          -----------------------------
    m = m_getcl(M_WAITOK)   <- may sleep in zonelimit
    payload: seq, len, CRC-32
    n = m_copym(m)  -> rg_np_snd  (the socket buffer copy)
    m -----------------------------> rg_np_tx ---------------> pop into rg_np_done,
                                                              verify seq + CRC ("transmit")
                                                              ACK frame arrives: take an rx
                                                              buffer from rg_np_rxd, write ack
    tcp_input: pop ACK  <------------ rg_np_rx <------------- and refill rg_np_rxd with
    m_freem(n) for every acked seq                            m_getcl(M_NOWAIT)
    m_freem(ACK frame)                                        tx completion: m_freem(m) for the
                                                              whole batch

Which comes first on the driver CPU, the receive interrupt carrying the ACK or the
tx-completion interrupt, is a matter of timing (interrupt moderation against the
round-trip time on a LAN: both are tens of microseconds); we toss a seeded coin per
batch (``ACK_FIRST`` = 1/2, no preference).  When the ACK goes first, both sides free
the batch in sequence order at the same moment: the socket buffer's ``m_freem(n)`` and
the driver's ``m_freem(m)`` of one shared cluster run on two CPUs close in time.  That
is the window of the 2005 refcount race (two CPUs read refcount 2, both decrement,
nobody frees).  When the completion goes first the frees are ordered and cannot race.
The driver keeps ``rx_ring_size`` receive buffers posted, as a NIC does: the flat
"clusters in use" of an idle 2005 machine.

Sizes: a 64-segment send window (a 92 KB socket buffer at MSS 1448), tx completions in
batches of 32 (a tx-completion interrupt), ACKs cumulative, one per completed batch.
"""

from __future__ import annotations

from typing import ClassVar

from allocator import M_NOWAIT, M_PKTHDR, M_WAITOK, MT_DATA, ArraySpec
from stress.config import RunConfig
from stress.workloads.common import (
    STAT_ALLOC_FAILS,
    STAT_DROPS,
    STAT_PACKETS,
    STAT_PAYLOAD_ERRORS,
    STAT_SENT,
    WorkerContext,
    Workload,
    pairs,
    rx_ring_size,
)
from stress.workloads.ring import RING_PREFIX, ring_spec


class Netperf(Workload):
    """netperf TCP_STREAM: one bulk stream per (application, driver) CPU pair."""

    name: ClassVar[str] = "netperf"
    prefix: ClassVar[str] = "np"
    WINDOW: ClassVar[int] = 64  #: segments in flight (socket send buffer)
    TXBATCH: ClassVar[int] = 32  #: frames per tx-completion interrupt
    BURST: ClassVar[int] = 16  #: segments tcp_output sends per call
    MSS: ClassVar[int] = 1448  #: payload bytes per segment
    ACK_LEN: ClassVar[int] = 40  #: bytes of an ACK frame (TCP/IP headers)
    ACK_FIRST: ClassVar[float] = 0.5  #: chance the ACK's rx interrupt precedes the tx completion

    @classmethod
    def arrays(cls, cfg: RunConfig) -> list[ArraySpec]:
        """Per pair: tx, rx (ACK), send buffer, tx-completion and rx-descriptor rings."""
        p_ = cls.prefix
        out: list[ArraySpec] = []
        for p, (a, d) in enumerate(pairs(cfg.cpus)):
            out += [
                ring_spec(f"{p_}_tx{p}", 2 * cls.WINDOW, f"CPU {a} -> CPU {d}: segments to transmit"),
                ring_spec(f"{p_}_rx{p}", 2 * cls.WINDOW, f"CPU {d} -> CPU {a}: received frames"),
                ring_spec(f"{p_}_snd{p}", cls.WINDOW, f"CPU {a}: socket send buffer (m_copym refs)"),
                ring_spec(f"{p_}_done{p}", 2 * cls.TXBATCH, f"CPU {d}: frames awaiting tx completion"),
                ring_spec(f"{p_}_rxd{p}", rx_ring_size(cfg.nmbclusters), f"CPU {d}: posted rx buffers"),
            ]
        return out

    @classmethod
    def posted_rings(cls, cfg: RunConfig) -> list[str]:
        """The rx descriptor rings: a NIC keeps its receive buffers posted while idle."""
        return [f"{RING_PREFIX}{cls.prefix}_rxd{p}" for p in range(len(pairs(cfg.cpus)))]

    def __init__(self, ctx: WorkerContext) -> None:
        super().__init__(ctx)
        p_ = self.prefix
        self.app_pairs: list[int] = []
        self.drv_pairs: list[int] = []
        for p, (a, d) in enumerate(pairs(ctx.ncpus)):
            if a == ctx.k:
                self.app_pairs.append(p)
            if d == ctx.k:
                self.drv_pairs.append(p)
        self.tx = {p: ctx.ring(f"{p_}_tx{p}") for p in self.app_pairs + self.drv_pairs}
        self.rx = {p: ctx.ring(f"{p_}_rx{p}") for p in self.app_pairs + self.drv_pairs}
        self.snd = {p: ctx.ring(f"{p_}_snd{p}") for p in self.app_pairs}
        self.done = {p: ctx.ring(f"{p_}_done{p}") for p in self.drv_pairs}
        self.rxd = {p: ctx.ring(f"{p_}_rxd{p}") for p in self.drv_pairs}
        self.rxd_size = rx_ring_size(ctx.cfg.nmbclusters)
        # application side: tcpcb snd_una / snd_nxt per pair
        self.snd_una = {p: 0 for p in self.app_pairs}
        self.snd_nxt = {p: 0 for p in self.app_pairs}
        # driver side: next seq expected on the wire, highest seq sent and not yet acked
        self.tx_expect = {p: 0 for p in self.drv_pairs}
        self.ack_pending = {p: -1 for p in self.drv_pairs}
        self.acked = {p: -1 for p in self.drv_pairs}
        self.rng = ctx.rng

    def turn(self, running: bool, phase: int) -> int:
        """One pass of each role this CPU plays: driver first (completes work), then app."""
        did = 0
        for p in self.drv_pairs:
            did += self.driver(p)
        for p in self.app_pairs:
            did += self.application(p, running)
        return did

    # --- the application CPU: tcp_input for ACKs, then sosend/tcp_output ----------------
    def application(self, p: int, running: bool) -> int:
        """Consume received frames (freeing acked socket-buffer copies), then send."""
        cpu, rx, snd = self.cpu, self.rx[p], self.snd[p]
        did = 0
        while True:
            r = rx.peek()
            if r < 0:
                break
            did += 1
            seq, ok = self.read_payload(r)
            if ok:
                if not self.snd_una[p] - 1 <= seq < self.snd_nxt[p]:
                    self.count(STAT_PAYLOAD_ERRORS)  # an ACK for data never sent
                else:
                    while self.snd_una[p] <= seq:
                        n = snd.peek()
                        if n < 0:
                            self.count(STAT_PAYLOAD_ERRORS)
                            break
                        cpu.m_freem(n)
                        snd.advance()
                        self.snd_una[p] += 1
            cpu.m_freem(r)
            rx.advance()
        if running:
            did += self.send(p)
        return did

    def send(self, p: int) -> int:
        """sosend + tcp_output: fill the window with fresh segments, one m_copym each."""
        cpu, tx, snd, hold = self.cpu, self.tx[p], self.snd[p], self.hold
        sent = 0
        while sent < self.BURST and len(snd) < self.WINDOW and tx.free_space() > 0:
            m = cpu.m_getcl(M_WAITOK, MT_DATA, M_PKTHDR)  # the user thread may sleep here
            if m < 0:
                self.count(STAT_ALLOC_FAILS)
                break
            hold.push(m)
            seq = self.snd_nxt[p]
            self.write_payload(m, seq, self.MSS)
            n = cpu.m_copym(m)  # the socket buffer keeps this reference until the ACK
            if n < 0:
                self.count(STAT_ALLOC_FAILS)
                cpu.m_freem(m)
                hold.pop()
                break
            snd.push(n)
            tx.push(m)
            hold.pop()
            self.snd_nxt[p] = seq + 1
            self.count(STAT_SENT)
            sent += 1
        return sent

    # --- the driver CPU: if_start, rxeof, tx completion ---------------------------------
    def driver(self, p: int) -> int:
        """Transmit a batch, receive its ACK into a posted rx buffer, complete the batch."""
        tx, done = self.tx[p], self.done[p]
        did = 0
        if len(self.rxd[p]) < self.rxd_size:
            self.refill(p, 8)
        while len(done) < self.TXBATCH:
            m = tx.pop()
            if m < 0:
                break
            done.push(m)
            did += 1
            seq, ok = self.read_payload(m)
            if ok:
                self.count(STAT_PACKETS)  # a segment on the wire, verified
                self.check_seq(seq, self.tx_expect[p])
                self.ack_pending[p] = seq
            self.tx_expect[p] += 1
        if self.rng.random() < self.ACK_FIRST:  # the rx interrupt wins: frees overlap
            self.deliver_ack(p)
            self.tx_complete(p)
        else:  # the tx-completion interrupt wins: the driver's frees are done first
            self.tx_complete(p)
            self.deliver_ack(p)
        return did

    def deliver_ack(self, p: int) -> None:
        """Hand the pending cumulative ACK up the stack, if a buffer and ring room allow."""
        if self.ack_pending[p] > self.acked[p] and self.receive(p, self.ack_pending[p]):
            self.acked[p] = self.ack_pending[p]

    def tx_complete(self, p: int) -> None:
        """em_txeof: the driver's references of the transmitted batch go back."""
        self.free_ring(self.done[p])

    def receive(self, p: int, seq: int) -> bool:
        """A frame for ``seq`` arrives in the oldest posted rx buffer and goes up the stack."""
        rxd, rx = self.rxd[p], self.rx[p]
        if rx.free_space() == 0:
            return False
        r = rxd.peek()
        if r < 0:
            self.refill(p, 1)
            r = rxd.peek()
            if r < 0:
                self.count(STAT_DROPS)  # no buffer: the frame is dropped, the ACK stays pending
                return False
        self.write_payload(r, seq, self.ACK_LEN)
        rx.push(r)
        rxd.advance()
        self.refill(p, 1)
        return True

    def refill(self, p: int, limit: int) -> None:
        """Post up to ``limit`` fresh rx buffers, as a driver does: m_getcl(M_NOWAIT)."""
        rxd = self.rxd[p]
        while limit > 0 and len(rxd) < self.rxd_size:
            m = self.cpu.m_getcl(M_NOWAIT, MT_DATA, M_PKTHDR)
            if m < 0:
                self.count(STAT_ALLOC_FAILS)
                return
            rxd.push(m)
            limit -= 1
