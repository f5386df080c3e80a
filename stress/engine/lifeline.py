"""A child run's lifeline: it dies with the *process* that started it, and only then.

    parent (a --jobs scheduler, a Dask worker)          child (python -m stress run ...)
    ------------------------------------------          --------------------------------
    Lifeline(): pipe(); the write end stays here,
      close-on-exec, passed to no child
    Popen(pass_fds=(read end,), env ZONELIMIT_LIFELINE=fd)  --->  hold(fd): F_SETOWN me,
    close the read end here                                       F_SETSIG SIGKILL, O_ASYNC;
                                                                  already EOF: exit at once
    ... the run ...
    the process dies (any way, SIGKILL too): the kernel  --->     SIGKILL, sent by the kernel
      closes its last write end                                   (no thread, no polling)
    the run ended: close() the write end                          (gone already)

Why not ``prctl(PR_SET_PDEATHSIG)``, as workers use with their manager
(stress/engine/pinning.py)?  Its signal fires when the *thread* that forked the child
exits (prctl(2): "the parent thread"), and a Dask worker runs tasks on threads that come
and go: a child forked by a task's thread would be killed when that thread ended, though
its worker lives on -- and one forked by a long-lived thread would live on after it.  A
pipe's write end belongs to the process: it closes when the last thread of the process
is gone, whichever forked the child.

How the child hears it: a pipe's read end becomes readable (EOF) when its last writer
closes, and the kernel then sends the ``O_ASYNC`` owner its signal (Linux fs/pipe.c,
``pipe_release`` -> ``kill_fasync``); ``F_SETSIG`` makes that signal SIGKILL, the same
end ``PR_SET_PDEATHSIG`` gave.  The check for EOF after arming closes the window in which
the parent died before.

Limits: a process forked (not exec'd) by the parent after the pipe was made inherits the
write end and keeps the child alive as long as it lives; our parents fork nothing but
through ``subprocess`` (which closes every other descriptor), and a Dask worker runs its
tasks in threads.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal

ENV = "ZONELIMIT_LIFELINE"  #: the child's end of the pipe, a descriptor number


class Lifeline:
    """The parent's side: made before the child starts, closed after it ended."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()  # both close-on-exec (PEP 446)

    def env(self) -> dict[str, str]:
        """The child's environment entry naming its end."""
        return {ENV: str(self.read_fd)}

    def started(self) -> None:
        """The child has its copy of the read end: ours goes (idempotent)."""
        if self.read_fd >= 0:
            os.close(self.read_fd)
            self.read_fd = -1

    def close(self) -> None:
        """Cut the line (the run ended, or is being killed anyway); idempotent."""
        self.started()
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1


def hold(fd: int) -> None:
    """In the child: be SIGKILLed by the kernel when the parent's write end closes (the
    parent process died, or gave up on us); exit 3 at once if it already has."""
    fcntl.fcntl(fd, fcntl.F_SETOWN, os.getpid())
    fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGKILL)
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_ASYNC)
    os.set_inheritable(fd, False)  # the run's own exec'd helpers (py-spy) need not hold it
    if select.select([fd], [], [], 0)[0]:  # EOF before we armed: the parent is gone
        os._exit(3)


def hold_from_env() -> bool:
    """:func:`hold` the descriptor :data:`ENV` names, if any; whether there was one."""
    text = os.environ.pop(ENV, "")
    if not text.isdigit():
        return False
    hold(int(text))
    return True
