"""A scripted bad-input attack: every command, every kind of field, refused the same way.

Each input must end with exit 2, one error line on stderr that names the option (or the
document field) and says what is allowed, and no traceback (cli.md, "Exit codes").  The
refusals happen before any run starts: the engine and the bench are replaced by tripwires
that fail the test if a refused input reaches them, and the smp rule (tests/conftest.py)
fails it if a process is started.  A few inputs also go through a real ``python -m
stress`` (marked smp), so that nothing printed at the edge of the process escapes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stress import cli
from stress.commands import bench
from stress.config import RunConfig
from stress.cpulist import usable_cores
from stress.documents import Schedule
from tests.fixtures import run_doc

ROOT = Path(__file__).resolve().parent.parent
TOO_MANY_CPUS = str(len(usable_cores()) + 1)

#: (argv, what the error line must name): refused at parse time or by a check after it
ARGV_CASES: list[tuple[list[str], str]] = [
    # run: numbers
    (["--cpus", "0"], "--cpus"), (["--cpus", "two"], "--cpus"), (["--cpus", "257"], "--cpus"),
    (["--cpus", "99999999999999999999999"], "--cpus"), (["--cpus", ""], "--cpus"),
    (["--cpus", TOO_MANY_CPUS], "--cpus"),
    (["--duration", "-1"], "--duration"), (["--duration", "0"], "--duration"), (["--duration", "nan"], "--duration"),
    (["--duration", "inf"], "--duration"), (["--duration", "1e300"], "--duration"),
    (["--duration", "2592001"], "--duration"), (["--duration", "1s"], "--duration"),
    (["--nmbclusters", "0"], "--nmbclusters"), (["--nmbclusters", "1"], "--nmbclusters"),
    (["--nmbclusters", "1048577"], "--nmbclusters"),
    (["--rounds", "-1"], "--rounds"), (["--rounds", "1000001"], "--rounds"),
    (["--rounds", "2", "--duration", "3"], "--duration"),
    (["--rounds", "1000000", "--round-length", "2592000"], "--rounds"),
    (["--round-length", "2"], "--round-length"), (["--rounds", "1", "--round-length", "0"], "--round-length"),
    (["--rounds", "1", "--idle", "-1"], "--idle"),
    (["--interval", "0"], "--interval"), (["--interval", "0.001"], "--interval"), (["--interval", "nan"], "--interval"),
    (["--trim-interval", "0"], "--trim-interval"), (["--wedge-timeout", "0"], "--wedge-timeout"),
    (["--wedge-timeout", "inf"], "--wedge-timeout"),
    (["--page-budget", "-1"], "--page-budget"), (["--page-budget", "2147483649"], "--page-budget"),
    (["--seed", "-1"], "--seed"), (["--seed", "18446744073709551616"], "--seed"),
    (["--pct-depth", "0"], "--pct-depth"), (["--pct-depth", "65"], "--pct-depth"),
    (["--jitter", "2"], "--jitter"), (["--jitter", "nan"], "--jitter"),
    # run: names and combinations
    (["--workload", "nope"], "--workload"), (["--era", "1999"], "--era"), (["--policy", "lru"], "--policy"),
    (["--refcount", "x"], "--refcount"), (["--wakeup", "some"], "--wakeup"), (["--inject", "nope"], "--inject"),
    (["--inject", ""], "--inject"), (["--sched", "bogus"], "--sched"), (["--sched", "replay"], "--sched"),
    (["--jitter", "0.5", "--sched", "pct"], "--jitter"),
    (["--policy-param", "k=nan"], "--policy-param"), (["--policy-param", "nosuch=1"], "--policy-param"),
    (["--policy-param", "k"], "--policy-param"),
    (["--quiet", "-v"], "--quiet"), (["--no-such-option"], "--no-such-option"), (["--cpus"], "--cpus"),
    # compare
    (["compare", "--interval", "nan"], "--interval"), (["compare", "--nmbclusters", "1"], "--nmbclusters"),
    (["compare", "--duration", "inf"], "--duration"), (["compare", "--cpus", "0"], "--cpus"),
    (["compare", "--cpus", "257"], "--cpus"), (["compare", "--cpus", TOO_MANY_CPUS], "--cpus"),
    (["compare", "--repeat", "0"], "--repeat"), (["compare", "--repeat", "1001"], "--repeat"),
    (["compare", "--configs", "2006"], "--configs"), (["compare", "--configs", ","], "--configs"),
    (["compare", "--configs", "2005,2005"], "--configs"), (["compare", "--workload", "nope"], "--workload"),
    (["compare", "--seed", "18446744073709551615", "--repeat", "2"], "--seed"),
    (["compare", "--seed", "18446744073709551616"], "--seed"),
    (["compare", "--policy-param", "median.k=inf"], "--policy-param"),
    (["compare", "--policy-param", "median"], "--policy-param"),
    (["compare", "--rounds", "2", "--duration", "3"], "--duration"), (["compare", "--idle", "1"], "--idle"),
    (["compare", "--max-spread", "0"], "--max-spread"), (["compare", "--max-spread", "nan"], "--max-spread"),
    (["compare", "--trim-interval", "-1"], "--trim-interval"), (["compare", "--page-budget", "x"], "--page-budget"),
    # race
    (["race", "--inject", "refcount-eq0", "--seeds", "18446744073709551616"], "--seeds"),
    (["race", "--inject", "refcount-eq0", "--seeds", "5..3"], "--seeds"),
    (["race", "--inject", "refcount-eq0", "--seeds", "x"], "--seeds"),
    (["race", "--inject", "refcount-eq0", "--seeds", "0..100000"], "--seeds"),
    (["race", "--inject", "nope"], "--inject"), (["race", "--budget", "10x"], "--budget"),
    (["run", "--lease-wait", "-1"], "--lease-wait"),
    (["compare", "--jobs", "2", "--lease-wait", "x"], "--lease-wait"),
    (["race", "--budget", "0"], "--budget"), (["race", "--policy", "lru"], "--policy"),
    (["race", "--inject", "refcount-eq0", "--nmbclusters", "1"], "--nmbclusters"),
    (["race", "--inject", "refcount-eq0", "--duration", "inf"], "--duration"),
    (["race", "--inject", "refcount-eq0", "--pct-depth", "0"], "--pct-depth"),
    (["race", "--inject", "refcount-eq0", "--jitter", "0.5"], "--jitter"),
    (["race", "--inject", "refcount-eq0", "--cpus", "0"], "--cpus"),
    (["race", "--inject", "refcount-eq0", "--cpus", TOO_MANY_CPUS], "--cpus"),
    (["race", "--inject", "refcount-eq0", "--sched", "replay"], "--sched"),
    (["race", "--inject", "refcount-eq0", "--wedge-timeout", "0"], "--wedge-timeout"),
    # bench
    (["bench", "--repeat", "0"], "--repeat"), (["bench", "--only", "P9"], "--only"),
    (["bench", "--only", ""], "--only"),
    # commands
    (["reprot", "x"], "COMMAND"), (["replay"], "RUN_DIR"), (["report"], "RUN_DIR"),
]


#: --out problems, for every command that writes: (name, make(tmp) -> the --out path)
def _a_file(tmp: Path) -> Path:
    (tmp / "file").write_text("x")
    return tmp / "file"


def _under_a_file(tmp: Path) -> Path:
    return _a_file(tmp) / "out"


def _parent_missing(tmp: Path) -> Path:
    return tmp / "missing" / "out"


def _name_too_long(tmp: Path) -> Path:
    return tmp / ("n" * 300)


def _holds_files(tmp: Path) -> Path:
    (tmp / "full").mkdir()
    (tmp / "full" / "run.json").write_text("{}")
    return tmp / "full"


def _read_only(tmp: Path) -> Path:
    return Path("/proc/zonelimit-out")  # a file system where nobody, root included, makes a folder


OUT_CASES: dict[str, Callable[[Path], Path]] = {
    "a file": _a_file, "under a file": _under_a_file, "parent missing": _parent_missing,
    "name too long": _name_too_long, "holds files": _holds_files, "read-only": _read_only,
}
OUT_COMMANDS = {
    "run": ["--cpus", "1", "--duration", "1"],
    "compare": ["compare", "--cpus", "1", "--duration", "1", "--repeat", "1", "--configs", "modern"],
    "race": ["race", "--inject", "refcount-eq0", "--seeds", "1", "--cpus", "1"],
    "bench": ["bench", "--only", "P8"],
}


@pytest.fixture
def tripwires(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused input must never reach a run or a measurement."""
    from stress.engine import runner

    def reached(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a refused input reached the engine")

    monkeypatch.setattr(runner, "execute", reached)
    monkeypatch.setattr(bench, "run_bench", reached)


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str], named: str) -> str:
    """Run argv in this process; assert exit 2, one error line naming ``named``, no traceback."""
    code = cli.main(argv)
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, (argv, code, err)
    assert "Traceback" not in err, err
    errors = [ln for ln in lines if "error:" in ln]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert lines[-1].startswith("zonelimit: error: "), lines[-1]
    assert named in lines[-1], (named, lines[-1])
    return lines[-1]


@pytest.mark.parametrize(("argv", "named"), ARGV_CASES, ids=[" ".join(a)[:60] for a, _ in ARGV_CASES])
def test_bad_options_are_refused_in_one_line(capsys: pytest.CaptureFixture[str], tripwires: None,
                                            argv: list[str], named: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a refusal that made results/ anyway would show here
    _refused(capsys, argv, named)
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("*.json"))


@pytest.mark.parametrize("problem", list(OUT_CASES))
@pytest.mark.parametrize("command", list(OUT_COMMANDS))
def test_bad_out_folders_are_refused_in_one_line(capsys: pytest.CaptureFixture[str], tripwires: None,
                                                 tmp_path: Path, command: str, problem: str) -> None:
    if command == "bench" and problem in ("holds files", "parent missing"):
        pytest.skip("bench's --out is a folder of timestamped files: it may hold files, and is created")
    out = OUT_CASES[problem](tmp_path)
    line = _refused(capsys, [*OUT_COMMANDS[command], "--out", str(out)], "--out")
    assert line.startswith("zonelimit: error: --out: ")


# --- documents: every field replay and report read ------------------------------------------


def _run_folder(tmp: Path, name: str = "run", **changes: Any) -> Path:
    folder = tmp / name
    doc = run_doc(RunConfig(cpus=1, duration=2.0))
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        target = doc
        for p in parents:
            target = target[p]
        target[last] = value
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps(doc))
    return folder


#: run.json fields broken one at a time: (changes, the field the error must name)
RUN_FIELD_CASES: list[tuple[dict[str, Any], str]] = [
    ({"config__duration": 1e300}, "config.duration"), ({"config__duration": "2"}, "config.duration"),
    ({"config__duration": 0}, "config.duration"), ({"config__cpus": "two"}, "config.cpus"),
    ({"config__cpus": 0}, "config.cpus"), ({"config__cpus": 100000}, "config.cpus"),
    ({"config__nmbclusters": 1}, "config.nmbclusters"), ({"config__seed": 2**64}, "config.seed"),
    ({"config__seed": -1}, "config.seed"), ({"config__interval": 0}, "config.interval"),
    ({"config__jitter": 5}, "config.jitter"), ({"config__inject": "refcount-eq0"}, "config.inject"),
    ({"config__rounds": -3}, "config.rounds"), ({"config__policy_params": {"k": "x"}}, "config.policy_params.k"),
    ({"config__wedge_timeout": None}, "config.wedge_timeout"), ({"config__workload": ""}, "config.workload"),
    ({"verdict": "fine"}, "verdict"), ({"exit_code": 7}, "exit_code"), ({"duration_s": -1}, "duration_s"),
    ({"zones": {}}, "zones"), ({"ops__total": -5}, "ops.total"), ({"host__cores": "2"}, "host.cores"),
    ({"host__started": "yesterday"}, "host.started"), ({"wedge": 3}, "wedge"), ({"format": "zonelimit.run/9"}, "newer"),
    ({"format": "zonelimit.compare/1"}, "not a zonelimit run"), ({"audit__lost": []}, "audit.lost"),
]


@pytest.mark.bad_documents
@pytest.mark.parametrize(("changes", "field"), RUN_FIELD_CASES, ids=[next(iter(c)) for c, _ in RUN_FIELD_CASES])
@pytest.mark.parametrize("command", ["replay", "report"])
def test_every_run_json_field_is_checked(capsys: pytest.CaptureFixture[str], tripwires: None, tmp_path: Path,
                                         command: str, changes: dict[str, Any], field: str) -> None:
    folder = _run_folder(tmp_path, **changes)
    line = _refused(capsys, [command, str(folder)], field)
    assert line.startswith("zonelimit: error: RUN_DIR: ")
    assert not (folder / "replay-1").exists(), "a refused replay leaves no folder"


@pytest.mark.bad_documents
@pytest.mark.parametrize(("setup", "named"), [
    ("missing", "no such run folder"), ("empty", "no run.json"), ("damaged", "damaged JSON"),
    ("not-object", "not a JSON object"), ("schedule-damaged", "schedule"), ("schedule-field", "ncpus"),
    ("schedule-cpus", "recorded for 2 CPUs"), ("unknown-workload", "--workload: recorded 'gone'"),
    ("out-is-file", "--out"), ("replay-of-a-month", "schedule"),
])
def test_replay_refuses_what_it_cannot_run(capsys: pytest.CaptureFixture[str], tripwires: None, tmp_path: Path,
                                          setup: str, named: str) -> None:
    folder = tmp_path / "run"
    extra: list[str] = []
    if setup == "missing":
        pass
    elif setup == "empty":
        folder.mkdir()
    elif setup in ("damaged", "not-object"):
        folder.mkdir()
        (folder / "run.json").write_text("{not json" if setup == "damaged" else "[1]")
    elif setup.startswith("schedule") or setup == "replay-of-a-month":
        long = setup == "replay-of-a-month"
        _run_folder(tmp_path, config__sched="pct", config__duration=2592001.0 if long else 2.0)
        schedule = Schedule(seed=1, ncpus=2 if setup == "schedule-cpus" else 1, depth=3, steps=100).to_dict()
        if setup == "schedule-field":
            schedule["ncpus"] = -1
        text = "{oops" if setup == "schedule-damaged" else json.dumps(schedule)
        (folder / "schedule.json").write_text(text)
    elif setup == "unknown-workload":
        _run_folder(tmp_path, config__workload="gone")
    else:
        _run_folder(tmp_path)
        extra = ["--out", str(_a_file(tmp_path))]
    _refused(capsys, ["replay", str(folder), *extra], named)


@pytest.mark.bad_documents
@pytest.mark.parametrize(("kind", "field"), [
    ("compare", "repeat"), ("compare", "rows[0].runs[0].exit_code"), ("compare", "created"),
    ("race", "seeds[0].seed"), ("race", "sched"), ("bench", "figures.P8.values[0]"), ("bench", "repeat"),
    ("bench", "not-json"), ("compare", "newer"), ("bench", "temporary"),
])
def test_report_checks_every_document_it_reads(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                               kind: str, field: str) -> None:
    ref = ROOT / "results" / "reference"
    if kind == "compare":
        # the first format (zonelimit.compare/1): its fields are checked before it is upgraded
        doc = json.loads((ROOT / "tests" / "data" / "compare-v1" / "burst" / "compare.json").read_text())
        if field == "repeat":
            doc["repeat"] = 0
        elif field == "created":
            doc["created"] = "2026-11-25 19:10"
        elif field == "newer":
            doc["format"] = "zonelimit.compare/3"
        else:
            doc["rows"][0]["runs"][0]["exit_code"] = "0"
        (tmp_path / "c").mkdir()
        (tmp_path / "c" / "compare.json").write_text(json.dumps(doc))
        target = tmp_path / "c"
    elif kind == "race":
        doc = {"format": "zonelimit.race/1", "inject": ["refcount-eq0"], "sched": "pct", "folder": "x",
               "seeds": [{"seed": -1 if field.startswith("seeds") else 1, "verdict": "ok", "exit_code": 0,
                          "detected_s": 1.0, "folder": "x/seed-1"}], "found": 0, "runs": 1, "summary": "s"}
        if field == "sched":
            doc["sched"] = "later"
        (tmp_path / "r").mkdir()
        (tmp_path / "r" / "race.json").write_text(json.dumps(doc))
        target = tmp_path / "r"
    else:
        target = tmp_path / "b.json"
        if field == "not-json":
            target.write_text("<html>")
            field = "damaged JSON"
        elif field == "temporary":  # a bench file being written: whole JSON, but not published
            target = tmp_path / ".20261125-191443.json.4242@host.tmp"
            target.write_text((ref / "performance" / "bench-round2-20261125-191443.json").read_text())
            field = "a temporary"
        else:
            doc = json.loads((ref / "performance" / "bench-round2-20261125-191443.json").read_text())
            if field == "repeat":
                doc["repeat"] = 1.5
            else:
                doc["figures"]["P8"]["values"] = ["1.0"]
            target.write_text(json.dumps(doc))
    _refused(capsys, ["report", str(target)], field)


# --- the committed reference documents are read, earlier shapes migrated -------------------


REFERENCES = sorted(p for p in (ROOT / "results" / "reference").rglob("*.json"))


@pytest.mark.parametrize("path", REFERENCES, ids=[str(p.relative_to(ROOT)) for p in REFERENCES])
def test_report_reads_every_committed_reference(capsys: pytest.CaptureFixture[str], path: Path) -> None:
    target = path if path.parent.name == "performance" else path.parent
    assert cli.main(["report", "--no-netstat", str(target)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"== {target}") and "Traceback" not in err


def test_the_bench_reference_is_migrated_explicitly() -> None:
    """The first bench files wrote their UTC offset without a colon; read, they have it."""
    from stress.documents import BENCH_FORMAT, read_doc

    path = next(p for p in REFERENCES if p.parent.name == "performance")
    assert json.loads(path.read_text())["created"].endswith("+0000"), "the reference is still the old shape"
    assert read_doc(path, BENCH_FORMAT)["created"].endswith("+00:00")


def test_replay_accepts_the_committed_reference_runs(capsys: pytest.CaptureFixture[str], tripwires: None,
                                                     monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every committed run folder is replayable: read, checked, configured (the run itself
    is not started: the engine is a tripwire, so the run stops at it with exit 3)."""
    from stress.commands import run

    seen: list[RunConfig] = []
    monkeypatch.setattr(run, "main_run", lambda cfg, folder=None, cores=None, **how: seen.append(cfg) or 0)
    for path in REFERENCES:
        if path.name == "run.json":
            code = cli.main(["replay", str(path.parent), "--oversubscribe", "--out", str(tmp_path / path.parent.name)])
            assert code == 0, capsys.readouterr().err
    assert len(seen) == sum(p.name == "run.json" for p in REFERENCES) >= 3


# --- at the edge of a real process ----------------------------------------------------------


@pytest.mark.smp
@pytest.mark.parametrize("argv", [
    ["--duration", "1e300"], ["compare", "--interval", "nan"], ["race", "--inject", "refcount-eq0", "--seeds",
                                                                 "18446744073709551616"],
    ["--out", "/proc/zonelimit-out", "--duration", "1"], ["bench", "--repeat", "0"],
])
def test_a_real_process_refuses_in_one_line(argv: list[str], tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "stress", *argv], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env=env)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[-1].startswith("zonelimit: error: --") and proc.stdout == ""
    assert not (tmp_path / "results").exists()


# --- what --cpus accepts, the arena holds --------------------------------------------------


@pytest.mark.parametrize("workload", ["netperf", "mixed", "race-wakeone"])
def test_every_cpu_count_the_command_line_accepts_fits_the_arena(workload: str) -> None:
    """The arena's table of tester arrays once stopped at 64 (netperf at 18 CPUs exited 3):
    the largest --cpus, with every option that adds arrays, now makes an arena that another
    process can attach to (no process started: the arena alone)."""
    from allocator import Uma
    from allocator.arena import Arena
    from stress.engine.manager import uma_config
    from stress.engine.sched import sched_arrays
    from stress.options import MAX_CPUS
    from stress.workloads import arena_arrays

    cfg = RunConfig(cpus=MAX_CPUS, workload=workload, invariants=True, sched="pct", nmbclusters=512)
    specs = tuple(arena_arrays(cfg)) + tuple(sched_arrays(cfg))
    assert len(specs) > 64
    uma = Uma.create(uma_config(cfg, specs))
    try:
        seen = Arena.attach(uma.arena.path)
        assert [s.name for s in seen.layout.extra] == [s.name for s in specs]
        seen.close()
    finally:
        uma.close()
