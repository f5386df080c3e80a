"""A CPU hog for the test session: one busy-loop process per usable core.

A test that uses two processes or the wall clock must hold on a loaded machine (the
developers' and CI's machines are shared), so ``pytest --hog`` (tox -e hog) runs the
session beside a hog that keeps every usable core busy: the test's own processes then
get about half of a core each, are preempted at any instruction, and wait behind the
hog whenever they sleep or yield.  That is where an interleaving-dependent assertion,
a deadline or a find budget that only holds on an idle machine shows itself.

Each hog process is pinned to one core (``os.sched_getaffinity`` of pytest, the cores
the tests may use) and keeps pytest's nice value, so it competes with the tests as an
equal, like another engineer's run.  A hog never outlives the session: :meth:`Hog.stop`
kills it (pytest's cleanup and an atexit handler both call it), and in case pytest is
itself killed, each hog polls its parent and leaves when it is reparented, or at its
own deadline.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
from dataclasses import dataclass, field

#: the hog's program: argv = parent pid, core, lifetime in seconds.  The inner loop is a
#: few tens of milliseconds of pure bytecode; between two of them it checks that pytest
#: is still its parent and that its lifetime is not over.
HOG_PROGRAM = """
import os, sys, time
parent, core, lifetime = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
os.sched_setaffinity(0, {core})
end = time.monotonic() + lifetime
while os.getppid() == parent and time.monotonic() < end:
    for _ in range(500000):
        pass
"""


@dataclass
class Hog:
    """Busy-loop processes, one per core of ``cores``, for at most ``lifetime`` seconds."""

    cores: list[int]
    lifetime: float
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    died_early: list[int] = field(default_factory=list)  #: cores whose hog was gone before stop()
    stopped: bool = False

    @classmethod
    def start(cls, lifetime: float, cores: list[int] | None = None) -> Hog:
        """Start one hog per core (default: every usable core)."""
        hog = cls(sorted(os.sched_getaffinity(0)) if cores is None else cores, lifetime)
        atexit.register(hog.stop)
        for core in hog.cores:
            # A session of its own: a signal a test sends to its own process group never
            # reaches the hog (a hog that died early would leave the rest unloaded).
            hog.procs.append(subprocess.Popen(
                [sys.executable, "-c", HOG_PROGRAM, str(os.getpid()), str(core), str(lifetime)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True))
        return hog

    def alive(self) -> int:
        """How many hog processes are running now."""
        return sum(1 for p in self.procs if p.poll() is None)

    def stop(self) -> None:
        """Kill and reap every hog; note the cores whose hog had died before (idempotent)."""
        if self.stopped:
            return
        self.stopped = True
        for core, p in zip(self.cores, self.procs, strict=False):
            if p.poll() is not None:
                self.died_early.append(core)
                continue
            p.kill()
            p.wait()
