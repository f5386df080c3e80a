"""``python -m stress race``: the hunt loop, its lines, and one real hunt + replay."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stress import options
from stress.commands import race
from stress.config import RunConfig

ROOT = Path(__file__).resolve().parents[2]


def test_parse_seeds() -> None:
    assert race.parse_seeds("3..5") == range(3, 6)
    assert race.parse_seeds("7") == range(7, 8)
    for bad in ("5..3", "a..b", "-1..2", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            race.parse_seeds(bad)


def test_every_catalogue_row_has_a_hunt() -> None:
    from stress.config import INJECTIONS

    assert set(race.HUNTS) == set(INJECTIONS)
    assert all(h.verdicts and h.oracle for h in race.HUNTS.values())


def test_leak_that_wedged_counts_as_the_leak_oracle() -> None:
    leak = frozenset({"leak"})
    assert race.caught_by_oracle({"verdict": "leak"}, leak)
    assert race.caught_by_oracle({"verdict": "wedged", "audit": {"lost": {"cluster": 3}}}, leak)
    assert not race.caught_by_oracle({"verdict": "wedged", "audit": {"lost": {"cluster": 0}}}, leak)
    assert not race.caught_by_oracle({"verdict": "ok"}, leak)


def test_wedge_counts_for_a_wakeup_row_only_with_free_items_meanwhile() -> None:
    wedged = frozenset({"wedged"})
    assert race.caught_by_oracle({"verdict": "wedged", "wedge": {"free_items_meanwhile": True}}, wedged)
    assert not race.caught_by_oracle({"verdict": "wedged", "wedge": {"free_items_meanwhile": False}}, wedged)


def test_run_hunt_lines_and_summary(tmp_path: Path) -> None:
    calls: list[RunConfig] = []

    def fake(cfg: RunConfig, out: Path) -> dict[str, Any]:
        calls.append(cfg)
        found = cfg.seed % 2 == 1
        return {"verdict": "leak" if found else "ok", "exit_code": 1 if found else 0, "duration_s": 2.0}

    cfgs = [race.hunt_config(("refcount-eq0",), s, "pct") for s in range(4)]
    lines: list[str] = []
    res = race.run_hunt(cfgs, tmp_path, execute=fake, echo=lines.append)
    assert [c.out for c in calls] == [str(tmp_path / f"seed-{s}") for s in range(4)]
    assert all(c.inject == ("refcount-eq0",) and c.sched == "pct" and c.era == "modern" for c in calls)
    assert lines[1] == (f"seed 1: leak after 2.00 s  replay: python -m stress replay {tmp_path / 'seed-1'}")
    assert "interrupted" not in race.summary_line(res, ("refcount-eq0",), "pct")
    assert lines[0] == "seed 0: ok"
    assert race.summary_line(res, ("refcount-eq0",), "pct") == \
        "found in 2 of 4 seeds (inject refcount-eq0, sched pct)"
    first = race.run_hunt(cfgs, tmp_path / "x", execute=fake, stop_first=True)
    assert [r.seed for r in first] == [0, 1]

    def other(cfg: RunConfig, out: Path) -> dict[str, Any]:
        return {"verdict": "wedged", "exit_code": 1, "wedge": {"free_items_meanwhile": False}}

    res = race.run_hunt(cfgs[:2], tmp_path / "y", execute=other, echo=lines.append)
    assert not any(r.found for r in res) and all(r.failed for r in res)
    assert "(not this row's oracle)" in lines[-1]
    assert race.summary_line(res, ("refcount-eq0",), "pct").endswith("; 2 other failures")


def _stress(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stress", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.smp
def test_race_bad_input_is_one_line_exit_2(tmp_path: Path) -> None:
    p = _stress("race", "--inject", "no-such-race")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith("zonelimit: error: --inject")
    p = _stress("race", "--inject", "wake-one", "--seeds", "9..2")
    assert p.returncode == 2 and "--seeds" in p.stderr.strip().splitlines()[-1]
    p = _stress("race", "--inject", "wake-one", "--jitter", "0.1")
    assert p.returncode == 2 and "--jitter" in p.stderr.strip().splitlines()[-1]


@pytest.mark.exact
@pytest.mark.smp
def test_hunt_then_replay_reproduces_the_verdict(tmp_path: Path) -> None:
    """The issue's "done when": one command hunts, prints a replay command, and the
    replay shows the same failure.  A pct run is placed by step, so the seed finds it
    on any machine under any load, at the same step, and the replay reaches the very
    same state: the same verdict, the same lost clusters, the same step."""
    out = tmp_path / "hunt"
    p = _stress("race", "--inject", "refcount-eq0", "--seeds", "1", "--sched", "pct", "--steps", "15000",
                "--out", str(out))
    assert p.returncode == 1, p.stdout + p.stderr
    assert "found in 1 of 1 seeds" in p.stdout
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("seed 1: leak at step "))
    cmd = line.split("replay: ", 1)[1]
    folder = out / "seed-1"
    assert cmd == f"python -m stress replay {folder}"
    first = json.loads((folder / "run.json").read_text())
    assert (folder / "schedule.json").is_file()
    assert first["config"]["steps"] == 15000 and first["schedule"]["budget"] == 15000
    r = _stress("replay", str(folder), "--quiet")
    assert r.returncode == 1, r.stdout + r.stderr
    again = json.loads((folder / "replay-1" / "run.json").read_text())
    assert again["verdict"] == first["verdict"] == "leak"
    assert again["audit"]["lost"] == first["audit"]["lost"]
    # INVARIANTS' item history, stamped by step: the replay recorded the very same operations
    assert first["audit"]["item_histories"] and again["audit"]["item_histories"] == first["audit"]["item_histories"]
    assert again["schedule"]["total_steps"] == first["schedule"]["total_steps"]
    assert again["schedule"]["mode"] == "replay" and again["schedule"]["replayed"] > 0
    # the load-off of the final drain is part of the schedule: no divergence at the end
    assert again["schedule"]["divergences"] == 0, again["schedule"]
    assert again["stop"]["reason"] == "completed"


def test_profiles_run_the_race_workloads() -> None:
    """The zonelimit and drain rows hunt with the workload that opens their window."""
    assert race.HUNTS["lost-wakeup"].workload == "race-limit"
    assert race.HUNTS["wake-one"].workload == "race-wakeone"
    assert race.HUNTS["cache-drain-unsafe"].workload == "race-drain"
    cfg = race.hunt_config(("wake-one",), 5, "pct")
    assert cfg.cpus == 3 and cfg.workload == "race-wakeone" and cfg.seed == 5
    cfg = race.hunt_config(("wake-one",), 5, "pct", cpus=2)
    assert cfg.cpus == 2


@pytest.mark.exact
@pytest.mark.smp
@pytest.mark.parametrize("inject", ["lost-wakeup", "wake-one"])
def test_hunt_then_replay_a_wakeup_row(tmp_path: Path, inject: str) -> None:
    """A wakeup row through full runs: the race workload wedges with free items in the
    keg, and the printed replay command follows the schedule to the same wedge.

    The runs are placed by step (the wedge test counts steps, not seconds), so the hunt
    gives the same result beside a CPU hog as on an idle machine: both of seeds 1..2 find
    it (before, bounded by seconds, a loaded machine found wake-one in 0 of 3)."""
    out = tmp_path / "hunt"
    p = _stress("race", "--inject", inject, "--seeds", "1..2", "--sched", "pct", "--out", str(out))
    assert p.returncode == 1, p.stdout + p.stderr
    assert f"found in 2 of 2 seeds (inject {inject}, sched pct)" in p.stdout, p.stdout
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("seed 1: ") and "replay: " in ln)
    folder = Path(line.split("replay: python -m stress replay ", 1)[1])
    first = json.loads((folder / "run.json").read_text())
    assert first["verdict"] == "wedged" and first["wedge"]["free_items_meanwhile"]
    assert f"wedged at step {first['wedge']['at_step']:,} " in line
    r = _stress("replay", str(folder), "--quiet")
    assert r.returncode == 1, r.stdout + r.stderr
    again = json.loads((folder / "replay-1" / "run.json").read_text())
    assert again["verdict"] == "wedged" and again["wedge"]["free_items_meanwhile"]
    assert again["wedge"]["at_step"] == first["wedge"]["at_step"]
    assert again["schedule"]["divergences"] == 0, again["schedule"]


@pytest.mark.exact
@pytest.mark.smp
def test_pct_hunt_finds_cache_drain_unsafe_exactly(tmp_path: Path) -> None:
    """cache-drain-unsafe through full runs under pct: CPU 1's unsafe drain runs in the
    off-CPU context that carries its sched point, so it passes the token like any lock
    taker and never spins on CPU 0's keg lock (it did with the manager's unhooked
    context: every seed ended 'stalled').  The drain pushes CPU 0's alloc bucket on the
    zone's full list while CPU 0 keeps using it: seeds 1 and 2 end with the 32 mbufs of
    CPU 0's alloc bucket on the full list too (owned twice), seed 3 with CPU 0 popping an empty bucket from the
    full list (the INVARIANTS panic) at step 288, where the panic stops the run (FreeBSD's
    panic stops every CPU).  Placed by step: these exact findings, at these steps, on any
    machine under any load.  (Until stop 18 seed 3 ran on after its panic until the
    manager read the worker's message: its step was 7,002 idle and 6,030 beside the hog.)"""
    out = tmp_path / "hunt"
    p = _stress("race", "--inject", "cache-drain-unsafe", "--seeds", "1..3", "--sched", "pct", "--steps", "7000",
                "--out", str(out))
    assert p.returncode == 1, p.stdout + p.stderr
    assert "found in 3 of 3 seeds (inject cache-drain-unsafe, sched pct)" in p.stdout, p.stdout
    seeds = [ln for ln in p.stdout.splitlines() if ln.startswith("seed ")]
    assert [ln.split("  replay:")[0] for ln in seeds] == [
        "seed 1: double-free at step 7,006", "seed 2: double-free at step 7,005", "seed 3: corrupt at step 288"]
    for s in (1, 2):
        audit = json.loads((out / f"seed-{s}" / "run.json").read_text())["audit"]
        assert audit["double_owned"] == 32 and not audit.get("panics"), audit
        # the very bucket CPU 0 allocates from is on the zone's full list as well
        assert all(ex.endswith(": mbuf cpu0 allocbucket and mbuf full list") for ex in audit["double_owned_examples"])
    third = json.loads((out / "seed-3" / "run.json").read_text())
    assert third["stop"]["reason"] == "panic" and third["audit"]["double_owned"] == 0
    assert (third["schedule"]["ended_by"], third["schedule"]["panicked_at_step"]) == ("panic", 288)
    assert [(x["kind"], x["zone"], x["cpu"]) for x in third["audit"]["panics"]] == [
        ("Empty bucket on the full list", "mbuf", 0)]


@pytest.mark.parametrize("workload,nmb,cpus", [("race-limit", 8, 2), ("race-wakeone", 512, 3),
                                               ("race-drain", 512, 2)])
@pytest.mark.smp
def test_race_workloads_run_clean_without_injection(tmp_path: Path, workload: str, nmb: int, cpus: int) -> None:
    """The fixed allocator under the race workloads, on real parallel cores: no wedge,
    no finding.  (Free runs are bounded by seconds: they only assert what holds for
    every interleaving.)"""
    doc = _run_race_workload(tmp_path / "run", workload, nmb, cpus, "free", "--duration", "1.5")
    assert doc["verdict"] == "ok" and doc["ops"]["packets"] > 0, doc["verdict_detail"]


@pytest.mark.parametrize("workload,nmb,cpus", [("race-limit", 8, 2), ("race-wakeone", 512, 3),
                                               ("race-drain", 512, 2)])
@pytest.mark.exact
@pytest.mark.smp
def test_race_workloads_under_pct_are_exact(tmp_path: Path, workload: str, nmb: int, cpus: int) -> None:
    """The same under pct, placed by step: clean, and exactly the same run twice -- the
    same steps, switches, packets and audit -- whatever the load on the machine."""
    runs = [_run_race_workload(tmp_path / f"run{i}", workload, nmb, cpus, "pct", "--steps", "20000")
            for i in range(2)]
    for doc in runs:
        assert doc["verdict"] == "ok" and doc["ops"]["packets"] > 0, doc["verdict_detail"]
        assert doc["schedule"]["budget"] == 20000 and doc["schedule"]["ended_by"] == "budget"

    def exact(doc: dict[str, Any]) -> tuple[Any, ...]:
        s = doc["schedule"]
        return (s["total_steps"], s["switches"], s["callouts"], doc["ops"]["packets"], doc["ops"]["total"],
                doc["audit"]["items_accounted"], doc["zones"])

    assert exact(runs[0]) == exact(runs[1])


def _run_race_workload(out: Path, workload: str, nmb: int, cpus: int, sched: str, *length: str) -> dict[str, Any]:
    p = _stress("run", "--workload", workload, "--nmbclusters", str(nmb), "--cpus", str(cpus),
                "--oversubscribe", *length, "--wedge-timeout", "1", "--invariants",
                "--sched", sched, "--seed", "3", "--out", str(out), "--quiet")
    doc: dict[str, Any] = json.loads((out / "run.json").read_text())
    assert p.returncode == doc["exit_code"], p.stdout + p.stderr
    return doc


@pytest.mark.smp
@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two real cores: with one, CPUs never overlap")
@pytest.mark.parametrize("inject", ["lost-wakeup", "wake-one"])
def test_full_run_hunt_on_parallel_cores(tmp_path: Path, inject: str) -> None:
    """The wakeup rows through full runs with the CPUs really in parallel (free mode)."""
    p = _stress("race", "--inject", inject, "--seeds", "1..4", "--sched", "free", "--stop-first",
                "--out", str(tmp_path / "hunt"))
    assert p.returncode == 1 and "found in 1 of " in p.stdout, p.stdout + p.stderr


@pytest.mark.smp
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two real cores: with one, CPUs never overlap")
def test_full_run_hunt_finds_cache_drain_unsafe_on_parallel_cores(tmp_path: Path) -> None:
    """race-drain on two real cores: the unsafe drain leaves an empty bucket on the
    full list or an item owned twice, and the verdict is the row's class."""
    p = _stress("race", "--inject", "cache-drain-unsafe", "--seeds", "1..4", "--sched", "free", "--stop-first",
                "--out", str(tmp_path / "hunt"))
    assert p.returncode == 1 and "found in 1 of " in p.stdout, p.stdout + p.stderr


def test_a_hunt_without_injection_counts_every_failure_by_class(tmp_path: Path) -> None:
    """No --inject: the configuration as given, every verdict on the allocator a finding."""
    verdicts = {0: ("ok", 0), 1: ("leak", 1), 2: ("wedged", 1), 3: ("leak", 1), 4: ("error", 3)}

    def fake(cfg: RunConfig, out: Path) -> dict[str, Any]:
        verdict, code = verdicts[cfg.seed]
        return {"verdict": verdict, "exit_code": code, "duration_s": 1.0, "wedge": {"free_items_meanwhile": False}}

    cfgs = [race.hunt_config((), s, "pct", era="2005", policy="median") for s in range(5)]
    assert all((c.inject, c.era, c.policy, c.refcount) == ((), "2005", "median", "buggy-eq0") for c in cfgs)
    assert cfgs[0].invariants and cfgs[0].nmbclusters == race.AS_GIVEN.nmbclusters
    res = race.run_hunt(cfgs, tmp_path, execute=fake)
    assert [r.found for r in res] == [False, True, True, True, False]  # a wedge of the era is a finding
    assert race.by_class(res) == {"leak": 2, "wedged": 1}
    assert race.summary_line(res, (), "pct", what="era 2005") == \
        "found in 3 of 5 seeds (no injection: era 2005, sched pct): leak 2, wedged 1"


def test_a_budget_stops_starting_seeds_when_spent(tmp_path: Path) -> None:
    calls: list[int] = []

    def fake(cfg: RunConfig, out: Path) -> dict[str, Any]:
        calls.append(cfg.seed)
        return {"verdict": "ok", "exit_code": 0, "duration_s": 1.0}

    seeds = (race.hunt_config((), s, "pct") for s in range(10**6))  # endless: the deadline ends it
    assert race.run_hunt(seeds, tmp_path, execute=fake, deadline=0.0) == [] and calls == []
    res = race.run_hunt(iter([race.hunt_config((), 7, "pct")]), tmp_path, execute=fake, deadline=float("inf"))
    assert [r.seed for r in res] == [7]
    assert race.summary_line(res, (), "pct", what="x", budget=60.0).endswith("; the budget of 60 s is spent")
    assert options.duration("30m") == 1800.0 and options.duration("1.5h") == 5400.0 and options.duration("90") == 90.0


@pytest.mark.exact
@pytest.mark.smp
def test_race_without_injection_finds_the_2005_refcount_race(tmp_path: Path) -> None:
    """The issue's "done when": no injection, --era 2005, pct: the allocator as it was
    loses clusters to its refcount race; placed by step, so the first seed finds it on
    any machine, and a budget ends the hunt there."""
    out = tmp_path / "hunt"
    p = _stress("race", "--era", "2005", "--steps", "10000", "--budget", "10m", "--out", str(out), timeout=600)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "hunting the configuration as given (era 2005, policy none, refcount buggy-eq0" in p.stdout
    assert "found in 1 of 1 seeds (no injection: era 2005" in p.stdout and ": leak 1" in p.stdout
    doc = json.loads((out / "race.json").read_text())
    assert doc["inject"] == [] and doc["by_class"] == {"leak": 1} and doc["budget_s"] == 600.0
    run = json.loads((out / "seed-1" / "run.json").read_text())
    assert run["audit"]["lost"]["cluster"] > 0 and run["config"]["inject"] == []
    # how the first lost cluster was lost (INVARIANTS' item history): printed under the
    # seed's line, kept in race.json and run.json, printed again by report
    lost = run["audit"]["item_histories"][0]
    assert lost["finding"] == "lost" and lost["keg"] == "mbuf_cluster" and lost["history"]
    assert any(" refcount-dec mbuf_cluster at step " in line for line in lost["history"]), lost
    assert f"  history of mbuf_cluster {lost['item']} (lost): " + "; ".join(lost["history"]) in p.stdout
    assert doc["seeds"][0]["item_histories"][0] == lost
    shown = _stress("report", str(out / "seed-1"), "--no-netstat")
    assert shown.returncode == 0 and f"history of mbuf_cluster {lost['item']} (lost)" in shown.stdout, shown.stderr

    # --export-test: the failing seed as a pytest file that replays it, for the user's suite
    test_file = tmp_path / "suite" / "test_exported.py"
    test_file.parent.mkdir()
    p = _stress("race", "--export-test", str(out / "seed-1"), "--out", str(test_file))
    assert p.returncode == 0 and test_file.is_file(), p.stderr
    assert _stress("race", "--export-test", str(out / "seed-1"), "--out", str(test_file)).returncode == 2  # taken
    ran = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
                         cwd=test_file.parent, capture_output=True, text=True, timeout=900)
    assert ran.returncode == 0, ran.stdout[-3000:]
    text = test_file.read_text()  # it asserts what the run recorded, exactly: another count fails it
    assert f'assert doc["audit"]["lost"] == {run["audit"]["lost"]!r}' in text and "assert p.returncode == 1" in text
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "run.json").write_text((out / "seed-1" / "run.json").read_text())
    p = _stress("race", "--export-test", str(bare), "--out", str(tmp_path / "t.py"))
    assert p.returncode == 2 and "has no schedule.json" in p.stderr
