"""The manager's bounded lock: ``lock_within`` gives up on a lock whose holder is
stopped, and the owner word names that holder (allocator/lock.py)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from allocator import Uma, UmaConfig
from allocator.layout import LOCK_KEG_MBUF, LOCK_NAMES, ArraySpec
from allocator.lock import P_DRAIN, P_ZALLOC

pytestmark = pytest.mark.smp  # a second process and a timeout


def _wait_for(cond, timeout: float = 30.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.005)
    return False


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


def _hold_then_stop(uma: Uma) -> None:
    """CPU 1: take the mbuf keg lock, say so, stop itself; once continued, release."""
    code = 1
    try:
        c = uma.cpu(1)
        c.lock(LOCK_KEG_MBUF, P_ZALLOC)
        uma.view("held")[0] = 1
        os.kill(os.getpid(), signal.SIGSTOP)
        c.unlock(LOCK_KEG_MBUF)
        code = 0
    finally:
        os._exit(code)


def test_a_free_lock_is_taken_at_once_and_named() -> None:
    uma = Uma.create(UmaConfig(ncpus=2, nmbclusters=64))
    try:
        mgr = uma.manager()
        assert mgr.lock_holder(LOCK_KEG_MBUF) == -1
        assert mgr.lock_within(LOCK_KEG_MBUF, P_DRAIN, 0.0)
        assert mgr.lock_holder(LOCK_KEG_MBUF) == uma.geometry.ncpus  # the manager's row
        mgr.unlock(LOCK_KEG_MBUF)
        assert mgr.lock_holder(LOCK_KEG_MBUF) == -1 and uma.lock_holders() == []
    finally:
        uma.close()


def test_a_stopped_holder_times_the_manager_out_and_is_named() -> None:
    uma = Uma.create(UmaConfig(ncpus=2, nmbclusters=64, extra=(ArraySpec("held", "q", 1, "CPU 1 holds it"),)))
    pid = os.fork()
    if pid == 0:
        _hold_then_stop(uma)
    try:
        assert _wait_for(lambda: uma.view("held")[0] == 1 and _stopped(pid))
        mgr = uma.manager()
        assert not mgr.lock_within(LOCK_KEG_MBUF, P_DRAIN, 0.2)  # the holder cannot release it
        assert mgr.lock_holder(LOCK_KEG_MBUF) == 1
        assert uma.lock_holders() == [(LOCK_NAMES[LOCK_KEG_MBUF], 1)]
        os.kill(pid, signal.SIGCONT)
        assert mgr.lock_within(LOCK_KEG_MBUF, P_DRAIN, 60.0)  # released once it runs again
        assert mgr.lock_holder(LOCK_KEG_MBUF) == uma.geometry.ncpus
        mgr.unlock(LOCK_KEG_MBUF)
        assert os.waitpid(pid, 0)[1] == 0
        pid = 0
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        uma.close()
