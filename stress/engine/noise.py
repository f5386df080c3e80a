"""Noise: how much of a run's pinned cores other processes took while it ran (run.json ``noise``).

A measurement on a shared machine is only as good as the quiet around it.  Around each
run :class:`NoiseProbe` reads, from /proc:

- the load average (``os.getloadavg``: /proc/loadavg) at the start and at the end;
- the busy time of every core (/proc/stat ``cpuN``: user, nice, system, irq, softirq,
  steal; idle and iowait are not busy), at the start and at the end;
- the CPU time of this process and of its reaped children (``os.times``: the manager
  and its workers, which are reaped before the run ends).

Others' CPU time on the run's cores is the busy time of those cores minus ours, and
``others_share`` that time over the cores' wall time (0: the cores were ours alone;
0.5: others had half of them).  The manager is not pinned, so its time is taken off
even if it ran elsewhere: the share is a lower bound, never an overstatement.  Reading
/proc costs microseconds, once at each end of the run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

PROC_STAT = Path("/proc/stat")
BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  #: user nice system irq softirq steal (guest is inside user)


def busy_ticks(text: str) -> dict[int, int]:
    """/proc/stat's text -> core -> busy clock ticks since boot."""
    out: dict[int, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu" or not name[3:].isdigit():
            continue
        fields = [int(x) for x in rest.split()]
        out[int(name[3:])] = sum(fields[i] for i in BUSY_FIELDS if i < len(fields))
    return out


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _read_busy() -> dict[int, int]:
    try:
        return busy_ticks(PROC_STAT.read_text())
    except OSError:
        return {}


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


class NoiseProbe:
    """Started before a run, :meth:`finish`\\ ed after it with the cores it was pinned to."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.load0 = _loadavg()
        self.busy0 = _read_busy()
        self.own0 = _own_cpu_s()

    def finish(self, cores: Iterable[int]) -> dict[str, Any]:
        """run.json ``noise``: the load averages, and others' CPU time on ``cores``."""
        wall = max(time.monotonic() - self.t0, 1e-9)
        busy1 = _read_busy()
        own = max(_own_cpu_s() - self.own0, 0.0)
        used = sorted(set(cores))
        doc: dict[str, Any] = {"loadavg_start": self.load0, "loadavg_end": _loadavg(), "cores": used,
                               "wall_s": round(wall, 3), "own_cpu_s": round(own, 3)}
        if used and all(c in self.busy0 and c in busy1 for c in used):
            hz = os.sysconf("SC_CLK_TCK")
            busy = sum(busy1[c] - self.busy0[c] for c in used) / hz
            others = max(busy - own, 0.0)
            doc.update(busy_s=round(busy, 3), others_cpu_s=round(others, 3),
                       others_share=round(min(others / (wall * len(used)), 1.0), 4))
        else:
            doc.update(busy_s=None, others_cpu_s=None, others_share=None)
        return doc
