"""Each trimming policy's rule on synthetic observation sequences (issue 4).

Policies are pure decision logic, so these tests need no arena: they feed hand-made
:class:`Observation` sequences and check the decisions against the rule each module's
docstring states.  A property test (hypothesis) checks the invariants every policy
must keep: whole, non-negative bucket counts, never draining and pre-filling at once,
and ``none`` never touching anything.
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
    ZONE_MBUF,
    ZONE_PACKET,
    Decision,
    Observation,
    Policy,
    make_policy,
)
from allocator.policy.median import MedianPolicy, band, demand
from allocator.policy.wss import WssPolicy
from stress.workloads.netperf_nfs import NetperfNfs

BS = 128


def obs(**kw: int) -> Observation:
    """A quiet packet-zone observation with ``kw`` overriding fields."""
    base = dict(zone=ZONE_PACKET, interval=0, bucket_size=BS, cached=0, percpu=0, imax=0, imin=0,
                bimin=0, fills=0, allocs=1000, frees=1000, overflows=0, sleepers=0,
                cluster_fails=0, cluster_sleeps=0)
    base.update(kw)
    return Observation(**base)


def steady(cached: int, **kw: int) -> Observation:
    """An interval where the list sat at ``cached`` items the whole time."""
    kw.setdefault("imax", cached)
    kw.setdefault("imin", cached)
    kw.setdefault("bimin", cached)
    return obs(cached=cached, **kw)


# --- registry -----------------------------------------------------------------------


def test_registry_names_and_params() -> None:
    assert POLICY_NAMES == ("none", "exhaustion", "watermark", "depot", "wss", "median")
    assert set(POLICY_PARAMS) == set(POLICY_NAMES)
    for name in POLICY_NAMES:
        p = make_policy(name)
        assert p.name == name
        for default, help_text in POLICY_PARAMS[name].values():
            assert isinstance(default, float) and help_text
    assert set(POLICY_PARAMS["median"]) >= {"window", "k", "max_prefill", "percpu"}
    assert set(POLICY_PARAMS["watermark"]) >= {"high", "low"}


def test_exhaustion_drain_flags_follow_the_eras() -> None:
    flags = {n: make_policy(n).exhaustion_drain for n in POLICY_NAMES}
    assert flags == {"none": False, "exhaustion": True, "watermark": False, "depot": False,
                     "wss": True, "median": True}


@pytest.mark.parametrize("name,params,needle", [
    ("nosuch", {}, "unknown policy 'nosuch'"),
    ("median", {"windwo": 3}, "no parameter 'windwo'"),
    ("median", {"window": 0}, "window >= 1"),
    ("watermark", {"high": 10, "low": 20}, "low <= high"),
    ("none", {"k": 1}, "allowed: none"),
])
def test_bad_policy_or_params_is_one_clear_valueerror(
        name: str, params: dict[str, float], needle: str) -> None:
    with pytest.raises(ValueError) as e:
        make_policy(name, params)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_instances_do_not_share_state() -> None:
    a, b = make_policy("depot"), make_policy("depot")
    a.decide(steady(10 * BS))
    assert b.decide(steady(10 * BS)) == Decision()  # b has no previous minimum yet


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


def test_depot_frees_exactly_min_of_previous_and_current_minimum() -> None:
    p = make_policy("depot")
    minima = [10, 6, 9, 0, 4, 4, 12]  # whole buckets on the list at the interval's low point
    prev = 0
    for i, m in enumerate(minima):
        d = p.decide(obs(interval=i, cached=m * BS + 3 * BS, imax=m * BS + 5 * BS, imin=m * BS,
                         bimin=m * BS))
        assert d.drain_buckets == min(prev, m), (i, prev, m)
        assert d.prefill_buckets == 0
        prev = m


def test_depot_counts_whole_buckets_of_the_minimum() -> None:
    p = make_policy("depot")
    p.decide(obs(cached=5 * BS, imin=5 * BS))
    assert p.decide(obs(cached=5 * BS, imin=3 * BS + BS - 1)).drain_buckets == 3  # floor


def test_depot_reaps_an_idle_list_after_two_intervals() -> None:
    p = make_policy("depot")
    assert p.decide(steady(7 * BS, allocs=0)).drain_buckets == 0
    assert p.decide(steady(7 * BS, allocs=0)).drain_buckets == 7


# --- wss ----------------------------------------------------------------------------


def test_wss_follows_max_of_three_quarters_and_imax_minus_bimin() -> None:
    p = make_policy("wss")
    wss = 0
    swings = [(1000, 200), (900, 850), (600, 600), (3000, 0), (10, 10), (10, 10)]
    for imax, bimin in swings:
        cached = 40 * BS
        d = p.decide(obs(cached=cached, imax=imax, bimin=bimin, imin=0))
        wss = max(wss * 3 // 4, imax - bimin)
        assert isinstance(p, WssPolicy) and p.wss == wss
        assert d.drain_buckets == (cached - wss) // BS  # trim to wss, whole buckets
        assert cached - d.drain_buckets * BS >= wss


def test_wss_keeps_a_cache_within_its_estimate_and_drains_on_exhaustion() -> None:
    p = make_policy("wss")
    assert p.decide(obs(cached=3 * BS, imax=5 * BS, bimin=0)).drain_buckets == 0
    d = p.decide(obs(cached=3 * BS, imax=5 * BS, bimin=0, sleepers=1))
    assert d.drain_buckets >= 3


# --- median -------------------------------------------------------------------------


def test_median_demand_is_list_swing_plus_weighted_keg_batches() -> None:
    assert demand(obs(imax=900, bimin=100, fills=2), miss_weight=1) == 800 + 2 * BS
    assert demand(obs(imax=900, bimin=100, fills=2)) == 800  # the default weight is 0
    assert demand(obs(imax=900, bimin=100, fills=0, allocs=0)) == 0  # frees alone are no demand
    assert demand(obs(imax=100, bimin=300)) == 0
    assert demand(obs(imax=900, bimin=100, fills=2), miss_weight=0) == 800
    assert demand(obs(imax=900, bimin=100, fills=2), miss_weight=0.5) == 800 + BS


def test_median_band_is_median_plus_minus_k_mad() -> None:
    m, dev, lo, hi = band([10, 12, 14, 100, 11], 2.0)
    assert (m, dev) == (12.0, 2.0)  # the 100 spike moves neither
    assert (lo, hi) == (8.0, 16.0)
    assert band([5], 3.0) == (5.0, 0.0, 5.0, 5.0)


def feed(p: Policy, demands: list[int], cached: int, zone: int = ZONE_PACKET, fills: int = 0) -> Decision:
    """Feed intervals of the given demands (as list swings) with the list at ``cached``."""
    d = Decision()
    for i, dem in enumerate(demands):
        d = p.decide(obs(zone=zone, interval=i, cached=cached, imax=dem, bimin=0, imin=0, fills=fills))
    return d


def test_median_drains_the_surplus_above_its_band_in_whole_buckets() -> None:
    p = make_policy("median", {"window": 5, "k": 2})
    assert isinstance(p, MedianPolicy)
    demands = [4 * BS, 4 * BS + 10, 4 * BS - 10, 4 * BS + 20, 4 * BS]  # median 512, MAD 10
    d = feed(p, demands, cached=20 * BS)
    assert (p.lo, p.hi) == (4 * BS - 20, 4 * BS + 20)
    assert d == Decision(drain_buckets=(20 * BS - (4 * BS + 20)) // BS)  # 15 whole buckets
    assert 20 * BS - d.drain_buckets * BS >= p.hi  # never below the band's top
    # inside the band: keep
    assert feed(make_policy("median", {"window": 5}), demands, cached=4 * BS) == Decision()


def test_median_prefills_below_its_band_in_whole_buckets_capped() -> None:
    demands = [6 * BS] * 5
    params = {"window": 5, "k": 2, "max_prefill": 2, "miss_weight": 0}
    d = feed(make_policy("median", params), demands, cached=5 * BS, fills=1)
    assert d == Decision(prefill_buckets=1)
    d = feed(make_policy("median", params), demands, cached=BS // 2, fills=1)
    assert d == Decision(prefill_buckets=2)  # would need 6, capped at max_prefill
    # no miss this interval: the cache covered the demand, nothing to pre-fill
    assert feed(make_policy("median", params), demands, cached=BS // 2, fills=0) == Decision()
    assert feed(make_policy("median", {**params, "max_prefill": 0}), demands, cached=0, fills=1) == Decision()
    for zone in (ZONE_MBUF, ZONE_CLUSTER):  # only the packet zone is pre-filled
        assert feed(make_policy("median", params), demands, cached=0, zone=zone, fills=1) == Decision()


def test_median_never_prefills_under_cluster_pressure_and_drains_instead() -> None:
    p = make_policy("median", {"window": 3})
    feed(p, [6 * BS] * 3, cached=0)
    d = p.decide(obs(cached=BS, imax=6 * BS, bimin=0, cluster_fails=1))
    assert d.prefill_buckets == 0 and d.drain_buckets >= 1 and d.drain_percpu
    d = make_policy("median").decide(steady(3 * BS, zone=ZONE_CLUSTER, sleepers=1))
    assert d.drain_buckets >= 3 and d.drain_percpu
    # the mbuf zone does not drain on cluster pressure, and pre-fills nothing while it lasts
    p = make_policy("median", {"window": 3})
    feed(p, [6 * BS] * 3, cached=6 * BS)
    d = p.decide(obs(zone=ZONE_MBUF, cached=0, imax=6 * BS, bimin=0, sleepers=1))
    assert d.prefill_buckets == 0 and d.drain_buckets == 0


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

observations = st.builds(
    Observation,
    zone=st.sampled_from([ZONE_MBUF, ZONE_CLUSTER, ZONE_PACKET]),
    interval=st.integers(0, 1000),
    bucket_size=st.sampled_from([16, 32, 64, 128]),
    cached=st.integers(0, 50_000),
    percpu=st.integers(0, 1024),
    imax=st.integers(0, 50_000),
    imin=st.integers(0, 50_000),
    bimin=st.integers(0, 50_000),
    fills=st.integers(0, 500),
    allocs=st.integers(0, 100_000),
    frees=st.integers(0, 100_000),
    overflows=st.integers(0, 1000),
    sleepers=st.integers(0, 4),
    cluster_fails=st.integers(0, 10),
    cluster_sleeps=st.integers(0, 10),
)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(POLICY_NAMES), seq=st.lists(observations, min_size=1, max_size=25))
def test_every_policy_decides_whole_nonnegative_buckets(name: str, seq: list[Observation]) -> None:
    p = make_policy(name)
    for o in seq:
        o = dataclasses.replace(o, imin=min(o.imin, o.cached, o.imax), imax=max(o.imax, o.cached))
        d = p.decide(o)
        assert isinstance(d.drain_buckets, int) and isinstance(d.prefill_buckets, int)
        assert d.drain_buckets >= 0 and d.prefill_buckets >= 0
        assert not (d.drain_buckets and d.prefill_buckets)
        # a drain never asks for more buckets than the list can hold items
        assert d.drain_buckets <= max(o.cached, 0)
        if name == "none":
            assert d == Decision()


# --- the callout: raw observations in, decisions applied --------------------------------


class FakeUma:
    """Raw ``Uma.observe`` results with running totals, and a record of apply calls."""

    def __init__(self) -> None:
        self.totals = {"fills": 0, "allocs": 0, "frees": 0, "overflows": 0, "cluster_fails": 0,
                       "cluster_sleeps": 0}
        self.cached = 0
        self.applied: list[tuple[int, int, int, bool]] = []

    def observe(self, z: int) -> dict[str, int]:
        return {"zone": z, "bucket_size": BS, "cached": self.cached, "percpu": 0, "imax": self.cached,
                "imin": self.cached, "bimin": self.cached, "sleepers": 0, **self.totals}

    def apply(self, z: int, drain_buckets: int = 0, prefill_buckets: int = 0,
              drain_percpu: bool = False) -> dict[str, int]:
        self.applied.append((z, drain_buckets, prefill_buckets, drain_percpu))
        return {"drained": drain_buckets * BS, "prefilled": 0}


def test_callout_differences_running_totals_into_intervals() -> None:
    from allocator.policy.callout import TrimCallout

    uma = FakeUma()
    uma.totals["allocs"] = 5000  # before the callout started: not part of interval 0
    co = TrimCallout(uma, "depot", zones=(ZONE_PACKET,))
    uma.totals["allocs"] += 300
    uma.totals["cluster_sleeps"] += 2
    uma.cached = 6 * BS
    (t0,) = co.tick()
    assert (t0.observation.interval, t0.observation.allocs, t0.observation.cluster_sleeps) == (0, 300, 2)
    (t1,) = co.tick()
    assert (t1.observation.interval, t1.observation.allocs, t1.observation.cluster_sleeps) == (1, 0, 0)
    assert t1.decision == Decision(drain_buckets=6)  # depot: idle for two interval minima
    assert uma.applied == [(ZONE_PACKET, 6, 0, False)]  # a no-op decision is not applied
    assert co.summary() == {"intervals": 2, "drained": 6 * BS, "prefilled": 0, "percpu_flushes": 0}
    assert TrimCallout(uma, "median").exhaustion_drain and not TrimCallout(uma, "depot").exhaustion_drain


def test_callout_median_returns_hoarded_clusters_on_a_real_arena() -> None:
    """One process acting as CPU 0 and as the manager: hoard packets, let the load stop,
    and the median callout gives every cached packet's cluster back to the cluster keg."""
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
        st = uma.stats().netstat
        assert st.packets_cache == 0
        assert uma.keg_free(KEG_CLUSTER) == 512
        report = uma.audit([])
        assert report.ok and report.clusters_stranded == 0
    finally:
        uma.close()


# --- the workload shape that tells them apart: netperf, then nfs ------------------------

FIXES = ("exhaustion", "watermark", "depot", "wss", "median")


def run_netperf_nfs(tmp_path: Path, policy: str) -> dict[str, Any]:
    """A 3-second netperf-nfs run on 2 CPUs (the phases switch at 1.5 s) with a small
    cluster limit, trimming every 0.25 s."""
    from stress.config import RunConfig
    from stress.manager import execute

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
