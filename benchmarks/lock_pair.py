"""Cost of one lock/unlock pair of a refcount stripe: plain, ``--lock-profile`` and a
no-op sched hook (``--sched jitter`` with P=0), interleaved in one process.

Why: P5 (performance.md) is the instrumented lock path's cost inside an op mix, where
the rest of the mix dilutes it and a busy machine blurs it.  This isolates the pair
(the same call the refcount stripes make twice per packet) and prints medians, so a
change to allocator/lock.py can be compared before/after in the same conditions::

    python benchmarks/lock_pair.py [pairs-per-rep] [reps]
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from itertools import repeat
from typing import Any

from allocator import Uma, UmaConfig
from allocator.lock import P_REF_COPY
from stress.engine.sched import jitter_point

STRIPE = 10  #: a refcount stripe lock id (3 + stripe 7)


def pair_ns(cpu: Any, n: int) -> float:
    """ns per lock+unlock pair over ``n`` pairs."""
    lock, unlock = cpu.lock, cpu.unlock
    t0 = time.perf_counter_ns()
    for _ in repeat(None, n):
        lock(STRIPE, P_REF_COPY)
        unlock(STRIPE)
    return (time.perf_counter_ns() - t0) / n


def main(argv: list[str]) -> int:
    """Print the median ns per pair of each mode and its ratio to plain."""
    n = int(argv[0]) if argv else 100_000
    reps = int(argv[1]) if len(argv) > 1 else 7
    umas = {"plain": Uma.create(UmaConfig(ncpus=1, nmbclusters=64)),
            "lock-profile": Uma.create(UmaConfig(ncpus=1, nmbclusters=64, lock_profile=True)),
            "sched (jitter P=0)": Uma.create(UmaConfig(ncpus=1, nmbclusters=64))}
    try:
        cpus = {name: uma.cpu(0) for name, uma in umas.items()}
        cpus["sched (jitter P=0)"].sched_point = jitter_point(0.0, 0)
        cpus["sched (jitter P=0)"].instrument()
        times: dict[str, list[float]] = {name: [] for name in cpus}
        gc.disable()
        for _ in range(reps):
            for name, cpu in cpus.items():
                times[name].append(pair_ns(cpu, n))
        gc.enable()
        t0 = time.perf_counter_ns()
        for _ in repeat(None, n):
            time.perf_counter_ns()
        clock = (time.perf_counter_ns() - t0) / n
        plain = statistics.median(times["plain"])
        for name, ts in times.items():
            med = statistics.median(ts)
            print(f"{name:20} {med:7.0f} ns per pair  ({med / plain:.2f}x plain, +{med - plain:.0f} ns)")
        print(f"{'perf_counter_ns()':20} {clock:7.0f} ns per read")
    finally:
        for uma in umas.values():
            uma.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
