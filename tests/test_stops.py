"""Every stop is a result: signals to every command, stalled and killed workers, and a
manager that never blocks forever (issue 11, items 1-4; docs/runner.md "Stops").

Each test pins one moment; benchmarks/stop_trials.py draws them at random over many
trials.  The subprocess tests run ``python -m stress`` as a user would, in a session of
its own (so a signal can go to the whole group), and assert outcomes only -- exit
codes, verdicts, documents -- never how long a stop took.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from allocator import Uma
from stress import audit as audit_mod
from stress import cli
from stress.engine import stopping
from stress.engine.runner import mark_interrupted
from stress.engine.watchdog import Stall, Watchdog, Wedge

ROOT = Path(__file__).resolve().parent.parent


# --- the mechanism, in one process -------------------------------------------------------


def test_a_signal_is_recorded_hooks_run_and_check_raises() -> None:
    calls: list[str] = []
    with stopping.StopSignals() as stop:
        with stop.on_stop(lambda: calls.append("hook")):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs between bytecodes
                if stop.requested:
                    break
        assert (stop.name, stop.exit_code, calls) == ("SIGTERM", 143, ["hook"])
        os.kill(os.getpid(), signal.SIGINT)  # the first signal wins
        assert stop.name == "SIGTERM"
        with pytest.raises(stopping.Stopped) as info:
            stop.check()
        assert isinstance(info.value, KeyboardInterrupt) and info.value.exit_code == 143


def test_raising_cuts_at_once_and_freeze_ignores_later_signals() -> None:
    with stopping.StopSignals() as stop:
        with pytest.raises(stopping.Stopped):
            with stop.raising():
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(10**6):
                    pass
        assert stop.freeze() == "SIGINT"
    with stopping.StopSignals() as stop:
        assert stop.freeze() is None
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            pass
        assert (stop.requested, stop.late) == (False, "SIGTERM")


def test_a_signal_during_start_up_starts_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What ``python -m stress`` hands over from its first line: the command stops before
    it makes anything, with one line and the signal's code."""
    stopping.early_signals(["SIGTERM"])
    try:
        code = cli.main(["run", "--cpus", "1", "--out", str(tmp_path / "run")])
    finally:
        stopping.early_signals([])
    assert code == 143
    assert not (tmp_path / "run").exists()
    err = capsys.readouterr().err
    assert "stopped by SIGTERM during start-up" in err and "Traceback" not in err


def test_mark_interrupted_keeps_what_the_run_found() -> None:
    doc = {"verdict": "ok", "exit_code": 0, "verdict_detail": "every item accounted for",
           "stop": {"reason": "completed"}}
    out = mark_interrupted(doc, "SIGTERM", "while the results were written")
    assert (out["verdict"], out["exit_code"], out["audit_verdict"]) == ("interrupted", 143, "ok")
    assert out["stop"]["reason"] == "interrupted" and out["stop"]["during"] == "while the results were written"
    assert mark_interrupted(out, "SIGINT", "later") is out


def test_verdicts_of_the_tester_keep_the_audit_beside() -> None:
    from tests.test_manager import FakeReport

    leak = FakeReport(lost_clusters=7)
    a = audit_mod.assess(leak, signal="SIGINT", interrupted="interrupted at 2.4 s of 20 s by SIGINT")
    assert (a.verdict, a.exit_code, a.reason, a.audit_verdict) == (
        "interrupted", 130, "interrupted at 2.4 s of 20 s by SIGINT", "leak")
    assert audit_mod.assess(FakeReport(), signal="SIGTERM").exit_code == 143
    s = audit_mod.assess(leak, wedged=True, stalled="CPU 1 neither made progress nor slept")
    assert (s.verdict, s.exit_code, s.audit_verdict) == ("stalled", 3, "wedged")
    e = audit_mod.assess(FakeReport(), error="worker died", stalled="CPU 1 ...")
    assert (e.verdict, e.audit_verdict) == ("error", "ok")
    assert audit_mod.assess(FakeReport()).audit_verdict is None


def test_what_a_killed_cpu_held_is_set_aside_up_to_the_bound() -> None:
    from allocator.audit import AuditReport

    r = AuditReport(mbufs=1000, clusters=500, lost_mbufs=3, lost_clusters=300, double_owned=1, counter_drift=3,
                    lost_mbuf_ids=[1, 2, 3], lost_cluster_ids=[9])
    assert r.items_accounted == 1500 - 303
    r.set_aside([1], audit_mod.KILLED_HAND)
    hands = r.in_killed_hands
    assert (hands["cpus"], hands["mbufs"], hands["clusters"], hands["double_owned"]) == ([1], 3, 132, 1)
    assert (r.lost_mbufs, r.lost_clusters, r.double_owned, r.counter_drift) == (0, 168, 0, 0)
    assert r.lost_mbuf_ids == [] and not r.ok  # beyond the bound it stays lost
    assert any("in the hands of killed CPU 1" in line for line in r.summary_lines())
    block = audit_mod.audit_block(r, 0, [])
    assert block["in_killed_hands"]["clusters"] == 132 and block["lost"]["cluster"] == 168


class BeatingUma:
    def __init__(self) -> None:
        self.ops = [0, 0]
        self.asleep: list[Any] = []

    def sleepers(self) -> list[Any]:
        return self.asleep

    def cpu_ops(self) -> list[int]:
        return self.ops

    def keg_free(self, keg: int) -> int:
        return 0


@pytest.mark.smp  # a sleeper's since_ns is real time
def test_watchdog_finds_a_cpu_that_stopped_beating() -> None:
    uma = BeatingUma()
    beats = [0, 0]
    dog = Watchdog(uma, timeout=2.0, t0=100.0, beats=beats)
    assert dog.check(100.0) is None
    beats[0] = 5
    assert dog.check(101.5) is None
    beats[0] = 9  # CPU 0 beats on, CPU 1 has stood still since 100.0
    alarm = dog.check(102.5)
    assert isinstance(alarm, Stall) and alarm.cpus == [1] and "CPU 1 neither made progress" in alarm.how
    from tests.test_manager import FakeSleeper

    uma.asleep = [FakeSleeper(1, time.monotonic_ns())]
    gone = Watchdog(uma, timeout=2.0, t0=100.0, beats=[0, 0], alive=lambda k: k != 0)
    gone.check(100.0)
    # CPU 0 has left its loop and CPU 1 sleeps on a known wait channel: no stall, but a
    # wedge (no progress while a CPU sleeps in zonelimit)
    assert isinstance(gone.check(103.0), Wedge)


# --- whole runs --------------------------------------------------------------------------


def _start(args: list[str], **kw: Any) -> subprocess.Popen[str]:
    env = dict(os.environ, MPLBACKEND="Agg")
    return subprocess.Popen([sys.executable, "-m", "stress", *args], cwd=ROOT, env=env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, **kw)


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(b")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return sorted(out)


def _workers(proc: subprocess.Popen[str], n: int) -> list[int]:
    """The workers, once they run (the run's folder has a samples.csv by then)."""
    for _ in range(600):
        kids = _children(proc.pid)
        if len(kids) >= n:
            time.sleep(0.3)  # into the allocator
            return _children(proc.pid)
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    pytest.fail("the workers never started")


def _finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"the command did not end within {timeout} s")
    return proc.returncode, out, err


def _doc(folder: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((folder / "run.json").read_text())
    return doc


@pytest.mark.smp
@pytest.mark.parametrize(("sig", "group", "code"), [(signal.SIGINT, False, 130), (signal.SIGTERM, True, 143)])
def test_a_signal_mid_run_is_an_interrupted_run_with_its_audit(tmp_path: Path, sig: int, group: bool,
                                                               code: int) -> None:
    out = tmp_path / "run"
    proc = _start(["--cpus", "2", "--duration", "60", "--out", str(out)])
    _workers(proc, 2)
    os.killpg(proc.pid, sig) if group else proc.send_signal(sig)
    rc, stdout, stderr = _finish(proc)
    assert rc == code, stderr
    doc = _doc(out)
    name = signal.Signals(sig).name
    assert (doc["verdict"], doc["exit_code"], doc["stop"]["reason"], doc["stop"]["signal"]) == (
        "interrupted", code, "interrupted", name)
    detail = doc["verdict_detail"]
    assert detail.startswith("interrupted at ") and detail.endswith(f" s of 60 s by {name}")
    assert doc["audit_verdict"] == "ok" and doc["audit"]["lost"] == {"mbuf": 0, "cluster": 0}
    assert doc["stop"]["killed_stuck"] == [] and doc["stop"]["workers_gone_s"] is not None
    assert f"verdict: {doc['verdict_detail']} (exit {code})" in stdout
    assert "the audit of the partial run: ok" in stdout and "Traceback" not in stderr
    assert not (out / "plot.png").exists()  # skipped after a signal


@pytest.mark.smp
def test_a_signal_while_the_results_are_written_is_in_run_json(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from stress import documents
    from stress.config import RunConfig
    from stress.engine import runner

    real = documents.run_document

    def signalled(cfg: RunConfig, outcome: Any, start: Any = None) -> dict[str, Any]:
        os.kill(os.getpid(), signal.SIGTERM)  # the run is over: its workers are reaped
        return real(cfg, outcome, start)

    monkeypatch.setattr(documents, "run_document", signalled)
    doc = runner.execute(RunConfig(cpus=1, duration=0.5, verbosity=-1), tmp_path / "run")
    on_disk = _doc(tmp_path / "run")
    assert on_disk == json.loads(documents.run_json_text(doc))
    assert (doc["verdict"], doc["exit_code"], doc["audit_verdict"]) == ("interrupted", 143, "ok")
    assert doc["stop"] == {**doc["stop"], "reason": "interrupted", "during": "while the results were written"}


@pytest.mark.smp
def test_a_stopped_worker_is_stalled_never_an_allocator_failure(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _start(["--cpus", "2", "--duration", "60", "--wedge-timeout", "1", "--out", str(out), "--quiet"])
    other, victim = _workers(proc, 2)[:2]
    os.kill(victim, signal.SIGSTOP)
    rc, stdout, stderr = _finish(proc)
    assert rc == 3, stdout + stderr
    doc = _doc(out)
    assert doc["verdict"] == "stalled" and doc["stop"]["reason"] == "stalled"
    stalled = {p["pid"]: p for p in doc["stall"]["processes"]}
    assert stalled[victim]["state"] == "T" and 1 in doc["stall"]["cpus"]
    assert doc["audit_verdict"] not in ("leak", "corrupt", "double-free"), doc["audit"]
    # the post-mortem of a wedge: every CPU's and the manager's stack (the stalled CPU's
    # first), taken before anything was killed, and the arena kept for report --audit
    stacks = (out / "stacks.txt").read_text()
    mine = f"CPU 1 (pid {victim}): T (stopped (by a signal))"
    assert mine in stacks and f"CPU 0 (pid {other}): " in stacks and f"the manager (pid {proc.pid}): " in stacks
    assert stacks.index(mine) < stacks.index(f"CPU 0 (pid {other}): ")
    assert (out / "arena.npz").is_file()
    assert "STALLED" in stdout


@pytest.mark.smp
def test_a_killed_worker_is_an_error_and_what_it_held_is_not_lost(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _start(["--cpus", "2", "--duration", "60", "--out", str(out), "--quiet"])
    victim = _workers(proc, 2)[0]
    os.kill(victim, signal.SIGKILL)
    rc, stdout, stderr = _finish(proc)
    assert rc == 3, stdout + stderr
    doc = _doc(out)
    assert doc["verdict"] == "error" and "killed by SIGKILL" in doc["error"]
    assert 0 in doc["stop"]["killed_mid_operation"]
    assert doc["audit_verdict"] not in ("leak", "corrupt", "double-free"), doc["audit"]


def _arena(pid: int) -> str:
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if "zonelimit-arena" in os.readlink(f"/proc/{pid}/fd/{fd}"):
                return f"/proc/{pid}/fd/{fd}"
        except OSError:
            continue
    pytest.fail("no arena")


def _stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] == b"T"


def _stop_a_lock_holder(proc: subprocess.Popen[str]) -> tuple[int, int]:
    """SIGSTOP a worker at a moment it holds an allocator lock (seen in the owner words
    through an attached arena, once the worker is really stopped); returns (its CPU, the
    lock)."""
    workers = _workers(proc, 2)
    uma = Uma.attach(_arena(proc.pid))
    try:
        owner = uma.view("lock_owner")
        for i in range(100000):
            k = i % 2
            os.kill(workers[k], signal.SIGSTOP)
            while not _stopped(workers[k]):
                pass
            held = [lock for lock in range(len(owner)) if owner[lock] == k + 1]
            if held:
                del owner
                return k, held[0]
            os.kill(workers[k], signal.SIGCONT)
    finally:
        uma.close()
    pytest.fail("no worker was ever caught holding a lock")


LOCK_RUN = ["--cpus", "2", "--duration", "120", "--workload", "xmalloc", "--nmbclusters", "2048",
            "--trim-interval", "0.1", "--quiet"]


@pytest.mark.smp
def test_a_worker_stopped_holding_a_lock_stalls_the_run_naming_the_holder(tmp_path: Path) -> None:
    """The issue's defect (a): the manager used to block forever in the callout's lock."""
    from allocator import LOCK_NAMES

    out = tmp_path / "run"
    proc = _start([*LOCK_RUN, "--wedge-timeout", "1", "--out", str(out)])
    cpu, lock = _stop_a_lock_holder(proc)
    rc, stdout, stderr = _finish(proc)
    assert rc == 3, stdout + stderr
    doc = _doc(out)
    assert doc["verdict"] == "stalled" and cpu in doc["stall"]["cpus"]
    assert f"{LOCK_NAMES[lock]} by CPU {cpu}" in doc["stall"]["how"]
    assert doc["audit_verdict"] not in ("leak", "corrupt", "double-free"), doc["audit"]


@pytest.mark.smp
def test_a_manager_waiting_for_a_stopped_holders_lock_stops_at_a_signal(tmp_path: Path) -> None:
    """With a wedge timeout far longer than the test, the callout waits on the stopped
    holder's lock; SIGINT must end the run at once (not after the timeout: no stall)."""
    out = tmp_path / "run"
    proc = _start([*LOCK_RUN, "--wedge-timeout", "300", "--out", str(out)])
    _stop_a_lock_holder(proc)
    time.sleep(0.5)  # the callout (every 0.1 s) is now waiting for the lock
    proc.send_signal(signal.SIGINT)
    rc, stdout, stderr = _finish(proc, timeout=100)
    assert rc == 130, stdout + stderr
    doc = _doc(out)
    assert doc["verdict"] == "interrupted" and doc["stall"] is None
    assert doc["audit_verdict"] not in ("leak", "corrupt", "double-free"), doc["audit"]


@pytest.mark.smp
def test_a_hunt_stops_at_ctrl_c_and_says_so(tmp_path: Path) -> None:
    out = tmp_path / "hunt"
    proc = _start(["race", "--inject", "wake-one", "--seeds", "1..40", "--steps", "30000", "--out", str(out)])
    assert proc.stdout is not None
    line = proc.stdout.readline()
    while line and not line.startswith("seed "):
        line = proc.stdout.readline()
    os.killpg(proc.pid, signal.SIGINT)
    rc, stdout, stderr = _finish(proc)
    assert rc == 130, stdout + stderr
    doc = json.loads((out / "race.json").read_text())
    assert doc["interrupted"] == "SIGINT" and 1 <= len(doc["seeds"]) < 40
    # every seed that finished has its verdict; the one the signal cut (if it cut one) says so
    assert all(s["verdict"] in ("ok", "wedged") for s in doc["seeds"][:-1]), doc["seeds"]
    assert doc["seeds"][-1]["verdict"] in ("ok", "wedged", "interrupted"), doc["seeds"]
    assert "interrupted by SIGINT after" in doc["summary"] and "Traceback" not in stderr


@pytest.mark.smp
def test_a_stopped_bench_records_nothing(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    proc = _start(["bench", "--quick", "--only", "P1", "--out", str(out)])
    assert proc.stderr is not None
    line = proc.stderr.readline()
    while line and not line.startswith("bench: P1"):
        line = proc.stderr.readline()
    os.killpg(proc.pid, signal.SIGTERM)
    rc, stdout, stderr = _finish(proc)
    assert rc == 143, stdout + stderr
    assert not list(out.glob("*.json")) if out.exists() else True
    assert "nothing recorded" in stderr and "Traceback" not in stderr


class _SlowAfterFork:
    """An object whose after-fork hook takes a second in every forked child: the
    start-up a worker forked from a large parent paid (multiprocessing's after-fork
    hooks and a collection over the parent's heap, beside a CPU hog)."""

    @staticmethod
    def hook(_: object) -> None:
        time.sleep(1.0)


@pytest.mark.smp
def test_a_slow_worker_start_up_is_not_part_of_the_run(tmp_path: Path) -> None:
    """The run's clock starts when every CPU stands at the start line.  A 0.5 s run whose
    workers spend 1 s setting up used to make no allocator call in its whole length and
    end ``stalled`` (a 1.5 s run late in a pytest session beside the hog did); now it
    runs its 0.5 s and says how long the start-up took."""
    import multiprocessing.util

    from stress.config import RunConfig
    from stress.engine import runner

    slow = _SlowAfterFork()
    multiprocessing.util.register_after_fork(slow, _SlowAfterFork.hook)
    try:
        doc = runner.execute(RunConfig(cpus=2, duration=0.5, interval=0.25, verbosity=-1), tmp_path / "run")
    finally:
        del slow  # the registry holds it weakly: gone, later forks pay nothing
    assert (doc["verdict"], doc["exit_code"]) == ("ok", 0), doc.get("verdict_detail")
    assert doc["stop"]["startup_s"] >= 1.0
    assert doc["ops"]["total"] > 0


@pytest.mark.smp
def test_a_run_that_never_progressed_is_not_ok(tmp_path: Path) -> None:
    """``--nmbclusters 2 --duration 2``: the CPUs sleep in zonelimit within milliseconds and
    never progress again; shorter than the wedge timeout, it used to end ``ok``."""
    p = subprocess.run([sys.executable, "-m", "stress", "--cpus", "2", "--nmbclusters", "2", "--duration", "2",
                        "--quiet", "--out", str(tmp_path / "run")], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    doc = _doc(tmp_path / "run")
    assert (p.returncode, doc["verdict"]) == (1, "wedged"), p.stdout + p.stderr
    assert "judged on half its length" in doc["wedge"]["how"]


@pytest.mark.smp
def test_a_stopped_worker_under_pct_is_a_stall_of_the_steps(tmp_path: Path) -> None:
    """Under the token only the holder runs, so the beats say nothing: the manager
    watches the step count, and a stopped CPU stalls it as soon as it holds the token."""
    out = tmp_path / "run"
    proc = _start(["--cpus", "2", "--sched", "pct", "--steps", str(10**9), "--wedge-timeout", "1",
                   "--out", str(out), "--quiet"])
    victim = _workers(proc, 2)[0]
    os.kill(victim, signal.SIGSTOP)
    rc, stdout, stderr = _finish(proc)
    assert rc == 3, stdout + stderr
    doc = _doc(out)
    assert doc["verdict"] == "stalled" and doc["stall"]["cpus"] == [0]
    assert "CPU 0 held the scheduling token" in doc["stall"]["how"] and "T (stopped" in doc["stall"]["how"]
    assert doc["audit_verdict"] not in ("leak", "corrupt", "double-free"), doc["audit"]
