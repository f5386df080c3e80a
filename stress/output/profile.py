"""Profiling a run: py-spy sampling of every process, and the LOCK_PROFILING table.

Two instruments, both off unless asked for (performance.md: profile before optimising):

``--profile``
    py-spy, attached to the manager before it forks the workers, follows every worker
    (``py-spy record --subprocesses --nonblocking --idle``), twice: one recording in
    ``--format speedscope`` and one in ``--format flamegraph``, because py-spy writes
    one format per recording and both files are py-spy's own.  ``--nonblocking``
    matters: a blocking sampler stops the target to read its stack, which would stretch
    lock hold times and change the very interleavings a stress run exists to produce.
    ``--idle`` keeps the samples of a sleeping thread, so the profile can say how much
    of a CPU's time was spent waiting.  The file a person explores is py-spy's own
    ``profile.speedscope.json``: one profile per process and thread, in seconds, with
    file and line of every frame -- open it in speedscope (https://www.speedscope.app,
    or ``npx speedscope profile.speedscope.json``) for an interactive flame graph with
    zoom, search and a left-heavy view; and py-spy's flame graph SVG,
    ``profile.flamegraph.svg`` (rendered by py-spy's own renderer, inferno: open it in a
    browser, click to zoom, Ctrl-F to search; each process a tower under its parent's
    ``process PID`` frame).  Nothing is drawn here.  From the speedscope file this
    module writes the summary:

    - per process (labelled manager, cpu0, cpu1, ...): how much of its sampled time was
      **idle** -- the innermost Python line yields (``sched_yield``), sleeps, or waits
      (a lock, a semaphore, a pipe, a child) -- and the hottest **work** by function;
      ``cpu0: 72% idle (yield 60%, sleep 10%, wait 2%); hottest work: m_getcl (mbuf.py) 12%, ...``;
    - line-level hot spots of the work (``mbuf.py:212 m_getcl 5%``), the top few printed,
      the full tables in ``profile.txt``;
    - **imports are not charged to the run**: a sample with an import on its stack (the
      manager imports matplotlib in a thread while the workers run, so the plot at the
      end is quick) is counted apart, as "imports", and left out of idle and work.

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
    for line in profile.stop(handle, roles={pid: "cpu0", ...}): echo(line)
"""

from __future__ import annotations

import json
import linecache
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stress.files import write_text

SPEEDSCOPE_FILE = "profile.speedscope.json"  #: py-spy's own output: the interactive flame graph
FLAMEGRAPH_FILE = "profile.flamegraph.svg"  #: py-spy's own flame graph SVG (its renderer, inferno)
SUMMARY_FILE = "profile.txt"  #: idle, hottest functions and lines per process
LOG_FILE = "profile.log"  #: py-spy's own stderr
RATE = 100  #: samples per second per process (py-spy's default)
HOTTEST = 5  #: functions printed per process
HOT_LINES = 3  #: lines printed per process (profile.txt has TABLE_ROWS of each)
TABLE_ROWS = 15
STOP_TIMEOUT = 10.0  #: seconds py-spy gets to write its file after SIGINT

PTRACE_HINT = ("run as root, or grant CAP_SYS_PTRACE (docker run --cap-add SYS_PTRACE), "
               "or set kernel.yama.ptrace_scope=0")


# --- LOCK_PROFILING ------------------------------------------------------------------------

LOCK_COLUMNS = ("max", "wait_max", "total", "wait_total", "count", "avg", "wait_avg",
                "cnt_hold", "cnt_lock", "name")


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
    proc: subprocess.Popen[bytes] | None = None  #: the speedscope recording
    flame: subprocess.Popen[bytes] | None = None  #: the flame graph SVG recording
    error: str | None = None  #: why there is no recording (set at start or at stop)
    flame_error: str | None = None  #: why there is no SVG, when the speedscope file is there
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
    def record(fmt: str, output: str) -> subprocess.Popen[bytes]:
        cmd = [exe, "record", "--subprocesses", "--nonblocking", "--idle", "--format", fmt,
               "--rate", str(rate), "--output", str(folder / output), "--pid", str(pid)]
        # Own session: a Ctrl-C at the terminal reaches the run, not the sampler, and
        # the manager decides when the sampler stops (and so when it writes its file).
        # Both recordings share the log (one open file: their lines interleave, none is lost).
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)

    try:
        handle.proc = record("speedscope", SPEEDSCOPE_FILE)
        handle.flame = record("flamegraph", FLAMEGRAPH_FILE)
    except OSError as exc:
        handle.error = f"cannot start py-spy: {exc.strerror}"
    finally:
        log.close()
    return handle


def _finish(proc: subprocess.Popen[bytes] | None) -> None:
    """Wait for a py-spy that was sent SIGINT to write its file; killed if it hangs."""
    if proc is None:
        return
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def stop(handle: ProfileHandle, roles: Mapping[int, str] | None = None) -> list[str]:
    """Stop sampling, write ``profile.txt`` and return the lines to print: where the
    files are, and per process (labelled by ``roles``: pid -> "cpu0"; the profiled pid
    is the manager) its idle share and hottest work.  One line, and no summary, if
    py-spy could not attach or record.  Safe to call twice (the same lines again)."""
    if handle.lines:
        return handle.lines
    proc = handle.proc
    out = handle.run_dir / SPEEDSCOPE_FILE
    svg = handle.run_dir / FLAMEGRAPH_FILE
    for p in (proc, handle.flame):  # both asked first: they write at the same time
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
    _finish(proc)
    _finish(handle.flame)
    if proc is not None and (not out.is_file() or out.stat().st_size == 0):
        handle.error = _attach_error(handle.run_dir / LOG_FILE, proc.returncode)
    if handle.flame is not None and (not svg.is_file() or svg.stat().st_size == 0):
        handle.flame_error = _attach_error(handle.run_dir / LOG_FILE, handle.flame.returncode)
    if handle.error is not None:
        handle.lines = [f"profile: no profile: {handle.error}"]
        return handle.lines
    try:
        samples = read_speedscope(json.loads(out.read_text(errors="replace")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        handle.lines = [f"profile: {out} unreadable: {exc}"]
        return handle.lines
    labels = dict(roles or {})
    labels.setdefault(handle.pid, "manager")
    summaries = summarise(samples, labels)
    write_text(handle.run_dir / SUMMARY_FILE, "\n".join(table_lines(summaries)) + "\n")
    handle.lines = [f"profile: {out} (interactive flame graph: https://www.speedscope.app); "
                    f"per process: {handle.run_dir / SUMMARY_FILE}"]
    handle.lines.append(f"profile: {svg} (py-spy's flame graph: open in a browser; click to zoom, Ctrl-F to search)"
                        if handle.flame_error is None else f"profile: no flame graph SVG: {handle.flame_error}")
    handle.lines += summary_lines(summaries)
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


# --- reading py-spy's speedscope file --------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One Python frame as py-spy saw it."""

    name: str
    file: str
    line: int

    @property
    def function(self) -> str:
        """The function's name without the closures' ``Outer.<locals>.`` prefix (the fast
        paths are closures: ``MbufOps._install_mbuf_hooks.<locals>.m_getcl`` is m_getcl)."""
        return self.name.rpartition(".<locals>.")[2]

    def short(self) -> str:
        """``m_getcl (mbuf.py)``: a function, for the hottest-work list."""
        return f"{self.function} ({Path(self.file).name})" if self.file else self.function

    def where(self) -> str:
        """``mbuf.py:212 m_getcl``: a line, for the hot spots."""
        return f"{Path(self.file).name}:{self.line} {self.function}" if self.file else self.function


@dataclass(frozen=True)
class Sample:
    """One stack of one thread, with the seconds it stands for."""

    pid: int
    thread: str
    frames: tuple[Frame, ...]  #: root first, process frames left out
    seconds: float


_PROFILE_NAME = re.compile(r"Process (\d+) Thread (\d+)(?: \"(.*)\")?")


def read_speedscope(doc: Mapping[str, Any]) -> list[Sample]:
    """py-spy's speedscope document as samples.  py-spy writes one "sampled" profile per
    process and thread (named ``Process P Thread T "name"``), frames root first, nested
    under ``process P:"cmdline"`` frames for the processes above the sampled one."""
    frames = [Frame(str(f.get("name", "?")), str(f.get("file") or ""), int(f.get("line") or 0))
              for f in doc["shared"]["frames"]]
    out: list[Sample] = []
    for prof in doc["profiles"]:
        m = _PROFILE_NAME.match(str(prof.get("name", "")))
        pid = int(m.group(1)) if m else -1
        thread = (m.group(3) or m.group(2)) if m else "?"
        scale = 1.0 if prof.get("unit") == "seconds" else 1.0 / RATE  # "none": a count of samples
        for stack, weight in zip(prof["samples"], prof["weights"], strict=True):
            chain = tuple(frames[i] for i in stack if not frames[i].name.startswith("process "))
            out.append(Sample(pid, thread, chain, float(weight) * scale))
    return out


# --- idle, imports, work ---------------------------------------------------------------------

#: what the innermost Python line of an idle sample calls: (kind, pattern)
IDLE_CALLS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("yield", re.compile(r"\bsched_yield\s*\(")),
    ("sleep", re.compile(r"\bsleep\s*\(")),
    ("wait", re.compile(r"\.(acquire|wait|wait_for|join|poll|recv|recv_bytes|get|select)\s*\(|"
                        r"\b(select|poll|waitpid|wait)\s*\(")),
)


def is_import(frames: Sequence[Frame]) -> bool:
    """A sample taken while a module was being imported (importlib on the stack)."""
    return any(f.name in ("_find_and_load", "_call_with_frames_removed") or "importlib._bootstrap" in f.file
               for f in frames)


def idle_kind(frames: Sequence[Frame]) -> str | None:
    """"yield", "sleep" or "wait" when the innermost Python line calls a primitive that
    gives the CPU away (read from the source: py-spy shows the Python line that made
    the call, not the C function), else None: the sample is work."""
    if not frames:
        return "wait"  # no Python frame at all: the thread is inside the interpreter's own waits
    leaf = frames[-1]
    text = linecache.getline(leaf.file, leaf.line) if leaf.file else ""
    for kind, pattern in IDLE_CALLS:
        if pattern.search(text):
            return kind
    return None


@dataclass
class ProcessProfile:
    """What one process did, in seconds of samples."""

    pid: int
    label: str
    total: float = 0.0  #: every sample but imports
    imports: float = 0.0
    idle: dict[str, float] = field(default_factory=lambda: defaultdict(float))  #: "yield", "sleep", "wait"
    functions: dict[str, float] = field(default_factory=lambda: defaultdict(float))  #: work by leaf function
    lines: dict[str, float] = field(default_factory=lambda: defaultdict(float))  #: work by leaf line

    @property
    def idle_total(self) -> float:
        return float(sum(self.idle.values()))

    def share(self, seconds: float) -> float:
        """Percent of the process's (non-import) samples."""
        return 100.0 * seconds / self.total if self.total > 0 else 0.0


def summarise(samples: Iterable[Sample], labels: Mapping[int, str]) -> list[ProcessProfile]:
    """Per process, manager first then by label: imports apart, idle by kind, work by
    function and by line."""
    per: dict[int, ProcessProfile] = {}
    for s in samples:
        p = per.get(s.pid)
        if p is None:
            p = per[s.pid] = ProcessProfile(s.pid, labels.get(s.pid, f"pid {s.pid}"))
        if is_import(s.frames):
            p.imports += s.seconds
            continue
        p.total += s.seconds
        kind = idle_kind(s.frames)
        if kind is not None:
            p.idle[kind] += s.seconds
        else:
            p.functions[s.frames[-1].short()] += s.seconds
            p.lines[s.frames[-1].where()] += s.seconds
    return sorted(per.values(), key=lambda p: (p.label != "manager", _order(p.label), p.pid))


def _order(label: str) -> tuple[int, str]:
    m = re.fullmatch(r"cpu(\d+)", label)
    return (int(m.group(1)), "") if m else (1 << 30, label)


def most(counts: Mapping[str, float], top: int | None = None) -> list[tuple[str, float]]:
    """The largest entries first (ties by name), at most ``top``."""
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]


def _percent_list(p: ProcessProfile, counts: Mapping[str, float], top: int) -> str:
    return ", ".join(f"{name} {p.share(sec):.0f}%" for name, sec in most(counts, top)) or "none"


def summary_lines(profiles: Sequence[ProcessProfile]) -> list[str]:
    """Two lines per process: idle and hottest work; the hottest lines."""
    out = []
    for p in profiles:
        idle = ", ".join(f"{k} {p.share(v):.0f}%" for k, v in most(p.idle))
        imports = f"; imports {p.imports:.1f} s not counted" if p.imports > 0 else ""
        out.append(f"profile: {p.label} (pid {p.pid}): {p.total:.1f} s sampled; {p.share(p.idle_total):.0f}% idle"
                   + (f" ({idle})" if idle else "") + f"; hottest work: {_percent_list(p, p.functions, HOTTEST)}"
                   + imports)
        out.append(f"profile: {p.label} hot lines: {_percent_list(p, p.lines, HOT_LINES)}")
    return out


def table_lines(profiles: Sequence[ProcessProfile]) -> list[str]:
    """profile.txt: per process its idle breakdown, then the hottest functions and lines
    of its work (self time: the innermost frame of each sample), percent of its samples."""
    out = ["zonelimit profile: per process, percent of its sampled time (imports not counted);",
           "work by self time (the innermost Python frame); idle = the innermost line yields, sleeps or waits.",
           f"explore: {SPEEDSCOPE_FILE} in https://www.speedscope.app (or npx speedscope)", ""]
    for p in profiles:
        out.append(f"== {p.label} (pid {p.pid}): {p.total:.2f} s sampled, imports {p.imports:.2f} s not counted")
        out.append(f"   idle {p.share(p.idle_total):5.1f}%  "
                   + "  ".join(f"{k} {p.share(v):.1f}%" for k, v in most(p.idle)))
        out.append(f"   work {p.share(p.total - p.idle_total):5.1f}%")
        out.append("   hottest functions:")
        out += [f"   {p.share(sec):6.1f}%  {name}" for name, sec in most(p.functions, TABLE_ROWS)]
        out.append("   hottest lines:")
        out += [f"   {p.share(sec):6.1f}%  {name}" for name, sec in most(p.lines, TABLE_ROWS)]
        out.append("")
    return out
