"""Nothing survives a run: no process, no /dev/shm entry, no semaphore, on every exit path.

architecture.md, hard requirement 5: normal end, Ctrl-C (SIGINT), SIGTERM, SIGKILL of one
worker, SIGKILL of the manager.  Each case runs ``python -m stress`` as a user would, in
a fresh process group whose every member carries a unique token in its environment,
so that any survivor can be found (and is killed after the check, never left behind).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.smp  # every test here runs stress workers (docs/testing.md)

ROOT = Path(__file__).resolve().parent.parent


def shm() -> set[str]:
    try:
        return set(os.listdir("/dev/shm"))
    except OSError:
        return set()


def in_use(name: str) -> bool:
    """Whether a live process maps or holds open /dev/shm/NAME: then it is not a run's
    leftover (every process of the run is gone when this is asked), but another
    program's on the same machine, for example a multiprocessing pool's semaphore."""
    path = f"/dev/shm/{name}"
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if path in Path(f"/proc/{entry}/maps").read_text():
                return True
            for fd in os.listdir(f"/proc/{entry}/fd"):
                if os.readlink(f"/proc/{entry}/fd/{fd}") == path:
                    return True
        except OSError:
            continue
    return False


def tagged(token: str) -> list[int]:
    """Every process whose environment carries the token."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                env = Path(f"/proc/{entry}/environ").read_bytes()
            except OSError:
                continue
            if f"ZL_LEFTOVER_TOKEN={token}".encode() in env:
                out.append(int(entry))
    return out


def wait_until(cond: object, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def start(tmp_path: Path, duration: float) -> tuple[subprocess.Popen[bytes], str]:
    token = uuid.uuid4().hex
    env = dict(os.environ, ZL_LEFTOVER_TOKEN=token, MPLBACKEND="Agg")
    proc = subprocess.Popen(
        [sys.executable, "-m", "stress", "--cpus", "2", "--duration", str(duration),
         "--interval", "0.5", "--quiet", "--out", str(tmp_path / "run")],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return proc, token


def finish(proc: subprocess.Popen[bytes], token: str, shm_before: set[str]) -> int:
    """Wait for the manager, then check and clean up."""
    try:
        rc = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail("the manager did not exit within 30 s")
    wait_until(lambda: not tagged(token), 10)
    left = tagged(token)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    assert not left, f"processes left behind: {left}"
    # Settle first: /dev/shm is the machine's, and glibc's sem_open writes a semaphore to a
    # temporary sem.XXXXXX before linking it under its name, so a semaphore another
    # process creates meanwhile (another test run) shows for an instant.  What we left
    # behind stays, and no live process holds it (another program's entry is in use).
    wait_until(lambda: not shm() - shm_before, 2)
    new = {name for name in shm() - shm_before if not in_use(name)}
    assert not new, f"/dev/shm entries left behind (segments or sem.* semaphores): {sorted(new)}"
    return rc


def running(proc: subprocess.Popen[bytes], token: str) -> list[int]:
    """Wait for the two workers; return their pids."""
    assert wait_until(lambda: len([p for p in tagged(token) if p != proc.pid]) >= 2, 20), \
        "workers never started"
    time.sleep(0.5)  # let them get into the allocator
    return [p for p in tagged(token) if p != proc.pid]


def stderr_of(proc: subprocess.Popen[bytes]) -> str:
    return proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""


def test_normal_end_leaves_nothing(tmp_path: Path) -> None:
    before = shm()
    proc, token = start(tmp_path, 1)
    rc = finish(proc, token, before)
    assert rc == 0, stderr_of(proc)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_to_manager_stops_cleanly_with_a_partial_result(tmp_path: Path, sig: int, code: int) -> None:
    before = shm()
    proc, token = start(tmp_path, 60)
    running(proc, token)
    proc.send_signal(sig)
    rc = finish(proc, token, before)
    assert rc == code, stderr_of(proc)
    assert (tmp_path / "run" / "run.json").exists(), "no partial result"


def test_sigkill_of_a_worker_is_reported_and_leaves_nothing(tmp_path: Path) -> None:
    before = shm()
    proc, token = start(tmp_path, 60)
    workers = running(proc, token)
    os.kill(workers[0], signal.SIGKILL)
    rc = finish(proc, token, before)
    stderr = stderr_of(proc)
    assert rc == 3, stderr
    doc = json.loads((tmp_path / "run" / "run.json").read_text())
    assert "killed by SIGKILL" in doc["error"], (doc.get("error"), stderr)


def test_sigkill_of_the_manager_takes_the_workers_along(tmp_path: Path) -> None:
    before = shm()
    proc, token = start(tmp_path, 60)
    running(proc, token)
    proc.send_signal(signal.SIGKILL)
    assert finish(proc, token, before) == -signal.SIGKILL
