"""mixed: a netperf phase followed by an NFS phase on the same CPUs.

Stands for a file server that also streams network traffic -- the workload shape of
policies.md that tells trimming policies apart: the stream fills the packet zone's
cache with packets that keep their clusters, and the NFS phase that follows needs
standalone clusters from the cluster zone (``m_clget``).  Under ``--era 2005`` (no
trimming) that phase starves in zonelimit while the packet zone hoards the clusters;
a policy that returns packets to their native zones lets it run.

The manager decides the phase (``wl_ctl[CTL_PHASE]``: 0 netperf, 1 nfs) -- the second
half of the rounds, or of the duration without rounds.  The idle workload still
completes what it has in flight, so no mbuf is left behind at the switch.
"""

from __future__ import annotations

from typing import ClassVar

from allocator import ArraySpec
from stress.config import RunConfig
from stress.workloads.common import WorkerContext, Workload
from stress.workloads.netperf import Netperf
from stress.workloads.nfs import Nfs

PHASE_NETPERF = 0
PHASE_NFS = 1


class Mixed(Workload):
    """netperf in phase 0, nfs in phase 1; each completes its in-flight work in the other."""

    name: ClassVar[str] = "mixed"
    PHASED: ClassVar[bool] = True

    @classmethod
    def arrays(cls, cfg: RunConfig) -> list[ArraySpec]:
        """netperf's rings and nfs's rings."""
        return Netperf.arrays(cfg) + Nfs.arrays(cfg)

    @classmethod
    def posted_rings(cls, cfg: RunConfig) -> list[str]:
        """netperf's and nfs's posted rx buffers."""
        return Netperf.posted_rings(cfg) + Nfs.posted_rings(cfg)

    def __init__(self, ctx: WorkerContext) -> None:
        super().__init__(ctx)
        self.netperf = Netperf(ctx)
        self.nfs = Nfs(ctx)

    def turn(self, running: bool, phase: int) -> int:
        """One turn of each; only the phase's workload starts new work."""
        did = self.netperf.turn(running and phase == PHASE_NETPERF, phase)
        did += self.nfs.turn(running and phase == PHASE_NFS, phase)
        return did
