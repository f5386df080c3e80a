"""The two implementations of the hot modules (issue 15, allocator/implementation.py):
the import rule the build relies on, the run-time switch, the architecture refusal, and
(slow) the two install paths: with a C compiler, compiled; without one, interpreted."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

import allocator
from allocator import implementation
from allocator.implementation import HOT_MODULES, PURE_ENV, UnsupportedArchitecture, check_architecture

ROOT = Path(__file__).resolve().parent.parent


def _relative_imports(name: str) -> list[str]:
    tree = ast.parse((ROOT / "allocator" / f"{name}.py").read_text())
    return [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level]


@pytest.mark.parametrize("name", HOT_MODULES)
def test_hot_modules_import_only_hot_modules_relatively(name: str) -> None:
    """Compiled as ``allocator._compiled.X``, a relative import resolves inside the compiled
    package: it may name only another hot module (everything else is imported absolutely,
    so both modes share one layout and one set of exceptions)."""
    bad = [m for m in _relative_imports(name) if m.split(".")[0] not in HOT_MODULES]
    assert not bad, f"allocator/{name}.py imports {bad} relatively; import them as allocator.X"


def test_the_exceptions_are_shared_by_both_modes() -> None:
    assert allocator.UmaPanic.__module__ == "allocator.errors"
    assert allocator.UmaSleepError.__module__ == "allocator.errors"


def test_other_architectures_are_refused_with_one_clear_message() -> None:
    check_architecture("x86_64")
    with pytest.raises(UnsupportedArchitecture, match="x86 only .*aarch64.*store ordering"):
        check_architecture("aarch64")


def _mode_in_child(env: dict[str, str]) -> str:
    code = "import allocator, allocator.implementation as i; print(allocator.COMPILED, i.WHY_INTERPRETED)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env}, cwd="/")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.mark.smp
def test_zonelimit_pure_forces_the_interpreted_modules() -> None:
    assert _mode_in_child({PURE_ENV: "1"}) == f"False {PURE_ENV}=1"
    default = _mode_in_child({PURE_ENV: ""})
    assert default.split()[0] == str(implementation.compiled_available())
    if os.environ.get("ZONELIMIT_REQUIRE_COMPILED", "") not in ("", "0"):
        assert default.split()[0] == "True", default


def test_uma_says_which_mode_it_runs() -> None:
    """``Uma.create(cfg, compiled=...)`` builds the CPU contexts of that mode, and both
    serve the same first packet.  M_NOWAIT: a packet bucket fill with M_WAITOK passes
    M_WAITOK to every packet's zinit (zone_alloc_bucket's origflags), which sleeps in
    one process once 64 clusters are out."""
    got = []
    for compiled in (False, True) if implementation.compiled_available() else (False,):
        u = allocator.Uma.create(allocator.UmaConfig(ncpus=1, nmbclusters=64), compiled=compiled)
        try:
            assert u.compiled is compiled
            assert type(u.cpu(0)).__module__ == ("allocator._compiled.cpu" if compiled else "allocator.cpu")
            got.append(u.cpu(0).m_getcl(allocator.M_NOWAIT))
        finally:
            u.close()
    assert got[0] >= 0 and len(set(got)) == 1, got


def test_a_compiled_module_records_the_source_it_was_built_from() -> None:
    if not implementation.compiled_available():
        pytest.skip("the compiled allocator is not built")
    import allocator._compiled.zone as compiled_zone  # type: ignore[import-not-found]

    assert compiled_zone._SOURCE_SHA256 == implementation.source_hash("zone")


def _install(tmp: Path, env: dict[str, str]) -> str:
    """Install this checkout into a fresh venv (the machine's pip configuration: its
    package mirror only) and report the mode an import there chooses."""
    target = tmp / "venv"
    venv.EnvBuilder(with_pip=True).create(target)
    py = str(target / "bin" / "python")
    proc = subprocess.run([py, "-m", "pip", "install", "-q", str(ROOT)], capture_output=True, text=True,
                          timeout=1200, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    code = "import allocator; u = allocator.Uma.create(allocator.UmaConfig(ncpus=1, nmbclusters=64)); " \
           "print(allocator.COMPILED, u.cpu(0).m_getcl() >= 0)"
    run = subprocess.run([py, "-c", code], capture_output=True, text=True, timeout=120, cwd=str(tmp))
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


@pytest.mark.slow
@pytest.mark.smp
def test_install_without_a_compiler_runs_interpreted(tmp_path: Path) -> None:
    """``CC=false``: every extension fails to compile, the install succeeds, and the
    allocator runs interpreted."""
    assert _install(tmp_path, {"CC": "false", "LDSHARED": "false"}) == "False True"


@pytest.mark.slow
@pytest.mark.smp
def test_install_with_a_compiler_runs_compiled(tmp_path: Path) -> None:
    assert _install(tmp_path, {}) == "True True"


def test_every_document_records_the_mode_and_its_schema_types_it() -> None:
    """run.json, bench, compare and race files share the host record: it says which
    allocator ran, as a boolean (stress/schemas/host.schema.json)."""
    from stress import documents

    host = documents.host_record(None)
    assert host["allocator_compiled"] is allocator.COMPILED
    assert documents.schema_errors(host, "host") == []
    assert any("allocator_compiled" in e for e in documents.schema_errors({**host, "allocator_compiled": 1}, "host"))


@pytest.mark.interpreted
def test_the_interpreted_marker_runs_a_test_interpreted() -> None:
    """tests/conftest.py: whatever the session's mode, this process's new allocators and
    any ``python -m stress`` the test starts run interpreted."""
    assert allocator.COMPILED is False and os.environ[PURE_ENV] == "1"
    u = allocator.Uma.create(allocator.UmaConfig(ncpus=1, nmbclusters=64))
    try:
        assert not u.compiled
    finally:
        u.close()


def test_after_an_interpreted_test_the_session_mode_is_back() -> None:
    assert allocator.COMPILED is implementation.compiled_available() or os.environ.get(PURE_ENV, "") not in ("", "0")


def test_an_edited_pxd_makes_the_compiled_modules_stale(tmp_path: Path) -> None:
    """The build records a hash of each hot module's .py and of every .pxd (the types, and
    the shared atomics.pxd): a .pxd edited since the build must not run silently."""
    src = Path(implementation.__file__).parent
    for f in [src / "zone.py", *src.glob("*.pxd")]:
        shutil.copyfile(f, tmp_path / f.name)
    before = implementation.source_hash("zone", tmp_path)
    assert before == implementation.source_hash("zone")
    atomics = tmp_path / "atomics.pxd"
    atomics.write_text(atomics.read_text() + "\n# edited\n")
    assert implementation.source_hash("zone", tmp_path) != before
