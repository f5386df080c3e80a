"""``--cluster`` (stress/engine/cluster.py) against a real ``distributed.LocalCluster``.

One cluster for the module, speaking TLS with certificates made by the test (openssl): a
scheduler and one worker process (a nanny restarts it when killed) with two threads and
``resources={"cores": 2}``, as docs/scale-out.md starts a worker.  The
worker inherits this session's lease table (tests/conftest.py), so the test can see the
leases its runs take.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stress.commands import compare
from stress.cpulist import usable_cores
from stress.engine import leases

distributed = pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ["--variant", "none:policy=none", "--variant", "k3:policy=median,median.k=3"]
two_cores = pytest.mark.skipif(len(usable_cores()) < 2, reason="the worker offers two cores")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="compare")
    compare.add_arguments(parser)
    return parser.parse_args(argv)


@dataclass
class Cluster:
    """The module's LocalCluster: its address and the options a client needs to reach it."""

    address: str
    options: list[str]  #: --cluster-cert/-key/-ca (TLS)
    security: Any


def make_certificates(folder: Path) -> dict[str, Path]:
    """A CA and one certificate for 127.0.0.1 it signed (openssl), for the scheduler,
    the worker and the client alike."""
    ca, ca_key, cert, key = folder / "ca.pem", folder / "ca.key", folder / "node.pem", folder / "node.key"
    ext = folder / "ext.cnf"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for argv in (["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "1",
                  "-subj", "/CN=zonelimit test CA"],
                 ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", folder / "node.csr",
                  "-subj", "/CN=localhost"],
                 ["x509", "-req", "-in", folder / "node.csr", "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
                  "-out", cert, "-days", "1", "-extfile", ext]):
        subprocess.run(["openssl", *map(str, argv)], check=True, capture_output=True)
    return {"ca": ca, "cert": cert, "key": key}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A TLS cluster (certificates made here), as the docs teach; one worker, two cores."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl makes the test certificates")
    pem = make_certificates(tmp_path_factory.mktemp("tls"))
    sec = distributed.Security(tls_ca_file=str(pem["ca"]), tls_scheduler_cert=str(pem["cert"]),
                               tls_scheduler_key=str(pem["key"]), tls_worker_cert=str(pem["cert"]),
                               tls_worker_key=str(pem["key"]), tls_client_cert=str(pem["cert"]),
                               tls_client_key=str(pem["key"]), require_encryption=True)
    lc = distributed.LocalCluster(n_workers=1, processes=True, threads_per_worker=2, resources={"cores": 2},
                                  dashboard_address=None, scheduler_port=0, protocol="tls://", host="127.0.0.1",
                                  security=sec, silence_logs=50)
    try:
        yield Cluster(lc.scheduler_address, ["--cluster", lc.scheduler_address, "--cluster-cert", str(pem["cert"]),
                                             "--cluster-key", str(pem["key"]), "--cluster-ca", str(pem["ca"])], sec)
    finally:
        lc.close()


def test_without_dask_cluster_is_refused_with_the_install_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    out = tmp_path / "c"
    assert compare.main(parse(["--cluster", "tcp://127.0.0.1:8786", "--out", str(out)])) == 2
    assert "--cluster: needs dask.distributed: pip install 'zonelimit[cluster]'" in capsys.readouterr().err
    assert compare.main(parse(["--cluster", "http://x:8786", "--out", str(out)])) == 2
    assert "--cluster: want tls://HOST:PORT or tcp://HOST:PORT" in capsys.readouterr().err
    assert compare.main(parse(["--cluster-ca", "ca.pem", "--out", str(out)])) == 2
    assert "only with --cluster tls://" in capsys.readouterr().err
    monkeypatch.delitem(sys.modules, "distributed")
    assert compare.main(parse(["--cluster", "tls://127.0.0.1:8786", "--cluster-ca", str(tmp_path / "ca.pem"),
                               "--out", str(out)])) == 2
    assert "--cluster-cert: needed with the other --cluster-* TLS options" in capsys.readouterr().err
    assert compare.main(parse(["--cluster", "tcp://127.0.0.1:8786", "--cluster-ca", str(tmp_path / "ca.pem"),
                               "--out", str(out)])) == 2
    assert "only with a tls:// scheduler address" in capsys.readouterr().err
    assert not out.exists()


def _same_plan(doc: dict[str, Any]) -> list[Any]:
    """What must not depend on where the runs ran: variants, configurations, seeds, runs, verdicts."""
    return [(v["name"], v["config"], v["options"], sorted((r["seed"], r["dir"], r["verdict"], r["exit_code"])
                                                          for r in v["runs"])) for v in doc["variants"]]


def _interval(folder: Path) -> tuple[str, str]:
    """When the run's manager logged its first and last line (run.log, ms resolution)."""
    lines = (folder / "run.log").read_text().splitlines()
    return lines[0][:23], lines[-1][:23]


@pytest.mark.smp
@two_cores
def test_a_compare_through_the_cluster_is_the_local_compare(cluster: Cluster, tmp_path: Path) -> None:
    argv = ["--cpus", "1", "--duration", "1", "--nmbclusters", "512", "--repeat", "1", *VARIANTS, "-q"]
    assert compare.main(parse([*argv, "--out", str(tmp_path / "local")])) == 0
    assert compare.main(parse([*argv, *cluster.options, "--out", str(tmp_path / "far")])) == 0
    here, far = (json.loads((tmp_path / d / "compare.json").read_text()) for d in ("local", "far"))
    assert _same_plan(far) == _same_plan(here) and far["state"] == "complete"
    listing = [sorted(p.name for p in (tmp_path / d).iterdir()) for d in ("far", "local")]
    assert listing[0] == listing[1]
    runs = {d: json.loads((tmp_path / "far" / d / "run.json").read_text()) for d in ("none-s0", "k3-s0")}
    for d, rdoc in runs.items():
        assert rdoc["host"]["cluster"]["retried"] == 0
        assert rdoc["host"]["pinning"]["lease"] == "handed"
        assert (tmp_path / "far" / d / "samples.csv").is_file() and (tmp_path / "far" / d / "plot.png").is_file()
    # two 1-CPU tasks on the 2-core worker: while both ran, they held different cores
    (a0, a1), (b0, b1) = (_interval(tmp_path / "far" / d) for d in runs)
    if a0 < b1 and b0 < a1:
        assert runs["none-s0"]["host"]["pinning"]["cores"] != runs["k3-s0"]["host"]["pinning"]["cores"]
    assert leases.holders() == {}


def compare_then_kill(cluster: Cluster, out: Path, duration: str, victims: Any) -> tuple[int, str]:
    """A one-run compare through the cluster, in a subprocess; once ``victims(holders)``
    (the lease holders' pids) names pids, they are SIGKILLed; its exit code and stderr."""
    proc = subprocess.Popen([sys.executable, "-m", "stress", "compare", "--cpus", "1", "--duration", duration,
                             "--nmbclusters", "512", "--repeat", "1", "--variant", "one:policy=none",
                             *cluster.options, "--out", str(out), "-q"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (pids := victims(set(leases.holders().values()))):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr and proc.stderr.read()
            time.sleep(0.05)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


@pytest.mark.smp
def test_a_worker_killed_mid_run_is_survived_and_recorded(cluster: Cluster, tmp_path: Path) -> None:
    client = distributed.Client(cluster.address, security=cluster.security)
    try:
        worker_pid = next(iter(client.run(os.getpid).values()))
        out = tmp_path / "c"
        # once the task's run holds its cores (it is running), the worker is killed: the
        # nanny starts a new worker, and the task goes there
        code, err = compare_then_kill(cluster, out, "1", lambda held: {worker_pid} if held else set())
        assert code == 0, err
    finally:
        client.close()
    rdoc = json.loads((out / "one-s0" / "run.json").read_text())
    assert rdoc["verdict"] == "ok" and rdoc["host"]["cluster"]["retried"] == 1
    first, second = rdoc["host"]["cluster"]["attempts"]
    assert first["worker"] != second["worker"]
    assert leases.holders() == {}  # the killed worker's run died with it, and its lease too


@pytest.mark.smp
def test_a_run_lost_on_the_cluster_is_recorded_and_the_rest_is_kept(cluster: Cluster, tmp_path: Path) -> None:
    """The run's child is SIGKILLed on the worker: the task raises (no run.json), Dask gives
    up on it; compare says which run was lost and why, writes a partial result, exits 3."""
    client = distributed.Client(cluster.address, security=cluster.security)
    try:
        worker_pid = next(iter(client.run(os.getpid).values()))
        out = tmp_path / "c"
        # once the run's child took its lease over (held by a pid not the worker's), it is killed
        code, err = compare_then_kill(cluster, out, "5", lambda held: held - {worker_pid})
    finally:
        client.close()
    assert code == 3, err
    ours = [line for line in err.splitlines() if line.startswith("zonelimit:")]
    assert "Traceback" not in err and len(ours) == 1, err
    assert ours[0].startswith("zonelimit: compare: run one seed 0 lost after 1 attempt (ChildRunError: "), err
    assert "without run.json" in ours[0] and f"--resume {out}" in ours[0]
    doc = json.loads((out / "compare.json").read_text())
    assert doc["state"] == "partial" and doc["stop"] == {"reason": "lost", "exit_code": 3}
    (lost,) = doc["history"][-1]["lost_runs"]
    assert (lost["variant"], lost["seed"], lost["folder"], lost["retried"]) == ("one", 0, None, 0)
    (attempt,) = lost["attempts"]
    assert attempt["worker"].startswith("tls://127.0.0.1:")
    assert not (out / "one-s0").exists()
    assert leases.holders() == {}


@pytest.mark.smp
def test_a_task_that_cannot_get_its_hosts_cores_in_time_is_a_lost_run(cluster: Cluster, tmp_path: Path) -> None:
    """Every core of the worker's host is leased by this process: with --lease-wait 0 the
    task gives up at once and raises; compare records the run as lost (not started,
    naming the holder), writes a partial result, one line, exit 3."""
    held = leases.try_acquire(len(usable_cores()), what="test")
    assert held is not None
    out = tmp_path / "c"
    try:
        proc = subprocess.run([sys.executable, "-m", "stress", "compare", "--cpus", "1", "--duration", "1",
                               "--repeat", "1", "--variant", "a:policy=none", *cluster.options,
                               "--lease-wait", "0", "--out", str(out), "-q"],
                              capture_output=True, text=True, timeout=120, cwd=ROOT)
    finally:
        held.release()
    assert proc.returncode == 3, proc.stderr
    ours = [line for line in proc.stderr.splitlines() if line.startswith("zonelimit:")]
    assert "Traceback" not in proc.stderr and len(ours) == 1, proc.stderr
    assert ours[0].startswith("zonelimit: compare: run a seed 0 lost"), ours[0]
    assert "not started: gave up after 0 s (--lease-wait 0) waiting on " in ours[0], ours[0]
    assert f"leased by pid {os.getpid()}" in ours[0], ours[0]
    doc = json.loads((out / "compare.json").read_text())
    assert doc["state"] == "partial" and doc["stop"] == {"reason": "lost", "exit_code": 3}
    assert not (out / "a-s0").exists()
    assert leases.holders() == {}
