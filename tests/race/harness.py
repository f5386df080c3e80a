"""Focused race scenarios over the real allocator, under free / jitter / pct / replay.

Each catalogue row of races.md gets a small scenario that puts its window under
load with as few steps as possible, so that PCT finds it in a handful of seeds and a
pinned seed finds it every time.  The scenario runs in forked worker processes that
act as CPUs over one arena (``Uma.create`` before fork, as the manager does); the
verdict comes from the same oracles a full run uses: INVARIANTS panics, the
conservation audit, the wedge check ("asleep in zonelimit while the keg has free
items"), WITNESS; and the same verdict logic (``stress.audit.assess``).

Participants of the token protocol: the CPUs, plus (cache-drain-unsafe) a *drainer*
process using the manager's context, which is the party the unsafe drain races with.

Who sends what::

    test ── Uma.create + prepare_arena ──> arena ── fork ──> CPU 0..n-1 (+ drainer)
      workers: install a sched point, run their role, record held mbufs in rx_held,
               rx_state[k] = done / panicked
      test: wait; CPUs asleep in zonelimit after everyone else finished = wedged;
            kill them; audit(held) + panics + witness -> verdict; read the schedule
"""

from __future__ import annotations

import os
import signal
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from allocator import M_NOWAIT, M_PKTHDR, M_WAITOK, MT_DATA, ZONE_MBUF, Uma, UmaConfig, UmaPanic
from allocator.layout import KEG_CLUSTER, KEG_NAMES, ArraySpec
from allocator.witness import findings, witness_arrays
from stress.audit import assess
from stress.engine import sched

HELD = 128  #: rx_held slots per participant
LIMIT = 8  #: cluster limit of the zonelimit scenarios (4 pages of 2 clusters)

# rx_state values
RUNNING, DONE, PANICKED, FAILED = 0, 1, 2, 3


@dataclass
class Outcome:
    """What one scenario run found."""

    verdict: str
    reason: str
    schedule: sched.Schedule | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    histories: list[dict[str, Any]] = field(default_factory=list)  #: the audit block's item_histories


SCENARIOS = {
    "refcount-eq0": "shared",
    "refcount-unlocked": "shared",
    "lost-wakeup": "limit",
    "wake-one": "wakeone",
    "cache-drain-unsafe": "drain",
    "stats-unlocked": "stats",
}
NCPUS = {"shared": 2, "limit": 2, "wakeone": 2, "drain": 1, "stats": 2}
#: the manager-context participant (k == ncpus) of these scenarios
MANAGER_PART = {"drain", "wakeone"}
WAKEONE_HOLDER = NCPUS["wakeone"]


class Ctx:
    """What a participant sees: its CPU context, its scheduler, the shared test arrays."""

    def __init__(self, uma: Uma, k: int, cpu: Any, sp: Any, mode: str) -> None:
        self.uma, self.k, self.cpu, self.sp, self.mode = uma, k, cpu, sp, mode
        self.held = uma.view("rx_held")
        self.box = uma.view("rx_box")
        self.base = k * HELD

    def hold(self, m: int) -> None:
        h = self.held
        for i in range(self.base, self.base + HELD):
            if h[i] < 0:
                h[i] = m
                return
        raise RuntimeError("rx_held full")

    def unhold(self, m: int) -> None:
        h = self.held
        for i in range(self.base, self.base + HELD):
            if h[i] == m:
                h[i] = -1
                return

    def wait_until(self, cond: Any, label: str, budget: int) -> bool:
        """Wait for ``cond()``: yield sched points under the token, wall time otherwise."""
        if self.mode in ("pct", "replay"):
            for _ in range(budget):
                if cond():
                    return True
                self.sp("yield:" + label)
            return bool(cond())
        end = time.monotonic() + budget / 1000.0
        while not cond():
            if time.monotonic() > end:
                return False
            time.sleep(0.0002)
        return True


# --- roles ------------------------------------------------------------------------------------


def role_shared(c: Ctx, rounds: int) -> None:
    """The TCP send path: CPU 0 sends a packet and keeps an m_copym reference; the
    driver (CPU 1) frees its reference on transmit while CPU 0 frees the send buffer on
    ACK: two frees of one cluster on two CPUs at once."""
    box, cpu = c.box, c.cpu
    for r in range(rounds):
        if c.k == 0:
            m = cpu.m_getcl(M_WAITOK, MT_DATA, M_PKTHDR)
            c.hold(m)
            n = cpu.m_copym(m)
            box[0] = n  # the ring to the driver (the audit counts it as held)
            box[1] = r + 1
            c.sp("send")
            c.unhold(m)
            cpu.m_freem(m)
            c.wait_until(lambda r=r: box[2] == r + 1, "ack", 100000)
        else:
            if not c.wait_until(lambda r=r: box[1] == r + 1, "ring", 100000):
                return
            n = box[0]
            c.sp("transmit")
            box[0] = -1
            cpu.m_freem(n)
            box[2] = r + 1


def role_limit(c: Ctx, rounds: int) -> None:
    """zonelimit pressure: CPU 0 holds every cluster, CPU 1 asks for one (and sleeps),
    CPU 0 frees exactly one.  A lost wakeup leaves CPU 1 asleep with that cluster free."""
    box, cpu = c.box, c.cpu
    for r in range(rounds):
        if c.k == 0:
            held = []
            while True:
                m = cpu.m_gethdr(M_WAITOK, MT_DATA)
                c.hold(m)
                if not cpu.m_clget(m, M_NOWAIT):
                    cpu.m_freem(m)
                    c.unhold(m)
                    break
                held.append(m)
            box[1] = r + 1  # armed: every cluster is held
            c.wait_until(lambda r=r: box[3] == r + 1, "asking", 100000)
            c.sp("free one")
            m = held.pop()
            c.unhold(m)
            cpu.m_freem(m)
            if not c.wait_until(lambda r=r: box[2] == r + 1, "got it", 2000):
                return  # CPU 1 never got the free cluster: leave the rest held
            for m in held:
                c.unhold(m)
                cpu.m_freem(m)
            box[4] = r + 1
        else:
            if not c.wait_until(lambda r=r: box[1] == r + 1, "armed", 100000):
                return
            m = cpu.m_gethdr(M_WAITOK, MT_DATA)
            c.hold(m)
            box[3] = r + 1
            cpu.m_clget(m, M_WAITOK)  # sleeps in zonelimit until CPU 0 frees one
            box[2] = r + 1
            c.unhold(m)
            cpu.m_freem(m)
            c.wait_until(lambda r=r: box[4] == r + 1, "next round", 100000)


def role_wakeone(c: Ctx, rounds: int) -> None:
    """2005's free path at the limit: the holder (the manager's context, whose frees go
    straight to the slabs and whose allocations are single items) takes every cluster;
    CPUs 0 and 1 ask for one and sleep; the holder frees its clusters one by one.

    Fixed: FULL stays set while the keg is at its limit, so every free wakes a sleeper.
    wake-one: the first free clears FULL and wakes one; the frees that land before the
    woken CPU re-sets FULL (its M_NOWAIT refill hits the limit) wake nobody, and the
    other CPU sleeps on with those clusters free in the keg.  One round: a round leaves
    clusters in the woken CPUs' buckets, so a second round would not sleep."""
    box, cpu = c.box, c.cpu
    uk_nsleep = c.uma.view("uk_nsleep")
    if c.k == WAKEONE_HOLDER:
        held = []
        while True:
            m = cpu.m_gethdr(M_WAITOK, MT_DATA)
            c.hold(m)
            if not cpu.m_clget(m, M_NOWAIT):  # the limit: FULL is set
                c.unhold(m)
                cpu.m_freem(m)
                break
            held.append(m)
        box[1] = 1  # armed: every cluster is held
        if c.wait_until(lambda: uk_nsleep[KEG_CLUSTER] >= 2, "two sleepers", 100000):
            while held:
                m = held.pop()
                c.unhold(m)
                cpu.m_freem(m)
                c.sp("freed one")
            c.wait_until(lambda: box[6] == box[7] == 1, "both got one", 500)
        for m in held:
            c.unhold(m)
            cpu.m_freem(m)
        box[4] = 1
    else:
        if not c.wait_until(lambda: box[1] == 1, "armed", 100000):
            return
        m = cpu.m_gethdr(M_WAITOK, MT_DATA)
        c.hold(m)
        cpu.m_clget(m, M_WAITOK)  # sleeps in zonelimit until a free wakes it
        box[6 + c.k] = 1
        c.unhold(m)
        cpu.m_freem(m)


def role_drain(c: Ctx, rounds: int) -> None:
    """CPU 0 allocates and frees mbufs through its per-CPU buckets; the drainer (the
    manager's context) drains CPU 0's cache at the same time."""
    box, cpu = c.box, c.cpu
    if c.k == 0:
        held: list[int] = []
        for _round in range(rounds):
            for _ in range(40):  # a burst: bucket exchanges with the zone lists
                m = cpu.zalloc(ZONE_MBUF, M_WAITOK)
                c.hold(m)
                held.append(m)
                cpu.serve()
            while held:
                x = held.pop()
                c.unhold(x)
                cpu.zfree(ZONE_MBUF, x)
                cpu.serve()
        box[5] = 1
    else:
        state = c.uma.view("rx_state")
        while box[5] == 0 and state[0] == RUNNING:  # until CPU 0 finished (or panicked)
            c.uma.request_cache_drain([0], 1 << ZONE_MBUF)
            c.sp("yield:drained")


def role_stats(c: Ctx, rounds: int) -> None:
    """Both CPUs allocate and free mbufs: with the shared counters bumped unlocked,
    USED drifts from a walk of the arena."""
    cpu = c.cpu
    for _ in range(rounds * 20):
        m = cpu.m_gethdr(M_WAITOK, MT_DATA)
        c.hold(m)
        c.unhold(m)
        cpu.m_freem(m)


ROLES = {"shared": role_shared, "limit": role_limit, "wakeone": role_wakeone, "drain": role_drain,
         "stats": role_stats}
ROUNDS = {"shared": 12, "limit": 3, "wakeone": 1, "drain": 12, "stats": 20}
#: PCT period k per scenario: about the number of sched points between two chances
STEPS = {"shared": 300, "limit": 20, "wakeone": 40, "drain": 40, "stats": 40}


# --- the run --------------------------------------------------------------------------------


def run(scenario: str, inject: tuple[str, ...], mode: str, seed: int, *, depth: int = 2, steps: int | None = None,
        replay: sched.Schedule | None = None, rounds: int | None = None, jitter: float = 0.05,
        invariants: bool = True, timeout: float = 60.0, wedge_wait: float = 0.5) -> Outcome:
    """Run ``scenario`` once; return its verdict (and its schedule in pct mode)."""
    ncpus = NCPUS[scenario]
    drainer = scenario in MANAGER_PART
    parts = ncpus + (1 if drainer else 0)
    rounds = rounds or ROUNDS[scenario]
    steps = steps or STEPS[scenario]
    controlled = mode in ("pct", "replay")
    extra: tuple[ArraySpec, ...] = (
        ArraySpec("rx_held", "i", parts * HELD, "mbufs each participant holds"),
        ArraySpec("rx_box", "q", 8, "scenario mailbox"),
        ArraySpec("rx_state", "i", parts, "RUNNING / DONE / PANICKED / FAILED"),
        ArraySpec("rx_ready", "i", parts, "start line of the free and jitter runs"),
    )
    if controlled:
        extra += sched.sched_specs(parts, log_entries=1 << 16)
    extra += witness_arrays(ncpus)
    uma = Uma.create(UmaConfig(ncpus=ncpus, nmbclusters=_nmbclusters(scenario, rounds),
                               inject=frozenset(inject), invariants=invariants, extra=extra,
                               sched_locks=controlled))
    try:
        held = uma.view("rx_held")
        for i in range(len(held)):
            held[i] = -1
        box = uma.view("rx_box")
        box[0] = -1
        if controlled:
            sched.prepare_arena(uma.view, parts, mode, seed, depth, steps, replay)
        orphan_lock = sched.make_orphan_lock() if controlled else None
        pids = [_fork(uma, scenario, k, parts, ncpus, mode, seed, rounds, jitter, invariants, orphan_lock)
                for k in range(parts)]
        wedged, exhausted = _wait(uma, pids, ncpus, timeout, wedge_wait)
        states = list(uma.view("rx_state"))
        errors = [f"participant {k} failed (see stderr)" for k, s in enumerate(states) if s == FAILED]
        held_mbufs = [m for m in uma.view("rx_held") if m >= 0]
        if box[0] >= 0:
            held_mbufs.append(int(box[0]))
        report = uma.audit(held_mbufs)
        if exhausted and report.ok:
            raise RuntimeError(f"CPUs {exhausted} asleep in zonelimit with nothing free in their keg and "
                               "nothing lost: the scenario exhausted its limit (a resource deadlock, no "
                               "row's oracle)")
        # Exhausted with items lost is the leak's own consequence (the 2005 wedge: lost
        # clusters run the zone into its limit): the audit's verdict stands.
        wit = findings(uma.view)
        a = assess(report, panics=uma.panics(), wedged=wedged, lock_order_findings=len(wit),
                   error=errors[0] if errors else None)
        out = Outcome(a.verdict, a.reason, errors=errors, histories=list(a.block.get("item_histories", [])))
        if controlled:
            ctl = uma.view("sc_ctl")
            out.summary = {"steps": int(ctl[sched.CTL_STEP]), "switches": int(ctl[sched.CTL_NLOG]),
                           "divergences": int(ctl[sched.CTL_NDIVERGED])}
            if mode == "pct":
                out.schedule = sched.read_schedule(uma.view, parts, seed, depth, steps)
        return out
    finally:
        uma.close()


def _nmbclusters(scenario: str, rounds: int) -> int:
    """The cluster limit of a scenario.  The zonelimit rows run at :data:`LIMIT`.  The
    others must never reach their limit: a refcount race loses up to one cluster a round,
    and beside a CPU hog a 3000-round parallel hunt lost 1,600 before its sender slept in
    zonelimit for good, while the driver waited on the ring: a hang, not a verdict.  So
    their limit stays above everything a run could lose, and the audit finds the leak."""
    if scenario in ("limit", "wakeone"):
        return LIMIT
    return max(256, rounds + 256)


def _fork(uma: Uma, scenario: str, k: int, parts: int, ncpus: int, mode: str, seed: int, rounds: int,
          jitter: float, invariants: bool, orphan_lock: Any = None) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 0
    state = uma.view("rx_state")
    ts = None
    try:
        cpu: Any = uma.cpu(k) if k < ncpus else uma.manager()
        if k < ncpus:  # WITNESS always: its findings make the verdict lock-order
            from allocator.witness import Witness

            Witness(uma.view, k).install(cpu)
        if mode in ("pct", "replay"):
            cpu.sched_locks = True  # uma.manager() is made without it: never block under the token
            ts = sched.TokenScheduler(uma.view, k, parts, orphan_lock=orphan_lock)
            cpu.sched_point, cpu.sched_block, cpu.sched_unblock = ts.sched_point, ts.sched_block, ts.sched_unblock
            cpu.set_step_source(uma.view("sc_ctl"), sched.CTL_STEP)  # item histories by step
        elif mode == "jitter":
            cpu.sched_point = sched.jitter_point(jitter, seed * 7919 + k)
        cpu.instrument()
        sp = cpu.sched_point
        if ts is not None:
            ts.start()
        else:
            _start_together(uma, k, parts)
        try:
            ROLES[scenario](Ctx(uma, k, cpu, sp, mode), rounds)
            state[k] = DONE
        except UmaPanic:
            state[k] = PANICKED
    except BaseException:
        traceback.print_exc()
        state[k] = FAILED
        code = 3
    finally:
        if ts is not None:
            ts.finish()
        os._exit(code)


def _start_together(uma: Uma, k: int, parts: int) -> None:
    """Free and jitter runs: put participant ``k`` on its own core and wait at a start
    line for the others, as real CPUs run side by side.  Without it a short scenario
    (stats-unlocked's 400 operations last a few milliseconds) could run its first CPU to
    the end before the second was forked, or on the core the second was waiting for
    beside a CPU hog, and a seed never overlapped its CPUs at all (the workers and
    tests/test_allocator_smp.py pin the same way).  The wait is bounded: a participant
    that never arrives is the run's own verdict to find, not a hang here."""
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cores[k % len(cores)]})
    ready = uma.view("rx_ready")
    ready[k] = 1
    deadline = time.monotonic() + 10.0
    while not all(ready[i] for i in range(parts)) and time.monotonic() < deadline:
        os.sched_yield()


def wedged_with_free_items(uma: Uma, asleep: list[Any]) -> bool:
    """The wedge oracle of the wakeup rows: a CPU asleep in zonelimit while *its own*
    keg has free items (a wakeup was lost).  Another keg's free items say nothing: a CPU
    asleep for a cluster while the mbuf keg holds 14 free mbufs is a true exhaustion."""
    return any(uma.keg_free(KEG_NAMES.index(s.keg)) > 0 for s in asleep)


def _wait(uma: Uma, pids: list[int], ncpus: int, timeout: float, wedge_wait: float) -> tuple[bool, list[int]]:
    """Wait for every participant; a CPU asleep in zonelimit while every other one has
    finished, for ``wedge_wait`` seconds, with free items in its keg, is a wedge.  Asleep
    with nothing free in its keg is exhaustion (returned: the CPUs): a leak's consequence
    when the audit finds items lost, else the scenario's own deadlock."""
    left = dict(enumerate(pids))
    end = time.monotonic() + timeout
    asleep_since: float | None = None
    wedged = False
    exhausted: list[int] = []
    while left:
        for k, pid in list(left.items()):
            if os.waitpid(pid, os.WNOHANG)[0]:
                del left[k]
        if not left:
            break
        asleep = uma.sleepers()
        sleepers = {s.cpu for s in asleep}
        if sleepers and set(left) <= sleepers:
            asleep_since = asleep_since or time.monotonic()
            if time.monotonic() - asleep_since > wedge_wait:
                wedged = wedged_with_free_items(uma, asleep)
                if not wedged:
                    exhausted = sorted(sleepers)
                break
        else:
            asleep_since = None
        if time.monotonic() > end:
            break
        time.sleep(0.002)
    for pid in left.values():
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    if left and not wedged and not exhausted:
        raise TimeoutError(f"scenario did not finish in {timeout} s; still running: {sorted(left)}")
    return wedged, exhausted
