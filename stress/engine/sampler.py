"""The monitor's sampling: one owner of the sample columns, the sample row, the peaks,
and the netstat -m blocks a run prints and keeps.

Every ``--interval`` the manager calls :meth:`Sampler.sample`: one ``uma.stats()``
read becomes one row of samples.csv, raises the peaks (run.json ``peak``) and, without
rounds, one netstat -m block.  After each round (the 2005 reporters ran netstat -m
between two netperf runs) and at an unplanned stop, :meth:`Sampler.after_round` and
:meth:`Sampler.at_stop` print a block too.  Every block is formatted by
:meth:`Sampler.netstat_block`: the allocator's netstat -m lines under a ``# ...``
heading in netstat.txt, and the same lines, headed for a person, through ``say``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from allocator import ZONE_NAMES, netstat_m_lines
from stress.samples import SAMPLES_CSV, SampleWriter, append_netstat
from stress.workloads.common import STAT_PACKETS, stat_total

ZONE_COLUMNS = ("used", "free", "req", "fail", "sleep")  #: vmstat -z columns sampled per zone
SAMPLE_COLUMNS = [
    "t", "round", "running",
    "mbufs_current", "mbufs_cache", "mbufs_total",
    "clusters_current", "clusters_cache", "clusters_total", "clusters_max",
    "packets_current", "packets_cache",
    *[f"{z}_{c}" for z in ZONE_NAMES for c in ZONE_COLUMNS],
    "ops", "ops_per_s", "packets", "sleepers", "cluster_keg_free",
]


def empty_peak() -> dict[str, int]:
    """run.json ``peak`` before any sample: every high-water mark at 0."""
    return {"clusters_current": 0, "clusters_total": 0, "packet_cache": 0, "mbufs_current": 0}


class Sampler:
    """samples.csv, the peaks, the per-round numbers and the netstat -m blocks of one run."""

    def __init__(self, uma: Any, folder: Path, t0: float, full: bool, say: Callable[[list[str]], None]) -> None:
        """``full``: the long netstat -m (``-v``); ``say``: where a person's lines go."""
        self.uma = uma
        self.folder = Path(folder)
        self.t0 = t0
        self.full = full
        self.say = say
        self.writer = SampleWriter(self.folder / SAMPLES_CSV, SAMPLE_COLUMNS)
        self.samples = 0
        self.peak = empty_peak()
        self.rounds: list[dict[str, Any]] = []
        self._last_ops = (t0, 0)

    def sample(self, now: float, rnd: int, running: bool, print_netstat: bool) -> None:
        """One row of samples.csv (and the netstat -m block per interval when there are no rounds)."""
        uma = self.uma
        stats = uma.stats()
        n = stats.netstat
        ops = sum(uma.cpu_ops())
        t_prev, ops_prev = self._last_ops
        rate = (ops - ops_prev) / (now - t_prev) if now > t_prev else 0.0
        self._last_ops = (now, ops)
        row: dict[str, float] = {
            "t": round(now - self.t0, 3), "round": rnd, "running": int(running),
            "mbufs_current": n.mbufs_current, "mbufs_cache": n.mbufs_cache, "mbufs_total": n.mbufs_total,
            "clusters_current": n.clusters_current, "clusters_cache": n.clusters_cache,
            "clusters_total": n.clusters_total, "clusters_max": n.clusters_max,
            "packets_current": n.packets_current, "packets_cache": n.packets_cache,
            "ops": ops, "ops_per_s": round(rate, 1), "packets": stat_total(uma, STAT_PACKETS),
            "sleepers": len(uma.sleepers()), "cluster_keg_free": uma.keg_free(1),
        }
        for z in stats.zones:
            for c in ZONE_COLUMNS:
                row[f"{z.name}_{c}"] = getattr(z, c)
        self.writer.write(row)
        self.samples += 1
        pk = self.peak
        pk["clusters_current"] = max(pk["clusters_current"], n.clusters_current)
        pk["clusters_total"] = max(pk["clusters_total"], n.clusters_total)
        pk["packet_cache"] = max(pk["packet_cache"], n.packets_cache)
        pk["mbufs_current"] = max(pk["mbufs_current"], n.mbufs_current)
        if print_netstat:
            self.netstat_block(stats, now, None, self.full)

    def after_round(self, rnd: int, now: float) -> None:
        """netstat -m after round ``rnd`` (0-based) and its idle; its numbers kept for run.json."""
        stats = self.uma.stats()
        n = stats.netstat
        self.rounds.append({"round": rnd + 1, "t": round(now - self.t0, 3),
                            "mbufs": [n.mbufs_current, n.mbufs_cache, n.mbufs_total],
                            "clusters": [n.clusters_current, n.clusters_cache, n.clusters_total, n.clusters_max]})
        self.netstat_block(stats, now, f"after round {rnd + 1}", self.full)

    def at_stop(self, now: float, reason: str) -> None:
        """netstat -m when the run stopped before its planned end (or after its rounds)."""
        self.netstat_block(self.uma.stats(), now, f"at stop ({reason})", False)

    def netstat_block(self, stats: Any, now: float, heading: str | None, full: bool) -> None:
        """The one netstat -m formatter: append the block to netstat.txt and say it.

        ``heading`` None is the per-interval form, the time in front of the first line
        (``t=  3.0s  769/641/1410 mbufs in use ...``); otherwise the heading on a line of
        its own and the block indented under it.
        """
        lines = netstat_m_lines(stats, full=full)
        t = now - self.t0
        if heading is None:
            append_netstat(self.folder, [f"# t={t:.1f}s", *lines])
            self.say([f"t={t:5.1f}s  " + lines[0], *["            " + ln for ln in lines[1:]]])
        else:
            append_netstat(self.folder, [f"# {heading} (t={t:.1f}s)", *lines])
            self.say([f"{heading}:", *["  " + ln for ln in lines]])

    def close(self) -> None:
        """Close samples.csv (safe twice)."""
        self.writer.close()
