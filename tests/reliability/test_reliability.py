"""The reliability suite (docs/testing.md, "Reliability"): the rows of tests/reliability/trials.py.

In CI (``tox``), a handful of trials, the cheap ones, one per scenario family at most:
corrupted documents (in this process: milliseconds), a SIGKILLed manager and two runs on
one ``--out`` (a real ``python -m stress`` each; smp, so they run beside the CPU hog).
The signal rows are pinned in CI by tests/test_stops.py.  Every row with at least 20
trials (``ZL_RELIABILITY_TRIALS``, seed ``ZL_RELIABILITY_SEED``) is behind the
``reliability`` marker: ``tox -e reliability``.  The reference table is made by
``benchmarks/stop_trials.py`` (results/reference/reliability/README.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.reliability import trials

ROWS = {row.id: row for row in trials.rows()}
TRIALS = int(os.environ.get("ZL_RELIABILITY_TRIALS", "20"))
SEED = int(os.environ.get("ZL_RELIABILITY_SEED", "1"))


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> trials.Shared:
    return trials.Shared(tmp_path_factory.mktemp("shared"))


def _all_clean(row: trials.Row, n: int, shared: trials.Shared, tmp: Path) -> None:
    tally = trials.run_row(row, n, SEED, shared, tmp)
    assert tally.clean == tally.trials, "\n".join(tally.problems)


# --- CI: a handful ------------------------------------------------------------------------------


@pytest.mark.bad_documents
@pytest.mark.parametrize("row", ["corrupt/report/run.json", "corrupt/report/compare.json", "corrupt/replay/run.json"])
def test_a_corrupted_document_is_refused_in_one_line(row: str, shared: trials.Shared, tmp_path: Path) -> None:
    _all_clean(ROWS[row], 6, shared, tmp_path)


@pytest.mark.smp
def test_a_sigkilled_manager_leaves_nothing_and_its_folder_reads_incomplete(shared: trials.Shared,
                                                                            tmp_path: Path) -> None:
    _all_clean(ROWS["manager-sigkill/run/mid-run"], 1, shared, tmp_path)


@pytest.mark.smp
def test_two_runs_on_one_out_one_runs_one_is_refused(shared: trials.Shared, tmp_path: Path) -> None:
    _all_clean(ROWS["two-runs/run/claim"], 1, shared, tmp_path)


# --- the full set: tox -e reliability -------------------------------------------------------------


@pytest.mark.reliability
@pytest.mark.slow
@pytest.mark.smp
@pytest.mark.bad_documents  # a row's trial folders are checked by the row itself (and removed when clean)
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("row", list(ROWS))
def test_every_trial_of_the_row_is_clean(row: str, shared: trials.Shared, tmp_path: Path) -> None:
    _all_clean(ROWS[row], TRIALS, shared, tmp_path)
