"""What one run produced: the value the engine returns and the documents layer writes.

``stress.engine.manager.Manager.run()`` fills a :class:`RunOutcome` from the arena
before it is unmapped; ``stress.documents.run_document(cfg, outcome)`` turns it into
run.json.  Plain values only (numbers, strings, lists, dicts): no arena view, no process
handle, nothing that ties a reader to the engine.  This module sits below both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class WorkerRecord:
    """How one simulated CPU's process ended (run.json ``workers``, ``stop``)."""

    cpu: int
    pid: int | None
    core: int
    exitcode: int | None
    killed_asleep: bool = False  #: SIGKILLed asleep in zonelimit at the stop (its sleep cannot be woken)
    killed_stuck: bool = False  #: SIGKILLed after the stop grace (blocked on a dead holder's lock)


@dataclass
class RunOutcome:
    """Everything a run.json says beyond the configuration (docs/results-format.md)."""

    duration_s: float  #: wall time from the fork to the stop
    verdict: str  #: stress.audit.VERDICTS
    exit_code: int  #: the verdict's code, or 130 / 143 after a signal
    verdict_detail: str  #: the verdict in one sentence (interrupted: "interrupted at 2.4 s of 20 s by SIGINT")
    audit: dict[str, Any]  #: the run.json ``audit`` block (stress.audit.audit_block)
    start_method: str  #: multiprocessing start method of the workers
    mapping: dict[int, int] = field(default_factory=dict)  #: simulated CPU -> core
    per_cpu_ops: list[int] = field(default_factory=list)  #: consumer calls per CPU
    stats: dict[str, Any] = field(default_factory=lambda: {"zones": [], "netstat": {}})  #: Stats.to_dict()
    peak: dict[str, int] = field(default_factory=dict)  #: high-water marks of the samples
    wedge: dict[str, Any] | None = None  #: the watchdog's Wedge.to_dict()
    stall: dict[str, Any] | None = None  #: the watchdog's (or the manager's) Stall.to_dict()
    audit_verdict: str | None = None  #: what the audit found, when the verdict is not the audit's own
    audit_detail: str | None = None  #: ... in one sentence
    planned_s: float = 0.0  #: the planned length (--duration, or the rounds)
    locks: list[dict[str, Any]] = field(default_factory=list)  #: LOCK_PROFILING rows
    rounds: list[dict[str, Any]] = field(default_factory=list)  #: netstat -m numbers after each round
    stop_reason: str = "completed"  #: completed, wedged, stalled, worker died, panic, interrupted
    signal: str | None = None  #: the signal that stopped the run
    signal_at_s: float | None = None  #: seconds into the run when it came
    workers_gone_s: float | None = None  #: seconds from the signal until every worker was reaped
    startup_s: float | None = None  #: seconds from the fork until every CPU stood at the start line
    killed_mid_operation: list[int] = field(default_factory=list)  #: CPUs whose hands the audit set aside
    workers: list[WorkerRecord] = field(default_factory=list)
    counters: dict[str, int] | None = None  #: the workload's wl_stat totals (None: no arena)
    audit_lines: list[str] | None = None  #: the allocator's own audit summary
    trim: dict[str, Any] | None = None  #: what the trimming callout did
    schedule: dict[str, Any] | None = None  #: what the scheduler did (not in free mode)
    profile: list[str] = field(default_factory=list)  #: py-spy's summary lines
    error: str | None = None  #: the tester's failure, with a worker's traceback
    noise: dict[str, Any] | None = None  #: others' load on the run's cores (stress.engine.noise)
    #: run.json host.pinning: CPU map, leased cores, topology (stress.engine.leases.pinning_record)
    pinning: dict[str, Any] | None = None
