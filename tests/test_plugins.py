"""Plugins (docs/extending.md): policies and workloads from a file, a module or an installed
package's entry points; what run.json records of them; replay's trust rule; and the
examples of examples/, run, compared and replayed as a file and as an installed package."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from allocator.policy import Decision, make_policy, policy_params
from stress import cli, plugins
from stress.commands import run as run_command
from stress.config import RunConfig
from stress.workloads import Workload, workload_class

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "zonelimit-example"
HALVE = f"{EXAMPLE / 'zonelimit_example' / 'halve.py'}:HalvePolicy"
ECHO = f"{EXAMPLE / 'zonelimit_example' / 'echo.py'}:Echo"

POLICY_SOURCE = '''
import os
from allocator.policy import KEEP, Decision, Policy

if os.environ.get("ZL_TEST_MARKER"):  # proves whether this file was imported
    with open(os.environ["ZL_TEST_MARKER"], "a") as f:
        f.write("imported\\n")


class Keep(Policy):
    name = "keep-all"
    PARAMS = {"level": (3.0, "a number")}

    def decide(self, obs):
        return KEEP if self.params["level"] < 100 else Decision(drain_buckets=1)
'''


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def stress(*argv: str, cwd: Path = ROOT, env: dict[str, str] | None = None,
           timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """``python -m stress ARGV`` in a fresh interpreter (fresh registries)."""
    full = {**os.environ, **(env or {})}
    full["PYTHONPATH"] = os.pathsep.join(p for p in (full.get("PYTHONPATH"), str(ROOT)) if p)
    return subprocess.run([sys.executable, "-m", "stress", *argv], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


# --- loading and recording ---------------------------------------------------------------


def test_a_file_policy_is_loaded_registered_and_recorded(tmp_path: Path) -> None:
    path = write(tmp_path / "keep.py", POLICY_SOURCE)
    spec = f"{path}:Keep"
    record = plugins.resolve("policy", spec)
    assert record is not None
    assert (record.kind, record.spec, record.name, record.origin) == ("policy", spec, "keep-all", "file")
    assert record.path == str(path.resolve()) and len(record.sha256) == 64
    assert policy_params(spec) == {"level": (3.0, "a number")}
    assert make_policy(spec, {"level": 200}).decide(None) == Decision(drain_buckets=1)  # type: ignore[arg-type]
    assert plugins.resolve("policy", spec) == record  # loaded once
    cls = plugins.plugin_class("policy", spec)
    assert cls.__module__ in sys.modules  # found again by name: pickling, forked workers


def test_a_changed_file_is_loaded_again_under_its_new_hash(tmp_path: Path) -> None:
    path = write(tmp_path / "keep2.py", POLICY_SOURCE)
    spec = f"{path}:Keep"
    first = plugins.resolve("policy", spec)
    write(path, POLICY_SOURCE.replace('"keep-all"', '"keep-changed"'))
    second = plugins.resolve("policy", spec)
    assert first is not None and second is not None
    assert second.sha256 != first.sha256 and second.name == "keep-changed"
    assert plugins.difference(first.to_dict(), second) is not None
    assert "source changed" in (plugins.difference(first.to_dict(), second) or "")
    assert plugins.difference(second.to_dict(), second) is None


def test_builtins_are_not_plugins() -> None:
    assert plugins.resolve("policy", "median") is None and plugins.resolve("workload", "netperf") is None
    cfg = plugins.with_records(RunConfig(cpus=1))
    assert cfg.plugins == {} and plugins.recorded_plugins(cfg) == {}


@pytest.mark.parametrize("source,spec_tail,needle", [
    (POLICY_SOURCE, ":Kep", "has no 'Kep' (did you mean 'Keep'?)"),
    ("import nosuchmodule_zl\n", ":Keep", "ModuleNotFoundError: No module named 'nosuchmodule_zl'"),
    ("x = 1 / 0\n", ":Keep", "ZeroDivisionError: division by zero (bad.py:1)"),
    ("class Keep:\n    pass\n", ":Keep", "is not a subclass of allocator.policy.Policy"),
    ("from allocator.policy import Policy\nclass Keep(Policy):\n    pass\n", ":Keep", "does not implement decide"),
    ("Keep = 3\n", ":Keep", "not a class"),
    (POLICY_SOURCE.replace('(3.0, "a number")', "3.0"), ":Keep", "PARAMS must map names"),
])
def test_a_bad_policy_plugin_is_one_line(tmp_path: Path, source: str, spec_tail: str, needle: str) -> None:
    path = write(tmp_path / "bad.py", source)
    with pytest.raises(plugins.PluginError) as err:
        plugins.resolve("policy", f"{path}{spec_tail}")
    assert needle in str(err.value) and "\n" not in str(err.value) and err.value.kind == "policy"


def test_bad_specs_name_what_is_allowed(tmp_path: Path) -> None:
    with pytest.raises(plugins.PluginError, match="no such file"):
        plugins.resolve("policy", f"{tmp_path / 'missing.py'}:X")
    with pytest.raises(plugins.PluginError, match="no module named 'nosuch_zl_pkg'"):
        plugins.resolve("workload", "nosuch_zl_pkg.mod:X")
    with pytest.raises(plugins.PluginError, match="did you mean 'median'"):
        plugins.resolve("policy", "medain")
    path = write(tmp_path / "wl.py", "from stress.workloads import Workload\nclass W(Workload):\n    name = 'w'\n")
    with pytest.raises(plugins.PluginError, match="does not implement turn"):
        plugins.resolve("workload", f"{path}:W")


def test_a_module_plugin_hashes_its_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "zl_modplug"
    pkg.mkdir()
    write(pkg / "__init__.py", "__version__ = '2.5'\n")
    write(pkg / "policies.py", POLICY_SOURCE)
    write(pkg / "helper.py", "X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    record = plugins.resolve("policy", "zl_modplug.policies:Keep")
    assert record is not None and record.origin == "module" and record.version == "2.5"
    assert record.target == "zl_modplug.policies:Keep" and record.path == str(pkg.resolve())
    # the hash covers the helper module too: what runs is the package
    import hashlib
    digest = hashlib.sha256()
    for rel in ("__init__.py", "helper.py", "policies.py"):
        digest.update(rel.encode() + b"\0" + (pkg / rel).read_bytes() + b"\0")
    assert record.sha256 == digest.hexdigest()


def test_the_command_line_suggests_and_refuses_in_one_line(capsys: pytest.CaptureFixture[str],
                                                          tmp_path: Path) -> None:
    assert cli.main(["run", "--policy", "medain", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "--policy: must be one of" in err and "(did you mean 'median'?)" in err
    assert cli.main(["run", "--workload", "netprf"]) == 2
    assert "(did you mean 'netperf'?)" in capsys.readouterr().err
    bad = write(tmp_path / "bad.py", "x = 1 / 0\n")
    assert cli.main(["run", "--policy", f"{bad}:X"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("zonelimit: error: --policy: ") and "ZeroDivisionError" in err
    assert "Traceback" not in err
    assert cli.main(["run", "--policy", "median", "--policy-param", "windw=3"]) == 2
    assert "(did you mean 'window'?)" in capsys.readouterr().err


def test_run_options_record_the_plugin_in_the_configuration(tmp_path: Path) -> None:
    path = write(tmp_path / "keep3.py", POLICY_SOURCE)
    parser = cli.build_parser()
    args = parser.parse_args(["run", "--cpus", "1", "--policy", f"{path}:Keep", "--policy-param", "level=7",
                              "--workload", ECHO])
    cfg = run_command.config_from_args(args)
    assert cfg.policy == f"{path}:Keep" and cfg.policy_params == {"level": 7.0}
    assert set(cfg.plugins) == {"policy", "workload"}
    assert cfg.plugins["workload"]["name"] == "echo" and cfg.plugins["policy"]["name"] == "keep-all"
    again = RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again.plugins == cfg.plugins  # run.json round trip
    assert plugins.recorded_plugins(again) == cfg.plugins  # read from the document only


# --- other processes: spawn and a remote executor ----------------------------------------


def _spawned(cfg_dict: dict[str, Any]) -> str:
    """In a fresh (spawned) interpreter: load what the configuration runs, as an executor would."""
    cfg = RunConfig.from_dict(cfg_dict)
    try:
        plugins.load_config(cfg)
    except plugins.PluginError as exc:
        return f"refused: {exc}"
    cls = workload_class(cfg.workload)
    assert issubclass(cls, Workload)
    return f"{cls.__name__} {cls.__module__}"


def _spawned_into(cfg_dict: dict[str, Any], conn: Any) -> None:
    conn.send(_spawned(cfg_dict))
    conn.close()


def _in_spawned_process(cfg_dict: dict[str, Any]) -> str:
    """``_spawned`` in a spawned interpreter.  A Process and a Pipe, not a Pool: a Pool
    holds six named semaphores in /dev/shm while it lives, which a leftovers check of
    another test session on this machine would see."""
    ctx = multiprocessing.get_context("spawn")
    r, w = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_spawned_into, args=(cfg_dict, w))
    proc.start()
    w.close()
    try:
        return str(r.recv())
    finally:
        r.close()
        proc.join(60)


@pytest.mark.smp
def test_a_spawned_process_loads_the_plugins_and_checks_their_hash() -> None:
    cfg = plugins.with_records(RunConfig(cpus=1, workload=ECHO, policy=HALVE))
    got = _in_spawned_process(cfg.to_dict())
    tampered = dict(cfg.plugins, workload={**cfg.plugins["workload"], "sha256": "0" * 64})
    refused = _in_spawned_process(cfg.replace(plugins=tampered).to_dict())
    assert got.startswith("Echo zonelimit_plugin_echo_")
    assert refused.startswith("refused: workload ") and "source changed" in refused


# --- runs, replays, reports: the trust rule -------------------------------------------------


@pytest.fixture(scope="module")
def plugin_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One real run of a file policy (that marks its imports) and the example workload."""
    base = tmp_path_factory.mktemp("plugin-run")
    policy = write(base / "keep.py", POLICY_SOURCE)
    marker = base / "imports.txt"
    out = base / "run"
    r = stress("--cpus", "2", "--duration", "1.5", "--policy", f"{policy}:Keep", "--workload", ECHO,
               "--out", str(out), "--json", env={"ZL_TEST_MARKER": str(marker)})
    assert r.returncode == 0, r.stderr[-3000:]
    return {"out": out, "policy": policy, "marker": marker, "stdout": Path(r.stdout)}


@pytest.mark.smp
def test_a_plugin_run_records_and_names_its_folder(plugin_run: dict[str, Path]) -> None:
    printed = json.loads(str(plugin_run["stdout"]))
    assert printed["folder"] == str(plugin_run["out"])  # --json names the run folder
    doc = json.loads((plugin_run["out"] / "run.json").read_text())
    rec = doc["config"]["plugins"]
    assert rec["policy"]["spec"] == f"{plugin_run['policy']}:Keep" and rec["policy"]["origin"] == "file"
    assert rec["workload"]["name"] == "echo" and doc["verdict"] == "ok"
    assert doc["workload"]["packets"] > 0  # the forked workers ran the file-loaded workload


@pytest.mark.smp
def test_report_and_replay_import_nothing_a_document_names(plugin_run: dict[str, Path]) -> None:
    marker = plugin_run["marker"]
    marker.unlink(missing_ok=True)
    env = {"ZL_TEST_MARKER": str(marker)}
    r = stress("report", str(plugin_run["out"]), env=env)
    assert r.returncode == 0, r.stderr
    r = stress("replay", str(plugin_run["out"]), env=env)
    assert r.returncode == 2 and not marker.exists()
    last = r.stderr.strip().splitlines()[-1]
    assert "the policy plugin" in last and "the workload plugin" in last and "Keep" in last and "echo" in last
    assert "--policy SPEC --workload SPEC" in last and "--trust-plugins" in last
    assert not list(plugin_run["out"].glob("replay-*"))  # refused before any folder


@pytest.mark.smp
def test_replay_loads_a_named_plugin_and_refuses_a_changed_source(plugin_run: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    out = plugin_run["out"]
    moved = tmp_path / "moved_keep.py"  # the folder travelled: the plugin is elsewhere now
    shutil.copy(plugin_run["policy"], moved)
    r = stress("replay", str(out), "--policy", f"{moved}:Keep", "--workload", ECHO, "--out", str(tmp_path / "r1"),
               "-q")
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads((tmp_path / "r1" / "run.json").read_text())
    assert doc["config"]["plugins"]["policy"]["spec"] == f"{moved}:Keep"

    write(moved, POLICY_SOURCE + "\n# changed\n")
    r = stress("replay", str(out), "--policy", f"{moved}:Keep", "--workload", ECHO, "--out", str(tmp_path / "r2"))
    assert r.returncode == 2
    assert "--policy: " in r.stderr and "source changed since the run" in r.stderr and "--force" in r.stderr
    assert not (tmp_path / "r2").exists()
    r = stress("replay", str(out), "--policy", f"{moved}:Keep", "--workload", ECHO, "--force",
               "--out", str(tmp_path / "r3"), "-q")
    assert r.returncode == 0 and "replaying anyway (--force)" in r.stderr

    r = stress("replay", str(out), "--trust-plugins", "--out", str(tmp_path / "r4"), "-q")
    assert r.returncode == 0, r.stderr[-2000:]
    r = stress("replay", str(out), "--trust-plugins", "--policy", "median", "--out", str(tmp_path / "r5"))
    assert r.returncode == 2 and "is built in, but the run used the policy plugin" in r.stderr


# --- the examples: as files and as an installed package ------------------------------------


def install_example(site: Path) -> None:
    """The example package as pip installs it: the package on the path and its
    ``.dist-info`` (METADATA, entry_points.txt) made from its own pyproject.toml."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    shutil.copytree(EXAMPLE / "zonelimit_example", site / "zonelimit_example")
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    write(info / "METADATA", f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    lines = []
    for group, eps in project["entry-points"].items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {target}" for name, target in eps.items()]
    write(info / "entry_points.txt", "\n".join(lines) + "\n")
    write(info / "top_level.txt", "zonelimit_example\n")


@pytest.mark.smp
def test_the_example_package_runs_compares_and_replays_by_entry_point(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    install_example(site)
    env = {"PYTHONPATH": str(site)}
    r = stress("run", "--help", env=env)
    text = " ".join(r.stdout.split())  # argparse wraps the help
    assert "installed plugins: halve" in text and "installed plugins: echo" in text
    run_dir = tmp_path / "run"
    r = stress("--cpus", "2", "--duration", "1.5", "--policy", "halve", "--workload", "echo",
               "--out", str(run_dir), "-q", env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    rec = json.loads((run_dir / "run.json").read_text())["config"]["plugins"]
    assert rec["policy"]["origin"] == "entry-point" and rec["policy"]["version"] == "1.0"
    assert rec["workload"]["target"] == "zonelimit_example.echo:Echo"
    r = stress("replay", str(run_dir), "--policy", "halve", "--workload", "echo", "--out", str(tmp_path / "rp"),
               "-q", env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    r = stress("compare", "--cpus", "2", "--duration", "1", "--repeat", "1", "--workload", "echo",
               "--configs", "modern:median,modern:halve", "--policy-param", "halve.keep=128",
               "--out", str(tmp_path / "cmp"), "--json", env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    printed = json.loads(r.stdout)
    assert printed["folder"] == str(tmp_path / "cmp")  # --json names the folder
    vs = printed["variants"]
    assert [v["config"]["policy"] for v in vs] == ["median", "halve"]
    assert vs[1]["config"]["policy_params"] == {"keep": 128.0}
    assert vs[1]["config"]["plugins"]["policy"]["origin"] == "entry-point"
    assert all(run["verdict"] == "ok" for v in vs for run in v["runs"])


@pytest.mark.smp
def test_the_examples_run_compare_and_replay_as_files(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    r = stress("--cpus", "2", "--policy", HALVE, "--workload", ECHO, "--rounds", "2",
               "--round-length", "0.5", "--idle", "0.25", "--out", str(run_dir), "-q")
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads((run_dir / "run.json").read_text())
    assert doc["workload"]["packets"] > 0 and doc["audit"]["payload_errors"] == 0
    r = stress("replay", str(run_dir), "--policy", HALVE, "--workload", ECHO, "--out", str(tmp_path / "rp"), "-q")
    assert r.returncode == 0, r.stderr[-2000:]
    r = stress("compare", "--cpus", "2", "--duration", "1", "--repeat", "1", "--workload", "netperf",
               "--configs", f"modern:{HALVE}", "--out", str(tmp_path / "cmp"), "-q")
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "cmp" / "modern_HalvePolicy-s0" / "run.json").is_file()  # named by the class, not the path
