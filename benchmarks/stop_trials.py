"""The reliability trials from the command line: every row of tests/reliability/trials.py
(signals at random moments in start-up, mid-run and result writing for every command,
stopped and killed workers, a SIGKILLed manager, two runs on one --out, corrupted
documents), each tried N times with seeded random moments, the outcomes counted.

Why a script beside the suite: the reference table (results/reference/reliability/
README.md) is made here, with progress as it goes and the tallies saved after each row;
the same rows run as tests (``tox -e reliability``).  The trial logic is in the module::

    python benchmarks/stop_trials.py --trials 20                    # every row, 20 trials each
    python benchmarks/stop_trials.py --only signal/run,worker-sigstop --trials 5
    python benchmarks/stop_trials.py --only interpreter-start       # the interpreter's own start-up

``--only`` takes row ids or their prefixes (``scenario/command/phase``).  Exit 0 when
every trial was clean.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the trial module lives with the tests

from tests.reliability import trials  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=10, help="trials per row (default 10)")
    ap.add_argument("--cheap-trials", type=int, default=None,
                    help="trials per row for the rows that start no process (default: --trials)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", default="", help="comma-separated row ids or prefixes")
    ap.add_argument("--shard", default="1/1", help="K/N: run every N-th row starting at the K-th")
    ap.add_argument("--json", default="", help="also write the tallies here (after every row)")
    ap.add_argument("--keep", action="store_true", help="keep the folders of trials that were not clean")
    ap.add_argument("--table", nargs="+", metavar="JSON", help="only print the table of saved tallies (--json "
                    "files, e.g. one per --shard; a row in a later file replaces an earlier one), in row order")
    args = ap.parse_args()
    if args.table:
        return print_table(args.table)
    every = trials.rows() + trials.EXTRA
    wanted = [w for w in args.only.split(",") if w]
    chosen = [r for r in every if any(r.id.startswith(w) for w in wanted)] if wanted else trials.rows()
    k, n = (int(x) for x in args.shard.split("/"))
    chosen = chosen[k - 1::n]
    root = Path(tempfile.mkdtemp(prefix="zl-trials-"))
    shared = trials.Shared(root / "shared")
    shared.root.mkdir()
    tallies: dict[str, trials.Tally] = {}
    try:
        for row in chosen:
            count = args.trials if row.processes or args.cheap_trials is None else args.cheap_trials
            tallies[row.id] = trials.run_row(row, count, args.seed, shared, root / "t", keep=args.keep,
                                             echo=lambda line: print(line, flush=True))
            if args.json:
                Path(args.json).write_text(json.dumps({rid: t.to_dict() for rid, t in tallies.items()}, indent=1))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print()
    for line in trials.table_lines(tallies):
        print(line)
    return 0 if all(t.clean == t.trials for t in tallies.values()) else 1


def print_table(paths: list[str]) -> int:
    """The markdown table of saved tallies, in the order of the rows."""
    saved: dict[str, dict[str, object]] = {}
    for path in paths:
        saved.update(json.loads(Path(path).read_text()))
    order = [r.id for r in trials.rows() + trials.EXTRA]
    tallies: dict[str, trials.Tally] = {}
    for rid in sorted(saved, key=lambda r: order.index(r) if r in order else len(order)):
        d = saved[rid]
        t = tallies[rid] = trials.Tally(trials=int(d["trials"]), clean=int(d["clean"]),  # type: ignore[call-overload]
                                        leftovers=int(d["leftovers"]))  # type: ignore[call-overload]
        t.outcomes.update(d["outcomes"])  # type: ignore[arg-type]
    for line in trials.table_lines(tallies):
        print(line)
    return 0 if all(t.clean == t.trials for t in tallies.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
