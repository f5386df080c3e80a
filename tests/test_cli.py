"""The CLI contract of cli.md: help, refusal of bad values, option resolution, exit codes.

Most cases call ``stress.cli.main(argv)`` in-process with the manager replaced by a
recorder, so they are fast and need no allocator; a few run ``python -m stress`` as a
user would, to check the module entry point and that no traceback escapes.  The
``--json`` contract test runs a real (short) run and needs the manager.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stress import cli, options
from stress.commands import run as run_command
from stress.config import RunConfig
from stress.cpulist import format_cpulist, parse_cpulist
from stress.documents import write_run_json
from tests.fixtures import run_doc

ROOT = Path(__file__).resolve().parent.parent
NCORES = len(os.sched_getaffinity(0))


class Recorder:
    """Stands in for stress.commands.run.main_run: records the configuration, returns a code."""

    def __init__(self, code: int = 0, exc: BaseException | None = None) -> None:
        self.code = code
        self.exc = exc
        self.configs: list[RunConfig] = []

    def __call__(self, cfg: RunConfig, folder: Path | None = None, cores: list[int] | None = None,
                 lease_wait: float = 600.0, what: str = "run") -> int:
        self.configs.append(cfg)
        if folder is not None:  # a claimed folder the run writes into (an empty one is removed)
            (folder / "run.log").write_text("recorded\n")
        if self.exc is not None:
            raise self.exc
        return self.code

    @property
    def cfg(self) -> RunConfig:
        assert len(self.configs) == 1, self.configs
        return self.configs[0]


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    rec = Recorder()
    monkeypatch.setattr(run_command, "main_run", rec)
    return rec


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- help -------------------------------------------------------------------------------


@pytest.mark.parametrize("sub", [None, *cli.SUBCOMMANDS])
def test_help_of_every_subcommand_exits_0(capsys: pytest.CaptureFixture[str], sub: str | None) -> None:
    argv = ["--help"] if sub is None else [sub, "--help"]
    code, out, err = run_main(capsys, *argv)
    assert code == 0, err
    assert "usage:" in out


def test_top_level_help_describes_run_options(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys, "--help")
    assert code == 0
    for option in ("--cpus", "--duration", "--workload", "--era", "--policy", "--refcount", "--wakeup",
                   "--nmbclusters", "--rounds", "--round-length", "--idle", "--interval", "--wedge-timeout",
                   "--seed", "--inject", "--jitter", "--invariants", "--lock-profile", "--profile", "--out",
                   "--json", "--quiet", "--oversubscribe", "--trim-interval", "--sched", "--pct-depth"):
        assert option in out, option
    for sub in cli.SUBCOMMANDS:
        assert sub in out


def test_every_run_option_states_its_default() -> None:
    parser = cli.build_parser()
    run = cli._subparser(parser, "run")
    missing = [a.option_strings for a in run._actions
               if a.option_strings and a.dest != "help" and a.help != argparse.SUPPRESS  # internal: a child run's
               and "default" not in (a.help or "")]
    assert not missing


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys, "--version")
    assert code == 0
    assert out.startswith("zonelimit ")


# --- bad values: exit 2, the option named on the last stderr line, no traceback ----------

BAD = [
    (["--cpus", "0"], "--cpus"),
    (["--cpus", "two"], "--cpus"),
    (["--cpus", "-3"], "--cpus"),
    (["--cpus", "1.5"], "--cpus"),
    (["--cpus", str(options.MAX_CPUS + 1), "--oversubscribe"], "--cpus"),
    (["--cpus"], "--cpus"),
    (["--duration", "-1"], "--duration"),
    (["--duration", "0"], "--duration"),
    (["--duration", "nan"], "--duration"),
    (["--duration", "inf"], "--duration"),
    (["--duration", "soon"], "--duration"),
    (["--workload", "no-such-workload"], "--workload"),
    (["--era", "1999"], "--era"),
    (["--policy", "lru"], "--policy"),
    (["--refcount", "sloppy"], "--refcount"),
    (["--wakeup", "some"], "--wakeup"),
    (["--nmbclusters", "0"], "--nmbclusters"),
    (["--nmbclusters", "1"], "--nmbclusters"),
    (["--nmbclusters", "lots"], "--nmbclusters"),
    (["--nmbclusters", str(options.MAX_NMBCLUSTERS + 1)], "--nmbclusters"),
    (["--rounds", "-1"], "--rounds"),
    (["--rounds", "2", "--round-length", "0"], "--round-length"),
    (["--rounds", "2", "--idle", "-1"], "--idle"),
    (["--round-length", "3"], "--round-length"),
    (["--idle", "3"], "--idle"),
    (["--interval", "0"], "--interval"),
    (["--interval", "-0.5"], "--interval"),
    (["--wedge-timeout", "0"], "--wedge-timeout"),
    (["--trim-interval", "0"], "--trim-interval"),
    (["--seed", "-1"], "--seed"),
    (["--seed", "0x10"], "--seed"),
    (["--seed", str(2**64)], "--seed"),
    (["--inject", "no-such-race"], "--inject"),
    (["--inject", "refcount-eq0,bogus"], "--inject"),
    (["--inject", ""], "--inject"),
    (["--sched", "fair"], "--sched"),
    (["--sched", "replay"], "--sched"),
    (["--jitter", "1.5"], "--jitter"),
    (["--jitter", "-0.1"], "--jitter"),
    (["--jitter", "0.2", "--sched", "pct"], "--jitter"),
    (["--pct-depth", "0"], "--pct-depth"),
    (["--policy-param", "k"], "--policy-param"),
    (["--policy-param", "k=x"], "--policy-param"),
    (["--policy", "median", "--policy-param", "no_such_param=1"], "--policy-param"),
    (["--policy", "median", "--policy-param", "wss.periodic=1"], "--policy-param"),
    (["--policy", "median", "--policy-param", "lru.k=1"], "--policy-param"),
    (["--quiet", "-v"], "--quiet"),
    (["--no-such-option"], "--no-such-option"),
]


@pytest.mark.parametrize(("argv", "option"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_value_is_refused(capsys: pytest.CaptureFixture[str], runner: Recorder,
                              argv: list[str], option: str) -> None:
    code, _, err = run_main(capsys, *argv)
    assert code == 2
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"zonelimit: error: {option}"), last
    assert not runner.configs, "a refused run must not start"


def test_more_cpus_than_cores_needs_oversubscribe(capsys: pytest.CaptureFixture[str], runner: Recorder,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(options, "usable_cores", lambda: [0])
    code, _, err = run_main(capsys, "--cpus", "2")
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("zonelimit: error: --cpus:") and "--oversubscribe" in last
    code, _, err = run_main(capsys, "--cpus", "2", "--oversubscribe")
    assert code == 0
    assert runner.cfg.cpus == 2 and runner.cfg.oversubscribe
    assert "warning" in err and "--oversubscribe" in err


def test_out_that_holds_files_is_refused(capsys: pytest.CaptureFixture[str], runner: Recorder,
                                         tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text("{}")
    code, _, err = run_main(capsys, "--out", str(tmp_path))
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("zonelimit: error: --out:")


def test_unknown_command_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(capsys, "reprot", "x")
    assert code == 2
    assert "reprot" in err.strip().splitlines()[-1]


@pytest.mark.parametrize(("argv", "option"), [(["--cpus", "two"], "--cpus"), (["--era", "1999"], "--era"),
                                              (["--no-such-option"], "--no-such-option")])
@pytest.mark.smp
def test_bad_value_as_a_user_sees_it(argv: list[str], option: str) -> None:
    """Through `python -m stress`, as contract-check runs it: exit 2, no traceback."""
    r = subprocess.run([sys.executable, "-m", "stress", *argv, "--duration", "1"], capture_output=True,
                       text=True, cwd=ROOT, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert option in r.stderr.strip().splitlines()[-1]


# --- resolution: era preset, then explicit options ----------------------------------------


def test_defaults_make_the_modern_era(capsys: pytest.CaptureFixture[str], runner: Recorder) -> None:
    code, _, _ = run_main(capsys)
    assert code == 0
    cfg = runner.cfg
    assert cfg.cpus == NCORES
    assert (cfg.era, cfg.refcount, cfg.wakeup, cfg.policy) == ("modern", "atomic", "all", "median")
    assert (cfg.workload, cfg.nmbclusters, cfg.sched) == ("netperf", 25600, "free")


def test_run_is_the_default_command(capsys: pytest.CaptureFixture[str], runner: Recorder) -> None:
    run_main(capsys, "--cpus", "1", "--duration", "2")
    run_main(capsys, "run", "--cpus", "1", "--duration", "2")
    assert runner.configs[0] == runner.configs[1]


def test_era_2005_preset(capsys: pytest.CaptureFixture[str], runner: Recorder) -> None:
    run_main(capsys, "--era", "2005", "--cpus", "1")
    assert (runner.cfg.refcount, runner.cfg.wakeup, runner.cfg.policy) == ("buggy-eq0", "one", "none")


def test_explicit_option_beats_era(capsys: pytest.CaptureFixture[str], runner: Recorder) -> None:
    run_main(capsys, "--era", "2005", "--refcount", "atomic", "--cpus", "1")
    cfg = runner.cfg
    assert (cfg.era, cfg.refcount, cfg.wakeup, cfg.policy) == ("2005", "atomic", "one", "none")


def test_rounds_set_the_duration(capsys: pytest.CaptureFixture[str], runner: Recorder) -> None:
    run_main(capsys, "--cpus", "1", "--rounds", "3", "--round-length", "2", "--idle", "0.5")
    cfg = runner.cfg
    assert (cfg.rounds, cfg.round_length, cfg.idle, cfg.duration) == (3, 2.0, 0.5, 7.5)


def test_duration_with_rounds_is_refused(capsys: pytest.CaptureFixture[str], runner: Recorder) -> None:
    """The rounds decide a run's length; a --duration beside them would be recorded and
    not honoured (a 2 s run became 60 s), so the pair is refused."""
    code, _, err = run_main(capsys, "--cpus", "1", "--rounds", "3", "--round-length", "2", "--duration", "4")
    assert code == 2 and runner.configs == []
    assert err.strip().splitlines()[-1] == ("zonelimit: error: --duration: not with --rounds: a run of rounds "
                                            "lasts rounds x (round-length + idle) = 6 s; give one or the other")


def test_race_options(capsys: pytest.CaptureFixture[str], runner: Recorder) -> None:
    run_main(capsys, "--cpus", "1", "--inject", "refcount-eq0,wake-one", "--inject", "refcount-eq0",
             "--jitter", "0.25", "--seed", "7")
    cfg = runner.cfg
    assert cfg.inject == ("refcount-eq0", "wake-one")
    assert (cfg.sched, cfg.jitter, cfg.seed) == ("jitter", 0.25, 7)


def test_pct_and_policy_params(capsys: pytest.CaptureFixture[str], runner: Recorder) -> None:
    run_main(capsys, "--cpus", "1", "--sched", "pct", "--pct-depth", "4", "--policy", "median",
             "--policy-param", "k=3")
    cfg = runner.cfg
    assert (cfg.sched, cfg.pct_depth, cfg.policy, cfg.policy_params) == ("pct", 4, "median", {"k": 3.0})


def test_policy_params_are_accepted_in_both_forms(capsys: pytest.CaptureFixture[str], runner: Recorder) -> None:
    run_main(capsys, "--cpus", "1", "--policy", "median", "--policy-param", "median.k=3",
             "--policy-param", "window=4")
    assert runner.cfg.policy_params == {"k": 3.0, "window": 4.0}


def test_output_flags(capsys: pytest.CaptureFixture[str], runner: Recorder, tmp_path: Path) -> None:
    run_main(capsys, "--cpus", "1", "--json", "-q", "--out", str(tmp_path / "r"))
    cfg = runner.cfg
    assert (cfg.json, cfg.verbosity, cfg.out) == (True, -1, str(tmp_path / "r"))


# --- exit codes ---------------------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 1, 3, 130])
def test_exit_code_of_the_run_is_passed_through(capsys: pytest.CaptureFixture[str], runner: Recorder,
                                                code: int) -> None:
    runner.code = code
    assert run_main(capsys, "--cpus", "1")[0] == code


def test_tester_crash_exits_3_with_traceback(capsys: pytest.CaptureFixture[str], runner: Recorder) -> None:
    runner.exc = RuntimeError("arena could not be created")
    code, _, err = run_main(capsys, "--cpus", "1")
    assert code == 3
    assert "Traceback" in err and "arena could not be created" in err


@pytest.mark.smp
def test_closed_stdout_is_not_a_crash() -> None:
    """`zonelimit report RUN | head -1`: no traceback when the reader goes away."""
    script = ("import sys; from stress import cli; from stress.commands import report; "
              "report.main = lambda a, p=None: [print('x' * 1000) for _ in range(1000)] and 0; "
              "sys.exit(cli.main(['report', '.']))")
    r = subprocess.run(f"{sys.executable} -c \"{script}\" | head -c 10 >/dev/null; exit ${{PIPESTATUS[0]}}",
                       shell=True, executable="/bin/bash", capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == 1


def test_ctrl_c_exits_130(capsys: pytest.CaptureFixture[str], runner: Recorder) -> None:
    runner.exc = KeyboardInterrupt()
    assert run_main(capsys, "--cpus", "1")[0] == 130


# --- subcommands of their own modules -------------------------------------------------


def test_module_command_hands_its_args_to_the_module(capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from stress.commands import bench

    seen: list[Any] = []

    def main(args: Any) -> int:
        seen.append(args)
        return 1

    monkeypatch.setattr(bench, "main", main)
    assert run_main(capsys, "bench")[0] == 1
    assert len(seen) == 1


def test_module_command_crash_exits_3(capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from stress.commands import bench

    def main(args: Any) -> int:
        raise RuntimeError("boom")

    monkeypatch.setattr(bench, "main", main)
    code, _, err = run_main(capsys, "bench")
    assert code == 3
    assert "bench: the tester itself failed" in err.splitlines()[-1]


# --- replay -------------------------------------------------------------------------------


def _saved_run(folder: Path, **changes: Any) -> Path:
    cfg = RunConfig(cpus=1, duration=2.0, seed=42, era="2005", refcount="buggy-eq0", wakeup="one",
                    policy="none").replace(**changes)
    write_run_json(folder, run_doc(cfg, outcome_changes={"verdict": "wedged", "exit_code": 1}))
    return folder


def test_replay_reruns_the_recorded_config(capsys: pytest.CaptureFixture[str], runner: Recorder,
                                           tmp_path: Path) -> None:
    run_dir = _saved_run(tmp_path / "run")
    runner.code = 1
    code, _, err = run_main(capsys, "replay", str(run_dir))
    assert code == 1
    cfg = runner.configs[0]
    assert (cfg.seed, cfg.era, cfg.refcount, cfg.duration) == (42, "2005", "buggy-eq0", 2.0)
    assert cfg.out == str(run_dir / "replay-1")
    run_main(capsys, "replay", str(run_dir))
    assert runner.configs[1].out == str(run_dir / "replay-2"), "a replay never reuses a folder"


@pytest.mark.parametrize("recorded", [{"k": 2.0}, {"median.k": 2.0}])
def test_replay_reads_policy_params_in_either_form(capsys: pytest.CaptureFixture[str], runner: Recorder,
                                                   tmp_path: Path, recorded: dict[str, float]) -> None:
    run_dir = _saved_run(tmp_path / "run", era="modern", policy="median", policy_params=recorded)
    code, _, _ = run_main(capsys, "replay", str(run_dir))
    assert code == 0 and runner.cfg.policy_params == {"k": 2.0}


def test_replay_refuses_a_parameter_of_another_policy(capsys: pytest.CaptureFixture[str], runner: Recorder,
                                                      tmp_path: Path) -> None:
    run_dir = _saved_run(tmp_path / "run", era="modern", policy="median", policy_params={"wss.periodic": 1.0})
    code, _, err = run_main(capsys, "replay", str(run_dir))
    assert code == 2 and not runner.configs
    assert "wss.periodic is a parameter of policy wss, but the policy is median" in err.splitlines()[-1]


def test_replay_follows_a_recorded_schedule(capsys: pytest.CaptureFixture[str], runner: Recorder,
                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stress.commands import replay

    def prepare_replay(run_dir: Path, cfg: RunConfig) -> RunConfig:
        return cfg.replace(sched="replay", replay_from=str(run_dir))

    monkeypatch.setattr(replay, "prepare_replay", prepare_replay)
    run_dir = _saved_run(tmp_path / "run", sched="pct")
    run_main(capsys, "replay", str(run_dir), "--out", str(tmp_path / "again"))
    cfg = runner.cfg
    assert (cfg.sched, cfg.replay_from, cfg.out) == ("replay", str(run_dir), str(tmp_path / "again"))


def test_replay_of_an_unreadable_schedule_exits_2(capsys: pytest.CaptureFixture[str], runner: Recorder,
                                                  tmp_path: Path) -> None:
    from stress.documents import SCHEDULE_FILE

    run_dir = _saved_run(tmp_path / "run", sched="pct")
    (run_dir / SCHEDULE_FILE).write_text("{}")
    code, _, err = run_main(capsys, "replay", str(run_dir), "--out", str(tmp_path / "again"))
    assert code == 2
    assert err.splitlines()[-1].startswith("zonelimit: error: RUN_DIR:")
    assert "Traceback" not in err
    assert not runner.configs


@pytest.mark.bad_documents
def test_replay_of_a_bad_folder_exits_2(capsys: pytest.CaptureFixture[str], runner: Recorder,
                                        tmp_path: Path) -> None:
    for folder in (tmp_path / "missing", tmp_path):
        code, _, err = run_main(capsys, "replay", str(folder))
        assert code == 2
        assert err.strip().splitlines()[-1].startswith("zonelimit: error: RUN_DIR:")
    (tmp_path / "run.json").write_text('{"format": "zonelimit.run/9", "config": {}}')
    code, _, err = run_main(capsys, "replay", str(tmp_path))
    assert code == 2 and "newer" in err
    assert not runner.configs


def test_replay_checks_cores(capsys: pytest.CaptureFixture[str], runner: Recorder, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(options, "usable_cores", lambda: [0])
    run_dir = _saved_run(tmp_path / "run", cpus=2)
    code, _, err = run_main(capsys, "replay", str(run_dir))
    assert code == 2 and "--oversubscribe" in err.strip().splitlines()[-1]
    assert run_main(capsys, "replay", str(run_dir), "--oversubscribe")[0] == 0


# --- CPU lists ----------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "cores"), [("0", [0]), ("0-3,7", [0, 1, 2, 3, 7]), ("3,1-2,2", [1, 2, 3])])
def test_cpulist_round_trip(text: str, cores: list[int]) -> None:
    assert parse_cpulist(text) == cores
    assert parse_cpulist(format_cpulist(cores)) == cores


@pytest.mark.parametrize("text", ["", "a", "3-1", "1-", "-1", "1,,2"])
def test_cpulist_refuses_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        parse_cpulist(text)


# --- the real thing (needs the manager) ---------------------------------------------------

RUN_KEYS = ["format", "version", "config", "host", "duration_s", "verdict", "exit_code",
            "ops", "zones", "netstat", "peak", "wedge", "audit"]


@pytest.mark.smp
def test_json_output_has_the_cli_md_fields(tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "stress", "--cpus", "1", "--duration", "2", "--json",
                        "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=120,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    assert [k for k in RUN_KEYS if k not in doc] == []
    assert doc["format"] == "zonelimit.run/1"
    assert doc["verdict"] == "ok" and doc["exit_code"] == 0
    assert {"mbuf", "mbuf_cluster", "mbuf_packet"} <= {z["name"] for z in doc["zones"]}
    assert RunConfig.from_dict(doc["config"]).cpus == 1
    for name in ("run.json", "samples.csv", "netstat.txt", "plot.png"):
        assert (out / name).stat().st_size > 0, name
    assert doc.pop("folder") == str(out)  # --json names the run folder; the file does not name itself
    assert json.loads((out / "run.json").read_text()) == doc
