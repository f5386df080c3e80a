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
    while (up to a few microseconds): widens race windows without controlling order.

    With ``p <= 0`` no point ever delays (``rand() < p`` is never true, and the
    generator is this hook's own), so the hook is an empty function: still a real call
    at every point (the allocator cannot tell it from any other hook), but no draw and
    no comparison -- the least a sched point can cost (performance.md P5)."""
    if p <= 0.0:

        def no_delay(label: str) -> None:
            """``--sched jitter`` with P=0: a sched point that never delays."""

        return no_delay
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
