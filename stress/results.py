"""The run folder: the one writer and reader of run.json, samples.csv, netstat.txt, plot.png.

Every run writes one folder (cli.md, "The run folder")::

    results/<YYYYmmdd-HHMMSS>-<workload>-<era>-<policy>-cpus<N>/
      run.json      the whole result, format "zonelimit.run/1" (docs/results-format.md)
      samples.csv   one row per monitor sample, flushed row by row
      netstat.txt   the netstat -m lines exactly as printed
      plot.png      mbufs and clusters, current and cache, over time, with the cluster limit

Why these rules (after pyperf):

- an existing folder is never reused, so no result is overwritten silently;
- samples are flushed per row and run.json is replaced atomically, so a run killed at any
  point leaves either the previous state or the new one, never half a file;
- the reader checks the format string and refuses a newer major version with a clear
  message instead of misreading it.

The manager (stress/manager.py) writes through these functions; ``report`` and
``replay`` read through :func:`load_run`.
"""

from __future__ import annotations

import csv
import importlib.metadata
import json
import math
import operator
import os
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from stress.config import RunConfig

RUN_FORMAT = "zonelimit.run/1"
"""Format string of run.json; the number after the slash is the major version."""

RUN_FORMAT_NAME, _, _major = RUN_FORMAT.partition("/")
RUN_FORMAT_MAJOR = int(_major)

RUN_JSON = "run.json"
SAMPLES_CSV = "samples.csv"
NETSTAT_TXT = "netstat.txt"
PLOT_PNG = "plot.png"

#: samples.csv columns that :func:`plot_run` draws (the manager may write more).
PLOT_COLUMNS = ("t", "mbufs_current", "mbufs_cache", "clusters_current", "clusters_cache", "clusters_max")


def package_version() -> str:
    """The installed zonelimit version (run.json "version", ``--version``)."""
    try:
        return importlib.metadata.version("zonelimit")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"  # running from a checkout that was never installed


class RunFolderError(ValueError):
    """A folder is not a readable run folder (missing, damaged, or a newer format)."""


def default_run_dir(cfg: RunConfig, root: Path = Path("results")) -> Path:
    """Create and return a fresh run folder ``root/<timestamp>-<workload>-<era>-<policy>-cpus<N>``.

    The folder is created here (``mkdir`` without ``exist_ok``), so two runs started in the
    same second cannot pick the same name: the second gets ``-2``, then ``-3`` and so on.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = f"{stamp}-{cfg.workload}-{cfg.era}-{cfg.policy}-cpus{cfg.cpus}"
    root.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        folder = root / (base if n == 1 else f"{base}-{n}")
        try:
            folder.mkdir()
        except FileExistsError:
            n += 1
            continue
        return folder


def _cell(value: Any) -> str:
    """One CSV cell: integers exactly, floats by their shortest round-trip text, None empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    try:
        return str(operator.index(value))  # int, numpy integer
    except TypeError:
        pass
    x = float(value)
    return "" if math.isnan(x) else repr(x)


class SampleWriter:
    """samples.csv: a header line, then one row per sample, flushed as it is written.

    Flushing per row costs one write(2) per sample (at most a few per second) and means a
    run killed with SIGKILL still leaves every sample taken before the kill.
    """

    def __init__(self, path: Path, columns: list[str]) -> None:
        """Open ``path`` for writing (truncating it) and write the header ``columns``."""
        if len(set(columns)) != len(columns):
            raise ValueError(f"duplicate sample columns: {columns}")
        self.path = Path(path)
        self.columns = list(columns)
        self._known = set(columns)
        self._file: IO[str] | None = open(self.path, "w", newline="", encoding="ascii")
        self._csv = csv.writer(self._file, lineterminator="\n")
        self._csv.writerow(self.columns)
        self._file.flush()

    def write(self, row: dict[str, float]) -> None:
        """Append one sample; a column missing from ``row`` is left empty.

        A key that is not a column raises ValueError: it would otherwise be dropped
        without anyone noticing.
        """
        if self._file is None:
            raise ValueError(f"{self.path}: sample writer is closed")
        unknown = row.keys() - self._known
        if unknown:
            raise ValueError(f"{self.path}: sample has unknown columns {sorted(unknown)}")
        self._csv.writerow([_cell(row.get(c)) for c in self.columns])
        self._file.flush()

    def close(self) -> None:
        """Close the file; safe to call twice."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> SampleWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_samples(path: Path) -> dict[str, list[float]]:
    """Read samples.csv back into columns of floats (empty cells become NaN)."""
    with open(path, newline="", encoding="ascii") as f:
        rows = [rec for rec in csv.reader(f) if rec]
    if not rows:
        return {}
    header, body = rows[0], rows[1:]
    cols: dict[str, list[float]] = {name: [] for name in header}
    for lineno, rec in enumerate(body, start=2):
        if len(rec) != len(header):
            if lineno == len(rows):
                break  # the last row torn by a kill mid-write: keep every row before it
            raise RunFolderError(f"{path}:{lineno}: {len(rec)} cells for {len(header)} columns")
        for name, text in zip(header, rec, strict=True):
            try:
                cols[name].append(float(text) if text else math.nan)
            except ValueError:
                raise RunFolderError(f"{path}:{lineno}: column {name}: not a number: {text!r}") from None
    return cols


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
    raise TypeError(f"run.json: cannot store {type(obj).__name__} {obj!r}")


def run_json_text(doc: dict[str, Any]) -> str:
    """The text of run.json for ``doc`` (also what ``--json`` prints): the format added if missing."""
    fmt = doc.get("format", RUN_FORMAT)
    if fmt != RUN_FORMAT:
        raise ValueError(f"run.json: this writer writes {RUN_FORMAT}, the document says {fmt!r}")
    doc = {"format": fmt, **{k: v for k, v in doc.items() if k != "format"}}
    return json.dumps(doc, indent=2, default=_json_default, allow_nan=False) + "\n"


def write_run_json(folder: Path, doc: dict[str, Any]) -> Path:
    """Write ``doc`` as ``folder/run.json`` atomically (temporary file, then rename); return its path.

    ``"format"`` is filled in when missing and must be :data:`RUN_FORMAT` otherwise.
    NaN and infinity are refused (JSON has no spelling for them).
    """
    text = run_json_text(doc)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / RUN_JSON
    tmp = folder / f".{RUN_JSON}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def check_format(fmt: object, where: str) -> None:
    """Raise RunFolderError unless ``fmt`` is a run format this version can read."""
    if not isinstance(fmt, str) or "/" not in fmt:
        raise RunFolderError(f"{where}: no format string (not a zonelimit run.json)")
    name, _, version = fmt.partition("/")
    major_text = version.split(".", 1)[0]
    if name != RUN_FORMAT_NAME or not major_text.isdigit():
        raise RunFolderError(f"{where}: format {fmt!r} is not a zonelimit run ({RUN_FORMAT} expected)")
    major = int(major_text)
    if major > RUN_FORMAT_MAJOR:
        raise RunFolderError(
            f"{where}: format {fmt!r} was written by a newer zonelimit; this version reads {RUN_FORMAT}"
        )
    if major < 1:
        raise RunFolderError(f"{where}: unknown format {fmt!r}")


def load_run(folder: Path) -> dict[str, Any]:
    """Read ``folder/run.json``, check its format, and return the document.

    Raises RunFolderError (a ValueError) with a one-line message when the folder is
    missing, holds no run.json, the JSON is damaged, or the format is unknown or newer.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise RunFolderError(f"{folder}: no such run folder")
    path = folder / RUN_JSON
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunFolderError(f"{folder}: no {RUN_JSON} (not a run folder, or its run did not end)") from None
    except OSError as exc:
        raise RunFolderError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise RunFolderError(f"{path}: damaged JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise RunFolderError(f"{path}: not a JSON object")
    check_format(doc.get("format"), str(path))
    if not isinstance(doc.get("config"), dict):
        raise RunFolderError(f"{path}: no \"config\" object")
    return doc


def append_netstat(folder: Path, lines: list[str]) -> None:
    """Append netstat -m lines, exactly as printed, to ``folder/netstat.txt``.

    Opened in append mode and written in one call per batch, so it survives a kill
    between batches and keeps the order in which the lines were printed.
    """
    if not lines:
        return
    with open(Path(folder) / NETSTAT_TXT, "a", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))


def _plot_context(folder: Path) -> tuple[str, float | None]:
    """From run.json when it is there: a title (what ran, how it ended) and the wedge time."""
    try:
        doc = load_run(folder)
    except RunFolderError:
        return folder.name, None
    c = doc["config"]
    what = (f"{c.get('workload', '?')}, era {c.get('era', '?')} (refcount {c.get('refcount', '?')}, "
            f"wakeup {c.get('wakeup', '?')}, policy {c.get('policy', '?')}), {c.get('cpus', '?')} CPUs")
    wedge = doc.get("wedge")
    at = wedge.get("at_s") if isinstance(wedge, dict) else None
    return f"{folder.name}\n{what}: verdict {doc.get('verdict', '?')}", (
        float(at) if isinstance(at, (int, float)) else None)


_PLOT_IMPORT: threading.Thread | None = None


def _import_plotting() -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    from matplotlib.figure import Figure  # noqa: F401


def preload_plot() -> None:
    """Start importing matplotlib (Figure, Agg canvas) in a daemon thread, so that
    :func:`plot_run` at the end of a run does not pay for it (about 0.7 s here, half of
    a short run's start+stop time, P7).  Call it only after the run's last fork: a fork
    while this thread holds the import lock would leave the child's imports locked.
    :func:`plot_run` waits for it.  The import costs the same CPU time, only earlier,
    in the manager (while the workers run)."""
    global _PLOT_IMPORT
    if _PLOT_IMPORT is None and "matplotlib.figure" not in sys.modules:
        _PLOT_IMPORT = threading.Thread(target=_import_plotting, name="preload-plot", daemon=True)
        _PLOT_IMPORT.start()


def plot_run(folder: Path, title: str | None = None) -> Path:
    """Draw ``folder/plot.png`` from ``folder/samples.csv`` and return its path.

    Two panels sharing the time axis: mbufs (current and cache) and clusters (current,
    cache, and the clusters cached in the packet zone when sampled), the netstat -m
    numbers, with the cluster limit ``clusters_max`` as a dashed line.  The 2005 wedge
    shows as clusters current climbing to the limit while mbufs current stays flat.
    When the limit is far above every curve it is named in the legend instead of drawn,
    so that it does not flatten them.  Columns missing from the CSV are left out.  Uses
    matplotlib's Agg canvas directly (no pyplot state, no display needed).
    """
    global _PLOT_IMPORT
    if _PLOT_IMPORT is not None:
        _PLOT_IMPORT.join()
        _PLOT_IMPORT = None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    folder = Path(folder)
    samples_path = folder / SAMPLES_CSV
    cols = read_samples(samples_path) if samples_path.exists() else {}
    default_title, wedged_at = _plot_context(folder)
    if title is None:
        title = default_title
    t = cols.get("t", [])

    fig = Figure(figsize=(9, 6), dpi=100)
    FigureCanvasAgg(fig)
    ax_m, ax_c = fig.subplots(2, 1, sharex=True)
    panels = (
        (ax_m, "mbufs", (("mbufs_current", "current"), ("mbufs_cache", "cache"))),
        (ax_c, "mbuf clusters", (("clusters_current", "current"), ("clusters_cache", "cache"),
                                 ("packets_cache", "cached in packet zone"))),
    )
    for ax, label, series in panels:
        drawn = [(name, ys) for col, name in series if (ys := cols.get(col)) and t]
        for name, ys in drawn:
            ax.plot(t, ys, "-", label=name)
        limits = [y for y in cols.get("clusters_max", []) if not math.isnan(y)]
        if ax is ax_c and limits and t:
            top = max((y for _, ys in drawn for y in ys if not math.isnan(y)), default=0.0)
            if top >= 0.2 * max(limits):
                ax.plot(t, cols["clusters_max"], "--", color="black", label="limit (max)")
            else:
                ax.plot([], [], "--", color="black", label=f"limit (max) {max(limits):.0f}, off scale")
            drawn.append(("limit", limits))
        if wedged_at is not None and drawn:
            ax.axvline(wedged_at, color="red", linestyle=":", label=f"wedged at {wedged_at:.1f} s")
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        if drawn:
            ax.legend(loc="best", fontsize="small", framealpha=0.8)
        else:
            ax.text(0.5, 0.5, "no samples", ha="center", va="center", transform=ax.transAxes)
    ax_c.set_xlabel("time (s)")
    ax_m.set_title(title, fontsize="medium")
    # fixed margins: tight_layout measures every text first, a third of the drawing time
    fig.subplots_adjust(left=0.09, right=0.98, top=0.91, bottom=0.08, hspace=0.08)
    out = folder / PLOT_PNG
    fig.savefig(out)
    return out
