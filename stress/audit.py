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

Verdict precedence, most telling first: ``error`` (the tester failed: no verdict on the
allocator) > ``wedged`` (the symptom users saw) > ``double-free`` > ``corrupt`` >
``lock-order`` > ``leak`` > ``ok``.  A wedge with lost clusters is reported as wedged,
and the audit block says why it wedged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from stress.options import EX_FAIL, EX_OK, EX_TESTER

VERDICTS = ("ok", "wedged", "leak", "double-free", "corrupt", "lock-order", "error")
EXIT_CODES = {"ok": EX_OK, "error": EX_TESTER}  # every other verdict: EX_FAIL (the system under test failed)

# allocator panic kinds (allocator.layout.PANIC_NAMES) by the verdict they mean
_DOUBLE = ("Duplicate free", "Duplicate alloc")
_POISON = ("Memory modified after free",)
_CORRUPT = ("Bad packet in dtor", "Empty bucket on the full list")


def exit_code(verdict: str) -> int:
    """cli.md: 0 ok, 3 the tester failed, 1 any failure of the system under test."""
    return EXIT_CODES.get(verdict, EX_FAIL)


@dataclass(frozen=True)
class Assessment:
    """The verdict, its exit code, the run.json ``audit`` block and a one-line reason."""

    verdict: str
    exit_code: int
    block: dict[str, Any]
    reason: str


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
    if report.double_owned:
        block["double_owned_examples"] = list(report.double_owned_examples[:10])
    if report.counter_drift:
        block["counters"] = report.counters
    if panics:
        block["panics"] = [{"kind": p.kind, "zone": p.zone, "item": int(p.item), "cpu": int(p.cpu)}
                           for p in panics[:20]]
    return block


def assess(report: Any, *, payload_errors: int = 0, panics: Sequence[Any] = (), wedged: bool = False,
           lock_order_findings: int = 0, error: str | None = None) -> Assessment:
    """Decide the verdict of a run (precedence in the module docstring)."""
    block = audit_block(report, payload_errors, panics)
    kinds = [p.kind for p in panics]
    lost = (block["lost"]["mbuf"] or 0) + (block["lost"]["cluster"] or 0)
    if error:
        verdict, reason = "error", error.strip().splitlines()[0] if error.strip() else "tester error"
    elif wedged:
        verdict, reason = "wedged", "CPUs asleep in zonelimit made no progress"
        if lost:
            reason += f"; {block['lost']['cluster']} clusters lost to the refcount race"
        stranded = block["stranded"]["clusters_in_packet_cache"] or 0
        if stranded:
            reason += f"; {stranded} clusters stranded in the packet zone"
    elif any(k in _DOUBLE for k in kinds) or (block["double_owned"] or 0):
        verdict, reason = "double-free", f"{block['double_owned'] or 0} items double-owned, " \
                                         f"{sum(k in _DOUBLE for k in kinds)} duplicate-free panics"
    elif (block["poison_errors"] or payload_errors or any(k in _CORRUPT for k in kinds)
          or block.get("refcount_errors") or block.get("counter_drift")):
        verdict = "corrupt"
        reason = (f"{block['poison_errors']} poison errors, {payload_errors} payload errors, "
                  f"{block.get('refcount_errors', 0)} refcount errors, counter drift {block.get('counter_drift', 0)}")
    elif lock_order_findings:
        verdict, reason = "lock-order", f"{lock_order_findings} lock-order findings (WITNESS)"
    elif lost:
        verdict, reason = "leak", f"{block['lost']['cluster']} clusters and {block['lost']['mbuf']} mbufs lost"
    elif report is None:
        verdict, reason = "error", "the audit could not walk the arena"
    else:
        verdict, reason = "ok", "every item accounted for"
    return Assessment(verdict, exit_code(verdict), block, reason)
