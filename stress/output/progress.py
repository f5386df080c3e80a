"""Progress of a command that makes many runs (compare, race, bench), drawn with rich.

    compare / race / bench                RunProgress                      terminal (stdout)
    ----------------------                -----------                      -----------------
    RunProgress(total, what, enabled) --> rich Progress, not live yet
    start(label)  (a run begins)      --> description, the run's clock --> [####....] 3/12 runs  run 4.1 s
    done()        (a run ended)       --> one more completed                elapsed 0:41  ETA 1:58
    say(line)     (a line to keep)    --> printed above the bar
    plan(n)       (more runs: --precision) total grows
    close()                           --> the bar is erased (transient)

A person watching a comparison of forty runs wants to know how far it is and when it
will end: runs done of the total, the current run's elapsed time and an ETA (rich's,
from the pace of the runs done so far).  It is drawn only for a person: off under
``--quiet`` and whenever stdout is not a terminal (a pipe, a file, CI), where the
commands' own lines are all there is.  The ETA is the pace of the runs done so far
(elapsed / done x left): the runs of one command are alike in length.

Why our own refresh thread, and the fork guard.  The bar must tick while a run goes on,
and a run is made in this very process: the manager forks its workers while the bar
lives.  A thread that happened to be writing to stdout at the moment of a fork would
leave the child a stdout whose lock is held forever, and a worker flushes stdout when it
exits: it would hang, be killed as stuck, and spoil the run.  So rich draws only when we
say (``auto_refresh=False``): a small thread of ours refreshes under :attr:`RunProgress.lock`,
and an ``os.register_at_fork`` hook takes that lock around every fork, so no child is
forked while the bar is being written.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from types import TracebackType
from typing import Any, TextIO

REFRESH_S = 0.25  #: how often the bar is redrawn

_LIVE: list[RunProgress] = []  #: the bars being drawn now (the fork hook holds their locks)


def _before_fork() -> None:
    for p in list(_LIVE):
        p.lock.acquire()


def _after_fork_in_parent() -> None:
    for p in reversed(list(_LIVE)):
        p.lock.release()


def _after_fork_in_child() -> None:
    _LIVE.clear()  # the child draws nothing; its copies of the locks are never used


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)


def eta(elapsed: float, done: int, total: int | None) -> str:
    """The time left at the pace so far (``h:mm:ss``), ``-`` before the first run ends
    or when the total is not known (a hunt with a time budget)."""
    if total is None:
        return "-"
    if done <= 0 or total <= done:
        return "-" if done <= 0 else "0:00:00"
    left = int(round(elapsed / done * (total - done)))
    return f"{left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}"


def wanted(quiet: bool, stream: TextIO | None = None) -> bool:
    """Whether to draw: not ``--quiet``, and the stream (stdout) is a terminal."""
    stream = stream if stream is not None else sys.stdout
    isatty = getattr(stream, "isatty", None)
    return not quiet and bool(isatty and isatty())


class RunProgress:
    """Runs done of ``total``, the current run's elapsed time, the elapsed and the ETA.

    A disabled one draws nothing; :meth:`say` still prints (plainly) unless
    ``quiet_lines``.  Use it as a context manager, or call :meth:`close` (safe twice).
    """

    def __init__(self, total: int | None, what: str = "runs", enabled: bool = True,
                 stream: TextIO | None = None, quiet_lines: bool = False) -> None:
        self.total = total
        self.what = what
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stdout
        self.quiet_lines = quiet_lines
        self.lock = threading.Lock()
        self.t0 = time.monotonic()
        self.run_started: float | None = None
        self.completed = 0
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._progress: Any = None
        self._task: Any = None
        if enabled:
            self._open()

    def _open(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        console = Console(file=self.stream, force_terminal=True)
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(self.what),
            TextColumn("{task.fields[run]}"), TextColumn("elapsed"), TimeElapsedColumn(),
            TextColumn("{task.fields[eta]}"), console=console, auto_refresh=False, transient=True,
            redirect_stdout=False, redirect_stderr=False)
        self._task = self._progress.add_task("", total=self.total, run="", eta="ETA -")
        self._progress.start()
        _LIVE.append(self)
        self._thread = threading.Thread(target=self._refresh_loop, name="progress", daemon=True)
        self._thread.start()

    def _refresh_loop(self) -> None:
        while not self._done.wait(REFRESH_S):
            with self.lock:
                self._draw()

    def _draw(self) -> None:
        """Redraw (the caller holds :attr:`lock`)."""
        if self._progress is None:
            return
        now = time.monotonic()
        run = "" if self.run_started is None else f"run {now - self.run_started:5.1f} s"
        self._progress.update(self._task, run=run, eta=f"ETA {eta(now - self.t0, self.completed, self.total)}")
        self._progress.refresh()

    def start(self, label: str) -> None:
        """A run begins: its label and its clock."""
        with self.lock:
            self.run_started = time.monotonic()
            if self._progress is not None:
                self._progress.update(self._task, description=label)
                self._draw()

    def done(self) -> None:
        """The current run ended."""
        with self.lock:
            self.completed += 1
            self.run_started = None
            if self._progress is not None:
                self._progress.update(self._task, completed=self.completed)
                self._draw()

    def plan(self, total: int) -> None:
        """The total changed (``--precision`` adds repeats)."""
        with self.lock:
            self.total = total
            if self._progress is not None:
                self._progress.update(self._task, total=total)
                self._draw()

    def say(self, line: str) -> None:
        """A line to keep, printed above the bar (or plainly when the bar is off)."""
        if self.quiet_lines:
            return
        with self.lock:
            if self._progress is not None:
                self._progress.console.print(line, markup=False, highlight=False, soft_wrap=True)
                self._draw()
            else:
                print(line, file=self.stream, flush=True)

    def close(self) -> None:
        """Erase the bar and stop drawing (safe twice)."""
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        with self.lock:
            if self._progress is not None:
                self._progress.stop()
                self._progress = None
            if self in _LIVE:
                _LIVE.remove(self)

    def __enter__(self) -> RunProgress:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
