"""Wall time of one sweep made three ways: ``--jobs 1``, ``--jobs 2``, and a LocalCluster.

Why: ``--jobs`` and ``--cluster`` (docs/scale-out.md) are worth their complexity only if
they make sweeps faster; this measures how much on this host, as ratios (runs per hour),
never asserted.  Each way runs the same compare: ``--cpus 1`` runs of ``--duration S``,
``VARIANTS`` x ``REPEAT`` = 16 runs by default.  The ways alternate, ``--rounds`` times,
so machine drift hits them alike; the load average at start and end is printed, since
other people's work on a shared machine changes everything::

    python benchmarks/scale_out.py --rounds 2 --json results/reference/performance/scale-out.json

The LocalCluster (one worker, two threads, ``resources={"cores": 2}``) is left out when
dask.distributed is not installed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

SWEEP = ["--sweep", "median.k=1,2,3,4,5,6,7,8", "--configs", "modern:median"]  # 8 variants


def compare_argv(out: Path, duration: float, repeat: int) -> list[str]:
    return [sys.executable, "-m", "stress", "compare", "--cpus", "1", "--duration", str(duration),
            "--nmbclusters", "512", "--repeat", str(repeat), *SWEEP, "--out", str(out), "-q"]


def timed(argv: list[str]) -> float:
    t = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - t


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=2.0)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    ways: dict[str, list[str]] = {"jobs1": [], "jobs2": ["--jobs", "2"]}
    lc = None
    try:
        from distributed import LocalCluster

        lc = LocalCluster(n_workers=1, processes=True, threads_per_worker=2, resources={"cores": 2},
                          dashboard_address=None, scheduler_port=0, silence_logs=50)
        ways["cluster"] = ["--cluster", lc.scheduler_address]
    except ImportError:
        pass
    load_start = os.getloadavg()
    times: dict[str, list[float]] = {w: [] for w in ways}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.rounds):
                for way, extra in ways.items():
                    out = Path(tmp) / f"{way}-{r}"
                    times[way].append(timed(compare_argv(out, args.duration, args.repeat) + extra))
                    print(f"round {r + 1} {way}: {times[way][-1]:.1f} s", flush=True)
    finally:
        if lc is not None:
            lc.close()
    runs = 8 * args.repeat
    med = {w: median(t) for w, t in times.items()}
    result: dict[str, Any] = {
        "runs": runs, "run_duration_s": args.duration, "rounds": args.rounds, "wall_s": times,
        "runs_per_hour": {w: round(runs * 3600 / m) for w, m in med.items()},
        "speedup_jobs2_over_jobs1": round(med["jobs1"] / med["jobs2"], 2),
        "loadavg_start": load_start, "loadavg_end": os.getloadavg(), "cores": len(os.sched_getaffinity(0)),
    }
    if "cluster" in med:
        result["cluster_over_jobs2"] = round(med["cluster"] / med["jobs2"], 2)
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
