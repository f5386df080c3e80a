"""The INVARIANTS item history (allocator/history.py): one CPU context, no processes.

What the ring of an item holds after a known sequence of operations, that it wraps at
HISTORY_DEPTH, that a step source stamps schedule steps, that a run without INVARIANTS
has no history arrays at all, and that the audit and a duplicate-free panic carry the
history of the item they name.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from allocator import (
    HISTORY_DEPTH,
    KEG_CLUSTER,
    KEG_MBUF,
    M_WAITOK,
    ZONE_CLUSTER,
    ZONE_MBUF,
    Uma,
    UmaConfig,
    UmaPanic,
)
from allocator.history import decode, encode
from allocator.layout import HOP_FREE, HOP_REF_DEC
from stress.audit import assess
from stress.output.monitor import audit_lines


@pytest.fixture
def uma() -> Iterator[Uma]:
    u = Uma.create(UmaConfig(ncpus=2, nmbclusters=512, invariants=True))
    try:
        yield u
    finally:
        u.close()


def ops(uma: Uma, keg: int, item: int) -> list[tuple[str, str, str]]:
    return [(e.context, e.op, e.zone) for e in uma.item_history(keg, item)]


def test_a_shared_cluster_records_every_hand_that_touched_it(uma: Uma) -> None:
    cpu = uma.cpu(0)
    m = cpu.m_getcl()
    c = cpu.m_ext[m]
    n = cpu.m_copym(m)
    cpu.m_freem(n)  # refcount 2 -> 1: the fetchadd path
    cpu.m_freem(m)  # the last reference: the packet goes back to its zone with its cluster
    assert ops(uma, KEG_CLUSTER, c) == [
        ("cpu0", "alloc", "mbuf_cluster"),  # mb_zinit_pack took it for the packet zone
        ("cpu0", "alloc", "mbuf_packet"),
        ("cpu0", "refcount-inc", "mbuf_cluster"),
        ("cpu0", "refcount-dec", "mbuf_cluster"),
        ("cpu0", "free", "mbuf_packet"),
    ]
    assert ops(uma, KEG_MBUF, n) == [("cpu0", "alloc", "mbuf"), ("cpu0", "free", "mbuf")]
    steps = [e.step for e in uma.item_history(KEG_CLUSTER, c)]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)  # the CPU's own count
    assert not any(e.sched for e in uma.item_history(KEG_CLUSTER, c))
    assert uma.item_history(KEG_CLUSTER, c)[2].words() == f"cpu0 refcount-inc mbuf_cluster op {steps[2]} of cpu0"


def test_the_ring_keeps_the_last_depth_operations(uma: Uma) -> None:
    cpu = uma.cpu(1)
    m = cpu.m_getcl()
    c = cpu.m_ext[m]
    for _ in range(HISTORY_DEPTH):  # 2 records each on the cluster: twice the ring
        cpu.m_freem(cpu.m_copym(m))
    hist = uma.item_history(KEG_CLUSTER, c)
    assert int(uma.np("k1_ui_histn")[c]) == 2 + 2 * HISTORY_DEPTH  # zinit's alloc, m_getcl's
    assert [e.op for e in hist] == ["refcount-inc", "refcount-dec"] * (HISTORY_DEPTH // 2)
    assert {e.context for e in hist} == {"cpu1"}
    steps = [e.step for e in hist]
    assert steps == sorted(steps) and len(set(steps)) == HISTORY_DEPTH


def test_a_step_source_stamps_the_schedule_step(uma: Uma) -> None:
    cpu = uma.cpu(0)
    words = memoryview(bytearray(8 * 4)).cast("q")
    words[2] = 812
    cpu.set_step_source(words, 2)
    c = cpu.zalloc(ZONE_CLUSTER, M_WAITOK)
    words[2] = 813
    cpu.zfree(ZONE_CLUSTER, c)
    assert [e.words() for e in uma.item_history(KEG_CLUSTER, c)] == [
        "cpu0 alloc mbuf_cluster at step 812", "cpu0 free mbuf_cluster at step 813"]


def test_the_manager_is_cpu_minus_one() -> None:
    e = decode(encode(row=2, op=HOP_REF_DEC, zone=ZONE_CLUSTER, step=5, sched=True), ncpus=2)
    assert e is not None and (e.cpu, e.context, e.op, e.step) == (-1, "manager", "refcount-dec", 5)
    e = decode(encode(row=1, op=HOP_FREE, zone=3, step=7, sched=False), ncpus=2)
    assert e is not None and e.words() == "cpu1 free op 7 of cpu1"
    assert decode(0, ncpus=2) is None


def test_without_invariants_there_is_no_history_and_no_memory_for_it() -> None:
    plain = Uma.create(UmaConfig(ncpus=2, nmbclusters=512))
    checked = Uma.create(UmaConfig(ncpus=2, nmbclusters=512, invariants=True))
    try:
        assert not any("hist" in name for name in plain.arena.layout.offsets)
        assert checked.arena.layout.size > plain.arena.layout.size
        cpu = plain.cpu(0)
        c = cpu.zalloc(ZONE_CLUSTER, M_WAITOK)
        assert plain.item_history(KEG_CLUSTER, c) == []
        assert plain.audit([]).histories == []
    finally:
        plain.close()
        checked.close()


def test_the_audit_carries_a_lost_clusters_history(uma: Uma) -> None:
    cpu = uma.cpu(0)
    c = cpu.zalloc(ZONE_CLUSTER, M_WAITOK)  # held by nobody the audit is told of: lost
    report = uma.audit([])
    assert report.lost_cluster_ids == [c]
    assert report.histories == [{"finding": "lost", "keg": "mbuf_cluster", "item": c,
                                 "history": [e.words() for e in uma.item_history(KEG_CLUSTER, c)]}]
    a = assess(report, panics=uma.panics())
    assert a.verdict == "leak" and a.block["item_histories"][0]["item"] == c
    lines = audit_lines(a.block)
    assert any(line.startswith(f"  history of mbuf_cluster {c} (lost): cpu0 alloc mbuf_cluster") for line in lines)


def test_a_duplicate_free_panic_names_the_items_history(uma: Uma) -> None:
    cpu = uma.cpu(1)
    m = cpu.zalloc(ZONE_MBUF, M_WAITOK)
    cpu.zfree(ZONE_MBUF, m)
    with pytest.raises(UmaPanic):
        cpu.zfree(ZONE_MBUF, m)
    (panic,) = uma.panics()
    assert panic.kind == "Duplicate free" and panic.item == m
    assert [h.split(" op ")[0] for h in panic.history] == ["cpu1 alloc mbuf", "cpu1 free mbuf", "cpu1 free mbuf"]
    block = assess(uma.audit([]), panics=uma.panics()).block
    assert {"finding": "Duplicate free", "keg": "mbuf", "item": m, "history": list(panic.history)} \
        in block["item_histories"]
