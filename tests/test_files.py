"""Files of a result folder: whole or not at all, temporaries that name their writer,
folders one run owns (stress/files.py), and two real runs given the same --out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stress import documents, files
from stress.files import CLAIM, FolderError, TempFile, claim_folder, holding, new_folder, release_folder
from stress.samples import SAMPLES_CSV

ROOT = Path(__file__).resolve().parent.parent


def _dead_pid() -> int:
    """A pid that is certainly not running: one past the kernel's maximum."""
    return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1


def _temporary_of(pid: int, name: str, host: str | None = None) -> str:
    return f".{name}.{pid}@{host or files._host()}.tmp"


# --- temporaries ----------------------------------------------------------------------------


def test_a_temporary_names_its_writer_and_is_hidden() -> None:
    tmp = files.temp_path(Path("/x/run.json"))
    assert tmp.parent == Path("/x")
    assert tmp.name == f".run.json.{os.getpid()}@{files._host()}.tmp"
    assert files.is_temporary(tmp.name) and not files.is_temporary("run.json")
    assert files.is_temporary(".plot.png.12@host.with.dots.tmp")


def test_write_atomic_leaves_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    path = tmp_path / "plot.png"
    files.write_text(path, "old")

    def fail(f: object) -> None:
        raise RuntimeError("drawing failed half-way")

    with pytest.raises(RuntimeError):
        files.write_atomic(path, fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"], "no temporary left behind"


def test_exclusive_write_never_replaces(tmp_path: Path) -> None:
    path = files.write_atomic(tmp_path / "b.json", lambda f: f.write(b"1"), exclusive=True)
    with pytest.raises(FileExistsError):
        files.write_atomic(path, lambda f: f.write(b"2"), exclusive=True)
    assert path.read_text() == "1" and len(list(tmp_path.iterdir())) == 1


def test_stale_temporaries_are_swept_live_and_foreign_ones_kept(tmp_path: Path) -> None:
    dead = tmp_path / _temporary_of(_dead_pid(), "run.json")
    live = tmp_path / _temporary_of(os.getppid(), "samples.csv")  # our parent: alive
    foreign = tmp_path / _temporary_of(_dead_pid(), "run.json", host="another-host")
    other = tmp_path / ".hidden-by-a-person"
    for p in (dead, live, foreign, other):
        p.write_text("x")
    files.write_text(tmp_path / "compare.txt", "table\n")  # a later write in the same place
    assert not dead.exists()
    assert live.exists() and foreign.exists() and other.exists()


def test_tempfile_publishes_once_and_discard_leaves_nothing(tmp_path: Path) -> None:
    t = TempFile(tmp_path / "a.csv")
    t.opened().write("1\n")
    assert not (tmp_path / "a.csv").exists()
    t.publish()
    t.publish()
    assert (tmp_path / "a.csv").read_text() == "1\n"
    d = TempFile(tmp_path / "b.csv")
    d.discard()
    d.discard()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv"]


# --- claimed folders ------------------------------------------------------------------------


def test_a_new_folder_is_claimed_and_released(tmp_path: Path) -> None:
    out = claim_folder(tmp_path / "run")
    assert (out / CLAIM).is_dir()
    assert files.claim_owner(out) == (os.getpid(), files._host(), True)
    (out / "run.json").write_text("{}")
    release_folder(out)
    assert sorted(p.name for p in out.iterdir()) == ["run.json"]
    release_folder(out)  # twice: harmless


def test_a_claimed_folder_cannot_be_claimed_again(tmp_path: Path) -> None:
    out = claim_folder(tmp_path / "run")
    with pytest.raises(FolderError, match=r"claimed by another run \(pid \d+, still running\)"):
        claim_folder(out)
    release_folder(out)


def test_a_killed_claimant_is_named_as_such(tmp_path: Path) -> None:
    out = tmp_path / "run"
    (out / CLAIM).mkdir(parents=True)
    (out / CLAIM / "owner").write_text(f"{_dead_pid()} {files._host()} 1\n")
    with pytest.raises(FolderError, match="no longer running"):
        claim_folder(out)


def test_an_empty_folder_may_be_claimed_and_is_kept_when_nothing_was_written(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / _temporary_of(_dead_pid(), SAMPLES_CSV)).write_text("t\n1\n")  # a killed run's leftover
    claim_folder(out)
    assert files.claim_owner(out) == (os.getpid(), files._host(), False)
    release_folder(out)
    assert out.is_dir() and list(out.iterdir()) == [], "a person's folder stays; the stale temporary went"


@pytest.mark.parametrize(("setup", "match"), [
    ("file", "exists and is not a folder"),
    ("full", r"already holds files \(run.json\)"),
    ("no-parent", "parent folder .* does not exist"),
    ("under-file", "a parent of it is a file"),
    ("too-long", "File name too long"),
])
def test_unusable_folders_are_refused_in_one_line(tmp_path: Path, setup: str, match: str) -> None:
    out = tmp_path / "out"
    if setup == "file":
        out.write_text("x")
    elif setup == "full":
        out.mkdir()
        (out / "run.json").write_text("{}")
    elif setup == "no-parent":
        out = tmp_path / "missing" / "out"
    elif setup == "under-file":
        (tmp_path / "f").write_text("x")
        out = tmp_path / "f" / "out"
    else:
        out = tmp_path / ("x" * 300)
    with pytest.raises(FolderError, match=match) as info:
        claim_folder(out)
    assert "\n" not in str(info.value)
    if setup == "full":
        assert sorted(p.name for p in out.iterdir()) == ["run.json"], "the refused claim left no marker"


def test_a_stop_before_anything_was_written_leaves_no_folder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt), holding(claim_folder(out)):
        (out / "run.log").touch()  # opened, nothing written
        raise KeyboardInterrupt
    assert not out.exists()
    with pytest.raises(KeyboardInterrupt), holding(claim_folder(out)):
        (out / "modern-r1").mkdir()  # a comparison's first run folder, stopped before its run
        (out / "modern-r1" / "run.log").touch()
        raise KeyboardInterrupt
    assert not out.exists()
    with holding(claim_folder(out)):
        (out / "modern-r1").mkdir()
        (out / "modern-r1" / "run.log").write_text("started\n")
    assert [p.name for p in out.iterdir()] == ["modern-r1"], "something was written: kept"


def test_new_folder_numbers_past_taken_names_and_claims(tmp_path: Path) -> None:
    first = new_folder(tmp_path, "replay", numbered=True)
    second = new_folder(tmp_path, "replay", numbered=True)
    assert (first.name, second.name) == ("replay-1", "replay-2")
    files.release_all()
    assert not first.exists() and not second.exists(), "released empty: removed"


def test_release_all_releases_every_held_folder(tmp_path: Path) -> None:
    a, b = claim_folder(tmp_path / "a"), claim_folder(tmp_path / "b")
    (a / "x").write_text("1")
    files.release_all()
    assert not (a / CLAIM).exists() and not b.exists()


# --- two real runs, one --out ---------------------------------------------------------------


@pytest.mark.smp
def test_two_concurrent_runs_never_share_an_out_folder(tmp_path: Path) -> None:
    """Started together on one --out: exactly one runs into it, the other is refused with
    exit 2 naming --out, and the folder holds one complete run."""
    out = tmp_path / "shared"
    cmd = [sys.executable, "-m", "stress", "--cpus", "1", "--duration", "1", "--interval", "0.25",
           "--quiet", "--out", str(out)]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=240), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, _, err in results if code == 2)
    lines = [ln for ln in refused.splitlines() if ln.strip()]
    assert lines[-1].startswith("zonelimit: error: --out: ") and "Traceback" not in refused
    assert "claimed by another run" in lines[-1] or "already holds files" in lines[-1]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["netstat.txt", "plot.png", "run.json", "run.log", SAMPLES_CSV], names
    rows = (out / SAMPLES_CSV).read_text().splitlines()
    assert len({len(r.split(",")) for r in rows}) == 1, "one writer: every row has the header's width"
    host = json.loads((out / "run.json").read_text())["host"]
    assert len(host["loadavg_start"]) == 3 and len(host["loadavg_end"]) == 3, "the load at start and end"
    assert host["git_commit"] == documents.git_commit() and host["packages"]["zonelimit"]


# --- what a SIGKILLed run leaves, read ------------------------------------------------------------


def _left_by(tmp: Path, pid: int, host: str | None = None, marker: bool = True) -> Path:
    """A run folder as a run of ``pid`` leaves it when SIGKILLed mid-run: its claim marker
    (unless ``marker`` is False), a temporary samples.csv, the files written as it went."""
    out = tmp / "run"
    out.mkdir()
    if marker:
        (out / CLAIM).mkdir()
        (out / CLAIM / "owner").write_text(f"{pid} {host or files._host()} 1\n")
    (out / _temporary_of(pid, SAMPLES_CSV, host)).write_text("t,ops\n0.5,10\n")
    (out / "netstat.txt").write_text("17/97/114 mbufs in use\n")
    return out


@pytest.mark.parametrize(("pid", "host", "marker", "says"), [
    ("dead", None, True, "an incomplete run: its writer (pid"),
    ("dead", None, False, "an incomplete run: its writer was killed"),
    ("me", None, True, "a run still in progress"),
    ("me", "elsewhere", True, "on elsewhere left no result here"),
])
def test_a_folder_without_its_result_says_whose_it_was(tmp_path: Path, pid: str, host: str | None, marker: bool,
                                                      says: str) -> None:
    out = _left_by(tmp_path, _dead_pid() if pid == "dead" else os.getpid(), host, marker)
    why = files.unfinished(out)
    assert why is not None and says in why


def test_a_folder_of_no_writer_is_not_called_unfinished(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("x")
    (tmp_path / "plain" / _temporary_of(os.getpid(), "run.json")).write_text("{")  # a live writer's
    assert files.unfinished(tmp_path / "plain") is None


@pytest.mark.parametrize("command", ["report", "replay"])
def test_report_and_replay_of_a_killed_run_say_incomplete_and_change_nothing(
        tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]) -> None:
    from stress import cli

    out = _left_by(tmp_path, _dead_pid())
    before = sorted(p.name for p in out.iterdir())
    assert cli.main([command, str(out)]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines[-1].startswith("zonelimit: error: RUN_DIR: ") and "no run.json: an incomplete run" in lines[-1]
    assert "Traceback" not in err and sum("error:" in ln for ln in lines) == 1
    assert sorted(p.name for p in out.iterdir()) == before
