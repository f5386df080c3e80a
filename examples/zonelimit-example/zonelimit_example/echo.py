"""``echo``: an example workload -- a UDP echo between CPU pairs.

Stands for a client and an echo server on one host: CPU 2p (the client) allocates a
packet (``m_getcl``), writes a payload with a sequence number and a CRC, and queues it
to CPU 2p+1 (the server), which verifies it and sends the very same mbuf back; the
client verifies the echo, in order, and frees it.  Every packet is thus freed by the CPU
that allocated it, after a round trip through another CPU's hands.  At most ``DEPTH``
packets are in flight per pair.  An odd last CPU is its own server.

The rules every workload keeps (stress/workloads/common.py): every mbuf it holds is in
an arena ring (here ``rg_echo_req<p>`` and ``rg_echo_rep<p>``) before the next allocator
call that may sleep; payloads are checked and errors counted, never raised; with
``running`` false nothing new starts, but what is in flight completes.
"""

from __future__ import annotations

from typing import ClassVar

from allocator import M_PKTHDR, M_WAITOK, MT_DATA, ArraySpec
from stress.config import RunConfig
from stress.workloads import STAT_ALLOC_FAILS, STAT_PACKETS, STAT_SENT, WorkerContext, Workload, pairs, ring_spec


class Echo(Workload):
    """Client CPUs send packets to their server CPU, which echoes each one back."""

    name: ClassVar[str] = "echo"
    DEPTH: ClassVar[int] = 64  #: packets in flight per pair (a power of two: a ring's capacity)
    BATCH: ClassVar[int] = 16  #: packets sent, echoed or received per turn and role
    LENGTH: ClassVar[int] = 512  #: payload bytes per packet

    @classmethod
    def arrays(cls, cfg: RunConfig) -> list[ArraySpec]:
        """Per pair: requests to the server and replies back to the client."""
        out = []
        for p, (client, server) in enumerate(pairs(cfg.cpus)):
            out.append(ring_spec(f"echo_req{p}", cls.DEPTH, f"CPU {client} -> CPU {server}: requests"))
            out.append(ring_spec(f"echo_rep{p}", cls.DEPTH, f"CPU {server} -> CPU {client}: echoes"))
        return out

    def __init__(self, ctx: WorkerContext) -> None:
        super().__init__(ctx)
        self.clients = [p for p, (c, _) in enumerate(pairs(ctx.ncpus)) if c == ctx.k]
        self.servers = [p for p, (_, s) in enumerate(pairs(ctx.ncpus)) if s == ctx.k]
        self.req = {p: ctx.ring(f"echo_req{p}") for p in self.clients + self.servers}
        self.rep = {p: ctx.ring(f"echo_rep{p}") for p in self.clients + self.servers}
        self.seq = {p: 0 for p in self.clients}  #: next sequence number to send
        self.expect = {p: 0 for p in self.clients}  #: next echo expected back

    def turn(self, running: bool, phase: int) -> int:
        """Echo what arrived, take back echoes, then (while running) send more."""
        did = 0
        for p in self.servers:
            did += self.serve(p)
        for p in self.clients:
            did += self.receive(p)
            if running:
                did += self.send(p)
        return did

    def send(self, p: int) -> int:
        """Client: allocate and queue packets while fewer than DEPTH are in flight."""
        cpu, req = self.cpu, self.req[p]
        n = 0
        # Room in the request ring too: the server may not have moved past echoes the
        # client has already received.
        while n < self.BATCH and self.seq[p] - self.expect[p] < self.DEPTH and req.free_space() > 0:
            m = cpu.m_getcl(M_WAITOK, MT_DATA, M_PKTHDR)
            if m < 0:
                self.count(STAT_ALLOC_FAILS)
                break
            self.write_payload(m, self.seq[p], self.LENGTH)
            req.push(m)  # recorded before the next allocation, which may sleep
            self.seq[p] += 1
            self.count(STAT_SENT)
            n += 1
        return n

    def serve(self, p: int) -> int:
        """Server: verify each request and send the same mbuf back."""
        req, rep = self.req[p], self.rep[p]
        n = 0
        while n < self.BATCH:
            m = req.peek()
            if m < 0:
                break
            self.read_payload(m)
            rep.push(m)  # room is certain: at most DEPTH packets are in flight
            req.advance()
            n += 1
        return n

    def receive(self, p: int) -> int:
        """Client: verify each echo, in order, and free it."""
        n = 0
        while n < self.BATCH:
            got = self.consume_head(self.rep[p], self.expect, p)
            if got is None:
                break
            if got[1]:
                self.count(STAT_PACKETS)
            n += 1
        return n
