"""Files of a result folder: written whole or not at all, and folders one run owns.

Every file a result folder holds (run.json, samples.csv, plot.png, compare.json,
compare.txt, compare.png, race.json, schedule.json, the bench file, the profile's JSON)
is written under a **temporary name** beside its final one and renamed when complete
(:func:`write_atomic`, :class:`TempFile`): a reader sees the final name only when the
file is whole, and a kill at any moment leaves the previous state and a temporary.

Temporary names (:func:`temp_path`)::

    .<name>.<pid>@<host>.tmp        e.g.  .run.json.4242@lab1.tmp

- hidden (a leading dot) and ending in ``.tmp``, so that ``report``, globs like
  ``results/*/run.json`` and people's ``ls`` pass them by; ``report`` reads final names
  only;
- they name their writer: :func:`sweep_stale` (run before any file is written into a
  folder, and when a folder is claimed) removes the temporaries whose writer, on this
  host, is no longer running -- the leftovers of a SIGKILL -- and never one of a live
  writer (the pid is checked with ``kill(pid, 0)``) nor one of another host (a results
  folder on NFS: its pids mean nothing here).

A result folder belongs to one run (:func:`claim_folder`): the folder is created with
``mkdir`` when it does not exist, and -- new or an existing empty folder alike -- it is
**claimed** by creating the marker folder ``.zonelimit-claim`` inside it, again with
``mkdir``, which exactly one process can do.  No check comes before the ``mkdir``: the
claimant looks at the folder only afterwards (it must hold nothing but the marker and
stale temporaries), so two runs given the same ``--out`` can never both write into it,
whatever their timing.  The marker holds one file naming its owner (pid, host, whether
the claim created the folder) for the error message of a run that finds it taken.
:func:`release_folder` removes the marker when the command is done with the folder, and
removes the folder itself when nothing was written into it and the claim had created it
(a stop before the first write leaves no empty folder behind).  :func:`reclaim_folder`
claims a folder that holds an unfinished result of its own (``compare --resume``), the
same ``mkdir``, without the "new or empty" rule.  :func:`holding` releases
around a block; ``stress.cli.main`` calls :func:`release_all` on its way out, so a
folder is released on every path of every command.  A SIGKILLed run leaves its marker
(and its temporaries): the folder then reads as claimed by a pid "no longer running", and
:func:`unfinished` names it an incomplete run for the readers (``report``, ``replay``).
"""

from __future__ import annotations

import errno
import os
import re
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from stress.process import pid_alive

TMP_SUFFIX = ".tmp"
CLAIM = ".zonelimit-claim"  #: the marker folder whose creation claims a result folder
_OWNER = "owner"  #: the file inside the marker: "pid host created-the-folder(0|1)"
_HELD: set[Path] = set()  #: the folders this process has claimed and not yet released
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)@(?P<host>[^@/]*)\.tmp$")


class FolderError(Exception):
    """A result folder cannot be used (taken, not empty, not writable, ...): one line.

    ``errno`` says which (EBUSY taken, ENOTEMPTY holds files, ENOENT no parent, ...)."""

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(message)
        self.errno = code


def _host() -> str:
    return socket.gethostname() or "localhost"


def temp_path(path: Path) -> Path:
    """The temporary name of ``path`` for this process: ``.<name>.<pid>@<host>.tmp``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}@{_host()}{TMP_SUFFIX}")


def is_temporary(name: str) -> bool:
    """Whether a file name is one of our temporary names."""
    return _TEMP.match(name) is not None


def _stale(name: str) -> bool:
    """A temporary of a writer on this host that is no longer running."""
    m = _TEMP.match(name)
    return m is not None and m["host"] == _host() and not pid_alive(int(m["pid"]))


def sweep_stale(folder: Path) -> list[Path]:
    """Remove the temporaries of dead writers in ``folder`` (not its subfolders); return them.

    Harmless when the folder is missing or unreadable: a sweep is housekeeping, never
    the reason a run fails.
    """
    removed: list[Path] = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        if _stale(name):
            path = Path(folder) / name
            try:
                path.unlink()
            except OSError:
                continue
            removed.append(path)
    return removed


class TempFile:
    """A file written under its temporary name and renamed into place by :meth:`publish`.

    For files that grow while a run goes on (samples.csv): the rows go to the temporary
    file, flushed as they come; the final name appears only when the writer publishes,
    so a file under the final name is always complete.  A writer killed before it
    publishes leaves only the temporary, which :func:`sweep_stale` removes later.
    """

    def __init__(self, path: Path, mode: str = "w", **open_args: object) -> None:
        """Open the temporary file of ``path`` (truncating it) with ``open(mode, **open_args)``."""
        self.path = Path(path)
        self.temp = temp_path(self.path)
        sweep_stale(self.path.parent)
        self.file: IO[str] | None = open(self.temp, mode, **open_args)  # type: ignore[call-overload]

    def opened(self) -> IO[str]:
        """The open temporary file (ValueError once published or discarded)."""
        if self.file is None:
            raise ValueError(f"{self.path}: already published or discarded")
        return self.file

    def publish(self, *, sync: bool = True) -> Path:
        """Flush, (fsync,) close and rename to the final name; safe to call twice."""
        f = self.file
        if f is None:
            return self.path
        self.file = None
        try:
            f.flush()
            if sync:
                os.fsync(f.fileno())
        finally:
            f.close()
        os.replace(self.temp, self.path)
        return self.path

    def discard(self) -> None:
        """Close and remove the temporary without publishing it; safe to call twice."""
        if self.file is not None:
            self.file.close()
            self.file = None
        self.temp.unlink(missing_ok=True)


def write_atomic(path: Path, write: Callable[[IO[bytes]], object], *, exclusive: bool = False) -> Path:
    """Write ``path`` whole or not at all: ``write(f)`` fills the temporary file, which is
    fsynced and renamed over ``path`` -- or, ``exclusive``, linked to ``path`` with
    ``link(2)``, which raises FileExistsError rather than replace anything."""
    path = Path(path)
    sweep_stale(path.parent)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text(path: Path, text: str) -> Path:
    """Write a text file (UTF-8) whole or not at all (:func:`write_atomic`)."""
    return write_atomic(path, lambda f: f.write(text.encode("utf-8")))


# --- folders one run owns -------------------------------------------------------------------


def _why(exc: OSError) -> str:
    """An OSError in a few words: its strerror (``Permission denied``, ``File name too long``)."""
    return exc.strerror or str(exc)


def _owner_text(created: bool) -> str:
    return f"{os.getpid()} {_host()} {int(created)}\n"


def claim_owner(folder: Path) -> tuple[int, str, bool] | None:
    """(pid, host, whether the claim created the folder) of a claimed folder, or None."""
    try:
        pid, host, created = (Path(folder) / CLAIM / _OWNER).read_text(encoding="ascii").split()
        return int(pid), host, created == "1"
    except (OSError, ValueError):
        return None


def _leftovers(folder: Path) -> list[str]:
    """What a claimed folder holds beside its marker and temporaries of dead writers."""
    sweep_stale(folder)
    return sorted(n for n in os.listdir(folder) if n != CLAIM)


def claim_folder(path: Path) -> Path:
    """Create (``mkdir``) or take an empty folder ``path`` and claim it for this process.

    The claim is the ``mkdir`` of ``path/.zonelimit-claim``: exactly one process can make
    it.  Raises :class:`FolderError` (one line, no path prefix) when ``path`` cannot be
    made or written, is not a folder, is claimed by another run, or already holds files.
    The parent must exist: a mistyped parent is an error, not a tree to create.
    """
    path = Path(path)
    for _ in range(3):  # the folder may vanish between our two mkdirs (an emptied claim)
        created = False
        try:
            os.mkdir(path)
            created = True
        except FileExistsError:
            if not path.is_dir():
                raise FolderError(errno.ENOTDIR, f"{path} exists and is not a folder") from None
        except FileNotFoundError:
            raise FolderError(errno.ENOENT, f"{path}: its parent folder {path.parent} does not exist") from None
        except NotADirectoryError:
            raise FolderError(errno.ENOTDIR, f"{path}: a parent of it is a file, not a folder") from None
        except OSError as exc:
            raise FolderError(exc.errno, f"{path}: cannot create: {_why(exc)}") from None
        try:
            os.mkdir(path / CLAIM)
        except FileNotFoundError:
            continue  # the run that had made it removed it again: try anew
        except FileExistsError:
            owner = claim_owner(path)
            who = ""
            if owner is not None:
                pid, host, _ = owner
                here = "still running" if pid_alive(pid) else "no longer running"
                state = here if host == _host() else f"on {host}"
                who = f" (pid {pid}, {state})"
            raise FolderError(errno.EBUSY, f"{path} is claimed by another run{who}; give another folder") from None
        except OSError as exc:
            if created:
                _rmdir_quietly(path)
            raise FolderError(exc.errno, f"{path}: not writable: {_why(exc)}") from None
        try:
            (path / CLAIM / _OWNER).write_text(_owner_text(created), encoding="ascii")
            held = _leftovers(path)
        except OSError as exc:
            _release(path, created)
            raise FolderError(exc.errno, f"{path}: not writable: {_why(exc)}") from None
        if held:
            _release(path, False)
            shown = ", ".join(held[:3]) + (", ..." if len(held) > 3 else "")
            raise FolderError(errno.ENOTEMPTY, f"{path} already holds files ({shown}) and runs never "
                                               "overwrite; give a new or empty folder")
        _HELD.add(path)
        return path
    raise FolderError(errno.EBUSY, f"{path} keeps vanishing while it is claimed; give another folder")


def reclaim_folder(path: Path) -> Path:
    """Claim a folder that holds an unfinished result of its own (a comparison to resume):
    the marker's ``mkdir``, exclusive as in :func:`claim_folder`, without the "new or
    empty" rule.  A marker this process holds is kept; one left by a writer no longer
    running on this host (a SIGKILLed comparison) is removed and claimed anew; a live
    one is refused (EBUSY).  Two resumes racing over the same dead writer's marker
    within a millisecond could both get past the removal: not guarded against."""
    path = Path(path)
    for _ in range(3):
        try:
            os.mkdir(path / CLAIM)
        except FileExistsError:
            owner = claim_owner(path)
            if owner is not None and owner[1] == _host() and owner[0] == os.getpid():
                _HELD.add(path)
                return path
            if owner is not None and owner[1] == _host() and not pid_alive(owner[0]):
                _release(path, False)  # the dead writer's marker: gone, then claimed anew
                continue
            who = "" if owner is None else f" (pid {owner[0]} on {owner[1]})"
            raise FolderError(errno.EBUSY, f"{path} is claimed by another run{who}; wait for it to end") from None
        except OSError as exc:
            raise FolderError(exc.errno, f"{path}: not writable: {_why(exc)}") from None
        try:
            (path / CLAIM / _OWNER).write_text(_owner_text(False), encoding="ascii")
        except OSError as exc:
            _release(path, False)
            raise FolderError(exc.errno, f"{path}: not writable: {_why(exc)}") from None
        _HELD.add(path)
        return path
    raise FolderError(errno.EBUSY, f"{path}: its claim keeps changing hands; try again")


def unfinished(folder: Path) -> str | None:
    """Why ``folder``, which lacks its result document, holds no result: an **incomplete
    run** whose writer is no longer running (a SIGKILLed run leaves its claim marker and
    temporaries: nothing can run in a killed process), a run **still in progress** (its
    writer is alive), or None when no writer's trace is there.  Readers (``report``,
    ``replay``) say this instead of "not a run folder"; they never remove the trace:
    the folder stays as the evidence of a cut run, and no new run writes into it
    (:func:`claim_folder` refuses it)."""
    owner = claim_owner(folder)
    if owner is not None:
        pid, host, _ = owner
        if host != _host():
            return f"a run of pid {pid} on {host} left no result here (still running there, or killed)"
        if pid_alive(pid):
            return f"a run still in progress (pid {pid}): no result yet"
        return f"an incomplete run: its writer (pid {pid}) was killed before it wrote its result"
    try:
        temps = [n for n in os.listdir(folder) if is_temporary(n)]
    except OSError:
        return None
    if temps and all(_stale(n) for n in temps):
        return "an incomplete run: its writer was killed before it wrote its result"
    return None


def move_aside(folder: Path, why: str) -> Path:
    """Rename ``folder`` to ``<folder>.<why>`` (``-2``, ``-3`` ... if taken) and return the
    new path: a cut or lost run stays readable, and its place is free for the run that
    replaces it."""
    n = 1
    while True:
        target = folder.with_name(f"{folder.name}.{why}" + ("" if n == 1 else f"-{n}"))
        if not target.exists():
            os.rename(folder, target)
            return target
        n += 1


def new_folder(parent: Path, name: str, *, numbered: bool = False) -> Path:
    """Create and claim a new folder ``parent/name`` (``name-2``, ``name-3`` ... on a clash;
    always numbered ``name-1``, ``name-2`` ... with ``numbered``).  ``parent`` is created
    when missing (the default ``results/``)."""
    parent = Path(parent)
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FolderError(exc.errno, f"{parent}: cannot create: {_why(exc)}") from None
    n = 1
    while True:
        path = parent / (f"{name}-{n}" if numbered or n > 1 else name)
        if not os.path.lexists(path):
            try:
                return claim_folder(path)
            except FolderError as exc:
                if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY, errno.ENOTDIR):
                    raise
        n += 1


def _rmdir_quietly(path: Path) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass


def _nothing_written(folder: Path) -> bool:
    """Only empty files, empty subfolders and temporaries beside the marker: no byte of a
    result anywhere in the folder (a comparison stopped before its first run has made the
    run's empty subfolder and nothing else)."""
    try:
        for entry in os.scandir(folder):
            if entry.name == CLAIM or is_temporary(entry.name):
                continue
            if entry.is_dir(follow_symlinks=False):
                if not _nothing_written(Path(entry.path)):
                    return False
            elif not entry.is_file(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_size:
                return False
    except OSError:
        return False
    return True


def _remove_unwritten(folder: Path) -> None:
    """Remove a folder :func:`_nothing_written` found empty of results: its empty files,
    temporaries and empty subfolders, then the folder."""
    for entry in os.scandir(folder):
        if entry.name == CLAIM:
            continue
        if entry.is_dir(follow_symlinks=False):
            _remove_unwritten(Path(entry.path))
        else:
            Path(entry.path).unlink(missing_ok=True)
    _rmdir_quietly(folder)


def _release(path: Path, created: bool) -> None:
    marker = path / CLAIM
    (marker / _OWNER).unlink(missing_ok=True)
    _rmdir_quietly(marker)
    if created and _nothing_written(path):
        _remove_unwritten(path)


def release_folder(path: Path) -> None:
    """Give up the claim on ``path`` (taken by this process); when nothing was written into
    the folder and the claim had created it, remove the folder too.  Safe to call twice,
    and harmless on a folder this process does not hold."""
    path = Path(path)
    _HELD.discard(path)
    owner = claim_owner(path)
    if owner is None or owner[0] != os.getpid() or owner[1] != _host():
        return
    try:
        _release(path, owner[2])
    except OSError:
        pass  # releasing is tidying: a folder we cannot tidy is still a complete result


def release_all() -> None:
    """Release every folder this process still holds (the command line does this on its
    way out, whatever the way: a command need not release on each of its paths)."""
    for path in sorted(_HELD):
        release_folder(path)


@contextmanager
def holding(path: Path) -> Iterator[Path]:
    """Release the claim on ``path`` when the block ends, however it ends (a folder left
    empty by a stop is removed: :func:`release_folder`)."""
    try:
        yield Path(path)
    finally:
        release_folder(Path(path))
