"""Stopping a run: the signals that ask for it, and the workers that must all be gone after it.

**Signals.**  SIGINT and SIGTERM (to the manager or its whole group) only set a flag
(:class:`StopSignals`): the manager's loop sees it, stops the run cleanly, audits, and
the run folder is written, with exit 130 or 143.  The handlers stay installed until the
run folder is written, so a second Ctrl-C cannot tear run.json.

**Workers** (:func:`stop_workers`): the stop flag first; every CPU that is not asleep
gets up to :data:`STOP_GRACE` seconds to see it and leave its loop.  A CPU asleep in
zonelimit cannot be woken -- the sleep has no timeout, faithfully -- so once only
sleepers are left (nobody remains who could wake them) they are SIGKILLed; they sleep
at a safe point, holding no lock, with everything recorded in the arena.  Not earlier: a
CPU being woken by another CPU's free re-takes the keg lock, and a kill there would
leave the lock held.  A CPU still running after the grace period (blocked on a lock
whose holder died) is SIGKILLed too.  Every process is reaped before this returns.
"""

from __future__ import annotations

import logging
import multiprocessing.connection
import os
import signal
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

log = logging.getLogger("zonelimit")

STOP_GRACE = 1.5  #: seconds workers get to see the stop flag before SIGKILL
SLEEPER_SETTLE = 0.02  #: seconds between "only sleepers are left" and killing them


class StopSignals:
    """SIGINT/SIGTERM recorded instead of raised, while the ``with`` block runs.

    Installed only in the main thread (a comparison may run us elsewhere; signals are
    delivered to the main thread anyway).  ``name`` is the last signal seen, or None.
    """

    def __init__(self) -> None:
        self.name: str | None = None
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        self.name = signal.Signals(signum).name

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old.clear()


@dataclass
class WorkerHandle:
    """The manager's view of worker k."""

    cpu: int
    core: int
    proc: Any  # multiprocessing.Process
    conn: Any  # read end of the worker's pipe
    message: tuple[str, str] | None = None  #: ("error" | "panic", traceback text)
    killed_asleep: bool = False
    killed_stuck: bool = False


def kill(pid: int) -> None:
    """SIGKILL ``pid``; gone already is fine."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def read_message(h: WorkerHandle) -> None:
    """Take the worker's one message (its traceback) off its pipe, if it sent one."""
    try:
        while h.message is None and h.conn.poll():
            h.message = h.conn.recv()
    except (EOFError, OSError):
        pass


def stop_workers(workers: list[WorkerHandle], uma: Any) -> None:
    """Stop flag; let every CPU that is not asleep stop by itself; then SIGKILL the CPUs
    still asleep in zonelimit and any CPU stuck past the grace period; reap all (see the
    module docstring for why in this order)."""
    if uma is not None:
        uma.request_stop()
    wchan = uma.view("cpu_wchan") if uma is not None else None

    def asleep(h: WorkerHandle) -> bool:
        return bool(wchan is not None and wchan[h.cpu])

    alive = [h for h in workers if h.proc.is_alive()]
    end = time.monotonic() + STOP_GRACE
    while alive and time.monotonic() < end:
        awake = [h for h in alive if not asleep(h)]
        if not awake:
            time.sleep(SLEEPER_SETTLE)  # a CPU woken just now clears its wchan and runs on
            for h in alive:
                if asleep(h) and h.proc.is_alive():
                    h.killed_asleep = True
                    log.info("CPU %d (pid %d) asleep in zonelimit at stop: SIGKILL", h.cpu, h.proc.pid)
                    kill(h.proc.pid)
        multiprocessing.connection.wait([h.proc.sentinel for h in alive], timeout=0.05)
        alive = [h for h in alive if h.proc.is_alive()]
    for h in alive:
        if asleep(h):
            h.killed_asleep = True
        else:
            h.killed_stuck = True
            log.warning("CPU %d (pid %d) did not stop within %.1f s: SIGKILL", h.cpu, h.proc.pid, STOP_GRACE)
        kill(h.proc.pid)
    for h in workers:
        h.proc.join(timeout=5)
        read_message(h)
        if h.proc.exitcode is None:  # cannot happen after SIGKILL; never hang on it
            kill(h.proc.pid)
            h.proc.join(timeout=1)
