"""``--profile``: py-spy following every process of a run, its own speedscope file (the
interactive flame graph, in seconds) and flame graph SVG, and the summary drawn from the
speedscope file: idle apart from work, the hottest work by function and by line, imports
not charged to the run; and the one clear line when py-spy cannot attach (the run itself
must still complete)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stress.output import profile

ROOT = Path(__file__).resolve().parent.parent

SOURCE = """\
def loop():
    os.sched_yield()
    time.sleep(0.001)
    lock.acquire()
    x = compute()
    conn.poll(0.05)
"""


def speedscope(src: Path) -> dict[str, Any]:
    """A document shaped as py-spy writes it: shared frames, one sampled profile per
    process and thread, process frames at the root, weights in seconds."""
    frames = [
        {"name": 'process 100:"python -m stress"', "file": "", "line": 0},  # 0
        {"name": 'process 101:"python -m stress"', "file": "", "line": 0},  # 1
        {"name": "loop", "file": str(src), "line": 2},  # 2: yield
        {"name": "loop", "file": str(src), "line": 3},  # 3: sleep
        {"name": "loop", "file": str(src), "line": 4},  # 4: wait (a lock)
        {"name": "loop", "file": str(src), "line": 5},  # 5: work, calls compute
        {"name": "Ops.bind.<locals>.compute", "file": "/x/zone.py", "line": 80},  # 6: work
        {"name": "_find_and_load", "file": "<frozen importlib._bootstrap>", "line": 1},  # 7: an import
        {"name": "loop", "file": str(src), "line": 6},  # 8: wait (a pipe)
    ]
    cpu0 = {"type": "sampled", "name": 'Process 101 Thread 101 "MainThread"', "unit": "seconds",
            "startValue": 0, "endValue": 1.0,
            "samples": [[0, 1, 2]] * 6 + [[0, 1, 3]] * 1 + [[0, 1, 4]] * 1 + [[0, 1, 5, 6]] * 2,
            "weights": [0.01] * 10}
    manager = {"type": "sampled", "name": 'Process 100 Thread 100 "MainThread"', "unit": "seconds",
               "startValue": 0, "endValue": 1.0, "samples": [[0, 8]] * 4 + [[0, 5]] * 1, "weights": [0.01] * 5}
    importer = {"type": "sampled", "name": 'Process 100 Thread 107 "preload-plot"', "unit": "seconds",
                "startValue": 0, "endValue": 1.0, "samples": [[0, 7]] * 20, "weights": [0.01] * 20}
    return {"$schema": "https://www.speedscope.app/file-format-schema.json", "shared": {"frames": frames},
            "profiles": [cpu0, manager, importer], "activeProfileIndex": 0, "exporter": "py-spy", "name": "x"}


def test_samples_are_attributed_to_their_process_without_process_frames(tmp_path: Path) -> None:
    src = tmp_path / "loop.py"
    src.write_text(SOURCE)
    samples = profile.read_speedscope(speedscope(src))
    assert {s.pid for s in samples} == {100, 101}
    assert {s.thread for s in samples if s.pid == 100} == {"MainThread", "preload-plot"}
    assert all(not f.name.startswith("process ") for s in samples for f in s.frames)
    assert sum(s.seconds for s in samples) == pytest.approx(0.35)


def test_idle_is_told_from_work_by_the_innermost_line(tmp_path: Path) -> None:
    src = tmp_path / "loop.py"
    src.write_text(SOURCE)
    got = profile.summarise(profile.read_speedscope(speedscope(src)), {100: "manager", 101: "cpu0"})
    assert [p.label for p in got] == ["manager", "cpu0"]
    manager, cpu0 = got
    assert manager.imports == pytest.approx(0.20) and manager.total == pytest.approx(0.05)  # imports apart
    assert dict(manager.idle) == pytest.approx({"wait": 0.04})
    assert cpu0.total == pytest.approx(0.10) and cpu0.imports == 0
    assert dict(cpu0.idle) == pytest.approx({"yield": 0.06, "sleep": 0.01, "wait": 0.01})
    assert dict(cpu0.functions) == pytest.approx({"compute (zone.py)": 0.02})  # <locals> dropped
    assert dict(cpu0.lines) == pytest.approx({"zone.py:80 compute": 0.02})
    lines = profile.summary_lines(got)
    assert lines[2] == ("profile: cpu0 (pid 101): 0.1 s sampled; 80% idle (yield 60%, sleep 10%, wait 10%); "
                        "hottest work: compute (zone.py) 20%")
    assert lines[3] == "profile: cpu0 hot lines: zone.py:80 compute 20%"
    assert lines[0].endswith("imports 0.2 s not counted")
    table = "\n".join(profile.table_lines(got))
    assert "== cpu0 (pid 101)" in table and "20.0%  zone.py:80 compute" in table


def test_a_sample_without_a_python_frame_is_a_wait() -> None:
    assert profile.idle_kind(()) == "wait"


def test_missing_py_spy_is_one_line_and_no_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(profile, "py_spy_path", lambda: None)
    handle = profile.start(tmp_path, os.getpid())
    lines = profile.stop(handle)
    assert len(lines) == 1 and "py-spy is not installed" in lines[0] and "pip install py-spy" in lines[0]
    assert not (tmp_path / profile.SUMMARY_FILE).exists()


@pytest.mark.smp
def test_py_spy_that_cannot_attach_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "py-spy"
    fake.write_text("#!/bin/sh\necho 'Error: Permission Denied (os error 13)' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(profile, "py_spy_path", lambda: str(fake))
    run = tmp_path / "run"
    handle = profile.start(run, os.getpid())
    assert handle.proc is not None
    handle.proc.wait(10)
    lines = profile.stop(handle)
    assert lines == profile.stop(handle)  # idempotent
    assert len(lines) == 1 and "cannot attach" in lines[0] and "CAP_SYS_PTRACE" in lines[0]
    assert handle.flame is not None and handle.flame.poll() is not None  # the SVG's recorder is not left running


def _pyspy_usable() -> str | None:
    """Why a real py-spy recording cannot work here, or None."""
    exe = profile.py_spy_path()
    if exe is None:
        return "py-spy is not installed"
    probe = subprocess.run([exe, "dump", "--pid", str(os.getpid())], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return f"py-spy cannot attach here: {(probe.stderr or probe.stdout).strip()[:200]}"
    return None


@pytest.mark.smp
def test_a_profiled_run_leaves_py_spys_speedscope_file_and_a_summary(tmp_path: Path) -> None:
    why = _pyspy_usable()
    if why:
        pytest.skip(why)
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "stress", "--cpus", "2", "--duration", "1.5", "--profile",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    if "cannot attach" in proc.stdout + proc.stderr:
        pytest.skip("py-spy could not attach to the run")
    assert proc.returncode == 0, proc.stderr[-2000:]
    speed = json.loads((out / profile.SPEEDSCOPE_FILE).read_text())
    assert speed["exporter"].startswith("py-spy")  # py-spy's own file: nothing hand-made
    assert {p["unit"] for p in speed["profiles"]} == {"seconds"}
    samples = profile.read_speedscope(speed)
    assert len({s.pid for s in samples}) >= 3  # one sampler followed the manager and both workers
    svg = (out / profile.FLAMEGRAPH_FILE).read_text()
    assert 'xmlns:fg="http://github.com/jonhoo/inferno"' in svg  # py-spy's own renderer (inferno), not ours
    assert svg.count("<title>process ") >= 3 and "worker.py" in svg  # every process, the workers' stacks
    assert [p.name for p in out.glob("*.svg")] == [profile.FLAMEGRAPH_FILE]
    text = proc.stdout
    for label in ("manager", "cpu0", "cpu1"):
        assert f"profile: {label} (pid " in text and f"profile: {label} hot lines: " in text
    assert "% idle" in text and "hottest work: " in text and f"{profile.FLAMEGRAPH_FILE} (py-spy's flame graph" in text
    assert "== cpu0 (pid " in (out / profile.SUMMARY_FILE).read_text()
    doc = json.loads((out / "run.json").read_text())
    assert any("% idle" in line for line in doc["profile"])
