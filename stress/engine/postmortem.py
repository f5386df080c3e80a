"""Post-mortems of a process that stopped making progress: what the kernel and py-spy say.

A CPU that neither progresses nor sleeps on a known wait channel is the tester's
problem, not the allocator's (verdict ``stalled``, docs/runner.md): a process stopped
with SIGSTOP, one descheduled for seconds, one blocked on a lock whose holder is
stopped, a loop that never ends.  The verdict must say which, so before the manager
kills anything it takes a post-mortem of each process concerned::

    capture(pid, role)       /proc/<pid>/stat    the scheduler state: R S D T t Z ...
                             /proc/<pid>/wchan   the kernel function it waits in
                             py-spy dump         its Python stack (where our code is)
      -> ProcessReport       .line() for run.json and the summary, .lines() for stacks.txt
    write_stacks(folder, title, reports)  -> <folder>/stacks.txt, written atomically

py-spy runs with ``--nonblocking``: without it py-spy suspends the target with ptrace,
which fails on a process that is already stopped (measured: "Failed to suspend
process"), and would perturb a running one.  It reads the stack out of the process's
memory instead, which works on stopped, blocked and running processes alike.  Where
py-spy is missing, not permitted (ptrace) or too slow, the report says why and the
/proc facts still stand.

This module only observes.  It is built to be reused: a wedge post-mortem (issue 14:
stacks.txt plus the arena) captures every CPU the same way, and a profile samples the
same processes; each caller chooses which pids and writes its own title.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from allocator import Uma
from allocator.witness import findings
from stress import audit
from stress.output.profile import py_spy_path
from stress.workloads.common import counter_totals
from stress.workloads.ring import held_mbufs

log = logging.getLogger("zonelimit")

STACKS_TXT = "stacks.txt"
DUMP_TIMEOUT = 5.0  #: seconds py-spy may take for one process (reading a stopped one takes ~20 ms)

#: /proc/<pid>/stat state letters (proc(5))
STATE_NAMES = {
    "R": "running", "S": "sleeping", "D": "disk sleep (uninterruptible)", "T": "stopped (by a signal)",
    "t": "stopped (by a tracer)", "Z": "zombie", "X": "dead", "I": "idle", "P": "parked", "W": "paging",
}


@dataclass
class ProcessReport:
    """One process as found: its scheduler state, kernel wait channel and Python stack."""

    role: str  #: "CPU 1", "the manager", ...
    pid: int
    state: str = "?"  #: the /proc state letter ("T"), "gone" if the process no longer exists
    wchan: str = ""  #: the kernel function it sleeps in ("do_signal_stop", "futex_wait_queue"), "" running
    stack: list[str] = field(default_factory=list)  #: py-spy's lines for its threads
    stack_error: str = ""  #: why there is no stack, when there is none

    @property
    def state_name(self) -> str:
        """The state in words: ``T (stopped (by a signal))``."""
        if self.state == "gone":
            return "gone (the process no longer exists)"
        return f"{self.state} ({STATE_NAMES.get(self.state, 'unknown')})"

    def line(self) -> str:
        """One line: ``CPU 1 (pid 4242): T (stopped (by a signal)), in do_signal_stop``."""
        out = f"{self.role} (pid {self.pid}): {self.state_name}"
        if self.wchan:
            out += f", in {self.wchan}"
        return out

    def lines(self) -> list[str]:
        """The process's block in stacks.txt: the line, then its stack (or why none)."""
        out = [self.line()]
        if self.stack:
            out += ["  " + s for s in self.stack]
        else:
            out.append(f"  no Python stack: {self.stack_error or 'py-spy printed none'}")
        return out

    def to_dict(self) -> dict[str, Any]:
        """The run.json form (the stack itself is in stacks.txt)."""
        return {"role": self.role, "pid": self.pid, "state": self.state, "state_name": self.state_name,
                "wchan": self.wchan, "stack_lines": len(self.stack),
                **({"stack_error": self.stack_error} if self.stack_error else {})}


def proc_state(pid: int) -> tuple[str, str]:
    """(state letter, kernel wait channel) of ``pid`` from /proc; ("gone", "") if it exited."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return "gone", ""
    # the command name is in parentheses and may itself hold ") "; the state follows the last one
    state = stat.rsplit(b")", 1)[-1].split()[0].decode(errors="replace") if b")" in stat else "?"
    try:
        with open(f"/proc/{pid}/wchan", "rb") as f:
            wchan = f.read().decode(errors="replace").strip()
    except OSError:
        wchan = ""
    return state, "" if wchan == "0" else wchan


def py_spy_dump(pid: int, timeout: float = DUMP_TIMEOUT) -> tuple[list[str], str]:
    """(stack lines, error) from ``py-spy dump --nonblocking --pid PID``: the thread
    lines and their frames, without py-spy's header (process and interpreter)."""
    exe = py_spy_path()
    if exe is None:
        return [], "py-spy is not installed (pip install py-spy)"
    try:
        p = subprocess.run([exe, "dump", "--nonblocking", "--pid", str(pid)], capture_output=True,
                           text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return [], f"py-spy dump took longer than {timeout:g} s"
    except OSError as exc:
        return [], f"py-spy could not run: {exc.strerror}"
    lines = p.stdout.splitlines()
    start = next((i for i, s in enumerate(lines) if s.startswith("Thread ")), None)
    if p.returncode != 0 or start is None:
        err = (p.stderr.strip().splitlines() or p.stdout.strip().splitlines() or [f"exit {p.returncode}"])[0]
        if "ptrace" in err.lower() or "permission" in err.lower():
            err += " (ptrace not permitted: run as root or set kernel.yama.ptrace_scope=0)"
        return [], f"py-spy dump failed: {err}"
    return [s.rstrip() for s in lines[start:] if s.strip()], ""


def capture(pid: int, role: str, *, stack: bool = True) -> ProcessReport:
    """A post-mortem of ``pid``: /proc first (instant, and true even if py-spy fails),
    then its stack unless ``stack`` is False or the process is gone."""
    state, wchan = proc_state(pid)
    r = ProcessReport(role, pid, state, wchan)
    if not stack:
        r.stack_error = "not taken"
    elif state in ("gone", "Z", "X"):
        r.stack_error = "the process has exited"
    else:
        r.stack, r.stack_error = py_spy_dump(pid)
    return r


def capture_all(processes: Iterable[tuple[int, str]], *, stack: bool = True) -> list[ProcessReport]:
    """:func:`capture` of each (pid, role)."""
    return [capture(pid, role, stack=stack) for pid, role in processes]


def write_stacks(folder: Path, title: str, reports: Sequence[ProcessReport],
                 notes: Sequence[str] = ()) -> Path:
    """Write ``folder/stacks.txt``: the title, the notes, then every process's block.

    Written to a temporary name and renamed (the temporary name starts with a dot,
    like every document's, so a reader of the folder never sees half a file)."""
    text = "\n".join([title, *notes, "", *(line for r in reports for line in [*r.lines(), ""])])
    path = Path(folder) / STACKS_TXT
    tmp = path.with_name(f".{STACKS_TXT}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text.rstrip("\n") + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# --- the arena kept, and audited again (issue 14) -------------------------------------------

ARENA_NPZ = "arena.npz"


def snapshot_arena(uma: Any, folder: Path) -> str | None:
    """Keep the arena of a run that ended wedged, stalled or in a panic:
    ``folder/arena.npz`` (allocator/snapshot.py: every array, payload excepted), taken by
    the manager at the very point its audit runs -- the workers stopped, the arena
    quiescent -- so that :func:`reaudit` walks exactly what the run's audit walked.  (A
    snapshot taken while CPUs still ran would be torn: items in flight in their hands.
    What every CPU was executing is stacks.txt's, taken before any process is killed.)
    Returns the file's name, None when it could not be written (the run's result stands)."""
    try:
        return str(uma.snapshot(Path(folder) / ARENA_NPZ).name)
    except OSError as exc:
        log.error("arena.npz not written: %s", exc)
        return None


@dataclass
class ReAudit:
    """``report --audit``: the audit of a saved arena beside what run.json recorded."""

    verdict: str  #: the re-audit's verdict (with run.json's stop: wedge, stall, signal, error)
    audit_verdict: str  #: what the arena alone says about the allocator
    recorded: str  #: run.json ``verdict``
    recorded_audit: str  #: run.json ``audit_verdict`` (or ``verdict``)
    block: dict[str, Any]  #: the run.json ``audit`` block the re-audit computes
    recorded_block: dict[str, Any]  #: run.json ``audit``
    lines: list[str]  #: the audit's summary lines

    @property
    def same(self) -> bool:
        """The same verdicts and the same audit block, count for count."""
        return ((self.verdict, self.audit_verdict) == (self.recorded, self.recorded_audit)
                and self.block == self.recorded_block)

    def differences(self) -> list[str]:
        """The audit block's fields that differ: ``lost: {...} recorded, {...} now``."""
        keys = sorted(set(self.block) | set(self.recorded_block))
        return [f"{k}: {self.recorded_block.get(k)!r} recorded, {self.block.get(k)!r} re-audited"
                for k in keys if self.block.get(k) != self.recorded_block.get(k)]


def reaudit(folder: Path, doc: dict[str, Any]) -> ReAudit:
    """Audit ``folder/arena.npz`` again, offline, the way the manager audited the live
    arena (stress/engine/manager.py ``_outcome``): the consumers' holdings from the saved
    rings, the killed CPUs' hands set aside, panics and WITNESS from the saved arena, and
    run.json's wedge, stall, signal and error for what only the run could see.  Raises
    ValueError (one line) when there is no usable snapshot."""
    path = Path(folder) / ARENA_NPZ
    if not path.is_file():
        raise ValueError(f"{folder}: no {ARENA_NPZ} (only a run that ended wedged, stalled or in a panic keeps "
                         "its arena)")
    uma = Uma.from_snapshot(path)
    try:
        report = uma.audit(held_mbufs(uma, uma.arena.layout.extra))
        stop = doc.get("stop") or {}
        killed = stop.get("killed_mid_operation") or []
        if killed:
            report.set_aside(killed, audit.KILLED_HAND)
        config = doc.get("config") or {}
        lock_order = len(findings(uma.view)) if config.get("invariants") else 0
        stall = doc.get("stall")
        a = audit.assess(report, payload_errors=counter_totals(uma)["payload_errors"], panics=uma.panics(),
                         wedged=doc.get("wedge") is not None, lock_order_findings=lock_order,
                         error=doc.get("error"), stalled=stall.get("how") if isinstance(stall, dict) else None,
                         signal=stop.get("signal"), interrupted=str(doc.get("verdict_detail") or ""))
        lines = report.summary_lines()
    finally:
        uma.close()
    recorded = str(doc.get("verdict"))
    block = json.loads(json.dumps(a.block))  # as run.json holds it (lists, not tuples)
    return ReAudit(a.verdict, a.audit_verdict or a.verdict, recorded, str(doc.get("audit_verdict") or recorded),
                   block, dict(doc.get("audit") or {}), lines)
