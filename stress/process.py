"""Whether a process is alive, as every part of the tester that looks at other
processes must decide it: the token scheduler (has the token's holder died?), the
result files (is the writer of a stale temporary still running?).

A zombie counts as dead: it will never run again, it only waits for its parent to
reap it (a CPU that died holding the scheduling token is a zombie until the manager
waits for it).  A process we may not signal (another user's) is alive.  Core leases
name a process by pid *and* start time (stress.engine.leases), which also survives
pid reuse; this check is for the places that have only a pid.
"""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False
