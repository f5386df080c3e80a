"""The Dec 2005 reproduction: --era 2005 on 2 CPUs leaks clusters round over round and wedges.

What the 2005 reports showed between netperf runs (uma.md, "The incident"): mbufs
*current* flat, mbuf *cache* and clusters *current* growing run over run, then threads
asleep forever in [zonelimit].  The fast test scales the cluster limit down (2048
instead of 25600) so the wedge comes within seconds; the full-size reproduction of
results/reference/2005/ is behind ``@pytest.mark.slow``.

These tests need two usable cores: the refcount race needs two CPUs freeing at once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from stress.config import RunConfig
from stress.engine.runner import execute

needs_smp = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="the refcount race needs two cores")


def era2005(**kw: Any) -> RunConfig:
    base: dict[str, Any] = dict(cpus=2, era="2005", refcount="buggy-eq0", wakeup="one", policy="none",
                                interval=0.5)
    base.update(kw)
    return RunConfig(**base)


def clusters_current(rounds: list[dict[str, Any]]) -> list[int]:
    return [r["clusters"][0] for r in rounds]


def check_the_2005_signature(doc: dict[str, Any]) -> None:
    """What the 2005 reports showed, round over round, then the wedge (uma.md)."""
    assert (doc["verdict"], doc["exit_code"]) == ("wedged", 1), doc.get("verdict_detail")
    wedge = doc["wedge"]
    assert wedge["wchan"] == "zonelimit" and wedge["sleeping_cpus"]
    assert wedge["free_items_meanwhile"] is False, "exhaustion, not a lost wakeup"
    rounds = doc["rounds"]
    assert len(rounds) >= 2, "wedged before a second round could be seen"
    cc = clusters_current(rounds)
    assert cc[-1] > cc[0], f"clusters current did not grow across rounds: {cc}"
    mbufs_current = {r["mbufs"][0] for r in rounds[:-1]} or {rounds[0]["mbufs"][0]}
    mbuf_cache = [r["mbufs"][1] for r in rounds]
    assert mbuf_cache[-1] > mbuf_cache[0], "the mbufs of leaked clusters did not return to the mbuf cache"
    assert max(mbufs_current) - min(mbufs_current) < (cc[-1] - cc[0]), "mbufs current is not flat"
    audit = doc["audit"]
    assert audit["lost"]["cluster"] > 0, "the refcount race lost no cluster"
    assert audit["lost"]["mbuf"] == 0
    assert audit["double_owned"] == 0 and audit["payload_errors"] == 0


@pytest.mark.smp
@pytest.mark.exact
@needs_smp
def test_2005_leaks_round_over_round_and_wedges_in_zonelimit(tmp_path: Path) -> None:
    """The whole 2005 story, exactly: under ``--sched pct`` the run is placed by scheduling
    step, so seed 0 loses the same clusters and wedges at the same step on any machine
    under any load (about 500 of 1024 clusters lost, in either mode).

    Why pct and not the free run: how often the race fires on two real cores depends on
    how often both CPUs run at once, which the machine decides.  Beside a CPU hog the free
    run wedged within 5 s on the developers' machine, but CI's own run lost 1,377 clusters
    in 200 s and never wedged (stop 17): a wedge that needs hundreds of races cannot be
    asserted within a budget there.  The free run's test is the next one; it asserts only
    what holds with margin under load."""
    cfg = era2005(nmbclusters=1024, rounds=400, round_length=0.25, idle=0.25, wedge_timeout=1.5,
                  sched="pct", steps=2_000_000, seed=0)
    doc = execute(cfg, tmp_path / "run")
    check_the_2005_signature(doc)


@pytest.mark.smp
@pytest.mark.interpreted  # compiled, the race loses ~8x fewer clusters (docs/testing.md "Two modes")
@needs_smp
def test_2005_refcount_race_loses_clusters_on_two_real_cores(tmp_path: Path) -> None:
    """The same race with nothing scheduled: two worker processes on two cores free shared
    clusters at once.  What holds under any load with margin is that clusters are lost (CI
    beside the hog lost about 7 a second; idle, hundreds), never an mbuf, never a cluster
    owned twice: not when the wedge comes, so a run that wedges and one that ends after
    its 40 rounds (about 20 s, 16 s of traffic) both pass.  Beside three busy loops on each
    core it still lost 29 to 82.  The wedge itself is asserted exactly above."""
    cfg = era2005(nmbclusters=2048, rounds=40, round_length=0.4, idle=0.1, wedge_timeout=1.5)
    doc = execute(cfg, tmp_path / "run")
    assert (doc["verdict"], doc["exit_code"]) in {("wedged", 1), ("leak", 1)}, doc.get("verdict_detail")
    audit = doc["audit"]
    assert audit["lost"]["cluster"] > 0, "the refcount race lost no cluster on two real cores"
    assert audit["lost"]["mbuf"] == 0
    assert audit["double_owned"] == 0 and audit["payload_errors"] == 0


@pytest.mark.smp
@needs_smp
def test_2005_with_the_refcount_fixed_loses_nothing(tmp_path: Path) -> None:
    """--refcount atomic takes the true leak away; what stays cached is stranded, not lost."""
    cfg = era2005(refcount="atomic", nmbclusters=4096, rounds=3, round_length=0.5, idle=0.25, wedge_timeout=2)
    doc = execute(cfg, tmp_path / "run")
    assert doc["audit"]["lost"] == {"mbuf": 0, "cluster": 0}
    assert doc["wedge"] is None, doc.get("verdict_detail")
    assert doc["audit"]["stranded"]["clusters_in_packet_cache"] > 0, "the packet zone cached nothing"


@pytest.mark.smp
@pytest.mark.slow
@pytest.mark.interpreted  # the README's command; compiled it leaks but does not wedge in 40 rounds
@needs_smp
def test_2005_full_size_reproduction(tmp_path: Path) -> None:
    """The command of results/reference/2005/README.md, at the default 25600 clusters."""
    cfg = era2005(rounds=40, round_length=2, idle=1, wedge_timeout=5)
    doc = execute(cfg, tmp_path / "run")
    assert (doc["verdict"], doc["exit_code"]) == ("wedged", 1)
    cc = clusters_current(doc["rounds"])
    assert len(cc) >= 3 and cc[-1] > cc[0]
    assert doc["audit"]["lost"]["cluster"] > 0
