"""Result documents: the one owner that names, writes, reads and checks every file a run leaves.

Every document and where it lives (cli.md, "The run folder"; docs/results-format.md)::

    results/<YYYYmmdd-HHMMSS>-<workload>-<era>-<policy>-cpus<N>/   default_run_dir (files.new_folder)
      run.json        zonelimit.run/1        run_document(cfg, outcome) / write_run_json / load_run
      samples.csv     one row per sample     stress.samples: SampleWriter / read_samples
      netstat.txt     netstat -m as printed  stress.samples: append_netstat
      schedule.json   zonelimit.schedule/1   Schedule.save / load_schedule        (pct, replay)
    results/<stamp>-compare-<workload>-cpus<N>/compare.json
                      zonelimit.compare/2    compare_document / write_compare_json / read_compare
                                             (reads /1 too: upgrade_compare)
    results/race-<stamp>-<inject>/race.json
                      zonelimit.race/1       race_document / write_race_json / read_race
    results/bench/<stamp>.json
                      zonelimit.bench/1      bench_document / write_bench / read_bench

Why these rules (after pyperf):

- a result is never overwritten and a folder belongs to one run: folders are claimed
  through stress/files.py (``new_folder``, ``claim_folder``: a ``mkdir`` only one process
  can make), a bench file is published with ``link(2)``, which fails rather than replace;
- every document is written whole under a temporary name, fsynced and renamed
  (:func:`write_doc` -> ``stress.files.write_atomic``), so a kill leaves the previous
  state or the new one, never half a file;
- every reader checks the format string (:func:`check_format`) and refuses a newer
  major version with one clear line instead of misreading it, then every field against
  the document's JSON Schema (stress/schemas/, :func:`check_document`): one line naming
  the field; earlier shapes are upgraded first, explicitly (:func:`_migrate`);
- every document records its host (:func:`host_record`, after pyperf) and its times in
  one ISO 8601 format (:func:`timestamp`);
- JSON has no NaN: the writer refuses it; documents whose figures may be undefined
  (compare, bench) store them as null (:func:`finite_or_null`).

The other layers build no document of their own: the engine returns values, the
commands hand them here.
"""

from __future__ import annotations

import datetime
import functools
import importlib.metadata
import importlib.resources
import json
import math
import os
import platform
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import allocator
from stress.config import RunConfig, spec_label
from stress.cpulist import format_cpulist, usable_cores
from stress.files import new_folder, unfinished, write_atomic
from stress.outcome import RunOutcome
from stress.samples import SAMPLES_CSV

RUN_FORMAT = "zonelimit.run/1"  #: the number after the slash is the major version
SCHEDULE_FORMAT = "zonelimit.schedule/1"
COMPARE_FORMAT = "zonelimit.compare/2"
RACE_FORMAT = "zonelimit.race/1"
BENCH_FORMAT = "zonelimit.bench/1"
LIVE_FORMAT = "zonelimit.live/1"  #: live.json: where a running run's arena is (stress.engine.live)

RUN_JSON = "run.json"
PLOT_PNG = "plot.png"
SCHEDULE_FILE = "schedule.json"
COMPARE_JSON = "compare.json"
COMPARE_TXT = "compare.txt"
RACE_JSON = "race.json"
LIVE_JSON = "live.json"


class DocumentError(ValueError):
    """A folder or document is not readable (missing, damaged, or a newer format): one line."""


def package_version() -> str:
    """The installed zonelimit version (every document's "version", ``--version``)."""
    try:
        return importlib.metadata.version("zonelimit")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"  # running from a checkout that was never installed


# --- the host, as pyperf records it -----------------------------------------------------------

#: the distributions whose versions every document records: ours and what it runs on
RECORDED_PACKAGES = ("zonelimit", "numpy", "matplotlib", "jsonschema", "py-spy")


def timestamp(when: float | None = None) -> str:
    """The one timestamp format of every document: ISO 8601, local time, seconds, the UTC
    offset with a colon (``2005-12-01T12:00:00+01:00``)."""
    moment = datetime.datetime.now() if when is None else datetime.datetime.fromtimestamp(when)
    return moment.astimezone().isoformat(timespec="seconds")


def _loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages (others' work on the machine shows here)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def host_start() -> dict[str, Any]:
    """What is measured when a run (or a comparison, a hunt, a bench) starts: the time and
    the load average; handed back to :func:`host_record` at the end."""
    return {"started": timestamp(), "loadavg_start": _loadavg()}


def _cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Processor", "cpu model") and value.strip():
                    return " ".join(value.split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in RECORDED_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _git_dir(start: Path) -> Path | None:
    """The git directory of the checkout holding ``start``, if any (a worktree's ``.git``
    is a file naming it)."""
    for folder in (start, *start.parents):
        dot = folder / ".git"
        if dot.is_dir():
            return dot
        if dot.is_file():
            text = dot.read_text(encoding="utf-8").strip()
            if text.startswith("gitdir:"):
                gitdir = Path(text.removeprefix("gitdir:").strip())
                return gitdir if gitdir.is_absolute() else (folder / gitdir).resolve()
    return None


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit checked out where this zonelimit runs from (an editable install or a
    checkout), read from the git files themselves (no ``git`` process): None when it is
    not a checkout.  Uncommitted changes are not detected."""
    try:
        gitdir = _git_dir(Path(__file__).resolve().parent)
        if gitdir is None:
            return None
        head = (gitdir / "HEAD").read_text(encoding="utf-8").strip()
        if not head.startswith("ref:"):
            return head if re.fullmatch(r"[0-9a-f]{40,64}", head) else None
        ref = head.removeprefix("ref:").strip()
        common = gitdir
        if (gitdir / "commondir").is_file():  # a worktree keeps its refs in the main repository
            common = (gitdir / (gitdir / "commondir").read_text(encoding="utf-8").strip()).resolve()
        for base in (gitdir, common):
            if (base / ref).is_file():
                return (base / ref).read_text(encoding="utf-8").strip()
        packed = common / "packed-refs"
        if packed.is_file():
            for line in packed.read_text(encoding="utf-8").splitlines():
                sha, _, name = line.partition(" ")
                if name == ref:
                    return sha
    except (OSError, UnicodeDecodeError):
        pass
    return None


def host_record(start: dict[str, Any] | None) -> dict[str, Any]:
    """The host block of every document (after pyperf's metadata): the machine (cores,
    CPU model, platform), the software (Python, the package versions, the git commit
    when run from a checkout) and the load average at ``start`` (:func:`host_start`;
    None: not measured) and now."""
    usable = usable_cores()
    start = start or {}
    return {
        "cores": len(usable), "usable_cores": format_cpulist(usable), "cpu_model": _cpu_model(),
        "machine": platform.machine(), "platform": platform.platform(),
        "python": platform.python_version(), "python_implementation": platform.python_implementation(),
        "packages": _package_versions(), "git_commit": git_commit(),
        "started": start.get("started"), "ended": timestamp(),
        "loadavg_start": start.get("loadavg_start"), "loadavg_end": _loadavg(),
        # the allocator's hot modules ran compiled (Cython) or interpreted (issue 15)
        "allocator_compiled": allocator.COMPILED,
    }


# --- folders that are never reused -----------------------------------------------------------


def default_run_dir(cfg: RunConfig, root: Path = Path("results")) -> Path:
    """Create and claim a fresh run folder ``root/<timestamp>-<workload>-<era>-<policy>-cpus<N>``
    (:func:`stress.files.new_folder`; release it with :func:`stress.files.release_folder`)."""
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
    data = doc_text(doc, fmt, indent).encode("utf-8")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, lambda f: f.write(data), exclusive=exclusive)


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


# --- JSON Schemas: every field of every document, checked on reading -----------------------

#: format name -> its schema, ``stress/schemas/<kind>.schema.json`` (package data)
SCHEMA_KINDS = {RUN_FORMAT: "run", SCHEDULE_FORMAT: "schedule", COMPARE_FORMAT: "compare", RACE_FORMAT: "race",
                BENCH_FORMAT: "bench", LIVE_FORMAT: "live"}
_SCHEMA_FILES = ("host", "run", "schedule", "compare", "race", "bench", "live", "compare-1")
#: earlier major versions still read, each checked against its own schema before it is
#: upgraded (:func:`_migrate`): (kind, major) -> schema
EARLIER_SCHEMAS = {("compare", 1): "compare-1"}


@functools.cache
def schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of a document kind (``run``, ``schedule``, ``compare``, ``race``,
    ``bench``, ``host``; ``compare-1``: the first compare format, read only), loaded from
    the package (importlib.resources)."""
    if kind not in _SCHEMA_FILES:
        raise KeyError(f"no schema for {kind!r}; known: {', '.join(_SCHEMA_FILES)}")
    text = importlib.resources.files("stress.schemas").joinpath(f"{kind}.schema.json").read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@functools.cache
def _validator(kind: str) -> Any:
    """A Draft 2020-12 validator of ``kind`` whose references to the other schemas
    (``host.schema.json``, ``run.schema.json#/$defs/...``) resolve inside the package.
    jsonschema is imported here, on the first check: a run that only writes never pays
    for it."""
    import jsonschema
    import referencing

    registry: Any = referencing.Registry().with_resources(
        (schema(k)["$id"], referencing.Resource.from_contents(schema(k))) for k in _SCHEMA_FILES)
    return jsonschema.Draft202012Validator(schema(kind), registry=registry)


def _field(path: Any) -> str:
    """``config.duration``, ``zones[1].used``: where in the document an error is."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(the document)"


#: Arrays of fixed-size integer rows that can be millions long (a schedule's switch log):
#: checked against their schema's ``items`` by numpy, row by row in one pass, because a
#: JSON Schema validator walking 10^6 rows takes seconds (a replay pays it on every read).
BULK_ROWS = {"schedule": ("switches", "load_changes")}


def _bulk_row_errors(rows: list[Any], name: str, spec: dict[str, Any]) -> list[str]:
    """``rows`` against the schema ``spec`` of the array (``maxItems``; each row an array of
    ``prefixItems`` integers with optional bounds), as jsonschema would judge it, in one
    numpy pass."""
    import numpy as np

    item = spec["items"]
    width = len(item["prefixItems"])
    if len(rows) > spec.get("maxItems", len(rows)):
        return [f"{name}: {len(rows)} rows, more than the maxItems of {spec['maxItems']}"]
    if not rows:
        return []
    bad = next((i for i, r in enumerate(rows) if not isinstance(r, list) or len(r) != width
                or not all(type(x) is int for x in r)), None)  # bool is not an integer here either
    if bad is not None:
        return [f"{name}[{bad}]: {rows[bad]!r:.60} is not a list of {width} integers"]
    try:
        arr = np.asarray(rows, dtype=np.int64)
    except OverflowError:
        return [f"{name}: an integer out of range"]
    for col, spec in enumerate(item["prefixItems"]):
        for key, breaks in (("minimum", arr[:, col] < spec.get("minimum", 0)),
                            ("maximum", arr[:, col] > spec.get("maximum", 0))):
            if key in spec and breaks.any():
                i = int(np.argmax(breaks))
                return [f"{name}[{i}][{col}]: {rows[i][col]} is {'less' if key == 'minimum' else 'greater'} "
                        f"than the {key} of {spec[key]}"]
    return []


def schema_errors(doc: Any, kind: str) -> list[str]:
    """Every place where ``doc`` breaks the schema of ``kind``, one line each (the most
    telling first); empty when it is valid."""
    import jsonschema.exceptions

    bulk: list[str] = []
    if isinstance(doc, dict) and any(name in doc for name in BULK_ROWS.get(kind, ())):
        props = schema(kind)["properties"]
        for name in BULK_ROWS[kind]:
            if isinstance(doc.get(name), list):  # anything else is jsonschema's to name
                bulk += _bulk_row_errors(doc[name], name, props[name])
        doc = {k: ([] if k in BULK_ROWS[kind] and isinstance(v, list) else v) for k, v in doc.items()}
    errors = list(_validator(kind).iter_errors(doc))
    best = jsonschema.exceptions.best_match(errors)
    ordered = ([best] if best is not None else []) + [e for e in errors if e is not best]
    lines = []
    for e in ordered:
        message = e.message if len(e.message) <= 160 else e.message[:157] + "..."
        lines.append(f"{_field(e.absolute_path)}: {message}")
    return bulk + lines


def check_document(doc: Any, kind: str, where: str) -> None:
    """Raise DocumentError naming the first field of ``doc`` that breaks its schema."""
    problems = schema_errors(doc, kind)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DocumentError(f"{where}: {problems[0]}{more}")


#: Earlier shapes of format-1 documents that this version reads by upgrading them first,
#: each named and tested against results/reference (docs/results-format.md, "History").
def _migrate(doc: dict[str, Any], kind: str) -> dict[str, Any]:
    """Upgrade what earlier 0.1.0 writers wrote differently to today's shape:

    - bench ``created`` with a UTC offset without a colon (``+0000``, strftime's %z):
      rewritten with the colon (``+00:00``), the one timestamp format of every document;
    - ``zonelimit.compare/1``: upgraded to ``/2`` (:func:`upgrade_compare`).
    """
    created = doc.get("created")
    if kind == "bench" and isinstance(created, str) and re.fullmatch(r".*T[0-9:]{8}[+-][0-9]{4}", created):
        doc = {**doc, "created": f"{created[:-2]}:{created[-2:]}"}
    if kind == "compare":
        doc = upgrade_compare(doc)
    return doc


def _major(fmt: str) -> int:
    """The major version of a format string (checked already by :func:`check_format`)."""
    return int(fmt.partition("/")[2].split(".", 1)[0])


def read_doc(path: Path, fmt: str, *, validate: bool = True) -> dict[str, Any]:
    """Read a JSON document, check its format and (``validate``) every field against its
    schema: DocumentError, one line naming the file and the field; a missing file is
    FileNotFoundError, which each reader words for itself.  Earlier shapes are migrated
    first (:func:`_migrate`)."""
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
    kind = SCHEMA_KINDS[fmt]
    earlier = EARLIER_SCHEMAS.get((kind, _major(doc["format"])))
    if validate and earlier is not None:
        check_document(doc, earlier, str(path))
    try:
        doc = _migrate(doc, kind)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DocumentError(f"{path}: damaged {doc.get('format')} document, not upgraded: {exc!r}") from None
    if validate:
        check_document(doc, kind, str(path))
    return doc


# --- the run folder -------------------------------------------------------------------------


def run_document(cfg: RunConfig, outcome: RunOutcome, start: dict[str, Any] | None = None) -> dict[str, Any]:
    """run.json for one run: the fields of cli.md in their order, then the details of
    docs/results-format.md (readers must not rely on those being present).  ``start``:
    :func:`host_start` taken when the run began (its load average)."""
    o = outcome
    d = max(o.duration_s, 1e-9)
    total_ops = sum(o.per_cpu_ops)
    packets = o.counters["packets"] if o.counters is not None else 0
    doc: dict[str, Any] = {
        "format": RUN_FORMAT,
        "version": package_version(),
        "created": timestamp(),
        "config": cfg.to_dict(),
        "host": {**host_record(start), "start_method": o.start_method,
                 "pinning": o.pinning or {str(k): c for k, c in o.mapping.items()}},
        "duration_s": round(o.duration_s, 3),
        "verdict": o.verdict,
        "exit_code": o.exit_code,
        "verdict_detail": o.verdict_detail,
        **({"audit_verdict": o.audit_verdict, "audit_verdict_detail": o.audit_detail}
           if o.audit_verdict is not None else {}),
        "ops": {"total": total_ops, "per_s": round(total_ops / d, 1),
                "per_cpu_per_s": [round(x / d, 1) for x in o.per_cpu_ops],
                "packets": packets, "packets_per_s": round(packets / d, 1),
                "packets_per_cpu_per_s": round(packets / d / max(cfg.cpus, 1), 1)},
        "zones": o.stats["zones"],
        "netstat": o.stats["netstat"],
        "peak": dict(o.peak),
        "wedge": o.wedge,
        "stall": o.stall,
        "audit": o.audit,
        "locks": o.locks,
        "samples": SAMPLES_CSV,
        "rounds": o.rounds,
        "stop": {"reason": o.stop_reason, "signal": o.signal, "signal_at_s": o.signal_at_s,
                 "planned_s": o.planned_s, "workers_gone_s": _rounded(o.workers_gone_s),
                 "startup_s": _rounded(o.startup_s),
                 "killed_asleep": [w.cpu for w in o.workers if w.killed_asleep],
                 "killed_stuck": [w.cpu for w in o.workers if w.killed_stuck],
                 "killed_mid_operation": list(o.killed_mid_operation)},
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
    if o.noise is not None:
        doc["noise"] = o.noise
    return doc


def _rounded(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def run_json_text(doc: dict[str, Any]) -> str:
    """The text of run.json for ``doc`` (also what ``--json`` prints)."""
    return doc_text(doc, RUN_FORMAT)


def write_run_json(folder: Path, doc: dict[str, Any]) -> Path:
    """Write ``doc`` as ``folder/run.json`` atomically; return its path."""
    return write_doc(Path(folder) / RUN_JSON, doc, RUN_FORMAT)


def load_run(folder: Path, *, validate: bool = True) -> dict[str, Any]:
    """Read ``folder/run.json``, check its format and every field (run.schema.json), and
    return the document.

    Raises DocumentError with a one-line message when the folder is missing, holds no
    run.json, the JSON is damaged, the format is unknown or newer, or a field is missing,
    of the wrong type or out of range (the message names it: ``config.duration: ...``).
    ``validate=False`` skips the schema (the plot of a run.json just written).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DocumentError(f"{folder}: no such run folder")
    path = folder / RUN_JSON
    try:
        doc = read_doc(path, RUN_FORMAT, validate=validate)
    except FileNotFoundError:
        why = unfinished(folder)  # a SIGKILLed run's claim marker: say what the folder is
        if why is not None:
            raise DocumentError(f"{folder}: no {RUN_JSON}: {why}") from None
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
    #: the step plan (stress.engine.sched.plan): budget, rounds, callout and wedge test by
    #: step; empty in a schedule recorded before plans (bounded by the wall clock)
    plan: dict[str, int] = field(default_factory=dict)
    #: a *guide*, not a recording (``race --shrink``'s tries): a replay runs the CPU a
    #: switch names where it can, continues the running CPU between them unless it cannot
    #: progress (then PCT chooses), and records what ran -- labels are not checked
    guide: bool = False
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
            plan={str(k): int(v) for k, v in (d.get("plan") or {}).items()},
            guide=bool(d.get("guide", False)),
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


#: RunConfig fields that are not run options: where a run writes and how it talks, and the
#: seed a comparison sets per repeat.  compare.json's ``base`` never holds them.
NOT_RUN_OPTIONS = ("out", "json", "verbosity", "seed", "replay_from")


def compare_document(*, base: dict[str, Any], plan: dict[str, Any], variants: list[dict[str, Any]],
                     start: dict[str, Any] | None = None) -> dict[str, Any]:
    """A new compare.json (``zonelimit.compare/2``, docs/results-format.md): the plan and
    the variants, no run yet; stress.output.comparison.analyse fills the statistics.
    ``start``: :func:`host_start` taken when the comparison began."""
    return {"format": COMPARE_FORMAT, "version": package_version(), "created": timestamp(), "finished": None,
            "state": "running", "stop": None, "history": [], "host": host_record(start),
            "base": {k: v for k, v in base.items() if k not in NOT_RUN_OPTIONS},
            "plan": plan, "variants": variants}


def compare_json_text(doc: dict[str, Any]) -> str:
    """compare.json's text; an undefined figure (an infinite half-width) is null."""
    return doc_text(finite_or_null(doc), COMPARE_FORMAT)


def write_compare_json(folder: Path, doc: dict[str, Any]) -> Path:
    """Write ``folder/compare.json`` atomically (undefined figures as null)."""
    return write_doc(Path(folder) / COMPARE_JSON, finite_or_null(doc), COMPARE_FORMAT)


def read_compare(folder: Path) -> dict[str, Any]:
    """Read and check ``folder/compare.json``, upgraded to the current format first (every
    earlier version the project wrote is read: :func:`upgrade_compare`)."""
    path = Path(folder) / COMPARE_JSON
    try:
        return read_doc(path, COMPARE_FORMAT)
    except FileNotFoundError:
        raise DocumentError(f"{folder}: no {COMPARE_JSON} (not a comparison folder)") from None


def upgrade_compare(doc: dict[str, Any]) -> dict[str, Any]:
    """A compare document of any version this project wrote, as ``zonelimit.compare/2``.

    ``zonelimit.compare/1`` (0.1.0, the references in results/reference/policies): a
    ``rows`` list, one per ``--configs`` item (``label``, ``era``, ``policy``,
    ``refcount``, ``wakeup``, ``policy_params``, ``runs``) and ``base`` with the display
    options in it.  Its runs and their figures are kept as they were; the statistics
    are recomputed by the reader (stress.output.comparison.analyse); the baseline is the
    first row; ``upgraded_from`` names the original format."""
    if _major(doc["format"]) >= 2:
        return doc
    variants = []
    for i, row in enumerate(doc["rows"]):
        params = {f"{row['policy']}.{k}": f"{v:g}" for k, v in (row.get("policy_params") or {}).items()}
        era, _, policy = str(row["label"]).partition(":")
        options = {"era": era, **({"policy": policy} if policy else {}), **params}
        config = {k: row[k] for k in ("era", "policy", "refcount", "wakeup") if k in row}
        config["policy_params"] = dict(row.get("policy_params") or {})
        runs = [{k: run.get(k) for k in ("dir", "seed", "verdict", "exit_code", "figures")} for run in row["runs"]]
        variants.append({"name": str(row["label"]), "options": options, "config": config, "baseline": i == 0,
                         "runs": runs})
    seeds = [int(s) for s in doc.get("seeds") or []]
    plan = {"seed": min(seeds) if seeds else 0, "repeat": int(doc.get("repeat") or len(seeds)),
            "precision": None, "max_repeat": None, "baseline": variants[0]["name"] if variants else None}
    return {"format": COMPARE_FORMAT, "version": doc.get("version"), "created": doc.get("created"),
            "finished": doc.get("created"), "state": "complete", "stop": None, "history": [],
            "upgraded_from": doc["format"], **({"host": doc["host"]} if "host" in doc else {}),
            "base": {k: v for k, v in (doc.get("base") or {}).items() if k not in NOT_RUN_OPTIONS},
            "plan": plan, "variants": variants}


def race_document(*, inject: list[str], sched: str, folder: Path, seeds: list[dict[str, Any]],
                  found: int, summary: str, start: dict[str, Any] | None = None) -> dict[str, Any]:
    """race.json (``zonelimit.race/1``): one entry per seed hunted (docs/races.md); ``start``:
    :func:`host_start` taken when the hunt began."""
    return {"format": RACE_FORMAT, "version": package_version(), "created": timestamp(),
            "host": host_record(start), "inject": inject, "sched": sched,
            "folder": str(folder), "seeds": seeds, "found": found, "runs": len(seeds), "summary": summary}


def write_race_json(folder: Path, doc: dict[str, Any]) -> Path:
    """Write ``folder/race.json`` atomically."""
    return write_doc(Path(folder) / RACE_JSON, doc, RACE_FORMAT, indent=1)


def read_race(folder: Path) -> dict[str, Any]:
    """Read and check ``folder/race.json``."""
    path = Path(folder) / RACE_JSON
    try:
        return read_doc(path, RACE_FORMAT)
    except FileNotFoundError:
        raise DocumentError(f"{folder}: no {RACE_JSON} (not a race hunt folder)") from None


def read_bench(path: Path) -> dict[str, Any]:
    """Read and check a bench file (``results/bench/<stamp>.json``)."""
    try:
        return read_doc(Path(path), BENCH_FORMAT)
    except FileNotFoundError:
        raise DocumentError(f"{path}: no such bench file") from None


def bench_document(figures: list[dict[str, Any]], *, quick: bool, repeat_n: int, elapsed: float,
                   start: dict[str, Any] | None) -> dict[str, Any]:
    """The bench document (``zonelimit.bench/1``): every figure of performance.md, raw values
    kept; ``start``: :func:`host_start` taken before the first measurement."""
    host = host_record(start)
    loads = [host[k][0] if host[k] else None for k in ("loadavg_start", "loadavg_end")]
    return {
        "format": BENCH_FORMAT,
        "version": package_version(),
        "created": timestamp(),
        "host": {**host, "loadavg_1min": loads},  # loadavg_1min: [start, end], as bench/1 always had
        "quick": quick,
        "repeat": repeat_n,
        "elapsed_s": elapsed,
        "missed": [f["id"] for f in figures if f["met"] is False],
        "figures": finite_or_null({f["id"]: f for f in figures}),
    }


def write_bench(out_dir: Path, doc: dict[str, Any]) -> Path:
    """Write ``out_dir/<timestamp>.json``; an existing file is never replaced (``-2``, ...):
    each name is tried with ``link(2)``, which fails rather than replace."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    n = 1
    while True:
        path = out_dir / (f"{stamp}-{n}.json" if n > 1 else f"{stamp}.json")
        try:
            return write_doc(path, doc, BENCH_FORMAT, exclusive=True)
        except FileExistsError:
            n += 1
