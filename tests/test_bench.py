"""``python -m stress bench``: the quick bench writes a JSON holding every figure of
performance.md, the table marks missed targets, results are never overwritten, and bad
options are one line and exit 2.  No timing is asserted: only that figures exist."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from stress import documents
from stress.commands import bench
from stress.engine import measure

ROOT = Path(__file__).resolve().parent.parent
MEASURED_ALWAYS = ("P1", "P2", "P5.lock", "P5.sched", "P5.invariants", "P8")


def _bench(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stress", "bench", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.smp
def test_quick_bench_writes_every_figure(tmp_path):
    proc = _bench("--quick", "--repeat", "1", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1 and str(files[0]) in proc.stdout
    doc = json.loads(files[0].read_text())
    assert doc["format"] == documents.BENCH_FORMAT and doc["quick"] is True
    figs = doc["figures"]
    assert {f.split(".")[0] for f in figs} == set(bench.FIGURE_IDS)
    for fid, fig in figs.items():
        assert {"median", "min", "max", "target", "met", "note", "values"} <= set(fig)
        if fig["median"] is None:  # only where the host cannot measure it, and it says why
            assert fid not in MEASURED_ALWAYS and fig["note"].startswith("n/a"), (fid, fig["note"])
        else:
            assert fig["min"] <= fig["median"] <= fig["max"] and fig["median"] > 0
    for fid in MEASURED_ALWAYS:
        assert figs[fid]["median"] is not None
    assert doc["missed"] == [f for f, v in figs.items() if v["met"] is False]
    for fid in bench.FIGURE_IDS:  # one table row per figure
        assert any(line.startswith(fid) for line in proc.stdout.splitlines())


def test_table_marks_missed_and_met_targets():
    figs = bench.new_figures(compiled=False)
    figs["P1"].values = [5.0, 4.5, 6.0]
    figs["P2"].values = [3.0]
    figs["P4"].values = [0.5]
    figs["P6"].note = "n/a: the runner is not available"
    rows = {line.split()[0]: line for line in bench.table_lines(figs.values()) if line[:1] == "P"}
    assert rows["P1"].rstrip().endswith("MISSED") and "5.00x" in rows["P1"] and "4.50x" in rows["P1"]
    assert rows["P2"].rstrip().endswith("ok")
    assert rows["P4"].rstrip().endswith("-")  # only reported
    assert rows["P6"].rstrip().endswith("n/a")
    assert figs["P1"].met is False and figs["P2"].met is True and figs["P4"].met is None


@pytest.mark.bad_documents  # a bare document: only the file names are the point
def test_results_are_never_overwritten(tmp_path):
    doc = {"format": documents.BENCH_FORMAT}
    paths = {documents.write_bench(tmp_path, doc) for _ in range(3)}
    assert len(paths) == 3 and all(json.loads(p.read_text()) == doc for p in paths)


def test_p8_is_arena_over_payload():
    fig = bench.new_figures()["P8"]
    measure.measure_memory(fig)
    d = fig.detail
    assert fig.values == [d["arena_bytes"] / d["payload_bytes"]] and d["arena_bytes"] > d["payload_bytes"]


@pytest.mark.parametrize("args, option", [
    (["--repeat", "0"], "--repeat"),
    (["--repeat", "lots"], "--repeat"),
    (["--only", "P9"], "--only"),
])
@pytest.mark.smp
def test_bad_options_are_one_line_and_exit_2(args, option):
    proc = _bench(*args, timeout=60)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert option in last and "Traceback" not in proc.stderr


@pytest.mark.smp
def test_out_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    proc = _bench("--only", "P8", "--out", str(f), timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"zonelimit: error: --out: {f} exists and is not a folder"


def test_targets_follow_the_allocator_mode():
    """Compiled, the pairs called from Python must beat the interpreted floor itself."""
    interp, comp = bench.new_figures(compiled=False), bench.new_figures(compiled=True)
    assert interp["P1"].check is not None and comp["P1"].check is not None
    assert interp["P1"].check(3.9) and not comp["P1"].check(3.9) and comp["P1"].check(0.45)
    assert comp["P2"].check is not None and comp["P2"].check(0.9) and not comp["P2"].check(1.1)
    assert bench._figure_list("p1c,P1") == ["P1c", "P1"]


REFERENCE_BENCH = ROOT / "results" / "reference" / "performance" / "bench-round2-20261125-191443.json"


def test_compare_calls_significant_changes_only(tmp_path, capsys):
    """bench --compare OLD NEW, the pyperf way: every figure's change with its interval;
    significant only where the interval excludes 1 and the Mann-Whitney p agrees."""
    new = json.loads(REFERENCE_BENCH.read_text())
    new["figures"]["P1"]["values"] = [v * 0.8 for v in new["figures"]["P1"]["values"]]  # 5 values: faster
    new["figures"]["P5.lock"]["values"] = [v * 0.8 for v in new["figures"]["P5.lock"]["values"]]  # slower
    new["figures"]["P6"]["values"] = [v * 0.5 for v in new["figures"]["P6"]["values"]]  # 3 values: cannot tell
    new["figures"]["P8"]["values"] = []
    path = tmp_path / "new.json"
    path.write_text(json.dumps(new))
    args = argparse.Namespace(compare=[str(REFERENCE_BENCH), str(path)])
    assert bench.main(args) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line[:1] == "P"}
    assert rows["P1"].endswith("significant: better") and " 0.800x " in rows["P1"]
    assert rows["P5.lock"].endswith("significant: worse")
    assert rows["P6"].endswith("not significant")
    assert rows["P2"].endswith("not significant") and " 1.000x " in rows["P2"]
    assert rows["P8"].endswith(f"not measured in {path}")


@pytest.mark.bad_documents
def test_compare_of_a_file_that_is_not_a_bench_is_refused(tmp_path, capsys):
    other = tmp_path / "run.json"
    other.write_text(json.dumps({"format": "zonelimit.run/1"}))
    args = argparse.Namespace(compare=[str(REFERENCE_BENCH), str(other)])
    assert bench.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("zonelimit: error: --compare: ") and err.count("\n") == 1


@pytest.mark.parametrize("compiled", [False, True])
def test_every_figure_of_either_mode_passes_the_bench_schema(compiled):
    """P1c and P3.cpu are figure ids the schema must accept, measured or not."""
    figs = bench.new_figures(compiled=compiled)
    for i, f in enumerate(figs.values()):
        f.values = [1.0 + i]
    doc = documents.bench_document([f.to_dict() for f in figs.values()], quick=True, repeat_n=1, elapsed=1.0,
                                   start=documents.host_start())
    assert {"P1c", "P3.cpu"} <= set(doc["figures"])
    assert documents.schema_errors(doc, "bench") == []
