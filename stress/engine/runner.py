"""One run into its folder: the engine's entry point for every command that runs something.

    execute(cfg, folder, echo)
      with run.log (one O_APPEND FileHandler, inherited by the workers) and StopSignals:
        Manager(cfg, folder, echo, signals).run()   -> RunOutcome (the arena is gone)
        NoiseProbe around it                         -> others' load on its cores
        Schedule.save(folder)                        -> schedule.json   (pct, replay)
        documents.run_document(cfg, outcome)         -> run.json        (written atomically)
        plots.plot_run(folder)                       -> plot.png
      -> the run.json document

``run`` (and ``replay``) print around it; ``compare``, ``race`` and ``bench`` call it once
per configuration.  Signals stay deferred until run.json is written, so an interrupted
run still leaves a complete, truthful folder (exit 130 or 143 in it).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stress import documents
from stress.config import RunConfig
from stress.engine.manager import Manager
from stress.engine.noise import NoiseProbe
from stress.engine.stopping import StopSignals
from stress.output import plots
from stress.samples import NETSTAT_TXT, append_netstat

log = logging.getLogger("zonelimit")


@contextmanager
def run_log(folder: Path, verbosity: int) -> Iterator[None]:
    """run.log: one FileHandler in append mode for the manager and every worker.

    The workers inherit it across fork; each record is one write(2) on an O_APPEND
    descriptor, which a SIGKILLed worker cannot tear or stall (docs/runner.md: why not a
    queue).  Nothing is logged on a hot path."""
    handler = logging.FileHandler(Path(folder) / "run.log", mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger("zonelimit")
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbosity > 0 else logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


def execute(cfg: RunConfig, out_dir: Path, echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run ``cfg``, write its folder ``out_dir``, and return the run.json document.

    ``echo`` receives the live lines (netstat -m per interval or per round); None prints
    nothing.
    """
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    start = documents.host_start()  # the load average before the workers start (run.json host)
    with run_log(folder, cfg.verbosity), StopSignals() as signals:
        manager = Manager(cfg, folder, echo, signals)
        probe = NoiseProbe()
        outcome = manager.run()
        outcome.noise = probe.finish(outcome.mapping.values())
        if manager.recorded_schedule is not None:
            try:
                manager.recorded_schedule.save(folder)
            except Exception:  # noqa: BLE001 - a lost schedule must not cost the verdict
                log.error("schedule not saved:\n%s", traceback.format_exc())
        doc = documents.run_document(cfg, outcome, start)
        documents.write_run_json(folder, doc)
        if not (folder / NETSTAT_TXT).exists():
            append_netstat(folder, ["# no netstat -m sample was taken"])
        try:
            plots.plot_run(folder)
        except Exception:  # noqa: BLE001 - a missing plot must not hide the verdict
            log.error("plot failed:\n%s", traceback.format_exc())
        log.info("verdict %s exit %d: %s", outcome.verdict, outcome.exit_code, outcome.verdict_detail)
    return doc
