"""Statistics: per-CPU counters summed on read, and the ONE formatter of ``vmstat -z``
rows and ``netstat -m`` lines used by live output, reports and tests.

Arithmetic (libmemstat and usr.bin/netstat/mbuf.c, uma.md "Accounting"):

- per zone: USED = allocs - frees (consumer calls, summed over per-CPU counters);
  FREE = items in per-CPU buckets + items in the zone's bucket list + (primary zone
  only) free items in the keg's slabs; REQ = allocs; FAIL; SLEEP; LIMIT in items.
- netstat -m::

    mbufs    current/cache/total       = (mbuf.USED + packet.USED) / (mbuf.FREE + packet.FREE) / sum
    clusters current/cache/total/max   = (cluster.USED - packet.FREE) / (cluster.FREE + packet.FREE)
                                         / (cluster.USED + cluster.FREE) / limit
    packets  current/cache             = packet.USED / packet.FREE

An mbuf can leave through another zone than it came from, so ``mbuf`` and
``mbuf_packet`` USED drift in opposite directions while their sum stays right; FreeBSD
prints them unsigned (they can wrap), we print them signed.

Counters are read without locks (a snapshot, like a sysctl read racing with CPUs);
the audit is the exact account, taken at a quiescent point.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .layout import (
    NZONES,
    ZONE_CLUSTER,
    ZONE_KEG,
    ZONE_NAMES,
    ZONE_PACKET,
    ZONE_SIZES,
)


@dataclass(frozen=True)
class ZoneStats:
    """One ``vmstat -z`` row."""

    name: str
    size: int
    limit: int
    used: int
    free: int
    req: int
    fail: int
    sleep: int
    misses: int = 0  #: allocations the per-CPU cache could not serve (not a vmstat column)


@dataclass(frozen=True)
class NetstatM:
    """The numbers of ``netstat -m``."""

    mbufs_current: int
    mbufs_cache: int
    mbufs_total: int
    clusters_current: int
    clusters_cache: int
    clusters_total: int
    clusters_max: int
    packets_current: int
    packets_cache: int
    denied: tuple[int, int, int]  # FAIL of mbuf / cluster / packet zones
    delayed: tuple[int, int, int]  # SLEEP of mbuf / cluster / packet zones

    def to_dict(self) -> dict[str, Any]:
        """The run.json ``netstat`` block (cli.md)."""
        return {
            "mbufs": {"current": self.mbufs_current, "cache": self.mbufs_cache, "total": self.mbufs_total},
            "clusters": {"current": self.clusters_current, "cache": self.clusters_cache,
                         "total": self.clusters_total, "max": self.clusters_max},
            "packets": {"current": self.packets_current, "cache": self.packets_cache},
            "denied": list(self.denied),
            "delayed": list(self.delayed),
        }


@dataclass(frozen=True)
class Stats:
    """A snapshot: three zone rows and the netstat -m numbers derived from them."""

    zones: tuple[ZoneStats, ...]
    netstat: NetstatM

    def zone(self, name: str) -> ZoneStats:
        return next(z for z in self.zones if z.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {"zones": [asdict(z) for z in self.zones], "netstat": self.netstat.to_dict()}

    @staticmethod
    def from_zones(zones: list[ZoneStats] | tuple[ZoneStats, ...]) -> Stats:
        """Derive netstat -m from the zone rows (the arithmetic of the module docstring)."""
        by = {z.name: z for z in zones}
        mb, cl, pk = by["mbuf"], by["mbuf_cluster"], by["mbuf_packet"]
        ns = NetstatM(
            mbufs_current=mb.used + pk.used,
            mbufs_cache=mb.free + pk.free,
            mbufs_total=mb.used + pk.used + mb.free + pk.free,
            clusters_current=cl.used - pk.free,
            clusters_cache=cl.free + pk.free,
            clusters_total=cl.used + cl.free,
            clusters_max=cl.limit,
            packets_current=pk.used,
            packets_cache=pk.free,
            denied=(mb.fail, cl.fail, pk.fail),
            delayed=(mb.sleep, cl.sleep, pk.sleep),
        )
        return Stats(tuple(zones), ns)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Stats:
        """Rebuild from run.json's ``zones`` list (or a dict holding it)."""
        rows = d["zones"] if isinstance(d, dict) else d
        return Stats.from_zones([ZoneStats(**{k: r[k] for k in ZoneStats.__dataclass_fields__ if k in r})
                                 for r in rows])


def compute_stats(np_of: Any, rows: int, nmbclusters: int) -> Stats:
    """Sum the counters and count the cached items of a live arena.  ``np_of(name)``
    returns the numpy view of an arena array."""
    allocs = np_of("uc_allocs").reshape(NZONES, rows).sum(axis=1)
    frees = np_of("uc_frees").reshape(NZONES, rows).sum(axis=1)
    fails = np_of("uc_fails").reshape(NZONES, rows).sum(axis=1)
    sleeps = np_of("uc_sleeps").reshape(NZONES, rows).sum(axis=1)
    misses = np_of("uc_misses").reshape(NZONES, rows).sum(axis=1)
    ub_cnt = np_of("ub_cnt")
    cached = []
    for z in range(NZONES):
        n = 0
        for arr in ("uc_allocbucket", "uc_freebucket"):
            b = np_of(arr)[z * rows:(z + 1) * rows]
            b = b[b >= 0]
            n += int(ub_cnt[b].sum())
        n += int(np_of("uz_full_items")[z])
        cached.append(n)
    uk_free = np_of("uk_free")
    zones = []
    for z in range(NZONES):
        k = ZONE_KEG[z]
        primary = z != ZONE_PACKET
        free = cached[z] + (int(uk_free[k]) if primary else 0)
        limit = nmbclusters if z == ZONE_CLUSTER else 0
        zones.append(ZoneStats(ZONE_NAMES[z], ZONE_SIZES[z], limit, int(allocs[z] - frees[z]), free,
                               int(allocs[z]), int(fails[z]), int(sleeps[z]), int(misses[z])))
    return Stats.from_zones(zones)


def vmstat_z_lines(stats: Stats) -> list[str]:
    """``vmstat -z`` for the mbuf zones: ITEM SIZE LIMIT USED FREE REQ FAIL SLEEP."""
    lines = [f"{'ITEM':<20}{'SIZE':>6} {'LIMIT':>7} {'USED':>9} {'FREE':>9} {'REQ':>11} {'FAIL':>6} {'SLEEP':>6}"]
    for z in stats.zones:
        lines.append(f"{z.name + ':':<20}{z.size:>6},{z.limit:>7},{z.used:>9},{z.free:>9},"
                     f"{z.req:>11},{z.fail:>6},{z.sleep:>6}")
    return lines


def netstat_m_lines(stats: Stats, full: bool = True) -> list[str]:
    """``netstat -m`` as FreeBSD prints it: the two lines of 2005, then (``full``) the
    packet secondary zone line and the denied/delayed lines of later versions."""
    n = stats.netstat
    lines = [
        f"{n.mbufs_current}/{n.mbufs_cache}/{n.mbufs_total} mbufs in use (current/cache/total)",
        f"{n.clusters_current}/{n.clusters_cache}/{n.clusters_total}/{n.clusters_max} "
        "mbuf clusters in use (current/cache/total/max)",
    ]
    if full:
        lines += [
            f"{n.packets_current}/{n.packets_cache} mbuf+clusters out of packet secondary zone in use "
            "(current/cache)",
            f"{n.denied[0]}/{n.denied[1]}/{n.denied[2]} requests for mbufs denied (mbufs/clusters/mbuf+clusters)",
            f"{n.delayed[0]}/{n.delayed[1]}/{n.delayed[2]} requests for mbufs delayed "
            "(mbufs/clusters/mbuf+clusters)",
        ]
    return lines

