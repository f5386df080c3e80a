"""burst: a receive burst on one CPU, a pause, then the next burst on another CPU.

Stands for interrupt load that moves between CPUs: a NIC's receive interrupt bound to
one CPU takes a burst of traffic (the driver allocates rx buffers with ``m_getcl``, the
protocol on the same CPU consumes and frees them), the traffic pauses, and the next
burst lands on another CPU (the interrupt was rebound, or another NIC got busy).  It
tells trimming policies apart on the one thing the others do not show:

- the packets a burst leaves in its CPU's *per-CPU* buckets (up to 2 x 128) are out of
  reach of the next CPU, which fills its own from the keg: a policy that never flushes
  per-CPU buckets strands them until the burst comes back;
- the pause between bursts shows how fast each policy gives back the zone list's
  packets once the load has gone (recovery time), and the next burst how much that
  costs in misses.

Schedule, by the worker's clock (all workers fork together)::

    period = ON + GAP seconds;  slot i = elapsed // period;  owner = slot mod ncpus
    first ON seconds of the slot: the owner allocates a burst of BURST packets
    (m_getcl(M_WAITOK), each recorded in rg_bu_held<k>), verifies and frees them all,
    and repeats; every other CPU idles.  The last GAP seconds: nobody allocates.

``BURST`` is half the cluster limit (at most 2048), so a burst alone never exhausts
the cluster zone but two CPUs' leftovers can.
"""

from __future__ import annotations

import time
from typing import ClassVar

from allocator import M_PKTHDR, M_WAITOK, MT_DATA, ArraySpec
from stress.config import RunConfig
from stress.workloads.common import (
    STAT_ALLOC_FAILS,
    STAT_PACKETS,
    STAT_SENT,
    WorkerContext,
    Workload,
)
from stress.workloads.ring import ring_spec


def burst_size(nmbclusters: int) -> int:
    """Packets per burst: half the cluster limit, at most 2048, at least 8."""
    return max(8, min(2048, nmbclusters // 2))


class Burst(Workload):
    """Bursts of receive traffic that move from CPU to CPU, with pauses between them."""

    name: ClassVar[str] = "burst"
    # 2.5 s each: longer than two default trim intervals (1 s), and not a multiple of
    # them, so every gap holds at least one whole quiet trim interval whatever the phase.
    ON: ClassVar[float] = 2.5  #: seconds a burst lasts
    GAP: ClassVar[float] = 2.5  #: seconds of quiet before the next CPU's burst
    STEP: ClassVar[int] = 64  #: packets allocated or freed per turn
    LEN: ClassVar[int] = 1448

    @classmethod
    def arrays(cls, cfg: RunConfig) -> list[ArraySpec]:
        """Per CPU: the packets of its burst in flight."""
        n = burst_size(cfg.nmbclusters)
        return [ring_spec(f"bu_held{k}", n, f"CPU {k}: packets of the current burst") for k in range(cfg.cpus)]

    def __init__(self, ctx: WorkerContext) -> None:
        super().__init__(ctx)
        self.held = ctx.ring(f"bu_held{ctx.k}")
        self.size = burst_size(ctx.cfg.nmbclusters)
        self.t0 = time.monotonic()
        self.freeing = False  #: the burst is complete: free it before starting the next
        self.seq = 0

    def owner_now(self) -> tuple[int, bool]:
        """(the CPU whose burst it is, whether the burst is on rather than in its pause)."""
        el = time.monotonic() - self.t0
        period = self.ON + self.GAP
        slot = int(el // period)
        return slot % self.ctx.ncpus, (el - slot * period) < self.ON

    def turn(self, running: bool, phase: int) -> int:
        """Allocate towards a full burst while it is this CPU's turn, then free it all."""
        owner, on = self.owner_now()
        mine = running and on and owner == self.k
        cpu, held = self.cpu, self.held
        did = 0
        if self.freeing or (not mine and len(held)):
            while did < self.STEP:
                m = held.pop()
                if m < 0:
                    self.freeing = False
                    break
                seq, ok = self.read_payload(m)
                if ok:
                    self.count(STAT_PACKETS)
                cpu.m_freem(m)
                did += 1
            return did
        if not mine:
            return 0
        while did < self.STEP and len(held) < self.size:
            m = cpu.m_getcl(M_WAITOK, MT_DATA, M_PKTHDR)
            if m < 0:
                self.count(STAT_ALLOC_FAILS)
                break
            held.push(m)
            self.write_payload(m, self.seq, self.LEN)
            self.seq += 1
            self.count(STAT_SENT)
            did += 1
        if len(held) >= self.size:
            self.freeing = True
        return did
