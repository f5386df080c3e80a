"""The small base every workload shares: roles per CPU, payloads, counters, the rx ring.

A workload is the consumer side of the allocator: it stands for a real program (netperf,
an NFS server, a malloc benchmark) and drives ``m_getcl``/``m_copym``/``m_freem`` the way
that program's kernel paths did.  Each workload module defines one :class:`Workload`
subclass; the worker process calls :meth:`Workload.turn` in its loop.

Rules every workload keeps (the audit depends on them, see :mod:`stress.workloads.ring`):

- every mbuf it holds is recorded in an arena ring or slot array, and recorded *before*
  the next allocator call that may sleep;
- every payload carries a sequence number and a CRC-32 written by its producer and
  verified by its consumer; mismatches are counted in the arena (``wl_stat``), never
  raised, so a corrupt run still ends with an audit;
- with ``running`` false (the idle part of a round, or the drain before stop) it starts
  nothing new but completes what is in flight, so netstat -m between rounds shows the
  steady state.

Per-CPU workload counters (``wl_stat``, one 64-byte row per CPU, written only by that
CPU, so no lock is needed) and the manager's control words (``wl_ctl``) live here too.
"""

from __future__ import annotations

import random
import struct
import zlib
from dataclasses import dataclass
from typing import Any, ClassVar

from allocator import ArraySpec
from stress.config import RunConfig
from stress.workloads.ring import RING_PREFIX, Ring, Slots, ring_spec

# --- wl_stat: per-CPU counters, row k * STAT_WORDS --------------------------------------
STAT_WORDS = 8
STAT_PACKETS = 0  #: packets (or objects) delivered and verified by this CPU
STAT_BYTES = 1  #: payload bytes verified
STAT_PAYLOAD_ERRORS = 2  #: sequence or checksum mismatches seen by this CPU
STAT_ALLOC_FAILS = 3  #: allocator calls that returned -1 / False to this CPU
STAT_SENT = 4  #: packets (or objects) produced by this CPU
STAT_DROPS = 5  #: receive frames dropped for want of an rx buffer (M_NOWAIT refill failed)

# --- wl_ctl: written by the manager, read by every worker ---------------------------------
CTL_RUN = 0  #: 1 = load on (a round is running), 0 = idle: finish in-flight work only
CTL_ROUND = 1  #: current round (0-based)
CTL_PHASE = 2  #: workload phase (mixed: 0 netperf, 1 nfs), set for PHASED workloads
CTL_GO = 3  #: 0 = wait at the start line, 1 = go (free and jitter runs; stress.engine.manager)
CTL_WORDS = 8

#: run.json ``workload``: what the consumers counted (wl_stat), by name
COUNTERS = {"packets": STAT_PACKETS, "sent": STAT_SENT, "bytes_verified": STAT_BYTES,
            "payload_errors": STAT_PAYLOAD_ERRORS, "alloc_fails": STAT_ALLOC_FAILS, "rx_drops": STAT_DROPS}

HDR = struct.Struct("<qII")  #: payload header: sequence, length, CRC-32 of the data
PATTERN = bytes(range(256)) * 9  #: payload source; data of seq s starts at PATTERN[s & 255]


def control_specs(ncpus: int) -> list[ArraySpec]:
    """The arrays every run declares: per-CPU counters and the manager's control words."""
    return [
        ArraySpec("wl_stat", "q", STAT_WORDS * ncpus, "per-CPU workload counters (STAT_*)"),
        ArraySpec("wl_ctl", "q", CTL_WORDS, "manager -> workers: run/idle, round, phase"),
    ]


def stat_total(uma: Any, word: int) -> int:
    """One ``wl_stat`` counter summed over every CPU (the manager reads it; workers write rows)."""
    a = uma.np("wl_stat")
    return int(a[word::STAT_WORDS].sum())


def counter_totals(uma: Any) -> dict[str, int]:
    """Every counter of :data:`COUNTERS`, summed over the CPUs."""
    return {name: stat_total(uma, word) for name, word in COUNTERS.items()}


def pairs(ncpus: int) -> list[tuple[int, int]]:
    """(application CPU, driver CPU) pairs: CPUs 2p and 2p+1; an odd last CPU plays both.

    With one CPU the application and the driver run on the same CPU, as on a UP kernel.
    """
    out = [(2 * p, 2 * p + 1) for p in range(ncpus // 2)]
    if ncpus % 2:
        out.append((ncpus - 1, ncpus - 1))
    return out


def rx_ring_size(nmbclusters: int) -> int:
    """Receive descriptors a driver keeps filled: 256 (a 2005 NIC) or 1/16 of the limit.

    Three NICs of 256 descriptors explain the flat 768 clusters in use at the start of
    the Dec 2005 table; a scaled-down ``--nmbclusters`` scales the rings with it.
    """
    return max(4, min(256, nmbclusters // 16))


@dataclass
class WorkerContext:
    """What a workload gets in worker k (after fork): its CPU, the arena, the config."""

    k: int
    ncpus: int
    cpu: Any  # allocator.Cpu
    uma: Any  # allocator.Uma
    cfg: RunConfig
    rng: random.Random

    def ring(self, name: str) -> Ring:
        """The arena ring declared as ``rg_<name>``."""
        return Ring(self.uma.view("rg_" + name), name)

    def slots(self, name: str) -> Slots:
        """The arena slot array declared as ``hs_<name>``."""
        return Slots(self.uma.view("hs_" + name), name)

    def stat_row(self) -> tuple[memoryview, int]:
        """This CPU's counters and the index of its first word."""
        return self.uma.view("wl_stat"), self.k * STAT_WORDS


class Workload:
    """One real workload, as the set of roles this CPU plays in it.

    Subclasses set ``name``, declare their arena arrays in :meth:`arrays` (rings named
    ``rg_*``, slot arrays ``hs_*``), and implement :meth:`turn`.  What the manager needs
    to know about a workload it reads from the class, never from its name:
    :attr:`PHASED`, :meth:`drained_rings` (via :meth:`posted_rings`), :attr:`PCT_STEPS`.
    """

    name: ClassVar[str] = ""
    #: the PCT period (sched points) that suits it; 0: stress.engine.sched's default
    PCT_STEPS: ClassVar[int] = 0
    #: two phases: the manager sets wl_ctl[CTL_PHASE] to 0 for the first half of the
    #: rounds (or of the time without rounds), then to 1
    PHASED: ClassVar[bool] = False

    @classmethod
    def arrays(cls, cfg: RunConfig) -> list[ArraySpec]:
        """The extra arena arrays this workload needs for ``cfg`` (declared before fork)."""
        return []

    @classmethod
    def posted_rings(cls, cfg: RunConfig) -> list[str]:
        """Rings kept full while idle (a NIC's posted receive buffers): none by default."""
        return []

    @classmethod
    def drained_rings(cls, cfg: RunConfig) -> list[str]:
        """The rings that hold work in flight, which the final drain waits to see empty:
        every ring of :meth:`arrays` but the :meth:`posted_rings` (those never empty, so
        waiting for them would only ever time out)."""
        posted = set(cls.posted_rings(cfg))
        return [s.name for s in cls.arrays(cfg) if s.name.startswith(RING_PREFIX) and s.name not in posted]

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.cpu = ctx.cpu
        self.k = ctx.k
        self.stat, self.row = ctx.stat_row()
        #: a one-slot scratch FIFO: an mbuf between its allocation and its proper home
        self.hold = ctx.ring(f"hold{ctx.k}")

    def turn(self, running: bool, phase: int) -> int:
        """Do one bounded slice of work; return how much was done (0: nothing to do)."""
        raise NotImplementedError

    # --- helpers ---------------------------------------------------------------------
    def count(self, word: int, n: int = 1) -> None:
        """Bump one of this CPU's counters (owner-only, no lock)."""
        self.stat[self.row + word] += n

    def write_payload(self, m: int, seq: int, length: int) -> None:
        """Fill mbuf ``m``'s data with ``length`` pattern bytes for ``seq``, header first."""
        buf = self.cpu.mtod(m)
        length = min(length, len(buf) - HDR.size)
        off = seq & 255
        data = PATTERN[off:off + length]
        buf[HDR.size:HDR.size + length] = data
        HDR.pack_into(buf, 0, seq, length, zlib.crc32(data))

    def read_payload(self, m: int) -> tuple[int, bool]:
        """Check mbuf ``m``'s payload; return (sequence, intact), counting bytes or errors."""
        buf = self.cpu.mtod(m)
        seq, length, crc = HDR.unpack_from(buf, 0)
        if length > len(buf) - HDR.size:
            self.count(STAT_PAYLOAD_ERRORS)
            return seq, False
        data = buf[HDR.size:HDR.size + length]
        off = seq & 255
        if zlib.crc32(data) != crc or data != PATTERN[off:off + length]:
            self.count(STAT_PAYLOAD_ERRORS)
            return seq, False
        self.count(STAT_BYTES, length)
        return seq, True

    def check_seq(self, seq: int, expected: int) -> None:
        """Count a payload error when a FIFO path delivered ``seq`` out of order."""
        if seq != expected:
            self.count(STAT_PAYLOAD_ERRORS)

    def consume_head(self, ring: Ring, expect: dict[int, int], p: int) -> tuple[int, bool] | None:
        """A FIFO consumer's step: verify the mbuf at the head of ``ring`` (payload, then
        order against ``expect[p]``), free it, advance.  (sequence, intact), or None when
        the ring is empty.  The mbuf leaves the ring only after m_freem returned."""
        m = ring.peek()
        if m < 0:
            return None
        seq, ok = self.read_payload(m)
        if ok:
            self.check_seq(seq, expect[p])
        expect[p] += 1
        self.cpu.m_freem(m)
        ring.advance()
        return seq, ok

    def free_ring(self, ring: Ring) -> None:
        """Tx completion (em_txeof): free every mbuf on ``ring``, oldest first."""
        while True:
            m = ring.peek()
            if m < 0:
                return
            self.cpu.m_freem(m)
            ring.advance()


def common_arrays(cfg: RunConfig) -> list[ArraySpec]:
    """Arrays every workload uses: the per-CPU scratch slot for an mbuf in transit."""
    return [ring_spec(f"hold{k}", 4, f"CPU {k}: mbuf between allocation and its ring") for k in range(cfg.cpus)]
