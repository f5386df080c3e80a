"""Model-based test: a hypothesis RuleBasedStateMachine drives the allocator (two CPU
contexts in one process) against a plain Python model of who holds which mbuf and
which cluster, and checks conservation after every step: the audit accounts for
every item, and netstat -m agrees with the model."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from allocator import M_NOWAIT, ZONE_CLUSTER, ZONE_MBUF, ZONE_PACKET, Uma, UmaConfig
from allocator.policy import Decision

CPUS = st.integers(0, 1)


class AllocatorMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.uma = Uma.create(UmaConfig(ncpus=2, nmbclusters=2048, invariants=True))
        self.cpus = [self.uma.cpu(0), self.uma.cpu(1)]
        self.held: dict[int, int] = {}  # mbuf -> cluster (-1 none), the model

    def teardown(self) -> None:
        self.uma.close()

    def _add(self, m: int, cl: int) -> None:
        assert m >= 0 and m not in self.held
        self.held[m] = cl

    @rule(cpu=CPUS)
    def m_get(self, cpu: int) -> None:
        m = self.cpus[cpu].m_get(M_NOWAIT)
        if m >= 0:
            self._add(m, -1)

    @rule(cpu=CPUS)
    def m_getcl(self, cpu: int) -> None:
        m = self.cpus[cpu].m_getcl(M_NOWAIT)
        if m >= 0:
            cl = self.uma.view("m_ext")[m]
            assert cl >= 0 and cl not in self.held.values()
            self._add(m, cl)

    @rule(cpu=CPUS)
    def m_gethdr_clget(self, cpu: int) -> None:
        c = self.cpus[cpu]
        m = c.m_gethdr(M_NOWAIT)
        if m < 0:
            return
        if c.m_clget(m, M_NOWAIT):
            self._add(m, self.uma.view("m_ext")[m])
        else:
            self._add(m, -1)

    @precondition(lambda self: any(cl >= 0 for cl in self.held.values()))
    @rule(cpu=CPUS, data=st.data())
    def m_copym(self, cpu: int, data: st.DataObject) -> None:
        m = data.draw(st.sampled_from(sorted(k for k, v in self.held.items() if v >= 0)))
        n = self.cpus[cpu].m_copym(m)
        if n >= 0:
            self._add(n, self.held[m])

    @precondition(lambda self: self.held)
    @rule(cpu=CPUS, data=st.data())
    def m_freem(self, cpu: int, data: st.DataObject) -> None:
        """Free on either CPU: the one that allocated or the other one."""
        m = data.draw(st.sampled_from(sorted(self.held)))
        self.cpus[cpu].m_freem(m)
        del self.held[m]

    @rule(cpu=CPUS)
    def drain_percpu(self, cpu: int) -> None:
        self.uma.request_cache_drain([cpu])
        self.cpus[cpu].serve()
        assert self.uma.cache_drain_done([cpu])

    @rule(z=st.sampled_from([ZONE_MBUF, ZONE_CLUSTER, ZONE_PACKET]))
    def zone_drain(self, z: int) -> None:
        self.uma.zone_drain(z)

    @rule(n=st.integers(0, 3))
    def packet_trim_and_prefill(self, n: int) -> None:
        self.uma.apply(ZONE_PACKET, Decision(drain_buckets=n, prefill_buckets=3 - n))

    @invariant()
    def conservation(self) -> None:
        rep = self.uma.audit(self.held.keys())
        assert rep.ok, rep.summary_lines()
        s = self.uma.stats()
        assert s.netstat.mbufs_current == len(self.held)
        clusters = {cl for cl in self.held.values() if cl >= 0}
        assert s.netstat.clusters_current == len(clusters)
        assert rep.clusters_in_use == len(clusters)
        for cl in clusters:
            refs = sum(1 for v in self.held.values() if v == cl)
            assert self.uma.view("cl_ref")[cl] == refs
        assert self.uma.panics() == []


AllocatorMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=40, deadline=None)
TestAllocatorModel = AllocatorMachine.TestCase
