"""Differential tests: the project's working-set estimators and policies against the kernels.

The same event trace drives a reference model transcribed from the kernel source
(tests/kernel_models.py) and the project: a real single-process ``Uma`` whose mbuf zone
gets the trace's buckets through the zone's own list functions (``zone_put_bucket``,
``zone_fetch_bucket``, ``zone_alloc_bucket``), and the real ``TrimCallout`` with the
policy under test for interval ends and reclaim requests.  After every event the
estimator state in the arena, the list's buckets, the buckets each interval end or
reclaim frees and whether ``keg_drain`` runs after it must equal the model's: zero
tolerance.

Events: ``put`` (a consumer's full free bucket, ws=true), ``flush`` (a per-CPU bucket
flushed, ws=false), ``get`` (an allocation takes a bucket), ``miss`` (an allocation
found the list empty and filled a bucket from the keg), ``tick`` (an interval end:
zone_timeout / kmem_update), ``lowmem`` (a reclaim request: vm_lowmem ->
uma_reclaim(UMA_RECLAIM_TRIM) / kmem_reap).  For ``depot`` a flush is mapped to
``kmem_depot_free``: illumos has no flush (its magazine purge frees a CPU's magazines
to the slab layer), and the project's documented stand-in puts the flushed buckets in
the depot, so that is what is held to the depot's rules.

The last test runs a trace of *consumer* operations (CPU 0's zalloc/zfree, a per-CPU
flush through the safe protocol) and derives the model's events from what the list
did, so that the events zone.py itself reports are checked too, not only the
bookkeeping behind them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from allocator import KEG_MBUF, M_NOWAIT, ZONE_MBUF, Uma, UmaConfig
from allocator.keg import M_WAITOK
from allocator.layout import BUCKET_MAX
from allocator.lock import P_FILL, P_ZALLOC, P_ZFREE
from allocator.policy.callout import TrimCallout
from allocator.workingset import FETCH_ALLOC, PUT_SHIFT, PUT_WS
from tests.kernel_models import KmemDepot, UmaZoneDomain2019, UmaZoneDomainMain

Z = ZONE_MBUF
K = KEG_MBUF
BS = BUCKET_MAX
Event = tuple[str, int]  # (kind, bucket count; 0 where the count is not the trace's to choose)


class ArenaZone:
    """The project's side: one real Uma (1 CPU), its mbuf zone driven bucket by bucket
    from the manager's context, and the trim callout with ``policy`` on that zone."""

    def __init__(self, policy: str, bucket_size_min: int = BS) -> None:
        self.uma = Uma.create(UmaConfig(ncpus=1, nmbclusters=4096))
        self.m = self.uma.manager()
        self.uma.view("uz_count_min")[Z] = bucket_size_min  # let a reclaim's uz_count-- show
        self.callout = TrimCallout(self.uma, policy, zones=(Z,))
        self.hand: list[int] = []  # items the consumers hold

    def close(self) -> None:
        self.uma.close()

    def _item(self) -> int:
        if self.hand:
            return self.hand.pop()
        m = self.m
        m.lock(K, P_ZALLOC)
        s = m.keg_fetch_slab(K, Z, M_NOWAIT)
        item = m.slab_alloc_item(K, s) if s >= 0 else -1
        m.unlock(K)
        assert item >= 0, "the trace needs more mbufs than the keg has"
        return item

    def _take(self, b: int) -> int:
        """An allocation empties bucket ``b`` into the consumers' hands."""
        m = self.m
        cnt = int(m.ub_cnt[b])
        self.hand += [int(m.ub_bucket[b * BUCKET_MAX + i]) for i in range(cnt)]
        m.bucket_free(b)
        return cnt

    def put(self, cnt: int, ws: bool = True) -> None:
        m = self.m
        b = m.bucket_alloc(cnt)
        for i in range(cnt):
            m.ub_bucket[b * BUCKET_MAX + i] = self._item()
        m.ub_cnt[b] = cnt
        m.lock(K, P_ZFREE)
        m.zone_put_bucket(Z, b, PUT_WS if ws else PUT_SHIFT)
        m.unlock(K)

    def get(self) -> int | None:
        m = self.m
        m.lock(K, P_ZALLOC)
        b = m.zone_fetch_bucket(Z, FETCH_ALLOC)
        m.unlock(K)
        return None if b < 0 else self._take(b)

    def miss(self) -> int:
        """zone_alloc_bucket fills a bucket from the keg; the allocation takes it."""
        m = self.m
        m.lock(K, P_FILL)
        assert m.zone_alloc_bucket(Z, M_NOWAIT)
        b = m.zone_fetch_bucket(Z, FETCH_ALLOC)
        m.unlock(K)
        return self._take(b)

    def tick(self) -> tuple[int, bool]:
        """An interval end: (buckets freed, whether keg_drain ran)."""
        done = [t.done for t in self.callout.tick()]
        return sum(d.get("buckets", 0) for d in done), any(d.get("keg_drains", 0) for d in done)

    def lowmem(self) -> tuple[int, bool]:
        """A reclaim request: (buckets freed, whether keg_drain ran)."""
        done = [t.done for t in self.callout.vm_lowmem()]
        return sum(d.get("buckets", 0) for d in done), any(d.get("keg_drains", 0) for d in done)

    def buckets(self) -> list[int]:
        """The full list's bucket counts, head first."""
        m = self.m
        out, b = [], int(m.uz_full_head[Z])
        while b >= 0:
            out.append(int(m.ub_cnt[b]))
            b = int(m.ub_link[b])
        return out

    def arr(self, name: str) -> int:
        return int(self.uma.view(name)[Z])


# --- the kernels' side, one adapter per policy ----------------------------------------


class MainSide:
    """FreeBSD main (policy ``wss``)."""

    policy = "wss"

    def __init__(self, bucket_size_min: int) -> None:
        self.k = UmaZoneDomainMain(BS, bucket_size_min)

    def put(self, cnt: int, ws: bool) -> None:
        self.k.zone_put_bucket(cnt, ws)

    def get(self) -> int | None:
        return self.k.zone_fetch_bucket(False)

    def miss(self, cnt: int) -> None:
        self.k.cache_alloc_new(cnt)

    def tick(self) -> tuple[int, bool | None]:
        return self.k.zone_timeout()

    def lowmem(self) -> tuple[int, bool | None]:
        return self.k.zone_reclaim(False)

    def check(self, a: ArenaZone, where: str) -> None:
        k = self.k
        want = (k.uzd_nitems, k.uzd_imax, k.uzd_imin, k.uzd_bimin, k.uzd_wss, k.uzd_limin, k.uzd_timin,
                k.uz_bucket_size, list(k.uzd_buckets))
        got = (a.arr("uzd_nitems"), a.arr("uzd_imax"), a.arr("uzd_imin"), a.arr("uzd_bimin"), a.arr("uzd_wss"),
               a.arr("uzd_limin"), a.arr("uzd_timin"), a.arr("uz_count"), a.buckets())
        assert got == want, f"{where}: (nitems imax imin bimin wss limin timin bucket_size list) {got} != {want}"


class Y2019Side:
    """FreeBSD 2019-2020 (policy ``wss-2019``)."""

    policy = "wss-2019"

    def __init__(self, bucket_size_min: int) -> None:
        self.k = UmaZoneDomain2019(BS, bucket_size_min)

    def put(self, cnt: int, ws: bool) -> None:
        self.k.zone_put_bucket(cnt, ws)

    def get(self) -> int | None:
        return self.k.zone_fetch_bucket()

    def miss(self, cnt: int) -> None:
        self.k.cache_alloc_new(cnt)

    def tick(self) -> tuple[int, bool | None]:
        return self.k.zone_timeout()

    def lowmem(self) -> tuple[int, bool | None]:
        return self.k.zone_reclaim(False)

    def check(self, a: ArenaZone, where: str) -> None:
        k = self.k
        want = (k.uzd_nitems, k.uzd_imax, k.uzd_imin, k.uzd_wss, k.uz_bucket_size, sorted(k.uzd_buckets))
        got = (a.arr("uzd_nitems"), a.arr("uzd19_imax"), a.arr("uzd19_imin"), a.arr("uzd19_wss"),
               a.arr("uz_count"), sorted(a.buckets()))
        assert got == want, f"{where}: (nitems imax imin wss uz_count buckets) {got} != {want}"


class DepotSide:
    """illumos kmem depot (policy ``depot``)."""

    policy = "depot"

    def __init__(self, bucket_size_min: int) -> None:
        self.k = KmemDepot()

    def put(self, cnt: int, ws: bool) -> None:
        self.k.kmem_depot_free(cnt)  # a flush too: the project's stand-in (module docstring)

    def get(self) -> int | None:
        return self.k.kmem_depot_alloc()

    def miss(self, cnt: int) -> None:
        """kmem_cache_alloc without a full magazine goes to the slab layer: no depot event."""

    def tick(self) -> tuple[int, bool | None]:
        """kmem_update -> kmem_cache_update -> kmem_depot_ws_update: nothing freed."""
        self.k.kmem_depot_ws_update()
        return 0, None

    def lowmem(self) -> tuple[int, bool | None]:
        """kmem_reap -> kmem_cache_reap -> kmem_depot_ws_reap.  illumos has no keg_drain
        (a slab goes back when its last buffer does), so that is not compared."""
        return self.k.kmem_depot_ws_reap(), None

    def check(self, a: ArenaZone, where: str) -> None:
        k = self.k
        want = (k.ml_total, k.ml_min, k.ml_reaplimit, list(reversed(k.ml_list)))
        got = (a.arr("ml_total"), a.arr("ml_min"), a.arr("ml_reaplimit"), a.buckets())
        assert got == want, f"{where}: (ml_total ml_min ml_reaplimit list) {got} != {want}"


SIDES = {"wss": MainSide, "wss-2019": Y2019Side, "depot": DepotSide}


def run_trace(policy: str, trace: Iterable[Event], bucket_size_min: int = BS) -> list[tuple[str, int]]:
    """Drive ``trace`` through both sides, checking after every event; returns the
    (event, buckets freed) of every tick and lowmem."""
    side = SIDES[policy](bucket_size_min)
    arena = ArenaZone(policy, bucket_size_min)
    freed: list[tuple[str, int]] = []
    try:
        for i, (kind, cnt) in enumerate(trace):
            where = f"event {i} {kind} {cnt}"
            if kind in ("put", "flush"):
                side.put(cnt, kind == "put")
                arena.put(cnt, kind == "put")
            elif kind == "get":
                assert arena.get() == side.get(), where
            elif kind == "miss":
                side.miss(arena.miss())
            elif kind in ("tick", "lowmem"):
                want, want_keg = side.tick() if kind == "tick" else side.lowmem()
                got, got_keg = arena.tick() if kind == "tick" else arena.lowmem()
                assert got == want, f"{where}: buckets freed {got} != {want}"
                if want_keg is not None:
                    assert got_keg == want_keg, f"{where}: keg_drain ran {got_keg} != {want_keg}"
                freed.append((kind, got))
            else:
                raise AssertionError(kind)
            side.check(arena, where)
    finally:
        arena.close()
    return freed


# --- the traces ------------------------------------------------------------------------


def rep(events: Sequence[Event], n: int) -> list[Event]:
    return list(events) * n


PUT, GET, TICK, LOWMEM = ("put", BS), ("get", 0), ("tick", 0), ("lowmem", 0)
MISS, FLUSH = ("miss", 0), ("flush", BS)

TRACES: dict[str, list[Event]] = {
    # a cache built, then bursts of allocations and frees, then a long idle stretch with
    # a reclaim request in it and at its end
    "bursts-then-idle": [PUT] * 12 + rep([GET] * 8 + [TICK] + [PUT] * 8 + [TICK], 4)
    + [TICK] * 20 + [LOWMEM] + [TICK] * 5 + [LOWMEM],
    # netperf -l 30 in a loop: load on (allocations miss, frees return), load off
    "on-off": rep(rep([MISS, MISS, GET, PUT, PUT, PUT, TICK], 5) + [TICK] * 5 + [LOWMEM] + [TICK] * 2, 4),
    # a put that raises imax mid-period closes the allocation batch
    "new-max-mid-period": [PUT] * 5 + [TICK] + [GET] * 3 + [PUT] * 6 + [GET] * 4 + [TICK] + [GET] * 2
    + [PUT] * 9 + [GET] * 7 + [LOWMEM] + [TICK] + [LOWMEM],
    # a cache no allocation touches for 15 minutes of periods and more: the long-term trim
    "long-idle": [PUT] * 24 + [TICK] * 120 + [LOWMEM],
    # per-CPU flushes and reclaims interleaved with demand: the bounds shift, demand does not
    "flush-and-reclaim": rep([PUT] * 4 + [FLUSH] * 2 + [GET] * 3 + [LOWMEM] + [FLUSH] + [GET, MISS] + [TICK], 6),
    # flushed buckets raise the long-term minimum at once (ws=false: limin += ub_cnt), so
    # the long-term trim's "timin > 900 / UMA_TIMEOUT" is met on the 46th period exactly
    "flush-then-long-idle": [FLUSH] * 8 + [TICK] * 50 + [LOWMEM],
    # a reclaim that takes a bucket holding exactly limin items ("if (zdom->uzd_limin >=
    # bucket->ub_cnt)": limin goes to 0 and timin is kept)
    "reclaim-at-long-term-minimum": [FLUSH, LOWMEM] + [PUT] * 2 + [TICK] * 2 + [FLUSH, LOWMEM],
    # allocations draw the depot below the last interval's minimum before the reap:
    # reap = MIN(ml_reaplimit, ml_min) takes the current minimum
    "reap-below-reaplimit": [PUT] * 6 + [TICK] * 2 + [GET] * 4 + [PUT] * 4 + [LOWMEM] + [TICK] + [LOWMEM],
}


@pytest.mark.parametrize("policy", sorted(SIDES))
@pytest.mark.parametrize("trace", sorted(TRACES))
def test_traces_agree_with_the_kernel_step_for_step(policy: str, trace: str) -> None:
    freed = run_trace(policy, TRACES[trace])
    assert freed  # every trace has interval ends and reclaim requests


class ProbedMain(UmaZoneDomainMain):
    """FreeBSD main's model, recording what its rules did (for the test of the traces)."""

    def __init__(self) -> None:
        super().__init__(BS, BS)
        self.limin_at_reclaim: list[tuple[int, int]] = []  # (uzd_limin, ub_cnt) of each reclaim fetch

    def zone_fetch_bucket(self, reclaim: bool) -> int | None:
        if reclaim and self.uzd_buckets:
            self.limin_at_reclaim.append((self.uzd_limin, self.uzd_buckets[0]))
        return super().zone_fetch_bucket(reclaim)


def model_only(trace: Sequence[Event]) -> dict[str, list[int]]:
    """Run ``trace`` through the three kernel models alone and record which rules fired."""
    main, y19, depot = ProbedMain(), UmaZoneDomain2019(BS, BS), KmemDepot()
    seen: dict[str, list[int]] = {"wss_rose_on_put": [], "stopped_above_target": [], "tick_frees": [],
                                  "y19_below_target": [], "reap_below_reaplimit": []}
    ticks = 0
    for kind, cnt in trace:
        if kind in ("put", "flush"):
            before = main.uzd_wss
            main.zone_put_bucket(cnt, kind == "put")
            y19.zone_put_bucket(cnt, kind == "put")
            depot.kmem_depot_free(cnt)
            if main.uzd_wss > before:
                seen["wss_rose_on_put"].append(main.uzd_wss - before)
        elif kind == "get":
            main.zone_fetch_bucket(False)
            y19.zone_fetch_bucket()
            depot.kmem_depot_alloc()
        elif kind == "miss":
            main.cache_alloc_new(BS)
            y19.cache_alloc_new(BS)
        elif kind == "tick":
            ticks += 1
            if main.zone_timeout()[0]:
                seen["tick_frees"].append(ticks)
            y19.zone_timeout()
            depot.kmem_depot_ws_update()
        else:
            main.zone_reclaim(False)
            if main.uzd_buckets and main.uzd_nitems > main.uzd_wss:
                seen["stopped_above_target"].append(main.uzd_nitems - main.uzd_wss)
            target = max(y19.uzd_wss, y19.uzd_nitems - y19.uzd_imin)
            if y19.zone_reclaim(False)[0] and y19.uzd_nitems < target:
                seen["y19_below_target"].append(target - y19.uzd_nitems)
            if depot.ml_min < depot.ml_reaplimit:
                seen["reap_below_reaplimit"].append(depot.ml_reaplimit - depot.ml_min)
            depot.kmem_depot_ws_reap()
    seen["limin_is_the_bucket"] = [1 for limin, cnt in main.limin_at_reclaim if limin == cnt]
    return seen


def test_the_traces_reach_the_rules_they_are_named_for() -> None:
    """The traces are worth comparing on: each kernel rule fires where its trace says (a
    test of the traces, run on the kernel models alone, so that agreement is never
    agreement on doing nothing)."""
    main = {name: sum(n for _, n in run_trace("wss", trace)) for name, trace in TRACES.items()}
    assert all(n > 0 for name, n in main.items() if name != "new-max-mid-period"), main
    seen = {name: model_only(trace) for name, trace in TRACES.items()}
    # zone_domain_imax_set: a put raising imax mid-period closes a batch into wss at once
    assert seen["new-max-mid-period"]["wss_rose_on_put"]
    # bucket_cache_reclaim_domain never takes the count below its target: the last
    # reclaim of that trace keeps a bucket that "nitems > target" would have freed
    assert seen["new-max-mid-period"]["stopped_above_target"]
    assert main["new-max-mid-period"] == 0
    # "uzd_timin > 900 / UMA_TIMEOUT": nothing before the 46th period, then the trim
    assert seen["flush-then-long-idle"]["tick_frees"][0] == 900 // 20 + 1
    assert seen["long-idle"]["tick_frees"] and min(seen["long-idle"]["tick_frees"]) > 900 // 20
    # "if (zdom->uzd_limin >= bucket->ub_cnt)" taken with equality
    assert seen["reclaim-at-long-term-minimum"]["limin_is_the_bucket"]
    # 2019's "while (zdom->uzd_nitems > target)" goes below its target
    assert any(v["y19_below_target"] for v in seen.values())
    # MIN(ml_reaplimit, ml_min) with the current minimum the smaller
    assert seen["reap-below-reaplimit"]["reap_below_reaplimit"]
    assert sum(n for _, n in run_trace("depot", TRACES["bursts-then-idle"])) > 0
    assert sum(n for _, n in run_trace("wss-2019", TRACES["on-off"])) > 0


@pytest.mark.parametrize("floor", [BS - 8, BS - 2])
def test_reclaim_shrinks_the_bucket_size_as_the_kernel_does(floor: int) -> None:
    """``if (zone->uz_bucket_size > zone->uz_bucket_size_min) zone->uz_bucket_size--``
    on every reclaim request: four of them stay above the first floor and reach the
    second (the check compares the bucket size after each step)."""
    trace = [PUT] * 6 + [LOWMEM] * 3 + [MISS, MISS, TICK, LOWMEM]
    for policy in ("wss", "wss-2019"):
        run_trace(policy, trace, bucket_size_min=floor)


# --- random walks --------------------------------------------------------------------


def walks(full: bool) -> st.SearchStrategy[list[Event]]:
    count = st.just(BS) if full else st.integers(1, BS)
    event = st.one_of(
        st.tuples(st.just("put"), count), st.tuples(st.just("flush"), count),
        st.tuples(st.just("get"), st.just(0)), st.tuples(st.just("miss"), st.just(0)),
        st.tuples(st.just("tick"), st.just(0)), st.tuples(st.just("lowmem"), st.just(0)),
    )
    return st.lists(event, min_size=1, max_size=60)


@settings(max_examples=25, deadline=None)
@given(policy=st.sampled_from(sorted(SIDES)), trace=walks(full=True))
def test_random_walks_of_full_buckets_agree(policy: str, trace: list[Event]) -> None:
    run_trace(policy, trace)


@settings(max_examples=25, deadline=None)
@given(policy=st.sampled_from(["wss", "depot"]), trace=walks(full=False))
def test_random_walks_of_partly_filled_buckets_agree(policy: str, trace: list[Event]) -> None:
    """FreeBSD main and illumos take buckets from the head, as our list does, so they
    agree bucket for bucket whatever the fill; 2019 reclaimed from the tail (a
    documented simplification), so its walks use full buckets only."""
    run_trace(policy, trace)


# --- once through the consumer API ----------------------------------------------------


class Observed:
    """Reads the arena's list before and after a consumer operation."""

    def __init__(self, uma: Uma) -> None:
        self.uma = uma

    def snap(self) -> tuple[int, int, int]:
        u = self.uma
        return int(u.view("uz_full_cnt")[Z]), int(u.view("uz_full_items")[Z]), int(u.view("uz_nfill")[Z])


def test_consumer_operations_report_the_kernel_events() -> None:
    """CPU 0 allocates and frees through uma_zalloc/uma_zfree's real paths, a per-CPU
    flush goes through the safe protocol, the callout ticks: the model gets the events
    the list shows (a push of c by a free: put; a fill: miss; a pop: get; a flush: two
    ws=false puts), and after every operation the arena's FreeBSD state must equal the
    model's -- so zone.py reports each event with the right kind."""
    uma = Uma.create(UmaConfig(ncpus=1, nmbclusters=4096))
    try:
        cpu = uma.cpu(0)
        callout = TrimCallout(uma, "wss", zones=(Z,))
        model = UmaZoneDomainMain(BS, BS)
        obs = Observed(uma)
        held: list[int] = []

        def check(where: str) -> None:
            want = (model.uzd_nitems, model.uzd_imax, model.uzd_imin, model.uzd_bimin, model.uzd_wss,
                    model.uzd_limin, model.uzd_timin)
            got = tuple(int(uma.view(n)[Z]) for n in ("uzd_nitems", "uzd_imax", "uzd_imin", "uzd_bimin",
                                                      "uzd_wss", "uzd_limin", "uzd_timin"))
            assert got == want, f"{where}: {got} != {want}"
            assert model.uzd_nitems == int(uma.view("uz_full_items")[Z])

        def alloc(n: int) -> None:
            for _ in range(n):
                cnt0, items0, fills0 = obs.snap()
                held.append(cpu.zalloc(Z, M_WAITOK))
                cnt1, items1, fills1 = obs.snap()
                if fills1 > fills0:  # filled from the keg, pushed, popped by this CPU
                    assert (cnt1, items1) == (cnt0, items0)
                    ab = int(uma.view("uc_allocbucket")[Z * uma.geometry.rows])
                    model.cache_alloc_new(int(uma.view("ub_cnt")[ab]) + 1)
                elif cnt1 == cnt0 - 1:
                    assert model.zone_fetch_bucket(False) == items0 - items1
                else:
                    assert (cnt1, items1) == (cnt0, items0)
                check(f"alloc {len(held)}")

        def free(n: int) -> None:
            for _ in range(n):
                cnt0, items0, _ = obs.snap()
                cpu.zfree(Z, held.pop())
                cnt1, items1, _ = obs.snap()
                if cnt1 == cnt0 + 1:
                    model.zone_put_bucket(items1 - items0, True)
                else:
                    assert (cnt1, items1) == (cnt0, items0)
                check("free")

        def flush() -> None:
            rows = uma.geometry.rows
            counts = [int(uma.view("ub_cnt")[b]) for b in (int(uma.view("uc_allocbucket")[Z * rows]),
                                                            int(uma.view("uc_freebucket")[Z * rows])) if b >= 0]
            uma.request_cache_drain([0], 1 << Z)
            cpu.serve()
            for c in counts:  # cache_drain: alloc bucket, then free bucket; empties to the empty list
                model.zone_put_bucket(c, False)
            check("flush")

        def tick() -> None:
            done = [t.done for t in callout.tick()]
            got = (sum(d.get("buckets", 0) for d in done), any(d.get("keg_drains", 0) for d in done))
            assert got == model.zone_timeout()
            check("tick")

        def lowmem() -> None:
            done = [t.done for t in callout.vm_lowmem()]
            got = (sum(d.get("buckets", 0) for d in done), any(d.get("keg_drains", 0) for d in done))
            assert got == model.zone_reclaim(False)
            check("lowmem")

        for burst in (1500, 700, 2000, 300):
            alloc(burst)
            tick()
            free(burst)
            tick()
        flush()
        alloc(900)
        free(400)
        lowmem()
        free(500)
        for _ in range(50):
            tick()
        alloc(1000)
        flush()
        lowmem()
        free(1000)
        report = uma.audit([])
        assert report.ok, report.summary_lines()
        assert model.uzd_wss > 0 and held == []
    finally:
        uma.close()


def test_the_observation_exposes_the_kernel_state() -> None:
    arena = ArenaZone("wss")
    try:
        for _ in range(6):
            arena.put(BS)
        for _ in range(4):
            arena.get()
        ticks = arena.callout.tick()
        o = ticks[0].observation
        assert (o.wss, o.ws_imax, o.ws_bimin, o.cached, o.buckets) == (
            arena.arr("uzd_wss"), arena.arr("uzd_imax"), arena.arr("uzd_bimin"), 2 * BS, 2)
        assert o.wss == 4 * BS and (o.imax, o.bimin) == (6 * BS, 2 * BS)
        assert arena.uma.view("uz_count")[Z] == o.bucket_size
        lm = arena.callout.vm_lowmem()[0]
        assert lm.lowmem and lm.decision.reclaim_to == lm.observation.wss and lm.decision.shrink_bucket
    finally:
        arena.close()


def test_drain_helpers_are_reclaims() -> None:
    """Every way a bucket leaves the list other than an allocation is a reclaim: after
    zone_drain, zone_trim and the apply of a drain, the batch minimum moved with it."""
    arena = ArenaZone("none")
    try:
        for _ in range(5):
            arena.put(BS)
        arena.m.zone_trim(Z, 2)
        assert (arena.arr("uzd_imax") - arena.arr("uzd_bimin"), arena.arr("uz_imax") - arena.arr("uz_bimin")) == (0, 0)
        arena.uma.zone_drain(Z)
        assert arena.arr("uzd_nitems") == 0 and arena.arr("uzd_imax") == 0 and arena.arr("ml_total") == 0
    finally:
        arena.close()
