"""``python -m stress stat RUN_DIR|PID [--interval S] [--count N] [--json]``: watch a running
run as one watches a kernel with ``vmstat -z 1``.

It attaches to the run's arena **read-only** (the memfd mapped without write permission:
a write would raise, so nothing here can change the run) and takes no allocator lock:
every figure is read the way a sysctl read races with the CPUs -- a snapshot that may be
a moment stale, never a stop.  Each interval prints, in FreeBSD's formats:

- ``vmstat -z`` (the mbuf zones) and ``netstat -m``, through the allocator's one formatter;
- the per-CPU bucket table (each CPU's alloc and free bucket per zone);
- the sleepers (``ps -axl``: STAT D, MWCHAN zonelimit, how long) and the lock holders
  (after DDB's ``show alllocks``).

The run is found from its folder (``live.json``, stress/engine/live.py; a stale one left by
a SIGKILLed run is recognised and refused) or from a PID (the manager's or a worker's: the
arena among its open files).  A run that has ended is exit 2, saying so.  Like vmstat:
without ``--interval`` or ``--count`` one report; ``--interval S`` repeats until the run
ends, ``--count N`` reports or Ctrl-C (exit 130); ``--count`` alone waits 1 s between
reports.  ``--json`` prints one JSON object per interval, one per line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from allocator import Uma
from stress import options
from stress.engine import live
from stress.engine.stopping import command_signals
from stress.options import EX_OK, EX_SIGINT
from stress.output import monitor

HELP = "watch a running run: vmstat -z, netstat -m, per-CPU buckets, sleepers, locks"
DESCRIPTION = __doc__ or HELP
DEFAULT_INTERVAL = 1.0  #: seconds between reports when only --count is given (vmstat's wait)
TICK = 0.05  #: seconds between two looks at the signals and the run while waiting


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m stress stat``."""
    parser.add_argument("target", metavar="RUN_DIR|PID",
                        help="the folder of a running run (its live.json), or the pid of its manager or a worker")
    parser.add_argument("--interval", type=options.seconds(minimum=options.MIN_PERIOD), default=None, metavar="S",
                        help="repeat every S seconds until the run ends (default: one report)")
    parser.add_argument("--count", type=options.whole_number(1), default=None, metavar="N",
                        help="stop after N reports (with no --interval: every 1 s)")
    parser.add_argument("--json", action="store_true", help="one JSON object per report, one per line")


def find_run(target: str) -> live.LiveRun:
    """The running run ``target`` names: a pid (all digits) or a run folder."""
    return live.arena_of_pid(int(target)) if target.isdigit() else live.find(Path(target))


def row_name(row: int, ncpus: int) -> str:
    """An arena row as a person names it: cpuK, the manager, or the off-CPU context."""
    if row < ncpus:
        return f"cpu{row}"
    return "manager" if row == ncpus else f"row {row}"


def snapshot(uma: Uma, run: live.LiveRun) -> dict[str, Any]:
    """Everything one report shows, as plain data (the --json object)."""
    g = uma.geometry
    pids = uma.view("cpu_pid")
    now_ns = time.monotonic_ns()
    snap: dict[str, Any] = {"pid": run.pid, "folder": str(run.folder) if run.folder else None,
                            "t_s": None if run.started_monotonic is None else time.monotonic() - run.started_monotonic}
    snap.update(uma.stats().to_dict())
    snap["percpu"] = [vars(c) for c in uma.percpu_buckets()]
    snap["sleepers"] = [{"cpu": s.cpu, "pid": int(pids[s.cpu]), "wchan": s.wchan, "zone": s.zone, "keg": s.keg,
                         "slept_s": (now_ns - s.since_ns) / 1e9 if s.since_ns > 0 else None}
                        for s in uma.sleepers()]
    snap["locks"] = [{"lock": name, "row": row, "owner": row_name(row, g.ncpus),
                      "pid": int(pids[row]) if 0 <= row < g.rows else None}
                     for name, row in uma.lock_holders()]
    return snap


def main(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> int:
    """``python -m stress stat``: 0 after the reports asked for (or when the run ends
    while watched), 2 when there is no running run to watch, 130 / 143 when stopped."""
    try:
        run = find_run(args.target)
        started = live.process_start_time(run.pid)
        uma = Uma.attach(run.arena, readonly=True)
    except live.NotLive as exc:
        return options.usage_error(f"RUN_DIR|PID: {exc}")
    except FileNotFoundError:
        return options.usage_error(f"RUN_DIR|PID: {args.target}: the run has ended (its arena is gone)")
    except (OSError, ValueError) as exc:
        return options.usage_error(f"RUN_DIR|PID: {args.target}: cannot attach to its arena: {exc}")
    repeat = args.interval is not None or args.count is not None
    interval = args.interval if args.interval is not None else DEFAULT_INTERVAL
    done = 0
    try:
        with command_signals() as signals:  # the command's one StopSignals (stress/cli.py)
            while True:
                snap = snapshot(uma, run)
                if args.json:
                    print(json.dumps(snap), flush=True)
                else:
                    print("\n".join(monitor.stat_lines(snap)), flush=True)
                done += 1
                if not repeat or (args.count is not None and done >= args.count):
                    return EX_OK
                deadline = time.monotonic() + interval
                while time.monotonic() < deadline and not signals.requested:
                    time.sleep(min(TICK, max(0.0, deadline - time.monotonic())))
                if signals.requested:
                    return int(signals.exit_code or EX_SIGINT)
                if live.process_start_time(run.pid) != started:
                    print(f"stat: the run has ended (pid {run.pid})", file=sys.stderr, flush=True)
                    return EX_OK
    finally:
        uma.close()
