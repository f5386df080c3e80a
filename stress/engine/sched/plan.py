"""The step plan: what a free run does by the clock, a pct run does by scheduling step.

Why.  Under the token only one CPU runs between two sched points, so a pct run is a
sequence of *steps*, and one seed gives one sequence -- unless anything in it is
placed by the wall clock.  A loaded machine takes fewer steps per second: a run that
ends at ``--duration`` ends at a different step, its rounds turn over at different
steps, the trimming callout runs at different steps, the wedge test fires at a
different step (or not at all), and one seed gives different verdicts on different
machines.  (Measured before this plan: a hunt of ``wake-one`` over seeds 1..3 found it
in 0 of 3 seeds beside a CPU hog, and in 2 of 3 on an idle machine.)

So in pct and replay every one of them is placed by step, by the CPU that holds the
token (stress.engine.sched.token), from the numbers below, which the run records (run.json
``schedule.plan`` and schedule.json ``plan``) and a replay follows:

=============  ================================================================
budget         the run's length: ``--steps N``, or ``--duration`` (or the rounds)
               at :data:`STEPS_PER_S`; at the budget the load goes off
drain_steps    at most this many steps after the budget for in-flight work to
               complete (the free run's final drain); then the stop
round_steps    one round (its load and its idle), ``--rounds`` of the budget
round_on       the loaded part of each round (round-length : idle)
phase_step     the step at which a PHASED workload turns to its second phase
trim_steps     the trimming callout's period (``--trim-interval``): at the first
               sched point at or after each multiple at which no CPU holds an
               allocator lock, the token goes to the manager, which runs the
               callout and hands it back (the step count does not move)
wedge_steps    ``--wedge-timeout`` in steps: CPUs asleep in zonelimit and no
               progress by anyone for that many steps (or one sleep three times
               as long) is a wedge; every CPU blocked at once is a wedge at once
check_steps    how often the token holder looks for a wedge
=============  ================================================================

:data:`STEPS_PER_S` is a nominal rate, not a measurement of the machine at hand: about
what two cores did per second with other engineers' load on them (26,000 to 58,000
steps/s measured over netperf, race-wakeone and race-limit at a load average of 4 to
5), so that a pct run of ``--duration S`` takes roughly S seconds here.  It only
converts the options a person gives in seconds; the run itself never reads a clock.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

STEPS_PER_S = 30_000  #: scheduling steps per second of --duration, --trim-interval, --wedge-timeout (nominal)
DRAIN_S = 0.5  #: the final drain, like the manager's DRAIN_MAX in free runs
CHECK_STEPS = 64  #: the token holder looks for a wedge every this many steps
STARVED_FACTOR = 3  #: one sleep this many wedge_steps long is a wedge (the free watchdog's backstop)


def steps_of(seconds: float) -> int:
    """``seconds`` of a time option as steps (at least 1)."""
    return max(1, round(seconds * STEPS_PER_S))


@dataclass(frozen=True)
class StepPlan:
    """Every step-placed event of a controlled run (see the module docstring); 0 = none."""

    budget: int = 0
    drain_steps: int = 0
    round_steps: int = 0
    round_on: int = 0
    phase_step: int = 0
    trim_steps: int = 0
    wedge_steps: int = 0
    check_steps: int = CHECK_STEPS

    @property
    def bounded(self) -> bool:
        """Whether the run ends by step (a plan of 0 budget: the recording or the manager ends it)."""
        return self.budget > 0

    def load(self, step: int) -> int:
        """The load flag at ``step``: on, but off between rounds and from the budget on."""
        if self.budget and step >= self.budget:
            return 0
        if self.round_steps:
            return 1 if (step % self.round_steps) < self.round_on else 0
        return 1

    def round_at(self, step: int) -> int:
        """The round ``step`` is in (0-based; 0 without rounds)."""
        if not self.round_steps:
            return 0
        last = max(self.budget // self.round_steps - 1, 0)
        return min(step // self.round_steps, last)

    def phase(self, step: int) -> int:
        """wl_ctl PHASE of a PHASED workload at ``step``."""
        return 1 if self.phase_step and step >= self.phase_step else 0

    def to_dict(self) -> dict[str, int]:
        """The form run.json and schedule.json keep."""
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any] | None) -> StepPlan:
        """Rebuild a recorded plan (an old schedule without one: no plan, all 0)."""
        names = {f.name for f in fields(StepPlan)}
        return StepPlan(**{k: int(v) for k, v in (d or {}).items() if k in names})


def make_plan(*, steps: int, duration: float, rounds: int, round_length: float, idle: float,
              trim_interval: float, trim: bool, wedge_timeout: float, phased: bool) -> StepPlan:
    """The plan of a pct run from its options (``steps`` 0: the duration's, or the rounds')."""
    budget = steps if steps > 0 else (steps_of(rounds * (round_length + idle)) if rounds > 0
                                      else steps_of(duration))
    round_steps = round_on = 0
    if rounds > 0:
        round_steps = max(1, budget // rounds)
        round_on = max(1, round(round_steps * round_length / (round_length + idle)))
    phase_step = 0
    if phased:
        phase_step = (round_steps * ((rounds + 1) // 2)) if rounds > 0 else max(1, budget // 2)
    return StepPlan(budget=budget, drain_steps=steps_of(DRAIN_S), round_steps=round_steps, round_on=round_on,
                    phase_step=phase_step, trim_steps=steps_of(trim_interval) if trim else 0,
                    wedge_steps=steps_of(wedge_timeout))
