"""``python -m stress compare``: variants and sweeps, paired statistics, precision, noise,
stops, resume and merge (issue 12).

Most tests inject a fake ``execute`` that writes a plausible run folder (run.json and
samples.csv) without starting workers, so they check compare itself: which runs it
makes with which configurations and seeds, and what it writes.  The figures of the fake
depend only on the configuration and the seed, so a resumed comparison can be checked to
write the very document an uninterrupted one writes.  One test runs the real runner.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stress import cli, stats
from stress.commands import compare, report
from stress.config import RunConfig
from stress.documents import COMPARE_FORMAT, read_compare, schema_errors, write_run_json
from stress.output import comparison
from stress.output.plots import idle_spans, limit_in_range, palette, planned_idle
from stress.samples import SampleWriter
from tests.fixtures import run_doc

COLUMNS = ["t", "running", "clusters_current", "packets_cache", "clusters_max", "ops"]
REFERENCE = Path(__file__).resolve().parent.parent / "results" / "reference" / "policies"
#: the first reference comparisons (zonelimit.compare/1, 3 repeats), kept when the
#: reference was measured again (format /2): what every reader must still upgrade
V1 = Path(__file__).resolve().parent / "data" / "compare-v1"
TIMINGS = ("created", "finished", "history", "version", "host")  #: what may differ between two writes of one result


def valid(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc``, checked against stress/schemas/compare.schema.json."""
    problems = schema_errors(doc, "compare")
    assert not problems, problems
    return doc


def noise(share: float) -> dict[str, Any]:
    """run.json ``noise``: others took ``share`` of the run's one core."""
    return {"loadavg_start": [0.1, 0.1, 0.1], "loadavg_end": [0.1, 0.1, 0.1], "cores": [0], "wall_s": 6.0,
            "own_cpu_s": 6.0 * (1 - share), "busy_s": 6.0, "others_cpu_s": 6.0 * share, "others_share": share}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="compare")
    compare.add_arguments(parser)
    return parser.parse_args(argv)


Figures = Callable[[RunConfig], float]


class FakeRunner:
    """Stands in for stress.engine.runner.execute: a run folder whose stranded clusters
    depend on the policy (so there is something to rank) and, when ``noisy``, wildly on
    the seed; throughput is 500 + seed in every variant (a paired ratio of exactly 1)."""

    def __init__(self, noisy: bool = False, stranded: Figures | None = None, extra: dict[str, Any] | None = None,
                 stop_at: int | None = None, stop_code: int = 130) -> None:
        self.calls: list[RunConfig] = []
        self.noisy = noisy
        self.stranded = stranded
        self.extra = extra or {}
        self.stop_at = stop_at  #: the call (1-based) that a signal cuts (the runner returns its exit code)
        self.stop_code = stop_code

    def __call__(self, cfg: RunConfig, out_dir: Path, echo: Any = None) -> dict[str, Any]:
        self.calls.append(cfg)
        assert out_dir.is_dir() and not any(out_dir.iterdir()), "compare claims a new, empty folder"
        if (out_dir.parent / "compare.json").exists():
            valid(json.loads((out_dir.parent / "compare.json").read_text()))  # as written while running
        if self.stranded is not None:
            stranded = self.stranded(cfg)
        else:
            stranded = {"none": 900, "exhaustion": 700, "median": 40}.get(cfg.policy, 300)
            if self.noisy:
                stranded = stranded * (1 + cfg.seed)  # wildly different per repeat
        t_end = 6
        with SampleWriter(out_dir / "samples.csv", COLUMNS) as w:
            for t in range(t_end + 1):
                load = t <= 3  # load for 3 s, then idle: recovery is measurable
                cache = stranded if load else (stranded if cfg.policy == "none" else 0)
                w.write({"t": t, "running": int(load), "clusters_current": 100 if load else 10,
                         "packets_cache": cache, "clusters_max": cfg.nmbclusters, "ops": 1000 * min(t, 3)})
        wedged = cfg.era == "2005"
        cut = self.stop_at is not None and len(self.calls) == self.stop_at
        fields: dict[str, Any] = {
            "verdict": "interrupted" if cut else "wedged" if wedged else "ok",
            "exit_code": self.stop_code if cut else (1 if wedged else 0), "noise": noise(0.0), **self.extra}
        doc = run_doc(
            cfg, duration_s=t_end,
            ops={"total": 3000, "per_s": 500.0 + cfg.seed, "per_cpu_per_s": [500.0],
                 "packets_per_s": 0.0 if wedged else 40.0},
            zones=[{"name": n, "size": 256, "limit": 0, "used": 1, "free": 1, "req": 1000,
                    "fail": 1 if wedged else 0, "sleep": 2 if wedged else 0, "misses": 10}
                   for n in ("mbuf", "mbuf_cluster", "mbuf_packet")],
            locks=[{"name": "mbuf keg", "count": 10, "contended": 1, "wait_total_us": 300.0}],
            wedge={"at_s": 5.0, "zone": "mbuf_cluster", "wchan": "zonelimit", "sleeping_cpus": [0]}
            if wedged else None, **fields)
        write_run_json(out_dir, doc)
        return doc


def run(argv: list[str], fake: FakeRunner | None = None) -> int:
    return compare.main(parse(argv), execute=fake or FakeRunner())


def load(folder: Path) -> dict[str, Any]:
    return valid(json.loads((folder / "compare.json").read_text()))


def without_timings(doc: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in doc.items() if k not in TIMINGS}
    out["variants"] = [{**v, "runs": [{k: x for k, x in r.items() if k not in ("duration_s", "noise")}
                                      for r in v["runs"]]} for v in doc["variants"]]
    return out


# --- what compare writes ----------------------------------------------------------------------


def test_compare_writes_three_files_with_the_documented_structure(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    fake = FakeRunner()
    assert run(["--cpus", "2", "--duration", "1", "--nmbclusters", "1024", "--repeat", "2",
                "--configs", "2005,modern:none,modern:median", "--seed", "7", "--out", str(out), "-q"], fake) == 0

    # every variant ran --repeat times, with the same seeds, interleaved
    assert [(c.era, c.policy, c.seed) for c in fake.calls] == [
        ("2005", "none", 7), ("modern", "none", 7), ("modern", "median", 7),
        ("2005", "none", 8), ("modern", "none", 8), ("modern", "median", 8)]
    assert fake.calls[0].refcount == "buggy-eq0" and fake.calls[2].refcount == "atomic"
    assert all(c.nmbclusters == 1024 and c.cpus == 2 and c.lock_profile and c.interval == 0.25
               for c in fake.calls)

    for name in ("compare.json", "compare.txt", "compare.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no temporary file is left"

    doc = load(out)
    assert doc["format"] == COMPARE_FORMAT == "zonelimit.compare/2"
    assert doc["state"] == "complete" and doc["stop"] is None and doc["finished"]
    assert doc["created"][10] == "T" and doc["created"][-3] == ":"  # ISO 8601, a colon in the offset
    assert doc["repeats"] == 2 and doc["seeds"] == [7, 8]
    assert doc["plan"] == {"seed": 7, "repeat": 2, "precision": None, "max_repeat": None, "baseline": "2005",
                           "key_figures": ["stranded_avg", "ops_per_s", "lock_wait_us_per_op"]}
    # base: run options only, shared by every variant
    assert not {"out", "json", "verbosity", "seed", "replay_from"} & set(doc["base"])
    assert doc["base"]["nmbclusters"] == 1024 and doc["base"]["workload"] == "netperf"
    assert "era" not in doc["base"] and doc["variants"][0]["config"]["era"] == "2005"
    assert [f["key"] for f in doc["figures"]] == list(comparison.FIGURE_KEYS)
    assert [v["name"] for v in doc["variants"]] == ["2005", "modern:none", "modern:median"]
    assert [v["baseline"] for v in doc["variants"]] == [True, False, False]
    assert doc["variants"][2]["options"] == {"era": "modern", "policy": "median"}
    for v in doc["variants"]:
        assert set(v["summary"]) == set(comparison.FIGURE_KEYS)
        for s in v["summary"].values():
            assert set(s) == {"median", "low", "high", "n", "relative_half_width"}
        assert len(v["runs"]) == 2
        for r in v["runs"]:
            assert (out / r["dir"] / "run.json").exists()  # a folder per run
            assert set(r["figures"]) == set(comparison.FIGURE_KEYS)
            assert r["parallel"] is False and r["noise"]["others_share"] == 0.0
    assert doc["variants"][0]["versus"] is None
    assert set(doc["variants"][1]["versus"]["stranded_avg"]) == {"kind", "estimate", "low", "high", "p", "n",
                                                                 "verdict", "more_repeats", "why"}

    med = {v["name"]: v["summary"] for v in doc["variants"]}
    # figures computed from the samples: 900 for 3 of 6 s under load, then 0 once trimmed
    assert med["modern:none"]["stranded_avg"]["median"] == pytest.approx(900)
    assert med["modern:median"]["stranded_avg"]["median"] == pytest.approx(40 * 4 / 6)
    assert med["modern:median"]["stranded_peak"]["median"] == 40
    assert med["modern:median"]["inuse_peak"]["median"] == 140
    assert med["modern:median"]["inflight_peak"]["median"] == 100
    assert med["modern:median"]["ops_per_s"]["median"] == 507.5
    assert med["modern:median"]["miss_rate"]["median"] == pytest.approx(1.0)
    assert med["modern:median"]["lock_wait_us_per_op"]["median"] == pytest.approx(0.1)
    assert med["2005"]["wedged"]["median"] == 1 and med["modern:median"]["wedged"]["median"] == 0
    assert med["2005"]["sleeps"]["median"] == 6
    assert med["modern:median"]["recovery_s"]["median"] == 1  # gone by the first idle sample
    assert med["modern:none"]["recovery_s"]["median"] == 3  # never recovered: the rest of the run

    text = (out / "compare.txt").read_text()
    assert text.splitlines()[0].startswith("compare: workload netperf, 2 CPUs, nmbclusters 1024")
    for f in comparison.FIGURES:
        assert f.label in text
    # the project's own target is not the user's business
    assert "target" not in doc and "target" not in text.lower() and "MET" not in text
    # two pairs: nothing can be called, and the table says so
    assert "NOTE: 2 paired repeats: with fewer than 6 the signed-rank test cannot reach p < 0.05" in text
    assert all(c["verdict"] != stats.BETTER for v in doc["variants"][1:] for c in v["versus"].values())


def test_differences_are_called_only_with_six_pairs_and_an_interval_that_excludes_1(tmp_path: Path) -> None:
    argv = ["--cpus", "1", "--variant", "base:policy=none", "--variant", "k1:policy=median,median.k=1", "-q"]
    assert run([*argv, "--repeat", "5", "--out", str(tmp_path / "five")]) == 0
    five = load(tmp_path / "five")["variants"][1]["versus"]
    assert five["stranded_avg"]["verdict"] == stats.UNDISTINGUISHED
    assert five["stranded_avg"]["more_repeats"] == 1 and "5 < 6" in five["stranded_avg"]["why"]
    assert run([*argv, "--repeat", "6", "--out", str(tmp_path / "six")]) == 0
    six = load(tmp_path / "six")["variants"][1]["versus"]
    assert six["stranded_avg"]["verdict"] == stats.BETTER and six["stranded_avg"]["high"] < 1
    assert six["ops_per_s"]["verdict"] == stats.UNDISTINGUISHED  # the same in every pair: no difference
    assert six["ops_per_s"]["estimate"] == 1.0 and six["ops_per_s"]["more_repeats"] is None
    text = (tmp_path / "six" / "compare.txt").read_text()
    assert "better" in text and "NOTE" not in text


def test_report_of_the_committed_v1_references_recomputes_the_statistics(capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(run_dirs=[str(V1 / "steady"), str(V1 / "netperf-nfs")],
                              no_netstat=False, replot=False, json=False, baseline="modern:none")
    assert report.main(args) == 0
    out = capsys.readouterr().out
    assert out.count("== ") == 2 and "baseline modern:none" in out
    assert "stranded clusters (avg)" in out and "3 < 6: the signed-rank test cannot reach p < 0.05" in out
    doc = read_compare(V1 / "steady")
    assert doc["upgraded_from"] == "zonelimit.compare/1" and doc["format"] == COMPARE_FORMAT
    assert "verbosity" not in doc["base"] and "json" not in doc["base"]
    assert doc["variants"][0]["options"] == {"era": "2005"}


@pytest.mark.parametrize("folder", [*(REFERENCE / p.name for p in sorted(REFERENCE.iterdir())
                                       if (p / "compare.json").exists()),
                                     *(V1 / p.name for p in sorted(V1.iterdir()))], ids=str)
def test_every_committed_reference_is_read(folder: Path) -> None:
    """The references as measured (compare/2) and the first ones (compare/1, upgraded)."""
    doc = valid(json.loads(json.dumps(comparison.analyse(read_compare(folder)))))
    n = 3 if folder.parent == V1 else 6
    assert doc["repeats"] == n and all(len(v["runs"]) == n for v in doc["variants"])
    assert comparison.report_lines(doc)


def test_report_of_a_compare_folder_with_json_and_a_bad_baseline(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--cpus", "1", "--configs", "modern:none,modern:median", "--out", str(tmp_path / "c"), "-q"]) == 0
    capsys.readouterr()
    args = argparse.Namespace(run_dirs=[str(tmp_path / "c")], no_netstat=False, replot=False, json=True,
                              baseline="modern:median")
    assert report.main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["variants"][1]["baseline"] and doc["variants"][0]["versus"] is not None
    args.baseline = "nope"
    assert report.main(args) == 2
    assert "no variant named 'nope'" in capsys.readouterr().err


# --- variants and sweeps ------------------------------------------------------------------------


def test_variants_set_any_run_option_and_policy_params_in_either_form(tmp_path: Path) -> None:
    fake = FakeRunner()
    assert run(["--cpus", "1", "--repeat", "1", "--out", str(tmp_path / "c"), "-q",
                "--variant", "base:policy=none",
                "--variant", "k1:policy=median,median.k=1",
                "--variant", "k3:policy=median,median.k=3,nmbclusters=1024,workload=burst",
                "--variant", "races:inject=wake-one+lost-wakeup,sched=pct,era=2005,invariants=1",
                "--policy-param", "window=4"], fake) == 0
    base, k1, k3, races = fake.calls
    assert (base.policy, base.policy_params) == ("none", {})
    assert (k1.policy, k1.policy_params) == ("median", {"k": 1.0, "window": 4.0})
    assert (k3.policy_params["k"], k3.nmbclusters, k3.workload) == (3.0, 1024, "burst")
    assert (races.inject, races.sched, races.era, races.refcount, races.invariants, races.policy) == (
        ("wake-one", "lost-wakeup"), "pct", "2005", "buggy-eq0", True, "none")
    doc = load(tmp_path / "c")
    assert doc["variants"][2]["options"] == {"policy": "median", "median.k": "3", "nmbclusters": "1024",
                                             "workload": "burst"}
    assert doc["variants"][2]["config"]["nmbclusters"] == 1024 and "nmbclusters" not in doc["base"]


def test_a_sweep_runs_the_cartesian_product(tmp_path: Path) -> None:
    fake = FakeRunner()
    assert run(["--cpus", "1", "--repeat", "1", "--out", str(tmp_path / "c"), "-q",
                "--sweep", "median.k=1,2,3", "--sweep", "nmbclusters=1024,2048"], fake) == 0
    assert [(c.policy_params["k"], c.nmbclusters) for c in fake.calls] == [
        (1.0, 1024), (1.0, 2048), (2.0, 1024), (2.0, 2048), (3.0, 1024), (3.0, 2048)]
    assert all(c.policy == "median" for c in fake.calls)  # the modern era's policy
    doc = load(tmp_path / "c")
    assert doc["variants"][0]["name"] == "median.k=1,nmbclusters=1024"
    assert sorted(p.name for p in (tmp_path / "c").iterdir() if p.is_dir())[0] == "median.k=1_nmbclusters=1024-s0"


def test_without_variants_the_default_configurations_run(tmp_path: Path) -> None:
    fake = FakeRunner()
    assert run(["--cpus", "1", "--repeat", "1", "--out", str(tmp_path / "c"), "-q"], fake) == 0
    assert [v["name"] for v in load(tmp_path / "c")["variants"]] == list(compare.DEFAULT_CONFIGS)
    assert [(c.era, c.policy) for c in fake.calls][:3] == [("2005", "none"), ("2007", "exhaustion"),
                                                          ("modern", "none")]


def test_an_era_sweep_keeps_each_era_preset_and_explicit_options_beat_it(tmp_path: Path) -> None:
    fake = FakeRunner()
    assert run(["--cpus", "1", "--repeat", "1", "--out", str(tmp_path / "c"), "-q",
                "--variant", "plain:", "--variant", "atomic:refcount=atomic", "--sweep", "era=2005,2007"], fake) == 0
    assert [(c.era, c.refcount, c.wakeup) for c in fake.calls] == [
        ("2005", "buggy-eq0", "one"), ("2007", "atomic", "all"), ("2005", "atomic", "one"), ("2007", "atomic", "all")]


@pytest.mark.parametrize(("argv", "needle"), [
    (["--configs", "2006"], "--configs: unknown era '2006'"),
    (["--configs", "modern:lru"], "--configs modern:lru: --policy: must be one of none,"),
    (["--policy-param", "median.q=1"], "has no parameter 'q'"),
    (["--policy-param", "median.k=x"], "--policy-param: must be NAME=VALUE"),
    (["--policy-param", "watermark.high=9", "--configs", "modern:median"], "no variant runs a policy with that"),
    (["--workload", "nope"], "--workload: must be one of"),
    (["--cpus", "200"], "--cpus: must be 1 to"),
    (["--variant", "a:nmbclusters=1"], "--variant a: --nmbclusters: must be a whole number"),
    (["--variant", "a:seed=3"], "--variant a: seed: not an option a variant can set"),
    (["--variant", "a:colour=red"], "--variant a: colour: not an option a variant can set"),
    (["--variant", "a:lock-profile=0"], "--variant a: lock_profile: not an option a variant can set"),
    (["--variant", "a:policy=median,wss.periodic=1"], "--variant a: --policy-param: wss.periodic is a parameter"),
    (["--variant", "a:invariants=maybe"], "a switch takes 1 or 0"),
    (["--variant", "a:round-length=2"], "--variant a: --round-length: only meaningful with --rounds"),
    (["--variant", "a:policy=none", "--variant", "a:policy=wss"], "variant 'a' is listed twice"),
    (["--sweep", "nmbclusters=1024,0"], "--sweep nmbclusters=0: --nmbclusters: must be a whole number"),
    (["--baseline", "nope"], "--baseline: no variant named 'nope'"),
    (["--seed", str(2**64 - 2), "--repeat", "3"], "--seed: repeat r runs seed + r - 1"),
    (["--rounds", "2", "--duration", "3"], "--duration: not with --rounds"),
    (["--policy-param", "median.k=nan"], "--policy-param: must be NAME=VALUE"),
    (["--max-repeat", "8"], "--max-repeat: only with --precision"),
    (["--precision", "5%", "--repeat", "9", "--max-repeat", "8"], "--max-repeat: must be at least the 9"),
])
def test_bad_compare_options_give_one_line_and_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    """Refused before any run starts, one line, no folder left (through the command line,
    which releases every claimed folder on its way out)."""
    fake = FakeRunner()
    code = cli.main(["compare", "--cpus", "1", "--out", str(tmp_path / "c"), "-q", *argv])  # a later --cpus wins
    err = capsys.readouterr().err
    assert code == 2, err
    assert needle in err.strip().splitlines()[-1] and "Traceback" not in err, err
    assert not fake.calls and not (tmp_path / "c").exists(), "nothing runs, nothing is written"


@pytest.mark.parametrize(("argv", "needle"), [
    (["--duration", "inf"], "--duration"), (["--duration", "nan"], "--duration"),
    (["--repeat", "0"], "--repeat"), (["--repeat", "1001"], "--repeat"), (["--interval", "0.001"], "--interval"),
    (["--precision", "0"], "--precision"), (["--precision", "150%"], "--precision"),
    (["--interval", "nan"], "--interval"), (["--nmbclusters", "1"], "--nmbclusters"),
])
def test_bad_values_are_refused_by_the_parser(argv: list[str], needle: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(argv)
    assert needle in capsys.readouterr().err


def test_precision_is_a_fraction_or_a_percentage() -> None:
    assert compare.precision_value("5%") == pytest.approx(0.05) == compare.precision_value("0.05")


def test_compare_refuses_to_overwrite_a_previous_comparison(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "compare.json").write_text("{}")
    assert run(["--cpus", "1", "--configs", "modern:none", "--out", str(tmp_path / "c"), "-q"]) == 2


# --- precision ------------------------------------------------------------------------------------


def _converging(cfg: RunConfig) -> float:
    """Stranded clusters within 1% of 500 whatever the seed: tight from the start."""
    return 500 + cfg.seed % 3


def test_precision_stops_as_soon_as_every_key_figure_is_tight(tmp_path: Path) -> None:
    fake = FakeRunner(stranded=_converging)
    assert run(["--cpus", "1", "--configs", "modern:none,modern:wss", "--precision", "5%", "--max-repeat", "20",
                "--out", str(tmp_path / "c"), "-q"], fake) == 0
    doc = load(tmp_path / "c")
    assert len(fake.calls) == 2 * stats.MIN_PAIRS  # at least six repeats, and no more were needed
    assert doc["precision"]["reached"] and not doc["precision"]["gave_up"] and doc["precision"]["wide"] == []
    assert "precision: every key figure's 95% interval within ±5% of its median after 6 repeats" in (
        tmp_path / "c" / "compare.txt").read_text()


def test_precision_gives_up_loudly_at_max_repeat(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake = FakeRunner(noisy=True)
    assert run(["--cpus", "1", "--configs", "modern:none,modern:wss", "--precision", "1%", "--max-repeat", "8",
                "--out", str(tmp_path / "c")], fake) == 0
    doc = load(tmp_path / "c")
    assert len(fake.calls) == 2 * 8 and doc["repeats"] == 8 and doc["seeds"] == list(range(8))
    assert doc["precision"]["gave_up"] and not doc["precision"]["reached"]
    assert {w["figure"] for w in doc["precision"]["wide"]} == {"stranded_avg"}
    printed = capsys.readouterr().out
    lines = (tmp_path / "c" / "compare.txt").read_text().splitlines()
    assert lines[2].startswith("WARNING: PRECISION NOT REACHED: gave up after 8 repeats")  # at the top
    assert lines[2] in printed


# --- noise ------------------------------------------------------------------------------------------


def test_noisy_runs_are_warned_about_and_their_timing_figures_marked(tmp_path: Path) -> None:
    fake = FakeRunner(extra={"noise": noise(0.45)})
    assert run(["--cpus", "1", "--repeat", "2", "--configs", "modern:none,modern:median",
                "--out", str(tmp_path / "c"), "-q"], fake) == 0
    doc = load(tmp_path / "c")
    assert doc["noise"]["disturbed"] == 4 and doc["noise"]["max_others_share"] == 0.45
    text = (tmp_path / "c" / "compare.txt").read_text()
    assert "WARNING: noise: 4 of 4 runs disturbed; other processes took up to 45% of a run's cores" in text
    overview = text.split("overview")[1].split("\n\n")[1].splitlines()
    assert all(line.endswith("~") == any(f.label in line and f.timing for f in comparison.FIGURES)
               for line in overview[1:])


def test_require_quiet_refuses_a_busy_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(compare.UsageError, match="load average is 3.00, above the 2 usable cores"):
        compare.check_quiet(3.0, 0.0, 2)
    with pytest.raises(compare.UsageError, match="used 1.5 of the 2 usable cores"):
        compare.check_quiet(1.0, 1.5, 2)
    compare.check_quiet(1.9, 0.5, 2)
    monkeypatch.setattr(compare, "machine_load", lambda: (99.0, 0.0))
    fake = FakeRunner()
    assert run(["--cpus", "1", "--configs", "modern:none", "--require-quiet", "--out", str(tmp_path / "c"), "-q"],
               fake) == 2
    assert "--require-quiet" in capsys.readouterr().err and not fake.calls


# --- stops, resume, merge --------------------------------------------------------------------------


def test_a_run_cut_by_ctrl_c_keeps_what_finished_and_writes_a_partial_result(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "c"
    fake = FakeRunner(stop_at=4)
    assert run(["--cpus", "1", "--repeat", "3", "--configs", "modern:none,modern:median", "--out", str(out)],
               fake) == 130
    assert len(fake.calls) == 4, "no run starts after the stop"
    doc = load(out)
    assert doc["state"] == "partial" and doc["stop"] == {"reason": "SIGINT", "exit_code": 130}
    assert [len(v["runs"]) for v in doc["variants"]] == [2, 1]
    assert doc["history"][0]["interrupted_run"] == "modern_median-s1.interrupted"
    assert (out / "modern_median-s1.interrupted" / "run.json").exists(), "the cut run's folder is kept"
    assert not (out / "modern_median-s1").exists()
    text = (out / "compare.txt").read_text()
    assert text.splitlines()[1] == "state: partial" and "WARNING: PARTIAL comparison: stopped by SIGINT" in text
    assert (out / "compare.png").exists()
    err = capsys.readouterr().err
    assert f"complete it with: python -m stress compare --resume {out}" in err


def test_sigterm_between_runs_stops_before_the_next_run(tmp_path: Path) -> None:
    class Signalling(FakeRunner):
        def __call__(self, cfg: RunConfig, out_dir: Path, echo: Any = None) -> dict[str, Any]:
            doc = super().__call__(cfg, out_dir, echo)
            if len(self.calls) == 3:
                os.kill(os.getpid(), signal.SIGTERM)  # arrives while compare is between runs
            return doc

    fake = Signalling()
    assert run(["--cpus", "1", "--repeat", "3", "--configs", "modern:none,modern:median",
                "--out", str(tmp_path / "c"), "-q"], fake) == 143
    assert len(fake.calls) == 3
    doc = load(tmp_path / "c")
    assert doc["state"] == "partial" and doc["stop"]["reason"] == "SIGTERM"
    assert sum(len(v["runs"]) for v in doc["variants"]) == 3  # the run that finished is kept


def test_a_stop_before_the_first_run_writes_a_truthful_empty_result(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    plan = compare.new_plan

    def interrupted_plan(args: argparse.Namespace) -> Any:
        out = plan(args)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while compare prepares
        return out

    monkeypatch.setattr(compare, "new_plan", interrupted_plan)
    fake = FakeRunner()
    assert run(["--cpus", "1", "--configs", "modern:none,modern:median", "--out", str(tmp_path / "c"), "-q"],
               fake) == 130
    assert not fake.calls
    doc = load(tmp_path / "c")
    assert doc["state"] == "partial" and doc["repeats"] == 0 and doc["seeds"] == []
    assert all(v["runs"] == [] and v["summary"]["stranded_avg"]["n"] == 0 for v in doc["variants"])
    assert "no seed finished" in (tmp_path / "c" / "compare.txt").read_text()
    assert compare.main(parse(["--resume", str(tmp_path / "c"), "-q"]), execute=fake) == 0
    assert len(fake.calls) == 2 * compare.DEFAULT_REPEAT


@pytest.mark.parametrize("cut", [1, 5, 8, 13])
def test_resume_completes_a_cut_comparison_to_the_document_an_uninterrupted_one_writes(
        tmp_path: Path, cut: int) -> None:
    argv = ["--cpus", "1", "--configs", "modern:none,modern:median", "--precision", "5%", "--max-repeat", "9",
            "--seed", "3", "-q"]

    def stranded(cfg: RunConfig) -> float:  # tight after 7 repeats: precision decides where it stops
        return 500 + (60 if cfg.seed < 5 else 0) * (-1) ** cfg.seed

    whole = tmp_path / "whole"
    fake = FakeRunner(stranded=stranded)
    assert run([*argv, "--out", str(whole)], fake) == 0
    planned = len(fake.calls)
    assert planned == 2 * 7

    cutdir = tmp_path / "cut"
    first = FakeRunner(stranded=stranded, stop_at=cut)
    assert run([*argv, "--out", str(cutdir)], first) == 130
    again = FakeRunner(stranded=stranded)
    assert compare.main(parse(["--resume", str(cutdir), "-q"]), execute=again) == 0
    assert len(first.calls) - 1 + len(again.calls) == planned, "the cut run again, nothing done twice"
    assert [(c.policy, c.seed) for c in first.calls[:-1] + again.calls] == [(c.policy, c.seed) for c in fake.calls]
    resumed, uninterrupted = load(cutdir), load(whole)
    assert resumed["state"] == "complete" and len(resumed["history"]) == 2 and resumed["history"][1]["resumed"]
    assert without_timings(resumed) == without_timings(uninterrupted)
    assert (cutdir / "compare.txt").read_text() == (whole / "compare.txt").read_text()


def test_resume_after_a_kill_moves_the_half_made_run_aside(tmp_path: Path) -> None:
    out = tmp_path / "c"
    argv = ["--cpus", "1", "--repeat", "2", "--configs", "modern:none,modern:median", "-q"]
    assert run([*argv, "--out", str(tmp_path / "whole")]) == 0
    assert run([*argv, "--out", str(out)]) == 0
    doc = load(out)  # what a SIGKILL after 3 runs, during the 4th, leaves behind
    doc["variants"][1]["runs"] = doc["variants"][1]["runs"][:1]
    doc.update(state="running", finished=None)
    (out / "compare.json").write_text(json.dumps(doc))
    (out / "modern_median-s1" / "run.json").unlink()
    fake = FakeRunner()
    assert compare.main(parse(["--resume", str(out), "-q"]), execute=fake) == 0
    assert [(c.policy, c.seed) for c in fake.calls] == [("median", 1)]
    assert (out / "modern_median-s1.interrupted").is_dir()
    assert without_timings(load(out)) == without_timings(load(tmp_path / "whole"))


def test_resume_is_one_sitting_at_a_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A resume claims its folder: refused while a live run holds it; a dead writer's claim
    (a SIGKILLed comparison) is taken over."""
    import socket

    from stress import files

    out = tmp_path / "c"
    assert run(["--cpus", "1", "--configs", "modern:none", "--repeat", "2", "--out", str(out), "-q"],
               FakeRunner(stop_at=2)) == 130
    marker = out / files.CLAIM
    assert not marker.exists(), "released when compare ended"
    marker.mkdir()
    (marker / "owner").write_text(f"1 {socket.gethostname()} 0\n")  # pid 1 is alive: another sitting
    capsys.readouterr()
    assert compare.main(parse(["--resume", str(out), "-q"]), execute=FakeRunner()) == 2
    err = capsys.readouterr().err
    assert err.startswith("zonelimit: error: --resume: ") and "claimed by another run (pid 1 on" in err
    (marker / "owner").write_text(f"{2**22 + 12345} {socket.gethostname()} 0\n")  # no such process
    fake = FakeRunner()
    assert compare.main(parse(["--resume", str(out), "-q"]), execute=fake) == 0
    assert len(fake.calls) == 1 and not marker.exists()


@pytest.mark.parametrize(("argv", "needle"), [
    (["--repeat", "4"], "--resume: takes the plan from DIR/compare.json; leave out --repeat"),
    (["--variant", "a:"], "leave out --variant"),
])
def test_resume_refuses_a_new_plan_and_a_complete_comparison(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             argv: list[str], needle: str) -> None:
    assert run(["--cpus", "1", "--configs", "modern:none", "--repeat", "1", "--out", str(tmp_path / "c"), "-q"]) == 0
    capsys.readouterr()
    assert compare.main(parse(["--resume", str(tmp_path / "c"), *argv])) == 2
    assert needle in capsys.readouterr().err
    assert compare.main(parse(["--resume", str(tmp_path / "c")])) == 2
    assert "is complete: nothing to resume" in capsys.readouterr().err
    assert compare.main(parse(["--resume", str(tmp_path / "nowhere")])) == 2
    assert "not a comparison folder" in capsys.readouterr().err


def test_merge_joins_comparisons_pairing_within_each(tmp_path: Path) -> None:
    argv = ["--cpus", "1", "--configs", "modern:none,modern:median", "--repeat", "3", "-q"]
    assert run([*argv, "--seed", "0", "--out", str(tmp_path / "a")]) == 0
    assert run([*argv, "--seed", "3", "--out", str(tmp_path / "b")]) == 0
    assert run([*argv, "--seed", "0", "--out", str(tmp_path / "c")]) == 0  # the same seeds, run again elsewhere
    merged = tmp_path / "m"
    assert compare.main(parse(["--merge", str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "c"),
                               "--out", str(merged), "-q"])) == 0
    doc = load(merged)
    assert doc["state"] == "complete" and [m["origin"] for m in doc["merged_from"]] == ["1", "2", "3"]
    assert doc["seeds"] == [0, 1, 2, 3, 4, 5] and doc["repeats"] == 9  # 3 + 3 new seeds + 3 more pairs
    for v in doc["variants"]:
        assert len(v["runs"]) == 9
        assert all((merged / r["dir"] / "run.json").exists() for r in v["runs"])
    assert doc["variants"][1]["versus"]["stranded_avg"]["n"] == 9
    assert doc["variants"][1]["versus"]["stranded_avg"]["verdict"] == stats.BETTER
    assert (merged / "compare.txt").exists() and (merged / "compare.png").exists()


def test_merge_reads_the_first_format_and_refuses_other_variants(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(V1 / "steady", tmp_path / "again")
    assert compare.main(parse(["--merge", str(V1 / "steady"), str(tmp_path / "again"),
                               "--out", str(tmp_path / "m"), "-q"])) == 0
    doc = load(tmp_path / "m")
    assert doc["repeats"] == 6 and doc["merged_from"][0]["format"] == "zonelimit.compare/1"
    assert compare.main(parse(["--merge", str(V1 / "steady"), str(V1 / "rounds"),
                               "--out", str(tmp_path / "n"), "-q"])) == 2
    assert "differs between" in capsys.readouterr().err
    assert compare.main(parse(["--merge", str(V1 / "steady"), str(V1 / "burst-percpu"),
                               "--out", str(tmp_path / "o"), "-q"])) == 2
    assert "has other variants" in capsys.readouterr().err


def test_the_schema_can_fail() -> None:
    doc = {"format": "zonelimit.compare/2", "version": "0.1.0", "created": "2026-12-08T10:11:12+01:00",
           "finished": None, "state": "running", "stop": None, "history": [], "base": {"cpus": 2},
           "plan": {"seed": 0, "repeat": 3, "precision": None, "max_repeat": None, "baseline": "a"},
           "variants": [{"name": "a", "options": {}, "config": {}, "baseline": True, "runs": []}]}
    valid(doc)
    for bad in ({"base": {"cpus": 2, "verbosity": -1}}, {"created": "2026-12-08T10:11:12+0100"},
                {"state": "complete"}, {"stop": {"reason": "SIGHUP", "exit_code": 129}}):
        assert schema_errors({**doc, **bad}, "compare"), bad


def test_json_prints_the_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--cpus", "1", "--configs", "modern:none", "--repeat", "1", "--out", str(tmp_path / "c"),
                "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed.pop("folder") == str(tmp_path / "c")  # --json names where it wrote (issue 14)
    assert printed == load(tmp_path / "c")


def test_a_failed_audit_is_warned_about_and_a_tester_error_exits_3(tmp_path: Path) -> None:
    fake = FakeRunner(extra={"verdict": "double-free"})
    assert run(["--cpus", "1", "--repeat", "1", "--nmbclusters", "512", "--configs", "modern:none",
                "--out", str(tmp_path / "c"), "-q"], fake) == 0
    doc = load(tmp_path / "c")
    assert any("verdict double-free" in w for w in doc["warnings"])
    # 900 cached packets sampled with a limit of 512 clusters: a torn read, counted as 512
    assert doc["variants"][0]["summary"]["stranded_peak"]["median"] == 512
    assert run(["--cpus", "1", "--repeat", "1", "--configs", "modern:none", "--out", str(tmp_path / "e"), "-q"],
               FakeRunner(extra={"verdict": "error"})) == 3


# --- pictures --------------------------------------------------------------------------------------


def test_palette_has_no_grey_and_limits_are_drawn_only_in_range() -> None:
    colours = palette(24)
    assert len({tuple(c) for c in colours}) == 24
    assert all(not (abs(c[0] - c[1]) < 0.02 and abs(c[1] - c[2]) < 0.02) for c in colours)
    assert limit_in_range(2048, 2000) and not limit_in_range(25600, 400) and not limit_in_range(None, 10)


def test_idle_spans_are_where_the_load_was_off() -> None:
    t = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert idle_spans(t, [1, 1, 0, 0, 1, 0, 0]) == [(2.0, 4.0), (5.0, 6.0)]
    assert idle_spans(t, [1] * 7) == [] and idle_spans([], []) == []
    rounds = {"rounds": 3, "round_length": 2.0, "idle": 1.0}
    assert planned_idle(rounds, 9.0) == [(2.0, 3.0), (5.0, 6.0), (8.0, 9.0)]
    assert planned_idle(rounds, 6.7) == [(2.0, 3.0), (5.0, 6.0)]  # a wedge ended it early
    assert planned_idle({**rounds, "idle": 0.0}, 9.0) is None and planned_idle({}, 9.0) is None


# --- the real runner --------------------------------------------------------------------------------


@pytest.mark.smp
def test_compare_with_the_real_runner(tmp_path: Path) -> None:
    out = tmp_path / "real"
    assert compare.main(parse(["--cpus", "2", "--duration", "1", "--nmbclusters", "512", "--repeat", "1",
                               "--variant", "none:policy=none", "--variant", "k3:policy=median,median.k=3",
                               "--out", str(out), "-q"])) == 0
    doc = load(out)
    assert doc["format"] == COMPARE_FORMAT and len(doc["variants"]) == 2
    assert (out / "compare.txt").exists() and (out / "compare.png").exists()
    for v in doc["variants"]:
        run0 = v["runs"][0]
        assert run0["verdict"] == "ok" and v["summary"]["ops_per_s"]["median"] > 0
        assert 0.0 <= run0["noise"]["others_share"] <= 1.0 and run0["noise"]["cores"] == [0, 1]
    assert json.loads((out / "k3-s0" / "run.json").read_text())["config"]["policy_params"]["k"] == 3.0


def test_the_run_plot_shades_idle_time_and_shows_lost_clusters_apart(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from stress.output import plots

    folder = tmp_path / "run"
    folder.mkdir()
    cfg = RunConfig(cpus=1, era="2005", refcount="buggy-eq0", wakeup="one", policy="none", nmbclusters=512)
    FakeRunner()(cfg, folder)
    doc = json.loads((folder / "run.json").read_text())
    write_run_json(folder, {**doc, "audit": {**doc["audit"], "lost": {"mbuf": 0, "cluster": 7}}})
    seen: dict[str, list[str]] = {}

    def save(fig: Any, axes: tuple[Any, ...], path: Path) -> Path:
        seen["labels"] = [t.get_text() for ax in axes if ax.get_legend() for t in ax.get_legend().get_texts()]
        return path

    monkeypatch.setattr(plots, "_save", save)
    plots.plot_run(folder)
    assert "lost at the end (audit): 7" in seen["labels"] and "current (lost included)" in seen["labels"]
    assert "idle (load off)" in seen["labels"]


# --- plugins in variants (docs/extending.md) ---------------------------------------------------

_KEEP = '''
from allocator.policy import KEEP, Policy


class Keep(Policy):
    name = "keep-all"
    PARAMS = {"level": (3.0, "a number")}

    def decide(self, obs):
        return KEEP
'''


def test_variants_take_plugin_policies_and_their_parameters(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """policy= and --configs take a plugin spec (loaded by run's own parser, its PARAMS the
    allowed parameters); its folder is named by the class, not the path; the document
    records the plugin, and a resume loads it only when trusted."""
    src = tmp_path / "keep_plugin.py"
    src.write_text(_KEEP, encoding="utf-8")
    spec = f"{src}:Keep"
    out = tmp_path / "c"
    fake = FakeRunner()
    argv = ["--cpus", "1", "--repeat", "1", "--variant", "base:policy=none", "--variant", f"k:policy={spec}",
            "--configs", f"modern:{spec}", "--policy-param", f"{spec}.level=7", "--out", str(out), "-q"]
    assert run(argv, fake) == 0
    assert [c.policy for c in fake.calls] == [spec, "none", spec]
    assert fake.calls[0].policy_params == {"level": 7.0} and fake.calls[2].policy_params == {"level": 7.0}
    assert fake.calls[0].plugins["policy"]["name"] == "keep-all"
    doc = load(out)
    assert [v["folder"] for v in doc["variants"]] == ["modern_Keep", "base", "k"]
    assert (out / "modern_Keep-s0" / "run.json").is_file()
    assert doc["variants"][0]["config"]["plugins"]["policy"]["spec"] == spec

    doc.update(state="partial", finished=None)  # as a stop leaves it: the last variant's run cut
    doc["variants"][2]["runs"] = []
    (out / "compare.json").write_text(json.dumps(doc))
    capsys.readouterr()
    assert compare.main(parse(["--resume", str(out), "-q"]), execute=FakeRunner()) == 2
    assert "a document's code is loaded only with --trust-plugins" in capsys.readouterr().err
    again = FakeRunner()
    assert compare.main(parse(["--resume", str(out), "--trust-plugins", "-q"]), execute=again) == 0
    assert [c.policy for c in again.calls] == [spec]
    doc["variants"][2]["runs"] = []
    (out / "compare.json").write_text(json.dumps({**doc, "state": "partial"}))
    src.write_text(_KEEP + "\n# changed\n", encoding="utf-8")
    assert compare.main(parse(["--resume", str(out), "--trust-plugins", "-q"]), execute=FakeRunner()) == 2
    assert "--resume: policy " in capsys.readouterr().err


def test_a_plugin_parameter_is_refused_for_an_unknown_or_unused_policy(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--cpus", "1", "--configs", "modern:none", "--policy-param", "zzz=2", "--out",
                str(tmp_path / "a")]) == 2
    assert "no policy has a parameter 'zzz'" in capsys.readouterr().err
    assert run(["--cpus", "1", "--configs", "modern:none", "--policy-param", "x/keep.py:Keep.level=2",
                "--out", str(tmp_path / "b")]) == 2
    assert "unknown policy 'x/keep.py:Keep'" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
