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


@pytest.mark.parametrize("lock_profile", [False, True])
def test_a_bounded_context_gives_up_names_the_holder_and_lets_go_of_its_own_locks(lock_profile: bool) -> None:
    """``Cpu.bound``: every lock the manager's context takes -- here through a real
    operation, a zone drain -- raises LockTimeout instead of blocking forever; the
    locks it held are released; a give-up request ends the wait at once."""
    from allocator import LockTimeout
    from allocator.layout import LOCK_BUCKET, ZONE_MBUF

    uma = Uma.create(UmaConfig(ncpus=2, nmbclusters=64, lock_profile=lock_profile,
                               extra=(ArraySpec("held", "q", 1, "CPU 1 holds it"),)))
    pid = os.fork()
    if pid == 0:
        _hold_then_stop(uma)
    try:
        assert _wait_for(lambda: uma.view("held")[0] == 1 and _stopped(pid))
        mgr = uma.manager()
        asked = [False]
        mgr.bound(0.3, lambda: asked[0])
        assert mgr.lock_within(LOCK_BUCKET, P_DRAIN, 0.0)  # held by the manager when it gives up
        with pytest.raises(LockTimeout) as info:
            uma.zone_drain(ZONE_MBUF)
        e = info.value
        assert (e.lock, e.holder, e.gave_up, e.name) == (LOCK_KEG_MBUF, 1, False, LOCK_NAMES[LOCK_KEG_MBUF])
        assert e.waited >= 0.3 and "CPU" not in str(e)  # the allocator names rows; the tester names CPUs
        assert uma.lock_holders() == [(LOCK_NAMES[LOCK_KEG_MBUF], 1)]  # its own bucket lock: released
        asked[0] = True
        mgr.bound(3600.0, lambda: asked[0])
        with pytest.raises(LockTimeout) as info:
            uma.zone_drain(ZONE_MBUF)
        assert info.value.gave_up
        os.kill(pid, signal.SIGCONT)
        asked[0] = False
        uma.zone_drain(ZONE_MBUF)  # the holder let go: the drain goes through
        assert uma.lock_holders() == []
        assert os.waitpid(pid, 0)[1] == 0
        pid = 0
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        uma.close()
