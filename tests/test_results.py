"""The run folder: naming never overwrites, samples are published whole, run.json round-trips
and refuses what it cannot read, netstat.txt keeps order, plot.png is drawn."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stress import documents
from stress.config import RunConfig
from stress.documents import (
    RUN_FORMAT,
    DocumentError,
    default_run_dir,
    load_run,
    run_document,
    write_run_json,
)
from stress.output.plots import PLOT_COLUMNS, plot_run
from stress.samples import SamplesError, SampleWriter, append_netstat, read_samples
from tests.fixtures import outcome, run_doc

CFG = RunConfig(cpus=2, workload="netperf", era="2005", policy="none")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --- run folder naming --------------------------------------------------------------------


def test_default_run_dir_name(tmp_path: Path) -> None:
    folder = default_run_dir(CFG, root=tmp_path)
    assert folder.parent == tmp_path and folder.is_dir()
    stamp, rest = folder.name[:15], folder.name[16:]
    assert stamp[8] == "-" and stamp.replace("-", "").isdigit()
    assert rest == "netperf-2005-none-cpus2"


def test_default_run_dir_never_reuses_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(documents.time, "strftime", lambda fmt: "20051201-120000")
    base = "20051201-120000-netperf-2005-none-cpus2"
    (tmp_path / base).mkdir()
    (tmp_path / base / "run.json").write_text("{}")
    names = [default_run_dir(CFG, root=tmp_path).name for _ in range(3)]
    assert names == [f"{base}-2", f"{base}-3", f"{base}-4"]
    assert (tmp_path / base / "run.json").read_text() == "{}"


# --- samples.csv --------------------------------------------------------------------------


def test_samples_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "samples.csv"
    with SampleWriter(path, ["t", "clusters_current", "ops"]) as w:
        w.write({"t": 0.5, "clusters_current": 768, "ops": 10})
        w.write({"t": np.float64(1.0), "clusters_current": np.int64(4341)})  # ops missing: empty cell
    cols = read_samples(path)
    assert cols["t"] == [0.5, 1.0]
    assert cols["clusters_current"] == [768.0, 4341.0]
    assert cols["ops"][0] == 10.0 and math.isnan(cols["ops"][1])
    assert path.read_text().splitlines()[2] == "1.0,4341,"


def test_samples_are_on_disk_before_close_under_a_temporary_name(tmp_path: Path) -> None:
    """A run killed mid-way keeps its samples in the temporary (every row is flushed as
    written); samples.csv appears only when the writer closes: a torn file never passes
    as complete."""
    path = tmp_path / "samples.csv"
    w = SampleWriter(path, ["t", "x"])
    w.write({"t": 1, "x": 2})
    assert not path.exists()
    assert w.writing.parent == tmp_path and w.writing.name.startswith(".samples.csv.")
    assert w.writing.read_text() == "t,x\n1,2\n"
    w.close()
    w.close()  # idempotent
    assert path.read_text() == "t,x\n1,2\n"
    assert [p.name for p in tmp_path.iterdir()] == ["samples.csv"]


def test_samples_refuse_unknown_columns(tmp_path: Path) -> None:
    w = SampleWriter(tmp_path / "s.csv", ["t"])
    with pytest.raises(ValueError, match="unknown columns"):
        w.write({"t": 1, "typo": 2})
    w.close()
    with pytest.raises(ValueError):
        w.write({"t": 2})


def test_a_torn_row_is_damage_not_a_kill(tmp_path: Path) -> None:
    """samples.csv is published whole, so a short row anywhere is refused (a kill leaves
    only the temporary, never a torn samples.csv)."""
    path = tmp_path / "samples.csv"
    path.write_text("t,x\n1,2\n2,3\n3")
    with pytest.raises(SamplesError, match=":4: 1 cells for 2 columns"):
        read_samples(path)
    path.write_text("t,x\n1\n2,3\n")
    with pytest.raises(SamplesError):
        read_samples(path)


# --- run.json -----------------------------------------------------------------------------


def _doc() -> dict[str, object]:
    return run_doc(CFG, ops={"total": np.int64(5), "per_s": 2.5, "per_cpu_per_s": np.array([1.0, 1.5])})


def test_run_json_round_trip(tmp_path: Path) -> None:
    path = write_run_json(tmp_path, _doc())
    assert path == tmp_path / "run.json"
    doc = load_run(tmp_path)
    assert next(iter(doc)) == "format" and doc["format"] == RUN_FORMAT
    assert doc["ops"] == {"total": 5, "per_s": 2.5, "per_cpu_per_s": [1.0, 1.5]}
    assert RunConfig.from_dict(doc["config"]) == CFG
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"], "no temporary file left behind"


def test_run_json_rewrite_replaces_whole(tmp_path: Path) -> None:
    write_run_json(tmp_path, _doc())
    write_run_json(tmp_path, {**_doc(), "verdict": "wedged", "exit_code": 1})
    assert load_run(tmp_path)["verdict"] == "wedged"


def test_run_json_refuses_nan_and_other_formats(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_run_json(tmp_path, {**_doc(), "duration_s": float("nan")})
    with pytest.raises(ValueError):
        write_run_json(tmp_path, {**_doc(), "format": "zonelimit.compare/1"})
    assert not (tmp_path / "run.json").exists()


@pytest.mark.parametrize(("text", "match"), [
    (None, "no run.json"),
    ("{not json", "damaged JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"config": {}}', "no format"),
    ('{"format": "pyperf/1", "config": {}}', "not a zonelimit run"),
    ('{"format": "zonelimit.run/2", "config": {}}', "newer zonelimit"),
    ('{"format": "zonelimit.run/1"}', "is a required property"),
])
@pytest.mark.bad_documents
def test_load_run_refuses_with_a_clear_message(tmp_path: Path, text: str | None, match: str) -> None:
    if text is not None:
        (tmp_path / "run.json").write_text(text)
    with pytest.raises(DocumentError, match=match):
        load_run(tmp_path)


def test_load_run_accepts_minor_versions(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text(json.dumps({**run_doc(CFG), "format": "zonelimit.run/1.3"}))
    assert load_run(tmp_path)["format"] == "zonelimit.run/1.3"


def test_load_run_of_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match="no such run folder"):
        load_run(tmp_path / "nope")


# --- netstat.txt and plot.png -------------------------------------------------------------


def test_append_netstat_keeps_order(tmp_path: Path) -> None:
    append_netstat(tmp_path, ["769/641/1410 mbufs in use (current/cache/total)"])
    append_netstat(tmp_path, [])
    append_netstat(tmp_path, ["a", "b"])
    assert (tmp_path / "netstat.txt").read_text().splitlines() == [
        "769/641/1410 mbufs in use (current/cache/total)", "a", "b"]


def test_plot_is_drawn_from_samples(tmp_path: Path) -> None:
    cols = list(PLOT_COLUMNS)
    with SampleWriter(tmp_path / "samples.csv", cols) as w:
        for i in range(20):
            w.write({"t": i * 0.5, "mbufs_current": 769, "mbufs_cache": 641 + 300 * i,
                     "clusters_current": 768 + 350 * i, "clusters_cache": 204, "clusters_max": 25600})
    path = plot_run(tmp_path)
    assert path == tmp_path / "plot.png"
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_plot_without_samples_still_draws(tmp_path: Path) -> None:
    SampleWriter(tmp_path / "samples.csv", ["t", "mbufs_current"]).close()
    assert plot_run(tmp_path).read_bytes()[:8] == PNG_MAGIC


# --- the host record and the one timestamp format ---------------------------------------------


def test_timestamps_are_iso_8601_with_a_colon_in_the_offset() -> None:
    import re

    stamp = documents.timestamp(0.0)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", stamp), stamp
    import datetime

    assert datetime.datetime.fromisoformat(stamp).timestamp() == 0.0


def _compare_document(start: dict[str, Any]) -> dict[str, Any]:
    """compare.json of one variant and no run, its statistics filled in (every field it can have)."""
    from stress.output.comparison import analyse

    doc = documents.compare_document(
        base={}, plan={"seed": 1, "repeat": 1, "precision": 0.05, "max_repeat": 6, "baseline": "a"},
        variants=[{"name": "a", "options": {}, "config": {}, "baseline": True, "runs": []}], start=start)
    return analyse({**doc, "state": "complete"})


def test_every_document_records_the_host() -> None:
    """run.json, compare.json, race.json and the bench file carry the same host record:
    the load at start (measured before) and end, CPU model, versions, git commit."""
    start = documents.host_start()
    docs = {
        "run": run_document(CFG, outcome(CFG), start),
        "compare": _compare_document(start),
        "race": documents.race_document(inject=["refcount-eq0"], sched="pct", folder=Path("x"), seeds=[],
                                        found=0, summary="", start=start),
        "bench": documents.bench_document([], quick=True, repeat_n=1, elapsed=1.0, start=start),
    }
    for kind, doc in docs.items():
        host = doc["host"]
        assert host["started"] == start["started"] and host["loadavg_start"] == start["loadavg_start"], kind
        assert len(host["loadavg_end"]) == 3 and host["cpu_model"] and host["python"], kind
        assert set(documents.RECORDED_PACKAGES) <= set(host["packages"]), kind
        assert host["git_commit"] is None or len(host["git_commit"]) == 40, kind
        assert doc["created"] == host["ended"] or doc["created"][:16] == host["ended"][:16], kind
        documents.check_document(documents.finite_or_null(doc), kind, kind)


@pytest.mark.smp  # asks git itself, a second process
def test_the_git_commit_is_the_checkout_s() -> None:
    """Read from the git files (no process started by zonelimit): what git says HEAD is."""
    import shutil
    import subprocess

    root = Path(documents.__file__).resolve().parents[1]
    if not (root / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not run from a git checkout")
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                          timeout=60).stdout.strip()
    assert documents.git_commit() == head


# --- the schemas agree with the code ---------------------------------------------------------


def test_the_schemas_name_every_field_the_writers_write() -> None:
    """Every key the builders write is described in its schema (the objects stay open for
    later additions, so an undescribed key would otherwise pass unnoticed)."""
    import dataclasses

    run = documents.schema("run")
    doc = run_doc(CFG, outcome_changes={"trim": {"intervals": 1}, "schedule": {"mode": "free", "seed": 0},
                                        "audit_lines": ["ok"], "error": "x", "profile": ["p"]})
    assert set(doc) <= set(run["properties"])
    config = run["$defs"]["config_fields"]["properties"]
    assert set(config) == {f.name for f in dataclasses.fields(RunConfig)}
    assert set(doc["host"]) <= set(documents.schema("host")["properties"])
    start = documents.host_start()
    for kind, built in {
        "compare": _compare_document(start),
        "race": documents.race_document(inject=["x"], sched="pct", folder=Path("x"), seeds=[], found=0,
                                        summary="", start=start),
        "bench": documents.bench_document([], quick=True, repeat_n=1, elapsed=1.0, start=start),
        "schedule": documents.Schedule(seed=1, ncpus=1, depth=1, steps=1).to_dict(),
    }.items():
        assert set(built) <= set(documents.schema(kind)["properties"]), kind


def test_the_schema_ranges_are_the_command_line_s() -> None:
    """run.json's config ranges are the options' (stress/options.py): a value the command
    line refuses is refused in a document too, and the other way round."""
    from stress import options
    from stress.audit import VERDICTS

    run = documents.schema("run")
    c = run["$defs"]["config_fields"]["properties"]
    assert (c["cpus"]["minimum"], c["cpus"]["maximum"]) == (1, options.MAX_CPUS)
    assert (c["nmbclusters"]["minimum"], c["nmbclusters"]["maximum"]) == (options.MIN_NMBCLUSTERS,
                                                                          options.MAX_NMBCLUSTERS)
    for name in ("round_length", "idle", "interval", "wedge_timeout", "trim_interval"):
        assert c[name]["maximum"] == options.MAX_SECONDS, name
    assert c["interval"]["minimum"] == c["trim_interval"]["minimum"] == options.MIN_PERIOD
    assert c["duration"]["maximum"] == options.MAX_SECONDS * 2 + 2  # a replay doubles it, plus 2 s
    assert c["rounds"]["maximum"] == options.MAX_ROUNDS and c["pct_depth"]["maximum"] == options.MAX_PCT_DEPTH
    assert c["page_budget"]["maximum"] == options.MAX_PAGE_BUDGET
    assert run["$defs"]["seed"]["maximum"] == options.MAX_SEED
    assert set(VERDICTS) <= set(run["$defs"]["verdict"]["enum"])
    plan = documents.schema("compare")["properties"]["plan"]["properties"]
    assert plan["repeat"]["maximum"] == plan["max_repeat"]["maximum"] == options.MAX_REPEAT
