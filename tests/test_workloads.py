"""Every workload, short runs at --cpus 1 and 2 under --era modern: a clean audit.

Each run lasts one second of load through ``stress.engine.runner.execute`` (real pinned
worker processes on real cores, the real arena).  What is asserted is correctness,
never speed: exit 0, nothing lost or double-owned, payloads intact, work was done.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from stress.config import RunConfig
from stress.engine.runner import execute
from stress.workloads import WORKLOADS, arena_arrays, workload_class
from stress.workloads.common import pairs

pytestmark = pytest.mark.smp  # every test here runs stress workers (docs/testing.md)

#: the workloads where every CPU works all along: not the race-* ones (each stages one race,
#: tests/race) nor burst (one CPU at a time by design, so a 1 s run leaves the others idle)
GENERAL = tuple(name for name in WORKLOADS if not name.startswith("race-") and name != "burst")


@pytest.mark.parametrize("cpus", [1, 2])
@pytest.mark.parametrize("workload", GENERAL)
def test_workload_runs_clean_under_modern(workload: str, cpus: int, tmp_path: Path) -> None:
    # A run is bounded by seconds: beside a CPU hog a 1 s xmalloc run did not allocate once
    # (2 of 20 hogged runs), its workers still starting; 2 s leaves them room.
    cfg = RunConfig(cpus=cpus, workload=workload, duration=2.0, interval=0.5, nmbclusters=4096)
    doc = execute(cfg, tmp_path / "run")
    assert doc["verdict"] == "ok", doc.get("verdict_detail")
    assert doc["exit_code"] == 0
    audit = doc["audit"]
    assert audit["lost"] == {"mbuf": 0, "cluster": 0}
    assert audit["double_owned"] == 0
    assert audit["payload_errors"] == 0
    assert doc["ops"]["total"] > 0
    assert doc["ops"]["packets"] > 0, "consumers verified no payload at all"
    assert len(doc["ops"]["per_cpu_per_s"]) == cpus
    assert all(x > 0 for x in doc["ops"]["per_cpu_per_s"]), "a CPU did nothing"
    for name in ("run.json", "samples.csv", "netstat.txt", "plot.png"):
        assert (tmp_path / "run" / name).stat().st_size > 0


@pytest.mark.parametrize("era", ["2007", "modern"])
def test_fixed_eras_exit_zero_on_netperf(era: str, tmp_path: Path) -> None:
    cfg = RunConfig(cpus=2, era=era, policy="exhaustion" if era == "2007" else "median",
                    duration=1.5, interval=0.5)
    doc = execute(cfg, tmp_path / "run")
    assert (doc["verdict"], doc["exit_code"]) == ("ok", 0), doc.get("verdict_detail")


def test_every_workload_declares_its_rings_once() -> None:
    for name in WORKLOADS:
        for cpus in (1, 2, 3):
            specs = arena_arrays(RunConfig(cpus=cpus, workload=name))
            names = [s.name for s in specs]
            assert len(names) == len(set(names)), name
            assert workload_class(name).__doc__


def test_pairs_give_every_cpu_a_role() -> None:
    assert pairs(1) == [(0, 0)]
    assert pairs(2) == [(0, 1)]
    assert pairs(3) == [(0, 1), (2, 2)]
    for n in range(1, 9):
        roles = {c for p in pairs(n) for c in p}
        assert roles == set(range(n))


def test_a_corrupted_payload_is_counted_not_raised(tmp_path: Path) -> None:
    """The payload check can fail: overwrite a segment in flight and see it counted."""
    import random

    from allocator import M_PKTHDR, M_WAITOK, MT_DATA, Uma, UmaConfig
    from stress.workloads.common import STAT_PAYLOAD_ERRORS, WorkerContext
    from stress.workloads.netperf import Netperf
    from stress.workloads.ring import reset_all

    cfg = RunConfig(cpus=1, nmbclusters=1024)
    specs = arena_arrays(cfg)
    uma = Uma.create(UmaConfig(ncpus=1, nmbclusters=1024, extra=tuple(specs)))
    try:
        reset_all(uma, specs)
        cpu = uma.cpu(0)
        wl = Netperf(WorkerContext(0, 1, cpu, uma, cfg, random.Random(0)))
        m = cpu.m_getcl(M_WAITOK, MT_DATA, M_PKTHDR)
        wl.write_payload(m, 7, 100)
        assert wl.read_payload(m) == (7, True)
        cpu.mtod(m)[50] ^= 0xFF
        assert wl.read_payload(m) == (7, False)
        assert uma.view("wl_stat")[STAT_PAYLOAD_ERRORS] == 1
        wl.write_payload(m, 7, 100)  # intact data, a corrupted CRC in the header: counted too
        cpu.mtod(m)[12] ^= 0x01
        assert wl.read_payload(m) == (7, False)
        assert uma.view("wl_stat")[STAT_PAYLOAD_ERRORS] == 2
        cpu.m_freem(m)
    finally:
        uma.close()


def test_each_workload_declares_what_the_manager_drains_and_phases() -> None:
    """The manager knows a workload only through its class: the final drain waits for
    every ring but the posted rx buffers (a NIC keeps those full while idle), and only
    the two-phase workloads get a phase."""
    from stress.engine.manager import phase
    from stress.workloads import drain_rings
    from stress.workloads.ring import RING_PREFIX

    for name, cls in WORKLOADS.items():
        cfg = RunConfig(cpus=3, workload=name, nmbclusters=1024, duration=10)
        rings = {s.name for s in arena_arrays(cfg) if s.name.startswith(RING_PREFIX)}
        posted = set(cls.posted_rings(cfg))
        assert posted <= rings, name
        assert set(drain_rings(cfg)) == rings - posted, name
        assert all("_rxd" in r for r in posted), name
        assert (phase(cfg, 6.0, 0) == 1) == cls.PHASED, name
        assert phase(cfg, 4.0, 0) == 0, name
    assert {n for n, c in WORKLOADS.items() if c.posted_rings(RunConfig(cpus=2))} == {
        "netperf", "netperf-rr", "nfs", "mixed"}
