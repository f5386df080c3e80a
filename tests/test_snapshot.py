"""Wedge post-mortems: the arena kept as arena.npz (allocator/snapshot.py) and audited
again offline by ``report --audit``; stacks.txt with every CPU's and the manager's stack."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import allocator
from allocator import Uma, UmaConfig
from allocator import snapshot as arena_snapshot
from allocator.layout import LAYOUT_VERSION, ArraySpec
from stress import cli
from stress.config import RunConfig
from stress.engine import postmortem
from stress.engine.runner import execute


def test_a_snapshot_rebuilds_the_arena_array_for_array(tmp_path: Path) -> None:
    ring = ArraySpec("ring_test", "i", 64)
    uma = Uma.create(UmaConfig(ncpus=2, nmbclusters=1024, extra=(ring,)))
    try:
        cpu = uma.cpu(0)
        held = [cpu.m_getcl() for _ in range(30)]
        for m in held[:10]:
            cpu.m_freem(m)
        uma.np("ring_test")[:5] = held[10:15]
        path = uma.snapshot(tmp_path / "arena.npz")
        saved = Uma.from_snapshot(path)
        try:
            assert saved.arena.layout.extra == uma.arena.layout.extra
            for name in uma.arena.layout.offsets:
                assert np.array_equal(saved.np(name), uma.np(name)), name
            assert saved.stats() == uma.stats()
            assert saved.audit(held[10:]).summary_lines() == uma.audit(held[10:]).summary_lines()
            assert saved.audit([]).summary_lines() != uma.audit(held[10:]).summary_lines()  # the audit can differ
        finally:
            saved.close()
    finally:
        uma.close()
    assert path.stat().st_size < uma.arena.layout.payload_bytes / 10  # no payload, compressed


def test_a_file_that_is_no_snapshot_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "x.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="unreadable snapshot"):
        arena_snapshot.load(bad)
    np.savez_compressed(tmp_path / "y.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not a zonelimit arena snapshot"):
        arena_snapshot.load(tmp_path / "y.npz")
    meta = {"snapshot": 1, "layout": LAYOUT_VERSION + 1, "geometry": [], "extra": []}
    np.savez_compressed(tmp_path / "z.npz", __zonelimit_snapshot__=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    with pytest.raises(ValueError, match=f"this version reads layout {LAYOUT_VERSION}"):
        arena_snapshot.load(tmp_path / "z.npz")


@pytest.mark.smp
def test_a_wedged_run_keeps_stacks_and_an_arena_that_re_audits_the_same(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An exhaustion wedge (16 clusters, one wakeup per free): the run's folder has every
    CPU's and the manager's stack, and an arena.npz whose audit gives run.json's verdict,
    count for count; a changed arena gives another, and exit 1."""
    cfg = RunConfig(cpus=2, era="2005", refcount="buggy-eq0", wakeup="one", policy="none", nmbclusters=16,
                    duration=120, wedge_timeout=1.5, interval=0.5)
    out = tmp_path / "run"
    doc = execute(cfg, out)
    assert doc["verdict"] == "wedged", doc.get("verdict_detail")
    stacks = (out / postmortem.STACKS_TXT).read_text()
    assert stacks.startswith("wedged at ") and "in [zonelimit]" in stacks.splitlines()[0]
    for who in ("CPU 0 (pid ", "CPU 1 (pid ", "the manager (pid "):
        assert who in stacks
    # a CPU asleep where the 2005 threads slept; compiled (Cython), py-spy's Python stack
    # ends at the workload's call into the allocator: its m_getcl
    assert "keg_sleep (allocator/limit.py" in stacks or (
        allocator.COMPILED and "Netperf.send (stress/workloads/netperf.py" in stacks), stacks
    assert "S (sleeping), in futex" in stacks  # the zonelimit sleep is a semaphore wait
    assert (out / postmortem.ARENA_NPZ).is_file()

    assert cli.main(["report", "--audit", str(out)]) == 0
    said = capsys.readouterr().out
    assert "re-audit: the same verdict as run.json (wedged)" in said
    assert cli.main(["report", str(out)]) == 0
    assert f"stacks ({out / postmortem.STACKS_TXT}):" in capsys.readouterr().out

    with np.load(out / postmortem.ARENA_NPZ) as npz:  # one cluster's refcount taken: now it is lost
        arrays = {k: npz[k] for k in npz.files}
    held = np.flatnonzero(arrays["cl_ref"] > 0)
    assert held.size
    arrays["cl_ref"][held[0]] = 0
    arrays["m_ext"][arrays["m_ext"] == held[0]] = -1
    np.savez_compressed(out / postmortem.ARENA_NPZ, **arrays)
    assert cli.main(["report", "--audit", str(out)]) == 1
    said = capsys.readouterr().out
    assert "re-audit: DIFFERS from run.json" in said and "lost:" in said
