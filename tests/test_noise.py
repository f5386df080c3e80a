"""The noise probe (run.json ``noise``): /proc/stat read right, others' share bounded."""

from __future__ import annotations

import time

import pytest

from stress.engine.noise import NoiseProbe, busy_ticks

STAT = """cpu  100 5 50 1000 20 3 2 1 0 0
cpu0 60 5 30 500 10 2 1 1 0 0
cpu1 40 0 20 500 10 1 1 0 0 0
intr 12345
ctxt 999
"""


def test_busy_ticks_counts_user_nice_system_irq_softirq_steal_per_core() -> None:
    # idle (4th) and iowait (5th) are not busy; the "cpu" total line is not a core
    assert busy_ticks(STAT) == {0: 60 + 5 + 30 + 2 + 1 + 1, 1: 40 + 20 + 1 + 1}


def test_busy_ticks_ignores_lines_that_are_not_cores() -> None:
    assert busy_ticks("cpuX 1 2 3\nsoftirq 1 2 3\n") == {}


@pytest.mark.smp  # reads the wall clock
def test_probe_reports_our_cpu_time_and_a_share_between_0_and_1() -> None:
    probe = NoiseProbe()
    end = time.process_time() + 0.05
    while time.process_time() < end:  # burn some CPU of our own
        pass
    doc = probe.finish([0])
    assert doc["cores"] == [0] and doc["own_cpu_s"] > 0
    assert len(doc["loadavg_start"]) == 3 and len(doc["loadavg_end"]) == 3
    assert 0.0 <= doc["others_share"] <= 1.0
    assert doc["others_cpu_s"] >= 0.0 and doc["busy_s"] >= 0.0
