"""Find rate of a race on two real cores, compiled against interpreted (issue 15).

Why: the compiled allocator's race windows are a few instructions where the interpreted
ones are a few hundred nanoseconds of bytecode (allocator/fastpath.py).  A test whose
budget of seeds was sized for one mode may miss in the other; this measures the rate
per seed for each mode, on the same scenarios as tests/race (tests/race/harness.py),
alternating the modes seed by seed so load hits both alike::

    python -m benchmarks.race_window [injection] [seeds] [mode] [rounds]   # from the checkout

defaults: refcount-eq0, 20 seeds, free, the PARALLEL rounds of tests/race/test_races.py.
Prints, per mode, the seeds whose oracle fired and the median seconds per seed.  A rate,
not a verdict: nothing here asserts (docs/testing.md "Two modes" keeps the numbers).
"""

from __future__ import annotations

import statistics
import sys
import time

from allocator import implementation
from tests.race import harness as h
from tests.race.test_races import CLASSES, PARALLEL


def main(argv: list[str]) -> int:
    inject = argv[1] if len(argv) > 1 else "refcount-eq0"
    seeds = int(argv[2]) if len(argv) > 2 else 20
    mode = argv[3] if len(argv) > 3 else PARALLEL[inject][0]
    rounds = int(argv[4]) if len(argv) > 4 else PARALLEL[inject][1]
    modes = [True, False] if implementation.compiled_available() else [False]
    found: dict[bool, list[int]] = {m: [] for m in modes}
    secs: dict[bool, list[float]] = {m: [] for m in modes}
    for seed in range(seeds):
        for compiled in modes:
            implementation.use(compiled)
            t0 = time.perf_counter()
            v = h.run(h.SCENARIOS[inject], (inject,), mode, seed, invariants=True, rounds=rounds, jitter=0.2).verdict
            secs[compiled].append(time.perf_counter() - t0)
            if v in CLASSES[inject]:
                found[compiled].append(seed)
    for compiled in modes:
        name = "compiled" if compiled else "interpreted"
        print(f"{inject} {mode} rounds {rounds}, {name}: found in {len(found[compiled])} of {seeds} seeds "
              f"({statistics.median(secs[compiled]):.2f} s a seed): {found[compiled]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
