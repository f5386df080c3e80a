"""The run's time series: samples.csv and netstat.txt, written while the run goes on.

Unlike the JSON documents (stress/documents.py), written once at the end, these grow
during the run:

- samples.csv is written under its temporary name (``.samples.csv.<pid>@<host>.tmp``,
  stress/files.py), flushed after every row (one write(2) each), and renamed to
  samples.csv when the writer closes at the end of the run.  So samples.csv exists only
  complete: a torn file cannot pass as a whole one (a kill leaves only the temporary,
  which no reader opens and a later run removes), and a reader that finds a row torn
  in samples.csv has found damage, not a kill, and says so.  Someone watching a live
  run reads the temporary.
- netstat.txt is a transcript, like run.log: the netstat -m blocks exactly as printed,
  appended one block per write(2), so it survives a kill between blocks and keeps the
  order in which the lines were printed.  Its last block may be missing after a kill,
  never half a line.

samples.csv: a header line naming the columns, then one row per sample.  Numbers only:
integers as integers, floats in their shortest exact text, an empty cell for "not
measured".  Which columns, and what is in a row, is the engine's Sampler's business
(stress/engine/sampler.py); writing a key that is not a column is an error, not a
silent drop.
"""

from __future__ import annotations

import csv
import math
import operator
from pathlib import Path
from typing import IO, Any

from stress.files import TempFile

SAMPLES_CSV = "samples.csv"
NETSTAT_TXT = "netstat.txt"


class SamplesError(ValueError):
    """samples.csv is damaged (other than a torn last row): one line."""


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
    """samples.csv: a header line, then one row per sample, flushed as it is written, under
    the temporary name until :meth:`close` publishes it.

    Flushing per row costs one write(2) per sample (at most a few per second) and means a
    run killed with SIGKILL still leaves, in the temporary, every sample taken before the
    kill (for someone to look at by hand; no reader takes it for a result).
    """

    def __init__(self, path: Path, columns: list[str]) -> None:
        """Open the temporary file of ``path`` and write the header ``columns``."""
        if len(set(columns)) != len(columns):
            raise ValueError(f"duplicate sample columns: {columns}")
        self.path = Path(path)
        self.columns = list(columns)
        self._known = set(columns)
        self._out: TempFile | None = TempFile(self.path, "w", newline="", encoding="ascii")
        self._file: IO[str] | None = self._out.opened()
        csv_file = self._file
        self._csv = csv.writer(csv_file, lineterminator="\n")
        self._csv.writerow(self.columns)
        csv_file.flush()

    @property
    def writing(self) -> Path:
        """Where the rows go until :meth:`close`: the temporary name."""
        return self._out.temp if self._out is not None else self.path

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
        """Close the file and publish it as samples.csv; safe to call twice."""
        out, self._out, self._file = self._out, None, None
        if out is not None:
            out.publish()

    def __enter__(self) -> SampleWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_samples(path: Path) -> dict[str, list[float]]:
    """Read samples.csv back into columns of floats (empty cells become NaN).

    Every row must be whole: a published samples.csv is complete (module docstring), so
    a short row is damage (SamplesError), never a kill to be forgiven."""
    with open(path, newline="", encoding="ascii") as f:
        rows = [rec for rec in csv.reader(f) if rec]
    if not rows:
        return {}
    header, body = rows[0], rows[1:]
    cols: dict[str, list[float]] = {name: [] for name in header}
    for lineno, rec in enumerate(body, start=2):
        if len(rec) != len(header):
            raise SamplesError(f"{path}:{lineno}: {len(rec)} cells for {len(header)} columns")
        for name, text in zip(header, rec, strict=True):
            try:
                cols[name].append(float(text) if text else math.nan)
            except ValueError:
                raise SamplesError(f"{path}:{lineno}: column {name}: not a number: {text!r}") from None
    return cols


def append_netstat(folder: Path, lines: list[str]) -> None:
    """Append netstat -m lines, exactly as printed, to ``folder/netstat.txt``.

    Opened in append mode and written in one call per batch, so it survives a kill
    between batches and keeps the order in which the lines were printed.
    """
    if not lines:
        return
    with open(Path(folder) / NETSTAT_TXT, "a", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))
