"""The test machinery of docs/testing.md: the CPU hog leaves nothing behind, and the
``smp`` rule fails an unmarked test that starts a process or sleeps."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.hog import Hog

pytestmark = pytest.mark.smp  # starts processes
ROOT = Path(__file__).resolve().parent.parent


def _cpus_allowed(pid: int) -> str:
    with open(f"/proc/{pid}/status") as f:
        return next(line.split()[1] for line in f if line.startswith("Cpus_allowed_list"))


def test_hog_runs_one_pinned_loop_per_core_and_stop_leaves_none() -> None:
    cores = sorted(os.sched_getaffinity(0))
    hog = Hog.start(60.0)
    try:
        assert hog.alive() == len(cores) == len(hog.procs)
        for core, p in zip(cores, hog.procs, strict=True):
            end = time.monotonic() + 30  # the child pins itself once its interpreter is up
            while _cpus_allowed(p.pid) != str(core) and time.monotonic() < end:
                time.sleep(0.01)
            assert _cpus_allowed(p.pid) == str(core)
            assert os.getpriority(os.PRIO_PROCESS, p.pid) == os.getpriority(os.PRIO_PROCESS, 0)
    finally:
        hog.stop()
    assert hog.alive() == 0 and hog.died_early == []
    for p in hog.procs:
        assert not os.path.exists(f"/proc/{p.pid}") or p.returncode is not None


def test_a_hog_that_died_during_the_session_is_reported() -> None:
    hog = Hog.start(60.0, cores=[sorted(os.sched_getaffinity(0))[0]])
    os.kill(hog.procs[0].pid, signal.SIGKILL)
    hog.procs[0].wait()
    hog.stop()
    hog.stop()  # idempotent
    assert hog.died_early == hog.cores


INNER = """
import os, subprocess, sys, time
import pytest

def test_forks():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)

def test_runs_a_command():
    subprocess.run([sys.executable, "-c", "pass"], check=True)

def test_sleeps():
    time.sleep(0.001)

def test_computes():
    assert sum(range(10)) == 45

@pytest.mark.smp
def test_marked_forks():
    subprocess.run([sys.executable, "-c", "pass"], check=True)
"""


def test_an_unmarked_test_that_forks_or_sleeps_fails(tmp_path: Path) -> None:
    """The rule's enforcement, run on a small suite with this project's conftest."""
    (tmp_path / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())
    (tmp_path / "test_inner.py").write_text(INNER)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    smp: marked\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", str(tmp_path)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    out = r.stdout
    assert "3 failed, 2 passed" in out, out
    for test, event in [("test_forks", "os.fork"), ("test_runs_a_command", "subprocess.Popen"),
                        ("test_sleeps", "time.sleep")]:
        assert f"FAILED test_inner.py::{test} - " in out, out
        assert f"this test uses {event} but is not marked smp" in out, out
