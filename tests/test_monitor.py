"""What a person sees: config line, CPU map, summary, progress, and ``report`` of a saved run."""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Any

import pytest

from stress.commands import report
from stress.config import RunConfig
from stress.documents import write_run_json
from stress.output import monitor
from stress.output.plots import PLOT_COLUMNS
from stress.samples import SampleWriter, append_netstat

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def wedged_doc() -> dict[str, Any]:
    """A run.json of a 2005 wedge, shaped as cli.md says."""
    cfg = RunConfig(cpus=2, era="2005", refcount="buggy-eq0", wakeup="one", policy="none", nmbclusters=1024)
    return {
        "format": "zonelimit.run/1",
        "version": "0.1.0",
        "config": cfg.to_dict(),
        "host": {"cores": 2, "python": "3.11.7"},
        "duration_s": 12.5,
        "verdict": "wedged",
        "exit_code": 1,
        "ops": {"total": 250000, "per_s": 20000.0, "per_cpu_per_s": [11000.0, 9000.0]},
        "zones": [
            {"name": "mbuf", "size": 256, "limit": 0, "used": 5, "free": 90, "req": 9000, "fail": 0, "sleep": 0},
            {"name": "mbuf_cluster", "size": 2048, "limit": 1024, "used": 1024, "free": 0, "req": 8000,
             "fail": 0, "sleep": 7},
            {"name": "mbuf_packet", "size": 256, "limit": 0, "used": 12, "free": 700, "req": 7000, "fail": 0,
             "sleep": 3},
        ],
        "netstat": {"mbufs": {"current": 17, "cache": 790, "total": 807},
                    "clusters": {"current": 324, "cache": 700, "total": 1024, "max": 1024},
                    "packets": {"current": 12, "cache": 700}},
        "peak": {"clusters_current": 1024, "clusters_total": 1024, "packet_cache": 700},
        "wedge": {"at_s": 11.2, "zone": "mbuf_cluster", "wchan": "zonelimit", "sleeping_cpus": [0, 1],
                  "keg_free_meanwhile": 0},
        "audit": {"items_accounted": 3000, "lost": {"mbuf": 0, "cluster": 37},
                  "stranded": {"clusters_in_packet_cache": 700}, "double_owned": 0, "poison_errors": 0,
                  "payload_errors": 0},
        "locks": [
            {"name": "mbuf keg", "count": 100, "contended": 10, "wait_total_us": 50.0, "wait_max_us": 9.0,
             "hold_total_us": 80.0, "hold_max_us": 2.0},
            {"name": "cluster keg", "count": 200, "contended": 40, "wait_total_us": 400.0,
             "wait_max_us": 30.0, "hold_total_us": 90.0, "hold_max_us": 3.0},
        ],
        "samples": "samples.csv",
    }


def test_config_line_says_what_runs() -> None:
    cfg = RunConfig(cpus=2, era="2005", refcount="atomic", wakeup="one", policy="none", nmbclusters=4096,
                    rounds=5, round_length=3.0, idle=1.0, seed=9, inject=("refcount-eq0",), sched="pct",
                    pct_depth=2, invariants=True)
    line = monitor.config_line(cfg)
    assert "\n" not in line
    for part in ("era 2005", "refcount atomic", "wakeup one", "policy none", "2 CPUs", "nmbclusters 4096",
                 "5 rounds of 3 s, idle 1 s", "seed 9", "inject refcount-eq0", "sched pct depth 2",
                 "INVARIANTS"):
        assert part in line, part
    assert "trim-interval" not in line, "no trimming without a policy"


def test_mapping_lines() -> None:
    assert monitor.mapping_lines({0: 0, 1: 1}) == ["CPU 0 -> core 0", "CPU 1 -> core 1"]
    lines = monitor.mapping_lines({0: 0, 1: 1, 2: 0})
    assert lines[0].endswith("(shared by 2 CPUs)") and lines[2].endswith("(shared by 2 CPUs)")
    assert "shared" not in lines[1]


def test_summary_of_a_wedge(tmp_path: Path) -> None:
    lines = monitor.summary_lines(wedged_doc(), tmp_path)
    text = "\n".join(lines)
    assert lines[0].split()[:3] == ["ITEM", "SIZE", "LIMIT"]
    assert any(line.startswith("mbuf_cluster:") for line in lines)
    assert "37 clusters" in text and "LEAK" in text
    assert "700 clusters in packet cache" in text
    assert "20,000 ops/s" in text
    assert "wedged in [zonelimit] at 11.2 s: zone mbuf_cluster, CPUs 0,1 asleep" in text
    assert "  keg free meanwhile: 0" in lines
    assert "verdict: WEDGED" in text and "(exit 1)" in text
    assert lines[-1] == f"run folder: {tmp_path}"
    lock_rows = [line for line in lines if line.endswith("keg")]
    assert lock_rows[0].endswith("cluster keg"), "most waited-on lock first"


def test_workload_and_trim_lines() -> None:
    assert monitor.workload_lines(None, None) == []
    assert monitor.workload_lines({"name": "netperf", "packets": 47776, "rx_drops": 0}, {"intervals": 0}) == [
        "workload netperf: packets 47,776, rx drops 0"]
    assert monitor.workload_lines({}, {"intervals": 3, "drained": 2}) == [
        "trim callout: intervals 3, drained 2"]


def test_summary_of_a_clean_run(tmp_path: Path) -> None:
    doc = wedged_doc()
    doc.update(verdict="ok", exit_code=0, wedge=None, locks=[])
    doc["audit"]["lost"] = {"mbuf": 0, "cluster": 0}
    text = "\n".join(monitor.summary_lines(doc, tmp_path))
    assert "LEAK" not in text and "wedged" not in text and "lock contention" not in text
    assert "verdict: ok" in text


def test_summary_prints_the_allocators_audit_words(tmp_path: Path) -> None:
    doc = wedged_doc()
    doc["audit_lines"] = ["audit: 3000 items walked", "  LOST: 37 clusters, 0 mbufs (true leak)"]
    lines = monitor.summary_lines(doc, tmp_path)
    i = lines.index("audit: 3000 items walked")
    assert lines[i + 1] == "  LOST: 37 clusters, 0 mbufs (true leak)"
    assert lines[i + 2] == "  double owned: 0, poison errors: 0, payload errors: 0"
    assert not any(line.startswith("audit: 3,000 items accounted") for line in lines), "one audit, not two"


def test_schedule_and_stop_lines() -> None:
    assert monitor.schedule_lines(None) == []
    pct = {"mode": "pct", "seed": 3, "depth": 2, "steps": 2000, "total_steps": 5000, "switches": 1200}
    assert monitor.schedule_lines(pct) == [
        "schedule: pct (seed 3, depth 2, period 2,000 steps): 5,000 steps, 1,200 switches recorded"]
    replay = {**pct, "mode": "replay", "replayed": 1199, "recorded": 1200, "divergences": 1,
              "diverged_at_step": 4999}
    (line,) = monitor.schedule_lines(replay)
    assert "1,199 of 1,200 recorded switches followed" in line and "DIVERGED at step 4,999 (1 divergence)" in line
    assert monitor.stop_lines({"reason": "completed"}) == []
    assert monitor.stop_lines({"reason": "interrupted", "signal": "SIGINT"}) == ["stopped: interrupted (SIGINT)"]


def test_extra_audit_fields_read_as_words(tmp_path: Path) -> None:
    doc = wedged_doc()
    doc["audit"]["held_by_consumers"] = {"mbufs": 1256, "clusters": 183}
    doc["audit"]["lost_cluster_examples"] = [{"cluster": i, "refcount": 0} for i in range(7)]
    lines = monitor.audit_lines(doc["audit"])
    assert "  held by consumers: mbufs 1,256, clusters 183" in lines
    assert "  lost cluster examples: (cluster 0, refcount 0), (cluster 1, refcount 0), (cluster 2, refcount 0), " \
           "(cluster 3, refcount 0), (cluster 4, refcount 0) ... (2 more)" in lines


@pytest.mark.parametrize("verdict", sorted(monitor.VERDICT_WORDS))
def test_every_verdict_has_words(verdict: str) -> None:
    lines = monitor.verdict_lines({"verdict": verdict, "exit_code": 0, "error": "worker 1 died\nat x"})
    assert lines[0].startswith(f"verdict: {monitor.VERDICT_WORDS[verdict]}")
    assert lines[1:] == ["  worker 1 died", "  at x"]


def test_netstat_lines_use_the_allocators_formatter() -> None:
    lines = monitor.netstat_lines(wedged_doc())
    assert lines[0] == "17/790/807 mbufs in use (current/cache/total)"
    assert lines[1] == "324/700/1024/1024 mbuf clusters in use (current/cache/total/max)"


def test_progress_stays_off_a_pipe() -> None:
    stream = io.StringIO()
    p = monitor.Progress(10.0, stream=stream)
    p.update(5.0, "round 2")
    p.close()
    assert stream.getvalue() == ""


def test_progress_draws_and_clears_on_a_terminal() -> None:
    stream = io.StringIO()
    p = monitor.Progress(10.0, stream=stream, enabled=True)
    p.update(5.0, "round 2")
    drawn = stream.getvalue()
    assert drawn.startswith("\r[") and "50%" in drawn and "round 2" in drawn and "\n" not in drawn
    p.clear()
    assert stream.getvalue().endswith("\r")
    inner = p.render(5.0, width=80).split("]")[0][1:]
    assert set(inner) == {"#", "."} and abs(inner.count("#") - inner.count(".")) <= 1
    assert p.render(99.0).split("]")[0].count(".") == 0, "the bar never overflows"


def _saved_run(folder: Path, with_plot: bool = False) -> Path:
    folder.mkdir()
    write_run_json(folder, wedged_doc())
    append_netstat(folder, ["769/641/1410 mbufs in use (current/cache/total)",
                            "768/204/972/25600 mbuf clusters in use (current/cache/total/max)"])
    with SampleWriter(folder / "samples.csv", list(PLOT_COLUMNS)) as w:
        for i in range(5):
            w.write({"t": i, "mbufs_current": 769, "mbufs_cache": 641, "clusters_current": 768 + i,
                     "clusters_cache": 204, "clusters_max": 25600})
    return folder


def _report_args(*dirs: Path, **kw: Any) -> argparse.Namespace:
    return argparse.Namespace(run_dirs=[str(d) for d in dirs], no_netstat=kw.get("no_netstat", False),
                              replot=kw.get("replot", False), json=kw.get("json", False))


def test_report_reprints_netstat_summary_and_redraws_plot(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    run = _saved_run(tmp_path / "run")
    assert report.main(_report_args(run)) == 0
    out = capsys.readouterr().out
    assert "768/204/972/25600 mbuf clusters in use (current/cache/total/max)" in out
    assert "verdict: WEDGED" in out and "(redrawn)" in out
    assert (run / "plot.png").read_bytes()[:8] == PNG_MAGIC
    assert report.main(_report_args(run)) == 0
    assert "(redrawn)" not in capsys.readouterr().out, "an existing plot is left alone"


def test_report_refuses_a_bad_folder_before_printing(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    run = _saved_run(tmp_path / "run")
    assert report.main(_report_args(run, tmp_path / "nope")) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip().splitlines()[-1].startswith("zonelimit: error: RUN_DIR:")


def test_report_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from stress import cli

    run = _saved_run(tmp_path / "run")
    assert cli.main(["report", str(run), "--no-netstat"]) == 0
    out = capsys.readouterr().out
    assert "mbufs in use" not in out.split("ITEM")[0]
    assert cli.main(["report", str(tmp_path)]) == 2
