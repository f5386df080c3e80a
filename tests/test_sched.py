"""Controlled scheduling as plain logic, and the token protocol between forked processes.

These tests need no allocator: the schedule arrays are carved out of an anonymous
shared mapping, and two forked children play CPUs that race on a shared counter
(read, sched point, write: a lost-update window).  PCT must make that race
deterministic per seed, find it for some seed, record the schedule, and replay it.
"""

from __future__ import annotations

import mmap
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from allocator.layout import ITEMSIZE, ArraySpec
from stress.commands import replay
from stress.config import RunConfig
from stress.documents import Schedule, load_schedule
from stress.engine import sched
from stress.engine.sched import (
    CTL_DIVERGED,
    CTL_NDIVERGED,
    CTL_NLOG,
    CTL_STEP,
    CTL_TOKEN,
    EXITED,
    TokenScheduler,
    pct_choose,
    pct_period,
    prepare_arena,
    read_schedule,
)
from stress.engine.sched.schedule import CTL_NLOAD


class SharedArrays:
    """Arrays carved from one anonymous MAP_SHARED mapping (inherited across fork)."""

    def __init__(self, specs: tuple[ArraySpec, ...]) -> None:
        size = sum(s.length * ITEMSIZE[s.typecode] + 64 for s in specs)
        self.mm = mmap.mmap(-1, size)
        buf = memoryview(self.mm)
        self.views: dict[str, memoryview] = {}
        off = 0
        for s in specs:
            n = s.length * ITEMSIZE[s.typecode]
            self.views[s.name] = buf[off:off + n].cast(s.typecode)  # type: ignore[call-overload]
            off += -(-n // 64) * 64

    def view(self, name: str) -> memoryview:
        return self.views[name]


# --- PCT logic ------------------------------------------------------------------------------


def test_pct_period_is_a_function_of_seed_and_period() -> None:
    a = pct_period(7, 3, ncpus=4, depth=3, steps=100)
    assert a == pct_period(7, 3, ncpus=4, depth=3, steps=100)
    assert sorted(a.priorities) == [3, 4, 5, 6]  # distinct, d .. d+n-1
    assert len(a.change_points) == 2 and list(a.change_points) == sorted(set(a.change_points))
    assert all(1 <= c <= 100 for c in a.change_points)
    others = {pct_period(s, 0, 4, 3, 100) for s in range(20)}
    assert len(others) > 10  # seeds actually vary the plan


def test_pct_lowered_priorities_are_below_every_initial_one() -> None:
    p = pct_period(1, 0, ncpus=3, depth=4, steps=50)
    lows = [p.lowered(i, 4) for i in range(3)]
    assert lows == [3, 2, 1] and max(lows) < min(p.priorities)


def test_pct_depth_one_has_no_change_points() -> None:
    assert pct_period(5, 0, 2, 1, 10).change_points == ()


def test_pct_choose_highest_runnable_and_yield() -> None:
    prio = [5, 9, 7]
    assert pct_choose(prio, [True, True, True], 0, False) == 1
    assert pct_choose(prio, [True, False, True], 0, False) == 2
    assert pct_choose(prio, [True, True, True], 1, True) == 2  # yielding: someone else
    assert pct_choose(prio, [False, True, False], 1, True) == 1  # nobody else: keep going
    assert pct_choose(prio, [False, False, False], 0, False) == -1


def test_schedule_round_trip(tmp_path: Path) -> None:
    s = Schedule(seed=3, ncpus=2, depth=2, steps=50, switches=[(0, 1, 11), (4, 0, 12)],
                 total_steps=9, labels={11: "start"}, load_changes=[(7, 0)])
    s.save(tmp_path)
    assert load_schedule(tmp_path) == s
    with pytest.raises(ValueError, match="unknown schedule format"):
        Schedule.from_dict({**s.to_dict(), "format": "zonelimit.schedule/2"})


def test_load_schedule_of_uncontrolled_run_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_schedule(tmp_path)


def test_jitter_point_acts_with_probability_p(monkeypatch: pytest.MonkeyPatch) -> None:
    """P = 0 never yields nor spins (and draws nothing: its hook is empty); P = 1 acts at
    every point, half of the time by yielding the core.  Draws are seeded: exact counts."""
    yields = []
    monkeypatch.setattr(os, "sched_yield", lambda: yields.append(1))
    p = sched.jitter_point(0.0, 1)
    for _ in range(1000):
        p("x")
    assert yields == []
    q = sched.jitter_point(1.0, 1)
    for _ in range(1000):
        q("x")
    assert 400 < len(yields) < 600
    yields.clear()
    r = sched.jitter_point(0.1, 1)
    for _ in range(2000):
        r("x")
    assert 50 < len(yields) < 150  # about 2000 * 0.1 * 0.5


def test_a_jitter_point_with_p_0_is_an_installed_hook_the_fast_path_calls() -> None:
    """P = 0 is an empty function, but a hook like any other: installed, the allocator
    counts it as a sched point (and calls it), unlike its own no-op default."""
    from allocator import Uma, UmaConfig

    u = Uma.create(UmaConfig(ncpus=1, nmbclusters=64))
    try:
        cpu = u.cpu(0)
        assert not cpu._fast.sched
        cpu.sched_point = sched.jitter_point(0.0, 1)
        cpu.instrument()
        assert cpu._fast.sched
        assert cpu.sched_point("refcount test") is None
    finally:
        u.close()


def test_controller_refuses_replay_without_schedule() -> None:
    with pytest.raises(ValueError, match="recorded schedule"):
        sched.Controller(RunConfig(cpus=2, sched="replay"))


# --- the token protocol between two forked processes ---------------------------------------

ROUNDS = 40


def _counter_race(arr: SharedArrays, k: int) -> None:
    """Child k: ROUNDS unlocked increments with a sched point inside the window."""
    ts = TokenScheduler(arr.view, k, 2)
    c = arr.view("counter")
    try:
        ts.start()
        for _ in range(ROUNDS):
            v = c[0]
            ts.sched_point("counter:read")
            c[0] = v + 1
            ts.sched_point("counter:write")
        ts.finish()
    finally:
        os._exit(0)


def _run_children(arr: SharedArrays, body: Callable[[SharedArrays, int], None],
                  ncpus: int = 2, timeout: float = 60.0) -> None:
    pids = []
    for k in range(ncpus):
        pid = os.fork()
        if pid == 0:
            body(arr, k)
        pids.append(pid)
    deadline = time.monotonic() + timeout
    left = set(pids)
    while left and time.monotonic() < deadline:
        for pid in list(left):
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                left.discard(pid)
        time.sleep(0.005)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert not left, "children did not finish: the token protocol hung"


def _arrays() -> SharedArrays:
    return SharedArrays(sched.sched_specs(2, log_entries=4096)
                        + (ArraySpec("counter", "q", 1, "shared counter"),))


def _pct_run(seed: int, depth: int = 2, steps: int = 4 * ROUNDS) -> tuple[int, Schedule]:
    arr = _arrays()
    prepare_arena(arr.view, 2, "pct", seed, depth, steps)
    _run_children(arr, _counter_race)
    return arr.view("counter")[0], read_schedule(arr.view, 2, seed, depth, steps)


@pytest.mark.smp
def test_pct_is_deterministic_per_seed() -> None:
    a = _pct_run(11)
    b = _pct_run(11)
    assert a == b


@pytest.mark.smp
def test_pct_finds_the_lost_update_and_free_order_does_not_matter() -> None:
    results = {seed: _pct_run(seed)[0] for seed in range(12)}
    assert all(ROUNDS <= v <= 2 * ROUNDS for v in results.values())
    assert any(v < 2 * ROUNDS for v in results.values()), results  # the race, found
    assert any(v == 2 * ROUNDS for v in results.values()), results  # and not in every seed


@pytest.mark.smp
def test_pct_records_every_switch_and_steps() -> None:
    _, s = _pct_run(3)
    assert s.switches[0][0] == 0  # who started
    assert s.total_steps == 4 * ROUNDS + 2  # every sched point plus two exits
    steps = [st for st, _, _ in s.switches]
    assert steps == sorted(steps)
    assert all(cpu in (-1, 0, 1) for _, cpu, _ in s.switches)


@pytest.mark.smp
def test_replay_reproduces_a_failing_schedule() -> None:
    failing = next((seed, r) for seed in range(20) for r in [_pct_run(seed)] if r[0] < 2 * ROUNDS)
    seed, (value, recorded) = failing
    arr = _arrays()
    prepare_arena(arr.view, 2, "replay", seed, recorded.depth, recorded.steps, recorded)
    _run_children(arr, _counter_race)
    ctl = arr.view("sc_ctl")
    assert arr.view("counter")[0] == value
    assert ctl[CTL_NDIVERGED] == 0 and ctl[CTL_DIVERGED] == 0
    assert ctl[CTL_NLOG] == len(recorded.switches)


@pytest.mark.smp
def test_replay_of_a_different_program_reports_divergence() -> None:
    seed = 5
    _, recorded = _pct_run(seed)
    # change a label of the recording: the replay must notice
    recorded.switches = [(st, cpu, lid ^ 1) if i == 1 else (st, cpu, lid)
                         for i, (st, cpu, lid) in enumerate(recorded.switches)]
    arr = _arrays()
    prepare_arena(arr.view, 2, "replay", seed, recorded.depth, recorded.steps, recorded)
    _run_children(arr, _counter_race)
    assert arr.view("sc_ctl")[CTL_NDIVERGED] >= 1


def _blocker(arr: SharedArrays, k: int) -> None:
    """CPU 0 sleeps (like zonelimit) until CPU 1 sets the wake flag; CPU 1 counts."""
    ts = TokenScheduler(arr.view, k, 2)
    flag = arr.view("counter")
    try:
        ts.start()
        if k == 0:
            ts.sched_block()
            while flag[0] == 0:
                time.sleep(0.001)
            ts.sched_unblock()
            flag[0] = 100
        else:
            for _ in range(5):
                ts.sched_point("work")
            flag[0] = 1  # "wakeup", then keep going until CPU 0 ran
            while flag[0] != 100:
                ts.sched_point("yield:wait for cpu0")
        ts.finish()
    finally:
        os._exit(0)


@pytest.mark.smp
def test_blocked_cpu_passes_the_token_and_gets_it_back() -> None:
    for seed in range(4):
        arr = _arrays()
        prepare_arena(arr.view, 2, "pct", seed, 2, 50)
        _run_children(arr, _blocker, timeout=30)
        st = arr.view("sc_state")
        assert st[0] == EXITED and st[1] == EXITED
        assert arr.view("counter")[0] == 100


def _dies_holding(arr: SharedArrays, k: int) -> None:
    ts = TokenScheduler(arr.view, k, 2)
    c = arr.view("counter")
    try:
        ts.start()
        if k == arr.view("sc_ctl")[CTL_TOKEN] and c[0] == 0:
            c[0] = 1
            os._exit(0)  # dies with the token: no finish()
        for _ in range(3):
            ts.sched_point("work")
        c[0] += 10
        ts.finish()
    finally:
        os._exit(0)


@pytest.mark.smp
def test_token_of_a_dead_holder_is_taken_over() -> None:
    arr = _arrays()
    prepare_arena(arr.view, 2, "pct", 1, 2, 50)
    _run_children(arr, _dies_holding, timeout=30)
    assert arr.view("counter")[0] == 11
    assert arr.view("sc_ctl")[sched.CTL_ORPHANS] >= 1


def _until_stopped(arr: SharedArrays, k: int) -> None:
    """Child k: loop until the (gated) stop flag, counting its turns."""
    flag = arr.view("flag")
    ts = TokenScheduler(arr.view, k, 2, real_stop=lambda: bool(flag[0]))
    turns = arr.view("turns")
    try:
        ts.start()
        while not ts.stop_requested():
            turns[k] += 1
            ts.sched_point("turn")
        ts.finish()
    finally:
        os._exit(0)


def _wait_for(cond: Any, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not cond() and time.monotonic() < end:
        time.sleep(0.001)


def _after_steps(arr: SharedArrays, n: int) -> None:
    """In the manager stand-in: return once the workers passed ``n`` more sched points.
    Wall-clock timers (the manager's) would fire before the first step on a loaded
    machine, and a 30 ms gap between two of them could fall within one step."""
    ctl = arr.view("sc_ctl")
    start = ctl[CTL_STEP]
    _wait_for(lambda: ctl[CTL_STEP] >= start + n)


def _stop_arrays() -> SharedArrays:
    return SharedArrays(sched.sched_specs(2, log_entries=1 << 16)
                        + (ArraySpec("flag", "q", 1, "manager stop"), ArraySpec("turns", "q", 2, "per CPU")))


@pytest.mark.smp
def test_stop_is_raised_at_a_sched_point_and_replayed_at_the_same_step() -> None:
    arr = _stop_arrays()
    prepare_arena(arr.view, 2, "pct", 4, 2, 100)
    pid = os.fork()
    if pid == 0:  # the manager's timer: at a time no schedule can predict, after some steps
        _after_steps(arr, 10)
        arr.view("flag")[0] = 1
        os._exit(0)
    _run_children(arr, _until_stopped)
    os.waitpid(pid, 0)
    rec = read_schedule(arr.view, 2, 4, 2, 100)
    turns = list(arr.view("turns"))
    assert rec.stop_step > 0 and sum(turns) > 0
    again = _stop_arrays()  # no manager flag at all: the recording says when to stop
    prepare_arena(again.view, 2, "replay", 4, 2, 100, rec)
    _run_children(again, _until_stopped)
    assert list(again.view("turns")) == turns
    assert again.view("sc_ctl")[CTL_NDIVERGED] == 0


def _busy_then_idle(arr: SharedArrays, k: int) -> None:
    """Child k: until the (gated) stop, count turns with the (gated) load flag on and off."""
    flag, load = arr.view("flag"), arr.view("load")
    ts = TokenScheduler(arr.view, k, 2, real_stop=lambda: bool(flag[0]), real_load=lambda: int(load[0]))
    turns = arr.view("turns")
    try:
        ts.start()
        while not ts.stop_requested():
            turns[2 * k + (0 if ts.load() else 1)] += 1
            ts.sched_point("turn")
        ts.finish()
    finally:
        os._exit(0)


@pytest.mark.smp
def test_load_flag_changes_at_a_sched_point_and_replays_at_the_same_step() -> None:
    """The manager's load-off (final drain, idle between rounds) is seen at a recorded
    step, so a replay goes idle exactly where the recorded run did."""
    def arrays() -> SharedArrays:
        return SharedArrays(sched.sched_specs(2, log_entries=1 << 16)
                            + (ArraySpec("flag", "q", 1, "manager stop"), ArraySpec("load", "q", 1, "load"),
                               ArraySpec("turns", "q", 4, "busy, idle per CPU")))

    arr = arrays()
    arr.view("load")[0] = 1
    prepare_arena(arr.view, 2, "pct", 5, 2, 100)
    pid = os.fork()
    if pid == 0:  # the manager's timers: at times no schedule can predict, but in this order
        _after_steps(arr, 10)
        arr.view("load")[0] = 0
        ctl = arr.view("sc_ctl")
        _wait_for(lambda: ctl[CTL_NLOAD] >= 1)  # the workers saw the load-off at a step...
        _after_steps(arr, 10)  # ... and ran on before the stop
        arr.view("flag")[0] = 1
        os._exit(0)
    _run_children(arr, _busy_then_idle)
    os.waitpid(pid, 0)
    rec = read_schedule(arr.view, 2, 5, 2, 100)
    turns = list(arr.view("turns"))
    assert [v for _, v in rec.load_changes] == [0] and 0 < rec.load_changes[0][0] < rec.stop_step
    again = arrays()  # the manager's words stay 0 / 0: the recording says when
    prepare_arena(again.view, 2, "replay", 5, 2, 100, rec)
    _run_children(again, _busy_then_idle)
    assert list(again.view("turns")) == turns
    assert again.view("sc_ctl")[CTL_NDIVERGED] == 0


def test_prepare_replay_follows_a_recorded_schedule_or_reruns_the_seed(tmp_path: Path) -> None:
    cfg = RunConfig(cpus=2, sched="pct", seed=9, duration=3.0)
    assert replay.prepare_replay(tmp_path, cfg) == cfg  # no schedule: re-run the seed
    with pytest.raises(ValueError, match="no schedule.json"):
        replay.prepare_replay(tmp_path, cfg.replace(sched="replay"))
    Schedule(seed=9, ncpus=2, depth=3, steps=2000, switches=[(0, 1, 5)]).save(tmp_path)
    r = replay.prepare_replay(tmp_path, cfg)
    assert r.sched == "replay" and r.replay_from == str(tmp_path) and r.duration >= cfg.duration
    with pytest.raises(ValueError, match="recorded for 2 CPUs"):
        replay.prepare_replay(tmp_path, cfg.replace(cpus=3))
    (tmp_path / "schedule.json").write_text("{not json")
    with pytest.raises(ValueError, match="unreadable"):
        replay.prepare_replay(tmp_path, cfg)


# --- the step plan: what a pct run places by step (stress/engine/sched/plan.py) -----------


def test_step_plan_from_seconds_and_from_steps() -> None:
    from stress.engine.sched.plan import STEPS_PER_S, StepPlan, make_plan

    p = make_plan(steps=0, duration=2.0, rounds=0, round_length=30.0, idle=0.0, trim_interval=0.5, trim=True,
                  wedge_timeout=1.0, phased=False)
    assert (p.budget, p.trim_steps, p.wedge_steps, p.round_steps, p.phase_step) == (
        2 * STEPS_PER_S, STEPS_PER_S // 2, STEPS_PER_S, 0, 0)
    assert [p.load(s) for s in (0, p.budget - 1, p.budget, p.budget + 5)] == [1, 1, 0, 0]
    q = make_plan(steps=1000, duration=99.0, rounds=2, round_length=3.0, idle=1.0, trim_interval=1.0, trim=False,
                  wedge_timeout=5.0, phased=True)
    assert (q.budget, q.round_steps, q.round_on, q.trim_steps, q.phase_step) == (1000, 500, 375, 0, 500)
    assert [q.load(s) for s in (0, 374, 375, 499, 500, 874, 875, 1000)] == [1, 1, 0, 0, 1, 1, 0, 0]
    assert [q.round_at(s) for s in (0, 499, 500, 999, 1200)] == [0, 0, 1, 1, 1]
    assert [q.phase(s) for s in (0, 499, 500)] == [0, 0, 1]
    assert StepPlan.from_dict(q.to_dict()) == q and StepPlan.from_dict(None) == StepPlan()
    assert not StepPlan().bounded and q.bounded


def test_the_step_plan_is_written_for_the_workers_and_read_back() -> None:
    from stress.engine.sched.plan import StepPlan
    from stress.engine.sched.schedule import read_plan

    arr = _arrays()
    plan = StepPlan(budget=500, drain_steps=10, round_steps=250, round_on=200, phase_step=250, trim_steps=100,
                    wedge_steps=64)
    prepare_arena(arr.view, 2, "pct", 1, 2, 50, plan=plan, manager_pid=os.getpid())
    assert read_plan(arr.view) == plan
    assert arr.view("sc_pid")[2] == os.getpid()  # the manager's slot, after the CPUs


def _blocks_forever(arr: SharedArrays, k: int) -> None:
    """Both CPUs block (as in zonelimit) and nobody wakes them: a wedge by step."""
    ts = TokenScheduler(arr.view, k, 2)
    try:
        ts.start()
        for _ in range(3 + k):
            ts.sched_point("work")
        ts.sched_block()
        time.sleep(3600)
    finally:
        os._exit(0)


@pytest.mark.smp
def test_every_cpu_blocked_is_a_wedge_at_that_step() -> None:
    from stress.engine.sched.plan import StepPlan
    from stress.engine.sched.schedule import CTL_END, CTL_STEP, CTL_WEDGED, CTL_WHOW, END_WEDGED, WEDGE_ALL_BLOCKED

    arr = _arrays()
    prepare_arena(arr.view, 2, "pct", 1, 2, 50, plan=StepPlan(budget=10**6, wedge_steps=1000))
    pids = []
    for k in range(2):
        pid = os.fork()
        if pid == 0:
            _blocks_forever(arr, k)
        pids.append(pid)
    try:
        ctl = arr.view("sc_ctl")
        end = time.monotonic() + 60
        while not ctl[CTL_WEDGED] and time.monotonic() < end:
            time.sleep(0.01)
        assert ctl[CTL_WEDGED] == ctl[CTL_STEP] + 1 and ctl[CTL_STEP] == 3 + 4 + 2  # 7 points, 2 blocks
        assert (ctl[CTL_WHOW], ctl[CTL_END]) == (WEDGE_ALL_BLOCKED, END_WEDGED)
        assert list(arr.view("sc_wcpus"))[:2] == [1, 1]
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def test_a_live_holder_that_marked_itself_exited_keeps_the_token() -> None:
    """finish() marks its CPU EXITED *before* it hands the token on: a waiter's orphan
    check in that window must leave the token alone (it took it, unrecorded, and 1 replay
    in 3 diverged).  Only a holder whose process is gone leaves an orphan token."""
    arr = _arrays()
    prepare_arena(arr.view, 2, "pct", 1, 2, 100, None)
    ctl, state, pid = arr.view("sc_ctl"), arr.view("sc_state"), arr.view("sc_pid")
    ctl[CTL_TOKEN] = 0
    pid[0], state[0] = os.getpid(), EXITED  # CPU 0: this live process, between the two
    waiter = TokenScheduler(arr.view, 1, 2)
    waiter._maybe_orphan()
    assert ctl[CTL_TOKEN] == 0 and ctl[sched.CTL_ORPHANS] == 0
    pid[0] = 2**22 + 12345  # beyond pid_max: a holder that is gone
    waiter._maybe_orphan()
    assert ctl[CTL_TOKEN] == 1 and ctl[sched.CTL_ORPHANS] == 1
