"""A child run dies with the process that started it, not with the thread
(stress/engine/lifeline.py): the case of a Dask task's thread ending before its worker."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from stress.engine.lifeline import Lifeline

ROOT = Path(__file__).resolve().parent.parent
#: holds its lifeline, then answers one line per line it reads, until stdin closes
CHILD = ("import sys; from stress.engine import lifeline; lifeline.hold_from_env(); "
         "[print(line.strip(), flush=True) for line in sys.stdin]")

#: holds its lifeline and sleeps: nothing but the line ends it early
SLEEPER = "from stress.engine import lifeline; lifeline.hold_from_env(); import time; time.sleep(60)"

pytestmark = pytest.mark.smp


def _start(line: Lifeline) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD], cwd=ROOT, env={**os.environ, **line.env()},
                            pass_fds=(line.read_fd,), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line.started()
    return proc


def _answers(proc: subprocess.Popen[str], word: str) -> bool:
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(word + "\n")
        proc.stdin.flush()
    except BrokenPipeError:
        return False
    return proc.stdout.readline().strip() == word


def _gone(pid: int, timeout: float = 30.0) -> bool:
    """Whether the process ``pid`` (not our child) ended within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.02)
    return False


def test_a_child_outlives_the_thread_that_started_it_and_dies_with_the_line() -> None:
    line = Lifeline()
    box: list[subprocess.Popen[str]] = []
    def start_and_wait_till_armed() -> None:
        box.append(_start(line))
        assert _answers(box[0], "armed")  # past hold(): the thread ends after the child armed itself

    starter = threading.Thread(target=start_and_wait_till_armed)
    starter.start()
    starter.join()
    tid = starter.native_id
    deadline = time.monotonic() + 30  # the OS thread itself is gone, not only its Python side
    while Path(f"/proc/self/task/{tid}").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    (proc,) = box
    try:
        assert _answers(proc, "alive")  # PR_SET_PDEATHSIG would have killed it with the thread
        line.close()  # what the kernel does when this process dies
        assert proc.wait(timeout=30) == -9
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        line.close()


def test_a_child_dies_when_its_parent_process_is_sigkilled() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, os, time; from stress.engine.lifeline import Lifeline; "
                               f"line = Lifeline(); p = subprocess.Popen([sys.executable, '-c', {SLEEPER!r}], "
                               "env={**os.environ, **line.env()}, pass_fds=(line.read_fd,)); "
                               "line.started(); print(p.pid, flush=True); time.sleep(60)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    child = 0
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        parent.kill()
        parent.wait()
        assert _gone(child)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if child and not _gone(child, 0):
            os.kill(child, 9)


def test_a_child_whose_parent_is_already_gone_exits_at_once() -> None:
    line = Lifeline()
    os.close(line.write_fd)  # the parent "died" before the child armed its line
    line.write_fd = -1
    proc = _start(line)
    out, _ = proc.communicate("never read\n", timeout=30)
    assert proc.returncode == 3 and out == ""
