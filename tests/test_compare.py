"""``python -m stress compare`` on a tiny configuration (issue 4).

The structure test injects a fake ``execute`` that writes a plausible run folder (run.json
and samples.csv) without starting workers, so it checks compare itself: that every
configuration runs ``--repeat`` times with shared seeds, that compare.json, compare.txt
and compare.png are written with the documented structure, that figures are computed
from the samples, and that wide spreads are warned about.  A second test runs the real
runner on a 1-second, 2-configuration comparison.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from stress.commands import compare
from stress.config import RunConfig
from stress.documents import write_run_json
from stress.output import comparison
from stress.samples import SampleWriter
from tests.fixtures import run_doc

COLUMNS = ["t", "clusters_current", "packets_cache", "clusters_max", "ops"]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="compare")
    compare.add_arguments(parser)
    return parser.parse_args(argv)


class FakeRunner:
    """Stands in for stress.engine.runner.execute: a run folder whose numbers depend on the
    policy (so the table has something to rank) and on the seed (so there is spread)."""

    def __init__(self, noisy: bool = False) -> None:
        self.calls: list[RunConfig] = []
        self.noisy = noisy

    def __call__(self, cfg: RunConfig, out_dir: Path, echo: Any = None) -> dict[str, Any]:
        self.calls.append(cfg)
        stranded = {"none": 900, "exhaustion": 700, "median": 40}.get(cfg.policy, 300)
        if self.noisy:
            stranded = stranded * (1 + cfg.seed)  # wildly different per repeat
        t_end = 6
        with SampleWriter(out_dir / "samples.csv", COLUMNS) as w:
            for t in range(t_end + 1):
                load = t <= 3  # load for 3 s, then idle: recovery is measurable
                cache = stranded if load else (stranded if cfg.policy == "none" else 0)
                w.write({"t": t, "clusters_current": 100 if load else 10, "packets_cache": cache,
                         "clusters_max": cfg.nmbclusters, "ops": 1000 * min(t, 3)})
        wedged = cfg.era == "2005"
        doc = run_doc(
            cfg, duration_s=t_end, verdict="wedged" if wedged else "ok", exit_code=1 if wedged else 0,
            ops={"total": 3000, "per_s": 500.0 + cfg.seed, "per_cpu_per_s": [500.0],
                 "packets_per_s": 0.0 if wedged else 40.0},
            zones=[{"name": n, "size": 256, "limit": 0, "used": 1, "free": 1, "req": 1000,
                    "fail": 1 if wedged else 0, "sleep": 2 if wedged else 0, "misses": 10}
                   for n in ("mbuf", "mbuf_cluster", "mbuf_packet")],
            locks=[{"name": "mbuf keg", "count": 10, "contended": 1, "wait_total_us": 300.0}],
            wedge={"at_s": 5.0, "zone": "mbuf_cluster", "wchan": "zonelimit", "sleeping_cpus": [0]}
            if wedged else None)
        write_run_json(out_dir, doc)
        return doc


def test_compare_tiny_writes_all_three_files_with_the_documented_structure(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    fake = FakeRunner()
    args = parse(["--cpus", "2", "--duration", "1", "--nmbclusters", "1024", "--repeat", "2",
                  "--configs", "2005,modern:none,modern:median", "--seed", "7", "--out", str(out), "-q"])
    assert compare.main(args, execute=fake) == 0

    # every configuration ran --repeat times, with the same seeds, interleaved
    assert [(c.era, c.policy, c.seed) for c in fake.calls] == [
        ("2005", "none", 7), ("modern", "none", 7), ("modern", "median", 7),
        ("2005", "none", 8), ("modern", "none", 8), ("modern", "median", 8)]
    assert fake.calls[0].refcount == "buggy-eq0" and fake.calls[2].refcount == "atomic"
    assert all(c.nmbclusters == 1024 and c.cpus == 2 for c in fake.calls)

    for name in ("compare.json", "compare.txt", "compare.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    doc = json.loads((out / "compare.json").read_text())
    assert doc["format"] == "zonelimit.compare/1"
    assert doc["repeat"] == 2 and doc["seeds"] == [7, 8]
    assert [f["key"] for f in doc["figures"]] == list(comparison.FIGURE_KEYS)
    assert [r["label"] for r in doc["rows"]] == ["2005", "modern:none", "modern:median"]
    for row in doc["rows"]:
        assert {"era", "policy", "refcount", "wakeup", "summary", "runs"} <= set(row)
        assert set(row["summary"]) == set(comparison.FIGURE_KEYS)
        for s in row["summary"].values():
            assert set(s) == {"median", "min", "max", "spread", "n"}
        assert len(row["runs"]) == 2
        for run in row["runs"]:
            assert (out / run["dir"] / "run.json").exists()  # a folder per config run
            assert set(run["figures"]) == set(comparison.FIGURE_KEYS)

    med = {r["label"]: r["summary"] for r in doc["rows"]}
    # figures computed from the samples: 900 for 3 of 6 s under load, then 0 once trimmed
    assert med["modern:none"]["stranded_avg"]["median"] == pytest.approx(900)
    assert med["modern:median"]["stranded_avg"]["median"] == pytest.approx(40 * 4 / 6)
    assert med["modern:median"]["stranded_peak"]["median"] == 40
    assert med["modern:median"]["inuse_peak"]["median"] == 140
    assert med["modern:median"]["inflight_peak"]["median"] == 100
    assert med["modern:median"]["ops_per_s"] == {"median": 507.5, "min": 507.0, "max": 508.0,
                                                  "spread": pytest.approx(1 / 507.5), "n": 2}
    assert med["modern:median"]["miss_rate"]["median"] == pytest.approx(1.0)
    assert med["modern:median"]["lock_wait_us_per_op"]["median"] == pytest.approx(0.1)
    assert med["2005"]["wedged"]["median"] == 1 and med["modern:median"]["wedged"]["median"] == 0
    assert med["2005"]["sleeps"]["median"] == 6
    assert med["2005"]["packets_per_s"]["median"] == 0 and med["modern:none"]["packets_per_s"]["median"] == 40
    assert med["modern:median"]["recovery_s"]["median"] == 1  # gone by the first idle sample
    assert med["modern:none"]["recovery_s"]["median"] == 3  # never recovered: the rest of the run
    assert doc["target"]["met"] is True
    checks = doc["target"]["checks"]
    assert any(c.startswith("n/a  stranded avg vs 2005") for c in checks)  # leaks, not stranding
    assert any(c.startswith("ok   stranded avg 27 vs modern:none 900") for c in checks)

    # rebuild recomputes the same figures from the run folders and rewrites the files
    (out / "compare.png").unlink()
    compare.rebuild(out)
    again = json.loads((out / "compare.json").read_text())
    assert [r["summary"] for r in again["rows"]] == [r["summary"] for r in doc["rows"]]
    assert (out / "compare.png").exists()

    text = (out / "compare.txt").read_text()
    assert text.splitlines()[0].startswith("compare: workload netperf, 2 CPUs, nmbclusters 1024")
    for f in comparison.FIGURES:
        assert f.label in text
    assert "modern:median" in text and "target (policies.md): MET" in text


def test_compare_warns_loudly_when_spread_is_too_wide_to_rank(tmp_path: Path) -> None:
    args = parse(["--cpus", "1", "--duration", "1", "--repeat", "3", "--configs", "modern:none,modern:wss",
                  "--out", str(tmp_path / "c"), "-q"])
    assert compare.main(args, execute=FakeRunner(noisy=True)) == 0
    doc = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert any(w.startswith("WARNING: stranded clusters (peak): spread too wide to rank") for w in doc["warnings"])
    assert "WARNING" in (tmp_path / "c" / "compare.txt").read_text()


def test_compare_warns_about_runs_that_failed_an_audit_and_clamps_torn_samples(tmp_path: Path) -> None:
    class Failing(FakeRunner):
        def __call__(self, cfg: RunConfig, out_dir: Path, echo: Any = None) -> dict[str, Any]:
            doc = super().__call__(cfg, out_dir, echo)
            doc["verdict"] = "double-free"
            return doc

    args = parse(["--cpus", "1", "--repeat", "1", "--nmbclusters", "512", "--configs", "modern:none",
                  "--out", str(tmp_path / "c"), "-q"])
    assert compare.main(args, execute=Failing()) == 0
    doc = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert any("verdict double-free" in w for w in doc["warnings"])
    # 900 cached packets sampled with a limit of 512 clusters: a torn read, counted as 512
    assert doc["rows"][0]["summary"]["stranded_peak"]["median"] == 512


def test_an_interrupted_run_stops_the_whole_comparison(tmp_path: Path) -> None:
    class Interrupted(FakeRunner):
        def __call__(self, cfg: RunConfig, out_dir: Path, echo: Any = None) -> dict[str, Any]:
            doc = super().__call__(cfg, out_dir, echo)
            doc["exit_code"] = 130  # the manager caught Ctrl-C and ended its run cleanly
            return doc

    fake = Interrupted()
    args = parse(["--cpus", "1", "--repeat", "2", "--configs", "modern:none,modern:median",
                  "--out", str(tmp_path / "c"), "-q"])
    assert compare.main(args, execute=fake) == 130
    assert len(fake.calls) == 1


def test_compare_one_repeat_says_no_spread_is_known(tmp_path: Path) -> None:
    args = parse(["--cpus", "1", "--duration", "1", "--repeat", "1", "--configs", "modern:median",
                  "--out", str(tmp_path / "c"), "-q"])
    assert compare.main(args, execute=FakeRunner()) == 0
    doc = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert any("--repeat 1" in w for w in doc["warnings"])


@pytest.mark.parametrize("argv,needle", [
    (["--configs", "2006"], "--configs: unknown era '2006'"),
    (["--configs", "modern:lru"], "--configs: unknown policy 'lru'"),
    (["--repeat", "0"], "--repeat: must be a whole number from 1 to 1000"),
    (["--policy-param", "median.q=1"], "has no parameter 'q'"),
    (["--policy-param", "median.k=x"], "is not a finite number"),
    (["--policy-param", "median.k=nan"], "is not a finite number"),
    (["--workload", "nope"], "--workload: must be one of"),
    (["--cpus", "999"], "--cpus: must be a whole number from 1 to 256"),
    (["--interval", "nan"], "--interval: must be a number of seconds"),
    (["--duration", "inf"], "--duration: must be a number of seconds"),
    (["--nmbclusters", "1"], "--nmbclusters: must be a whole number from"),
    (["--rounds", "2", "--duration", "3"], "--duration: not with --rounds"),
    (["--round-length", "2"], "--round-length: only meaningful with --rounds"),
    (["--seed", "18446744073709551615", "--repeat", "2"], "--seed: repeat r runs seed + r - 1"),
])
def test_bad_compare_options_give_one_line_and_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    """Refused before any run starts (nothing is executed: the engine is never reached)."""
    from stress import cli

    code = cli.main(["compare", "--cpus", "1", "--out", str(tmp_path / "c"), "-q", *argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert needle in err.strip().splitlines()[-1] and "Traceback" not in err
    assert not (tmp_path / "c").exists(), "a refused comparison leaves no folder"


def test_compare_refuses_to_overwrite_a_previous_comparison(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "compare.json").write_text("{}")
    args = parse(["--cpus", "1", "--configs", "modern:none", "--out", str(tmp_path / "c"), "-q"])
    assert compare.main(args, execute=FakeRunner()) == 2


def test_policy_params_reach_the_run_config(tmp_path: Path) -> None:
    fake = FakeRunner()
    args = parse(["--cpus", "1", "--repeat", "1", "--configs", "modern:median,modern:wss",
                  "--policy-param", "median.k=3", "--out", str(tmp_path / "c"), "-q"])
    assert compare.main(args, execute=fake) == 0
    assert fake.calls[0].policy_params == {"k": 3.0} and fake.calls[1].policy_params == {}


@pytest.mark.smp
def test_compare_tiny_with_the_real_runner(tmp_path: Path) -> None:
    out = tmp_path / "real"
    args = parse(["--cpus", "2", "--duration", "1", "--nmbclusters", "512", "--repeat", "1",
                  "--configs", "2007,modern:median", "--out", str(out), "-q"])
    assert compare.main(args) == 0
    doc = json.loads((out / "compare.json").read_text())
    assert doc["format"] == "zonelimit.compare/1" and len(doc["rows"]) == 2
    assert (out / "compare.txt").exists() and (out / "compare.png").exists()
    for row in doc["rows"]:
        assert row["runs"][0]["verdict"] == "ok"
        assert row["summary"]["ops_per_s"]["median"] > 0
