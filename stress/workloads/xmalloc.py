"""xmalloc: producers allocate, consumers on other CPUs free.

Stands for Lever and Boreham's xmalloc-test (the malloc benchmark where one thread
allocates and another frees), the pattern that moves items from one CPU's cache to
another's: every object is allocated from the producer's per-CPU bucket and freed into
the consumer's, so buckets migrate through the zone's full and empty lists.  Objects
are a mix of the three mbuf shapes: a plain mbuf (``m_gethdr``), a packet
(``m_getcl``) and an mbuf with a standalone cluster (``m_gethdr`` + ``m_clget``).
Pairs as in netperf: CPU 2p produces for CPU 2p+1; an odd last CPU does both.
"""

from __future__ import annotations

from typing import ClassVar

from allocator import M_PKTHDR, M_WAITOK, MT_DATA, ArraySpec
from stress.config import RunConfig
from stress.workloads.common import (
    STAT_ALLOC_FAILS,
    STAT_PACKETS,
    STAT_SENT,
    WorkerContext,
    Workload,
    pairs,
)
from stress.workloads.ring import ring_spec


class Xmalloc(Workload):
    """Producer/consumer across CPUs through one ring per pair."""

    name: ClassVar[str] = "xmalloc"
    DEPTH: ClassVar[int] = 256  #: objects in flight per pair
    BATCH: ClassVar[int] = 32  #: objects produced or consumed per turn

    @classmethod
    def arrays(cls, cfg: RunConfig) -> list[ArraySpec]:
        """One producer -> consumer ring per pair."""
        return [ring_spec(f"xm{p}", cls.DEPTH, f"CPU {a} -> CPU {d}: objects to free")
                for p, (a, d) in enumerate(pairs(cfg.cpus))]

    def __init__(self, ctx: WorkerContext) -> None:
        super().__init__(ctx)
        self.prod = [p for p, (a, _) in enumerate(pairs(ctx.ncpus)) if a == ctx.k]
        self.cons = [p for p, (_, d) in enumerate(pairs(ctx.ncpus)) if d == ctx.k]
        self.ring = {p: ctx.ring(f"xm{p}") for p in self.prod + self.cons}
        self.seq = {p: 0 for p in self.prod}
        self.expect = {p: 0 for p in self.cons}
        self.rng = ctx.rng

    def turn(self, running: bool, phase: int) -> int:
        """Consume what is queued, then (when running) produce a batch."""
        did = 0
        for p in self.cons:
            did += self.consume(p)
        if running:
            for p in self.prod:
                did += self.produce(p)
        return did

    def produce(self, p: int) -> int:
        """Allocate a batch of mixed objects and queue them for the consumer."""
        cpu, ring, hold = self.cpu, self.ring[p], self.hold
        n = 0
        while n < self.BATCH and ring.free_space() > 0:
            shape = self.rng.random()
            if shape < 0.25:
                m = cpu.m_getcl(M_WAITOK, MT_DATA, M_PKTHDR)
                length = 512
            else:
                m = cpu.m_gethdr(M_WAITOK, MT_DATA)
                length = 64
            if m < 0:
                self.count(STAT_ALLOC_FAILS)
                break
            if shape >= 0.85:
                hold.push(m)
                if cpu.m_clget(m, M_WAITOK):
                    length = 512
                else:
                    self.count(STAT_ALLOC_FAILS)
                hold.pop()
            self.write_payload(m, self.seq[p], length)
            ring.push(m)
            self.seq[p] += 1
            self.count(STAT_SENT)
            n += 1
        return n

    def consume(self, p: int) -> int:
        """Verify and free a batch of the producer's objects."""
        ring = self.ring[p]
        n = 0
        while n < self.BATCH:
            got = self.consume_head(ring, self.expect, p)
            if got is None:
                break
            if got[1]:
                self.count(STAT_PACKETS)
            n += 1
        return n
