"""``--jobs J`` (stress/engine/jobs.py): runs side by side on disjoint leased cores.

The checks of the plan run in this process; two tests start real child runs (marked
smp): a comparison with two runs at once, and a SIGTERM that stops all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from stress import cli
from stress.commands import compare, race
from stress.cpulist import usable_cores
from stress.engine import leases
from stress.engine.executor import RunRequest
from stress.engine.jobs import cores_per_run

ROOT = Path(__file__).resolve().parent.parent
NCORES = len(usable_cores())
two_cores = pytest.mark.skipif(NCORES < 2, reason="two runs side by side need two usable cores")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="compare")
    compare.add_arguments(parser)
    return parser.parse_args(argv)


def test_a_run_leases_what_it_can_use_or_its_share() -> None:
    assert cores_per_run(1, 2, False, ncores=2) == 1
    assert cores_per_run(2, 1, False, ncores=2) == 2
    assert cores_per_run(3, 1, False, ncores=2) == 2  # oversubscribed by design: holds what there is
    assert cores_per_run(2, 2, True, ncores=2) == 1  # --oversubscribe: an equal share
    assert cores_per_run(4, 3, True, ncores=8) == 2
    assert cores_per_run(1, 4, True, ncores=2) == 1


def test_jobs_beyond_the_usable_cores_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "c"
    args = ["--cpus", str(NCORES), "--configs", "2005", "--repeat", "1", "--out", str(out)]
    assert compare.main(parse([*args, "--jobs", "2"])) == 2
    err = capsys.readouterr().err
    assert f"--jobs: 2 runs of {NCORES} cores need {2 * NCORES} cores" in err and "--oversubscribe" in err
    assert compare.main(parse([*args, "--oversubscribe"])) == 2
    assert "--oversubscribe: only with --jobs J" in capsys.readouterr().err
    assert cli.main(["race", "--inject", "refcount-eq0", "--cpus", str(NCORES), "--jobs", "3",
                     "--out", str(out)]) == 2
    assert "--jobs: 3 runs" in capsys.readouterr().err
    assert not out.exists()


class FakeExecutor:
    """Runs nothing: hands back a document per request, in reverse order (as parallel runs
    may end), and records the stop."""

    parallel = True

    def __init__(self, doc: Callable[[RunRequest], dict[str, Any]]) -> None:
        self.doc = doc
        self.stopped_after: int | None = None
        self.started: list[RunRequest] = []

    def run(self, requests: Iterable[RunRequest], on_start: Callable[[RunRequest], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> Iterator[tuple[RunRequest, dict[str, Any]]]:
        reqs = list(requests)
        for req in reqs:
            if on_start is not None:
                on_start(req)
            self.started.append(req)
        for req in reversed(reqs):
            if self.stopped_after is not None:  # the rest were cancelled: they end stopped
                yield req, {"verdict": "interrupted", "exit_code": 143, "duration_s": 0.5}
                continue
            yield req, self.doc(req)

    def stop(self) -> None:
        self.stopped_after = len(self.started)


def test_stop_first_cancels_the_other_seeds_and_keeps_the_finished(tmp_path: Path) -> None:
    def doc(req: RunRequest) -> dict[str, Any]:
        found = req.config.seed == 3
        return {"verdict": "leak" if found else "ok", "exit_code": 1 if found else 0, "duration_s": 1.0}

    ex = FakeExecutor(doc)
    cfgs = [race.hunt_config(("refcount-eq0",), s, "pct") for s in range(1, 6)]
    res = race.run_hunt(cfgs, tmp_path, stop_first=True, executor=ex)
    assert ex.stopped_after == 5
    assert [(r.seed, r.verdict, r.found) for r in res] == [  # seeds 1 and 2 still ran: stopped
        (1, "interrupted", False), (2, "interrupted", False), (3, "leak", True), (4, "ok", False), (5, "ok", False)]
    assert race.summary_line(res, ("refcount-eq0",), "pct") == "found in 1 of 3 seeds (inject refcount-eq0, sched pct)"
    assert all((tmp_path / f"seed-{s}").is_dir() for s in range(1, 6))


def _run_docs(out: Path) -> dict[str, dict[str, Any]]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(out.glob("*/run.json"))}


@pytest.mark.smp
@two_cores
def test_compare_runs_two_at_once_on_disjoint_cores(tmp_path: Path) -> None:
    out = tmp_path / "c"
    assert compare.main(parse(["--cpus", "1", "--duration", "1", "--nmbclusters", "512", "--repeat", "2",
                               "--variant", "none:policy=none", "--variant", "k3:policy=median,median.k=3",
                               "--jobs", "2", "--out", str(out), "-q"])) == 0
    doc = json.loads((out / "compare.json").read_text())
    assert doc["state"] == "complete" and doc["history"][0]["jobs"] == 2
    assert [sorted(r["seed"] for r in v["runs"]) for v in doc["variants"]] == [[0, 1], [0, 1]]
    assert all(r["parallel"] and r["verdict"] == "ok" for v in doc["variants"] for r in v["runs"])
    runs = _run_docs(out)
    assert sorted(runs) == ["k3-s0", "k3-s1", "none-s0", "none-s1"]
    for rdoc in runs.values():
        pin = rdoc["host"]["pinning"]
        assert pin["lease"] == "handed" and len(pin["cores"].split(",")) == 1
        assert [w["core"] for w in rdoc["workers"]] == [int(pin["cores"])]
    # runs that ran at the same time held different cores (run.log: first and last line, in ms)
    spans = {d: _interval(out / d) for d in runs}
    for a in runs:
        for b in runs:
            if a < b and spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]:
                assert runs[a]["host"]["pinning"]["cores"] != runs[b]["host"]["pinning"]["cores"], (a, b)
    assert runs["k3-s0"]["config"]["policy_params"]["k"] == 3.0 and runs["none-s1"]["config"]["seed"] == 1
    assert leases.holders() == {}  # every lease went with its run


def _interval(folder: Path) -> tuple[str, str]:
    """When the run's manager logged its first and last line (run.log, ms resolution)."""
    lines = (folder / "run.log").read_text().splitlines()
    return lines[0][:23], lines[-1][:23]


def _started(folder: Path) -> bool:
    """The run's workers are running (its manager logged them)."""
    try:
        return "started" in (folder / "run.log").read_text()
    except OSError:
        return False


@pytest.mark.smp
@two_cores
def test_sigterm_stops_every_run_and_keeps_what_finished(tmp_path: Path) -> None:
    out = tmp_path / "c"
    proc = subprocess.Popen([sys.executable, "-m", "stress", "compare", "--cpus", "1", "--duration", "60",
                             "--nmbclusters", "512", "--repeat", "1", "--variant", "a:policy=none",
                             "--variant", "b:policy=median", "--jobs", "2", "--out", str(out), "-q"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not all(_started(out / f"{v}-s0") for v in "ab"):  # both runs are running
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr and proc.stderr.read()
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)  # to compare alone: it passes the stop on
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    doc = json.loads((out / "compare.json").read_text())
    assert doc["state"] == "partial" and doc["stop"] == {"reason": "SIGTERM", "exit_code": 143}
    assert sorted(doc["history"][0]["interrupted_runs"]) == ["a-s0.interrupted", "b-s0.interrupted"]
    for name, rdoc in _run_docs(out).items():
        assert name.endswith(".interrupted") and rdoc["exit_code"] == 143, name
        for w in rdoc["workers"]:
            with pytest.raises(ProcessLookupError):
                os.kill(w["pid"], 0)
    assert leases.holders() == {}


@two_cores
def test_runs_that_cannot_get_cores_in_time_are_lost_and_the_result_is_partial(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Cores held by another run (here: this process) past --lease-wait: no run starts,
    each is recorded as lost, the command ends partial with exit 3 and one line."""
    held = leases.try_acquire(NCORES)
    assert held is not None
    out, hunt = tmp_path / "c", tmp_path / "h"
    try:
        code = compare.main(parse(["--cpus", "1", "--duration", "1", "--repeat", "1", "--variant", "a:policy=none",
                                   "--jobs", "2", "--lease-wait", "0", "--out", str(out), "-q"]))
        assert code == 3
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("zonelimit: compare: run a seed 0 lost (not started: "
                                                   "gave up after 0 s (--lease-wait 0) waiting for 1 free core")
        assert f"leased by pid {os.getpid()}" in err[0] and f"--resume {out}" in err[0]
        assert cli.main(["race", "--inject", "refcount-eq0", "--cpus", "1", "--seeds", "1..2", "--jobs", "2",
                         "--lease-wait", "0", "--out", str(hunt), "--quiet"]) == 3
        assert "zonelimit: race: seed 1 lost" in capsys.readouterr().err
        # without --jobs the runs are made in this process, and lease their cores all the same
        one = tmp_path / "one"
        assert compare.main(parse(["--cpus", "1", "--duration", "1", "--repeat", "1", "--variant", "a:policy=none",
                                   "--lease-wait", "0", "--out", str(one), "-q"])) == 3
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("zonelimit: compare: run a seed 0 lost (not started: "
                                                   "gave up after 0 s (--lease-wait 0) waiting for 1 free core")
    finally:
        held.release()
    assert json.loads((one / "compare.json").read_text())["stop"] == {"reason": "lost", "exit_code": 3}
    doc = json.loads((out / "compare.json").read_text())
    assert doc["state"] == "partial" and doc["stop"] == {"reason": "lost", "exit_code": 3}
    (lost,) = doc["history"][-1]["lost_runs"]
    assert (lost["variant"], lost["seed"], lost["folder"], lost["attempts"]) == ("a", 0, None, [])
    assert [p.name for p in out.iterdir() if p.is_dir()] == [] and doc["variants"][0]["runs"] == []
    rdoc = json.loads((hunt / "race.json").read_text())
    # the seed that waited is lost; no other was drawn (a budget hunt's seeds are open-ended)
    assert rdoc["state"] == "partial" and [x["seed"] for x in rdoc["lost"]] == [1] and rdoc["seeds"] == []
    assert "1 seed lost" in rdoc["summary"]


class FakeChild:
    """Stands in for a ChildRun: no process; seeds 0 and 1 end at once, the others when signalled."""

    started: list[FakeChild] = []

    def __init__(self, req: RunRequest, lease: leases.Lease) -> None:
        self.req, self.lease, self.signalled, self.ended = req, lease, 0, req.key < 2
        FakeChild.started.append(self)

    @staticmethod
    def start(req: RunRequest, lease: leases.Lease, oversubscribe: bool = False) -> FakeChild:
        return FakeChild(req, lease)

    def done(self) -> bool:
        return self.ended or bool(self.signalled)

    def signal(self, signum: int) -> None:
        self.signalled = signum

    def result(self) -> dict[str, Any]:
        self.lease.release()
        if self.signalled:
            return {"verdict": "interrupted", "exit_code": 128 + self.signalled, "duration_s": 0.1}
        return {"verdict": "ok", "exit_code": 0, "duration_s": 1.0}

    def kill(self) -> None:
        self.lease.release()


@two_cores
def test_jobs_draw_requests_as_runs_start_and_none_after_the_deadline(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A --budget hunt's seeds are open-ended: the executor draws one request per free
    slot, and at the deadline stops the running ones and draws no more."""
    from stress.engine import jobs

    monkeypatch.setattr(jobs, "ChildRun", FakeChild)
    naps: list[float] = []
    monkeypatch.setattr(jobs, "time", SimpleNamespace(sleep=naps.append, monotonic=time.monotonic))
    FakeChild.started = []
    drawn: list[int] = []

    def endless() -> Iterator[RunRequest]:
        seed = 0
        while True:
            drawn.append(seed)
            cfg = race.hunt_config(("refcount-eq0",), seed, "pct", cpus=1)
            yield RunRequest(seed, cfg, tmp_path / f"seed-{seed}", f"seed {seed}")
            seed += 1

    ex = jobs.JobsExecutor(2)
    spent = lambda: len(FakeChild.started) >= 4  # noqa: E731 - the budget runs out while seeds 2 and 3 run
    seen = [(req.key, doc["verdict"]) for req, doc in ex.run(endless(), should_stop=spent)]
    assert [c.req.key for c in FakeChild.started] == [0, 1, 2, 3] and drawn == [0, 1, 2, 3]
    assert seen[:2] == [(0, "ok"), (1, "ok")] and sorted(seen[2:]) == [(2, "interrupted"), (3, "interrupted")]
    assert all(c.signalled for c in FakeChild.started[2:]) and leases.holders() == {} and naps


def test_seeds_cut_by_the_budget_are_recorded_and_never_findings(tmp_path: Path) -> None:
    def doc(req: RunRequest) -> dict[str, Any]:
        return {"verdict": "ok", "exit_code": 0, "duration_s": 1.0}

    class SpentBudget(FakeExecutor):
        """Seeds 1 and 2 end; then the deadline passes and the rest are stopped."""

        def run(self, requests: Iterable[RunRequest], on_start: Callable[[RunRequest], None] | None = None,
                should_stop: Callable[[], bool] | None = None) -> Iterator[tuple[RunRequest, dict[str, Any]]]:
            for i, req in enumerate(requests):
                if on_start is not None:
                    on_start(req)
                if i >= 2 and should_stop is not None and should_stop():
                    yield req, {"verdict": "interrupted", "exit_code": 143, "duration_s": 0.5}
                    return
                yield req, self.doc(req)

    cfgs = (race.hunt_config(("refcount-eq0",), s, "pct") for s in range(1, 100))
    res = race.run_hunt(cfgs, tmp_path, executor=SpentBudget(doc), deadline=time.monotonic() + 3600)
    assert [r.cut_by for r in res] == [None] * len(res)  # the deadline not reached: nothing cut
    cfgs = (race.hunt_config(("refcount-eq0",), s, "pct") for s in range(1, 100))
    res = race.run_hunt(cfgs, tmp_path / "b", executor=SpentBudget(doc), deadline=time.monotonic() - 1)
    assert [(r.seed, r.verdict, r.cut_by, r.found) for r in res] == [
        (1, "ok", None, False), (2, "ok", None, False), (3, "interrupted", "budget", False)]
    assert res[-1].to_dict()["cut_by"] == "budget"
    assert res[-1].line() == "seed 3: interrupted (no verdict), cut by the budget"
    line = race.summary_line(res, ("refcount-eq0",), "pct", budget=10.0)
    assert line == ("found in 0 of 2 seeds (inject refcount-eq0, sched pct); the budget of 10 s is spent; "
                    "1 seed running at its end cut (no verdict)")


@pytest.mark.smp
@two_cores
def test_a_budget_hunt_on_two_cores_ends_at_its_deadline(tmp_path: Path) -> None:
    """race --budget with --jobs: seeds run two at a time until the budget is spent; the
    seeds running then are stopped and recorded as cut (never findings), and a seed
    stopped before its run began leaves nothing.  Which seeds finish depends on the
    machine's load, so only what holds for any of them is asserted."""
    out = tmp_path / "h"
    p = subprocess.run([sys.executable, "-m", "stress", "race", "--inject", "refcount-eq0", "--cpus", "1",
                        "--sched", "pct", "--steps", "3000", "--jobs", "2", "--budget", "2s", "--out", str(out),
                        "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode in (0, 1), p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    doc = json.loads((out / "race.json").read_text())
    assert doc["budget_s"] == 2.0 and doc["lost"] == [] and doc["state"] == "complete"
    for seed in doc["seeds"]:
        assert (seed["verdict"] == "interrupted") == (seed.get("cut_by") is not None), seed
        assert not (seed.get("cut_by") and seed["expected_class"]), seed
        assert (out / f"seed-{seed['seed']}" / "run.json").is_file()
    recorded = {f"seed-{s['seed']}" for s in doc["seeds"]}
    assert {d.name for d in out.iterdir() if d.is_dir()} <= recorded  # nothing else left behind
    assert doc["found"] == sum(1 for s in doc["seeds"] if s["exit_code"] == 1 and s["expected_class"])
    assert leases.holders() == {}
