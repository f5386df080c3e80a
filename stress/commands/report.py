"""Re-print saved runs: the netstat -m lines, the summary, and plot.png if it is missing.

``python -m stress report RUN_DIR [RUN_DIR...]`` reads each folder through
``stress.documents.load_run`` and prints with the very functions a live run uses
(``stress.output.monitor``), so a report reads exactly like the end of the run it describes.
Every folder is checked before anything is printed: one bad folder means exit 2 and
no half report.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from stress import options
from stress.documents import PLOT_PNG, DocumentError, load_run
from stress.output import monitor
from stress.output.plots import plot_run
from stress.samples import NETSTAT_TXT, SAMPLES_CSV, SamplesError

HELP = "re-print summary, netstat -m and plot of saved runs"
DESCRIPTION = __doc__ or HELP


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``report``."""
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders holding run.json")
    parser.add_argument("--no-netstat", action="store_true",
                        help="leave out the netstat -m lines (default: print them)")
    parser.add_argument("--replot", action="store_true",
                        help="redraw plot.png even when it exists (default: only when missing)")
    parser.add_argument("--json", action="store_true",
                        help="print the run.json documents instead, each with its run folder in \"folder\" "
                             "(one run: the document; several: a JSON list) (default: off)")


def netstat_section(doc: dict[str, Any], folder: Path) -> list[str]:
    """The netstat -m lines as printed during the run (netstat.txt), else the final ones from run.json."""
    path = folder / NETSTAT_TXT
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        if lines:
            return lines
    return monitor.netstat_lines(doc)


def ensure_plot(folder: Path, force: bool = False) -> Path | None:
    """Redraw plot.png from samples.csv when it is missing (or ``force``); None without samples."""
    plot = folder / PLOT_PNG
    if plot.is_file() and not force:
        return None
    if not (folder / SAMPLES_CSV).is_file():
        return None
    return plot_run(folder)


def report_lines(doc: dict[str, Any], folder: Path, netstat: bool = True) -> list[str]:
    """Everything ``report`` prints for one run."""
    lines = [f"== {folder}"]
    config = doc.get("config") or {}
    if config:
        shown = ("workload", "era", "policy", "refcount", "wakeup", "cpus", "nmbclusters", "duration", "seed")
        lines.append("config: " + ", ".join(f"{k} {config[k]}" for k in shown if k in config))
    if netstat:
        lines += netstat_section(doc, folder)
    lines += monitor.summary_lines(doc, folder)
    return lines


def main(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> int:
    """Run ``report``; returns the exit code (2 when a folder is not a readable run)."""
    runs: list[tuple[Path, dict[str, Any]]] = []
    for name in args.run_dirs:
        folder = Path(name)
        try:
            runs.append((folder, load_run(folder)))
        except DocumentError as exc:
            if parser is not None:
                parser.error(f"RUN_DIR: {exc}")
            return options.usage_error(f"RUN_DIR: {exc}")
    if args.json:
        docs = [{"format": doc.get("format"), "folder": str(folder), **doc} for folder, doc in runs]
        print(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2))
        return 0
    for i, (folder, doc) in enumerate(runs):
        if i:
            print()
        for line in report_lines(doc, folder, netstat=not args.no_netstat):
            print(line)
        try:
            drawn = ensure_plot(folder, force=args.replot)
        except (SamplesError, OSError) as exc:
            print(f"plot: not redrawn: {exc}", file=sys.stderr)
        else:
            if drawn is not None:
                print(f"plot: {drawn} (redrawn)")
    return 0
