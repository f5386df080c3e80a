"""Differential test of the two implementations (issue 15): the compiled hot modules and
the interpreted ones, driven with the same seeded single-process operation sequences,
must leave byte-identical arenas, equal statistics and equal audits after every step.

One process, two arenas side by side (``Uma.create(cfg, compiled=...)``), two CPU
contexts each plus the manager's drains and trims, and a configuration drawn per example
(INVARIANTS, the 2005 refcount test, wakeup, bucket caches, the c. 2007 exhaustion drain,
the single-process injections, the lock implementation: plain, sched-hooked, WITNESS-hooked
or spinning).  Allocations are M_NOWAIT (one process cannot sleep in
zonelimit), with small limits so the FULL bypass, failed allocations and the packet zone's
zinit failures are reached.  A ``hold`` step compares the arenas while a lock is held
(the owner words, written with C release stores when compiled).  Whole-arena comparison
includes every allocator array and every payload byte (INVARIANTS poison), so a
difference anywhere is a failure, with the first differing array named.

Skipped when the compiled modules were not built; ``ZONELIMIT_REQUIRE_COMPILED=1`` (tox.ini
sets it for every env) turns that skip into a failure.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from allocator import LOCK_NAMES, M_NOWAIT, ZONE_CLUSTER, ZONE_MBUF, ZONE_PACKET, Uma, UmaConfig, UmaPanic
from allocator.implementation import compiled_available
from allocator.layout import NLOCKS
from allocator.lock import P_DRAIN
from allocator.policy import Decision

if not compiled_available():
    if os.environ.get("ZONELIMIT_REQUIRE_COMPILED", "") not in ("", "0"):
        raise RuntimeError("ZONELIMIT_REQUIRE_COMPILED is set but the compiled allocator is not available")
    pytest.skip("the compiled allocator is not built (pip install . with a C compiler)", allow_module_level=True)

CONFIGS = st.fixed_dictionaries({
    "invariants": st.booleans(),
    "refcount": st.sampled_from(["atomic", "buggy-eq0"]),
    "wakeup": st.sampled_from(["one", "all"]),
    "bucket_cache": st.booleans(),
    "exhaustion_drain": st.booleans(),
    "nmbclusters": st.sampled_from([16, 64, 300]),
    "inject": st.sampled_from([frozenset(), frozenset({"stats-unlocked"}), frozenset({"refcount-unlocked"}),
                               frozenset({"refcount-eq0"})]),
    "lock_mode": st.sampled_from(["plain", "sched", "hooks", "spin"]),
})

# (name, cpu, argument): the argument picks among held mbufs, or is a count.
OPS = st.tuples(
    st.sampled_from(["m_get", "m_gethdr", "m_getcl", "m_clget", "m_copym", "m_freem", "m_free", "cluster",
                     "cluster_free", "serve", "drain_request", "zone_drain", "trim", "prefill", "observe", "hold"]),
    st.integers(0, 1),
    st.integers(0, 1 << 16),
)


class Pair:
    """The two allocators and the one model of what the consumer holds."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        cfg = dict(cfg)
        mode = cfg.pop("lock_mode", "plain")
        ucfg = UmaConfig(ncpus=2, sched_locks=mode == "spin", **cfg)
        self.umas = [Uma.create(ucfg, compiled=True), Uma.create(ucfg, compiled=False)]
        assert self.umas[0].compiled and not self.umas[1].compiled
        for u in self.umas:
            for ctx in (u.cpu(0), u.cpu(1), u.manager()):
                if mode == "sched":  # --sched jitter with P=0: a sched point that does nothing
                    ctx.sched_point = _no_point
                elif mode == "hooks":
                    ctx.lock_hooks = (_no_hook_acquire, _no_hook_release)
                ctx.instrument()
        self.held: list[int] = []  # mbufs (chains of one) the consumer holds
        self.clusters: list[int] = []  # bare clusters the consumer holds

    def close(self) -> None:
        for u in self.umas:
            u.close()

    def both(self, fn: Any) -> Any:
        """Run ``fn(uma)`` on each; the results (or the exceptions) must agree."""
        out = []
        for u in self.umas:
            try:
                out.append(("ok", fn(u)))
            except UmaPanic as e:
                out.append(("panic", str(e)))
        assert out[0] == out[1], f"compiled {out[0]} != interpreted {out[1]}"
        if out[0][0] == "panic":
            raise _Stop(out[0][1])
        return out[0][1]

    def step(self, op: str, k: int, arg: int) -> None:
        def pick(items: list[int]) -> int:
            return items.pop(arg % len(items))

        if op in ("m_get", "m_gethdr", "m_getcl"):
            m = self.both(lambda u: getattr(u.cpu(k), op)(M_NOWAIT))
            if m >= 0:
                self.held.append(m)
        elif op == "m_clget" and self.held:
            m = self.held[arg % len(self.held)]
            if self.umas[0].view("m_ext")[m] < 0:
                self.both(lambda u: u.cpu(k).m_clget(m, M_NOWAIT))
        elif op == "m_copym" and self.held:
            m = self.held[arg % len(self.held)]
            n = self.both(lambda u: u.cpu(k).m_copym(m, M_NOWAIT))
            if n >= 0:
                self.held.append(n)
        elif op in ("m_freem", "m_free") and self.held:
            m = pick(self.held)
            self.both(lambda u: getattr(u.cpu(k), op)(m))
        elif op == "cluster":
            c = self.both(lambda u: u.cpu(k).zalloc(ZONE_CLUSTER, M_NOWAIT, -1))
            if c >= 0:
                self.clusters.append(c)
        elif op == "cluster_free" and self.clusters:
            c = pick(self.clusters)
            self.both(lambda u: u.cpu(k).zfree(ZONE_CLUSTER, c))
        elif op == "serve":
            self.both(lambda u: u.cpu(k).serve())
        elif op == "drain_request":
            self.both(lambda u: u.request_cache_drain([k], 1 + arg % 7))
        elif op == "zone_drain":
            self.both(lambda u: u.zone_drain(arg % 3))
        elif op == "trim":
            self.both(lambda u: u.apply(arg % 3, Decision(drain_buckets=1 + arg % 3, keg_drain=bool(arg & 8))))
        elif op == "prefill":
            self.both(lambda u: u.apply(ZONE_PACKET if arg & 1 else ZONE_MBUF, Decision(prefill_buckets=1)))
        elif op == "observe":
            self.both(lambda u: u.observe(arg % 3, lowmem=bool(arg & 4)))
        elif op == "hold":
            i = arg % NLOCKS
            self.both(lambda u: u.cpu(k).lock(i, P_DRAIN))
            try:
                self.check()
                assert self.umas[0].lock_holders() == self.umas[1].lock_holders() == [(LOCK_NAMES[i], k)]
            finally:
                self.both(lambda u: u.cpu(k).unlock(i))

    def check(self) -> None:
        """Byte-identical arenas, equal statistics, equal audits."""
        a, b = (u.arena for u in self.umas)
        assert a.layout.size == b.layout.size
        if a.mm[:a.layout.size] != b.mm[:b.layout.size]:
            for name, (off, spec) in a.layout.offsets.items():
                if a.mm[off:off + spec.nbytes] != b.mm[off:off + spec.nbytes]:
                    pytest.fail(f"arena array {name} differs between compiled and interpreted")
            pytest.fail("arena payload bytes differ between compiled and interpreted")
        assert self.umas[0].stats().to_dict() == self.umas[1].stats().to_dict()
        held = list(self.held)
        assert self.umas[0].audit(held) == self.umas[1].audit(held)


def _no_point(label: str) -> None:
    """A sched point that does nothing (the instrumented lock path, nothing else)."""


def _no_hook_acquire(lock_id: int, point: str) -> None:
    """A WITNESS-style acquire hook that does nothing."""


def _no_hook_release(lock_id: int) -> None:
    """A WITNESS-style release hook that does nothing."""


class _Stop(Exception):
    """Both allocators panicked the same way: the sequence ends there (a kernel would)."""


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=CONFIGS, ops=st.lists(OPS, min_size=1, max_size=60))
def test_compiled_and_interpreted_agree_after_every_step(cfg: dict[str, Any], ops: list[Any]) -> None:
    pair = Pair(cfg)
    try:
        pair.check()
        for op in ops:
            try:
                pair.step(*op)
            except _Stop:
                pair.check()
                return
            pair.check()
    finally:
        pair.close()


def test_the_differential_check_can_fail() -> None:
    """A planted difference (one refcount changed in the compiled arena) is caught."""
    pair = Pair({"nmbclusters": 300})
    try:
        m = pair.both(lambda u: u.cpu(0).m_getcl(M_NOWAIT))
        pair.held.append(m)
        pair.check()
        c = pair.umas[0].view("m_ext")[m]
        pair.umas[0].view("cl_ref")[c] += 1
        with pytest.raises(pytest.fail.Exception, match="cl_ref differs"):
            pair.check()
    finally:
        pair.close()


@pytest.mark.parametrize("invariants", [False, True])
def test_compiled_calls_the_same_sched_points_as_interpreted(invariants: bool) -> None:
    """With a sched point installed, the compiled fast path calls it where the interpreted
    one does, in the same order (the window of 2005, bucket swaps, every lock); the only
    difference is the refcount's stripe lock, which compiled code does not take (its
    fetchadd is a hardware atomic)."""
    seen: dict[bool, list[str]] = {}
    for compiled in (True, False):
        u = Uma.create(UmaConfig(ncpus=2, nmbclusters=300, refcount="buggy-eq0", invariants=invariants),
                       compiled=compiled)
        try:
            labels: list[str] = []
            cpu = u.cpu(0)
            cpu.sched_point = labels.append
            cpu.instrument()
            for _ in range(200):
                m = cpu.m_getcl(M_NOWAIT)
                n = cpu.m_copym(m)
                cpu.m_freem(n)
                cpu.m_freem(m)
                held = [cpu.m_get(M_NOWAIT) for _ in range(40)]
                for h in held:
                    cpu.m_freem(h)
            seen[compiled] = labels
        finally:
            u.close()
    assert seen[True].count("refcount test") == 200
    assert seen[True] == [label for label in seen[False] if "refcnt stripe" not in label]


@pytest.mark.parametrize("compiled", [True, False])
def test_the_fast_path_calls_the_hook_installed_at_the_last_instrument(compiled: bool) -> None:
    """FastPath keeps the sched point ``Cpu.instrument()`` found (one call, no look-up on
    the context per point): a hook installed and instrumented replaces the previous one,
    and the allocator's own no-op, reinstalled, means no sched point at all."""
    u = Uma.create(UmaConfig(ncpus=2, nmbclusters=300, refcount="buggy-eq0"), compiled=compiled)
    try:
        cpu = u.cpu(0)
        first: list[str] = []
        second: list[str] = []

        def pair() -> None:
            m = cpu.m_getcl(M_NOWAIT)
            cpu.m_freem(cpu.m_copym(m))
            cpu.m_freem(m)

        default = cpu.sched_point
        cpu.sched_point = first.append
        cpu.instrument()
        pair()
        cpu.sched_point = second.append
        cpu.instrument()
        pair()
        cpu.sched_point = default
        cpu.instrument()
        pair()
        assert first.count("refcount test") == 1
        assert second.count("refcount test") == 1
    finally:
        u.close()


# A caller's bad index (zone, item, mbuf): (what, call on a CPU, geometry -> arguments).
BAD_CALLS = [
    ("zone number past the last zone", "zalloc", lambda g: (3, M_NOWAIT, -1)),
    ("zone number far past", "zfree", lambda g: (1 << 20, 0)),
    ("packet item past the mbufs", "zfree", lambda g: (ZONE_PACKET, g.nmbufs + 3)),
    ("cluster ctor's mbuf past the mbufs", "zalloc", lambda g: (ZONE_CLUSTER, M_NOWAIT, g.nmbufs + 7)),
    ("m_freem of an mbuf past the last", "m_freem", lambda g: (g.nmbufs,)),
    ("m_copym of an mbuf past the last", "m_copym", lambda g: (g.nmbufs + 100, M_NOWAIT)),
    ("m_free of an mbuf past the last", "m_free", lambda g: (g.nmbufs * 2,)),
    ("refcount of a cluster past the last", "_ref_add", lambda g: (g.nclusters + 1, 1, 11)),
]


@pytest.mark.parametrize("what,method,args", BAD_CALLS, ids=[b[0] for b in BAD_CALLS])
def test_a_bad_index_from_a_caller_raises_in_both_modes_and_writes_nothing_apart(
        what: str, method: str, args: Any) -> None:
    """Compiled, the fast path's arena accesses stay bounds-checked (docs/performance.md
    "Two modes": turning the checks off gained nothing measurable), so an index a caller
    gets wrong raises IndexError as the interpreted memoryviews do, at the same point:
    both arenas are still byte-identical afterwards (nothing written out of bounds, and
    no refcount stripe lock left held by the interpreted read-modify-write)."""
    pair = Pair({"nmbclusters": 300})
    try:
        for k in (0, 1):  # warm caches: the fast paths, not only the slow ones
            held = [pair.both(lambda u, k=k: u.cpu(k).m_getcl(M_NOWAIT)) for _ in range(3)]
            for m in held:
                pair.both(lambda u, m=m, k=k: u.cpu(k).m_freem(m))
        g = pair.umas[0].geometry
        for u in pair.umas:
            with pytest.raises(IndexError):
                getattr(u.cpu(0), method)(*args(g))
        pair.check()
    finally:
        pair.close()
