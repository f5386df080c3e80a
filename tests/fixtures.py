"""Documents for tests: complete, schema-valid run.json documents built by the writer itself.

A test that needs a saved run builds its run.json with :func:`run_doc` (through
``stress.documents.run_document``, as a real run does) and overrides what it is about, so
the document passes run.schema.json like every document the suite writes
(tests/conftest.py checks them).
"""

from __future__ import annotations

from typing import Any

from stress.config import RunConfig
from stress.documents import run_document
from stress.outcome import RunOutcome, WorkerRecord


def zone_rows(used: int = 5, cluster_limit: int = 1024) -> list[dict[str, int | str]]:
    """vmstat -z rows of the three mbuf zones."""
    return [
        {"name": "mbuf", "size": 256, "limit": 0, "used": used, "free": 90, "req": 9000, "fail": 0, "sleep": 0},
        {"name": "mbuf_cluster", "size": 2048, "limit": cluster_limit, "used": 30, "free": 2, "req": 8000,
         "fail": 0, "sleep": 0},
        {"name": "mbuf_packet", "size": 256, "limit": 0, "used": 12, "free": 7, "req": 7000, "fail": 0, "sleep": 0},
    ]


def outcome(cfg: RunConfig, **changes: Any) -> RunOutcome:
    """A plausible outcome of ``cfg`` that ended ok; ``changes`` override its fields."""
    values: dict[str, Any] = {
        "duration_s": cfg.duration, "verdict": "ok", "exit_code": 0,
        "verdict_detail": "the run completed and every audit passed",
        "audit": {"items_accounted": 3000, "lost": {"mbuf": 0, "cluster": 0},
                  "stranded": {"clusters_in_packet_cache": 0}, "double_owned": 0, "poison_errors": 0,
                  "payload_errors": 0},
        "start_method": "fork", "mapping": {k: k % 2 for k in range(cfg.cpus)},
        "per_cpu_ops": [1000] * cfg.cpus,
        "stats": {"zones": zone_rows(cluster_limit=cfg.nmbclusters),
                  "netstat": {"mbufs": {"current": 17, "cache": 97, "total": 114},
                              "clusters": {"current": 30, "cache": 2, "total": 32, "max": cfg.nmbclusters},
                              "packets": {"current": 12, "cache": 7}}},
        "peak": {"clusters_current": 30, "clusters_total": 32, "packet_cache": 7, "mbufs_current": 20},
        "workers": [WorkerRecord(k, 1000 + k, k % 2, 0) for k in range(cfg.cpus)],
        "counters": {"packets": 500},
    }
    values.update(changes)
    return RunOutcome(**values)


def run_doc(cfg: RunConfig | None = None, *, outcome_changes: dict[str, Any] | None = None,
            **changes: Any) -> dict[str, Any]:
    """A complete run.json document of ``cfg`` (default: 2 CPUs, 2 s), written by the
    project's own builder; ``changes`` replace top-level keys afterwards."""
    cfg = cfg or RunConfig(cpus=2, duration=2.0)
    doc = run_document(cfg, outcome(cfg, **(outcome_changes or {})), None)
    doc.update(changes)
    return doc
