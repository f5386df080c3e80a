"""Scripted stops and stalls: signals at random moments to every command, stopped and
killed workers, a worker stopped while it holds a zone lock.

Why a script and not only tests: a stop is a result only if it is one *whatever* the
moment, so each scenario is tried many times with the moment drawn at random (seeded:
the same ``--seed`` draws the same moments), and the outcomes are counted.  The tests
(tests/test_stops.py) pin one moment of each; this measures the rest::

    python benchmarks/stop_trials.py --trials 20            # every scenario, 20 trials each
    python benchmarks/stop_trials.py --only run-sigint,worker-sigstop --trials 5

A trial is *clean* when: the exit code is the one the scenario must give (130 SIGINT,
143 SIGTERM, 3 stalled or a dead worker); stderr holds no traceback; the run folder is
either absent (stopped before anything started) or holds a run.json whose exit code is
the process's and whose verdict says what happened (``interrupted``, ``stalled``, ...),
and whose audit never blames the allocator for a stopped or killed worker (no LOST,
CORRUPT or DOUBLE FREE: what a killed CPU held is "in its hands"); a hunt's race.json
says it was interrupted; a bench records nothing; and nothing is left behind (no
process of the trial, no new /dev/shm entry).  The table prints, per scenario, the
trials, the clean ones, the outcomes seen, and the slowest stop (seconds from the
signal until every worker was gone, from run.json ``stop.workers_gone_s``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


@dataclass
class Trial:
    """One trial's outcome."""

    outcome: str  #: e.g. "130 interrupted"
    clean: bool
    why: str = ""
    gone_s: float | None = None


@dataclass
class Tally:
    trials: int = 0
    clean: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    gone_max: float = 0.0


# --- processes ---------------------------------------------------------------------------


def shm() -> set[str]:
    try:
        return set(os.listdir("/dev/shm"))
    except OSError:
        return set()


def tagged(token: str) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                env = Path(f"/proc/{entry}/environ").read_bytes()
            except OSError:
                continue
            if f"ZL_TRIAL_TOKEN={token}".encode() in env:
                out.append(int(entry))
    return out


def children(pid: int) -> list[int]:
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


def start(args: list[str], token: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, ZL_TRIAL_TOKEN=token, MPLBACKEND="Agg")
    return subprocess.Popen([PY, "-m", "stress", *args], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def deliver(proc: subprocess.Popen[bytes], sig: int, group: bool) -> bool:
    """Send ``sig`` to the process (or its group); False if it had already exited."""
    if proc.poll() is not None:
        return False
    try:
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
    except ProcessLookupError:
        return False
    return True


def wait_workers(proc: subprocess.Popen[bytes], n: int, timeout: float = 30) -> list[int]:
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        kids = children(proc.pid)
        if len(kids) >= n:
            return kids
        time.sleep(0.02)
    return []


def finish(proc: subprocess.Popen[bytes], token: str, before: set[str], timeout: float = 120) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return -999, "", "the command did not exit within the time limit"
    end = time.monotonic() + 10
    while tagged(token) and time.monotonic() < end:
        time.sleep(0.05)
    left = tagged(token)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    problems = ""
    if left:
        problems += f"processes left behind: {left}; "
    new = shm() - before
    if new:  # other processes on the machine make short-lived ones: only what stays counts
        time.sleep(1.0)
        new &= shm()
    if new:
        problems += f"/dev/shm left behind: {sorted(new)}; "
    return proc.returncode, err.decode(errors="replace"), problems


# --- checks ------------------------------------------------------------------------------

FAILURES = ("leak", "double-free", "corrupt", "lock-order")


def check_run(folder: Path, rc: int, expect: str | None) -> tuple[str, str, float | None]:
    """(verdict, problem, workers_gone_s) of a run folder after a stop."""
    run_json = folder / "run.json"
    if not folder.exists():
        return "no folder", "", None
    if not run_json.exists():
        return "no run.json", f"{folder.name}: a folder without run.json", None
    doc = json.loads(run_json.read_text())
    problem = ""
    if doc.get("exit_code") != rc:
        problem += f"run.json exit {doc.get('exit_code')} != process {rc}; "
    verdict = str(doc.get("verdict"))
    if expect and verdict != expect:
        problem += f"verdict {verdict}, expected {expect}; "
    if doc.get("audit_verdict") in FAILURES and verdict in ("interrupted", "stalled", "error"):
        problem += f"the audit blames the allocator: {doc.get('audit_verdict')}; "
    gone = (doc.get("stop") or {}).get("workers_gone_s")
    return verdict, problem, gone


# --- scenarios ---------------------------------------------------------------------------

Scenario = Callable[[random.Random, Path], Trial]


def signal_run(args: list[str], sig: int, group: bool, lo: float, hi: float) -> Scenario:
    """A run of ``args`` signalled after a random delay in [lo, hi) s from its start."""
    code = 128 + sig

    def trial(rng: random.Random, tmp: Path) -> Trial:
        out = tmp / "run"
        token = uuid.uuid4().hex
        before = shm()
        proc = start([*args, "--quiet", "--out", str(out)], token)
        time.sleep(rng.uniform(lo, hi))
        sent = deliver(proc, sig, group)
        rc, err, left = finish(proc, token, before)
        if not sent:
            return Trial(f"{rc} missed (already done)", rc in (0, 1) and not left, left)
        verdict, problem, gone = check_run(out, rc, None)
        if rc != code:
            problem += f"exit {rc}, expected {code}; "
        if verdict not in ("interrupted", "no folder"):
            problem += f"verdict {verdict}; "
        if "Traceback" in err:
            problem += "a traceback on stderr; "
        return Trial(f"{rc} {verdict}", not (problem or left), problem + left, gone)
    return trial


def signal_command(argv: Callable[[Path], list[str]], sig: int, group: bool, lo: float, hi: float,
                   check: Callable[[Path, int], str] | None = None) -> Scenario:
    """Another command signalled at a random moment: the exit code, no traceback, ``check``."""
    code = 128 + sig

    def trial(rng: random.Random, tmp: Path) -> Trial:
        token = uuid.uuid4().hex
        before = shm()
        proc = start(argv(tmp), token)
        time.sleep(rng.uniform(lo, hi))
        sent = deliver(proc, sig, group)
        rc, err, left = finish(proc, token, before)
        if not sent:
            return Trial(f"{rc} missed (already done)", rc in (0, 1) and not left, left)
        problem = "" if rc == code else f"exit {rc}, expected {code}; "
        if "Traceback" in err:
            problem += "a traceback on stderr; "
        if check is not None:
            problem += check(tmp, rc)
        return Trial(str(rc), not (problem or left), problem + left)
    return trial


def race_check(tmp: Path, rc: int) -> str:
    doc_path = tmp / "hunt" / "race.json"
    if not doc_path.exists():
        return "" if not (tmp / "hunt").exists() or not any((tmp / "hunt").iterdir()) else "no race.json; "
    doc = json.loads(doc_path.read_text())
    problem = "" if doc.get("interrupted") else "race.json does not say interrupted; "
    for seed in doc.get("seeds", []):
        if seed.get("verdict") == "corrupt":
            problem += "a cut seed counted as corrupt; "
    return problem


def bench_check(tmp: Path, rc: int) -> str:
    out = tmp / "bench"
    files = list(out.glob("*.json")) if out.exists() else []
    return f"a bench file was written: {files}; " if files else ""


def worker_stop(kind: str) -> Scenario:
    """A worker stopped (SIGSTOP) or killed (SIGKILL) mid-run."""

    def trial(rng: random.Random, tmp: Path) -> Trial:
        out = tmp / "run"
        token = uuid.uuid4().hex
        before = shm()
        proc = start(["--cpus", "2", "--duration", "30", "--wedge-timeout", "1", "--quiet", "--out", str(out)], token)
        workers = wait_workers(proc, 2)
        if not workers:
            finish(proc, token, before)
            return Trial("no workers", False, "the workers never started")
        time.sleep(rng.uniform(0.2, 1.5))
        victim = rng.choice(workers)
        os.kill(victim, signal.SIGSTOP if kind == "sigstop" else signal.SIGKILL)
        rc, err, left = finish(proc, token, before)
        expect = "stalled" if kind == "sigstop" else "error"
        verdict, problem, _ = check_run(out, rc, expect)
        if rc != 3:
            problem += f"exit {rc}, expected 3; "
        if kind == "sigstop" and verdict == "stalled":
            doc = json.loads((out / "run.json").read_text())
            if not (out / "stacks.txt").exists():
                problem += "no stacks.txt; "
            states = [p.get("state") for p in (doc.get("stall") or {}).get("processes", [])]
            if "T" not in states:
                problem += f"the stopped CPU's state not named ({states}); "
        return Trial(f"{rc} {verdict}", not (problem or left), problem + left)
    return trial


def arena_path(pid: int) -> str | None:
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if "zonelimit-arena" in os.readlink(f"/proc/{pid}/fd/{fd}"):
                return f"/proc/{pid}/fd/{fd}"
        except OSError:
            continue
    return None


def stop_lock_holder(then_signal: bool) -> Scenario:
    """A worker SIGSTOPped while it holds a zone lock; the manager's callout must not
    block forever: the run ends stalled naming the holder, or, signalled meanwhile,
    interrupted at once (the wedge timeout is then far longer than the trial)."""

    def trial(rng: random.Random, tmp: Path) -> Trial:
        from allocator import Uma

        out = tmp / "run"
        token = uuid.uuid4().hex
        before = shm()
        timeout = "60" if then_signal else "1"
        proc = start(["--cpus", "2", "--duration", "60", "--workload", "xmalloc", "--nmbclusters", "2048",
                      "--trim-interval", "0.1", "--wedge-timeout", timeout, "--quiet", "--out", str(out)], token)
        workers = wait_workers(proc, 2)
        path = arena_path(proc.pid) if workers else None
        if path is None:
            finish(proc, token, before)
            return Trial("no arena", False, "the run never started")
        uma = Uma.attach(path)
        owner = uma.view("lock_owner")
        held = None
        try:
            for _ in range(20000):
                victim = rng.choice(workers)
                k = workers.index(victim)
                try:
                    os.kill(victim, signal.SIGSTOP)
                    time.sleep(0.0005)
                    if any(owner[i] == k + 1 for i in range(len(owner))):
                        held = [i for i in range(len(owner)) if owner[i] == k + 1]
                        break
                    os.kill(victim, signal.SIGCONT)
                except ProcessLookupError:  # the run ended meanwhile
                    break
            del owner
        finally:
            uma.close()
        if held is None:
            deliver(proc, signal.SIGINT, False)
            finish(proc, token, before)
            return Trial("never caught holding a lock", False, "no lock holder caught")
        if then_signal:
            time.sleep(rng.uniform(0.3, 2.0))
            deliver(proc, signal.SIGINT, False)
        rc, err, left = finish(proc, token, before, timeout=50)
        expect = "interrupted" if then_signal else "stalled"
        verdict, problem, gone = check_run(out, rc, expect)
        if rc != (130 if then_signal else 3):
            problem += f"exit {rc}; "
        if verdict in ("stalled", "interrupted"):
            doc = json.loads((out / "run.json").read_text())
            if then_signal and doc.get("stall"):
                problem += "the manager waited for the lock instead of stopping; "
        return Trial(f"{rc} {verdict}", not (problem or left), problem + left, gone)
    return trial


def make_pct_folder(tmp: Path) -> Path:
    folder = tmp / "pct"
    if not (folder / "run.json").exists():
        subprocess.run([PY, "-m", "stress", "--cpus", "2", "--sched", "pct", "--steps", "60000", "--quiet",
                        "--out", str(folder)], cwd=ROOT, capture_output=True, timeout=300)
    return folder


#: Signals start this long after the launch.  Before it the Python interpreter itself is
#: starting (site, the .pth files of the environment: about 50-100 ms here), no line of
#: zonelimit has run and no handler of ours can exist: there SIGINT gets Python's own
#: "Fatal Python error: init_import_site" (exit 1) or KeyboardInterrupt traceback, and
#: SIGTERM its default action.  ``interpreter-start`` measures that window on its own.
START = 0.15


def scenarios(shared: Path) -> dict[str, Scenario]:
    run = ["--cpus", "2", "--duration", "3", "--interval", "0.5"]
    pct = ["--cpus", "2", "--sched", "pct", "--steps", "90000"]
    return {
        "run-sigint": signal_run(run, signal.SIGINT, False, START, 4.5),
        "run-sigterm": signal_run(run, signal.SIGTERM, False, START, 4.5),
        "run-sigterm-group": signal_run(run, signal.SIGTERM, True, START, 4.5),
        "run-sigint-group": signal_run(run, signal.SIGINT, True, START, 4.5),
        "pct-sigterm-group": signal_run(pct, signal.SIGTERM, True, START, 4.0),
        "replay-sigint": signal_command(lambda t: ["replay", str(make_pct_folder(shared)), "--quiet", "--out",
                                                   str(t / "replay")], signal.SIGINT, False, START, 4.0),
        "race-sigint": signal_command(lambda t: ["race", "--inject", "wake-one", "--seeds", "1..3", "--steps",
                                                 "40000", "--quiet", "--out", str(t / "hunt")],
                                      signal.SIGINT, True, 0.2, 6.0, race_check),
        "bench-sigterm": signal_command(lambda t: ["bench", "--quick", "--only", "P1,P6", "--out",
                                                   str(t / "bench")], signal.SIGTERM, True, 0.2, 5.0, bench_check),
        "compare-sigint": signal_command(lambda t: ["compare", "--cpus", "2", "--duration", "1", "--repeat", "1",
                                                    "--configs", "2005,modern", "--quiet", "--out",
                                                    str(t / "cmp")], signal.SIGINT, True, 0.2, 3.0),
        "report-sigint": signal_command(lambda t: ["report", str(make_pct_folder(shared))], signal.SIGINT, False,
                                        START, 0.8),
        "worker-sigstop": worker_stop("sigstop"),
        "worker-sigkill": worker_stop("sigkill"),
        "lock-holder-sigstop": stop_lock_holder(False),
        "lock-holder-sigstop-then-sigint": stop_lock_holder(True),
    }


#: measured only when asked for (--only): the interpreter's own start-up, before zonelimit
EXTRA = {"interpreter-start-sigint": lambda: signal_command(lambda t: ["report", "/nonexistent"],
                                                            signal.SIGINT, False, 0.0, START)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", default="")
    ap.add_argument("--json", default="", help="also write the tallies here")
    ap.add_argument("--keep", action="store_true", help="keep the folders of trials that were not clean")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    shared = Path(tempfile.mkdtemp(prefix="zl-trials-"))
    try:
        all_scenarios = scenarios(shared)
        all_scenarios.update({name: make() for name, make in EXTRA.items()})
        names = [n for n in args.only.split(",") if n] or [n for n in all_scenarios if n not in EXTRA]
        tallies: dict[str, Tally] = {}
        for name in names:
            t = tallies[name] = Tally()
            for i in range(args.trials):
                tmp = Path(tempfile.mkdtemp(prefix=f"zl-{name}-"))
                r = all_scenarios[name](rng, tmp)
                if r.clean or not args.keep:
                    shutil.rmtree(tmp, ignore_errors=True)
                else:
                    r.why += f" (kept: {tmp})"
                t.trials += 1
                t.clean += r.clean
                t.outcomes[r.outcome] += 1
                if r.gone_s is not None:
                    t.gone_max = max(t.gone_max, r.gone_s)
                if not r.clean:
                    t.problems.append(f"trial {i}: {r.outcome}: {r.why}")
                print(f"{name} {i}: {r.outcome}{'' if r.clean else '  NOT CLEAN: ' + r.why}", flush=True)
    finally:
        shutil.rmtree(shared, ignore_errors=True)
    print()
    print(f"{'scenario':34} {'trials':>6} {'clean':>6}  {'slowest stop':>12}  outcomes")
    for name, t in tallies.items():
        outs = ", ".join(f"{k} x{v}" for k, v in t.outcomes.most_common())
        print(f"{name:34} {t.trials:6} {t.clean:6}  {t.gone_max:11.2f}s  {outs}")
    if args.json:
        Path(args.json).write_text(json.dumps({n: {"trials": t.trials, "clean": t.clean,
                                                   "outcomes": dict(t.outcomes), "problems": t.problems,
                                                   "slowest_stop_s": t.gone_max}
                                               for n, t in tallies.items()}, indent=1))
    return 0 if all(t.clean == t.trials for t in tallies.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
