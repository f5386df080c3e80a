"""``stress stat``: a running run's arena watched read-only, found from live.json or a pid;
a stale live.json (a SIGKILLed run) and an ended run refused with exit 2; the FreeBSD
formats; and a real run watched to its end, its result unchanged."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from allocator import Uma, UmaConfig
from allocator.layout import WCHAN_ZONELIMIT
from stress import cli, documents
from stress.engine import live

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def uma() -> Iterator[Uma]:
    u = Uma.create(UmaConfig(ncpus=2, nmbclusters=1024))
    yield u
    u.close()


def test_a_read_only_attach_reads_the_same_and_cannot_write(uma: Uma) -> None:
    cpu = uma.cpu(0)
    held = [cpu.m_getcl() for _ in range(40)]
    watcher = Uma.attach(uma.path, readonly=True)
    try:
        assert watcher.stats() == uma.stats()
        assert watcher.percpu_buckets() == uma.percpu_buckets()
        mine = [c for c in watcher.percpu_buckets() if c.cpu == 0 and c.zone == "mbuf_packet"]
        assert mine and mine[0].alloc_size > 0  # CPU 0 allocated packets: it holds a packet bucket
        with pytest.raises(TypeError):
            watcher.view("cpu_wchan")[0] = WCHAN_ZONELIMIT
        with pytest.raises(ValueError):
            watcher.np("uc_allocs")[0] = 1
    finally:
        watcher.close()
    for m in held:
        cpu.m_freem(m)


def test_live_json_names_this_process_and_its_arena(uma: Uma, tmp_path: Path) -> None:
    path = live.publish(tmp_path, uma.path, 2)
    run = live.find(tmp_path)
    assert (run.pid, run.arena, run.folder) == (os.getpid(), uma.path, tmp_path)
    assert live.arena_of_pid(os.getpid()).arena.startswith(f"/proc/{os.getpid()}/fd/")
    live.withdraw(path)
    assert not path.exists()
    live.withdraw(path)  # twice: never raises


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


@pytest.mark.smp  # other processes, or the wall clock
def test_a_stale_live_json_is_refused(uma: Uma, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A SIGKILLed run leaves live.json: its pid gone, or taken by another process."""
    live.publish(tmp_path, uma.path, 2)
    doc = json.loads((tmp_path / "live.json").read_text())
    for changed in ({"pid": _dead_pid()}, {"start_time": doc["start_time"] + 1}, {"boot_id": "another boot"}):
        (tmp_path / "live.json").write_text(json.dumps({**doc, **changed}))
        with pytest.raises(live.NotLive, match="the run has ended: its live.json is stale"):
            live.find(tmp_path)
        assert cli.main(["stat", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "stale" in err and "Traceback" not in err


@pytest.mark.smp  # other processes, or the wall clock
def test_no_running_run_is_exit_2_saying_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["stat", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert cli.main(["stat", str(tmp_path)]) == 2
    assert "no running run here (no live.json)" in capsys.readouterr().err
    (tmp_path / "run.json").write_text("{}")
    assert cli.main(["stat", str(tmp_path)]) == 2
    assert "the run has ended" in capsys.readouterr().err
    assert cli.main(["stat", str(_dead_pid())]) == 2
    assert "no such process" in capsys.readouterr().err
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        assert cli.main(["stat", str(sleeper.pid)]) == 2
        assert "not a zonelimit run" in capsys.readouterr().err
    finally:
        sleeper.kill()
        sleeper.wait()
    assert cli.main(["stat", str(tmp_path), "--count", "0"]) == 2
    assert "--count" in capsys.readouterr().err


@pytest.mark.smp  # other processes, or the wall clock
def test_stat_prints_freebsds_formats(uma: Uma, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cpu = uma.cpu(1)
    held = [cpu.m_getcl() for _ in range(10)]
    uma.view("cpu_wchan")[0] = WCHAN_ZONELIMIT  # as keg_sleep leaves it: CPU 0 asleep 2 s on the cluster keg
    uma.view("cpu_wkeg")[0] = 1
    uma.view("cpu_wzone")[0] = 1
    uma.view("cpu_wsince")[0] = time.monotonic_ns() - 2_000_000_000
    uma.view("lock_owner")[0] = 2  # the mbuf keg lock, held by row 1 (cpu1)
    live.publish(tmp_path, uma.path, 2)
    assert cli.main(["stat", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for line in ("mbuf clusters in use (current/cache/total/max)", "ITEM                  SIZE   LIMIT",
                 "CPU  ZONE              ALLOC     FREE  CACHED", "exclusive sleep mutex mbuf keg r = 0 locked",
                 f"Process {os.getpid()} (cpu1)"):
        assert line in out, out
    sleeping = next(ln for ln in out.splitlines() if " D    zonelimit " in ln)
    assert sleeping.split()[0] == "0" and "mbuf_cluster" in sleeping and float(sleeping.split()[-2]) >= 2.0

    assert cli.main(["stat", str(os.getpid()), "--json", "--count", "2", "--interval", "0.05"]) == 0
    reports = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(reports) == 2 and reports[0]["pid"] == os.getpid()
    assert reports[0]["netstat"] == uma.stats().to_dict()["netstat"]
    assert reports[0]["sleepers"][0]["wchan"] == "zonelimit" and reports[0]["locks"][0]["owner"] == "cpu1"
    uma.view("cpu_wchan")[0] = 0
    uma.view("lock_owner")[0] = 0
    for m in held:
        cpu.m_freem(m)


@pytest.mark.smp
def test_stat_watches_a_real_run_to_its_end_without_changing_it(tmp_path: Path) -> None:
    """The run's end is the test's to choose (SIGINT after the reports), so no stat can
    come too late for a run that ended by the clock, however loaded the machine."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    stress = [sys.executable, "-m", "stress"]
    run = subprocess.Popen([*stress, "--cpus", "2", "--duration", "600", "--out", str(out), "-v"], cwd=ROOT, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    watch = None
    try:
        deadline = time.monotonic() + 120
        while not (out / documents.LIVE_JSON).exists() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (out / documents.LIVE_JSON).exists(), "the run published no live.json"
        counted = subprocess.run([*stress, "stat", str(out), "--count", "3", "--interval", "0.2"], cwd=ROOT, env=env,
                                 capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert counted.returncode == 0, counted.stderr
        assert counted.stdout.count("mbuf clusters in use (current/cache/total/max)") == 3
        watch = subprocess.Popen([*stress, "stat", str(out), "--interval", "0.3", "--json"], cwd=ROOT, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        assert watch.stdout is not None
        first = watch.stdout.readline()  # it watches: now the run may end
        run.send_signal(signal.SIGINT)
        stdout, stderr = run.communicate(timeout=180)
        rest, watch_err = watch.communicate(timeout=60)
    finally:
        for p in (run, watch):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    assert run.returncode == 130, stderr[-2000:]  # stopped by the test, cleanly
    assert "live: arena /proc/" in stdout  # -v says where the arena is
    doc = json.loads((out / "run.json").read_text())
    assert doc["audit"]["lost"] == {"mbuf": 0, "cluster": 0} and doc["audit"]["double_owned"] == 0
    assert doc["audit"]["payload_errors"] == 0
    assert not (out / documents.LIVE_JSON).exists()  # withdrawn at the end
    assert watch.returncode == 0 and "the run has ended" in watch_err, watch_err
    reports = [json.loads(line) for line in (first + rest).splitlines()]
    assert reports and all(r["netstat"]["clusters"]["max"] == doc["config"]["nmbclusters"] for r in reports)
    ended = subprocess.run([*stress, "stat", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=60, stdin=subprocess.DEVNULL)
    assert ended.returncode == 2 and "the run has ended" in ended.stderr
