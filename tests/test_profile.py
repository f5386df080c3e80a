"""``--profile``: py-spy sampling of the manager and every worker, turned into a
speedscope file, a flame graph SVG and the hottest functions per process; and the
one clear line when py-spy cannot attach (the run itself must still complete)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from stress.output import profile

ROOT = Path(__file__).resolve().parent.parent

RAW = [
    'process 100:"python -m stress";main (stress/cli.py:10);run (stress/manager.py:20) 5',
    'process 100:"python -m stress";process 101:"python -m stress";loop (stress/worker.py:7);'
    'zalloc (allocator/zone.py:80) 30',
    'process 100:"python -m stress";process 101:"python -m stress";loop (stress/worker.py:7);'
    'm_freem (allocator/mbuf.py:200) 10',
    'process 100:"python -m stress";process 102:"python -m stress";loop (stress/worker.py:7) 4',
    "garbage line without a count",
]


def test_collapsed_stacks_are_attributed_to_the_innermost_process():
    stacks = profile.read_collapsed(RAW)
    assert [(pid, n) for pid, _, n in stacks] == [(100, 5), (101, 30), (101, 10), (102, 4)]
    assert stacks[1][1] == ("loop (stress/worker.py:7)", "zalloc (allocator/zone.py:80)")


def test_hottest_functions_per_process_manager_first():
    stacks = profile.read_collapsed(RAW)
    lines = profile.hottest_lines(stacks, {100: "manager", 101: "cpu0 sender", 102: "cpu1 driver"})
    assert lines[0].startswith("profile: manager (pid 100): 5 samples")
    cpu0 = next(ln for ln in lines if "cpu0 sender" in ln)
    assert "40 samples" in cpu0 and "zalloc (zone.py) 75%" in cpu0 and "m_freem (mbuf.py) 25%" in cpu0


def test_speedscope_and_svg_are_parseable(tmp_path):
    stacks = profile.read_collapsed(RAW)
    labels = {100: "manager"}
    profile.write_speedscope(tmp_path / "p.json", stacks, labels)
    profile.write_flamegraph(tmp_path / "p.svg", stacks, labels)
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["$schema"].endswith("file-format-schema.json")
    assert len(doc["profiles"]) == 3
    frames = doc["shared"]["frames"]
    for prof in doc["profiles"]:
        assert prof["type"] == "sampled" and len(prof["samples"]) == len(prof["weights"])
        assert all(0 <= i < len(frames) for s in prof["samples"] for i in s)
    assert sum(sum(p["weights"]) for p in doc["profiles"]) == 49
    svg = ET.parse(tmp_path / "p.svg").getroot()
    titles = [t.text or "" for t in svg.iter("{http://www.w3.org/2000/svg}title")]
    assert any(t.startswith("zalloc (allocator/zone.py:80): 30 samples") for t in titles)


def test_missing_py_spy_is_one_line_and_no_files(tmp_path, monkeypatch):
    monkeypatch.setattr(profile, "py_spy_path", lambda: None)
    handle = profile.start(tmp_path, os.getpid())
    lines = profile.stop(handle)
    assert len(lines) == 1 and "py-spy is not installed" in lines[0] and "pip install py-spy" in lines[0]
    assert not (tmp_path / profile.SVG_FILE).exists()


@pytest.mark.smp
def test_py_spy_that_cannot_attach_says_what_to_do(tmp_path, monkeypatch):
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
def test_profile_run_writes_speedscope_and_flamegraph(tmp_path):
    why = _pyspy_usable()
    if why:
        pytest.skip(why)
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "stress", "--cpus", "2", "--duration", "1.5", "--profile",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    if "cannot attach" in proc.stdout + proc.stderr:
        pytest.skip("py-spy could not attach to the run")
    assert proc.returncode == 0, proc.stderr[-2000:]
    speed = json.loads((out / profile.SPEEDSCOPE_FILE).read_text())
    assert speed["profiles"] and sum(sum(p["weights"]) for p in speed["profiles"]) > 0
    assert len(speed["profiles"]) >= 2  # the workers (and the manager) were followed
    svg = ET.parse(out / profile.SVG_FILE).getroot()
    assert any(True for _ in svg.iter("{http://www.w3.org/2000/svg}rect"))
    assert "hottest (self)" in proc.stdout + proc.stderr
