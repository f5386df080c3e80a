"""``python -m stress replay RUN_DIR``: re-run exactly what RUN_DIR/run.json recorded.

    RUN_DIR/run.json --> documents.load_run --> RunConfig.from_dict --> checks (this version
    can run it? enough cores?) --> prepare_replay (follow RUN_DIR/schedule.json when there is
    one) --> stress.commands.run.main_run --> RUN_DIR/replay-<n>/ (or --out)

A pct or replay run folder holds its schedule, so its replay follows the very
interleaving that was recorded; free and jitter runs record no schedule, so their replay
re-runs the same seed, which reproduces the configuration but not necessarily the
interleaving.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from allocator.policy import POLICY_NAMES
from stress import config as _config
from stress import options
from stress.commands import run
from stress.config import RunConfig
from stress.documents import SCHEDULE_FILE, DocumentError, load_run, load_schedule
from stress.files import new_folder
from stress.options import UsageError
from stress.variants import policy_params

HELP = "re-run exactly what RUN_DIR/run.json recorded"
DESCRIPTION = ("Re-run exactly what RUN_DIR/run.json recorded (same config and seed; the recorded\nschedule "
               "too when there is one), into a new folder.\nExit codes as for run.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``replay``."""
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run folder holding run.json")
    parser.add_argument("--out", type=str, default=None, metavar="DIR",
                        help="where to write the new run folder; must be new or empty "
                             "(default: RUN_DIR/replay-<n>/)")
    parser.add_argument("--oversubscribe", action="store_true",
                        help="allow the recorded CPU count to exceed this machine's usable cores "
                             "(default: as recorded)")
    parser.add_argument("--steps", type=options.whole_number(1, run.MAX_STEPS), default=None, metavar="N",
                        help="replaying a recorded schedule: stop at step N, to look at the state just "
                             "before a failure (default: where the recorded run stopped)")
    run.add_output_arguments(parser, run_folder=False)


#: the longest run a replay starts: a run's longest, doubled as prepare_replay does, plus 2 s
#: (run.schema.json's config.duration maximum)
MAX_REPLAY_SECONDS = options.MAX_SECONDS * 2 + 2


def config_problems(cfg: RunConfig) -> list[str]:
    """What in a recorded configuration this version cannot run (option name: problem)."""
    problems = []
    for name, allowed in (
        ("workload", run.WORKLOAD_NAMES),
        ("era", _config.ERAS),
        ("policy", POLICY_NAMES),
        ("refcount", _config.REFCOUNT_MODES),
        ("wakeup", _config.WAKEUP_MODES),
        ("sched", _config.SCHED_MODES),
    ):
        value = getattr(cfg, name)
        if value not in allowed:
            problems.append(f"--{name}: recorded {value!r}; allowed here: {', '.join(allowed)}")
    bad = [n for n in cfg.inject if n not in _config.INJECTIONS]
    if bad:
        problems.append(f"--inject: recorded {','.join(bad)}; allowed here: {', '.join(_config.INJECTIONS)}")
    if not isinstance(cfg.cpus, int) or cfg.cpus < 1:
        problems.append(f"--cpus: recorded {cfg.cpus!r}; must be a whole number >= 1")
    if cfg.rounds and cfg.rounds * (cfg.round_length + cfg.idle) > MAX_REPLAY_SECONDS:
        problems.append(f"--rounds: recorded {cfg.rounds} rounds of {cfg.round_length + cfg.idle:g} s: longer than "
                        f"{MAX_REPLAY_SECONDS} s")
    return problems


def prepare_replay(run_dir: Path, cfg: RunConfig) -> RunConfig:
    """The configuration that replays RUN_DIR.

    A run folder with a schedule (a pct or replay run) is replayed with
    ``sched="replay"`` following that schedule exactly; a free or jitter run re-runs its
    seed.  Raises ValueError (one line) when the schedule is unusable."""
    path = Path(run_dir) / SCHEDULE_FILE
    if not path.is_file():
        if cfg.sched == "replay":
            raise ValueError(f"recorded --sched replay but holds no {SCHEDULE_FILE}")
        return cfg
    try:
        s = load_schedule(Path(run_dir))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{SCHEDULE_FILE} unreadable: {exc}") from None
    if s.ncpus != cfg.cpus:
        raise ValueError(f"{SCHEDULE_FILE} was recorded for {s.ncpus} CPUs, run.json says {cfg.cpus}")
    # A schedule with a step plan (every pct run since issue 11) is placed by step: its
    # budget, rounds, callout and wedge test come from schedule.json, the replay ends where
    # the recording stops, and its own ``steps`` (``--steps``) only cuts it shorter.  An
    # older schedule, recorded against the wall clock, stops its workers when the
    # recording is used up: give it room to get there even if following a schedule is
    # slower than recording it was.
    duration = cfg.duration * 2 + 2.0
    if duration > MAX_REPLAY_SECONDS:
        raise ValueError(f"a schedule followed for twice the recorded {cfg.duration:g} s would run longer than "
                         f"{MAX_REPLAY_SECONDS} s")
    return cfg.replace(sched="replay", replay_from=str(run_dir), duration=duration, steps=0)


def _replay_config(args: argparse.Namespace) -> tuple[RunConfig, dict[str, object]]:
    """The recorded run's configuration, checked and pointed at a fresh folder; and its document."""
    run_dir = Path(args.run_dir)
    try:
        doc = load_run(run_dir)
    except DocumentError as exc:
        raise UsageError(f"RUN_DIR: {exc}") from None
    try:
        cfg = RunConfig.from_dict(doc["config"])
    except (TypeError, ValueError) as exc:
        raise UsageError(f"RUN_DIR: {run_dir}/run.json: unusable config: {exc}") from None
    problems = config_problems(cfg)
    if problems:
        raise UsageError(f"RUN_DIR: {run_dir}: {problems[0]}")
    if not isinstance(cfg.policy_params, dict):
        raise UsageError(f"RUN_DIR: {run_dir}/run.json: config.policy_params is not an object")
    try:  # recorded as k=3 or median.k=3: the run's own policy's parameters, named the run way
        params = policy_params(cfg.policy, cfg.policy_params.items(), where="config.policy_params")
    except (TypeError, ValueError) as exc:
        raise UsageError(f"RUN_DIR: {run_dir}/run.json: {exc}") from None
    cfg = cfg.replace(policy_params=params)
    oversubscribe = cfg.oversubscribe or args.oversubscribe
    options.check_cpus(cfg.cpus, oversubscribe)
    verbosity = options.verbosity(args.quiet, args.verbose)
    options.check_out(args.out)
    try:  # before the folder is made: an unusable schedule leaves nothing behind
        followed = prepare_replay(run_dir, cfg)
    except ValueError as exc:
        raise UsageError(f"RUN_DIR: {run_dir}: schedule: {exc}") from None
    if args.steps is not None:
        if followed.sched != "replay":
            raise UsageError(f"--steps: {run_dir} holds no recorded schedule (a {cfg.sched} run re-runs its "
                             "seed): there is no step to stop at")
        followed = followed.replace(steps=args.steps)
    return followed.replace(json=args.json, verbosity=verbosity, oversubscribe=oversubscribe), doc


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``replay RUN_DIR``: re-run exactly what RUN_DIR/run.json recorded, into a fresh folder."""
    try:
        cfg, doc = _replay_config(args)
        # checked first, claimed last: a replay refused for any reason leaves no folder
        folder = run.claim_out(args.out, lambda: new_folder(Path(args.run_dir), "replay", numbered=True))
    except UsageError as exc:
        parser.error(str(exc))
    cfg = cfg.replace(out=str(folder))
    talk = not args.json and cfg.verbosity >= 0
    if talk:
        print(f"replay of {args.run_dir} (recorded verdict {doc.get('verdict', '?')}, exit "
              f"{doc.get('exit_code', '?')}) into {cfg.out}", file=sys.stderr, flush=True)
    options.oversubscription_warning(cfg.cpus)
    code = run.start_run(cfg, "replay", folder)
    recorded = doc.get("exit_code")
    if talk and isinstance(recorded, int) and code in (0, 1) and code != recorded:
        print(f"replay: exit {code} differs from the recorded exit {recorded}", file=sys.stderr)
    return code
