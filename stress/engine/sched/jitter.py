"""The jitter sched point: random short delays that widen race windows.

``--sched jitter``: the way different interrupt timing (ACPI on) widened the 2005
windows, without taking the interleaving away from the OS (that is pct's job).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable


def jitter_point(p: float, seed: int) -> Callable[[str], None]:
    """A sched point that, with probability ``p``, yields the core or spins a short random
    while (up to a few microseconds): widens race windows without controlling order."""
    rng = random.Random(seed)
    rand = rng.random
    yield_ = os.sched_yield

    def sched_point(label: str) -> None:
        if rand() < p:
            if rand() < 0.5:
                yield_()
            else:
                for _ in range(int(rand() * 200)):
                    pass

    return sched_point
