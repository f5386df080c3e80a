"""Core leases (stress/engine/leases.py): disjoint cores per run, released on any exit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from stress.engine import leases

FOUR = [0, 1, 2, 3]


@pytest.fixture
def table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private lease table on a pretend 4-core host (two NUMA nodes of two cores)."""
    monkeypatch.setenv(leases.LEASE_DIR_ENV, str(tmp_path / "leases"))
    monkeypatch.setattr(leases, "usable_cores", lambda: list(FOUR))
    monkeypatch.setattr(leases, "topology", lambda cores=None: {"smt_siblings": ["0", "1", "2", "3"],
                                                                "numa_nodes": {"0": "0-1", "1": "2-3"}})
    return tmp_path / "leases" / "cores.json"


def _entries(path: Path) -> list[dict[str, object]]:
    return json.loads(path.read_text())["leases"]


def test_leases_are_disjoint_and_stay_in_one_numa_node(table: Path) -> None:
    a = leases.try_acquire(2)
    b = leases.try_acquire(1)
    c = leases.try_acquire(1)
    assert a is not None and b is not None and c is not None
    assert a.cores == [0, 1] and b.cores == [2] and c.cores == [3]
    assert leases.try_acquire(1) is None  # all four are held
    b.release()
    d = leases.try_acquire(2)
    assert d is None  # one core free, not two
    e = leases.try_acquire(1)
    assert e is not None and e.cores == [2]
    assert len(_entries(table)) == 3


def test_a_lease_asks_for_at_most_the_usable_cores(table: Path) -> None:
    lease = leases.try_acquire(9)  # an oversubscribed run holds what there is
    assert lease is not None and lease.cores == FOUR


def test_picked_cores_are_refused_when_held_or_not_usable(table: Path) -> None:
    held = leases.pick([1, 3])
    assert held.how == "picked"
    with pytest.raises(leases.LeaseError, match=f"core 3 leased by another run \\(pid {os.getpid()}\\)"):
        leases.pick([2, 3])
    with pytest.raises(leases.LeaseError, match="cores 7-8 not usable here"):
        leases.pick([0, 7, 8])
    held.release()
    assert leases.pick([2, 3]).cores == [2, 3]


def test_a_dead_holders_lease_is_taken_back(table: Path) -> None:
    """An entry whose pid is gone, or whose pid now names another process (another start
    time), is dropped by the next look at the table."""
    table.parent.mkdir(parents=True)
    me = leases.start_time(os.getpid())
    assert me is not None
    table.write_text(json.dumps({"leases": [
        {"cores": [0, 1], "pid": os.getpid(), "start": me - 1, "what": "run"},  # pid reused
        {"cores": [2], "pid": 2**22 + 12345, "start": 1, "what": "run"},  # no such process
        {"cores": [3], "pid": os.getpid(), "start": me, "what": "run"},  # alive: kept
    ]}))
    lease = leases.try_acquire(3)
    assert lease is not None and lease.cores == [0, 1, 2]
    assert leases.holders() == {c: os.getpid() for c in FOUR}


def test_a_torn_table_frees_every_core(table: Path) -> None:
    table.parent.mkdir(parents=True)
    table.write_text('{"leases": [{"cores": [0')
    lease = leases.try_acquire(4)
    assert lease is not None and lease.cores == FOUR


def test_the_run_record_names_the_lease_and_the_topology(table: Path) -> None:
    lease = leases.try_acquire(1)
    assert lease is not None
    before = os.sched_getaffinity(0)
    real = sorted(before)[:1]
    lease.cores = real  # a core this process may really run on
    with leases.running_in(lease):
        assert os.sched_getaffinity(0) == set(real)
        rec = leases.pinning_record({0: real[0]})
    assert os.sched_getaffinity(0) == before
    assert rec["cpus"] == {"0": real[0]} and rec["lease"] == "leased"
    assert rec["numa_nodes"] == {"0": "0-1", "1": "2-3"}
    unleased = leases.pinning_record({0: 0})
    assert unleased["lease"] == "none"


def test_the_host_topology_comes_from_sys() -> None:
    topo = leases.topology([0])
    assert topo["smt_siblings"] and "0" in ",".join(topo["smt_siblings"])


HOLDER = """
import sys, time
from stress.engine import leases
lease = leases.pick([int(sys.argv[1])])
print("held", flush=True)
time.sleep(120)
"""


@pytest.mark.smp
def test_a_sigkilled_holders_cores_are_free_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(leases.LEASE_DIR_ENV, str(tmp_path / "leases"))
    core = leases.usable_cores()[0]
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(core)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(leases.LeaseError, match="leased by another run"):
            leases.pick([core])
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    lease = leases.pick([core])
    assert lease.cores == [core]
    lease.release()
    assert leases.holders() == {}


def test_run_cores_refused_when_held_or_not_usable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from stress import cli

    core = leases.usable_cores()[0]
    held = leases.pick([core])
    try:
        code = cli.main(["run", "--cpus", "1", "--cores", str(core), "--duration", "1", "--out", str(tmp_path / "r")])
        assert code == 2
        assert f"--cores: core {core} leased by another run (pid {os.getpid()})" in capsys.readouterr().err
    finally:
        held.release()
    assert cli.main(["run", "--cpus", "1", "--cores", "4095", "--out", str(tmp_path / "r")]) == 2
    assert "--cores: core 4095 not usable here" in capsys.readouterr().err
    assert cli.main(["run", "--cores", "3-1"]) == 2
    assert "--cores" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_releasing_an_old_lease_leaves_a_new_one_on_the_same_cores(table: Path) -> None:
    """A scheduler leases core 0 for one child, then for the next: the first child's late
    release must not free the second's cores."""
    first = leases.try_acquire(1)
    assert first is not None
    first.release()
    second = leases.try_acquire(1)
    assert second is not None and second.cores == first.cores
    first.release()
    assert leases.holders() == {c: os.getpid() for c in second.cores}


class FakeTime:
    """A clock that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def test_waiting_for_cores_gives_up_at_the_limit_and_names_the_holders(table: Path) -> None:
    held = leases.try_acquire(4)
    assert held is not None
    told: list[str] = []
    t = FakeTime()
    with pytest.raises(leases.LeaseTimeout) as exc:
        leases.acquire(2, waiting=told.append, limit=1.0, clock=t.clock, sleep=t.sleep)
    assert str(exc.value) == ("gave up after 1 s (--lease-wait 1) waiting for 2 free cores: 0-3 leased by pid "
                              f"{os.getpid()}")
    assert told == [f"waiting for 2 free cores: 0-3 leased by pid {os.getpid()} (at most 1 s: --lease-wait)"]
    assert sum(t.slept) == pytest.approx(1.0) and max(t.slept) <= leases.WAIT_POLL_S
    with pytest.raises(leases.LeaseTimeout):  # 0: one look, no wait, nothing said
        leases.acquire(1, waiting=told.append, limit=0, clock=t.clock, sleep=t.sleep)
    assert len(told) == 1 and sum(t.slept) == pytest.approx(1.0)


def test_a_stop_ends_the_wait_and_freed_cores_end_it_too(table: Path) -> None:
    held = leases.try_acquire(4)
    assert held is not None
    t = FakeTime()

    def stop() -> None:
        if t.slept:
            raise KeyboardInterrupt  # stopping.Stopped is one: the command exits 130 / 143

    with pytest.raises(KeyboardInterrupt):
        leases.acquire(1, check=stop, limit=None, clock=t.clock, sleep=t.sleep)

    t = FakeTime()

    def free_after_a_look(s: float) -> None:
        t.sleep(s)
        held.release()

    lease = leases.acquire(1, limit=600, clock=t.clock, sleep=free_after_a_look)
    assert lease.cores == [0] and len(t.slept) == 1


def test_a_run_that_cannot_get_cores_in_time_exits_3_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from stress import cli

    usable = leases.usable_cores()
    held = leases.try_acquire(len(usable))
    assert held is not None
    try:
        assert cli.main(["run", "--cpus", "1", "--lease-wait", "0", "--duration", "1",
                         "--out", str(tmp_path / "r")]) == 3
    finally:
        held.release()
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"zonelimit: run: gave up after 0 s (--lease-wait 0) waiting for 1 free core: "
                   f"{leases.format_cpulist(usable)} leased by pid {os.getpid()}"]
    assert not (tmp_path / "r").exists()
    for bad in ("-1", "x", "nan"):
        assert cli.main(["run", "--lease-wait", bad]) == 2
        assert "--lease-wait" in capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.smp
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_while_a_run_waits_for_cores_ends_it_with_nothing_written(tmp_path: Path, signum: int,
                                                                         code: int) -> None:
    usable = leases.usable_cores()
    held = leases.try_acquire(len(usable))  # this process holds every core: the run must wait
    assert held is not None
    out = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "stress", "run", "--cpus", "1", "--duration", "1",
                             "--out", str(out)], cwd=Path(__file__).resolve().parent.parent,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert line.startswith("zonelimit: warning: waiting for 1 free core"), line
        proc.send_signal(signum)
        rest = proc.stderr.read()
        assert proc.wait(timeout=60) == code, rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        held.release()
    assert "Traceback" not in rest and not out.exists()
