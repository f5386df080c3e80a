"""The PCT algorithm as plain logic: a period's priorities and change points, and the choice.

PCT (Burckhardt, Kothari, Musuvathi, Nagarakatte, ASPLOS 2010, "A randomized scheduler
with probabilistic guarantees of finding bugs"): give the n CPUs distinct random
priorities d, d+1, ..., d+n-1; choose d-1 *change points* among the first k steps;
always run the highest-priority runnable CPU; when the running CPU passes the i-th
change point its priority drops to d-i (below every initial one).  A stress run has no
known length, so the plan is drawn per *period* of k steps from ``(seed, period)``:
pure functions, so every process (and a replay years later) derives the same plan.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_PCT_STEPS = 2000  #: k: the length of one PCT period, in sched points


@dataclass(frozen=True)
class PctPeriod:
    """One PCT trial of ``steps`` sched points: initial priorities and change points."""

    priorities: tuple[int, ...]  #: per CPU, distinct, in [depth, depth + ncpus)
    change_points: tuple[int, ...]  #: d-1 distinct steps in [1, steps], sorted (period-relative)

    def lowered(self, i: int, depth: int) -> int:
        """Priority given at the i-th change point (0-based): depth-1-i, below every initial one."""
        return depth - 1 - i


def pct_period(seed: int, period: int, ncpus: int, depth: int, steps: int) -> PctPeriod:
    """Draw period ``period`` of the PCT plan of ``seed``: a pure function, so every
    process (and a replay years later) derives the same plan from the seed alone."""
    if ncpus < 1 or depth < 1 or steps < 1:
        raise ValueError("pct needs ncpus >= 1, depth >= 1, steps >= 1")
    rng = random.Random(f"pct:{seed}:{period}")
    prios = list(range(depth, depth + ncpus))
    rng.shuffle(prios)
    nchange = min(depth - 1, steps)
    changes = sorted(rng.sample(range(1, steps + 1), nchange))
    return PctPeriod(tuple(prios), tuple(changes))


def pct_choose(prio: Sequence[int], runnable: Sequence[bool], current: int, yielding: bool) -> int:
    """The PCT choice: the highest-priority runnable CPU; a yielding ``current`` is
    passed over when anyone else is runnable.  Returns -1 when nobody is runnable."""
    best = -1
    for j, ok in enumerate(runnable):
        if not ok or (yielding and j == current):
            continue
        if best < 0 or prio[j] > prio[best]:
            best = j
    if best < 0 and yielding and 0 <= current < len(runnable) and runnable[current]:
        return current
    return best
