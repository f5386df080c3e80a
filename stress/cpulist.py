"""CPU lists: the usable cores, parsed and formatted in one place (``0-3,7``).

The tester pins simulated CPU k to usable core ``k mod ncores`` (architecture.md).  The
set of usable cores is what the scheduler lets this process run on
(``os.sched_getaffinity(0)``), not ``os.cpu_count()``: pinning outside the affinity mask
fails with EINVAL.  Lists are written the way FreeBSD's cpuset(1) and Linux's taskset(1)
print them, so the CLI, the monitor and error messages all agree.
"""

from __future__ import annotations

import os


def usable_cores() -> list[int]:
    """The cores this process may run on, sorted (the pinning targets)."""
    return sorted(os.sched_getaffinity(0))


def parse_cpulist(text: str) -> list[int]:
    """Parse ``"0-3,7"`` into ``[0, 1, 2, 3, 7]``; raise ValueError on anything else.

    Sorted and without duplicates, so two spellings of one set compare equal.
    """
    cores: set[int] = set()
    if not text.strip():
        raise ValueError("empty CPU list")
    for part in text.split(","):
        part = part.strip()
        lo_text, sep, hi_text = part.partition("-")
        if not lo_text.isdigit() or (sep and not hi_text.isdigit()):
            raise ValueError(f"bad CPU list element {part!r} (want N or N-M)")
        lo = int(lo_text)
        hi = int(hi_text) if sep else lo
        if hi < lo:
            raise ValueError(f"bad CPU range {part!r} (end before start)")
        cores.update(range(lo, hi + 1))
    return sorted(cores)


def format_cpulist(cores: list[int] | set[int] | tuple[int, ...]) -> str:
    """Format cores as ranges: ``[0, 1, 2, 3, 7]`` -> ``"0-3,7"`` (empty -> ``""``)."""
    ordered = sorted(set(cores))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)
