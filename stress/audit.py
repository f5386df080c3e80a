"""From the allocator's conservation audit to a verdict: ok, wedged, leak, double-free, ...

The allocator's ``uma.audit(held_mbufs)`` walks the arena and accounts for every mbuf
and cluster (allocator/audit.py).  This module adds what only the tester knows -- the
payload errors its consumers counted, whether the watchdog saw a wedge, whether a
worker died -- and turns it all into the one verdict of run.json (cli.md) and the
``audit`` block a person reads.

The distinction the project exists for (uma.md, "The incident"):

- **lost** clusters are the true leak: referenced by nobody, neither free nor cached
  (the 2005 refcount race leaves them with refcount 0);
- **stranded** clusters are the pseudo-leak: attached to packets cached in the packet
  zone, counted "in use" by netstat -m although nobody uses them.

Stranded clusters are reported but are not a failure on their own: they are what a
trimming policy is judged on, not a defect.

Verdict precedence, most telling first: ``interrupted`` (a signal cut the run: exit
130 or 143 whatever was found) > ``error`` (the tester failed: a worker raised or died)
> ``stalled`` (a CPU neither progressed nor slept on a known wait channel, or the
manager could not take a lock in time: the tester's problem, exit 3) > ``wedged`` (the
symptom users saw) > ``double-free`` > ``corrupt`` > ``lock-order`` > ``leak`` >
``ok``.  A wedge with lost clusters is reported as wedged, and the audit block says why
it wedged.  When the verdict is not the audit's own (interrupted, error, stalled), what
the audit found is kept beside it as ``audit_verdict``: the partial run's audit.

A CPU killed mid-operation (a stalled or stuck CPU SIGKILLed at the stop, a worker that
died) may have held items no array records yet: a bucket in the middle of an exchange
and the items of one consumer operation.  The allocator's audit sets up to
:data:`KILLED_HAND` of each kind per killed CPU aside as "in the hands of a killed CPU"
(``AuditReport.set_aside``), so such a kill never reads as LOST or CORRUPT.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from allocator.layout import BUCKET_MAX
from stress.options import EX_FAIL, EX_OK, EX_SIGINT, EX_SIGTERM, EX_TESTER

VERDICTS = ("ok", "wedged", "leak", "double-free", "corrupt", "lock-order", "stalled", "error", "interrupted")
#: every other verdict: EX_FAIL (the system under test failed); interrupted: by its signal
EXIT_CODES = {"ok": EX_OK, "error": EX_TESTER, "stalled": EX_TESTER}
SIGNAL_EXIT = {"SIGINT": EX_SIGINT, "SIGTERM": EX_SIGTERM}  #: an interrupted run's exit code, by signal

#: What one CPU killed mid-operation may hold outside every record, per kind of finding
#: (lost mbufs, lost clusters, double-owned items, refcount errors, counter drift).  A
#: workload records every mbuf in an arena ring before its next allocator call that may
#: sleep, and the allocator keeps a bucket it fills or drains in uc_fillbucket; what is
#: in flight between those records is (1) one bucket being exchanged between a CPU's
#: cache and the zone's lists (``_zfree_slow`` takes the full free bucket off the CPU
#: before it links it on the list, ``_zalloc_slow`` the other way round): up to
#: BUCKET_MAX items, in neither place or in both for that instant, and (2) one consumer
#: operation: an mbuf, its m_copym and their cluster, an item popped and not yet
#: counted, a free done and its ring entry not yet advanced.  That is BUCKET_MAX plus at
#: most two of each; measured: a CPU stopped holding the mbuf keg lock in the middle of
#: a bucket exchange held 128 mbufs (benchmarks/stop_trials.py, lock-holder scenarios).
#: A real leak smaller than this in a run that killed a CPU cannot be told from what
#: the CPU held: such a run's verdict is the tester's anyway (stalled, error,
#: interrupted), and the audit says how much it set aside.
KILLED_HAND = BUCKET_MAX + 4

# allocator panic kinds (allocator.layout.PANIC_NAMES) by the verdict they mean
_DOUBLE = ("Duplicate free", "Duplicate alloc")
_POISON = ("Memory modified after free",)
_CORRUPT = ("Bad packet in dtor", "Empty bucket on the full list")


def exit_code(verdict: str) -> int:
    """cli.md: 0 ok, 3 the tester failed, 1 any failure of the system under test."""
    return EXIT_CODES.get(verdict, EX_FAIL)


@dataclass(frozen=True)
class Assessment:
    """The verdict, its exit code, the run.json ``audit`` block and a one-line reason;
    ``audit_verdict`` (and its reason) when the verdict is not the audit's own."""

    verdict: str
    exit_code: int
    block: dict[str, Any]
    reason: str
    audit_verdict: str | None = None
    audit_reason: str | None = None


def audit_block(report: Any, payload_errors: int, panics: Sequence[Any]) -> dict[str, Any]:
    """The run.json ``audit`` block from an ``allocator.AuditReport`` (or None if the walk
    could not run) plus the tester's own counts."""
    poison = sum(1 for p in panics if p.kind in _POISON)
    if report is None:
        return {"items_accounted": None, "lost": {"mbuf": None, "cluster": None},
                "stranded": {"clusters_in_packet_cache": None}, "double_owned": None,
                "poison_errors": poison, "payload_errors": payload_errors, "walked": False}
    packet_cache = report.cached.get("mbuf_packet", {})
    block: dict[str, Any] = {
        "items_accounted": int(report.items_accounted),
        "lost": {"mbuf": int(report.lost_mbufs), "cluster": int(report.lost_clusters)},
        "stranded": {
            "clusters_in_packet_cache": int(report.clusters_stranded),
            "packets_in_percpu_buckets": int(packet_cache.get("percpu", 0)),
            "packets_on_zone_list": int(packet_cache.get("list", 0)),
        },
        "double_owned": int(report.double_owned),
        "poison_errors": poison,
        "payload_errors": int(payload_errors),
        "mbufs": int(report.mbufs),
        "clusters": int(report.clusters),
        "held_by_consumers": {"mbufs": int(report.mbufs_held), "clusters": int(report.clusters_in_use)},
        "free_in_keg": {"mbufs": int(report.mbufs_free_in_keg), "clusters": int(report.clusters_free_in_keg)},
        "refcount_errors": int(report.refcount_errors),
        "counter_drift": int(report.counter_drift),
    }
    if report.lost_clusters:
        block["lost_cluster_examples"] = [
            {"cluster": int(c), "refcount": int(r)}
            for c, r in zip(report.lost_cluster_ids[:10], report.lost_cluster_refcounts[:10], strict=False)]
    hands = getattr(report, "in_killed_hands", None)
    if hands:
        block["in_killed_hands"] = dict(hands)
    if report.double_owned:
        block["double_owned_examples"] = list(report.double_owned_examples[:10])
    if report.counter_drift:
        block["counters"] = report.counters
    if panics:
        block["panics"] = [{"kind": p.kind, "zone": p.zone, "item": int(p.item), "cpu": int(p.cpu)}
                           for p in panics[:20]]
    histories = item_histories(report, panics)
    if histories:
        block["item_histories"] = histories
    return block


#: items whose INVARIANTS history the audit block carries (the first of each finding)
MAX_HISTORIES = 8


def item_histories(report: Any, panics: Sequence[Any]) -> list[dict[str, Any]]:
    """The recorded histories (allocator/history.py) of the first lost and double-owned
    items the audit found and of the items of duplicate free / alloc panics: who
    allocated, freed and referenced each last, at which step.  [] without INVARIANTS."""
    out = [dict(h) for h in getattr(report, "histories", None) or []]
    for p in panics:
        if p.kind in _DOUBLE + _POISON and getattr(p, "history", None):
            keg = "mbuf_cluster" if p.zone == "mbuf_cluster" else "mbuf"
            out.append({"finding": p.kind, "keg": keg, "item": int(p.item), "history": list(p.history)})
    return out[:MAX_HISTORIES]


def assess(report: Any, *, payload_errors: int = 0, panics: Sequence[Any] = (), wedged: bool = False,
           lock_order_findings: int = 0, error: str | None = None, stalled: str | None = None,
           signal: str | None = None, interrupted: str = "") -> Assessment:
    """Decide the verdict of a run (precedence in the module docstring).

    ``error`` and ``stalled`` are the tester's failures in one line or more; ``signal``
    the name of the signal that cut the run (``interrupted``: where, in words)."""
    block = audit_block(report, payload_errors, panics)
    judged, why = _audit_verdict(report, block, payload_errors, panics, wedged, lock_order_findings)
    if error:
        verdict, reason = "error", error.strip().splitlines()[0] if error.strip() else "tester error"
    elif stalled:
        verdict, reason = "stalled", stalled.strip().splitlines()[0]
    else:
        verdict, reason = judged, why
    if signal:
        return Assessment("interrupted", SIGNAL_EXIT.get(signal, EX_SIGINT), block,
                          interrupted or f"interrupted by {signal}", verdict, reason)
    if verdict != judged:
        return Assessment(verdict, exit_code(verdict), block, reason, judged, why)
    return Assessment(verdict, exit_code(verdict), block, reason)


def _findings(counts: list[tuple[int, str, str]], panic_kinds: list[str]) -> str:
    """The reason of a double-free or corrupt verdict: only what was found, panics by
    name ("panic: Empty bucket on the full list"), so the line says which check fired
    and never lists checks that found nothing."""
    parts = [f"panic: {kind}" + (f" (x{panic_kinds.count(kind)})" if panic_kinds.count(kind) > 1 else "")
             for kind in dict.fromkeys(panic_kinds)]
    parts += [f"{n:,} {one if n == 1 else many}" for n, one, many in counts if n]
    return "; ".join(parts)


def _audit_verdict(report: Any, block: dict[str, Any], payload_errors: int, panics: Sequence[Any],
                   wedged: bool, lock_order_findings: int) -> tuple[str, str]:
    """What the watchdog's wedge and the audit say about the allocator, and why."""
    kinds = [p.kind for p in panics]
    lost = (block["lost"]["mbuf"] or 0) + (block["lost"]["cluster"] or 0)
    if wedged:
        reason = "CPUs asleep in zonelimit made no progress"
        if lost:
            reason += f"; {block['lost']['cluster']} clusters lost to the refcount race"
        stranded = block["stranded"]["clusters_in_packet_cache"] or 0
        if stranded:
            reason += f"; {stranded} clusters stranded in the packet zone"
        return "wedged", reason
    if any(k in _DOUBLE for k in kinds) or (block["double_owned"] or 0):
        return "double-free", _findings([(block["double_owned"] or 0, "item double-owned", "items double-owned")],
                                        [k for k in kinds if k in _DOUBLE])
    if (block["poison_errors"] or payload_errors or any(k in _CORRUPT for k in kinds)
            or block.get("refcount_errors") or block.get("counter_drift")):
        return "corrupt", _findings([(block["poison_errors"] or 0, "poison error", "poison errors"),
                                     (payload_errors, "payload error", "payload errors"),
                                     (block.get("refcount_errors") or 0, "refcount error", "refcount errors"),
                                     (block.get("counter_drift") or 0, "counter drift", "counter drift")],
                                    [k for k in kinds if k in _CORRUPT or k in _POISON])
    if lock_order_findings:
        return "lock-order", f"{lock_order_findings} lock-order findings (WITNESS)"
    if lost:
        return "leak", f"{block['lost']['cluster']} clusters and {block['lost']['mbuf']} mbufs lost"
    if report is None:
        return "error", "the audit could not walk the arena"
    return "ok", "every item accounted for"
