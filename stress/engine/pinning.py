"""Pinning simulated CPUs to real cores, and tying a worker's life to the manager's.

Simulated CPU k runs on usable core ``k mod ncores`` (architecture.md, hard requirement
1).  The usable cores are the affinity mask of the manager (``os.sched_getaffinity``,
via :mod:`stress.cpulist`), never ``os.cpu_count()``: a core outside the mask fails with
EINVAL.  More CPUs than cores is refused unless the user asked (``--oversubscribe``),
because two workers time-sharing one core no longer race the way two SMP CPUs do.

:func:`die_with_parent` is the other half of "workers never outlive the manager": Linux
``prctl(PR_SET_PDEATHSIG, SIGKILL)`` makes the kernel SIGKILL the worker when the manager
dies, even by SIGKILL, and the ``getppid`` check afterwards closes the window in which the
manager died between fork and prctl.
"""

from __future__ import annotations

import ctypes
import os
import signal

from stress.cpulist import format_cpulist, usable_cores

__all__ = ["PinningError", "cpu_map", "pin_self", "die_with_parent", "format_cpulist", "usable_cores"]

PR_SET_PDEATHSIG = 1  # linux/prctl.h


class PinningError(Exception):
    """The requested CPUs cannot be placed on the usable cores."""


def cpu_map(ncpus: int, oversubscribe: bool = False, cores: list[int] | None = None) -> dict[int, int]:
    """Simulated CPU -> core: CPU k on ``cores[k % len(cores)]``.

    Raises :class:`PinningError` when ``ncpus`` exceeds the usable cores and
    ``oversubscribe`` is false.
    """
    cores = usable_cores() if cores is None else sorted(cores)
    if not cores:
        raise PinningError("no usable cores in the affinity mask")
    if ncpus > len(cores) and not oversubscribe:
        raise PinningError(
            f"--cpus {ncpus} exceeds the {len(cores)} usable cores ({format_cpulist(cores)}); "
            "pass --oversubscribe to allow it")
    return {k: cores[k % len(cores)] for k in range(ncpus)}


def pin_self(core: int) -> None:
    """Pin the calling process to one core (raises OSError if the core is not usable)."""
    os.sched_setaffinity(0, {core})


def die_with_parent(expected_ppid: int) -> None:
    """Ask the kernel to SIGKILL us when our parent dies; exit at once if it already has."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")
    if os.getppid() != expected_ppid:  # the manager died before prctl took effect
        os._exit(3)
