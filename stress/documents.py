"""Result documents: the one owner that names, writes, reads and checks every file a run leaves.

Every document and where it lives (cli.md, "The run folder"; docs/results-format.md)::

    results/<YYYYmmdd-HHMMSS>-<workload>-<era>-<policy>-cpus<N>/   new_folder / default_run_dir
      run.json        zonelimit.run/1        run_document(cfg, outcome) / write_run_json / load_run
      samples.csv     one row per sample     stress.samples: SampleWriter / read_samples
      netstat.txt     netstat -m as printed  stress.samples: append_netstat
      schedule.json   zonelimit.schedule/1   Schedule.save / load_schedule        (pct, replay)
    results/<stamp>-compare-<workload>-cpus<N>/compare.json
                      zonelimit.compare/1    compare_document / write_compare_json / read_compare
    results/race-<stamp>-<inject>/race.json
                      zonelimit.race/1       race_document / write_race_json
    results/bench/<stamp>.json
                      zonelimit.bench/1      bench_document / write_bench

Why these rules (after pyperf):

- a result is never overwritten: :func:`new_folder` claims a name that is not taken
  (``mkdir`` without ``exist_ok``; ``-2``, ``-3``, ... on a clash), a bench file is
  published with ``link(2)``, which fails rather than replace;
- every JSON document is written whole to a temporary file, fsynced and renamed
  (:func:`write_doc`), so a kill leaves the previous state or the new one, never half a
  file; samples are flushed per row, netstat lines appended per batch;
- every reader checks the format string (:func:`check_format`) and refuses a newer
  major version with one clear line instead of misreading it;
- JSON has no NaN: the writer refuses it; documents whose figures may be undefined
  (compare, bench) store them as null (:func:`finite_or_null`).

The other layers build no document of their own: the engine returns values, the
commands hand them here.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stress.config import RunConfig, spec_label
from stress.cpulist import format_cpulist, usable_cores
from stress.outcome import RunOutcome
from stress.samples import SAMPLES_CSV

RUN_FORMAT = "zonelimit.run/1"  #: the number after the slash is the major version
SCHEDULE_FORMAT = "zonelimit.schedule/1"
COMPARE_FORMAT = "zonelimit.compare/1"
RACE_FORMAT = "zonelimit.race/1"
BENCH_FORMAT = "zonelimit.bench/1"

RUN_JSON = "run.json"
PLOT_PNG = "plot.png"
SCHEDULE_FILE = "schedule.json"
COMPARE_JSON = "compare.json"
COMPARE_TXT = "compare.txt"
RACE_JSON = "race.json"


class DocumentError(ValueError):
    """A folder or document is not readable (missing, damaged, or a newer format): one line."""


def package_version() -> str:
    """The installed zonelimit version (every document's "version", ``--version``)."""
    try:
        return importlib.metadata.version("zonelimit")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"  # running from a checkout that was never installed


# --- names that are never reused ------------------------------------------------------------


def _claim(parent: Path, name: str, make: Callable[[Path], object], *, numbered: bool = False,
           suffix: str = "") -> Path:
    """The first of ``name``, ``name-2``, ``name-3``, ... (``name-1``, ... when ``numbered``),
    plus ``suffix``, that ``make`` can create without replacing anything (it raises
    FileExistsError when the name is taken)."""
    n = 1
    while True:
        path = parent / ((f"{name}-{n}" if numbered or n > 1 else name) + suffix)
        try:
            make(path)
        except FileExistsError:
            n += 1
            continue
        return path


def new_folder(parent: Path, name: str, *, numbered: bool = False) -> Path:
    """Create and return a folder ``parent/name`` that did not exist (``name-2`` ... on a
    clash; always numbered ``name-1``, ``name-2`` ... with ``numbered``)."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    return _claim(parent, name, lambda p: p.mkdir(), numbered=numbered)


def default_run_dir(cfg: RunConfig, root: Path = Path("results")) -> Path:
    """Create and return a fresh run folder ``root/<timestamp>-<workload>-<era>-<policy>-cpus<N>``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workload, policy = spec_label(cfg.workload), spec_label(cfg.policy)  # a plugin spec holds / and :
    return new_folder(root, f"{stamp}-{workload}-{cfg.era}-{policy}-cpus{cfg.cpus}")


# --- JSON documents -------------------------------------------------------------------------


def _json_default(obj: Any) -> Any:
    """Make numpy scalars/arrays, paths, sets and frozen config objects JSON-serialisable."""
    if hasattr(obj, "tolist"):  # numpy arrays and scalars
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, RunConfig):
        return obj.to_dict()
    raise TypeError(f"cannot store {type(obj).__name__} {obj!r} in a document")


def finite_or_null(x: Any) -> Any:
    """``x`` with every NaN and infinity replaced by None (JSON null), recursively."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: finite_or_null(v) for k, v in x.items()}
    if isinstance(x, list):
        return [finite_or_null(v) for v in x]
    return x


def doc_text(doc: dict[str, Any], fmt: str, indent: int | None = 2) -> str:
    """The JSON text of ``doc``: ``"format"`` first (filled in when missing, else it must be
    ``fmt``); NaN and infinity refused (ValueError)."""
    have = doc.get("format", fmt)
    if have != fmt:
        raise ValueError(f"this writer writes {fmt}, the document says {have!r}")
    doc = {"format": fmt, **{k: v for k, v in doc.items() if k != "format"}}
    compact = (",", ":") if indent is None else None
    return json.dumps(doc, indent=indent, separators=compact, default=_json_default, allow_nan=False) + "\n"


def write_doc(path: Path, doc: dict[str, Any], fmt: str, *, indent: int | None = 2,
              exclusive: bool = False) -> Path:
    """Write ``doc`` to ``path`` atomically: a temporary file, fsynced, then renamed over
    ``path`` -- or, ``exclusive``, linked to ``path`` (FileExistsError if it exists)."""
    text = doc_text(doc, fmt, indent)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def check_format(fmt: object, expected: str, where: str) -> None:
    """Raise DocumentError unless ``fmt`` names ``expected``'s document at a major version
    this zonelimit reads (any minor: ``zonelimit.run/1.3`` is read as ``zonelimit.run/1``)."""
    name, _, major = expected.partition("/")
    kind = name.removeprefix("zonelimit.")
    if not isinstance(fmt, str) or "/" not in fmt:
        raise DocumentError(f"{where}: no format string (not a zonelimit {kind} document)")
    have_name, _, version = fmt.partition("/")
    have_major = version.split(".", 1)[0]
    if have_name != name or not have_major.isdigit() or int(have_major) < 1:
        raise DocumentError(f"{where}: unknown {kind} format {fmt!r}: not a zonelimit {kind} "
                            f"({expected} expected)")
    if int(have_major) > int(major):
        raise DocumentError(f"{where}: unknown {kind} format {fmt!r}: written by a newer zonelimit; "
                            f"this version reads {expected}")


def read_doc(path: Path, fmt: str) -> dict[str, Any]:
    """Read a JSON document and check its format (DocumentError, one line; a missing file
    is FileNotFoundError, which each reader words for itself)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise  # each reader words a missing document for itself (load_run, load_schedule)
    except OSError as exc:
        raise DocumentError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise DocumentError(f"{path}: damaged JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise DocumentError(f"{path}: not a JSON object")
    check_format(doc.get("format"), fmt, str(path))
    return doc


# --- the run folder -------------------------------------------------------------------------


def run_document(cfg: RunConfig, outcome: RunOutcome) -> dict[str, Any]:
    """run.json for one run: the fields of cli.md in their order, then the details of
    docs/results-format.md (readers must not rely on those being present)."""
    o = outcome
    d = max(o.duration_s, 1e-9)
    total_ops = sum(o.per_cpu_ops)
    packets = o.counters["packets"] if o.counters is not None else 0
    usable = usable_cores()
    doc: dict[str, Any] = {
        "format": RUN_FORMAT,
        "version": package_version(),
        "config": cfg.to_dict(),
        "host": {"cores": len(usable), "usable_cores": format_cpulist(usable),
                 "python": platform.python_version(), "platform": platform.platform(),
                 "start_method": o.start_method, "pinning": {str(k): c for k, c in o.mapping.items()}},
        "duration_s": round(o.duration_s, 3),
        "verdict": o.verdict,
        "exit_code": o.exit_code,
        "verdict_detail": o.verdict_detail,
        "ops": {"total": total_ops, "per_s": round(total_ops / d, 1),
                "per_cpu_per_s": [round(x / d, 1) for x in o.per_cpu_ops],
                "packets": packets, "packets_per_s": round(packets / d, 1),
                "packets_per_cpu_per_s": round(packets / d / max(cfg.cpus, 1), 1)},
        "zones": o.stats["zones"],
        "netstat": o.stats["netstat"],
        "peak": dict(o.peak),
        "wedge": o.wedge,
        "audit": o.audit,
        "locks": o.locks,
        "samples": SAMPLES_CSV,
        "rounds": o.rounds,
        "stop": {"reason": o.stop_reason, "signal": o.signal,
                 "killed_asleep": [w.cpu for w in o.workers if w.killed_asleep],
                 "killed_stuck": [w.cpu for w in o.workers if w.killed_stuck]},
        "workers": [{"cpu": w.cpu, "pid": w.pid, "core": w.core, "exitcode": w.exitcode} for w in o.workers],
    }
    if o.counters is not None:  # what the workload's consumers counted (wl_stat), summed over CPUs
        doc["workload"] = {"name": cfg.workload, "packets": packets, "packets_per_s": round(packets / d, 1),
                           "packets_per_s_per_cpu": round(packets / d / max(cfg.cpus, 1), 1),
                           **{k: v for k, v in o.counters.items() if k != "packets"}}
    if o.profile:
        doc["profile"] = o.profile
    if o.trim is not None:
        doc["trim"] = o.trim
    if o.error:
        doc["error"] = o.error
    if o.audit_lines is not None:
        doc["audit_lines"] = o.audit_lines
    if o.schedule is not None:
        doc["schedule"] = o.schedule
    return doc


def run_json_text(doc: dict[str, Any]) -> str:
    """The text of run.json for ``doc`` (also what ``--json`` prints)."""
    return doc_text(doc, RUN_FORMAT)


def write_run_json(folder: Path, doc: dict[str, Any]) -> Path:
    """Write ``doc`` as ``folder/run.json`` atomically; return its path."""
    return write_doc(Path(folder) / RUN_JSON, doc, RUN_FORMAT)


def load_run(folder: Path) -> dict[str, Any]:
    """Read ``folder/run.json``, check its format, and return the document.

    Raises DocumentError with a one-line message when the folder is missing, holds no
    run.json, the JSON is damaged, or the format is unknown or newer.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DocumentError(f"{folder}: no such run folder")
    path = folder / RUN_JSON
    try:
        doc = read_doc(path, RUN_FORMAT)
    except FileNotFoundError:
        raise DocumentError(f"{folder}: no {RUN_JSON} (not a run folder, or its run did not end)") from None
    if not isinstance(doc.get("config"), dict):
        raise DocumentError(f"{path}: no \"config\" object")
    return doc


# --- schedule.json --------------------------------------------------------------------------


@dataclass
class Schedule:
    """A recorded schedule (pct): the PCT parameters and every switch ``(step, cpu, label_id)``;
    steps without an entry continue the running CPU (docs/races.md)."""

    seed: int
    ncpus: int
    depth: int
    steps: int
    switches: list[tuple[int, int, int]] = field(default_factory=list)
    total_steps: int = 0
    stop_step: int = 0  #: the step at which the workers saw the stop flag (0: never)
    #: (step, value) at which the workers saw the manager's load flag change (rounds, the
    #: final drain); the flag starts at 1
    load_changes: list[tuple[int, int]] = field(default_factory=list)
    overflow: bool = False
    labels: dict[int, str] = field(default_factory=dict)  #: label ids seen by the manager
    format: str = SCHEDULE_FORMAT

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of schedule.json."""
        d = asdict(self)
        d["switches"] = [list(s) for s in self.switches]
        d["load_changes"] = [list(c) for c in self.load_changes]
        d["labels"] = {str(k): v for k, v in self.labels.items()}
        d["version"] = package_version()
        return d

    @staticmethod
    def from_dict(d: dict[str, Any], where: str = SCHEDULE_FILE) -> Schedule:
        """Rebuild from schedule.json; refuses other formats and newer major versions."""
        check_format(d.get("format"), SCHEDULE_FORMAT, where)
        return Schedule(
            seed=int(d["seed"]), ncpus=int(d["ncpus"]), depth=int(d["depth"]), steps=int(d["steps"]),
            switches=[(int(a), int(b), int(c)) for a, b, c in d.get("switches", [])],
            total_steps=int(d.get("total_steps", 0)), stop_step=int(d.get("stop_step", 0)),
            load_changes=[(int(a), int(b)) for a, b in d.get("load_changes", [])],
            overflow=bool(d.get("overflow", False)),
            labels={int(k): str(v) for k, v in d.get("labels", {}).items()},
        )

    def save(self, folder: Path) -> Path:
        """Write ``folder/schedule.json`` (compact: a schedule may hold 2^18 switches)."""
        return write_doc(Path(folder) / SCHEDULE_FILE, self.to_dict(), SCHEDULE_FORMAT, indent=None)


def load_schedule(run_dir: Path) -> Schedule:
    """The schedule recorded in a run folder (``RUN_DIR/schedule.json``).

    Raises FileNotFoundError when the run was not controlled (free/jitter runs record
    no schedule: replaying them re-runs the seed, which may not reproduce a race)."""
    path = Path(run_dir) / SCHEDULE_FILE
    return Schedule.from_dict(read_doc(path, SCHEDULE_FORMAT), str(path))


# --- compare.json, race.json, the bench document --------------------------------------------


def compare_document(*, base: dict[str, Any], seeds: list[int], figures: list[dict[str, str]],
                     rows: list[dict[str, Any]], max_spread: float, warnings: list[str],
                     target: dict[str, Any]) -> dict[str, Any]:
    """compare.json (``zonelimit.compare/1``): one row per configuration (docs/policies.md)."""
    return {"format": COMPARE_FORMAT, "version": package_version(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
            "base": base, "repeat": len(seeds), "seeds": seeds, "figures": figures, "rows": rows,
            "max_spread": max_spread, "warnings": warnings, "target": target}


def compare_json_text(doc: dict[str, Any]) -> str:
    """compare.json's text; an undefined figure (an infinite spread) is null."""
    return doc_text(finite_or_null(doc), COMPARE_FORMAT)


def write_compare_json(folder: Path, doc: dict[str, Any]) -> Path:
    """Write ``folder/compare.json`` atomically (undefined figures as null)."""
    return write_doc(Path(folder) / COMPARE_JSON, finite_or_null(doc), COMPARE_FORMAT)


def read_compare(folder: Path) -> dict[str, Any]:
    """Read and check ``folder/compare.json``."""
    path = Path(folder) / COMPARE_JSON
    try:
        return read_doc(path, COMPARE_FORMAT)
    except FileNotFoundError:
        raise DocumentError(f"{folder}: no {COMPARE_JSON} (not a comparison folder)") from None


def race_document(*, inject: list[str], sched: str, folder: Path, seeds: list[dict[str, Any]],
                  found: int, summary: str) -> dict[str, Any]:
    """race.json (``zonelimit.race/1``): one entry per seed hunted (docs/races.md)."""
    return {"format": RACE_FORMAT, "version": package_version(), "inject": inject, "sched": sched,
            "folder": str(folder), "seeds": seeds, "found": found, "runs": len(seeds), "summary": summary}


def write_race_json(folder: Path, doc: dict[str, Any]) -> Path:
    """Write ``folder/race.json`` atomically."""
    return write_doc(Path(folder) / RACE_JSON, doc, RACE_FORMAT, indent=1)


def bench_document(figures: list[dict[str, Any]], *, quick: bool, repeat_n: int, elapsed: float,
                   loadavg: list[float]) -> dict[str, Any]:
    """The bench document (``zonelimit.bench/1``): every figure of performance.md, raw values kept."""
    return {
        "format": BENCH_FORMAT,
        "version": package_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": {"cores": len(os.sched_getaffinity(0)), "python": platform.python_version(),
                 "platform": platform.platform(), "machine": platform.machine(), "loadavg_1min": loadavg},
        "quick": quick,
        "repeat": repeat_n,
        "elapsed_s": elapsed,
        "missed": [f["id"] for f in figures if f["met"] is False],
        "figures": finite_or_null({f["id"]: f for f in figures}),
    }


def write_bench(out_dir: Path, doc: dict[str, Any]) -> Path:
    """Write ``out_dir/<timestamp>.json``; an existing file is never replaced (``-2``, ...)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return _claim(Path(out_dir), stamp, lambda p: write_doc(p, doc, BENCH_FORMAT, exclusive=True), suffix=".json")
