"""Stopping: the one mechanism every command uses for SIGINT and SIGTERM, and the
workers that must all be gone after a run.

**Signals** (:class:`StopSignals`).  One per process, installed for a whole command
(:func:`command_signals`, by stress.cli) and used by every run the command makes
(:func:`stress.engine.runner.execute` picks it up; it installs its own only when called
without one, from a test or a script).  A signal never raises by default: it is
*recorded* (the first one wins: its name, its time), and what was asked to happen on
a stop happens at once, from the handler:

- the run in progress hears it through a hook (:meth:`StopSignals.on_stop`): the
  manager's hook raises the arena's stop flag, so every worker leaves its loop at its
  next turn (or, under the token, at its next sched point), while the manager's loop,
  its bounded lock waits and its drain see :attr:`StopSignals.requested` within 50 ms;
- a loop over runs (race seeds, compare configurations, bench figures) calls
  :meth:`StopSignals.check` before it starts the next one: no new run or seed starts;
- code that may be cut anywhere without leaving anything half written (bench's
  measurement loops) runs in :meth:`StopSignals.raising`: there the signal raises
  :class:`Stopped` at once.

:class:`Stopped` is a ``KeyboardInterrupt``, so whatever already treats Ctrl-C as "end
now" (a ``finally`` that reaps children, options.call_guarded) treats SIGTERM alike;
it carries the signal's exit code, 130 or 143.  A signal that comes after a command
has written its last document would make the process's exit code disagree with the
document; :meth:`StopSignals.freeze` marks that point: later signals are ignored (the
result is complete and written, and says how it ended).

Signals before any of this exists -- while Python imports the tester -- are caught by
the handler ``python -m stress`` installs before its first import (stress/__main__.py)
and handed over with :func:`early_signals`; the command's StopSignals records them when
it is installed and the command stops before anything starts: no traceback, no folder,
exit 130 or 143.  A forked child inherits the handler until it installs its
own; the handler does nothing in any process but the one that installed it.

**Workers** (:func:`stop_workers`): the stop flag first; every CPU that is not asleep
gets up to :data:`STOP_GRACE` seconds (:data:`SIGNAL_GRACE` after a signal) to see it
and leave its loop.  A CPU asleep in zonelimit cannot be woken -- the sleep has no
timeout, faithfully -- so once only sleepers are left (nobody remains who could wake
them) they are SIGKILLed; they sleep at a safe point, holding no lock, with
everything recorded in the arena.  Not earlier: a CPU being woken by another CPU's
free re-takes the keg lock, and a kill there would leave the lock held.  A CPU still
running after the grace period (stopped, or blocked on a lock whose holder is stopped
or died) is stuck: the caller is told (``before_kill``, to take its post-mortem) and
it is SIGKILLed.  Every process is reaped before this returns.
"""

from __future__ import annotations

import logging
import multiprocessing.connection
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Any

from stress.options import EX_SIGINT, EX_SIGTERM

log = logging.getLogger("zonelimit")

STOP_GRACE = 1.5  #: seconds workers get to see the stop flag before SIGKILL
SIGNAL_GRACE = 0.5  #: the same after a signal: the user asked to stop within a second
SLEEPER_SETTLE = 0.02  #: seconds between "only sleepers are left" and killing them
SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_CODES = {"SIGINT": EX_SIGINT, "SIGTERM": EX_SIGTERM}  #: the shell's 128 + signal number


class Stopped(KeyboardInterrupt):
    """A stop signal ended what was running; ``exit_code`` is 130 (SIGINT) or 143 (SIGTERM)."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal = signal_name
        self.exit_code = EXIT_CODES.get(signal_name, EX_SIGINT)


class StopSignals:
    """SIGINT/SIGTERM recorded instead of raised, while installed (see the module doc).

    Installed only in the main thread (signals are delivered there anyway); ``name`` is
    the first signal seen (None: none), ``at`` its ``time.monotonic()``."""

    def __init__(self) -> None:
        self.name: str | None = None
        self.at: float | None = None
        self.late: str | None = None  #: a signal that came after freeze() (ignored)
        self._hooks: list[Callable[[], None]] = []
        self._raising = 0
        self._frozen = False
        self._pid = os.getpid()
        self._old: dict[int, Any] = {}

    # --- the handler ----------------------------------------------------------------------
    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self._pid:  # a forked child that has not installed its own yet
            return
        self.note(signal.Signals(signum).name)
        if self._raising and not self._frozen:
            raise Stopped(str(self.name))

    def note(self, name: str) -> None:
        """Record signal ``name`` (the handler's work; also an early signal handed over)."""
        if self._frozen:
            self.late = self.late or name
            return
        if self.name is None:
            self.name, self.at = name, time.monotonic()
        for hook in list(self._hooks):
            try:
                hook()
            except Exception:  # noqa: BLE001 - a hook must never turn a signal into a crash
                log.exception("stop hook failed")

    # --- installing -----------------------------------------------------------------------
    def install(self) -> StopSignals:
        """Take SIGINT and SIGTERM over (main thread only); signals caught early by
        :func:`install_early` are recorded now."""
        if threading.current_thread() is threading.main_thread():
            self._pid = os.getpid()
            for s in SIGNALS:
                self._old[s] = signal.signal(s, self._handler)
            for name in _take_early():
                self.note(name)
        return self

    def restore(self) -> None:
        """Give the handlers back (safe twice)."""
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old.clear()

    def __enter__(self) -> StopSignals:
        return self.install()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.restore()

    # --- asking -----------------------------------------------------------------------------
    @property
    def requested(self) -> bool:
        """Whether a stop signal came (before :meth:`freeze`)."""
        return self.name is not None

    @property
    def exit_code(self) -> int | None:
        """130 or 143 after a signal, else None."""
        return EXIT_CODES.get(self.name, EX_SIGINT) if self.name else None

    def since(self) -> float | None:
        """Seconds since the signal came, or None."""
        return None if self.at is None else time.monotonic() - self.at

    def check(self) -> None:
        """Raise :class:`Stopped` if a stop signal came: call before starting anything new."""
        if self.name:
            raise Stopped(self.name)

    @contextmanager
    def raising(self) -> Iterator[None]:
        """Inside, a signal raises :class:`Stopped` at once (and one already seen, on entry)."""
        self.check()
        self._raising += 1
        try:
            yield
        finally:
            self._raising -= 1

    @contextmanager
    def on_stop(self, hook: Callable[[], None]) -> Iterator[None]:
        """Call ``hook`` from the handler when a stop signal comes while inside (at once
        if one already came).  The hook must be quick and safe anywhere: set a flag."""
        self._hooks.append(hook)
        try:
            if self.name:
                hook()
            yield
        finally:
            self._hooks.remove(hook)

    def freeze(self) -> str | None:
        """From now on signals are ignored: the command's last document is written (or
        about to be rewritten to say how it ended).  Returns the signal that came before,
        if any, so the caller can make the document say so."""
        self._frozen = True
        return self.name


_process: StopSignals | None = None  #: the command's, while one is installed
_early: list[str] = []  #: signals caught by install_early, not yet handed over


def current() -> StopSignals | None:
    """The StopSignals of the command running in this process, if any."""
    return _process


@contextmanager
def command_signals() -> Iterator[StopSignals]:
    """The process's StopSignals for the duration of a command (or a run made without
    one): installed on entry, handlers given back on exit.  Nested use gets the same one."""
    global _process
    if _process is not None and _process._pid == os.getpid():
        yield _process
        return
    s = StopSignals().install()
    _process = s
    try:
        yield s
    finally:
        s.restore()
        _process = None


def early_signals(names: list[str]) -> None:
    """Adopt the list the start-up handler of ``python -m stress`` appends signal names
    to; the next StopSignals installed takes them (and the handler's later ones)."""
    global _early
    _early = names


def _take_early() -> list[str]:
    names = list(_early)
    _early.clear()
    return names


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


def stop_workers(workers: list[WorkerHandle], uma: Any, grace: float = STOP_GRACE,
                 before_kill: Callable[[list[WorkerHandle]], None] | None = None) -> None:
    """Stop flag; let every CPU that is not asleep stop by itself within ``grace``; then
    SIGKILL the CPUs still asleep in zonelimit and, after ``before_kill`` saw them, any
    CPU stuck past the grace period; reap all (see the module docstring for why in
    this order)."""
    if uma is not None:
        uma.request_stop()
    wchan = uma.view("cpu_wchan") if uma is not None else None

    def asleep(h: WorkerHandle) -> bool:
        return bool(wchan is not None and wchan[h.cpu])

    alive = [h for h in workers if h.proc.is_alive()]
    end = time.monotonic() + grace
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
    stuck = [h for h in alive if not asleep(h)]
    if stuck and before_kill is not None:
        try:
            before_kill(stuck)
        except Exception:  # noqa: BLE001 - a failed post-mortem must not keep a process alive
            log.exception("post-mortem of the stuck CPUs failed")
    for h in alive:
        if asleep(h):
            h.killed_asleep = True
        else:
            h.killed_stuck = True
            log.warning("CPU %d (pid %d) did not stop within %.1f s: SIGKILL", h.cpu, h.proc.pid, grace)
        kill(h.proc.pid)
    for h in workers:
        h.proc.join(timeout=5)
        read_message(h)
        if h.proc.exitcode is None:  # cannot happen after SIGKILL; never hang on it
            kill(h.proc.pid)
            h.proc.join(timeout=1)
