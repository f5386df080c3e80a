"""larson: long-lived objects replaced at random and handed from CPU to CPU.

Stands for Larson and Krishnan's server benchmark (the "larson" test of Hoard, tcmalloc
and jemalloc): each thread keeps a table of live objects, repeatedly frees a random one
and allocates a replacement, and from time to time its objects pass to another thread,
so objects are freed on CPUs other than the one that allocated them and live for a
variable time.  Here each CPU's table is an arena slot array (``hs_lar<k>``) and a
hand-off moves a batch of objects over a ring to the next CPU (``rg_lar<k>``: CPU k ->
CPU k+1 mod n), which verifies them and takes them into its own table.
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
)
from stress.workloads.ring import ring_spec, slots_spec


def table_size(nmbclusters: int) -> int:
    """Objects per CPU: 256, or fewer when the cluster limit is scaled down."""
    return max(8, min(256, nmbclusters // 16))


class Larson(Workload):
    """Random replacement in a per-CPU table, with batches migrating to the next CPU."""

    name: ClassVar[str] = "larson"
    STEPS: ClassVar[int] = 32  #: replacements per turn
    MIGRATE_EVERY: ClassVar[int] = 8  #: turns between hand-offs
    HANDOFF: ClassVar[int] = 16  #: objects per hand-off

    @classmethod
    def arrays(cls, cfg: RunConfig) -> list[ArraySpec]:
        """Per CPU: its object table and its ring to the next CPU."""
        n = table_size(cfg.nmbclusters)
        out: list[ArraySpec] = []
        for k in range(cfg.cpus):
            out.append(slots_spec(f"lar{k}", n, f"CPU {k}: live objects"))
            out.append(ring_spec(f"lar{k}", 2 * cls.HANDOFF, f"CPU {k} -> CPU {(k + 1) % cfg.cpus}: hand-off"))
        return out

    def __init__(self, ctx: WorkerContext) -> None:
        super().__init__(ctx)
        self.table = ctx.slots(f"lar{ctx.k}")
        self.out = ctx.ring(f"lar{ctx.k}")
        self.inbox = ctx.ring(f"lar{(ctx.k - 1) % ctx.ncpus}")
        self.rng = ctx.rng
        self.turns = 0
        self.seq = ctx.k << 40  # object ids unique across CPUs

    def turn(self, running: bool, phase: int) -> int:
        """Adopt handed-off objects, then (when running) replace objects and hand some off."""
        did = self.adopt()
        if not running:
            return did
        for _ in range(self.STEPS):
            i = self.rng.randrange(self.table.n)
            self.release(i)
            if not self.allocate(i):
                break
            did += 1
        self.turns += 1
        if self.turns % self.MIGRATE_EVERY == 0:
            did += self.hand_off()
        return did

    def release(self, i: int) -> None:
        """Free the object in slot i (verifying it first), leaving the slot empty."""
        m = self.table[i]
        if m < 0:
            return
        self.read_payload(m)
        self.table[i] = -1
        self.cpu.m_freem(m)

    def allocate(self, i: int) -> bool:
        """Put a fresh object of a random shape into the empty slot i."""
        cpu = self.cpu
        shape = self.rng.random()
        if shape < 0.3:
            m = cpu.m_getcl(M_WAITOK, MT_DATA, M_PKTHDR)
        else:
            m = cpu.m_gethdr(M_WAITOK, MT_DATA)
        if m < 0:
            self.count(STAT_ALLOC_FAILS)
            return False
        self.table[i] = m  # recorded before m_clget may sleep
        length = 512 if shape < 0.3 else 64
        if 0.3 <= shape < 0.4:
            if cpu.m_clget(m, M_WAITOK):
                length = 512
            else:
                self.count(STAT_ALLOC_FAILS)
        self.write_payload(m, self.seq, length)
        self.seq += 1
        self.count(STAT_SENT)
        return True

    def hand_off(self) -> int:
        """Move a batch of live objects to the next CPU's inbox."""
        n = 0
        for _ in range(self.HANDOFF):
            if self.out.free_space() == 0:
                break
            i = self.rng.randrange(self.table.n)
            m = self.table[i]
            if m < 0:
                continue
            self.out.push(m)
            self.table[i] = -1
            n += 1
        return n

    def adopt(self) -> int:
        """Take objects handed to us into random slots, freeing whatever they replace."""
        n = 0
        while True:
            m = self.inbox.peek()
            if m < 0:
                break
            _, ok = self.read_payload(m)
            if ok:
                self.count(STAT_PACKETS)
            i = self.rng.randrange(self.table.n)
            old = self.table[i]
            self.table[i] = m
            self.inbox.advance()
            if old >= 0:
                self.read_payload(old)
                self.cpu.m_freem(old)
            n += 1
        return n
