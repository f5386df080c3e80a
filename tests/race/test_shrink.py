"""``race --shrink``: delta debugging as plain logic, a guide through the token protocol,
and one real hunt shrunk and replayed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stress.documents import SCHEDULE_FORMAT, Schedule, read_doc
from stress.engine.sched import prepare_arena, read_schedule
from stress.engine.sched.schedule import CTL_FOLLOWED, CTL_NDIVERGED
from stress.engine.sched.shrink import BudgetSpent, ddmin, failure_of, guide, shortest_stop
from tests.test_sched import ROUNDS, _arrays, _counter_race, _pct_run, _run_children

ROOT = Path(__file__).resolve().parents[2]


# --- ddmin and the step cut as plain logic (no processes) ----------------------------------


def test_ddmin_finds_the_two_elements_that_fail_together() -> None:
    calls: list[tuple[int, ...]] = []

    def fails(kept: list[int]) -> bool:
        calls.append(tuple(kept))
        return 13 in kept and 71 in kept

    assert ddmin(list(range(100)), fails) == [13, 71]
    assert len(calls) == len(set(calls))  # no sublist tried twice
    assert tuple(range(100)) not in calls  # the whole list is known to fail


def test_ddmin_result_is_one_minimal_and_keeps_the_order() -> None:
    items = [f"s{i}" for i in range(40)]
    needed = {"s3", "s4", "s20", "s39"}

    def fails(kept: list[str]) -> bool:
        return needed <= set(kept)

    out = ddmin(items, fails)
    assert out == ["s3", "s4", "s20", "s39"]
    assert all(not fails([x for x in out if x != y]) for y in out)  # nothing more can go


def test_ddmin_tries_nothing_first_and_a_failure_needing_nothing_shrinks_to_nothing() -> None:
    calls: list[list[int]] = []
    assert ddmin(list(range(9)), lambda kept: calls.append(kept) is None) == []
    assert calls == [[]]


def test_ddmin_with_a_spent_budget_returns_the_smallest_failing_list_so_far() -> None:
    budget = [5]
    accepted: list[list[int]] = [list(range(64))]

    def fails(kept: list[int]) -> bool:
        if budget[0] == 0:
            raise BudgetSpent
        budget[0] -= 1
        if 7 in kept:
            accepted.append(kept)
            return True
        return False

    out = ddmin(list(range(64)), fails)
    assert out == accepted[-1] and 7 in out and len(out) < 64  # it shrank, and it still fails
    assert budget == [0]


def test_shortest_stop_bisects_to_the_first_failing_step() -> None:
    tried: list[int] = []

    def fails(step: int) -> bool:
        tried.append(step)
        return step >= 137

    assert shortest_stop(0, 1000, fails) == 137
    assert len(tried) <= 10 and 1000 not in tried


def test_a_guide_keeps_the_switches_and_load_changes_before_its_stop() -> None:
    rec = Schedule(seed=1, ncpus=2, depth=3, steps=2000, switches=[(0, 1, 5), (10, 0, 6), (30, 1, 7)],
                   total_steps=50, stop_step=45, load_changes=[(20, 0), (40, 1)], plan={"budget": 40})
    g = guide(rec, [(0, 1, 5), (30, 1, 7)], 25)
    assert g.guide and g.stop_step == 25 and g.switches == [(0, 1, 5)] and g.load_changes == [(20, 0)]
    assert g.plan == rec.plan and (g.seed, g.depth, g.steps) == (1, 3, 2000)
    assert not rec.guide and rec.switches[1] == (10, 0, 6)  # the recording is untouched


def test_failing_the_same_way_is_the_verdict_and_what_was_lost() -> None:
    leak = {"exit_code": 1, "verdict": "leak", "audit": {"lost": {"mbuf": 0, "cluster": 3}, "double_owned": 0}}
    fewer = {"exit_code": 1, "verdict": "leak", "audit": {"lost": {"mbuf": 0, "cluster": 1}, "double_owned": 0}}
    mbufs = {"exit_code": 1, "verdict": "leak", "audit": {"lost": {"mbuf": 2, "cluster": 0}, "double_owned": 0}}
    wedged = {"exit_code": 1, "verdict": "wedged", "wedge": {"free_items_meanwhile": True}, "audit": {}}
    exhausted = {**wedged, "wedge": {"free_items_meanwhile": False}}
    assert failure_of(leak) == failure_of(fewer)  # still a leak of clusters: the same failure
    assert failure_of(leak) != failure_of(mbufs)
    assert failure_of(wedged) != failure_of(exhausted)  # a lost wakeup is not an exhaustion
    assert failure_of({"exit_code": 0, "verdict": "ok"}) is None
    assert failure_of({"exit_code": 3, "verdict": "stalled"}) is None


# --- a guide through the token protocol (two forked CPUs racing on a counter) --------------


def _guided(recorded: Schedule, switches: list[tuple[int, int, int]]) -> tuple[int, Schedule, int, int]:
    """Run the counter race under a guide of ``switches``: (counter, what ran, followed, divergences)."""
    arr = _arrays()
    g = guide(recorded, switches, recorded.total_steps + 1)
    prepare_arena(arr.view, 2, "replay", recorded.seed, recorded.depth, recorded.steps, g)
    _run_children(arr, _counter_race)
    ctl = arr.view("sc_ctl")
    ran = read_schedule(arr.view, 2, recorded.seed, recorded.depth, recorded.steps)
    return arr.view("counter")[0], ran, int(ctl[CTL_FOLLOWED]), int(ctl[CTL_NDIVERGED])


@pytest.mark.smp
def test_a_guide_shrinks_the_lost_update_to_a_replayable_schedule() -> None:
    """A guide holding every switch runs the recorded run; ddmin over the switches keeps
    the few preemptions that lose an update; what ran replays exactly, to the same count."""
    seed, (value, recorded) = next((s, r) for s in range(20) for r in [_pct_run(s)] if r[0] < 2 * ROUNDS)
    counter, ran, followed, _ = _guided(recorded, recorded.switches)
    assert (counter, ran.switches) == (value, recorded.switches)
    assert followed > 0

    def lost_update(kept: list[tuple[int, int, int]]) -> bool:
        return _guided(recorded, kept)[0] < 2 * ROUNDS

    kept = ddmin(recorded.switches, lost_update)
    assert len(kept) < len(recorded.switches) and lost_update(kept)
    counter, ran, _, _ = _guided(recorded, kept)
    assert len(ran.switches) <= len(recorded.switches)
    arr = _arrays()  # the recording of what ran, replayed strictly: the same run, no divergence
    prepare_arena(arr.view, 2, "replay", seed, ran.depth, ran.steps, ran)
    _run_children(arr, _counter_race)
    assert arr.view("counter")[0] == counter < 2 * ROUNDS
    assert arr.view("sc_ctl")[CTL_NDIVERGED] == 0


# --- the command line: a real hunt, shrunk, replayed ----------------------------------------


def _stress(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stress", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.mark.smp
def test_shrink_a_hunted_leak_then_replay_it(tmp_path: Path) -> None:
    """refcount-eq0, seed 2 at 600 steps: a leak (placed by step: on any machine, either
    allocator mode).  Two tries: the recording as a guide, then the stop halved (which
    still loses a cluster); the result replays to the same leak."""
    out = tmp_path / "hunt"
    p = _stress("race", "--inject", "refcount-eq0", "--seeds", "2", "--steps", "600", "--wedge-timeout", "10",
                "--out", str(out), "--quiet")
    assert p.returncode == 1, p.stdout + p.stderr
    seed = out / "seed-2"
    first = json.loads((seed / "run.json").read_text())
    before = Schedule.from_dict(read_doc(seed / "schedule.json", SCHEDULE_FORMAT))
    shrunk = tmp_path / "shrunk"
    p = _stress("race", "--shrink", str(seed), "--max-tries", "2", "--out", str(shrunk))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "try 1: the recording as a guide" in p.stdout and "try 3" not in p.stdout
    assert f"replay: python -m stress replay {shrunk}" in p.stdout
    assert f"switches {len(before.switches):,} -> " in p.stdout
    after = Schedule.from_dict(read_doc(shrunk / "schedule.json", SCHEDULE_FORMAT))  # its schema accepts it
    assert not after.guide
    assert len(after.switches) <= len(before.switches) and after.stop_step <= before.stop_step
    assert after.stop_step < before.stop_step  # half the steps still lose a cluster
    assert not (shrunk / ".tries").exists()
    r = _stress("replay", str(shrunk), "--quiet")
    assert r.returncode == 1, r.stdout + r.stderr
    again = json.loads((shrunk / "replay-1" / "run.json").read_text())
    assert again["verdict"] == first["verdict"] == "leak" and again["audit"]["lost"]["cluster"] > 0
    assert again["schedule"]["divergences"] == 0


def test_shrink_bad_input_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Not a run folder, a run that did not fail, a run with no pct schedule: one line, exit 2,
    and no folder made."""
    from stress import cli

    reference = ROOT / "results" / "reference" / "2005"
    passed, free = tmp_path / "passed", tmp_path / "free"
    for folder, source in ((passed, "atomic"), (free, "run")):  # ok; wedged without a schedule (free)
        folder.mkdir()
        (folder / "run.json").write_text((reference / source / "run.json").read_text())
    for argv, says in (
            (["--shrink", str(tmp_path / "none")], "--shrink: "),
            (["--shrink", str(passed)], "did not fail (verdict ok, exit 0)"),
            (["--shrink", str(free)], "has no schedule.json: only a pct run"),
            (["--max-tries", "3"], "--max-tries: only with --shrink"),
            (["--shrink", str(passed), "--max-tries", "0"], "--max-tries: must be a whole number")):
        assert cli.main(["race", *argv]) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert says in err[-1] and "Traceback" not in "\n".join(err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["free", "passed"]
    assert not (passed / "shrunk").exists() and not (free / "shrunk").exists()


def test_a_signal_stops_the_shrink_and_nothing_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """SIGINT during a try (stress/engine/stopping.py, the one mechanism): the try's run
    ends interrupted, no further try starts, exit 130, and the output folder is gone."""
    import os
    import signal

    from stress import cli
    from stress.engine import runner

    run = tmp_path / "run"  # a failed run with a schedule (the 2005 reference wedge, given one)
    run.mkdir()
    (run / "run.json").write_text((ROOT / "results" / "reference" / "2005" / "run" / "run.json").read_text())
    Schedule(seed=1, ncpus=2, depth=3, steps=2000, switches=[(0, 0, 1), (5, 1, 2)], total_steps=9, stop_step=8,
             plan={"budget": 8}).save(run)
    tries: list[Path] = []

    def interrupted(cfg: object, folder: Path, echo: object = None) -> dict[str, object]:
        tries.append(Path(folder))
        os.kill(os.getpid(), signal.SIGINT)  # recorded by the command's StopSignals, not raised
        return {"verdict": "interrupted", "exit_code": 130}

    monkeypatch.setattr(runner, "execute", interrupted)
    assert cli.main(["race", "--shrink", str(run), "--max-tries", "5"]) == 130
    assert len(tries) == 1  # no try after the signal
    assert "stopped by SIGINT: nothing written" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == ["run.json", "schedule.json"]
