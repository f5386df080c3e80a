"""Re-print saved results: runs (netstat -m, summary, plot.png if missing), comparisons,
race hunts and bench files.

``python -m stress report RUN_DIR [RUN_DIR...]`` takes, for each argument:

- a run folder (run.json): read through ``stress.documents.load_run`` and printed with
  the very functions a live run uses (``stress.output.monitor``), so a report reads
  exactly like the end of the run it describes; a wedged, stalled or panicked run's
  post-mortem too (stacks.txt: what every CPU was executing);
- a comparison folder (compare.json, of any format version the project wrote): its
  table, the statistics recomputed from its runs (``stress.output.comparison.analyse``,
  ``report_lines``), against the baseline it chose or ``--baseline NAME``;
- a race hunt folder (race.json): a line per seed and the summary;
- a bench file (``results/bench/<stamp>.json``): its table.

``--audit``: a run that ended wedged, stalled or in a panic kept its arena (arena.npz,
stress/engine/postmortem.py); its audit is run again, offline, and set beside what
run.json recorded: exit 0 when the verdicts agree, 1 when they differ.

Every document is read through its JSON Schema (stress/schemas/) and every argument is
checked before anything is printed: one bad argument means exit 2, one line naming the
file and the field, and no half report.  Only final names are read: the temporaries of
a run still writing (``.<name>.<pid>@<host>.tmp``) are never taken for a result.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stress import options
from stress.commands import bench
from stress.commands.race import SeedResult
from stress.documents import (
    COMPARE_JSON,
    PLOT_PNG,
    RACE_JSON,
    RUN_JSON,
    DocumentError,
    finite_or_null,
    load_run,
    read_bench,
    read_compare,
    read_race,
)
from stress.engine import postmortem, stopping
from stress.files import is_temporary
from stress.output import comparison, monitor
from stress.output.plots import plot_run
from stress.samples import NETSTAT_TXT, SAMPLES_CSV, SamplesError

HELP = "re-print summary, netstat -m and plot of saved runs"
DESCRIPTION = __doc__ or HELP


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``report``."""
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="run folders (run.json), comparison folders (compare.json), race hunt folders "
                             "(race.json) or bench files")
    parser.add_argument("--no-netstat", action="store_true",
                        help="leave out the netstat -m lines (default: print them)")
    parser.add_argument("--baseline", default=None, metavar="NAME",
                        help="comparison folders: the variant the others are compared with (default: the one "
                             "the comparison chose, or its first)")
    parser.add_argument("--replot", action="store_true",
                        help="redraw plot.png even when it exists (default: only when missing)")
    parser.add_argument("--audit", action="store_true",
                        help="run folders: audit the saved arena (arena.npz) again and compare the verdict with "
                             "run.json's; exit 1 when they differ (default: off)")
    parser.add_argument("--json", action="store_true",
                        help="print the documents instead, each with where it was read in \"folder\" (\"file\": bench) "
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
    lines += stacks_section(folder)
    return lines


def stacks_section(folder: Path) -> list[str]:
    """The post-mortem's stacks (stacks.txt), when the run left one."""
    path = folder / postmortem.STACKS_TXT
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return ["", f"stacks ({path}):", *("  " + line if line else "" for line in text.rstrip().splitlines())]


def audit_lines(s: Saved) -> tuple[list[str], bool]:
    """``--audit`` of one run folder: the lines, and whether the re-audit agrees."""
    r = postmortem.reaudit(s.path, s.doc)
    lines = [f"re-audit of {s.path / postmortem.ARENA_NPZ}: {r.verdict}"
             + (f" (the allocator: {r.audit_verdict})" if r.audit_verdict != r.verdict else ""),
             *("  " + line for line in r.lines)]
    if r.same:
        lines.append(f"re-audit: the same verdict as run.json ({r.recorded})")
    else:
        lines.append(f"re-audit: DIFFERS from run.json: recorded {r.recorded} (the allocator: {r.recorded_audit}), "
                     f"re-audited {r.verdict} (the allocator: {r.audit_verdict})")
        lines += ["  " + d for d in r.differences()]
    return lines, r.same


@dataclass(frozen=True)
class Saved:
    """One argument of ``report``, read and checked: what it is, where, its document."""

    kind: str  #: "run", "compare", "race" or "bench"
    path: Path  #: the folder (run, compare, race) or the file (bench)
    doc: dict[str, Any]


def load_saved(name: str) -> Saved:
    """Read the result ``name`` names, whatever it is (DocumentError, one line, if none)."""
    path = Path(name)
    if is_temporary(path.name):
        raise DocumentError(f"{path}: a file still being written, or left by a killed writer (a temporary): "
                            "not a result")
    if path.is_file():
        if path.name == RUN_JSON:
            return Saved("run", path.parent, load_run(path.parent))
        if path.name == COMPARE_JSON:
            return Saved("compare", path.parent, read_compare(path.parent))
        if path.name == RACE_JSON:
            return Saved("race", path.parent, read_race(path.parent))
        return Saved("bench", path, read_bench(path))
    if path.is_dir() and not (path / RUN_JSON).exists():
        if (path / COMPARE_JSON).exists():
            return Saved("compare", path, read_compare(path))
        if (path / RACE_JSON).exists():
            return Saved("race", path, read_race(path))
    return Saved("run", path, load_run(path))


def analysed(doc: dict[str, Any], folder: Path, baseline: str | None) -> dict[str, Any]:
    """A comparison's document with its statistics recomputed, against ``baseline`` when
    given (DocumentError naming the variants when there is no such variant)."""
    names = [v["name"] for v in doc["variants"]]
    if baseline is not None:
        if baseline not in names:
            raise DocumentError(f"--baseline: no variant named {baseline!r} in {folder} "
                                f"(variants: {', '.join(names)})")
        for v in doc["variants"]:
            v["baseline"] = v["name"] == baseline
    return comparison.analyse(doc)


def race_lines(doc: dict[str, Any], folder: Path) -> list[str]:
    """A saved hunt: a line per seed (as race printed it) and the summary."""
    lines = [f"== {folder}", f"hunt of {','.join(doc['inject'])} ({doc['sched']}), {doc['runs']} seeds"]
    for seed in doc["seeds"]:
        result = SeedResult(seed["seed"], seed["verdict"], seed["exit_code"], seed["detected_s"],
                            Path(seed["folder"]), bool(seed.get("expected_class", True)),
                            seed.get("detected_step"),
                            [h for h in seed.get("item_histories") or [] if isinstance(h, dict)],
                            seed.get("cut_by"))
        lines.append(result.line())
        lines += result.history_lines()
    return lines + [doc["summary"]]


def saved_lines(saved: Saved, netstat: bool) -> list[str]:
    """Everything ``report`` prints for one argument."""
    if saved.kind == "compare":
        return [f"== {saved.path}", *comparison.report_lines(saved.doc)]
    if saved.kind == "race":
        return race_lines(saved.doc, saved.path)
    if saved.kind == "bench":
        return bench.saved_lines(saved.doc, saved.path)
    return report_lines(saved.doc, saved.path, netstat=netstat)


def audit_all(saved: list[Saved]) -> int:
    """``report --audit``: every run folder re-audited (2 when one has no usable
    snapshot, before anything is printed; 1 when a verdict differs; else 0)."""
    out: list[tuple[list[str], bool]] = []
    for s in saved:
        if s.kind != "run":
            return options.usage_error(f"--audit: {s.path} is not a run folder")
        try:
            out.append(audit_lines(s))
        except ValueError as exc:
            return options.usage_error(f"--audit: {exc}")
    for i, (lines, _) in enumerate(out):
        if i:
            print()
        print("\n".join(lines))
    return 0 if all(same for _, same in out) else options.EX_FAIL


def main(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> int:
    """Run ``report``; returns the exit code (2 when an argument is not a readable result)."""
    saved: list[Saved] = []
    for name in args.run_dirs:
        try:
            s = load_saved(name)
            if s.kind == "compare":
                analysed(s.doc, s.path, args.baseline)
            saved.append(s)
        except DocumentError as exc:
            if parser is not None:
                parser.error(f"RUN_DIR: {exc}")
            return options.usage_error(f"RUN_DIR: {exc}")
    if getattr(args, "audit", False):  # a Namespace made by hand (tests, callers) has no --audit
        return audit_all(saved)
    if args.json:
        # each with where it was read: a run or comparison folder, a bench file
        docs = [{"format": s.doc.get("format"), "folder" if s.kind != "bench" else "file": str(s.path), **s.doc}
                for s in saved]
        print(json.dumps(finite_or_null(docs[0] if len(docs) == 1 else docs), indent=2))
        return 0
    stop = stopping.current()
    for i, s in enumerate(saved):
        if stop is not None and stop.requested:  # a stop signal: no further folder
            break
        if i:
            print()
        for line in saved_lines(s, netstat=not args.no_netstat):
            print(line)
        if s.kind != "run":
            continue
        try:
            drawn = ensure_plot(s.path, force=args.replot)
        except (SamplesError, OSError) as exc:
            print(f"plot: not redrawn: {exc}", file=sys.stderr)
        else:
            if drawn is not None:
                print(f"plot: {drawn} (redrawn)")
    return 0
