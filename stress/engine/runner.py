"""One run into its folder: the engine's entry point for every command that runs something.

    execute(cfg, folder, echo)
      with the command's StopSignals (stress.engine.stopping; its own if called alone):
        a stop signal already seen?                  -> Stopped: nothing starts, no folder
        with run.log (one O_APPEND FileHandler, inherited by the workers):
          Manager(cfg, folder, echo, signals).run()  -> RunOutcome (the arena is gone)
          NoiseProbe around it                       -> others' load on its cores
          Schedule.save(folder)                      -> schedule.json   (pct, replay)
          documents.run_document(cfg, outcome)       -> run.json        (written atomically)
          plots.plot_run(folder)                     -> plot.png        (skipped after a signal)
          a signal during the writing?               -> run.json rewritten: interrupted
      -> the run.json document

``run`` (and ``replay``) print around it; ``compare``, ``race`` and ``bench`` call it once
per configuration.  Signals stay deferred (recorded, never raised) while a run and its
documents are written, so an interrupted run still leaves a complete, truthful folder:
verdict ``interrupted``, exit 130 or 143 in it, and the same code for the process.  A
signal that comes while the results are written, after the run itself ended, makes the
run.json say so too (:func:`mark_interrupted`): the document and the process's exit
code never disagree.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stress import documents
from stress.audit import SIGNAL_EXIT
from stress.config import RunConfig
from stress.engine.manager import Manager
from stress.engine.noise import NoiseProbe
from stress.engine.stopping import command_signals
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


def mark_interrupted(doc: dict[str, Any], signal_name: str, when: str) -> dict[str, Any]:
    """``doc`` (a run.json document) made to say that ``signal_name`` came ``when`` (after
    the run itself had ended): verdict ``interrupted`` with the exit code of the signal,
    what the run had found kept as ``audit_verdict``.  Unchanged if it already says so."""
    if doc.get("verdict") == "interrupted":
        return doc
    out = dict(doc)
    out["audit_verdict"] = doc.get("audit_verdict") or doc.get("verdict")
    out["audit_verdict_detail"] = doc.get("audit_verdict_detail") or doc.get("verdict_detail")
    out["verdict"] = "interrupted"
    out["exit_code"] = SIGNAL_EXIT.get(signal_name, SIGNAL_EXIT["SIGINT"])
    out["verdict_detail"] = f"interrupted by {signal_name} {when} (the run itself had ended: {doc.get('verdict')})"
    stop = dict(doc.get("stop") or {})
    stop.update(reason="interrupted", signal=signal_name, during=when)
    out["stop"] = stop
    return out


def execute(cfg: RunConfig, out_dir: Path, echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run ``cfg``, write its folder ``out_dir``, and return the run.json document.

    ``echo`` receives the live lines (netstat -m per interval or per round); None prints
    nothing.  Raises :class:`stress.engine.stopping.Stopped` without creating anything
    when a stop signal came before the run started: no new run starts after a stop.
    """
    folder = Path(out_dir)
    with command_signals() as signals:
        signals.check()
        folder.mkdir(parents=True, exist_ok=True)
        start = documents.host_start()  # the load average before the workers start (run.json host)
        with run_log(folder, cfg.verbosity):
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
            if signals.name and doc["verdict"] != "interrupted":
                doc = mark_interrupted(doc, signals.name, "while the results were written")
            documents.write_run_json(folder, doc)
            if not (folder / NETSTAT_TXT).exists():
                append_netstat(folder, ["# no netstat -m sample was taken"])
            if signals.requested:
                log.info("plot.png skipped: stopped by %s", signals.name)
            else:
                try:
                    plots.plot_run(folder)
                except Exception:  # noqa: BLE001 - a missing plot must not hide the verdict
                    log.error("plot failed:\n%s", traceback.format_exc())
            if signals.name and doc["verdict"] != "interrupted":  # it came while plot.png was drawn
                doc = mark_interrupted(doc, signals.name, "while the results were written")
                documents.write_run_json(folder, doc)
            log.info("verdict %s exit %d: %s", doc["verdict"], doc["exit_code"], doc["verdict_detail"])
    return doc
