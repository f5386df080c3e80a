"""Shrinking a failing PCT schedule: delta debugging over its switches, and a cut of its steps.

What and why.  A hunt's failing schedule is as long as the hunt that found it: thousands
of switches over thousands of steps, most of them irrelevant to the failure.  A person
reading it (or a regression test replaying it) wants the few preemptions that matter,
as Hypothesis and shuttle shrink a failing input or schedule before they report it.

The pieces here are plain logic, no processes (``race --shrink``,
stress/commands/shrink.py, runs each candidate as a real replay):

- :func:`guide` makes a candidate: a *guide* schedule (``Schedule.guide``) holding a
  subset of the recorded switches and a stop step.  A replay of a guide runs the CPU
  each kept switch names where it can; between them the running CPU continues unless
  it cannot progress (asleep, gone, yielding), and then PCT chooses as it did in the
  hunt (stress/engine/sched/token.py ``_guide_next``).  Dropping a switch therefore
  means "do not preempt here", and the guide holding every switch runs the hunt's very
  run.  The replay records what ran, which is an exact schedule again.
- :func:`ddmin` is Zeller and Hildebrandt's delta debugging ("Simplifying and
  isolating failure-inducing input", IEEE TSE 2002): split the switches into n chunks,
  keep a chunk's complement (or the chunk itself) whenever it still fails, else split
  finer; the result is 1-minimal -- removing any one kept switch makes the failure go
  -- unless the budget of tries ran out first.
- :func:`shortest_stop` cuts the steps: the earliest stop step at which the failure is
  still there (a bisection: a lost cluster stays lost, a wedge found at step s is found
  by any stop at or after s).
- :func:`failure_of` says what "fails the same way" means: the same verdict, the same
  kinds of lost items, double ownership or not, and for a wedge whether items were free
  meanwhile (the lost-wakeup oracle).

A try is a replay bounded by steps, so whether a candidate fails does not depend on the
load of the machine; only how long the shrink takes does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from stress.documents import Schedule

T = TypeVar("T")


class BudgetSpent(Exception):
    """The budget of tries is spent: the shrink keeps the smallest failing candidate so far."""


def failure_of(doc: dict[str, Any]) -> tuple[Any, ...] | None:
    """How a run failed, as a value two runs can be compared by (None: it did not fail
    the allocator: exit 0, or the tester's failure, or a signal)."""
    if doc.get("exit_code") != 1:
        return None
    audit = doc.get("audit") or {}
    lost = audit.get("lost") or {}
    wedge = doc.get("wedge") or {}
    free_meanwhile = bool(wedge.get("free_items_meanwhile")) if doc.get("verdict") == "wedged" else None
    return (str(doc.get("verdict")), tuple(sorted(k for k, v in lost.items() if v)),
            bool(audit.get("double_owned")), free_meanwhile)


def describe_failure(failure: tuple[Any, ...] | None) -> str:
    """``leak (lost: cluster)``: a failure in words."""
    if failure is None:
        return "no failure"
    verdict, lost, double, free = failure
    parts = [f"lost: {', '.join(lost)}"] if lost else []
    if double:
        parts.append("double-owned items")
    if free is not None:
        parts.append("items free meanwhile" if free else "nothing free meanwhile")
    return verdict + (f" ({'; '.join(parts)})" if parts else "")


def guide(recorded: Schedule, switches: Sequence[tuple[int, int, int]], stop_step: int) -> Schedule:
    """A candidate: ``recorded``'s parameters, plan and load changes (up to the stop),
    with only ``switches`` (those before ``stop_step``) as a guide, stopping at ``stop_step``."""
    return replace(recorded, switches=[s for s in switches if s[0] < stop_step], stop_step=stop_step,
                   load_changes=[c for c in recorded.load_changes if c[0] <= stop_step], total_steps=0,
                   overflow=False, guide=True)


def ddmin(items: Sequence[T], fails: Callable[[list[T]], bool]) -> list[T]:
    """The smallest sublist of ``items`` (order kept) for which ``fails`` holds, by delta
    debugging (``items`` itself must fail; it is not tried again).  ``fails`` may raise
    :class:`BudgetSpent`: the smallest failing sublist found so far is then returned
    (the exception is swallowed; ``fails`` knows it happened).  Each distinct sublist
    is tried at most once.  The empty list is tried first (nothing at all needed?), and
    complements before chunks: with a budget, removing a chunk at a time is the step
    that pays most often."""
    current = list(range(len(items)))  # positions in items: a sublist is a tuple of them
    tried: dict[tuple[int, ...], bool] = {tuple(current): True}

    def test(candidate: list[int]) -> bool:
        key = tuple(candidate)
        if key not in tried:
            tried[key] = fails([items[i] for i in candidate])
        return tried[key]

    n = 2
    try:
        if current and test([]):
            current = []
        while len(current) >= 2:
            n = min(n, len(current))
            size = len(current) / n
            chunks = [current[round(i * size):round((i + 1) * size)] for i in range(n)]
            for i in range(n):  # a complement: everything but chunk i
                rest = [x for j, c in enumerate(chunks) if j != i for x in c]
                if test(rest):
                    current, n = rest, max(n - 1, 2)
                    break
            else:
                for c in chunks if n > 2 else ():  # with two chunks each is the other's complement
                    if test(c):
                        current, n = c, 2
                        break
                else:
                    if n >= len(current):
                        break  # 1-minimal: no single element can go
                    n = min(2 * n, len(current))
    except BudgetSpent:
        pass
    return [items[i] for i in current]


def shortest_stop(lo: int, hi: int, fails: Callable[[int], bool]) -> int:
    """The smallest stop step in ``(lo, hi]`` at which ``fails`` holds, by bisection, given
    that it holds at ``hi`` (not tried again) and, once it holds, holds at every later
    stop.  ``fails`` may raise :class:`BudgetSpent`: the smallest known failing stop is
    returned."""
    try:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if fails(mid):
                hi = mid
            else:
                lo = mid
    except BudgetSpent:
        pass
    return hi
