"""The manager's parts: rings, pinning, the watchdog, the verdict, and failure paths.

Pure parts are tested without processes; the failure paths (a worker raising, the
wedge) run the real manager with real workers for a second or two.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from stress import audit as audit_mod
from stress.config import RunConfig
from stress.engine.manager import planned_duration, uma_config
from stress.engine.pinning import PinningError, cpu_map
from stress.engine.runner import execute
from stress.engine.sampler import SAMPLE_COLUMNS
from stress.engine.watchdog import Watchdog, describe_death
from stress.output.plots import PLOT_COLUMNS
from stress.workloads.ring import RING_HDR, Ring, Slots, ring_spec

# --- rings ------------------------------------------------------------------------------


def make_ring(cap: int) -> Ring:
    spec = ring_spec("t", cap)
    buf = bytearray(8 * spec.length)
    return Ring(memoryview(buf).cast("q"))


def test_ring_is_a_fifo_with_a_power_of_two_capacity() -> None:
    r = make_ring(5)
    assert r.cap == 8 and len(r) == 0 and r.pop() == -1 and r.peek() == -1
    for i in range(8):
        assert r.push(100 + i)
    assert not r.push(999), "a full ring refuses"
    assert r.free_space() == 0
    assert r.contents() == [100 + i for i in range(8)]
    assert r.pop() == 100 and r.peek() == 101
    r.advance()
    assert r.push(200) and r.push(201)
    assert r.contents() == [102, 103, 104, 105, 106, 107, 200, 201]
    assert [r.pop() for _ in range(8)] == [102, 103, 104, 105, 106, 107, 200, 201]
    assert len(r) == 0


def test_ring_head_and_tail_do_not_share_a_cache_line() -> None:
    from stress.workloads.ring import RING_HEAD, RING_TAIL

    assert (RING_TAIL - RING_HEAD) * 8 >= 64 and RING_HDR * 8 >= 128


def test_slots_hold_mbufs_and_report_only_live_ones() -> None:
    s = Slots(memoryview(bytearray(8 * 4)).cast("q"))
    s.reset()
    assert s.contents() == []
    s[1], s[3] = 5, 0
    assert s.contents() == [5, 0]


# --- pinning ----------------------------------------------------------------------------


def test_cpu_k_goes_to_core_k_mod_cores() -> None:
    assert cpu_map(2, cores=[0, 1]) == {0: 0, 1: 1}
    assert cpu_map(3, oversubscribe=True, cores=[4, 6]) == {0: 4, 1: 6, 2: 4}
    with pytest.raises(PinningError, match="--oversubscribe"):
        cpu_map(3, cores=[0, 1])


# --- configuration ----------------------------------------------------------------------


def test_uma_config_follows_the_era_knobs() -> None:
    u = uma_config(RunConfig(cpus=2, era="2005", refcount="buggy-eq0", wakeup="one", policy="none"), ())
    assert (u.refcount, u.wakeup, u.exhaustion_drain) == ("buggy-eq0", "one", False)
    u = uma_config(RunConfig(cpus=2, inject=("wake-one",), invariants=True), ())
    assert u.exhaustion_drain and u.invariants and u.inject == frozenset({"wake-one"})


def test_planned_duration_of_rounds() -> None:
    assert planned_duration(RunConfig(cpus=1, duration=7)) == 7
    assert planned_duration(RunConfig(cpus=1, rounds=3, round_length=2, idle=1)) == 9


def test_samples_have_the_plot_columns() -> None:
    assert set(PLOT_COLUMNS) <= set(SAMPLE_COLUMNS)


# --- verdicts ---------------------------------------------------------------------------


@dataclass
class FakeReport:
    mbufs: int = 100
    clusters: int = 50
    lost_mbufs: int = 0
    lost_clusters: int = 0
    clusters_stranded: int = 0
    double_owned: int = 0
    mbufs_held: int = 0
    clusters_in_use: int = 0
    mbufs_free_in_keg: int = 0
    clusters_free_in_keg: int = 0
    refcount_errors: int = 0
    counter_drift: int = 0
    cached: dict[str, dict[str, int]] = field(default_factory=dict)
    lost_cluster_ids: list[int] = field(default_factory=list)
    lost_cluster_refcounts: list[int] = field(default_factory=list)
    double_owned_examples: list[str] = field(default_factory=list)
    counters: dict[str, Any] = field(default_factory=dict)

    @property
    def items_accounted(self) -> int:
        return self.mbufs + self.clusters - self.lost_mbufs - self.lost_clusters


@dataclass
class FakePanic:
    kind: str
    zone: str = "mbuf"
    item: int = 1
    cpu: int = 0


def test_verdicts_and_their_precedence() -> None:
    a = audit_mod.assess(FakeReport(clusters_stranded=40))
    assert (a.verdict, a.exit_code) == ("ok", 0)
    assert a.block["stranded"]["clusters_in_packet_cache"] == 40, "stranded alone is not a failure"
    leak = FakeReport(lost_clusters=7, lost_cluster_ids=[3], lost_cluster_refcounts=[0])
    a = audit_mod.assess(leak)
    assert (a.verdict, a.exit_code, a.block["lost"]) == ("leak", 1, {"mbuf": 0, "cluster": 7})
    assert a.block["items_accounted"] == 143
    assert audit_mod.assess(leak, wedged=True).verdict == "wedged"
    assert audit_mod.assess(leak, payload_errors=2).verdict == "corrupt"
    assert audit_mod.assess(FakeReport(double_owned=1)).verdict == "double-free"
    assert audit_mod.assess(FakeReport(), panics=[FakePanic("Duplicate free")]).verdict == "double-free"
    poisoned = audit_mod.assess(FakeReport(), panics=[FakePanic("Memory modified after free")])
    assert (poisoned.verdict, poisoned.block["poison_errors"]) == ("corrupt", 1)
    assert audit_mod.assess(FakeReport(), lock_order_findings=1).verdict == "lock-order"
    err = audit_mod.assess(leak, wedged=True, error="worker died\ntraceback")
    assert (err.verdict, err.exit_code, err.reason) == ("error", 3, "worker died")
    assert audit_mod.assess(None).verdict == "error"


def test_a_corrupt_or_double_free_reason_names_what_fired_and_only_that() -> None:
    """The reason line names the INVARIANTS panic that fired (it used to read "0 poison
    errors, 0 payload errors, 0 refcount errors, counter drift 0" for one)."""
    empty = audit_mod.assess(FakeReport(), panics=[FakePanic("Empty bucket on the full list")] * 2)
    assert (empty.verdict, empty.reason) == ("corrupt", "panic: Empty bucket on the full list (x2)")
    drift = audit_mod.assess(FakeReport(counter_drift=3), payload_errors=1)
    assert (drift.verdict, drift.reason) == ("corrupt", "1 payload error; 3 counter drift")
    poisoned = audit_mod.assess(FakeReport(), panics=[FakePanic("Memory modified after free")])
    assert poisoned.reason == "panic: Memory modified after free; 1 poison error"
    double = audit_mod.assess(FakeReport(double_owned=2), panics=[FakePanic("Duplicate free")])
    assert (double.verdict, double.reason) == ("double-free", "panic: Duplicate free; 2 items double-owned")


# --- the watchdog -----------------------------------------------------------------------


@dataclass
class FakeSleeper:
    cpu: int
    since_ns: int
    wchan: str = "zonelimit"
    keg: str = "mbuf_cluster"
    zone: str = "mbuf_packet"


class FakeUma:
    def __init__(self) -> None:
        self.sleeping: list[FakeSleeper] = []
        self.ops = [0, 0]
        self.free = 0

    def sleepers(self) -> list[FakeSleeper]:
        return self.sleeping

    def cpu_ops(self) -> list[int]:
        return self.ops

    def keg_free(self, keg: int) -> int:
        return self.free


@pytest.mark.smp  # the sleeper's since_ns is real time: a long pause would starve it
def test_watchdog_declares_a_wedge_only_without_progress() -> None:
    uma = FakeUma()
    t0 = time.monotonic()
    dog = Watchdog(uma, timeout=2.0, t0=t0)
    assert dog.check(t0 + 1) is None
    uma.sleeping = [FakeSleeper(0, time.monotonic_ns())]
    assert dog.check(t0 + 1) is None
    uma.ops = [5, 0]  # progress resets the clock
    assert dog.check(t0 + 2.5) is None
    uma.free = 3  # free items while asleep: a lost wakeup
    assert dog.check(t0 + 4) is None
    w = dog.check(t0 + 4.6)
    assert w is not None
    d = w.to_dict()
    assert (d["wchan"], d["zone"], d["sleeping_cpus"]) == ("zonelimit", "mbuf_packet", [0])
    assert d["free_items_meanwhile"] is True and d["keg_free_meanwhile"] == 3
    uma.sleeping = []
    assert dog.check(t0 + 10) is None


def test_describe_death_names_signal_and_locks() -> None:
    text = describe_death(1, 4242, -9, None, [("mbuf keg", 1), ("bucket zone", 0)])
    assert "CPU 1 (pid 4242) was killed by SIGKILL" in text
    assert "holding the mbuf keg lock" in text and "bucket zone" not in text
    text = describe_death(0, 7, 3, "Traceback (most recent call last):\nValueError: boom", [])
    assert "ValueError: boom" in text


# --- failure paths, for real -------------------------------------------------------------


@pytest.mark.smp
def test_a_worker_exception_ends_the_run_with_exit_3_and_its_traceback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stress.workloads.netperf import Netperf

    calls = {"n": 0}
    original = Netperf.turn

    def failing_turn(self: Netperf, running: bool, phase: int) -> int:
        calls["n"] += 1
        if self.k == 1 and calls["n"] > 200:
            raise RuntimeError("injected workload failure")
        return original(self, running, phase)

    monkeypatch.setattr(Netperf, "turn", failing_turn)  # inherited by the forked workers
    doc = execute(RunConfig(cpus=2, duration=20, interval=0.5), tmp_path / "run")
    assert (doc["verdict"], doc["exit_code"]) == ("error", 3)
    assert "RuntimeError: injected workload failure" in doc["error"]
    assert "CPU 1" in doc["error"]
    assert doc["stop"]["reason"] == "worker died"
    assert (tmp_path / "run" / "run.json").exists()


@pytest.mark.smp  # a run: the host block asks uname (a process) the first time
def test_more_cpus_than_cores_without_oversubscribe_is_refused_cleanly(tmp_path: Path) -> None:
    import os

    cpus = len(os.sched_getaffinity(0)) + 1
    doc = execute(RunConfig(cpus=cpus, duration=1), tmp_path / "run")
    assert (doc["verdict"], doc["exit_code"]) == ("error", 3)
    assert "--oversubscribe" in doc["error"] and "Traceback" not in doc["error"]


@pytest.mark.smp
def test_a_worker_killed_holding_a_lock_is_named_and_nobody_hangs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CPU 1 dies by SIGKILL holding the mbuf keg lock: CPU 0 blocks on that lock for good,
    so the manager must report the holder, SIGKILL the stuck CPU and still finish."""
    import os
    import signal

    from allocator.layout import LOCK_KEG_MBUF
    from stress.workloads.netperf import Netperf

    original = Netperf.turn
    turns = {"n": 0}

    def dying_turn(self: Netperf, running: bool, phase: int) -> int:
        turns["n"] += 1
        if self.k == 1 and turns["n"] > 500:
            self.cpu.lock(LOCK_KEG_MBUF, 0)
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, running, phase)

    monkeypatch.setattr(Netperf, "turn", dying_turn)
    doc = execute(RunConfig(cpus=2, duration=30, interval=0.5), tmp_path / "run")
    assert (doc["verdict"], doc["exit_code"]) == ("error", 3)
    assert "CPU 1" in doc["error"] and "killed by SIGKILL" in doc["error"]
    assert "holding the mbuf keg lock" in doc["error"]
    assert doc["stop"]["reason"] == "worker died"
