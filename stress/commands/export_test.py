"""``race --export-test RUN_DIR``: a failing pct run as a pytest file for the user's own suite.

The file carries the run's run.json and schedule.json inside it (a test must not depend
on a results folder that may be gone), writes them into the test's ``tmp_path`` and
replays them with ``python -m stress replay`` -- the recorded schedule followed switch
for switch, so the verdict is the same on any machine -- and asserts the verdict, the
exit code and the audit's lost and double-owned items as the run recorded them.  A run
that used plugins is replayed with ``--trust-plugins``: the user exported their own run.
"""

from __future__ import annotations

import pprint
import re
from pathlib import Path
from typing import Any

from stress.documents import SCHEDULE_FILE, SCHEDULE_FORMAT, DocumentError, load_run, read_doc
from stress.options import UsageError

TEMPLATE = '''"""Regression test exported by `python -m stress race --export-test {source}` (zonelimit {version}).

The run it replays: {what}.
Its recorded verdict: {verdict} (exit {exit_code}).  The replay follows the recorded PCT
schedule switch for switch, so it reaches the same state on any machine.
"""

import json
import subprocess
import sys

RUN = {run}

SCHEDULE = {schedule}


def test_{name}_replays_to_{verdict_name}(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps(RUN), encoding="utf-8")
    (run / "schedule.json").write_text(json.dumps(SCHEDULE), encoding="utf-8")
    p = subprocess.run([sys.executable, "-m", "stress", "replay", str(run), "--quiet"{trust}],
                       capture_output=True, text=True, timeout={timeout}, stdin=subprocess.DEVNULL)
    assert p.returncode == {exit_code}, p.stdout + p.stderr
    doc = json.loads((run / "replay-1" / "run.json").read_text(encoding="utf-8"))
    assert doc["verdict"] == {verdict!r}
    assert doc["audit"]["lost"] == {lost!r}
    assert doc["audit"]["double_owned"] == {double_owned!r}
'''


def export_test(run_dir: Path, out: Path | None) -> Path:
    """Write the pytest file for ``run_dir`` (default: ``test_zonelimit_<folder>.py`` here);
    UsageError (one line) for a run with no schedule, a passing run, or a taken name."""
    try:
        doc = load_run(run_dir)
        schedule = read_doc(run_dir / SCHEDULE_FILE, SCHEDULE_FORMAT)
    except FileNotFoundError:
        raise UsageError(f"--export-test: {run_dir} has no {SCHEDULE_FILE}: only a pct run (or its replay) "
                         "replays exactly; hunt with --sched pct") from None
    except DocumentError as exc:
        raise UsageError(f"--export-test: {exc}") from None
    if doc.get("exit_code") != 1:
        raise UsageError(f"--export-test: {run_dir} did not fail (verdict {doc.get('verdict')}, exit "
                         f"{doc.get('exit_code')}): a regression test asserts a failure of the allocator")
    name = re.sub(r"[^0-9A-Za-z_]", "_", Path(run_dir).resolve().name).strip("_").lower() or "run"
    path = out if out is not None else Path(f"test_zonelimit_{name}.py")
    if path.exists():
        raise UsageError(f"--export-test: {path} exists; name another file with --out")
    cfg: dict[str, Any] = doc.get("config") or {}
    what = (f"era {cfg.get('era')}, policy {cfg.get('policy')}, workload {cfg.get('workload')}, "
            f"{cfg.get('cpus')} CPUs, inject {','.join(cfg.get('inject') or []) or 'none'}, seed {cfg.get('seed')}")
    audit = doc.get("audit") or {}
    text = TEMPLATE.format(
        source=run_dir, version=doc.get("version"), what=what, verdict=doc["verdict"],
        verdict_name=re.sub(r"[^0-9a-z_]", "_", str(doc["verdict"])), exit_code=doc["exit_code"], name=name,
        run=pprint.pformat(doc, width=110, sort_dicts=False, compact=True),
        schedule=pprint.pformat(schedule, width=110, sort_dicts=False, compact=True),
        trust=', "--trust-plugins"' if cfg.get("plugins") else "",
        timeout=max(600, int(10 * float(doc.get("duration_s") or 0))),
        lost=audit.get("lost"), double_owned=audit.get("double_owned"))
    try:
        with open(path, "x", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        raise UsageError(f"--export-test: cannot write {path}: {exc.strerror}") from None
    return path
