"""Profiling a run: py-spy sampling of every process, and the LOCK_PROFILING table.

Two instruments, both off unless asked for (performance.md: profile before optimising):

``--profile``
    One ``py-spy record --subprocesses --nonblocking`` attached to the manager before
    it forks the workers follows every worker.  ``--nonblocking`` matters: a blocking
    sampler stops the target to read its stack, which would stretch lock hold times
    and change the very interleavings a stress run exists to produce.  py-spy writes
    *raw* collapsed stacks (one sampler, one pass); from them this module writes the
    two files people open -- ``profile.speedscope.json`` (https://speedscope.app) and
    ``profile.svg`` (a flame graph) -- and the hottest functions per process/role.
    If py-spy is missing or cannot attach (ptrace not permitted: containers without
    CAP_SYS_PTRACE, ``kernel.yama.ptrace_scope`` >= 2), :func:`stop` returns one line
    saying so and what to do; the run itself is never affected.

``--lock-profile``
    The allocator records, per (lock, acquisition point), count, contended
    acquisitions, wait and hold totals and maxima (``Uma.lock_profile()``).
    :func:`lock_profile_lines` formats them the way FreeBSD's
    ``sysctl debug.lock.prof.stats`` does (microseconds)::

        max wait_max total wait_total count avg wait_avg cnt_hold cnt_lock name

    ``cnt_lock`` is the number of acquisitions at this point that found the lock
    held.  ``cnt_hold`` (how often *others* found the lock held by this point) is not
    recorded by the allocator and printed as ``-``.

Who calls what (the manager)::

    handle = profile.start(run_dir, os.getpid())   # before forking the workers
    ... run ...                                     # workers exit, are joined
    for line in profile.stop(handle, roles={pid: "cpu0 sender", ...}): echo(line)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from stress.files import write_text

RAW_FILE = "profile.raw.txt"  #: py-spy's collapsed stacks, as recorded
SPEEDSCOPE_FILE = "profile.speedscope.json"
SVG_FILE = "profile.svg"
LOG_FILE = "profile.log"  #: py-spy's own stderr
RATE = 100  #: samples per second per process (py-spy's default)
HOTTEST = 5  #: functions listed per process/role
STOP_TIMEOUT = 10.0  #: seconds py-spy gets to write its file after SIGINT

PTRACE_HINT = ("run as root, or grant CAP_SYS_PTRACE (docker run --cap-add SYS_PTRACE), "
               "or set kernel.yama.ptrace_scope=0")


# --- LOCK_PROFILING ------------------------------------------------------------------------

LOCK_COLUMNS = ("max", "wait_max", "total", "wait_total", "count", "avg", "wait_avg",
                "cnt_hold", "cnt_lock", "name")


_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_text(s: str) -> str:
    """Text safe inside SVG: escaped, and without the characters XML 1.0 forbids (py-spy's
    process names carry /proc cmdlines, whose arguments are NUL-separated)."""
    return escape(_XML_ILLEGAL.sub(" ", s))


def lock_profile_lines(rows: Iterable[Mapping[str, Any]], top: int | None = None) -> list[str]:
    """The LOCK_PROFILING table (debug.lock.prof.stats layout, microseconds) of
    ``Uma.lock_profile()`` rows (or run.json "locks"), most waited-for first, at most
    ``top`` rows.  For the run summary, the monitor and compare, so that every place
    prints the same table."""
    rows = sorted(rows, key=lambda r: (-float(r.get("wait_total_us", 0.0)), -int(r.get("count", 0)),
                                       str(r.get("name", ""))))
    if not rows:
        return ["lock profile: no lock acquisitions recorded"]
    more = len(rows) - top if top is not None and len(rows) > top else 0
    cells = []
    for r in rows[:top]:
        count = int(r.get("count", 0))
        hold_total = float(r.get("hold_total_us", 0.0))
        wait_total = float(r.get("wait_total_us", 0.0))
        avg = r.get("hold_avg_us", hold_total / count if count else 0.0)
        wait_avg = r.get("wait_avg_us", wait_total / count if count else 0.0)
        cnt_hold = r.get("cnt_hold")
        cells.append((
            _us(r.get("hold_max_us", 0.0)), _us(r.get("wait_max_us", 0.0)), _us(hold_total),
            _us(wait_total), str(count), _us(avg), _us(wait_avg),
            "-" if cnt_hold is None else str(int(cnt_hold)), str(int(r.get("contended", 0))),
            str(r.get("name", "?")),
        ))
    widths = [max(len(LOCK_COLUMNS[i]), *(len(c[i]) for c in cells)) for i in range(len(LOCK_COLUMNS) - 1)]
    out = []
    for row in [LOCK_COLUMNS, *cells]:
        out.append(" ".join(row[i].rjust(widths[i]) for i in range(len(widths))) + " " + row[-1])
    if more:
        out.append(f"... {more} more (lock, point) rows in run.json")
    return out


def _us(value: Any) -> str:
    """Microseconds as LOCK_PROFILING prints them: whole numbers, fractions below 10."""
    v = float(value)
    return f"{v:.2f}" if v < 10 else f"{v:.0f}"


# --- py-spy --------------------------------------------------------------------------------


@dataclass
class ProfileHandle:
    """A running (or failed) py-spy recording of one process tree."""

    run_dir: Path
    pid: int
    proc: subprocess.Popen[bytes] | None = None
    error: str | None = None  #: why there is no recording (set at start or at stop)
    started: float = field(default_factory=time.monotonic)
    lines: list[str] = field(default_factory=list)


def py_spy_path() -> str | None:
    """The py-spy executable: next to this Python first (the venv), then on PATH."""
    local = Path(sys.executable).with_name("py-spy")
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("py-spy")


def start(run_dir: str | os.PathLike[str], pid: int, *, rate: int = RATE) -> ProfileHandle:
    """Start sampling process ``pid`` and every child it forks from now on, into
    ``run_dir``.  Call it in the manager *before* forking the workers (py-spy follows
    children it sees appear).  Never raises: a failure is kept in the handle and
    reported by :func:`stop`, so the run goes on without a profile."""
    folder = Path(run_dir)
    handle = ProfileHandle(folder, pid)
    exe = py_spy_path()
    if exe is None:
        handle.error = "py-spy is not installed; install it with: pip install py-spy"
        return handle
    try:
        folder.mkdir(parents=True, exist_ok=True)
        log = open(folder / LOG_FILE, "wb")  # noqa: SIM115 -- handed to the child
    except OSError as exc:
        handle.error = f"cannot write into {folder}: {exc.strerror}"
        return handle
    cmd = [exe, "record", "--subprocesses", "--nonblocking", "--format", "raw", "--rate", str(rate),
           "--output", str(folder / RAW_FILE), "--pid", str(pid)]
    try:
        # Own session: a Ctrl-C at the terminal reaches the run, not the sampler, and
        # the manager decides when the sampler stops (and so when it writes its file).
        handle.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                       start_new_session=True)
    except OSError as exc:
        handle.error = f"cannot start py-spy: {exc.strerror}"
    finally:
        log.close()
    return handle


def stop(handle: ProfileHandle, roles: Mapping[int, str] | None = None) -> list[str]:
    """Stop sampling, write ``profile.speedscope.json`` and ``profile.svg`` into the
    run folder and return the lines to print: where the files are and the hottest
    functions of each process (labelled by ``roles``: pid -> "cpu0 sender"; the
    profiled pid is the manager).  One line, and no files, if py-spy could not
    attach or record.  Safe to call twice (the second call returns the same lines)."""
    if handle.lines:
        return handle.lines
    proc = handle.proc
    if proc is not None:
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        raw = handle.run_dir / RAW_FILE
        if not raw.is_file() or raw.stat().st_size == 0:
            handle.error = _attach_error(handle.run_dir / LOG_FILE, proc.returncode)
    if handle.error is not None:
        handle.lines = [f"profile: no profile: {handle.error}"]
        return handle.lines
    stacks = read_collapsed((handle.run_dir / RAW_FILE).read_text(errors="replace").splitlines())
    labels = dict(roles or {})
    labels.setdefault(handle.pid, "manager")
    write_speedscope(handle.run_dir / SPEEDSCOPE_FILE, stacks, labels)
    write_flamegraph(handle.run_dir / SVG_FILE, stacks, labels)
    total = sum(n for _, _, n in stacks)
    handle.lines = [f"profile: {total} samples of {len({p for p, _, _ in stacks})} processes -> "
                    f"{handle.run_dir / SVG_FILE}, {handle.run_dir / SPEEDSCOPE_FILE}"]
    handle.lines += hottest_lines(stacks, labels)
    return handle.lines


def _attach_error(log: Path, returncode: int | None) -> str:
    """One line on why py-spy produced nothing, and what to do about it."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        text = ""
    low = text.lower()
    if "permission" in low or "ptrace" in low or "operation not permitted" in low:
        return f"py-spy cannot attach (ptrace not permitted): {PTRACE_HINT}"
    last = next((ln.strip() for ln in reversed(text.splitlines()) if ln.strip()), "")
    if "no such process" in low or "failed to find python" in low:
        return f"py-spy found no Python process to sample ({last})"
    return f"py-spy recorded nothing (exit {returncode}: {last or 'no message'}); see {log}"


# --- collapsed stacks ----------------------------------------------------------------------

Stack = tuple[int, tuple[str, ...], int]  #: (pid, frames root first, samples)


def read_collapsed(lines: Iterable[str]) -> list[Stack]:
    """Parse py-spy's raw output: ``process P:"cmd";...;process C:"cmd";frame;frame N``.
    A child's stacks are nested under its parent's ``process`` frames; the innermost
    one names the sampled process, and the frames after it are its stack."""
    out: list[Stack] = []
    for line in lines:
        line = line.rstrip()
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        pid = -1
        frames: list[str] = []
        for frame in stack.split(";"):
            if frame.startswith("process "):
                head = frame[len("process "):].split(":", 1)[0]
                if head.isdigit():
                    pid, frames = int(head), []
                    continue
            frames.append(frame)
        out.append((pid, tuple(frames), int(count)))
    return out


def _label(pid: int, labels: Mapping[int, str]) -> str:
    name = labels.get(pid)
    return f"{name} (pid {pid})" if name else f"pid {pid}"


def _short(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (file.py)``: functions, not lines, are hot."""
    name, _, where = frame.partition(" (")
    file = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({file.rsplit('/', 1)[-1]})" if file else name


def hottest_lines(stacks: Sequence[Stack], labels: Mapping[int, str], top: int = HOTTEST) -> list[str]:
    """Per process: its sample count and the ``top`` functions by self time (the leaf
    frame of each sample), as percentages of that process's samples."""
    per: dict[int, Counter[str]] = defaultdict(Counter)
    for pid, frames, n in stacks:
        per[pid][_short(frames[-1]) if frames else "(no Python frame)"] += n
    managers = {p for p, v in labels.items() if v == "manager"}
    order = sorted(per, key=lambda p: (p not in managers, labels.get(p, "~"), p))
    out = []
    for pid in order:
        counts = per[pid]
        total = sum(counts.values())
        hot = ", ".join(f"{fn} {100 * n / total:.0f}%" for fn, n in counts.most_common(top))
        out.append(f"profile: {_label(pid, labels)}: {total} samples; hottest (self): {hot}")
    return out


def write_speedscope(path: Path, stacks: Sequence[Stack], labels: Mapping[int, str]) -> None:
    """A speedscope file (https://www.speedscope.app/file-format-schema.json): one
    sampled profile per process, frames shared."""
    frames: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    per: dict[int, tuple[list[list[int]], list[int]]] = defaultdict(lambda: ([], []))
    for pid, stack, n in stacks:
        ids = []
        for frame in stack:
            i = index.get(frame)
            if i is None:
                name, _, where = frame.partition(" (")
                file, _, line = where.rstrip(")").rpartition(":")
                entry: dict[str, Any] = {"name": name}
                if file:
                    entry["file"] = file
                if line.isdigit():
                    entry["line"] = int(line)
                i = index[frame] = len(frames)
                frames.append(entry)
            ids.append(i)
        samples, weights = per[pid]
        samples.append(ids)
        weights.append(n)
    profiles = [{"type": "sampled", "name": _label(pid, labels), "unit": "none", "startValue": 0,
                 "endValue": sum(weights), "samples": samples, "weights": weights}
                for pid, (samples, weights) in sorted(per.items())]
    doc = {"$schema": "https://www.speedscope.app/file-format-schema.json", "exporter": "zonelimit",
           "name": "zonelimit run", "activeProfileIndex": 0, "shared": {"frames": frames},
           "profiles": profiles}
    write_text(path, json.dumps(doc))


def write_flamegraph(path: Path, stacks: Sequence[Stack], labels: Mapping[int, str],
                     width: int = 1200, row: int = 16) -> None:
    """A flame graph SVG (Gregg's layout: root at the bottom, width = samples), one
    tower per process; hover a box for its function and sample count."""
    tree: dict[str, Any] = {"n": 0, "kids": {}}
    for pid, frames, n in stacks:
        node = tree
        node["n"] += n
        for frame in (_label(pid, labels), *frames):
            node = node["kids"].setdefault(frame, {"n": 0, "kids": {}})
            node["n"] += n
    depth = _depth(tree)
    height = (depth + 2) * row
    total = max(tree["n"], 1)
    scale = (width - 20) / total
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="monospace" font-size="11">',
           f'<text x="10" y="{row - 3}">zonelimit profile: {tree["n"]} samples</text>']

    def draw(node: dict[str, Any], x: float, level: int) -> None:
        for name, kid in sorted(node["kids"].items()):
            w = kid["n"] * scale
            y = height - (level + 1) * row
            hue = 20 + zlib.crc32(name.encode()) % 40
            tip = _xml_text(f"{name}: {kid['n']} samples ({100 * kid['n'] / total:.1f}%)")
            out.append(f'<g><title>{tip}</title><rect x="{x:.1f}" y="{y}" width="{max(w - 0.5, 0.1):.1f}" '
                       f'height="{row - 1}" fill="hsl({hue},90%,60%)"/>')
            if w > 40:
                text = _xml_text(_short(name)[: int(w / 7)])
                out.append(f'<text x="{x + 2:.1f}" y="{y + row - 4}">{text}</text>')
            out.append("</g>")
            draw(kid, x, level + 1)
            x += w

    draw(tree, 10.0, 0)
    out.append("</svg>")
    write_text(path, "\n".join(out) + "\n")


def _depth(node: dict[str, Any]) -> int:
    return 1 + max((_depth(k) for k in node["kids"].values()), default=0)
