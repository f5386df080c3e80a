"""The trim callout: observation -> policy -> decision -> allocator, once per interval,
and the page daemon's low-memory event.

Why here: ``Uma.observe(z)`` returns raw numbers (the working-set statistics under the
zone lock plus *cumulative* counters); a policy wants one interval's worth.  This
module turns the former into :class:`Observation` values by differencing the counters,
keeps one policy instance per zone (policies remember past intervals), and hands each
:class:`Decision` to ``Uma.apply``.  The manager owns the timing: it calls
:meth:`TrimCallout.tick` every ``--trim-interval`` from its own context (the manager
row of the arena), as FreeBSD's ``uma_timeout`` callout ran ``zone_timeout`` every
``UMA_TIMEOUT`` (20 s) and illumos' ``kmem_update`` ran every 15 s::

    manager loop                      allocator (arena)                 policy
    ------------                      -----------------                 ------
    callout.tick() --observe(z)-->    zone_observe: every kernel's periodic update
                   <--raw dict---     counters summed over CPUs
                   difference counters -> Observation ------------------> decide()
                   <----------------------------------------------------- Decision
                   --apply(z, d)-->   flush requests, uz_count--, reclaim, keg_drain, pre-fill
                   if uma.page_shortage(): vm_lowmem()   (every zone, every policy)
                     --observe(z, lowmem=True)--> FreeBSD main's zone_domain_update_wss only
                     ... policy.vm_lowmem(obs) -> Decision -> apply

The page daemon (allocator/pageout.py) is checked once per tick, after the periodic
work: a low-memory event reaches every zone the callout serves, whatever the policy
(``none`` answers with 2005's ``zone_drain``).  Without a page budget it never fires.

A per-CPU flush (``drain_percpu``) is a request each CPU serves at its next loop turn
(the safe cross-CPU protocol): the flushed buckets land on the zone's list as
``ws=false`` puts (not demand) and go back to the keg at a later reclaim, never from
another CPU's hands.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol

from allocator.policy import Decision, Observation, Policy, make_policy

#: Observation fields that ``Uma.observe`` reports as running totals (differenced here).
CUMULATIVE = ("fills", "allocs", "frees", "overflows", "cluster_fails", "cluster_sleeps")


class Trimmable(Protocol):
    """What the callout needs of ``allocator.Uma`` (a protocol, so tests can fake it)."""

    def observe(self, z: int, lowmem: bool = False) -> dict[str, int]: ...

    def counters(self, z: int) -> dict[str, int]: ...

    def apply(self, z: int, decision: Decision) -> dict[str, int]: ...

    def page_shortage(self) -> bool: ...


@dataclass(frozen=True)
class Tick:
    """One zone's part of one interval or low-memory event: what was seen, decided and
    done (for logs and tests)."""

    observation: Observation
    decision: Decision
    done: Mapping[str, int]
    lowmem: bool = False  #: True for a vm_lowmem response, False for the periodic tick


def observation_from(raw: Mapping[str, int], previous: Mapping[str, int] | None, interval: int) -> Observation:
    """The Observation of one interval from two consecutive raw ``Uma.observe`` results:
    running totals become differences (the first interval counts from zero)."""
    names = {f.name for f in fields(Observation)}
    kw: dict[str, int] = {k: int(v) for k, v in raw.items() if k in names}
    for k in CUMULATIVE:
        kw[k] = int(raw[k]) - int(previous[k] if previous is not None else 0)
    kw["interval"] = interval
    return Observation(**kw)


class TrimCallout:
    """One policy per zone, fed every ``tick``.  Construct it in the manager after
    ``Uma.create``; call :meth:`tick` every ``--trim-interval``."""

    def __init__(self, uma: Trimmable, policy: str, params: Mapping[str, float] | None = None,
                 zones: Sequence[int] = (0, 1, 2)) -> None:
        self.uma = uma
        self.policies: dict[int, Policy] = {z: make_policy(policy, params) for z in zones}
        self.previous: dict[int, dict[str, int]] = {}
        self.interval = 0
        self.totals = {"drained": 0, "prefilled": 0, "percpu_flushes": 0, "lowmem_events": 0,
                       "pages_released": 0}
        # The first tick would see every counter since the start as one interval;
        # take a baseline now so interval 0 covers only the time since construction
        # (the counters only: an observation would end an interval).
        for z in self.policies:
            self.previous[z] = dict(uma.counters(z))

    @property
    def exhaustion_drain(self) -> bool:
        """Whether the chosen policy wants the c. 2007 inline drain (``UmaConfig.exhaustion_drain``)."""
        return any(p.exhaustion_drain for p in self.policies.values())

    def _apply(self, z: int, decision: Decision) -> Mapping[str, int]:
        if decision == Decision():
            return {}
        done = self.uma.apply(z, decision)
        self.totals["drained"] += int(done.get("drained", 0))
        self.totals["prefilled"] += int(done.get("prefilled", 0))
        self.totals["pages_released"] += int(done.get("pages", 0))
        self.totals["percpu_flushes"] += int(decision.drain_percpu)
        return done

    def tick(self) -> list[Tick]:
        """The end of an interval: observe every zone, decide, apply; then, if the page
        daemon finds free pages short, the low-memory event.  Returns what happened."""
        out: list[Tick] = []
        for z, policy in self.policies.items():
            raw = dict(self.uma.observe(z))
            obs = observation_from(raw, self.previous.get(z), self.interval)
            self.previous[z] = raw
            decision = policy.decide(obs)
            out.append(Tick(obs, decision, self._apply(z, decision)))
        if self.uma.page_shortage():
            out += self.vm_lowmem()
        self.interval += 1
        return out

    def vm_lowmem(self) -> list[Tick]:
        """The page daemon's vm_lowmem event: every zone's policy answers it
        (``Policy.vm_lowmem``).  The counters in its observations are the ones since
        the last interval end (the interval is not closed)."""
        self.totals["lowmem_events"] += 1
        out: list[Tick] = []
        for z, policy in self.policies.items():
            raw = dict(self.uma.observe(z, lowmem=True))
            obs = observation_from(raw, self.previous.get(z), self.interval)
            decision = policy.vm_lowmem(obs)
            out.append(Tick(obs, decision, self._apply(z, decision), lowmem=True))
        return out

    def summary(self) -> dict[str, Any]:
        """What the policy did over the run (for run.json): items drained and pre-filled,
        low-memory events answered, pages returned to the VM."""
        return {"intervals": self.interval, **self.totals}
