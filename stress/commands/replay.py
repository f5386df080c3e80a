"""``python -m stress replay RUN_DIR``: re-run exactly what RUN_DIR/run.json recorded.

    RUN_DIR/run.json --> documents.load_run --> RunConfig.from_dict --> checks (this version
    can run it? enough cores?) --> prepare_replay (follow RUN_DIR/schedule.json when there is
    one) --> stress.commands.run.main_run --> RUN_DIR/replay-<n>/ (or --out)

A pct or replay run folder holds its schedule, so its replay follows the very
interleaving that was recorded; free and jitter runs record no schedule, so their replay
re-runs the same seed, which reproduces the configuration but not necessarily the
interleaving.

Plugins (docs/extending.md): run folders travel between people, so a replay never
imports code that only run.json names.  A run that used a plugin policy or workload is
replayed only when the user names the plugin again (``--policy SPEC`` /
``--workload SPEC``, perhaps at another path) or passes ``--trust-plugins`` (load it as
recorded); otherwise exit 2 saying which plugin the run needs.  The plugin loaded must
be the source the run recorded (its sha256): a changed source is refused, naming the
difference, unless ``--force``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from allocator.policy import policy_names
from stress import config as _config
from stress import options, plugins
from stress.commands import run
from stress.config import RunConfig
from stress.documents import SCHEDULE_FILE, DocumentError, load_run, load_schedule
from stress.files import new_folder
from stress.options import UsageError
from stress.variants import policy_params
from stress.workloads import workload_names

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
    g = parser.add_argument_group("plugins (docs/extending.md)")
    g.add_argument("--policy", type=plugins.spec_checker("policy"), default=None, metavar="SPEC",
                   help="the plugin policy the run used, named again (FILE.py:CLASS, MODULE:CLASS or an "
                        "installed name): the only way a replay loads plugin code, besides --trust-plugins "
                        "(default: none)")
    g.add_argument("--workload", type=plugins.spec_checker("workload"), default=None, metavar="SPEC",
                   help="the plugin workload the run used, named again (default: none)")
    g.add_argument("--trust-plugins", action="store_true",
                   help="load the plugins run.json names, as recorded, without naming them (default: off)")
    g.add_argument("--force", action="store_true",
                   help="replay even when a plugin's source differs from the one the run recorded "
                        "(default: refuse, exit 2)")
    run.add_output_arguments(parser, run_folder=False)


def with_plugins(cfg: RunConfig, args: argparse.Namespace) -> RunConfig:
    """The recorded configuration with its plugins loaded, as the user allowed.

    A plugin is loaded only when the user named it again (``--policy`` / ``--workload``)
    or passed ``--trust-plugins``; the one loaded must have the recorded source hash
    unless ``--force``.  Everything else is a UsageError saying what the run needs."""
    needed = plugins.recorded_plugins(cfg)  # read from the document: nothing imported
    for kind in plugins.KINDS:
        if getattr(args, kind, None) is not None and kind not in needed:
            raise UsageError(f"--{kind}: the run used the built-in {kind} {plugins.spec_of(cfg, kind)!r}; "
                             f"a replay re-runs what was recorded: --{kind} only names a plugin the run needs")
    unnamed = {kind: recorded for kind, recorded in needed.items()
               if getattr(args, kind, None) is None and not args.trust_plugins}
    if unnamed:
        what = " and ".join(f"the {kind} plugin {plugins.describe(r)}" for kind, r in unnamed.items())
        how = " ".join(f"--{kind} SPEC" for kind in unnamed)
        raise UsageError(f"RUN_DIR: the run used {what}; a replay loads no code a document names: name "
                         f"{'them' if len(unnamed) > 1 else 'it'} again with {how}, or pass --trust-plugins "
                         "to load as recorded")
    records: dict[str, dict[str, object]] = {}
    for kind, recorded in needed.items():
        spec = getattr(args, kind, None) or _recorded_spec(recorded)
        try:
            record = plugins.resolve(kind, spec)
        except plugins.PluginError as exc:
            raise UsageError(f"--{kind}: {exc}") from None
        if record is None:
            raise UsageError(f"--{kind}: {spec!r} is built in, but the run used the {kind} plugin "
                             f"{plugins.describe(recorded)}; a replay re-runs what was recorded")
        diff = plugins.difference(recorded, record)
        if diff and not args.force:
            raise UsageError(f"--{kind}: {spec}: {diff}; --force replays it anyway")
        if diff:
            options.warn(f"--{kind}: {spec}: {diff}; replaying anyway (--force)")
        cfg = cfg.replace(**{kind: spec})
        records[kind] = record.to_dict()
    return cfg.replace(plugins=records)


def _recorded_spec(recorded: dict[str, object]) -> str:
    """The spec to load a trusted plugin by: a file plugin from the absolute path the run
    recorded when its relative spec does not resolve here."""
    spec = str(recorded.get("spec"))
    where, _, attr = spec.rpartition(":")
    path = recorded.get("path")
    if plugins.spec_origin(spec) == "file" and not Path(where).is_file() and isinstance(path, str):
        return f"{path}:{attr}"
    return spec


#: the longest run a replay starts: a run's longest, doubled as prepare_replay does, plus 2 s
#: (run.schema.json's config.duration maximum)
MAX_REPLAY_SECONDS = options.MAX_SECONDS * 2 + 2


def config_problems(cfg: RunConfig) -> list[str]:
    """What in a recorded configuration this version cannot run (option name: problem)."""
    problems = []
    for name, allowed in (
        ("workload", workload_names()),  # the plugins are registered by then (with_plugins)
        ("era", _config.ERAS),
        ("policy", policy_names()),
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


def recorded_config(run_dir: Path, args: argparse.Namespace) -> tuple[RunConfig, dict[str, object]]:
    """The configuration RUN_DIR/run.json recorded, its plugins loaded as ``args`` allow
    (``policy``, ``workload``, ``trust_plugins``, ``force``: :func:`with_plugins`), checked
    against what this version can run; and the document.  UsageError (one line) otherwise."""
    try:
        doc = load_run(run_dir)
    except DocumentError as exc:
        raise UsageError(f"RUN_DIR: {exc}") from None
    try:
        cfg = RunConfig.from_dict(doc["config"])
    except (TypeError, ValueError) as exc:
        raise UsageError(f"RUN_DIR: {run_dir}/run.json: unusable config: {exc}") from None
    cfg = with_plugins(cfg, args)
    problems = config_problems(cfg)
    if problems:
        raise UsageError(f"RUN_DIR: {run_dir}: {problems[0]}")
    if not isinstance(cfg.policy_params, dict):
        raise UsageError(f"RUN_DIR: {run_dir}/run.json: config.policy_params is not an object")
    try:  # recorded as k=3 or median.k=3: the run's own policy's parameters, named the run way
        params = policy_params(cfg.policy, cfg.policy_params.items(), where="config.policy_params")
    except (TypeError, ValueError) as exc:
        raise UsageError(f"RUN_DIR: {run_dir}/run.json: {exc}") from None
    return cfg.replace(policy_params=params), doc


def _replay_config(args: argparse.Namespace) -> tuple[RunConfig, dict[str, object]]:
    """The recorded run's configuration, checked and pointed at a fresh folder; and its document."""
    run_dir = Path(args.run_dir)
    cfg, doc = recorded_config(run_dir, args)
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
