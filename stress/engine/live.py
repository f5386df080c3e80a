"""live.json: a running run says where its arena is, so that ``stress stat`` can watch it.

The arena is a memfd: it has no name, only ``/proc/<manager pid>/fd/<n>``, which nothing
printed before (one had to dig under /proc).  While a run is running its folder holds
``live.json`` (format ``zonelimit.live/1``): the arena's path, the manager's pid, and what
makes that pid this process and no other -- its start time (``/proc/PID/stat`` field 22,
clock ticks after boot), the boot id and the host name.  The manager publishes it as soon
as the arena exists and withdraws it when the run ends, on every path that runs a
``finally``; a SIGKILLed run leaves it behind, and :func:`find` recognises it as stale
(the pid is gone, or is another process) rather than attaching to whatever the pid is now.

A PID works as well as a folder: :func:`arena_of_pid` finds the arena among the open
files of the manager or of any worker (they inherit the memfd across fork).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stress import documents

ARENA_LINK = "/memfd:zonelimit-arena"  #: what /proc/PID/fd/N reads for the arena (allocator.arena.Arena.create)


class NotLive(Exception):
    """The run is not running (ended, killed, or never was); the message says which."""


@dataclass(frozen=True)
class LiveRun:
    """A running run, as ``stat`` attaches to it."""

    pid: int  #: the process whose file table holds the arena (the manager, or a worker)
    arena: str  #: /proc/PID/fd/N
    folder: Path | None  #: the run folder, when given one
    started_monotonic: float | None  #: CLOCK_MONOTONIC when the arena was made (None from a bare PID)


def process_start_time(pid: int) -> int | None:
    """Clock ticks after boot when ``pid`` started (``/proc/PID/stat`` field 22), None if
    there is no such process or it has ended (a zombie).  The command name (field 2) may hold spaces and
    parentheses, so the fields are counted from its closing parenthesis."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = text[text.rfind(")") + 2:].split()
    if not rest or rest[0] in ("Z", "X"):  # a zombie has ended: only its parent has not reaped it yet
        return None
    try:
        return int(rest[19])  # field 22: state is field 3, rest[0]
    except (IndexError, ValueError):
        return None


def boot_id() -> str:
    """This boot's id (a pid and a start time repeat across reboots)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def publish(folder: Path, arena_path: str, cpus: int) -> Path:
    """Write ``folder/live.json`` for this process (the manager) and its arena."""
    pid = os.getpid()
    doc: dict[str, Any] = {
        "version": documents.package_version(), "created": documents.timestamp(),
        "pid": pid, "start_time": process_start_time(pid) or 0, "boot_id": boot_id(),
        "hostname": socket.gethostname(), "arena": arena_path, "cpus": cpus,
        "started_monotonic": time.monotonic(),
    }
    return documents.write_doc(Path(folder) / documents.LIVE_JSON, doc, documents.LIVE_FORMAT)


def withdraw(path: Path | None) -> None:
    """Remove live.json (the run has ended); never raises: an ending run must end."""
    if path is None:
        return
    try:
        path.unlink()
    except OSError:
        pass


def is_alive(pid: int, start_time: int, boot: str, host: str) -> bool:
    """True when ``pid`` is the very process live.json names (same machine, same boot,
    same start time)."""
    return host == socket.gethostname() and boot == boot_id() and process_start_time(pid) == start_time


def find(folder: Path) -> LiveRun:
    """The running run of ``folder``; NotLive saying why not (ended, killed, not a run)."""
    path = Path(folder) / documents.LIVE_JSON
    try:
        doc = documents.read_doc(path, documents.LIVE_FORMAT)
    except FileNotFoundError:
        if (Path(folder) / documents.RUN_JSON).is_file():
            raise NotLive(f"{folder}: the run has ended (run.json is written; "
                          f"python -m stress report {folder})") from None
        if not Path(folder).is_dir():
            raise NotLive(f"{folder}: no such folder") from None
        raise NotLive(f"{folder}: no running run here (no {documents.LIVE_JSON})") from None
    except documents.DocumentError as exc:
        raise NotLive(str(exc)) from None
    pid = int(doc["pid"])
    if not is_alive(pid, int(doc["start_time"]), str(doc["boot_id"]), str(doc["hostname"])):
        where = "" if doc["hostname"] == socket.gethostname() else f" on {doc['hostname']}"
        raise NotLive(f"{folder}: the run has ended: its {documents.LIVE_JSON} is stale (pid {pid}{where} is gone "
                      "or another process now; the run was killed before it could remove it)")
    return LiveRun(pid, str(doc["arena"]), Path(folder), float(doc["started_monotonic"]))


def arena_of_pid(pid: int) -> LiveRun:
    """The arena a process has open (the manager's or a worker's pid); NotLive if the
    process is gone or has no zonelimit arena."""
    fds = Path(f"/proc/{pid}/fd")
    try:
        entries = sorted(fds.iterdir(), key=lambda p: int(p.name))
    except FileNotFoundError:
        raise NotLive(f"pid {pid}: no such process (the run has ended?)") from None
    except PermissionError:
        raise NotLive(f"pid {pid}: its open files cannot be read (another user's process?)") from None
    for entry in entries:
        try:
            target = os.readlink(entry)
        except OSError:
            continue
        if target.startswith(ARENA_LINK):
            return LiveRun(pid, str(entry), None, None)
    raise NotLive(f"pid {pid}: not a zonelimit run (no arena among its open files)")
