"""Controlled scheduling at sched points: free, jitter, PCT with a token, and replay.

What and why
============

The races of races.md live in windows a few bytecodes wide.  Real parallel cores
(``free``) hit them by volume; ``jitter`` widens them with random delays, the way
different interrupt timing (ACPI on) did in 2005; ``pct`` takes the interleaving away
from the OS: only one worker runs between two sched points and a seeded PCT
controller chooses who runs next, so a failing seed fails every time and its schedule
can be written down; ``replay`` follows a written-down schedule exactly.

PCT (Burckhardt, Kothari, Musuvathi, Nagarakatte, ASPLOS 2010, "A randomized
scheduler with probabilistic guarantees of finding bugs"): give the n CPUs distinct
random priorities d, d+1, ..., d+n-1; choose d-1 *change points* among the first k
steps; always run the highest-priority runnable CPU; when the running CPU passes the
i-th change point its priority drops to d-i (below every initial one).  A bug of
depth d shows with probability >= 1/(n k^(d-1)) per run.  A stress run has no known
length, so we run PCT in *periods* of k steps (``pct_steps``): each period draws fresh
priorities and change points from ``(seed, period)``, i.e. one PCT trial per k steps,
all derived from the seed alone.

Who sends what to whom (``pct`` and ``replay``)::

    manager: Controller.prepare(uma) ── writes sc_ctl, sc_prio (and the replay log) ──> arena
             fork workers ───────────────────────────────────────────────────────┐
    worker k (holds the token):                                                     │
        sched_point(label): step += 1; choose next (PCT or the log);                │
                            record a switch in sc_log; sc_ctl[TOKEN] = next;        │
                            spin until sc_ctl[TOKEN] == k                           │
        sched_block():      sc_state[k] = BLOCKED; pass the token (-1 if nobody)     │
        sched_unblock():    sc_state[k] = WAKING; wait for the token                │
        finish():           sc_state[k] = EXITED; pass the token                    │
        uma.stop_requested(): sc_ctl[STOP], raised at a sched point (recorded step) │
    manager after the run: Controller.save(uma, folder) ── schedule.json ──> run folder

Only the token holder writes the schedule arrays (``sc_ctl`` words, ``sc_prio``,
``sc_log``), so they need no lock: the token word is the lock, handed over by a single
aligned store.  Two exceptions, both rare: a CPU woken while nobody holds the token
(all CPUs were asleep; the manager woke one) takes the orphan token under
``_ORPHAN_LOCK``; a waiter that finds the token holder's process dead takes it the
same way, so a killed worker cannot hang the rest.

A CPU asleep in zonelimit is not runnable.  A CPU whose sched point label starts with
one of :data:`YIELD_PREFIXES` (a try-lock retry, a wait for a ring) says "I cannot
progress": PCT runs someone else if anyone else is runnable, otherwise it keeps it.

The schedule file (``schedule.json``, format ``zonelimit.schedule/1``) holds the PCT
parameters and every *switch*: ``[step, cpu, label]``.  Steps without an entry
continue the running CPU.  Replay hands the token exactly as recorded; a recorded
label that differs from the label the replaying CPU reached is a *divergence*
(counted, first step kept), which means the system under test (or the tester) is
not deterministic under the token, and is reported instead of silently ignored.

The stop flag is part of the schedule: a worker under the token sees the manager's
stop only at a sched point (the first after the manager asked), and that step is
recorded; a replay raises it at the same step, and stops the run when the recording
is used up.  Otherwise the step at which each CPU leaves its loop would depend on the
manager's timer and every replay would diverge at its end.

Open questions: the manager's own arena writes (trim callout) are not under the
token; in ``pct``/``replay`` the manager does not trim, or replays would diverge.  A
CPU blocked in zonelimit is woken by a free made under the token, so its return is
ordered too; a wakeup by the manager (a drain request) is not.
"""

from __future__ import annotations

import json
import os
import random
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from allocator.layout import ArraySpec
from stress.config import RunConfig

SCHED_MODES = ("free", "jitter", "pct", "replay")
SCHEDULE_FORMAT = "zonelimit.schedule/1"
SCHEDULE_FILE = "schedule.json"
DEFAULT_PCT_STEPS = 2000  #: k: the length of one PCT period, in sched points
LOG_ENTRIES = 1 << 18  #: switches recorded in the arena (2 MB); beyond: overflow, not recorded
YIELD_PREFIXES = ("yield", "spin", "retry", "trylock", "wait")
SPIN_LIMIT = 256  #: same label this many times in a row without a switch counts as a yield
# Waiting for the token: poll, then yield the core, then nap (a waiter must not burn a
# core forever when the holder is slow or asleep).  Measured on 2 cores: a hand-over
# costs about 14 us (71k steps/s with a switch at every step, 370k without); the yield
# and nap lengths made no visible difference to a full pct run (about 10k ops/s, bound
# by the workers' own naps while they hold the token).
SPIN_POLLS = 64
YIELD_POLLS = 4096
NAP_S = 0.0001

# sc_ctl words
CTL_TOKEN = 0  #: CPU allowed to run; -1 nobody (all asleep or exited)
CTL_STEP = 1  #: sched points passed under the token
CTL_NLOG = 2  #: switches recorded (pct) / replayed (replay)
CTL_NREPLAY = 3  #: switches preloaded for replay
CTL_DIVERGED = 4  #: first divergent step + 1, 0 none
CTL_NDIVERGED = 5  #: divergences seen
CTL_OVERFLOW = 6  #: 1 if switches were not recorded for lack of room
CTL_MODE = 7  #: index in SCHED_MODES
CTL_PERIOD = 8  #: current PCT period
CTL_CHANGE = 9  #: change points of the period already applied
CTL_ORPHANS = 10  #: times an orphan token was taken
CTL_SEED = 11  #: PCT seed (written by prepare_arena; workers read the plan from here)
CTL_DEPTH = 12  #: PCT depth d
CTL_STEPS = 13  #: PCT period k
CTL_STOP = 14  #: the stop flag as the workers see it: raised only at a sched point (deterministic)
CTL_STOPSTEP = 15  #: pct: step at which the stop was raised; replay: step at which to raise it
CTL_LOAD = 16  #: the manager's load flag (wl_ctl RUN) as the workers see it: changes only at a sched point
CTL_NLOAD = 17  #: load flag changes recorded (pct) / applied (replay)
CTL_NLOADREC = 18  #: load flag changes preloaded for replay
CTL_WORDS = 20
LOAD_ENTRIES = 4096  #: load flag changes recorded (a round switches it twice)

# sc_state values
RUNNABLE = 0
BLOCKED = 1  #: asleep in zonelimit
WAKING = 2  #: woken, waiting for the token
EXITED = 3
STATE_NAMES = ("runnable", "blocked", "waking", "exited")


def label_id(label: str) -> int:
    """A stable 31-bit id of a sched point label (recorded next to each switch)."""
    return zlib.crc32(label.encode()) & 0x7FFFFFFF


def is_yield(label: str) -> bool:
    """Whether a sched point says "I cannot progress now" (try-lock retry, ring wait)."""
    return label.startswith(YIELD_PREFIXES)


# --- the PCT algorithm, as plain logic -------------------------------------------------


@dataclass(frozen=True)
class PctPeriod:
    """One PCT trial of ``steps`` sched points: initial priorities and change points."""

    priorities: tuple[int, ...]  #: per CPU, distinct, in [depth, depth + ncpus)
    change_points: tuple[int, ...]  #: d-1 distinct steps in [1, steps], sorted (period-relative)

    def lowered(self, i: int, depth: int) -> int:
        """Priority given at the i-th change point (0-based): depth-1-i, below every initial one."""
        return depth - 1 - i


def pct_period(seed: int, period: int, ncpus: int, depth: int, steps: int) -> PctPeriod:
    """Draw period ``period`` of the PCT plan of ``seed``: a pure function, so every
    process (and a replay years later) derives the same plan from the seed alone."""
    if ncpus < 1 or depth < 1 or steps < 1:
        raise ValueError("pct needs ncpus >= 1, depth >= 1, steps >= 1")
    rng = random.Random(f"pct:{seed}:{period}")
    prios = list(range(depth, depth + ncpus))
    rng.shuffle(prios)
    nchange = min(depth - 1, steps)
    changes = sorted(rng.sample(range(1, steps + 1), nchange))
    return PctPeriod(tuple(prios), tuple(changes))


def pct_choose(prio: Sequence[int], runnable: Sequence[bool], current: int, yielding: bool) -> int:
    """The PCT choice: the highest-priority runnable CPU; a yielding ``current`` is
    passed over when anyone else is runnable.  Returns -1 when nobody is runnable."""
    best = -1
    for j, ok in enumerate(runnable):
        if not ok or (yielding and j == current):
            continue
        if best < 0 or prio[j] > prio[best]:
            best = j
    if best < 0 and yielding and 0 <= current < len(runnable) and runnable[current]:
        return current
    return best


# --- the schedule file -------------------------------------------------------------------


@dataclass
class Schedule:
    """A recorded schedule: the PCT parameters and every switch ``(step, cpu, label_id)``."""

    seed: int
    ncpus: int
    depth: int
    steps: int
    switches: list[tuple[int, int, int]] = field(default_factory=list)
    total_steps: int = 0
    stop_step: int = 0  #: the step at which the workers saw the stop flag (0: never)
    #: (step, value) at which the workers saw the manager's load flag change (rounds, the
    #: final drain); the flag starts at 1
    load_changes: list[tuple[int, int]] = field(default_factory=list)
    overflow: bool = False
    labels: dict[int, str] = field(default_factory=dict)  #: label ids seen by the manager
    format: str = SCHEDULE_FORMAT

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of schedule.json."""
        d = asdict(self)
        d["switches"] = [list(s) for s in self.switches]
        d["load_changes"] = [list(c) for c in self.load_changes]
        d["labels"] = {str(k): v for k, v in self.labels.items()}
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Schedule:
        """Rebuild from schedule.json; refuses unknown major formats."""
        fmt = d.get("format", "")
        if not str(fmt).startswith("zonelimit.schedule/1"):
            raise ValueError(f"unknown schedule format {fmt!r} (expected {SCHEDULE_FORMAT})")
        return Schedule(
            seed=int(d["seed"]), ncpus=int(d["ncpus"]), depth=int(d["depth"]), steps=int(d["steps"]),
            switches=[(int(a), int(b), int(c)) for a, b, c in d.get("switches", [])],
            total_steps=int(d.get("total_steps", 0)), stop_step=int(d.get("stop_step", 0)),
            load_changes=[(int(a), int(b)) for a, b in d.get("load_changes", [])],
            overflow=bool(d.get("overflow", False)),
            labels={int(k): str(v) for k, v in d.get("labels", {}).items()},
        )

    def save(self, folder: Path) -> Path:
        """Write ``folder/schedule.json`` (written whole, then renamed: never half a file)."""
        path = Path(folder) / SCHEDULE_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), separators=(",", ":")) + "\n")
        os.replace(tmp, path)
        return path


def load_schedule(run_dir: Path) -> Schedule:
    """The schedule recorded in a run folder (``RUN_DIR/schedule.json``).

    Raises FileNotFoundError when the run was not controlled (free/jitter runs record
    no schedule: replaying them re-runs the seed, which may not reproduce a race)."""
    path = Path(run_dir) / SCHEDULE_FILE
    return Schedule.from_dict(json.loads(path.read_text()))


# --- arena arrays ------------------------------------------------------------------------


class ViewFn(Protocol):
    """How the scheduler reaches its arrays: ``uma.view`` or a test's plain mapping."""

    def __call__(self, name: str) -> memoryview: ...


def sched_specs(ncpus: int, log_entries: int = LOG_ENTRIES) -> tuple[ArraySpec, ...]:
    """The schedule arrays for ``ncpus`` CPUs (``sc_`` prefix)."""
    return (
        ArraySpec("sc_ctl", "q", CTL_WORDS, "schedule control: token, step, log counts (CTL_*)"),
        ArraySpec("sc_prio", "q", max(ncpus, 1), "PCT priority per CPU"),
        ArraySpec("sc_state", "q", max(ncpus, 1), "RUNNABLE / BLOCKED / WAKING / EXITED per CPU"),
        ArraySpec("sc_pid", "q", max(ncpus, 1), "pid of the worker under the token protocol"),
        ArraySpec("sc_log", "q", 3 * log_entries, "switches: step, cpu, label id"),
        ArraySpec("sc_load", "q", 2 * LOAD_ENTRIES, "load flag changes: step, value"),
    )


def sched_arrays(cfg: RunConfig) -> tuple[ArraySpec, ...]:
    """Every arena array race tooling needs for ``cfg`` (a RunConfig): the schedule
    arrays in pct/replay mode, the WITNESS tables with --invariants.  The manager adds
    them to ``UmaConfig(extra=...)``."""
    from allocator.witness import witness_arrays

    out: tuple[ArraySpec, ...] = ()
    if cfg.sched in ("pct", "replay"):
        out += sched_specs(cfg.cpus)
    if cfg.invariants:
        out += witness_arrays(cfg.cpus)
    return out


# --- the token protocol --------------------------------------------------------------------

_ORPHAN_LOCK: Any = None  # a fork-context Lock made by Controller before fork


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().split(b")")[-1].split()[0] != b"Z"
    except OSError:
        return False


class TokenScheduler:
    """CPU ``k``'s side of the token protocol (pct and replay).

    Bind :meth:`sched_point`, :meth:`sched_block`, :meth:`sched_unblock` to the CPU's
    hooks; call :meth:`start` before the first allocator call and :meth:`finish` when
    the worker leaves (both done by :func:`install` / :func:`uninstall`).
    """

    def __init__(self, view: ViewFn, k: int, ncpus: int,
                 on_exhausted: Callable[[], None] | None = None,
                 real_stop: Callable[[], bool] | None = None,
                 real_load: Callable[[], int] | None = None) -> None:
        self.on_exhausted = on_exhausted  #: replay: called when the recorded run stopped (stop ours)
        self.real_stop = real_stop  #: the manager's stop flag, read only at sched points
        self.real_load = real_load  #: the manager's load flag (wl_ctl RUN), read only at sched points
        self.ctl = view("sc_ctl")
        mode = SCHED_MODES[self.ctl[CTL_MODE]]
        if mode not in ("pct", "replay"):
            raise ValueError(f"TokenScheduler runs pct or replay, not {mode!r}")
        self.k = k
        self.ncpus = ncpus
        self.replay = mode == "replay"
        self.seed = int(self.ctl[CTL_SEED])
        self.depth = int(self.ctl[CTL_DEPTH])
        self.steps = int(self.ctl[CTL_STEPS])
        self.prio = view("sc_prio")
        self.state = view("sc_state")
        self.pid = view("sc_pid")
        self.log = view("sc_log")
        self.log_cap = len(self.log) // 3
        try:
            self.loadlog: memoryview | None = view("sc_load")
        except KeyError:
            self.loadlog = None
        try:  # the allocator's "woken" flag: set by the waker under the keg lock, i.e.
            # by the token holder, so reading it keeps the schedule deterministic
            self.woken: memoryview | None = view("cpu_woken")
        except KeyError:
            self.woken = None
        self._last_label = -1
        self._same = 0
        self._plan: PctPeriod | None = None
        self._plan_period = -1

    # the hot path ------------------------------------------------------------------------
    def sched_point(self, label: str) -> None:
        """A sched point: count a step, choose who runs next, hand over, wait our turn."""
        ctl = self.ctl
        k = self.k
        if ctl[CTL_TOKEN] != k:  # not ours (a stray call after finish, or before start)
            self._wait()
            return
        lid = label_id(label)
        if lid == self._last_label:
            self._same += 1
        else:
            self._last_label = lid
            self._same = 0
        yielding = self._same >= SPIN_LIMIT or is_yield(label)
        step = ctl[CTL_STEP] + 1
        ctl[CTL_STEP] = step
        if not ctl[CTL_STOP]:
            self._gate_stop(step)
        if self.loadlog is not None:
            self._gate_load(step)
        nxt = self._pct_next(step, yielding)
        if self.replay:
            nxt = self._replay_next(step, lid, nxt)
        if nxt == k or nxt < 0:
            return
        self._same = 0
        if not self.replay:
            self._record(step, nxt, lid)
        self._hand(nxt)
        self._wait()

    def stop_requested(self) -> bool:
        """The stop flag as a worker under the token must see it: raised at a sched point
        (pct: the first one after the manager asked; replay: the recorded step), so the
        step at which each CPU leaves its loop is part of the schedule."""
        return bool(self.ctl[CTL_STOP])

    def _gate_stop(self, step: int) -> None:
        ctl = self.ctl
        if self.replay:
            if 0 < ctl[CTL_STOPSTEP] <= step:
                ctl[CTL_STOP] = 1
                if self.on_exhausted is not None:  # the recorded run stopped here: stop ours
                    self.on_exhausted()
        elif self.real_stop is not None and self.real_stop():
            ctl[CTL_STOPSTEP] = step
            ctl[CTL_STOP] = 1

    def load(self) -> bool:
        """The manager's load flag (wl_ctl RUN) as a worker under the token must see it:
        changed at a sched point (pct: the first one after the manager changed it;
        replay: the recorded step), so the step at which a CPU goes idle for the final
        drain, or between rounds, is part of the schedule too."""
        return self.ctl[CTL_LOAD] == 1

    def _gate_load(self, step: int) -> None:
        ctl, log = self.ctl, self.loadlog
        assert log is not None
        if self.replay:
            i = ctl[CTL_NLOAD]
            while i < ctl[CTL_NLOADREC] and log[2 * i] <= step:
                ctl[CTL_LOAD] = log[2 * i + 1]
                i += 1
            ctl[CTL_NLOAD] = i
            return
        if self.real_load is None:
            return
        v = self.real_load()
        if v != ctl[CTL_LOAD]:
            ctl[CTL_LOAD] = v
            i = ctl[CTL_NLOAD]
            if 2 * i + 1 < len(log):
                log[2 * i], log[2 * i + 1] = step, v
                ctl[CTL_NLOAD] = i + 1
            else:
                ctl[CTL_OVERFLOW] = 1

    def sched_block(self) -> None:
        """Right before CPU k sleeps in zonelimit: it is not runnable; pass the token."""
        self.state[self.k] = BLOCKED
        self._leave("block")

    def sched_unblock(self) -> None:
        """Right after CPU k wakes from zonelimit: wait until it is chosen again."""
        self.state[self.k] = WAKING
        self._wait()
        self.state[self.k] = RUNNABLE

    def start(self) -> None:
        """Register this CPU and wait for the first turn (CPU of the highest priority
        starts; the Controller put the token there)."""
        self.pid[self.k] = os.getpid()
        self._wait()

    def finish(self) -> None:
        """CPU k leaves for good: never runnable again; pass the token on."""
        self.state[self.k] = EXITED
        self._leave("exit")

    def _leave(self, label: str) -> None:
        """CPU k stops being runnable while holding the token: a step that always
        switches (to -1 when nobody is runnable), always recorded."""
        ctl = self.ctl
        if ctl[CTL_TOKEN] != self.k:
            return
        step = ctl[CTL_STEP] + 1
        ctl[CTL_STEP] = step
        lid = label_id(label)
        nxt = self._pct_next(step, False)
        if self.replay:
            nxt = self._replay_next(step, lid, nxt)
        else:
            self._record(step, nxt, lid)
        self._hand(nxt)

    # choices -----------------------------------------------------------------------------
    def _runnable(self) -> list[bool]:
        st, woken = self.state, self.woken
        return [st[j] == RUNNABLE or st[j] == WAKING
                or (st[j] == BLOCKED and woken is not None and woken[j] != 0)
                for j in range(self.ncpus)]

    def _pct_next(self, step: int, yielding: bool) -> int:
        ctl = self.ctl
        period = (step - 1) // self.steps
        if period != ctl[CTL_PERIOD] or self._plan is None or self._plan_period != period:
            plan = pct_period(self.seed, period, self.ncpus, self.depth, self.steps)
            if period != ctl[CTL_PERIOD]:  # first step of a new period: fresh priorities
                ctl[CTL_PERIOD] = period
                ctl[CTL_CHANGE] = 0
                for j, p in enumerate(plan.priorities):
                    self.prio[j] = p
            self._plan, self._plan_period = plan, period
        plan = self._plan
        rel = step - period * self.steps
        i = ctl[CTL_CHANGE]
        if i < len(plan.change_points) and rel >= plan.change_points[i]:
            self.prio[self.k] = plan.lowered(i, self.depth)
            ctl[CTL_CHANGE] = i + 1
        return pct_choose(self.prio, self._runnable(), self.k, yielding)

    def _replay_next(self, step: int, lid: int, pct: int) -> int:
        """The recorded choice at ``step``; ``pct`` (what PCT would do: the priorities
        are kept up to date in replay too) once the recording is used up."""
        ctl = self.ctl
        i = ctl[CTL_NLOG]
        if i >= ctl[CTL_NREPLAY]:
            # past the recording: the recorded run ended here; stop this one too, and
            # continue exactly as the pct run would until every CPU has left
            ctl[CTL_STOP] = 1
            if self.on_exhausted is not None:
                self.on_exhausted()
            return pct
        runnable = self._runnable()
        if self.log[3 * i] == step:
            ctl[CTL_NLOG] = i + 1
            nxt = self.log[3 * i + 1]
            if self.log[3 * i + 2] != lid or (nxt >= 0 and not runnable[nxt]) or (nxt < 0 and any(runnable)):
                self._diverged(step)
                return pct
            return nxt
        if self.log[3 * i] < step:  # a recorded switch we never reached
            self._diverged(step)
            ctl[CTL_NLOG] = i + 1
            return pct
        if runnable[self.k] and self.state[self.k] != BLOCKED:
            return self.k
        # the recording says "continue" but we cannot
        self._diverged(step)
        return pct

    def _diverged(self, step: int) -> None:
        ctl = self.ctl
        if ctl[CTL_DIVERGED] == 0:
            ctl[CTL_DIVERGED] = step + 1
        ctl[CTL_NDIVERGED] += 1

    def _record(self, step: int, nxt: int, lid: int) -> None:
        ctl = self.ctl
        i = ctl[CTL_NLOG]
        if i >= self.log_cap:
            ctl[CTL_OVERFLOW] = 1
            return
        log = self.log
        log[3 * i] = step
        log[3 * i + 1] = nxt
        log[3 * i + 2] = lid
        ctl[CTL_NLOG] = i + 1

    # hand-over and waiting ---------------------------------------------------------------
    def _hand(self, nxt: int) -> None:
        self.ctl[CTL_TOKEN] = nxt

    def _wait(self) -> None:
        """Spin until the token is ours; then yield the core; then sleep briefly.  Take
        an orphan token (nobody holds it, or its holder died) under the orphan lock."""
        ctl = self.ctl
        k = self.k
        n = 0
        while ctl[CTL_TOKEN] != k:
            n += 1
            if n < SPIN_POLLS:
                continue
            if n < YIELD_POLLS:
                os.sched_yield()
                continue
            time.sleep(NAP_S)
            if n % 64 == 0:
                self._maybe_orphan()

    def _maybe_orphan(self) -> None:
        ctl = self.ctl
        tok = ctl[CTL_TOKEN]
        if tok >= 0 and self.state[tok] != EXITED and _pid_alive(self.pid[tok]):
            return
        if tok >= 0 and self.pid[tok] == 0 and self.state[tok] != EXITED:
            return  # the holder has not started yet
        lock = _ORPHAN_LOCK
        if lock is not None:
            lock.acquire()
        try:
            if ctl[CTL_TOKEN] == tok:
                if tok >= 0:
                    self.state[tok] = EXITED  # died holding the token: never runnable again
                ctl[CTL_ORPHANS] += 1
                ctl[CTL_TOKEN] = self.k
        finally:
            if lock is not None:
                lock.release()


# --- jitter -------------------------------------------------------------------------------


def jitter_point(p: float, seed: int) -> Callable[[str], None]:
    """A sched point that, with probability ``p``, yields the core or spins a short random
    while (up to a few microseconds): widens race windows without controlling order."""
    rng = random.Random(seed)
    rand = rng.random
    yield_ = os.sched_yield

    def sched_point(label: str) -> None:
        if rand() < p:
            if rand() < 0.5:
                yield_()
            else:
                for _ in range(int(rand() * 200)):
                    pass

    return sched_point


# --- manager and worker entry points ------------------------------------------------------


def pct_steps(cfg: RunConfig) -> int:
    """The PCT period k of a run: the workload's ``PCT_STEPS`` (the race workloads' rounds
    are a few hundred sched points, and a period about that long gives every round a
    fresh chance), else the default."""
    from stress.workloads import workload_class  # the registry imports the workloads: only for pct

    return workload_class(cfg.workload).PCT_STEPS or DEFAULT_PCT_STEPS


class Controller:
    """The manager's side: prepares the arena before fork, saves the schedule after.

    Use::

        ctl = Controller(cfg)       # replay: loads cfg.replay_from/schedule.json
        uma = Uma.create(UmaConfig(..., extra=... + sched_arrays(cfg)))
        ctl.prepare(uma)            # before forking workers
        ... run; workers call install()/uninstall() ...
        ctl.save(uma, folder)       # after the workers stopped (pct: writes schedule.json)
        doc["schedule"] = ctl.summary(uma)
    """

    def __init__(self, cfg: RunConfig, replay: Schedule | None = None) -> None:
        self.cfg = cfg
        self.mode = cfg.sched
        src = cfg.replay_from
        if replay is None and self.mode == "replay" and src:
            replay = load_schedule(Path(src))
        self.replay = replay
        if self.mode == "replay" and replay is None:
            raise ValueError("--sched replay needs a recorded schedule (python -m stress replay RUN_DIR)")
        if replay is not None:
            self.seed, self.depth, self.steps = replay.seed, replay.depth, replay.steps
        else:
            self.seed, self.depth, self.steps = int(cfg.seed), cfg.pct_depth, pct_steps(cfg)

    @property
    def controlled(self) -> bool:
        """Whether workers run under the token (pct or replay)."""
        return self.mode in ("pct", "replay")

    def prepare(self, uma: Any) -> None:
        """Write the initial token, priorities and (replay) the recorded switches into the
        arena; make the orphan lock the forked workers inherit."""
        if not self.controlled:
            return
        prepare_arena(uma.view, self.cfg.cpus, self.mode, self.seed, self.depth, self.steps, self.replay)
        make_orphan_lock()

    def schedule(self, uma: Any) -> Schedule | None:
        """The schedule as recorded in the arena (pct), or None."""
        if self.mode != "pct":
            return None
        return read_schedule(uma.view, self.cfg.cpus, self.seed, self.depth, self.steps)

    def save(self, uma: Any, folder: Path) -> Path | None:
        """Write schedule.json into the run folder (pct: what happened; replay: a copy of
        what was followed).  Returns the path, or None in free/jitter mode."""
        if self.mode == "pct":
            s = self.schedule(uma)
            assert s is not None
            return s.save(folder)
        if self.mode == "replay" and self.replay is not None:
            return self.replay.save(folder)
        return None

    def summary(self, uma: Any) -> dict[str, Any]:
        """The ``schedule`` block of run.json: mode, seed, depth, steps, switches,
        divergence (replay)."""
        d: dict[str, Any] = {"mode": self.mode, "seed": self.seed}
        if self.mode == "jitter":
            d["jitter"] = self.cfg.jitter
        if not self.controlled:
            return d
        ctl = uma.view("sc_ctl")
        d.update(depth=self.depth, steps=self.steps, total_steps=int(ctl[CTL_STEP]),
                 switches=int(ctl[CTL_NLOG]), overflow=bool(ctl[CTL_OVERFLOW]),
                 orphans=int(ctl[CTL_ORPHANS]))
        if self.mode == "replay":
            d["replayed"] = int(ctl[CTL_NLOG])
            d["recorded"] = int(ctl[CTL_NREPLAY])
            d["diverged_at_step"] = int(ctl[CTL_DIVERGED]) - 1 if ctl[CTL_DIVERGED] else None
            d["divergences"] = int(ctl[CTL_NDIVERGED])
        return d


def make_orphan_lock() -> None:
    """Make the lock under which an orphan token is taken; call before forking the CPUs
    (a fork-context lock: its semaphore is unlinked at once and cannot leak)."""
    global _ORPHAN_LOCK
    import multiprocessing

    _ORPHAN_LOCK = multiprocessing.get_context("fork").Lock()


def prepare_arena(view: ViewFn, ncpus: int, mode: str, seed: int, depth: int, steps: int,
                  replay: Schedule | None = None) -> None:
    """Initialise the schedule arrays: period 0 priorities, the token on the CPU that
    PCT runs first, and in replay mode the recorded switches."""
    ctl, prio, state, log = view("sc_ctl"), view("sc_prio"), view("sc_state"), view("sc_log")
    for i in range(len(ctl)):
        ctl[i] = 0
    plan = pct_period(seed, 0, ncpus, depth, steps)
    for j in range(ncpus):
        prio[j] = plan.priorities[j]
        state[j] = RUNNABLE
    ctl[CTL_MODE] = SCHED_MODES.index(mode)
    ctl[CTL_SEED], ctl[CTL_DEPTH], ctl[CTL_STEPS] = seed, depth, steps
    ctl[CTL_LOAD] = 1
    first = pct_choose(prio, [True] * ncpus, -1, False)
    if replay is not None:
        if replay.ncpus != ncpus:
            raise ValueError(f"schedule recorded for {replay.ncpus} CPUs, run has {ncpus}")
        cap = len(log) // 3
        sw = replay.switches[:cap]
        for i, (step, cpu, lid) in enumerate(sw):
            log[3 * i], log[3 * i + 1], log[3 * i + 2] = step, cpu, lid
        ctl[CTL_NREPLAY] = len(sw)
        ctl[CTL_STOPSTEP] = replay.stop_step
        try:
            loadlog = view("sc_load")
        except KeyError:
            loadlog = None
        if loadlog is not None:
            ch = replay.load_changes[:len(loadlog) // 2]
            for i, (step, v) in enumerate(ch):
                loadlog[2 * i], loadlog[2 * i + 1] = step, v
            ctl[CTL_NLOADREC] = len(ch)
        if sw and sw[0][0] == 0:  # step 0: the first CPU to run
            first = sw[0][1]
            ctl[CTL_NLOG] = 1
    elif mode == "pct":
        log[0], log[1], log[2] = 0, first, label_id("start")
        ctl[CTL_NLOG] = 1
    ctl[CTL_TOKEN] = first


def read_schedule(view: ViewFn, ncpus: int, seed: int, depth: int, steps: int) -> Schedule:
    """The switches recorded in the arena, as a :class:`Schedule`."""
    ctl, log = view("sc_ctl"), view("sc_log")
    n = min(int(ctl[CTL_NLOG]), len(log) // 3)
    sw = [(int(log[3 * i]), int(log[3 * i + 1]), int(log[3 * i + 2])) for i in range(n)]
    try:
        loadlog = view("sc_load")
        m = min(int(ctl[CTL_NLOAD]), len(loadlog) // 2)
        load = [(int(loadlog[2 * i]), int(loadlog[2 * i + 1])) for i in range(m)]
    except KeyError:
        load = []
    return Schedule(seed=seed, ncpus=ncpus, depth=depth, steps=steps, switches=sw, load_changes=load,
                    total_steps=int(ctl[CTL_STEP]), stop_step=int(ctl[CTL_STOPSTEP]),
                    overflow=bool(ctl[CTL_OVERFLOW]))


def prepare_replay(run_dir: Path, cfg: RunConfig) -> RunConfig:
    """The CLI's replay hook: the configuration that replays RUN_DIR.

    A run folder with a schedule (a pct or replay run) is replayed with
    ``sched="replay"`` following that schedule exactly; a free or jitter run re-runs its
    seed (same configuration, not necessarily the same interleaving).  Raises
    ValueError (one line) when the schedule is unusable."""
    path = Path(run_dir) / SCHEDULE_FILE
    if not path.is_file():
        if cfg.sched == "replay":
            raise ValueError(f"recorded --sched replay but holds no {SCHEDULE_FILE}")
        return cfg
    try:
        s = load_schedule(Path(run_dir))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{SCHEDULE_FILE} unreadable: {exc}") from None
    if s.ncpus != cfg.cpus:
        raise ValueError(f"{SCHEDULE_FILE} was recorded for {s.ncpus} CPUs, run.json says {cfg.cpus}")
    # The replay stops its workers when the recording is used up; give it room to get
    # there even if following a schedule is slower than recording it was.  (The manager
    # still runs out its duration: it does not end when every worker has left.)
    return cfg.replace(sched="replay", replay_from=str(run_dir), duration=cfg.duration * 2 + 2.0)


_INSTALLED: dict[int, TokenScheduler] = {}


def install(cpu: Any, uma: Any, cfg: RunConfig, k: int) -> None:
    """In worker k, after fork and pinning, before the first allocator call: install the
    sched point of ``cfg.sched`` (and WITNESS hooks with --invariants).  In pct/replay
    this blocks until CPU k is first chosen to run."""
    mode = cfg.sched
    witness = None
    if cfg.invariants:
        from allocator.witness import Witness, has_witness

        if has_witness(uma.view):
            witness = Witness(uma.view, k)
            witness.install(cpu)
    if mode == "jitter":
        cpu.sched_point = jitter_point(float(cfg.jitter), (int(cfg.seed) * 1000003 + k) & 0xFFFFFFFF)
    if mode in ("free", "jitter"):
        if witness is not None:
            cpu.sched_block = witness.check_sleep
        cpu.instrument()  # the allocator re-chooses its lock pair for the hooks
        return
    from stress.workloads.common import CTL_RUN

    try:
        wl_ctl = uma.view("wl_ctl")
    except KeyError:
        wl_ctl = None
    ts = TokenScheduler(uma.view, k, cfg.cpus, on_exhausted=uma.request_stop if mode == "replay" else None,
                        real_stop=uma.stop_requested,
                        real_load=None if wl_ctl is None else (lambda: int(wl_ctl[CTL_RUN])))
    # The worker loop checks uma.stop_requested() between sched points; under the token
    # it must see the gated flag instead, or the step at which it stops would depend on
    # when the manager's timer fired.  Shadowing the method on this process's Uma object
    # changes nothing for the manager or for other processes.
    uma.stop_requested = ts.stop_requested
    cpu.sched_point = ts.sched_point
    cpu.sched_block = ts.sched_block
    if witness is not None:
        check, block = witness.check_sleep, ts.sched_block

        def sched_block() -> None:
            check()
            block()

        cpu.sched_block = sched_block
    cpu.sched_unblock = ts.sched_unblock
    cpu.instrument()  # the allocator re-chooses its lock pair for the hooks
    _INSTALLED[k] = ts
    ts.start()


def load_flag(k: int, wl_ctl: Any, word: int = 0) -> Callable[[], bool]:
    """How worker k reads the manager's load flag (``wl_ctl[word]`` == 1): directly in
    free/jitter, through the token scheduler's gated copy in pct/replay (see
    :meth:`TokenScheduler.load`), so a replay idles at the recorded step."""
    ts = _INSTALLED.get(k)
    if ts is not None and ts.loadlog is not None:
        return ts.load
    return lambda: wl_ctl[word] == 1


def uninstall(cpu: Any, k: int) -> None:
    """In worker k, when its loop ends (stop flag seen, or an exception): leave the token
    protocol so the other CPUs keep running.  Safe to call in any mode, and twice."""
    ts = _INSTALLED.pop(k, None)
    if ts is not None:
        ts.finish()
