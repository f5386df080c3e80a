"""Unit tests of allocator/: layout, arena, kegs, zones, the packet zone, the mbuf
layer, statistics, the audit, INVARIANTS and drains (single process, deterministic)."""

from __future__ import annotations

import gc
import multiprocessing
import os

import pytest

from allocator import (
    EXT_CLUSTER,
    EXT_PACKET,
    KEG_CLUSTER,
    M_NOWAIT,
    ZONE_CLUSTER,
    ZONE_MBUF,
    ZONE_PACKET,
    Geometry,
    Layout,
    Uma,
    UmaConfig,
    UmaPanic,
    netstat_m_lines,
    vmstat_z_lines,
)
from allocator.layout import BUCKET_MAX, CLUSTER_IPERS, MBUF_IPERS, UMA_ZFLAG_FULL


@pytest.fixture
def uma():
    u = Uma.create(UmaConfig(ncpus=2, nmbclusters=1024))
    yield u
    u.close()


_made: list[Uma] = []  #: arenas make() created, closed after each test


@pytest.fixture(autouse=True)
def _close_made():
    """Close what make() created: an arena's memfd stays open until it is closed or
    collected, and `stat PID` of this process (tests/test_stat.py) would find it first."""
    yield
    while _made:
        _made.pop().close()


def make(**kw):
    kw.setdefault("ncpus", 2)
    kw.setdefault("nmbclusters", 1024)
    u = Uma.create(UmaConfig(**kw))
    _made.append(u)
    return u


# --- layout and arena ---------------------------------------------------------------------
def test_layout_overhead_meets_p8_at_default_size():
    lay = Layout(Geometry.for_config(2, 25600))
    assert lay.size / lay.payload_bytes <= 1.10


def _is_arena_fd(fd: int) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:zonelimit-arena")
    except OSError:
        return False


def test_an_allocator_dropped_without_close_closes_its_memfd():
    """A Uma collected without close() (a forgotten one in a test, an exception path)
    must not keep its arena's memfd open for the rest of the process."""
    u = Uma.create(UmaConfig(ncpus=2, nmbclusters=1024))
    fd = u.arena.fd
    u.cpu(0).m_freem(u.cpu(0).m_getcl(M_NOWAIT))
    assert _is_arena_fd(fd)
    del u
    gc.collect()
    assert not _is_arena_fd(fd)


@pytest.mark.smp
def test_arena_is_anonymous_and_attachable_from_another_process(uma):
    assert os.readlink(uma.path).startswith("/memfd:zonelimit-arena")  # no /dev/shm name
    c = uma.cpu(0)
    m = c.m_getcl()
    assert m >= 0
    ctx = multiprocessing.get_context("spawn")  # a fresh process, nothing inherited
    with ctx.Pool(1) as pool:
        text = pool.apply(_attach_and_read, (uma.path,))
    assert text.splitlines()[0].startswith("1/")  # one mbuf current, read by the observer


def _attach_and_read(path: str) -> str:
    u = Uma.attach(path)
    try:
        return "\n".join(netstat_m_lines(u.stats()))
    finally:
        u.close()


# --- kegs and zone limits -------------------------------------------------------------------
def test_cluster_limit_counts_pages_and_nowait_fails_with_fail_counter():
    uma = make(nmbclusters=64)
    c = uma.cpu(0)
    got = []
    while True:
        x = c.zalloc(ZONE_CLUSTER, M_NOWAIT)
        if x < 0:
            break
        got.append(x)
    assert len(got) == 64  # nmbclusters: 32 pages of 2
    assert uma.view("uk_pages")[KEG_CLUSTER] == 64 // CLUSTER_IPERS
    assert uma.view("uk_flags")[KEG_CLUSTER] & UMA_ZFLAG_FULL
    assert uma.stats().zone("mbuf_cluster").fail == 1
    assert len(set(got)) == 64


def test_full_keg_frees_bypass_the_caches():
    uma = make(nmbclusters=64)
    c = uma.cpu(0)
    got = [c.zalloc(ZONE_CLUSTER, M_NOWAIT) for _ in range(64)]
    assert c.zalloc(ZONE_CLUSTER, M_NOWAIT) == -1
    free_before = uma.keg_free(KEG_CLUSTER)
    c.zfree(ZONE_CLUSTER, got[0])
    assert uma.keg_free(KEG_CLUSTER) == free_before + 1  # straight to the slab
    assert c.zalloc(ZONE_CLUSTER, M_NOWAIT) == got[0]


def test_mbuf_slabs_hold_15_items_and_return_to_lists(uma):
    m = uma.manager()  # no per-CPU buckets: every op hits the slabs
    items = [m.zalloc(ZONE_MBUF, M_NOWAIT) for _ in range(MBUF_IPERS + 1)]
    assert uma.view("uk_pages")[0] == 2
    assert {i // MBUF_IPERS for i in items[:MBUF_IPERS]} == {items[0] // MBUF_IPERS}
    for i in items:
        m.zfree(ZONE_MBUF, i)
    assert uma.keg_free(0) == 2 * MBUF_IPERS


# --- zones and per-CPU caches ---------------------------------------------------------------
def test_percpu_cache_is_private(uma):
    c0, c1 = uma.cpu(0), uma.cpu(1)
    a = c0.zalloc(ZONE_MBUF)
    c0.zfree(ZONE_MBUF, a)
    fb = uma.view("uc_freebucket")[ZONE_MBUF * uma.geometry.rows + 0]
    assert uma.view("ub_bucket")[fb * BUCKET_MAX + uma.view("ub_cnt")[fb] - 1] == a  # in CPU 0's free bucket
    got = [c1.zalloc(ZONE_MBUF) for _ in range(200)]
    assert a not in got  # CPU 1 never sees CPU 0's cached item


def test_cluster_zone_uz_count_grows_by_one_per_miss(uma):
    c = uma.cpu(0)
    start = uma.view("uz_count")[ZONE_CLUSTER]
    assert start == CLUSTER_IPERS
    items = [c.zalloc(ZONE_CLUSTER) for _ in range(10)]
    grown = uma.view("uz_count")[ZONE_CLUSTER]
    assert start < grown <= BUCKET_MAX
    for i in items:
        c.zfree(ZONE_CLUSTER, i)


def test_full_free_buckets_go_to_the_zone_list_without_bound(uma):
    c0 = uma.cpu(0)
    ms = [c0.zalloc(ZONE_MBUF) for _ in range(400)]
    for m in ms:
        c0.zfree(ZONE_MBUF, m)
    assert uma.view("uz_full_cnt")[ZONE_MBUF] >= 1
    # CPU 1 can allocate from the zone's full list without touching the keg
    fills = uma.view("uz_nfill")[ZONE_MBUF]
    c1 = uma.cpu(1)
    x = c1.zalloc(ZONE_MBUF)
    assert x in ms and uma.view("uz_nfill")[ZONE_MBUF] == fills


# --- packet zone and mbuf layer -------------------------------------------------------------
def test_packet_zone_items_hold_clusters_in_the_cache(uma):
    c = uma.cpu(0)
    ms = [c.m_getcl() for _ in range(20)]
    for m in ms:
        assert uma.view("m_exttype")[m] == EXT_PACKET
        assert uma.view("cl_ref")[uma.view("m_ext")[m]] == 1
    for m in ms:
        c.m_freem(m)
    s = uma.stats()
    assert s.zone("mbuf_packet").free >= 20
    # netstat arithmetic: clusters held by cached packets are "cache", not "current"
    assert s.netstat.clusters_current == s.zone("mbuf_cluster").used - s.zone("mbuf_packet").free
    assert s.netstat.clusters_current == 0
    rep = uma.audit([])
    assert rep.ok and rep.clusters_stranded == s.zone("mbuf_packet").free


def test_m_copym_shares_and_last_reference_moves_mbuf_to_packet_zone(uma):
    c = uma.cpu(0)
    p = c.m_getcl()
    cl = uma.view("m_ext")[p]
    n = c.m_copym(p)
    assert uma.view("m_ext")[n] == cl and uma.view("cl_ref")[cl] == 2
    c.m_freem(p)  # not last: p goes to the mbuf zone
    assert uma.view("cl_ref")[cl] == 1 and uma.view("m_ext")[p] == -1
    c.m_freem(n)  # last: n (an mbuf-zone mbuf) enters the packet zone with the cluster
    assert uma.view("m_ext")[n] == cl
    assert uma.audit([]).ok


def test_m_clget_attaches_ext_cluster_and_frees_to_cluster_zone(uma):
    c = uma.cpu(0)
    m = c.m_gethdr()
    assert c.m_clget(m)
    cl = uma.view("m_ext")[m]
    assert uma.view("m_exttype")[m] == EXT_CLUSTER
    c.mtod(m)[:4] = b"abcd"
    assert bytes(c.mtod(m)[:4]) == b"abcd"
    c.m_freem(m)
    assert uma.stats().zone("mbuf_cluster").used == 0
    assert cl >= 0 and uma.audit([]).ok


@pytest.mark.parametrize("mode,lost", [("buggy-eq0", 1), ("atomic", 0)])
def test_refcount_race_interleaving(mode, lost):
    """Two CPUs drop the last two references at once (both read 2, then both
    fetchadd): the 2005 test loses the cluster, the atomic test does not."""
    u = make(refcount=mode)
    try:
        c0, c1 = u.cpu(0), u.cpu(1)
        p = c0.m_getcl()
        n = c0.m_copym(p)
        fired = []

        def interleave(label: str) -> None:
            if label == "refcount test" and not fired:
                fired.append(label)
                c1.m_freem(n)  # CPU 1 runs its whole free inside CPU 0's window

        c0.sched_point = interleave
        c0.instrument()
        c0.m_freem(p)
        rep = u.audit([])
        assert rep.lost_clusters == lost
        assert rep.lost_mbufs == 0
        s = u.stats()
        assert s.netstat.mbufs_current == 0
        assert s.netstat.clusters_current == lost
    finally:
        u.close()


def test_sequential_frees_never_lose_clusters_even_with_2005_test():
    u = make(refcount="buggy-eq0")
    try:
        c = u.cpu(0)
        for _ in range(200):
            p = c.m_getcl()
            n = c.m_copym(p)
            c.m_freem(p)
            c.m_freem(n)
        assert u.audit([]).lost_clusters == 0
    finally:
        u.close()


# --- statistics formatting ---------------------------------------------------------------------
def test_netstat_and_vmstat_format_like_freebsd(uma):
    c = uma.cpu(0)
    held = [c.m_getcl() for _ in range(3)]
    lines = netstat_m_lines(uma.stats())
    assert lines[0].endswith("mbufs in use (current/cache/total)")
    assert lines[0].startswith("3/")
    assert lines[1].endswith("/1024 mbuf clusters in use (current/cache/total/max)")
    assert lines[1].startswith("3/")
    vz = vmstat_z_lines(uma.stats())
    assert vz[0].split() == ["ITEM", "SIZE", "LIMIT", "USED", "FREE", "REQ", "FAIL", "SLEEP"]
    assert vz[3].startswith("mbuf_packet:") and "3," in vz[3]
    assert uma.audit(held).ok


# --- audit ----------------------------------------------------------------------------------
def test_audit_reports_an_mbuf_nobody_holds_as_lost(uma):
    c = uma.cpu(0)
    a, b = c.m_get(), c.m_get()
    rep = uma.audit([a])
    assert rep.lost_mbufs == 1 and rep.lost_mbuf_ids == [b] and not rep.ok
    assert uma.audit([a, b]).ok


def test_audit_reports_double_owned(uma):
    c = uma.cpu(0)
    a = c.m_get()
    c.m_freem(a)
    rep = uma.audit([a])  # claimed held while it sits in a cache
    assert rep.double_owned == 1 and not rep.ok


# --- INVARIANTS -----------------------------------------------------------------------------
def test_invariants_duplicate_free_panics_and_is_recorded():
    u = make(invariants=True)
    try:
        c = u.cpu(0)
        m = c.m_get()
        c.m_freem(m)
        with pytest.raises(UmaPanic, match="Duplicate free"):
            c.m_freem(m)
        p = u.panics()
        assert p and p[0].kind == "Duplicate free" and p[0].item == m and p[0].zone == "mbuf"
    finally:
        u.close()


def test_invariants_memory_modified_after_free():
    u = make(invariants=True)
    try:
        c = u.cpu(0)
        m = c.m_gethdr()
        assert c.m_clget(m)
        data = c.mtod(m)
        c.m_freem(m)
        data[0:4] = b"oops"  # use after free
        with pytest.raises(UmaPanic, match="modified after free"):
            for _ in range(200):
                c.zalloc(ZONE_CLUSTER)
    finally:
        u.close()


def test_invariants_clean_workload_has_no_panics():
    u = make(invariants=True)
    try:
        c = u.cpu(0)
        for _ in range(300):
            p = c.m_getcl()
            n = c.m_copym(p)
            c.mtod(p)[:3] = b"xyz"
            c.m_freem(n)
            c.m_freem(p)
        assert u.panics() == [] and u.audit([]).ok
    finally:
        u.close()


# --- drains ---------------------------------------------------------------------------------
def test_zone_drain_returns_packet_clusters_to_the_cluster_zone(uma):
    c0 = uma.cpu(0)
    ms = [c0.m_getcl() for _ in range(300 // 10)]
    for m in ms:
        c0.m_freem(m)
    uma.request_cache_drain([0], 1 << ZONE_PACKET)
    c0.serve()
    assert uma.cache_drain_done([0])
    assert uma.view("uc_allocbucket")[ZONE_PACKET * uma.geometry.rows] == -1
    before = uma.stats().zone("mbuf_packet").free
    assert before == BUCKET_MAX  # the whole first fill is cached (uz_count 128)
    uma.zone_drain(ZONE_PACKET)
    s = uma.stats()
    assert s.zone("mbuf_packet").free == 0
    assert s.zone("mbuf_cluster").used == 0
    rep = uma.audit([])
    assert rep.ok and rep.clusters_stranded == 0


def test_cache_drain_request_is_served_only_by_the_owner(uma):
    c0 = uma.cpu(0)
    m = c0.m_get()
    c0.m_freem(m)
    uma.request_cache_drain([0], 1 << ZONE_MBUF)
    row = ZONE_MBUF * uma.geometry.rows
    assert uma.view("uc_freebucket")[row] >= 0 or uma.view("uc_allocbucket")[row] >= 0  # not touched yet
    c0.serve()
    assert uma.view("uc_freebucket")[row] == -1 and uma.view("uc_allocbucket")[row] == -1
    assert uma.audit([]).ok


def test_no_bucket_mode_takes_the_lock_every_time():
    u = make(bucket_cache=False, lock_profile=True)
    try:
        c = u.cpu(0)
        for _ in range(50):
            c.zfree(ZONE_MBUF, c.zalloc(ZONE_MBUF))
        rows = {r["point"]: r["count"] for r in u.lock_profile() if r["lock"] == "mbuf keg"}
        assert rows["uma_zalloc_internal"] == 50 and rows["uma_zfree_internal"] == 50
    finally:
        u.close()


def test_config_rejects_unknown_knobs():
    with pytest.raises(ValueError):
        UmaConfig(ncpus=1, refcount="maybe")
    with pytest.raises(ValueError):
        UmaConfig(ncpus=1, inject=frozenset({"nope"}))
