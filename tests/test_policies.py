"""Each trimming policy's rule on synthetic observation sequences (issues 4 and 9).

Policies are pure decision logic, so most of these tests need no arena: they feed
hand-made :class:`Observation` sequences and check the decisions against the rule
each module's docstring states.  The estimators behind the observations (FreeBSD's
and illumos' working-set state) are the allocator's and are checked against the
kernels in test_policy_differential.py.  A property test (hypothesis) checks the
invariants every policy must keep, at interval ends and on low-memory events.

Rewritten for issue 9 (their old expectations encoded the old rules): the depot tests
(it reaps on vm_lowmem from the allocator's magazine counts, no longer every interval
from ``imin // bucket_size``), the wss tests (FreeBSD main's triggers: long-term trim,
trim to wss on a reclaim request), the median tests (packet zone only, one-sided
deviations, demand without ``miss_weight``), and the callout fakes (no ``getattr``
fallbacks: the fake implements the protocol).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from allocator.policy import (
    POLICY_NAMES,
    POLICY_PARAMS,
    ZONE_CLUSTER,
    ZONE_DRAIN,
    ZONE_MBUF,
    ZONE_PACKET,
    Decision,
    Observation,
    Policy,
    make_policy,
)
from allocator.policy.median import MedianPolicy, band, demand
from stress.workloads.netperf_nfs import NetperfNfs

BS = 128


def obs(**kw: int) -> Observation:
    """A quiet packet-zone observation with ``kw`` overriding fields."""
    base = dict(zone=ZONE_PACKET, interval=0, bucket_size=BS, cached=0, percpu=0, imax=0, imin=0,
                bimin=0, fills=0, allocs=1000, frees=1000, overflows=0, sleepers=0,
                cluster_fails=0, cluster_sleeps=0)
    base.update(kw)
    return Observation(**base)  # type: ignore[arg-type]


def steady(cached: int, **kw: int) -> Observation:
    """An interval where the list sat at ``cached`` items the whole time."""
    kw.setdefault("imax", cached)
    kw.setdefault("imin", cached)
    kw.setdefault("bimin", cached)
    return obs(cached=cached, **kw)


# --- registry -----------------------------------------------------------------------


def test_registry_names_and_params() -> None:
    assert POLICY_NAMES == ("none", "exhaustion", "watermark", "depot", "wss", "wss-2019", "median")
    assert set(POLICY_PARAMS) == set(POLICY_NAMES)
    for name in POLICY_NAMES:
        p = make_policy(name)
        assert p.name == name
        for default, help_text in POLICY_PARAMS[name].values():
            assert isinstance(default, float) and help_text
    assert set(POLICY_PARAMS["median"]) == {"window", "k", "quiet", "max_prefill", "percpu"}
    assert set(POLICY_PARAMS["watermark"]) >= {"high", "low"}
    for name in ("depot", "wss", "wss-2019"):  # the kernel's trigger by default, the old one on request
        assert POLICY_PARAMS[name]["periodic"][0] == 0.0


def test_exhaustion_drain_flags_follow_the_eras() -> None:
    flags = {n: make_policy(n).exhaustion_drain for n in POLICY_NAMES}
    assert flags == {"none": False, "exhaustion": True, "watermark": False, "depot": False,
                     "wss": True, "wss-2019": True, "median": True}


@pytest.mark.parametrize("name,params,needle", [
    ("nosuch", {}, "unknown policy 'nosuch'"),
    ("median", {"windwo": 3}, "no parameter 'windwo'"),
    ("median", {"window": 0}, "window >= 1"),
    ("median", {"miss_weight": 1}, "no parameter 'miss_weight'"),
    ("watermark", {"high": 10, "low": 20}, "low <= high"),
    ("none", {"k": 1}, "allowed: none"),
])
def test_bad_policy_or_params_is_one_clear_valueerror(
        name: str, params: dict[str, float], needle: str) -> None:
    with pytest.raises(ValueError) as e:
        make_policy(name, params)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_instances_do_not_share_state() -> None:
    a, b = make_policy("median", {"window": 3}), make_policy("median", {"window": 3})
    for _ in range(3):
        a.decide(obs(cached=20 * BS, imax=2 * BS, bimin=0))
    assert isinstance(a, MedianPolicy) and isinstance(b, MedianPolicy)
    assert a.hi == 2 * BS and not b.demands


# --- the low-memory event -------------------------------------------------------------


def test_every_policy_answers_vm_lowmem_as_its_kernel_does() -> None:
    """vm_lowmem: 2005-2018 kernels ran zone_drain; FreeBSD main and 2019 trim to their
    estimate with uz_count--; illumos reaps what fell out of the working set."""
    o = obs(cached=10 * BS, wss=3 * BS, wss19=2 * BS, imin19=9 * BS, ml_reaplimit=4, ml_min=6, percpu=50)
    for name in ("none", "exhaustion", "watermark", "median"):
        for zone in (ZONE_MBUF, ZONE_CLUSTER, ZONE_PACKET):
            assert make_policy(name).vm_lowmem(dataclasses.replace(o, zone=zone)) == ZONE_DRAIN
    assert make_policy("wss").vm_lowmem(o) == Decision(reclaim_to=3 * BS, shrink_bucket=True, keg_drain=True)
    # 2019: "if nitems - imin is larger than the WSS estimate ... ignore the historical average",
    # and its loop is "while (zdom->uzd_nitems > target)" (reclaim_past)
    assert make_policy("wss-2019").vm_lowmem(o) == Decision(reclaim_to=2 * BS, reclaim_past=True,
                                                            shrink_bucket=True, keg_drain=True)
    assert make_policy("wss-2019").vm_lowmem(dataclasses.replace(o, imin19=5 * BS)).reclaim_to == 5 * BS
    assert make_policy("depot").vm_lowmem(o) == Decision(drain_buckets=4, keg_drain=True)
    assert make_policy("wss", {"percpu": 1}).vm_lowmem(o).drain_percpu


# --- none ---------------------------------------------------------------------------


def test_none_keeps_everything_even_when_exhausted() -> None:
    p = make_policy("none")
    for o in (steady(100 * BS), steady(5 * BS, sleepers=2, cluster_fails=9), steady(3 * BS, allocs=0)):
        assert p.decide(o) == Decision()


# --- exhaustion ---------------------------------------------------------------------


def test_exhaustion_drains_the_packet_list_only_when_clusters_run_out() -> None:
    p = make_policy("exhaustion")
    assert p.decide(steady(40 * BS)) == Decision()
    d = p.decide(steady(40 * BS, sleepers=1))
    assert d.drain_buckets >= 40 and not d.drain_percpu and d.prefill_buckets == 0
    assert p.decide(steady(40 * BS, cluster_fails=1)).drain_buckets >= 40
    assert p.decide(steady(40 * BS, cluster_sleeps=3)).drain_buckets >= 40
    # other zones are never trimmed
    assert make_policy("exhaustion").decide(steady(40 * BS, zone=ZONE_MBUF, sleepers=1)) == Decision()
    assert make_policy("exhaustion", {"percpu": 1}).decide(steady(BS, sleepers=1)).drain_percpu


# --- watermark ----------------------------------------------------------------------


def test_watermark_drains_down_to_low_in_whole_buckets_once_above_high() -> None:
    p = make_policy("watermark", {"high": 8 * BS, "low": 2 * BS})
    assert p.decide(steady(8 * BS)) == Decision()  # at high: keep
    assert p.decide(steady(9 * BS)) == Decision(drain_buckets=7)  # 9 -> 2 buckets
    # not a multiple of the bucket size: the fewest whole buckets that reach low or below
    assert p.decide(steady(8 * BS + 1)).drain_buckets == 7
    assert p.decide(steady(1)) == Decision()


# --- depot --------------------------------------------------------------------------


def test_depot_reaps_min_of_reaplimit_and_current_minimum_only_on_pressure() -> None:
    p = make_policy("depot")
    for reaplimit, ml_min in ((0, 5), (5, 0), (3, 7), (7, 3), (6, 6)):
        o = obs(cached=20 * BS, buckets=20, ml_reaplimit=reaplimit, ml_min=ml_min)
        assert p.decide(o) == Decision()  # kmem_update only updates (the allocator does)
        want = min(reaplimit, ml_min)
        assert p.vm_lowmem(o) == (Decision(drain_buckets=want, keg_drain=True) if want else Decision())


def test_depot_counts_magazines_not_items_over_bucket_size() -> None:
    """Partly filled buckets are magazines too: 5 buckets of 10 items are 5 to reap."""
    p = make_policy("depot")
    assert p.vm_lowmem(obs(cached=50, buckets=5, ml_reaplimit=5, ml_min=5)).drain_buckets == 5


def test_depot_periodic_parameter_restores_reaping_every_interval() -> None:
    p = make_policy("depot", {"periodic": 1})
    assert p.decide(obs(cached=8 * BS, ml_reaplimit=3, ml_min=8)).drain_buckets == 3
    q = make_policy("depot", {"percpu": 1})
    assert q.decide(obs(allocs=0, percpu=40)) == Decision(drain_percpu=True)
    assert q.decide(obs(allocs=5, percpu=40)) == Decision()


# --- wss (FreeBSD main) ---------------------------------------------------------------


def test_wss_trims_nothing_periodically_until_15_minutes_of_long_term_minimum() -> None:
    p = make_policy("wss")
    assert p.decide(obs(cached=40 * BS, wss=BS, limin=30 * BS, timin=45)) == Decision()  # 45: not yet
    d = p.decide(obs(cached=40 * BS, wss=BS, limin=30 * BS, timin=46))
    # nitems - limin / 4, and keg_drain only if a bucket was freed (zone_timeout)
    assert d == Decision(reclaim_to=40 * BS - 30 * BS // 4, keg_drain_if_freed=True)
    assert p.decide(obs(cached=40 * BS, timin=46, limin=3)) == Decision()  # limin/4 == 0: nothing
    # the comparison parameter: trim to wss every period
    assert make_policy("wss", {"periodic": 1}).decide(obs(cached=40 * BS, wss=5 * BS)) == Decision(
        reclaim_to=5 * BS, keg_drain_if_freed=True)


def test_wss_2019_only_updates_periodically() -> None:
    p = make_policy("wss-2019")
    assert p.decide(obs(cached=40 * BS, wss19=BS, imin19=40 * BS)) == Decision()
    d = make_policy("wss-2019", {"periodic": 1}).decide(obs(cached=40 * BS, wss19=BS, imin19=40 * BS))
    assert d == Decision(reclaim_to=BS, reclaim_past=True, keg_drain=True)


# --- median -------------------------------------------------------------------------


def test_median_demand_is_the_largest_allocation_batch() -> None:
    assert demand(obs(imax=900, bimin=100)) == 800
    assert demand(obs(imax=900, bimin=100, swing=1000)) == 1000  # a batch closed earlier was larger
    assert demand(obs(imax=900, bimin=100, fills=2)) == 800  # keg fills are in imax already
    assert demand(obs(imax=900, bimin=100, allocs=0)) == 0  # frees alone are no demand
    assert demand(obs(imax=100, bimin=300)) == 0


def test_median_band_has_separate_positive_and_negative_deviations() -> None:
    m, dpos, dneg, lo, hi = band([10, 12, 14, 100, 11], 2.0)
    assert m == 12.0
    assert (dpos, dneg) == (2.0, 1.0)  # at or above: 0, 2, 88 -> 2 (the spike moves it not); below: 2, 0, 1 -> 1
    assert (lo, hi) == (10.0, 16.0)
    assert band([5], 3.0) == (5.0, 0.0, 0.0, 5.0, 5.0)
    assert band([0, 0, 0, 0, 50], 1.0)[1:3] == (0.0, 0.0)  # one busy interval in an idle window
    assert band([10, 20, 30, 60, 90], 1.0)[1:3] == (30.0, 10.0)  # swings up more than it dips


def feed(p: Policy, demands: list[int], cached: int, zone: int = ZONE_PACKET, fills: int = 0) -> Decision:
    """Feed intervals of the given demands (as list swings) with the list at ``cached``."""
    d = Decision()
    for i, dem in enumerate(demands):
        d = p.decide(obs(zone=zone, interval=i, cached=cached, imax=dem, bimin=0, imin=0, fills=fills))
    return d


def test_median_drains_the_surplus_above_its_band_in_whole_buckets() -> None:
    p = make_policy("median", {"window": 5, "k": 2})
    assert isinstance(p, MedianPolicy)
    demands = [4 * BS, 4 * BS + 10, 4 * BS - 10, 4 * BS + 20, 4 * BS]  # median 512, D+ 5, D- 0
    d = feed(p, demands, cached=20 * BS)
    assert (p.lo, p.hi) == (4 * BS, 4 * BS + 10)
    assert d == Decision(drain_buckets=(20 * BS - (4 * BS + 10)) // BS)  # 15 whole buckets
    assert 20 * BS - d.drain_buckets * BS >= p.hi  # never below the band's top
    # inside the band: keep
    assert feed(make_policy("median", {"window": 5}), demands, cached=4 * BS) == Decision()


def test_median_refills_below_its_band_in_whole_buckets_capped() -> None:
    demands = [6 * BS] * 5
    params = {"window": 5, "k": 2, "max_prefill": 2}
    d = feed(make_policy("median", params), demands, cached=5 * BS, fills=1)
    assert d == Decision(prefill_buckets=1)
    d = feed(make_policy("median", params), demands, cached=BS // 2, fills=1)
    assert d == Decision(prefill_buckets=2)  # would need 6, capped at max_prefill
    # no miss this interval: the cache covered the demand, nothing to refill
    assert feed(make_policy("median", params), demands, cached=BS // 2, fills=0) == Decision()
    assert feed(make_policy("median", {**params, "max_prefill": 0}), demands, cached=0, fills=1) == Decision()
    # the default never refills (measured: refills only added stranded clusters)
    assert feed(make_policy("median", {"window": 5, "k": 2}), demands, cached=0, fills=1) == Decision()


def test_median_sizes_only_the_packet_zone() -> None:
    """"free back mbuf+clusters from the packet zone to their native zones"."""
    for zone in (ZONE_MBUF, ZONE_CLUSTER):
        p = make_policy("median", {"window": 3, "max_prefill": 4})
        assert feed(p, [6 * BS] * 3, cached=0, zone=zone, fills=1) == Decision()
        assert feed(p, [BS] * 3, cached=30 * BS, zone=zone) == Decision()
        assert p.decide(steady(3 * BS, zone=zone, sleepers=1)) == Decision()
        assert p.decide(steady(3 * BS, zone=zone, allocs=0, percpu=99)) == Decision()


def test_median_never_refills_under_cluster_pressure_and_drains_instead() -> None:
    p = make_policy("median", {"window": 3})
    feed(p, [6 * BS] * 3, cached=0)
    d = p.decide(obs(cached=BS, imax=6 * BS, bimin=0, cluster_fails=1, fills=3))
    assert d.prefill_buckets == 0 and d.drain_buckets >= 1 and d.drain_percpu


def test_median_quiet_interval_empties_list_and_per_cpu_buckets() -> None:
    p = make_policy("median")
    feed(p, [10 * BS] * 8, cached=10 * BS)  # 1000 allocations per interval
    d = p.decide(steady(10 * BS, allocs=0, percpu=200))
    assert d.drain_buckets >= 10 and d.drain_percpu
    assert p.decide(steady(0, allocs=0, percpu=0)) == Decision()
    q = make_policy("median", {"percpu": 0})
    assert not q.decide(steady(BS, allocs=0, percpu=200)).drain_percpu


def test_median_quiet_means_a_tenth_of_the_recent_median_allocations() -> None:
    p = make_policy("median", {"window": 4})
    feed(p, [10 * BS] * 4, cached=10 * BS)  # allocs 1000 each (the obs default)
    d = p.decide(steady(10 * BS, allocs=100, imax=10 * BS, bimin=0, percpu=64))  # 10%: quiet
    assert d.drain_buckets >= 10 and d.drain_percpu
    p = make_policy("median", {"window": 4})
    feed(p, [10 * BS] * 4, cached=10 * BS)
    d = p.decide(steady(10 * BS, allocs=101, imax=10 * BS, bimin=0, percpu=64))  # just above
    assert not d.drain_percpu and d.drain_buckets == 0  # cached == the band's top: keep


def test_median_recovers_to_the_working_set_after_load_drops() -> None:
    """A long busy stretch, then light load: the cache follows the new median."""
    p = make_policy("median", {"window": 4, "k": 1})
    cached = 40 * BS
    for _ in range(6):
        cached -= p.decide(obs(cached=cached, imax=30 * BS, bimin=0)).drain_buckets * BS
    assert cached <= 31 * BS
    for _ in range(3):  # demand now 2 buckets: after a majority of the window, the band follows
        cached -= p.decide(obs(cached=cached, imax=2 * BS, bimin=0)).drain_buckets * BS
    assert cached <= 3 * BS


# --- every policy -------------------------------------------------------------------

nat = st.integers(0, 50_000)
observations = st.builds(
    Observation,
    zone=st.sampled_from([ZONE_MBUF, ZONE_CLUSTER, ZONE_PACKET]),
    interval=st.integers(0, 1000),
    bucket_size=st.sampled_from([16, 32, 64, 128]),
    cached=nat, percpu=st.integers(0, 1024), imax=nat, imin=nat, bimin=nat, swing=nat,
    fills=st.integers(0, 500), allocs=st.integers(0, 100_000), frees=st.integers(0, 100_000),
    overflows=st.integers(0, 1000), sleepers=st.integers(0, 4), cluster_fails=st.integers(0, 10),
    cluster_sleeps=st.integers(0, 10), wss=nat, limin=nat, timin=st.integers(0, 100),
    wss19=nat, imin19=nat, ml_min=st.integers(0, 400), ml_reaplimit=st.integers(0, 400),
)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(POLICY_NAMES), seq=st.lists(st.tuples(observations, st.booleans()), min_size=1,
                                                         max_size=25))
def test_every_policy_decides_whole_nonnegative_buckets(name: str, seq: list[tuple[Observation, bool]]) -> None:
    p = make_policy(name)
    for o, lowmem in seq:
        o = dataclasses.replace(o, imin=min(o.imin, o.cached, o.imax), imax=max(o.imax, o.cached),
                                buckets=min(o.cached, o.buckets), limin=min(o.limin, o.cached),
                                imin19=min(o.imin19, o.cached), ml_min=min(o.ml_min, o.cached),
                                ml_reaplimit=min(o.ml_reaplimit, o.cached))
        d = p.vm_lowmem(o) if lowmem else p.decide(o)
        assert isinstance(d.drain_buckets, int) and isinstance(d.prefill_buckets, int)
        assert d.drain_buckets >= 0 and d.prefill_buckets >= 0 and d.reclaim_to >= -1
        assert not ((d.drain_buckets or d.reclaim_to >= 0 or d.zone_drain) and d.prefill_buckets)
        # a drain never asks for more buckets than the list can hold items
        assert d.drain_buckets <= max(o.cached, 0)
        if name == "none":
            assert d == (ZONE_DRAIN if lowmem else Decision())


# --- the callout: raw observations in, decisions applied --------------------------------


class FakeUma:
    """A Trimmable: raw observations with running totals, a record of apply calls, and
    a page daemon that says whatever the test sets."""

    def __init__(self) -> None:
        self.totals = {"fills": 0, "allocs": 0, "frees": 0, "overflows": 0, "cluster_fails": 0,
                       "cluster_sleeps": 0}
        self.cached = 0
        self.short = False
        self.observed: list[tuple[int, bool]] = []
        self.applied: list[tuple[int, Decision]] = []

    def counters(self, z: int) -> dict[str, int]:
        return {"zone": z, "percpu": 0, "sleepers": 0, **self.totals}

    def observe(self, z: int, lowmem: bool = False) -> dict[str, int]:
        self.observed.append((z, lowmem))
        return {"bucket_size": BS, "cached": self.cached, "imax": self.cached, "imin": self.cached,
                "bimin": self.cached, **self.counters(z)}

    def apply(self, z: int, decision: Decision) -> dict[str, int]:
        self.applied.append((z, decision))
        return {"drained": decision.drain_buckets * BS, "buckets": decision.drain_buckets, "prefilled": 0,
                "pages": 0}

    def page_shortage(self) -> bool:
        return self.short


def test_callout_differences_running_totals_into_intervals() -> None:
    from allocator.policy.callout import TrimCallout

    uma = FakeUma()
    uma.totals["allocs"] = 5000  # before the callout started: not part of interval 0
    co = TrimCallout(uma, "watermark", {"high": 4 * BS, "low": 0}, zones=(ZONE_PACKET,))
    assert uma.observed == []  # the baseline reads counters only: observing would end an interval
    uma.totals["allocs"] += 300
    uma.totals["cluster_sleeps"] += 2
    uma.cached = 3 * BS
    (t0,) = co.tick()
    assert (t0.observation.interval, t0.observation.allocs, t0.observation.cluster_sleeps) == (0, 300, 2)
    assert t0.decision == Decision()
    uma.cached = 6 * BS
    (t1,) = co.tick()
    assert (t1.observation.interval, t1.observation.allocs, t1.observation.cluster_sleeps) == (1, 0, 0)
    assert t1.decision == Decision(drain_buckets=6)
    assert uma.applied == [(ZONE_PACKET, Decision(drain_buckets=6))]  # a no-op decision is not applied
    assert co.summary() == {"intervals": 2, "drained": 6 * BS, "prefilled": 0, "percpu_flushes": 0,
                            "lowmem_events": 0, "pages_released": 0}
    assert TrimCallout(uma, "median").exhaustion_drain and not TrimCallout(uma, "depot").exhaustion_drain


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_a_page_shortage_reaches_every_zone_and_every_policy(name: str) -> None:
    from allocator.policy.callout import TrimCallout

    uma = FakeUma()
    co = TrimCallout(uma, name)
    assert all(not t.lowmem for t in co.tick())  # no shortage: no event
    uma.short = True
    uma.cached = 4 * BS
    ticks = co.tick()
    lowmem = [t for t in ticks if t.lowmem]
    assert [t.observation.zone for t in lowmem] == [0, 1, 2]
    assert uma.observed[-3:] == [(0, True), (1, True), (2, True)]
    for t in lowmem:
        assert t.decision == co.policies[t.observation.zone].vm_lowmem(t.observation)
    assert co.summary()["lowmem_events"] == 1
    if name == "none":
        assert [d for _, d in uma.applied] == [ZONE_DRAIN] * 3


def test_callout_median_returns_hoarded_clusters_on_a_real_arena() -> None:
    """One process acting as CPU 0 and as the manager: hoard packets, let the load stop,
    and the median callout gives every cached packet's cluster back to the cluster zone."""
    from allocator import KEG_CLUSTER, M_NOWAIT, M_PKTHDR, MT_DATA, Uma, UmaConfig
    from allocator.policy.callout import TrimCallout

    uma = Uma.create(UmaConfig(ncpus=1, nmbclusters=512))  # no inline drain: the callout alone
    try:
        cpu = uma.cpu(0)
        co = TrimCallout(uma, "median")
        ms = [cpu.m_getcl(M_NOWAIT, MT_DATA, M_PKTHDR) for _ in range(400)]
        assert min(ms) >= 0
        for m in ms:
            cpu.m_freem(m)
        assert uma.stats().netstat.packets_cache >= 400  # the pseudo-leak: all cached, holding clusters
        for _ in range(3):  # busy interval, then idle ones: drain the list, flush per-CPU buckets
            co.tick()
            cpu.serve()
        assert uma.stats().netstat.packets_cache == 0
        assert uma.keg_free(KEG_CLUSTER) == 512
        report = uma.audit([])
        assert report.ok and report.clusters_stranded == 0
    finally:
        uma.close()


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_a_page_shortage_reaches_every_zone_under_every_policy_on_a_real_arena(name: str) -> None:
    """The same on the allocator itself: with a page budget the hoarded packets leave
    the VM short, and at the next tick every zone's policy answers vm_lowmem and its
    answer is carried out -- keg_drain runs in every zone wherever the kernel's answer
    includes one (zone_drain, zone_reclaim) -- and, while the shortage lasts, free pages
    rise."""
    from allocator import M_NOWAIT, M_PKTHDR, MT_DATA, Uma, UmaConfig
    from allocator.policy.callout import TrimCallout

    assert set(POLICY_NAMES) == {"none", "exhaustion", "watermark", "depot", "wss", "wss-2019", "median"}
    uma = Uma.create(UmaConfig(ncpus=1, nmbclusters=2048, page_budget=300))
    try:
        cpu = uma.cpu(0)
        co = TrimCallout(uma, name)
        ms = [cpu.m_getcl(M_NOWAIT, MT_DATA, M_PKTHDR) for _ in range(700)]
        assert min(ms) >= 0
        for m in ms:
            cpu.m_freem(m)
        assert uma.page_shortage()
        free0 = uma.free_pages()
        lowmem = [t for t in co.tick() if t.lowmem]
        assert [t.observation.zone for t in lowmem] == [ZONE_MBUF, ZONE_CLUSTER, ZONE_PACKET]
        for t in lowmem:
            policy = co.policies[t.observation.zone]
            assert t.decision == policy.vm_lowmem(t.observation)
            if t.decision.keg_drain or t.decision.zone_drain:
                assert t.done["keg_drains"] == 1, (name, t)
        assert co.summary()["lowmem_events"] == 1
        # The estimators count the hoarding burst as working set at first (FreeBSD trims
        # to it, illumos reaps only what sat unused a whole interval); while the
        # shortage lasts the event recurs at every tick and each answer gives back more.
        for _ in range(8):
            if uma.free_pages() > free0:
                break
            assert any(t.lowmem for t in co.tick())
        assert uma.free_pages() > free0 and co.summary()["pages_released"] > 0, (name, co.summary())
        assert uma.audit([]).ok
    finally:
        uma.close()


@pytest.mark.parametrize("budget", [0, 300])
def test_a_page_budget_fires_vm_lowmem_and_none_drains_as_in_2005(budget: int) -> None:
    """With a budget the hoarded packets' pages leave the VM short, vm_lowmem reaches
    every zone and ``none`` answers with 2005's zone_drain until free pages are back
    above the page daemon's target; without one (the default, as on the Dec 2005
    machines) the event never fires and nothing is drained."""
    from allocator import M_NOWAIT, M_PKTHDR, MT_DATA, Uma, UmaConfig
    from allocator.pageout import free_target
    from allocator.policy.callout import TrimCallout

    uma = Uma.create(UmaConfig(ncpus=1, nmbclusters=2048, page_budget=budget))
    try:
        cpu = uma.cpu(0)
        co = TrimCallout(uma, "none")
        ms = [cpu.m_getcl(M_NOWAIT, MT_DATA, M_PKTHDR) for _ in range(700)]
        for m in ms:
            cpu.m_freem(m)
        cached = uma.stats().netstat.packets_cache
        assert cached >= 700
        events = []
        for _ in range(4):
            events.append(sorted(t.observation.zone for t in co.tick() if t.lowmem))
        if budget == 0:
            assert events == [[]] * 4 and uma.stats().netstat.packets_cache == cached
            return
        assert events[0] == [0, 1, 2] and events[-1] == []  # every zone; then memory is back
        assert uma.free_pages() >= free_target(budget) and co.summary()["pages_released"] > 0
        assert 0 < uma.stats().netstat.packets_cache <= 2 * BS  # 2005: the per-CPU buckets stay
        assert uma.view("uz_full_cnt")[ZONE_PACKET] == 0
        assert uma.audit([]).ok
    finally:
        uma.close()


# --- demand is demand ------------------------------------------------------------------


def hoard(name: str) -> tuple[Any, Any, Any]:
    """A real 1-CPU arena whose packet zone cached ~700 packets, and a callout with
    ``name`` on the packet zone that has seen one busy interval."""
    from allocator import M_NOWAIT, M_PKTHDR, MT_DATA, Uma, UmaConfig
    from allocator.policy.callout import TrimCallout

    uma = Uma.create(UmaConfig(ncpus=1, nmbclusters=2048))
    cpu = uma.cpu(0)
    co = TrimCallout(uma, name, zones=(ZONE_PACKET,))
    ms = [cpu.m_getcl(M_NOWAIT, MT_DATA, M_PKTHDR) for _ in range(700)]
    assert min(ms) >= 0
    for m in ms:
        cpu.m_freem(m)
    co.tick()
    cpu.serve()
    return uma, cpu, co


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_a_drain_flush_or_refill_never_reads_as_demand(name: str) -> None:
    """After an interval end, whatever gives back or refills -- a drain of whole
    buckets, a per-CPU flush through the safe protocol, a refill, the policy's own
    decisions after that and its own answer to a low-memory event -- moves the bounds
    with it: with no allocation in between,
    the next observations show no allocation batch at all, and no estimate grows.
    (Before issue 9 the bounds were reset to the level before the drain, and every
    drained bucket read as next interval's demand.)"""
    uma, cpu, co = hoard(name)
    try:
        assert int(uma.view("uzd_nitems")[ZONE_PACKET]) >= 3 * BS  # there is something to drain
        uma.apply(ZONE_PACKET, Decision(drain_buckets=2, drain_percpu=True))
        cpu.serve()
        uma.apply(ZONE_PACKET, Decision(prefill_buckets=1))
        wss = wss19 = 1 << 40

        def quiet_tick() -> None:
            nonlocal wss, wss19
            (t,) = [t for t in co.tick() if not t.lowmem]
            cpu.serve()  # the policy's own flush requests, if any
            o = t.observation
            assert o.allocs == 0
            assert (o.swing, o.imax - o.bimin) == (0, 0), o
            assert o.imax == o.bimin == o.imin == o.cached, o
            assert o.wss <= wss and o.wss19 <= wss19, o
            wss, wss19 = o.wss, o.wss19
            if isinstance(co.policies[ZONE_PACKET], MedianPolicy):
                assert co.policies[ZONE_PACKET].demands[-1] == 0

        for _ in range(4):
            quiet_tick()
        # the policy's own answer to a low-memory event (its reclaim, zone_drain or reap),
        # then quiet intervals: what it gave back is not demand either
        cached = int(uma.view("uzd_nitems")[ZONE_PACKET])
        (lm,) = co.vm_lowmem()
        cpu.serve()
        assert lm.done.get("buckets", 0) > 0 or cached == 0, (name, lm)
        for _ in range(2):
            quiet_tick()
    finally:
        uma.close()


def test_median_demand_is_exactly_what_allocations_drew_after_its_own_drain() -> None:
    """The old flaw measured the other way: after a drain, an interval in which
    allocations take ``n`` items off the list has demand ``n``, not ``n`` plus the drain."""
    uma, cpu, co = hoard("median")
    try:
        uma.apply(ZONE_PACKET, Decision(drain_buckets=1, drain_percpu=True))
        cpu.serve()  # per-CPU buckets to the list: allocations now come from the list
        before = int(uma.view("uzd_nitems")[ZONE_PACKET])
        held = [cpu.m_getcl() for _ in range(BS + 5)]
        drawn = before - int(uma.view("uzd_nitems")[ZONE_PACKET])
        assert 0 < drawn < before  # served by the list alone, no keg fill
        (t,) = co.tick()
        assert demand(t.observation) == drawn == co.policies[ZONE_PACKET].demands[-1]  # type: ignore[attr-defined]
        for m in held:
            cpu.m_freem(m)
    finally:
        uma.close()


# --- the workload shape that tells them apart: netperf, then nfs ------------------------

FIXES = ("exhaustion", "watermark", "depot", "wss", "wss-2019", "median")


def run_netperf_nfs(tmp_path: Path, policy: str) -> dict[str, Any]:
    """A 3-second netperf-nfs run on 2 CPUs (the phases switch at 1.5 s) with a small
    cluster limit, trimming every 0.25 s."""
    from stress.config import RunConfig
    from stress.engine.runner import execute

    cfg = RunConfig(cpus=2, duration=3.0, workload="netperf-nfs", era="modern", policy=policy,
                    refcount="atomic", wakeup="all", nmbclusters=1024, interval=0.25,
                    trim_interval=0.25, wedge_timeout=5.0, verbosity=-1)
    out = tmp_path / policy
    out.mkdir()
    return execute(cfg, out)


def nfs_rpcs(doc: dict[str, Any]) -> int:
    """READ RPCs answered: netperf-nfs counts only those as packets."""
    return int(doc["ops"]["packets"])


@pytest.mark.smp
def test_netperf_then_nfs_starves_under_none(tmp_path: Path) -> None:
    doc = run_netperf_nfs(tmp_path, "none")
    cluster = next(z for z in doc["zones"] if z["name"] == "mbuf_cluster")
    seen = (doc["verdict"], nfs_rpcs(doc), doc["zones"], doc["audit"]["stranded"])
    # the packet zone hoards every cluster: the NFS server sleeps in zonelimit for good
    assert doc["verdict"] == "wedged" or nfs_rpcs(doc) <= NetperfNfs.NFS_WINDOW, seen
    assert cluster["sleep"] >= 1, seen
    # ... while the packet cache holds more clusters than the NFS window needs (how many
    # depends on how far the stream got in its 1.5 s on a loaded machine)
    assert doc["audit"]["stranded"]["clusters_in_packet_cache"] >= NetperfNfs.NFS_WINDOW * NetperfNfs.CHAIN, seen


@pytest.mark.smp
@pytest.mark.parametrize("policy", FIXES)
def test_netperf_then_nfs_runs_under_every_fix_and_the_audit_is_clean(tmp_path: Path, policy: str) -> None:
    doc = run_netperf_nfs(tmp_path, policy)
    seen = (doc["verdict"], doc.get("verdict_detail"), nfs_rpcs(doc), doc["zones"], doc.get("trim"))
    assert doc["verdict"] == "ok" and doc["exit_code"] == 0, seen
    assert doc["audit"]["lost"] == {"mbuf": 0, "cluster": 0}, seen
    assert doc["audit"]["double_owned"] == 0 and doc["audit"]["payload_errors"] == 0, seen
    # the NFS phase made progress (none answers at most one window before it starves)
    assert nfs_rpcs(doc) >= 2 * NetperfNfs.NFS_WINDOW, seen


@pytest.mark.smp
def test_a_run_with_a_page_budget_answers_vm_lowmem_under_none(tmp_path: Path) -> None:
    """--page-budget reaches the allocator: a 2005-style run (policy none) whose packet
    cache outgrows the budget drains on vm_lowmem and records it in run.json."""
    from stress.config import RunConfig
    from stress.engine.runner import execute

    cfg = RunConfig(cpus=2, duration=2.0, workload="burst", era="modern", policy="none",
                    refcount="atomic", wakeup="all", nmbclusters=2048, interval=0.25,
                    trim_interval=0.25, wedge_timeout=5.0, verbosity=-1, page_budget=400)
    doc = execute(cfg, tmp_path)
    assert doc["config"]["page_budget"] == 400
    trim = doc.get("trim") or {}
    assert trim.get("lowmem_events", 0) >= 1 and trim.get("pages_released", 0) > 0, (doc["verdict"], trim)
    assert doc["verdict"] == "ok", doc.get("verdict_detail")

