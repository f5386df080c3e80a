"""The run's time series: samples.csv and netstat.txt, written while the run goes on.

Unlike the JSON documents (stress/documents.py), written once at the end, these grow
during the run, so a run killed at any point still leaves every sample taken before the
kill: samples.csv is flushed after every row (a torn last row is dropped on reading),
netstat.txt is appended one batch at a time, exactly as printed.

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
