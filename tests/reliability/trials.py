"""The reliability trials: scripted attacks on every command, with seeded random moments.

Why random moments: a stop is a result only if it is one *whatever* the moment, so each
attack is tried many times, the moment drawn at random from a seeded generator (the same
seed draws the same moments; one trial is reproducible from its row and number), and the
outcomes are counted.  tests/test_stops.py pins one moment of each stop; this module
draws the rest.  Both the suite (tests/reliability/test_reliability.py: a handful of
trials in CI, every row behind the ``reliability`` marker) and the script that makes the
reference table (benchmarks/stop_trials.py, results/reference/reliability/README.md)
run the rows defined here.

A row is one (scenario, command, phase):

- ``signal``: SIGINT or SIGTERM, to the process or to its whole group (drawn per trial),
  during **start-up** (the command's imports and option checks), **mid-run** (while its
  workers run, a bench measures, a report reads) or **writing** (after the work, while
  the results are written), for run, replay, compare, race, bench and report;
- ``worker-sigstop``, ``worker-sigkill``: a worker stopped or killed mid-run (stalled,
  exit 3; error, exit 3, its hands set aside); ``lock-holder-sigstop`` (and then a
  SIGINT): a worker stopped while it holds a zone lock;
- ``manager-sigkill``: the manager SIGKILLed (nothing can run in it): its workers must
  leave by themselves, nothing is left behind, the folder holds no false run.json, and
  the next command that touches the folder says it is an incomplete run (exit 2);
- ``two-runs``: two commands given the same ``--out`` a random moment apart: one runs,
  the other is refused (exit 2, one line); the folder holds one whole result;
- ``corrupt``: replay and report of a run.json, compare.json, race.json or schedule.json
  truncated at a random byte, with a random field of a wrong type, or of a wrong format:
  exit 2, one line naming what is wrong, no traceback, nothing started.

Every trial checks: the exit code the scenario must give; no traceback on stderr; every
document left is whole and passes its schema, and says what happened (the exit code it
records is the process's, an interrupted run says ``interrupted``, a cut hunt says so, a
stopped bench records nothing); and nothing is left behind: no process of the trial, no
new /dev/shm entry, no temporary file or claim marker (except, documented, after a
SIGKILL of the manager: stress/files.py).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable

#: Signals start this long after the launch.  Before it the Python interpreter itself is
#: starting (site, the .pth files of the environment: about 50-100 ms here), no line of
#: zonelimit has run and no handler of ours can exist: there SIGINT gets Python's own
#: "Fatal Python error: init_import_site" (exit 1) or KeyboardInterrupt traceback, and
#: SIGTERM its default action.  The ``interpreter-start`` row measures that window alone.
START = 0.15
#: the start-up window drawn from: the imports of python -m stress take longer than this
STARTUP = (START, START + 0.45)
#: the four ways a signal is sent: (signal, to the whole process group)
SIGNALS = [(signal.SIGINT, False), (signal.SIGINT, True), (signal.SIGTERM, False), (signal.SIGTERM, True)]
FAILURES = ("leak", "double-free", "corrupt", "lock-order")


# --- one trial's outcome, a row's tally ------------------------------------------------------


@dataclass
class Trial:
    """One trial's outcome: what happened (``outcome``, e.g. "SIGTERM group -> 143
    interrupted"), what was wrong with it (``why``) and what it left behind (``left``)."""

    outcome: str
    why: str = ""
    left: str = ""
    gone_s: float | None = None

    @property
    def clean(self) -> bool:
        return not (self.why or self.left)


@dataclass
class Tally:
    """A row's trials counted."""

    trials: int = 0
    clean: int = 0
    leftovers: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    gone_max: float = 0.0

    def add(self, i: int, t: Trial) -> None:
        self.trials += 1
        self.clean += t.clean
        self.leftovers += bool(t.left)
        self.outcomes[t.outcome] += 1
        if t.gone_s is not None:
            self.gone_max = max(self.gone_max, t.gone_s)
        if not t.clean:
            self.problems.append(f"trial {i}: {t.outcome}: {t.why}{t.left}")

    def to_dict(self) -> dict[str, Any]:
        return {"trials": self.trials, "clean": self.clean, "leftovers": self.leftovers,
                "outcomes": dict(self.outcomes), "problems": self.problems, "slowest_stop_s": self.gone_max}


# --- processes ----------------------------------------------------------------------------------


def shm() -> set[str]:
    try:
        return set(os.listdir("/dev/shm"))
    except OSError:
        return set()


def _pids() -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit()]


def tagged(token: str) -> list[int]:
    """The processes whose environment holds this trial's token (the command and every
    process it started, wherever they were reparented)."""
    out = []
    for pid in _pids():
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if f"ZL_TRIAL_TOKEN={token}".encode() in env:
            out.append(pid)
    return out


def children(pid: int) -> list[int]:
    out = []
    for child in _pids():
        try:
            stat = Path(f"/proc/{child}/stat").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(b")", 1)[1].split()[1]) == pid:
            out.append(child)
    return sorted(out)


def _holders(name: str) -> list[int]:
    """The processes that have a /dev/shm entry mapped (a named semaphore is), found by its
    inode: glibc's sem_open maps a temporary name and links it, so the maps show that
    temporary name, deleted, but the entry's inode."""
    try:
        inode = str(os.stat(f"/dev/shm/{name}").st_ino)
    except OSError:
        return []
    out = []
    for pid in _pids():
        try:
            maps = Path(f"/proc/{pid}/maps").read_text(errors="replace")
        except OSError:
            continue
        for line in maps.splitlines():
            parts = line.split(None, 5)
            if len(parts) == 6 and parts[4] == inode and parts[5].startswith("/dev/shm/"):
                out.append(pid)
                break
    return out


def _has_token(pid: int, token: str) -> bool:
    try:
        return f"ZL_TRIAL_TOKEN={token}".encode() in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


class Launch:
    """``python -m stress ARGV`` started as a user would, in a session of its own (so a
    signal can go to its whole group), tagged by a token in its environment, its output
    read as it comes."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        self.token = uuid.uuid4().hex
        self.before = shm()
        self.t0 = time.monotonic()
        env = dict(os.environ, ZL_TRIAL_TOKEN=self.token, MPLBACKEND="Agg",
                   PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
        self.proc = subprocess.Popen([PY, "-m", "stress", *argv], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        self.out: list[str] = []
        self.err: list[str] = []
        self.seen: set[int] = {self.proc.pid}
        #: /dev/shm entries made meanwhile by a process that is not the trial's (the machine
        #: is shared: another engineer's spawn-context pool makes named semaphores)
        self.foreign: set[str] = set()
        self._watching = threading.Event()
        self._watching.set()
        threading.Thread(target=self._watch_shm, daemon=True).start()
        self._readers = [threading.Thread(target=self._read, args=(s, dest), daemon=True)
                         for s, dest in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for r in self._readers:
            r.start()

    def _watch_shm(self) -> None:
        """Every new /dev/shm entry, as soon as it is seen, attributed by who holds it:
        one held by a process without the trial's token is another's.  One never seen
        held stays the trial's (the check stays strict for what might be ours)."""
        mine: set[str] = set()
        while self._watching.is_set():
            for name in shm() - self.before - self.foreign - mine:
                holders = _holders(name)
                if any(not _has_token(pid, self.token) for pid in holders):
                    self.foreign.add(name)
                elif holders:
                    mine.add(name)
            time.sleep(0.02)

    @staticmethod
    def _read(stream: Any, dest: list[str]) -> None:
        for line in iter(stream.readline, b""):
            dest.append(line.decode(errors="replace"))
        stream.close()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kids(self) -> list[int]:
        found = children(self.proc.pid)
        self.seen.update(found)
        return found

    def wait(self, ready: Callable[[], bool], timeout: float = 120.0, step: float = 0.01) -> bool:
        """Wait until ``ready()`` while the command runs; False if it ended first."""
        end = time.monotonic() + timeout
        while time.monotonic() < end and self.alive():
            if ready():
                return True
            time.sleep(step)
        return False

    def workers(self, n: int = 2) -> list[int]:
        """Wait for ``n`` children (the run's workers); [] if the command ended first."""
        found: list[int] = []

        def enough() -> bool:
            nonlocal found
            found = self.kids()
            return len(found) >= n
        return found if self.wait(enough) else []

    def deliver(self, sig: int, group: bool = False) -> bool:
        """Send ``sig`` to the command (or its group); False if it had already exited."""
        if not self.alive():
            return False
        try:
            if group:
                os.killpg(self.proc.pid, sig)
            else:
                self.proc.send_signal(sig)
        except ProcessLookupError:
            return False
        return True

    def finish(self, timeout: float = 180.0) -> tuple[int, str, str]:
        """(exit code, stderr, what was left behind) once the command has ended; a
        command that does not end in ``timeout`` is killed and reported."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self._watching.clear()
            for r in self._readers:
                r.join(5)
            return -999, "".join(self.err), "the command did not exit within the time limit; "
        for r in self._readers:
            r.join(10)
        end = time.monotonic() + 10  # a SIGKILLed manager's workers leave on their own
        while tagged(self.token) and time.monotonic() < end:
            time.sleep(0.05)
        left = tagged(self.token)
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        problems = f"processes left behind: {left}; " if left else ""
        settle = time.monotonic() + 5.0  # short-lived ones (glibc's sem_open temporaries) go: what stays counts
        new = shm() - self.before - self.foreign
        while new and time.monotonic() < settle:
            time.sleep(0.25)
            new = new & shm() - self.foreign
        self._watching.clear()
        if new:
            problems += f"/dev/shm left behind: {sorted(new)}; "
        return self.proc.returncode, "".join(self.err), problems


# --- documents ---------------------------------------------------------------------------------


def documents_problems(root: Path, *, killed: bool = False) -> str:
    """Every zonelimit document under ``root`` whole and schema-valid; no temporary file or
    claim marker left (``killed``: the manager was SIGKILLed, which leaves both, by design)."""
    from stress.documents import SCHEMA_KINDS, DocumentError, read_doc
    from stress.files import CLAIM, is_temporary

    if not root.exists():
        return ""
    by_name = {fmt.partition("/")[0]: fmt for fmt in SCHEMA_KINDS}
    problems = ""
    for path in sorted(root.rglob("*")):
        if path.name == CLAIM and not killed:
            problems += f"a claim marker left: {path.relative_to(root)}; "
        elif is_temporary(path.name) and not killed:
            problems += f"a temporary left: {path.relative_to(root)}; "
        elif path.suffix == ".json" and not path.name.startswith(".") and path.is_file():
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                problems += f"{path.relative_to(root)}: not whole JSON; "
                continue
            fmt = doc.get("format") if isinstance(doc, dict) else None
            kind = by_name.get(fmt.partition("/")[0]) if isinstance(fmt, str) else None
            if kind is None:
                problems += f"{path.relative_to(root)}: not a zonelimit document; "
                continue
            try:
                read_doc(path, kind)
            except DocumentError as exc:
                problems += f"{exc}; "
    return problems


def _doc(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def run_result(folder: Path, rc: int, code: int) -> tuple[str, str, float | None]:
    """(what the run folder says, what is wrong, workers_gone_s) after a signal whose exit
    code is ``code``: no folder (stopped before anything was written), or a run.json whose
    exit code is the process's and whose verdict is ``interrupted`` when the process says
    it was (else the signal came after the last document: a complete run)."""
    if not folder.exists():
        return "nothing written", "" if rc == code else f"exit {rc} and no run folder; ", None
    doc = _doc(folder / "run.json")
    if doc is None:
        return "no run.json", "a run folder without run.json; ", None
    verdict = str(doc.get("verdict"))
    problem = "" if doc.get("exit_code") == rc else f"run.json exit {doc.get('exit_code')} != process {rc}; "
    if rc == code and verdict != "interrupted":
        problem += f"exit {rc} but verdict {verdict}; "
    if rc != code and verdict == "interrupted":
        problem += f"verdict interrupted but exit {rc}; "
    if verdict == "interrupted" and doc.get("audit_verdict") in FAILURES:
        problem += f"the audit blames the allocator: {doc.get('audit_verdict')}; "
    stop = doc.get("stop") or {}
    during = " while writing" if stop.get("during") else ""
    return f"{verdict}{during}", problem, stop.get("workers_gone_s")


def compare_result(folder: Path, rc: int, code: int) -> tuple[str, str]:
    """compare.json (when written) partial after a stop, its exit code the process's."""
    doc = _doc(folder / "compare.json")
    if doc is None:
        if folder.exists() and any(p.name != ".zonelimit-claim" for p in folder.iterdir()):
            return "no compare.json", "a compare folder without compare.json; "
        return "nothing written", "" if rc == code else f"exit {rc} and no compare.json; "
    state = str(doc.get("state"))
    stop = doc.get("stop") or {}
    recorded = stop.get("exit_code") if stop else (3 if any(
        r.get("verdict") == "error" for v in doc.get("variants", []) for r in v.get("runs", [])) else 0)
    problem = "" if recorded == rc else f"compare.json says exit {recorded}, the process {rc}; "
    if (rc == code) != (state == "partial"):
        problem += f"exit {rc} with state {state}; "
    return state, problem


def race_result(folder: Path, rc: int, code: int) -> tuple[str, str]:
    """race.json (when written) says it was interrupted exactly when the process does; a
    cut seed is ``interrupted``, never ``corrupt``."""
    doc = _doc(folder / "race.json")
    if doc is None:
        if folder.exists() and any(p.name != ".zonelimit-claim" for p in folder.iterdir()):
            return "no race.json", "a hunt folder without race.json; "
        return "nothing written", "" if rc == code else f"exit {rc} and no race.json; "
    problem = ""
    if bool(doc.get("interrupted")) != (rc == code):
        problem += f"race.json interrupted={doc.get('interrupted')!r} but exit {rc}; "
    for seed in doc.get("seeds", []):
        run = _doc(folder / Path(str(seed.get("folder", ""))).name / "run.json")
        if seed.get("verdict") == "corrupt" and run is not None and run.get("verdict") == "interrupted":
            problem += f"the cut seed {seed.get('seed')} counted as corrupt; "
    return ("interrupted" if doc.get("interrupted") else "complete"), problem


def bench_result(folder: Path, rc: int, code: int) -> tuple[str, str]:
    """A stopped bench records nothing; one that finished records one file."""
    written = sorted(folder.glob("*.json")) if folder.exists() else []
    if rc == code:
        return "nothing recorded", f"a stopped bench wrote {[p.name for p in written]}; " if written else ""
    return f"recorded {len(written)}", "" if len(written) == 1 else f"exit {rc} and {len(written)} bench files; "


def report_result(folder: Path, rc: int, code: int) -> tuple[str, str]:
    """report changes nothing but plot.png, which is whole (a PNG to its IEND) or absent."""
    png = folder / "plot.png"
    if not png.exists():
        return ("stopped" if rc == code else "done") + ", no plot", ""
    data = png.read_bytes()
    whole = data.startswith(b"\x89PNG\r\n\x1a\n") and data[-12:-4] == b"\x00\x00\x00\x00IEND"
    return ("stopped" if rc == code else "done"), "" if whole else "a torn plot.png; "


# --- in-process commands (documents that must be refused) ---------------------------------------


@contextlib.contextmanager
def tripwire() -> Iterator[None]:
    """A refused input must never reach a run: ``execute`` raises while this holds."""
    from stress.engine import runner

    def reached(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a refused input reached the engine")

    saved = runner.execute
    runner.execute = reached  # type: ignore[assignment]
    try:
        yield
    finally:
        runner.execute = saved  # type: ignore[assignment]


def in_process(argv: list[str]) -> tuple[int, str]:
    """(exit code, stderr) of ``python -m stress ARGV`` run in this process, the engine a tripwire."""
    from stress import cli

    err = io.StringIO()
    with tripwire(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, err.getvalue()


def refusal_problem(code: int, err: str, *named: str) -> str:
    """'' when the command was refused as bad input: exit 2, one error line (the last),
    ``zonelimit: error: ...``, naming one of ``named``, and no traceback."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    problem = "" if code == 2 else f"exit {code}, expected 2; "
    if "Traceback" in err:
        problem += "a traceback; "
    errors = [ln for ln in lines if "error:" in ln]
    if len(errors) != 1 or not lines or lines[-1] != errors[0] or not lines[-1].startswith("zonelimit: error: "):
        problem += f"not one error line: {lines[-3:]}; "
    elif named and not any(n in lines[-1] for n in named):
        problem += f"the line does not name {named}: {lines[-1]!r}; "
    return problem


# --- shared inputs --------------------------------------------------------------------------------


class Shared:
    """Folders several trials read (a run to report, a pct run to replay, a hunt), made once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._made: dict[str, Path] = {}

    def _make(self, name: str, argv: list[str]) -> Path:
        if name not in self._made:
            folder = self.root / name
            proc = subprocess.run([PY, "-m", "stress", *argv, "--out", str(folder)], cwd=self.root,
                                  capture_output=True, timeout=600, env=dict(os.environ, MPLBACKEND="Agg"))
            if not (folder / "run.json").exists() and not (folder / "race.json").exists():
                raise RuntimeError(f"could not make the shared {name} folder: {proc.stderr.decode()[-500:]}")
            self._made[name] = folder
        return self._made[name]

    def run(self) -> Path:
        """A plain 1 s run: report's input."""
        return self._make("run", ["--cpus", "2", "--duration", "1", "--interval", "0.5", "--quiet"])

    def pct(self) -> Path:
        """A pct run (run.json and schedule.json): replay's input."""
        return self._make("pct", ["--cpus", "2", "--sched", "pct", "--steps", "40000", "--quiet"])

    def hunt(self) -> Path:
        """A one-seed hunt (race.json)."""
        return self._make("hunt", ["race", "--inject", "wake-one", "--seeds", "1..1", "--steps", "40000",
                                   "--quiet"])


# --- commands and their phases ---------------------------------------------------------------------

Rng = random.Random


@dataclass
class Command:
    """How a trial runs one command: its argv (into ``out`` under the trial's folder), the
    exit codes of a normal end, how to reach its mid-run and writing moments, and what its
    result must say after a signal."""

    name: str
    argv: Callable[[Path, Shared], list[str]]
    out: str  #: the result folder's name under the trial's folder
    normal: tuple[int, ...]
    mid: Callable[[Launch, Rng, Path], bool]
    writing: Callable[[Launch, Rng, Path], bool]
    result: Callable[[Path, int, int], tuple[str, str]]


def _after(launch: Launch, rng: Rng, lo: float, hi: float) -> bool:
    time.sleep(rng.uniform(lo, hi))
    return True


def _workers_then(lo: float, hi: float) -> Callable[[Launch, Rng, Path], bool]:
    """Mid-run: once the workers are up, a random moment later."""
    def reach(launch: Launch, rng: Rng, tmp: Path) -> bool:
        return bool(launch.workers()) and _after(launch, rng, lo, hi)
    return reach


def _workers_gone_then(hi: float) -> Callable[[Launch, Rng, Path], bool]:
    """Writing: the workers came and went (the run is over), then a random moment."""
    def reach(launch: Launch, rng: Rng, tmp: Path) -> bool:
        return (bool(launch.workers()) and launch.wait(lambda: not launch.kids())
                and _after(launch, rng, 0.0, hi))
    return reach


def _files_then(pattern: str, n: int, hi: float) -> Callable[[Launch, Rng, Path], bool]:
    """Writing: every run of the command has its run.json (``n`` of ``pattern``), then a random moment."""
    def reach(launch: Launch, rng: Rng, tmp: Path) -> bool:
        return launch.wait(lambda: len(list(tmp.glob(pattern))) >= n) and _after(launch, rng, 0.0, hi)
    return reach


def _line_then(text: str, lo: float, hi: float) -> Callable[[Launch, Rng, Path], bool]:
    def reach(launch: Launch, rng: Rng, tmp: Path) -> bool:
        return launch.wait(lambda: any(text in ln for ln in launch.err + launch.out)) and _after(launch, rng, lo, hi)
    return reach


def _file_appears(folder: str, final: str) -> Callable[[Launch, Rng, Path], bool]:
    """Writing: the moment a temporary file appears in ``folder`` (being written), or, when
    the write was quicker than our look, the moment its final name (glob ``final``) does
    (published; the command still prints and exits)."""
    from stress.files import is_temporary

    def reach(launch: Launch, rng: Rng, tmp: Path) -> bool:
        where = tmp / folder

        def writing() -> bool:
            try:
                return any(is_temporary(n) for n in os.listdir(where)) or any(where.glob(final))
            except OSError:
                return False
        return launch.wait(writing, step=0.001)
    return reach


def _report_input(tmp: Path, shared: Shared) -> Path:
    folder = tmp / "report"
    if not folder.exists():
        shutil.copytree(shared.run(), folder)
        (folder / "plot.png").unlink(missing_ok=True)
    return folder


def _run_result(folder: Path, rc: int, code: int) -> tuple[str, str]:
    state, problem, _ = run_result(folder, rc, code)
    return state, problem


RUN = ["--cpus", "2", "--duration", "2", "--interval", "0.5", "--quiet"]
COMMANDS: dict[str, Command] = {c.name: c for c in [
    Command("run", lambda t, s: [*RUN, "--out", str(t / "run")], "run", (0,),
            _workers_then(0.0, 1.5), _workers_gone_then(0.8), _run_result),
    Command("replay", lambda t, s: ["replay", str(s.pct()), "--quiet", "--out", str(t / "replay")], "replay", (0,),
            _workers_then(0.0, 1.0), _workers_gone_then(0.8), _run_result),
    Command("compare", lambda t, s: ["compare", "--cpus", "2", "--duration", "1", "--repeat", "1", "--configs",
                                     "2005,modern", "--quiet", "--out", str(t / "cmp")], "cmp", (0,),
            _workers_then(0.0, 2.5), _files_then("cmp/*/run.json", 2, 1.0), compare_result),
    Command("race", lambda t, s: ["race", "--inject", "wake-one", "--seeds", "1..2", "--steps", "40000", "--quiet",
                                  "--out", str(t / "hunt")], "hunt", (1,),
            _workers_then(0.0, 2.0), _files_then("hunt/seed-*/run.json", 2, 0.5), race_result),
    Command("bench", lambda t, s: ["bench", "--quick", "--only", "P1", "--out", str(t / "bench")], "bench", (0,),
            _line_then("bench:", 0.0, 1.0), _file_appears("bench", "*.json"), bench_result),
    Command("report", lambda t, s: ["report", "--replot", str(_report_input(t, s))], "report", (0,),
            _line_then("==", 0.0, 0.05), _file_appears("report", "plot.png"), report_result),
]}


def _reach(cmd: Command, phase: str, launch: Launch, rng: Rng, tmp: Path) -> bool:
    if phase == "start-up":
        return _after(launch, rng, *STARTUP)
    return (cmd.mid if phase == "mid-run" else cmd.writing)(launch, rng, tmp)


# --- scenarios ------------------------------------------------------------------------------------

TrialFn = Callable[[Rng, Path, Shared], Trial]


def signal_trial(cmd: Command, phase: str) -> TrialFn:
    """SIGINT or SIGTERM, to the process or its group (drawn), at a random moment of ``phase``."""

    def trial(rng: Rng, tmp: Path, shared: Shared) -> Trial:
        sig, group = rng.choice(SIGNALS)
        code = 128 + sig
        how = signal.Signals(sig).name + (" group" if group else "")
        launch = Launch(cmd.argv(tmp, shared), tmp)
        reached = _reach(cmd, phase, launch, rng, tmp)
        # mid-run with workers up, a signal must stop the command; later (the workers gone,
        # the results written) the command may already be past its last document
        busy = phase == "start-up" or (phase == "mid-run" and bool(launch.kids()))
        sent = reached and launch.deliver(sig, group)
        rc, err, left = launch.finish()
        out = tmp / cmd.out
        state, problem = cmd.result(out, rc, code)
        gone = run_result(out, rc, code)[2] if cmd.name in ("run", "replay") else None
        if not reached:
            problem += f"the {phase} moment was never reached (exit {rc}); "
        elif not sent:
            state = f"done before the signal, {state}"
        if rc != code and rc not in cmd.normal:
            problem += f"exit {rc}, expected {code} (or {cmd.normal} had the signal come after the result); "
        if rc != code and sent and busy:
            problem += f"the signal was ignored (exit {rc}); "
        if "Traceback" in err:
            problem += "a traceback on stderr; "
        problem += documents_problems(out)
        return Trial(f"{how} -> {rc} {state}", problem, left, gone)
    return trial


def interpreter_start_trial(rng: Rng, tmp: Path, shared: Shared) -> Trial:
    """SIGINT inside the interpreter's own start-up (before zonelimit's first line): measured
    only, not part of the table's rows (no handler of ours can exist yet)."""
    launch = Launch(["report", "/nonexistent"], tmp)
    time.sleep(rng.uniform(0.0, START))
    launch.deliver(signal.SIGINT)
    rc, err, left = launch.finish()
    return Trial(f"{rc}{' traceback' if 'Traceback' in err else ''}", "" if rc in (2, 130) else f"exit {rc}; ", left)


def worker_trial(kind: str) -> TrialFn:
    """A worker stopped (SIGSTOP: stalled, exit 3, its state and stack named) or killed
    (SIGKILL: error, exit 3) at a random moment mid-run."""

    def trial(rng: Rng, tmp: Path, shared: Shared) -> Trial:
        out = tmp / "run"
        launch = Launch(["--cpus", "2", "--duration", "30", "--wedge-timeout", "1", "--quiet", "--out", str(out)], tmp)
        workers = launch.workers()
        if not workers:
            rc, err, left = launch.finish()
            return Trial("no workers", f"the workers never started (exit {rc}); ", left)
        time.sleep(rng.uniform(0.2, 1.5))
        victim = rng.choice(workers)
        os.kill(victim, signal.SIGSTOP if kind == "sigstop" else signal.SIGKILL)
        rc, err, left = launch.finish()
        doc = _doc(out / "run.json") or {}
        verdict = str(doc.get("verdict"))
        expect = "stalled" if kind == "sigstop" else "error"
        problem = "" if rc == 3 else f"exit {rc}, expected 3; "
        if doc.get("exit_code") != rc:
            problem += f"run.json exit {doc.get('exit_code')} != process {rc}; "
        if verdict != expect:
            problem += f"verdict {verdict}, expected {expect}; "
        if doc.get("audit_verdict") in FAILURES:
            problem += f"the audit blames the allocator: {doc.get('audit_verdict')}; "
        if kind == "sigstop" and verdict == "stalled":
            if not (out / "stacks.txt").exists():
                problem += "no stacks.txt; "
            states = [p.get("state") for p in (doc.get("stall") or {}).get("processes", [])]
            if "T" not in states:
                problem += f"the stopped CPU's state not named ({states}); "
        if "Traceback" in err:
            problem += "a traceback on stderr; "
        problem += documents_problems(out)
        return Trial(f"{rc} {verdict}", problem, left)
    return trial


def _arena_path(pid: int) -> str | None:
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if "zonelimit-arena" in os.readlink(f"/proc/{pid}/fd/{fd}"):
                return f"/proc/{pid}/fd/{fd}"
        except OSError:
            continue
    return None


def lock_holder_trial(then_signal: bool) -> TrialFn:
    """A worker SIGSTOPped while it holds a zone lock; the manager's callout must not block
    forever: the run ends stalled naming the holder, or, signalled meanwhile, interrupted
    at once (the wedge timeout is then far longer than the trial)."""

    def trial(rng: Rng, tmp: Path, shared: Shared) -> Trial:
        from allocator import Uma

        out = tmp / "run"
        timeout = "60" if then_signal else "1"
        launch = Launch(["--cpus", "2", "--duration", "60", "--workload", "xmalloc", "--nmbclusters", "2048",
                         "--trim-interval", "0.1", "--wedge-timeout", timeout, "--quiet", "--out", str(out)], tmp)
        workers = launch.workers()
        path = _arena_path(launch.proc.pid) if workers else None
        if path is None:
            rc, err, left = launch.finish()
            return Trial("no arena", f"the run never started (exit {rc}); ", left)
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
                        held = k
                        break
                    os.kill(victim, signal.SIGCONT)
                except ProcessLookupError:  # the run ended meanwhile
                    break
            del owner
        finally:
            uma.close()
        if held is None:
            launch.deliver(signal.SIGINT)
            rc, err, left = launch.finish()
            return Trial("never caught holding a lock", "no lock holder caught; ", left)
        if then_signal:
            time.sleep(rng.uniform(0.3, 2.0))
            launch.deliver(signal.SIGINT)
        rc, err, left = launch.finish(timeout=50)
        state, problem, gone = run_result(out, rc, 130) if then_signal else (*_run_result(out, rc, -1), None)
        expect_rc = 130 if then_signal else 3
        if rc != expect_rc:
            problem += f"exit {rc}, expected {expect_rc}; "
        doc = _doc(out / "run.json") or {}
        if not then_signal and doc.get("verdict") != "stalled":
            problem += f"verdict {doc.get('verdict')}, expected stalled; "
        if then_signal and doc.get("stall"):
            problem += "the manager waited for the lock instead of stopping; "
        if "Traceback" in err:
            problem += "a traceback on stderr; "
        problem += documents_problems(out)
        return Trial(f"{rc} {doc.get('verdict')}", problem, left, gone)
    return trial


def incomplete_problems(folder: Path) -> tuple[str, str]:
    """(what the folder is, what is wrong) after the manager was SIGKILLed: a run.json, if
    any, is a whole document of a run that ended (a false one would say anything else);
    without one, report and replay call the folder an incomplete run (exit 2, one line)
    and a new run refuses it (exit 2), and none of them changes it."""
    if not folder.exists():
        return "no folder", ""
    doc = _doc(folder / "run.json")
    if doc is not None:
        return f"run.json {doc.get('verdict')}", ("" if doc.get("verdict") != "interrupted"
                                                  else "a run.json that says interrupted; ")
    before = sorted(p.name for p in folder.iterdir())
    problem = ""
    for argv in (["report", str(folder)], ["replay", str(folder), "--quiet", "--out", str(folder.parent / "rp")]):
        code, err = in_process(argv)
        problem += refusal_problem(code, err, "incomplete")
    code, err = in_process(["--cpus", "1", "--duration", "1", "--quiet", "--out", str(folder)])
    problem += refusal_problem(code, err, "--out")
    if sorted(p.name for p in folder.iterdir()) != before:
        problem += "a reader changed the killed run's folder; "
    if (folder.parent / "rp").exists():
        problem += "a refused replay made a folder; "
    return "incomplete", problem


def manager_kill_trial(cmd: Command, phase: str) -> TrialFn:
    """SIGKILL of the manager (only: its workers must notice and leave) at a random moment."""

    def trial(rng: Rng, tmp: Path, shared: Shared) -> Trial:
        launch = Launch(cmd.argv(tmp, shared), tmp)
        reached = _reach(cmd, phase, launch, rng, tmp)
        sent = reached and launch.deliver(signal.SIGKILL)
        rc, err, left = launch.finish()
        out = tmp / cmd.out
        problem = "" if reached else f"the {phase} moment was never reached (exit {rc}); "
        if sent and rc != -signal.SIGKILL:
            problem += f"exit {rc} after SIGKILL; "
        problem += documents_problems(out, killed=True)
        if cmd.name in ("run", "replay"):
            state, more = incomplete_problems(out)
        else:
            state = "compare.json" if (out / "compare.json").exists() else (
                "race.json" if (out / "race.json").exists() else "no document")
            more = ""
        return Trial(f"{'killed' if sent else f'done ({rc})'}: {state}", problem + more, left)
    return trial


def two_runs_trial(cmd: Command) -> TrialFn:
    """Two commands given the same ``--out``, a random moment (0-0.4 s) apart: exactly one
    runs; the other is refused (exit 2, one line naming --out); the folder holds one whole
    result (documents valid, samples.csv not torn)."""

    def trial(rng: Rng, tmp: Path, shared: Shared) -> Trial:
        first = Launch(cmd.argv(tmp, shared), tmp)
        time.sleep(rng.uniform(0.0, 0.4))
        second = Launch(cmd.argv(tmp, shared), tmp)
        (rc1, err1, left1), (rc2, err2, left2) = first.finish(), second.finish()
        codes = sorted([rc1, rc2])
        problem = ""
        if not (codes[0] in cmd.normal and codes[1] == 2) and not (codes[1] in cmd.normal and codes[0] == 2):
            problem += f"exits {rc1} and {rc2}: not one run and one refusal; "
        else:
            refused_err = err1 if rc1 == 2 else err2
            problem += refusal_problem(2, refused_err, "--out")
        for err in (err1, err2):
            if "Traceback" in err:
                problem += "a traceback on stderr; "
        out = tmp / cmd.out
        problem += documents_problems(out)
        for csv in out.rglob("samples.csv"):
            widths = {len(row.split(",")) for row in csv.read_text().splitlines()}
            if len(widths) > 1:
                problem += f"a torn {csv.relative_to(out)}; "
        winner = rc1 if rc2 == 2 else rc2
        if cmd.name == "run":
            doc = _doc(out / "run.json") or {}
            if doc.get("exit_code") != winner:
                problem += f"run.json exit {doc.get('exit_code')} != the run's {winner}; "
        first_won = rc2 == 2
        return Trial(f"{'first' if first_won else 'second'} ran ({winner}), other refused" if not problem
                     else f"exits {rc1}, {rc2}", problem, left1 + left2)
    return trial


# --- corrupted documents ----------------------------------------------------------------------------

#: kinds of damage to a document
CORRUPTIONS = ("truncated", "wrong-type", "wrong-format")
#: values a wrong-typed field is given (the first the schema refuses for that field)
WRONG_VALUES: list[Any] = ["x", 1.5, -1, [], {}, None, True, "1e999", 2**64]


def _leaves(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(doc, dict):
        return [p for k, v in doc.items() for p in _leaves(v, (*path, k))] or [path]
    if isinstance(doc, list):
        return [p for i, v in enumerate(doc[:3]) for p in _leaves(v, (*path, i))] or [path]
    return [path]


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    target = doc
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return doc


def corrupt(text: str, fmt: str, how: str, rng: Rng) -> tuple[str, tuple[str, ...]]:
    """The document ``text`` damaged as ``how`` says; and the words the refusal must name
    (one of them)."""
    from stress.documents import EARLIER_SCHEMAS, SCHEMA_KINDS, _field, _major, schema_errors

    kind = SCHEMA_KINDS[fmt]
    own = json.loads(text).get("format", fmt) if how == "wrong-type" else fmt
    kind = EARLIER_SCHEMAS.get((kind, _major(own)), kind)  # an earlier format is checked by its own schema

    if how == "truncated":
        body = text.rstrip()
        return body[:rng.randrange(1, len(body) - 1)], ("damaged JSON", "not a JSON object")
    doc = json.loads(text)
    if how == "wrong-format":
        family, _, major = fmt.partition("/")
        others = ["zonelimit.run/1", "zonelimit.compare/2", "zonelimit.race/1", "zonelimit.schedule/1"]
        choices = [f"{family}/{int(major) + rng.randint(1, 50)}", rng.choice([o for o in others
                                                                               if not o.startswith(family)]),
                   7, None, "", "zonelimit"]
        doc["format"] = rng.choice(choices)
        return json.dumps(doc), ("format", "newer", "not a zonelimit")
    leaves = [p for p in _leaves(doc) if p and p[0] != "format"]
    rng.shuffle(leaves)
    for path in leaves:
        for value in rng.sample(WRONG_VALUES, len(WRONG_VALUES)):
            damaged = _set(json.loads(text), path, value)
            if schema_errors(damaged, kind):
                named = _field(path)
                return json.dumps(damaged), (named, named.rsplit(".", 1)[-1].split("[", 1)[0])
    raise AssertionError("no field of the document can be given a wrong type")


def corrupt_trial(command: str, document: str) -> TrialFn:
    """replay or report of a ``document`` damaged at random (truncated, a field of a wrong
    type, a wrong format), in this process: refused with exit 2, one line, nothing started."""
    from stress import documents as d

    kinds = {"run.json": d.RUN_FORMAT, "compare.json": d.COMPARE_FORMAT, "race.json": d.RACE_FORMAT,
             "schedule.json": d.SCHEDULE_FORMAT}

    def source(shared: Shared) -> Path:
        if document == "compare.json":
            return ROOT / "results" / "reference" / "policies" / "burst"
        if document == "race.json":
            return shared.hunt()
        if document == "schedule.json":
            return shared.pct()
        return ROOT / "results" / "reference" / "2005" / "run"

    def trial(rng: Rng, tmp: Path, shared: Shared) -> Trial:
        how = rng.choice(CORRUPTIONS)
        src = source(shared)
        folder = tmp / "doc"
        folder.mkdir()
        for name in ("run.json", "schedule.json", "compare.json", "race.json"):
            if (src / name).exists():
                shutil.copy(src / name, folder / name)
        fmt = kinds[document]
        text, named = corrupt((folder / document).read_text(), fmt, how, rng)
        (folder / document).write_text(text)
        argv = ["report", str(folder)] if command == "report" else ["replay", str(folder), "--quiet"]
        code, err = in_process(argv)
        problem = refusal_problem(code, err, *named)
        made = [p.name for p in folder.iterdir() if p.name.startswith("replay")]
        if made:
            problem += f"a refused replay made {made}; "
        return Trial(f"{how} -> {code}", problem)
    return trial


# --- the rows -----------------------------------------------------------------------------------------


@dataclass
class Row:
    """One row of the table: a scenario, a command, a phase, and how one trial runs."""

    scenario: str
    command: str
    phase: str
    trial: TrialFn
    processes: bool = True  #: starts processes (smp); False: in this process only

    @property
    def id(self) -> str:
        return f"{self.scenario}/{self.command}/{self.phase}"


def rows() -> list[Row]:
    """Every row of the reliability table, in the table's order."""
    out = [Row("signal", c, phase, signal_trial(COMMANDS[c], phase))
           for c in COMMANDS for phase in ("start-up", "mid-run", "writing")]
    out += [Row("worker-sigstop", "run", "mid-run", worker_trial("sigstop")),
            Row("worker-sigkill", "run", "mid-run", worker_trial("sigkill")),
            Row("lock-holder-sigstop", "run", "mid-run", lock_holder_trial(False)),
            Row("lock-holder-sigstop-then-sigint", "run", "mid-run", lock_holder_trial(True))]
    out += [Row("manager-sigkill", "run", phase, manager_kill_trial(COMMANDS["run"], phase))
            for phase in ("start-up", "mid-run", "writing")]
    out += [Row("manager-sigkill", c, "mid-run", manager_kill_trial(COMMANDS[c], "mid-run"))
            for c in ("replay", "compare", "race")]
    out += [Row("two-runs", c, "claim", two_runs_trial(COMMANDS[c])) for c in ("run", "compare", "race")]
    out += [Row("corrupt", cmd, doc, corrupt_trial(cmd, doc), processes=doc in ("race.json", "schedule.json"))
            for cmd, doc in (("replay", "run.json"), ("replay", "schedule.json"), ("report", "run.json"),
                             ("report", "compare.json"), ("report", "race.json"))]
    return out


#: measured only when asked for by name: the interpreter's own start-up, before zonelimit
EXTRA = [Row("interpreter-start", "report", "before-zonelimit", interpreter_start_trial)]


def row_rng(seed: int, row: Row, i: int) -> Rng:
    """Trial ``i`` of ``row``'s generator: independent of the other rows and trials, so one
    trial can be re-run alone."""
    return random.Random(f"{seed}:{row.id}:{i}")


def run_row(row: Row, trials: int, seed: int, shared: Shared, tmp_root: Path, *, keep: bool = False,
            echo: Callable[[str], None] | None = None, first: int = 0) -> Tally:
    """``trials`` trials of ``row`` (numbers ``first`` on), each in its own folder under
    ``tmp_root`` (removed when clean, or unless ``keep``)."""
    tally = Tally()
    for i in range(first, first + trials):
        tmp = tmp_root / f"{row.id.replace('/', '-')}-{i}"
        tmp.mkdir(parents=True)
        t = row.trial(row_rng(seed, row, i), tmp, shared)
        if t.clean or not keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            t.why += f" (kept: {tmp})"
        tally.add(i, t)
        if echo is not None:
            echo(f"{row.id} {i}: {t.outcome}{'' if t.clean else '  NOT CLEAN: ' + t.why + t.left}")
    return tally


def table_lines(tallies: dict[str, Tally]) -> list[str]:
    """The markdown table: scenario, command, phase, trials, outcomes, clean, leftovers."""
    lines = ["| scenario | command | phase | trials | outcomes | clean | leftovers |",
             "|---|---|---|---:|---|---:|---:|"]
    for rid, t in tallies.items():
        scenario, command, phase = rid.split("/")
        outs = "; ".join(f"{k} x{v}" for k, v in sorted(t.outcomes.items(), key=lambda kv: (-kv[1], kv[0])))
        lines.append(f"| {scenario} | {command} | {phase} | {t.trials} | {outs} | {t.clean} | {t.leftovers} |")
    return lines
