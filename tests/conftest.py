"""pytest setup for zonelimit: the ``smp`` marker rule and the ``--hog`` option.

The rule (docs/testing.md): a test is marked ``smp`` when it starts a second process
(fork, multiprocessing, subprocess, a stress run and its workers) or depends on the wall
clock (sleeps, deadlines, durations, time budgets).  Every such test must hold beside a
CPU hog on every core: ``tox -e hog`` runs ``pytest -m smp --hog --count 20``.

The rule is enforced where it can be seen: an unmarked test whose setup or call starts a
process or sleeps fails, naming the marker.  Python's audit hooks (PEP 578) see every
``os.fork``, ``subprocess.Popen``, ``os.posix_spawn``, ``os.system`` and ``time.sleep``;
a deadline computed from ``time.monotonic`` has no audit event and is marked by hand.
"""

from __future__ import annotations

import atexit
import multiprocessing.util
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Generator
from typing import Any

import pytest

from tests.hog import Hog

#: audit events that mean "this test uses another process or the wall clock"
WATCHED = frozenset({"os.fork", "os.forkpty", "subprocess.Popen", "os.posix_spawn", "os.posix_spawnp",
                     "os.system", "os.exec", "time.sleep"})
#: the events seen during the current test's setup or call; None when no test is watched
_seen: set[str] | None = None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _seen is not None and event in WATCHED:
        _seen.add(event)


def _forget_in_child() -> None:
    """A forked child is not the test: it stops recording (and pays one test per event)."""
    global _seen
    _seen = None


def _spawn_audited(spawn: Any) -> Any:
    """multiprocessing's spawn and forkserver start methods exec a fresh interpreter
    through ``_posixsubprocess.fork_exec``, which raises no audit event: raise one."""
    def spawnv_passfds(path: Any, args: Any, passfds: Any) -> Any:
        sys.audit("os.posix_spawn", path, args)
        return spawn(path, args, passfds)
    return spawnv_passfds


def _sleep_audited(sleep: Any) -> Any:
    """``time.sleep`` raises its audit event only from Python 3.13 on: raise it here."""
    def audited_sleep(secs: float) -> None:
        sys.audit("time.sleep", secs)
        sleep(secs)
    return audited_sleep


# Core leases (stress/engine/leases.py): this pytest process and the runs it starts share
# a lease table of their own, so the suites of several people on one machine never wait on
# each other's runs (a run waits for free cores).  Removed when pytest exits.
_LEASE_DIR = tempfile.mkdtemp(prefix="zonelimit-test-leases-")
os.environ["ZONELIMIT_LEASE_DIR"] = _LEASE_DIR
atexit.register(shutil.rmtree, _LEASE_DIR, True)

# platform.platform() asks `uname -p` (a subprocess) once per process and caches it; every
# document's host record calls it, so ask before any test does (the smp rule would blame
# whichever test came first).
platform.platform()
sys.addaudithook(_audit)  # cannot be removed; costs one comparison per event outside a test
if sys.version_info < (3, 13):
    time.sleep = _sleep_audited(time.sleep)
os.register_at_fork(after_in_child=_forget_in_child)
multiprocessing.util.spawnv_passfds = _spawn_audited(multiprocessing.util.spawnv_passfds)  # type: ignore[attr-defined]


_HOG = pytest.StashKey[Hog]()  #: the session's hog, when --hog

#: Test files whose smp tests decide on how processes interleave: races found or not,
#: SMP conservation, stalls and stops, the 2005 race, leftovers after a kill.  CI runs
#: these beside the CPU hog (tox -e hog-ci, marker ``contended``), except those marked
#: ``exact`` (a pct or replay run: one seed, one schedule, one result under any load);
#: the exact ones and the other smp tests, which start processes only to run the tool's
#: commands, run once without it (tox -e smp-ci).  tox -e hog runs every smp test 20
#: times beside the hog (docs/testing.md "CI").
CONTENDED_FILES = frozenset({
    "tests/race/test_races.py", "tests/race/test_race_cli.py", "tests/race/test_witness.py",
    "tests/test_allocator_smp.py", "tests/test_era2005.py", "tests/test_stops.py",
    "tests/test_lock_timeout.py", "tests/test_leftovers.py", "tests/test_sched.py",
    "tests/test_manager.py", "tests/reliability/test_reliability.py",
})


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("zonelimit")
    group.addoption("--hog", action="store_true",
                    help="run the session beside a CPU hog: one busy-loop process per usable core, "
                         "pinned, same nice value, killed at the end (docs/testing.md)")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("hog") and not config.option.collectonly:
        budget = config.getoption("session_timeout", None)
        lifetime = float(budget) + 600 if budget else 4 * 3600.0  # a hog never outlives a stuck session
        hog = Hog.start(lifetime)
        config.stash[_HOG] = hog
        config.add_cleanup(hog.stop)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the smp tests of :data:`CONTENDED_FILES` ``contended``, unless ``exact``."""
    root = config.rootpath
    for item in items:
        if item.get_closest_marker("smp") is not None and item.get_closest_marker("exact") is None:
            rel = item.path.relative_to(root).as_posix()
            if rel in CONTENDED_FILES:
                item.add_marker(pytest.mark.contended)


def pytest_report_header(config: pytest.Config) -> str | None:
    hog = config.stash.get(_HOG, None)
    if hog is None:
        return None
    pids = ", ".join(f"core {c}: pid {p.pid}" for c, p in zip(hog.cores, hog.procs, strict=False))
    return f"hog: {len(hog.procs)} busy-loop processes ({pids})"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A hog that died during the session means it did not run beside a hog: say so, and
    fail the session rather than report a hog run that was not one."""
    hog = session.config.stash.get(_HOG, None)
    if hog is None:
        return
    hog.stop()
    if hog.died_early:
        sys.stderr.write(f"hog: the hog on core(s) {hog.died_early} died during the session: "
                         "the tests did not all run beside a hog\n")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _watching(item: pytest.Item) -> Generator[None, Any, Any]:
    """Record the watched events of one phase; fail an unmarked test that had any."""
    global _seen
    _seen = seen = set()
    try:
        res = yield
    finally:
        _seen = None
    if seen and item.get_closest_marker("smp") is None:
        pytest.fail(f"this test uses {', '.join(sorted(seen))} but is not marked smp: mark it "
                    "(pytest.mark.smp) so that it runs beside the CPU hog (docs/testing.md)", pytrace=False)
    return res


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, Any, Any]:
    return (yield from _watching(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    return (yield from _watching(item))


@pytest.fixture(autouse=True)
def _allocator_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Generator[None, Any, Any]:
    """``@pytest.mark.interpreted``: the test's find rate or time budget was sized for the
    interpreted allocator's race windows (hundreds of ns; compiled: a few instructions,
    docs/testing.md "Two modes"), so it runs interpreted whatever the session's mode: in
    this process (``Uma.create`` from now on, and the workers it forks) and in any
    ``python -m stress`` it starts (ZONELIMIT_PURE=1)."""
    if request.node.get_closest_marker("interpreted") is None:
        yield
        return
    from allocator import implementation

    monkeypatch.setenv(implementation.PURE_ENV, "1")
    previous = implementation.use(False)
    try:
        yield
    finally:
        implementation.use(previous)


# --- every document a test writes is checked against its schema -------------------------------


def _zonelimit_documents(root: Any) -> list[tuple[Any, str]]:
    """(path, format) of every zonelimit document under ``root`` (temporaries passed by)."""
    import json

    from stress.documents import SCHEMA_KINDS

    by_name = {fmt.partition("/")[0]: fmt for fmt in SCHEMA_KINDS}
    found = []
    for path in sorted(root.rglob("*.json")):
        if path.name.startswith("."):
            continue
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        fmt = doc.get("format") if isinstance(doc, dict) else None
        if isinstance(fmt, str) and fmt.partition("/")[0] in by_name:
            found.append((path, by_name[fmt.partition("/")[0]]))
    return found


@pytest.fixture(autouse=True)
def _documents_follow_their_schemas(request: pytest.FixtureRequest) -> Generator[None, None, None]:
    """After a test that has a ``tmp_path``, every run.json, schedule.json, compare.json,
    race.json and bench file under it -- written in this process or by a ``python -m
    stress`` it started -- must pass its JSON Schema (stress/schemas/).  A test that writes
    damaged documents on purpose is marked ``bad_documents``."""
    checked = "tmp_path" in request.fixturenames and not request.node.get_closest_marker("bad_documents")
    root = request.getfixturevalue("tmp_path") if checked else None  # before the test: torn down after it
    yield
    if root is None:
        return
    from stress.documents import DocumentError, read_doc

    problems = []
    for path, fmt in _zonelimit_documents(root):
        try:
            read_doc(path, fmt)
        except DocumentError as exc:
            problems.append(str(exc))
    if problems:
        pytest.fail("documents that break their schema:\n  " + "\n  ".join(problems), pytrace=False)
