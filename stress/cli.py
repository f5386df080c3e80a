"""The command line: ``python -m stress [run|compare|race|replay|report|bench] ...`` (cli.md).

Parse, validate once, hand over.  This module turns argv into a :class:`RunConfig`
(for ``run`` and ``replay``) or into the arguments of another subcommand, and maps what
comes back to the exit codes of cli.md:

    0    the run completed and every audit passed
    1    the system under test failed (wedged, leak, double free, corrupt, lock order)
    2    usage error: bad option or value; the LAST stderr line names the option and
         what is allowed; never a traceback
    3    the tester itself failed (the message says what, with the traceback)
    130  interrupted by Ctrl-C

Who does what::

    argv --> cli.main --> build_parser() --> args
               |  run     -> config_from_args -> stress.manager.main_run(cfg) -> exit code
               |  replay  -> results.load_run -> RunConfig.from_dict -> sched.prepare_replay -> main_run
               |  report  -> stress.report.main(args, parser)
               `  compare, race, bench -> stress.<name>.main(args)

``compare``, ``race`` and ``bench`` belong to their own modules: each defines
``add_arguments(parser)`` and ``main(args) -> int``, and the CLI builds the subcommand
from them.  The names the options accept come from their owners: workloads from the
``stress.workloads`` registry, trimming policies and their parameters from
``allocator.policy``.

Design decisions:

- ``run`` is the default command: argv not starting with a command name gets ``run``
  put in front (``python -m stress --cpus 2`` is ``python -m stress run --cpus 2``).
- Every value is checked by a small type function that raises ``ArgumentTypeError``
  with "must be ..., got '...'", and :class:`ZonelimitParser` rewrites argparse's
  "argument --x:" prefix so that every error line reads
  ``zonelimit: error: --x: must be ..., got '...'``.  Checks that involve several
  options (more CPUs than cores, --jitter with --sched) run after parsing, in
  :func:`config_from_args`, through the same ``parser.error``.
- Options whose default comes from ``--era`` (``--policy``, ``--refcount``, ``--wakeup``)
  default to None, so an explicit value is recognisable and beats the preset
  (``stress.config.resolve_era``).
- Abbreviated long options are refused (``allow_abbrev=False``): a prefix that works
  today would become ambiguous, and so break scripts, when an option is added.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import shutil
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from allocator.layout import CLUSTER_IPERS
from allocator.policy import POLICY_NAMES, POLICY_PARAMS
from stress import config as _config
from stress.config import RunConfig, resolve_era
from stress.cpulist import format_cpulist, usable_cores
from stress.results import RunFolderError, load_run, package_version
from stress.workloads import WORKLOADS

PROG = "zonelimit"
SUBCOMMANDS = ("run", "compare", "race", "replay", "report", "bench")
MODULE_COMMANDS = {  #: subcommands built from stress/<name>.py's add_arguments and main
    "compare": "the same workload under several configurations, side by side (policies.md)",
    "race": "race hunting and schedule replay (races.md)",
    "bench": "performance measurements (performance.md)",
}
MAX_CPUS = 256  #: MAXCPU: one process per simulated CPU; more is a fork bomb, not a test
MIN_NMBCLUSTERS = CLUSTER_IPERS  #: one cluster slab; the allocator refuses fewer
MAX_NMBCLUSTERS = 1 << 20  #: the arena holds 2 KB per cluster plus 2 mbufs each: ~2.6 GB at the cap
EX_OK, EX_FAIL, EX_USAGE, EX_TESTER, EX_INTERRUPTED = 0, 1, 2, 3, 130

_DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in dataclasses.fields(RunConfig) if f.default is not dataclasses.MISSING
}


class ZonelimitParser(argparse.ArgumentParser):
    """argparse with one error style: usage, then ``zonelimit: error: --option: what is allowed``."""

    def error(self, message: str) -> NoReturn:
        """Print the usage line and a one-line message naming the option; exit 2."""
        self.print_usage(sys.stderr)
        message = re.sub(r"^argument ([^:]+): ", r"\1: ", message)
        message = message.replace("expected one argument", "expects a value")
        if message.startswith("unrecognized arguments: "):
            extra = message.removeprefix("unrecognized arguments: ")
            message = f"{extra}: unrecognized argument; the options are listed by --help"
        self.exit(EX_USAGE, f"{PROG}: error: {message}\n")


# --- value checkers: each returns the value or raises ArgumentTypeError("must be ..., got ...") ---


def whole_number(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """A checker for whole numbers in ``[minimum, maximum]``."""
    if maximum is None:
        allowed = f">= {minimum}"
    elif maximum >= 2**32:  # a huge cap (a seed's) reads better as a width
        allowed = f">= {minimum} that fits in {maximum.bit_length()} bits"
    else:
        allowed = f"from {minimum} to {maximum}"

    def check(text: str) -> int:
        try:
            value = int(text.strip(), 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number {allowed}, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be a whole number {allowed}, got {text!r}")
        return value

    check.__name__ = "whole number"
    return check


def seconds(allow_zero: bool = False) -> Callable[[str], float]:
    """A checker for a finite number of seconds, > 0 (or >= 0 with ``allow_zero``)."""
    allowed = ">= 0" if allow_zero else "> 0"

    def check(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(f"must be a number of seconds {allowed}, got {text!r}")
        return value

    check.__name__ = "seconds"
    return check


def probability(text: str) -> float:
    """A probability in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:  # also false for NaN
        raise argparse.ArgumentTypeError(f"must be a probability from 0 to 1, got {text!r}")
    return value


def one_of(names: Sequence[str]) -> Callable[[str], str]:
    """A checker for one name out of ``names``."""

    def check(text: str) -> str:
        if text not in names:
            raise argparse.ArgumentTypeError(f"must be one of {', '.join(names)}; got {text!r}")
        return text

    check.__name__ = "name"
    return check


def injection_list(text: str) -> list[str]:
    """``NAME[,NAME]``: race-catalogue injection switches (races.md)."""
    names = [n.strip() for n in text.split(",")]
    bad = [n for n in names if n not in _config.INJECTIONS]
    if not text.strip() or bad:
        raise argparse.ArgumentTypeError(
            f"must be NAME[,NAME] with names from {', '.join(_config.INJECTIONS)}; got {text!r}"
        )
    return names


def policy_param(text: str) -> tuple[str, float]:
    """``NAME=VALUE``: one tuning parameter of the trimming policy."""
    name, sep, value_text = text.partition("=")
    try:
        value = float(value_text)
    except ValueError:
        value = math.nan
    if not sep or not name.strip() or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be NAME=VALUE with a finite number VALUE, got {text!r}")
    return name.strip(), value


def workload_names() -> tuple[str, ...]:
    """Workloads the runner knows, in the order of the stress.workloads registry."""
    return tuple(WORKLOADS)


# --- the run options ---


def _policy_params_help() -> str:
    return "; ".join(
        f"{policy}: " + ", ".join(f"{name}={default:g}" for name, (default, _) in params.items())
        for policy, params in POLICY_PARAMS.items()
        if params
    )


def _era_default(knob: str) -> str:
    presets = ", ".join(f"{era}: {_config.ERA_PRESETS[era][knob]}" for era in _config.ERAS)
    return f"from --era ({presets})"


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every option of ``run`` (cli.md) to ``parser``; ``compare`` may reuse this.

    Each help text ends with the default, so ``--help`` documents every default.
    """
    cores = usable_cores()
    d = _DEFAULTS
    g = parser.add_argument_group("what to run")
    g.add_argument("--cpus", type=whole_number(1, MAX_CPUS), default=None, metavar="N",
                   help=f"simulated CPUs = worker processes, CPU k pinned to core k mod cores "
                        f"(default: the number of usable cores, {len(cores)} here: {format_cpulist(cores)})")
    g.add_argument("--oversubscribe", action="store_true",
                   help="allow more CPUs than usable cores (they then interleave instead of running "
                        "in parallel; a warning is printed) (default: off)")
    g.add_argument("--duration", type=seconds(), default=None, metavar="S",
                   help=f"total run time in seconds (default: {d['duration']:g}; with --rounds: "
                        "rounds x (round-length + idle))")
    g.add_argument("--workload", type=one_of(workload_names()), default=d["workload"], metavar="NAME",
                   help=f"{', '.join(workload_names())} (default: {d['workload']})")
    g.add_argument("--rounds", type=whole_number(0), default=d["rounds"], metavar="R",
                   help="netperf-style on/off rounds, netstat -m printed after each; 0 = one continuous "
                        f"round (default: {d['rounds']})")
    g.add_argument("--round-length", type=seconds(), default=None, metavar="S",
                   help=f"seconds of load per round, with --rounds (default: {d['round_length']:g})")
    g.add_argument("--idle", type=seconds(allow_zero=True), default=None, metavar="S",
                   help=f"idle seconds between rounds, with --rounds (default: {d['idle']:g})")
    g.add_argument("--seed", type=whole_number(0, 2**64 - 1), default=d["seed"], metavar="N",
                   help=f"seeds every random choice; recorded in run.json (default: {d['seed']})")

    g = parser.add_argument_group("allocator semantics (an explicit option beats the --era preset)")
    g.add_argument("--era", type=one_of(_config.ERAS), default=d["era"], metavar="ERA",
                   help="preset of allocator semantics: 2005 (Dec 2005 -CURRENT: refcount bug, wake one, "
                        "no trimming), 2007 (refcount fixed, packet zone drained on cluster exhaustion, "
                        "wake all), modern (all fixes plus the default trimming policy) "
                        f"(default: {d['era']})")
    g.add_argument("--policy", type=one_of(POLICY_NAMES), default=None, metavar="NAME",
                   help=f"packet-zone / bucket-cache trimming: {', '.join(POLICY_NAMES)} "
                        f"(default: {_era_default('policy')})")
    g.add_argument("--policy-param", type=policy_param, action="append", default=None, metavar="NAME=VALUE",
                   help="a tuning parameter of --policy, repeatable: "
                        f"{_policy_params_help()} (default: the policy's own defaults)")
    g.add_argument("--refcount", type=one_of(_config.REFCOUNT_MODES), default=None, metavar="MODE",
                   help=f"cluster refcount release: buggy-eq0 (the 2005 test) or atomic "
                        f"(default: {_era_default('refcount')})")
    g.add_argument("--wakeup", type=one_of(_config.WAKEUP_MODES), default=None, metavar="MODE",
                   help=f"zonelimit wakeup: one (2005) or all (default: {_era_default('wakeup')})")
    g.add_argument("--nmbclusters", type=whole_number(MIN_NMBCLUSTERS, MAX_NMBCLUSTERS), default=d["nmbclusters"],
                   metavar="N", help=f"cluster zone limit (default: {d['nmbclusters']})")
    g.add_argument("--trim-interval", type=seconds(), default=d["trim_interval"], metavar="S",
                   help=f"period of the trimming policy's decisions (default: {d['trim_interval']:g})")
    g.add_argument("--page-budget", type=whole_number(0), default=d["page_budget"], metavar="PAGES",
                   help="pages the VM has for the kegs: when free pages fall below about 2%% of it, "
                        "vm_lowmem asks every zone's policy to give memory back; 0 = no budget, no "
                        f"low-memory event ever, as on the Dec 2005 machines (default: {d['page_budget']})")

    g = parser.add_argument_group("monitoring and watchdog")
    g.add_argument("--interval", type=seconds(), default=d["interval"], metavar="S",
                   help=f"sampling period of the monitor (default: {d['interval']:g})")
    g.add_argument("--wedge-timeout", type=seconds(), default=d["wedge_timeout"], metavar="S",
                   help="how long all CPUs may sleep in zonelimit without progress before the run is "
                        f"declared wedged (default: {d['wedge_timeout']:g})")

    g = parser.add_argument_group("race hunting (races.md)")
    g.add_argument("--inject", type=injection_list, action="append", default=None, metavar="NAME[,NAME]",
                   help=f"deliberately re-introduce known races: {', '.join(_config.INJECTIONS)}; "
                        "repeatable (default: none)")
    g.add_argument("--sched", type=one_of(_config.SCHED_MODES), default=None, metavar="MODE",
                   help="scheduling at sched points: free, jitter (random delays), pct (one CPU at a "
                        "time, PCT priorities), replay (use `replay RUN_DIR`) "
                        f"(default: jitter if --jitter > 0, else {d['sched']})")
    g.add_argument("--jitter", type=probability, default=None, metavar="P",
                   help=f"probability of a random delay at each sched point (default: {d['jitter']:g}; "
                        "with --sched jitter: 0.01)")
    g.add_argument("--pct-depth", type=whole_number(1, 64), default=d["pct_depth"], metavar="D",
                   help="PCT bug depth: D-1 priority change points, with --sched pct "
                        f"(default: {d['pct_depth']})")

    g = parser.add_argument_group("debugging and profiling")
    g.add_argument("--invariants", action="store_true",
                   help="INVARIANTS-style checks: poisoning, duplicate free/alloc, lock order (default: off)")
    g.add_argument("--lock-profile", action="store_true",
                   help="LOCK_PROFILING-style statistics per lock and acquisition point (default: off)")
    g.add_argument("--profile", action="store_true",
                   help="sample all workers with py-spy; write a flame graph and a speedscope file "
                        "(default: off)")

    add_output_arguments(parser, run_folder=True)


def add_output_arguments(parser: argparse.ArgumentParser, run_folder: bool) -> None:
    """--out, --json, --quiet, -v: shared by run and replay."""
    g = parser.add_argument_group("output")
    if run_folder:
        g.add_argument("--out", type=str, default=None, metavar="DIR",
                       help="where to write the run folder; must be new or empty "
                            "(default: results/<timestamp>-<workload>-<era>-<policy>-cpus<N>/)")
    g.add_argument("--json", action="store_true",
                   help="print the final run.json to stdout instead of the human summary (default: off)")
    g.add_argument("-q", "--quiet", action="store_true", help="less output (default: off)")
    g.add_argument("-v", "--verbose", action="count", default=0,
                   help="more output, repeatable (default: 0)")


def _check_out(parser: argparse.ArgumentParser, out: str | None) -> None:
    """A run folder is never overwritten: --out must be new or an empty directory."""
    if out is None:
        return
    path = Path(out)
    if path.exists() and not path.is_dir():
        parser.error(f"--out: {out} exists and is not a directory; give a new folder")
    if path.is_dir() and any(path.iterdir()):
        parser.error(f"--out: {out} already holds files and runs never overwrite; give a new or empty folder")


def _check_cpus(parser: argparse.ArgumentParser, cpus: int, oversubscribe: bool) -> None:
    """More simulated CPUs than usable cores only with --oversubscribe (architecture.md, rule 1)."""
    cores = usable_cores()
    if cpus > len(cores) and not oversubscribe:
        parser.error(
            f"--cpus: {cpus} CPUs but only {len(cores)} usable cores ({format_cpulist(cores)}); "
            f"allowed: 1 to {len(cores)}, or add --oversubscribe"
        )


def _verbosity(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.quiet and args.verbose:
        parser.error("--quiet: cannot be combined with -v/--verbose; choose one")
    return -1 if args.quiet else int(args.verbose)


def _py_spy_available() -> bool:
    return bool(shutil.which("py-spy") or (Path(sys.executable).parent / "py-spy").exists())


def config_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> RunConfig:
    """Resolve parsed run options into a RunConfig: era preset, then explicit options, then checks.

    Every problem goes through ``parser.error`` (exit 2, the option named on the last line).
    """
    cores = usable_cores()
    cpus = args.cpus if args.cpus is not None else len(cores)
    _check_cpus(parser, cpus, args.oversubscribe)
    verbosity = _verbosity(parser, args)
    _check_out(parser, args.out)

    knobs = resolve_era(args.era, {"refcount": args.refcount, "wakeup": args.wakeup, "policy": args.policy})

    if args.rounds == 0:
        for flag, value in (("--round-length", args.round_length), ("--idle", args.idle)):
            if value is not None:
                parser.error(f"{flag}: only meaningful with --rounds R (R >= 1)")
    round_length = args.round_length if args.round_length is not None else _DEFAULTS["round_length"]
    idle = args.idle if args.idle is not None else _DEFAULTS["idle"]
    if args.duration is not None:
        duration = args.duration
    elif args.rounds:
        duration = args.rounds * (round_length + idle)
    else:
        duration = _DEFAULTS["duration"]

    sched = args.sched
    if sched is None:
        sched = "jitter" if args.jitter else _DEFAULTS["sched"]
    if sched == "replay":
        parser.error("--sched: replay follows a recorded schedule: use `python -m stress replay RUN_DIR`; "
                     "here allowed: free, jitter, pct")
    if args.jitter and sched != "jitter":
        parser.error(f"--jitter: only with --sched jitter (got --sched {sched})")
    jitter = args.jitter if args.jitter is not None else (0.01 if sched == "jitter" else _DEFAULTS["jitter"])

    inject = tuple(dict.fromkeys(n for group in (args.inject or []) for n in group))

    params: dict[str, float] = dict(args.policy_param or [])
    if params:
        known = POLICY_PARAMS.get(knobs["policy"], {})
        for name in params:
            if name not in known:
                allowed = ", ".join(sorted(known)) or "none"
                parser.error(f"--policy-param: policy {knobs['policy']} has no parameter {name!r}; "
                             f"allowed: {allowed}")

    if args.profile and not _py_spy_available():
        parser.error("--profile: py-spy is not installed (pip install py-spy)")

    return RunConfig(
        cpus=cpus,
        duration=duration,
        workload=args.workload,
        era=args.era,
        policy=knobs["policy"],
        refcount=knobs["refcount"],
        wakeup=knobs["wakeup"],
        nmbclusters=args.nmbclusters,
        rounds=args.rounds,
        round_length=round_length,
        idle=idle,
        interval=args.interval,
        wedge_timeout=args.wedge_timeout,
        trim_interval=args.trim_interval,
        page_budget=args.page_budget,
        seed=args.seed,
        inject=inject,
        sched=sched,
        jitter=jitter,
        pct_depth=args.pct_depth,
        invariants=args.invariants,
        lock_profile=args.lock_profile,
        profile=args.profile,
        oversubscribe=args.oversubscribe,
        out=args.out,
        json=args.json,
        verbosity=verbosity,
        policy_params=params,
    )


def warn(message: str) -> None:
    """One warning line on stderr."""
    print(f"{PROG}: warning: {message}", file=sys.stderr, flush=True)


def _oversubscription_warning(cfg: RunConfig) -> None:
    ncores = len(usable_cores())
    if cfg.cpus > ncores:  # on stderr, so --json output stays clean
        warn(f"--oversubscribe: {cfg.cpus} CPUs on {ncores} cores: CPUs sharing a core interleave "
             "instead of running in parallel, so races show less often")


# --- handing over ---


def call_guarded(what: str, fn: Callable[[], int]) -> int:
    """Run a command's body and map the unexpected to cli.md's codes: Ctrl-C 130, a crash 3."""
    try:
        code = fn()
    except KeyboardInterrupt:
        print(f"{PROG}: {what}: interrupted", file=sys.stderr)
        return EX_INTERRUPTED
    except BrokenPipeError:
        return _stdout_closed()
    except Exception:
        traceback.print_exc()
        print(f"{PROG}: {what}: the tester itself failed (traceback above)", file=sys.stderr)
        return EX_TESTER
    if not isinstance(code, int) or isinstance(code, bool):
        print(f"{PROG}: {what}: returned {code!r} instead of an exit code", file=sys.stderr)
        return EX_TESTER
    return code


def _stdout_closed() -> int:
    """The reader of stdout went away (``| head``): no traceback, exit 1 (Python's advice).

    stdout is pointed at /dev/null so that the interpreter's final flush cannot fail again.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return EX_FAIL


def _main_run() -> Callable[[RunConfig], int]:
    """``stress.manager.main_run``, imported only when a run is asked for (start-up time)."""
    from stress.manager import main_run

    return main_run


def start_run(cfg: RunConfig, what: str = "run") -> int:
    """Hand a resolved configuration to the manager and return its exit code."""
    return call_guarded(what, lambda: _main_run()(cfg))


def cmd_run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``run``: one stress run."""
    cfg = config_from_args(args, parser)
    _oversubscription_warning(cfg)
    return start_run(cfg)


# --- replay ---


def next_replay_dir(run_dir: Path) -> Path:
    """Create and return ``run_dir/replay-<n>`` for the first n not taken (never reuses one)."""
    n = 1
    while True:
        folder = run_dir / f"replay-{n}"
        try:
            folder.mkdir(parents=True)
        except FileExistsError:
            n += 1
            continue
        return folder


def _config_problems(cfg: RunConfig) -> list[str]:
    """What in a recorded configuration this version cannot run (option name: problem)."""
    problems = []
    for name, allowed in (
        ("workload", workload_names()),
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
    return problems


def follow_schedule(parser: argparse.ArgumentParser, run_dir: Path, cfg: RunConfig) -> RunConfig:
    """Make a replay follow the schedule RUN_DIR recorded, when it recorded one.

    The race tooling owns this step (``stress.sched.prepare_replay``): a pct or replay
    run folder is replayed with ``sched="replay"``; free and jitter runs record no
    schedule, so their replay re-runs the same seed, which reproduces the configuration
    but not necessarily the interleaving.  An unusable schedule is a usage error.
    """
    from stress.sched import prepare_replay

    try:
        replayed: RunConfig = prepare_replay(run_dir, cfg)
    except ValueError as exc:
        parser.error(f"RUN_DIR: {run_dir}: schedule: {exc}")
    return replayed


def cmd_replay(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``replay RUN_DIR``: re-run exactly what RUN_DIR/run.json recorded, into a fresh folder."""
    run_dir = Path(args.run_dir)
    try:
        doc = load_run(run_dir)
    except RunFolderError as exc:
        parser.error(f"RUN_DIR: {exc}")
    try:
        cfg = RunConfig.from_dict(doc["config"])
    except (TypeError, ValueError) as exc:
        parser.error(f"RUN_DIR: {run_dir}/run.json: unusable config: {exc}")
    problems = _config_problems(cfg)
    if problems:
        parser.error(f"RUN_DIR: {run_dir}: {problems[0]}")
    oversubscribe = cfg.oversubscribe or args.oversubscribe
    _check_cpus(parser, cfg.cpus, oversubscribe)
    verbosity = _verbosity(parser, args)
    _check_out(parser, args.out)
    out = Path(args.out) if args.out is not None else next_replay_dir(run_dir)
    cfg = cfg.replace(out=str(out), json=args.json, verbosity=verbosity, oversubscribe=oversubscribe)
    cfg = follow_schedule(parser, run_dir, cfg)
    if not args.json and verbosity >= 0:
        print(f"replay of {run_dir} (recorded verdict {doc.get('verdict', '?')}, exit "
              f"{doc.get('exit_code', '?')}) into {out}", file=sys.stderr, flush=True)
    _oversubscription_warning(cfg)
    code = start_run(cfg, "replay")
    recorded = doc.get("exit_code")
    if not args.json and verbosity >= 0 and isinstance(recorded, int) and code in (0, 1) and code != recorded:
        print(f"replay: exit {code} differs from the recorded exit {recorded}", file=sys.stderr)
    return code


# --- parser ---


def _add_module_command(sub: Any, name: str, module: Any) -> None:
    """Subcommand ``name`` from ``module.add_arguments`` and ``module.main`` (guarded as cli.md says)."""
    helptext = MODULE_COMMANDS[name]
    p = sub.add_parser(name, help=helptext, description=helptext,
                       formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    module.add_arguments(p)

    def handler(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
        return call_guarded(name, lambda: module.main(args))

    p.set_defaults(handler=handler)


def build_parser() -> ZonelimitParser:
    """The whole parser, every subcommand with its options (so each ``--help`` lists them)."""
    from stress import bench, compare, race, report  # race imports this module: not at the top

    top = ZonelimitParser(
        prog=PROG,
        description="zonelimit: a multi-process stress tester for per-CPU caching slab allocators\n"
                    "(FreeBSD UMA and mbufs, Dec 2005).  Without a command, `run` is meant.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    top.add_argument("--version", action="version", version=f"{PROG} {package_version()}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", parser_class=ZonelimitParser)

    run = sub.add_parser("run", help="one stress run (the default command)",
                         description="One stress run: workers pinned to cores, live netstat -m, "
                                     "watchdog, audit, run folder.  Exit 0 ok, 1 the allocator failed, "
                                     "2 usage, 3 the tester failed, 130 interrupted.",
                         allow_abbrev=False)
    add_run_arguments(run)
    run.set_defaults(handler=cmd_run)

    _add_module_command(sub, "compare", compare)
    _add_module_command(sub, "race", race)

    replay = sub.add_parser("replay", help="re-run exactly what RUN_DIR/run.json recorded",
                            description="Re-run exactly what RUN_DIR/run.json recorded (same config and "
                                        "seed; the recorded schedule too when there is one), into a new "
                                        "folder.  Exit codes as for run.",
                            allow_abbrev=False)
    replay.add_argument("run_dir", metavar="RUN_DIR", help="a run folder holding run.json")
    replay.add_argument("--out", type=str, default=None, metavar="DIR",
                        help="where to write the new run folder; must be new or empty "
                             "(default: RUN_DIR/replay-<n>/)")
    replay.add_argument("--oversubscribe", action="store_true",
                        help="allow the recorded CPU count to exceed this machine's usable cores "
                             "(default: as recorded)")
    add_output_arguments(replay, run_folder=False)
    replay.set_defaults(handler=cmd_replay)

    rep = sub.add_parser("report", help="re-print summary, netstat -m and plot of saved runs",
                         description=report.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                         allow_abbrev=False)
    report.add_arguments(rep)
    rep.set_defaults(handler=lambda args, parser: report.main(args, parser))

    _add_module_command(sub, "bench", bench)

    top.epilog = (
        "commands: " + ", ".join(SUBCOMMANDS) + "; `zonelimit COMMAND --help` describes each.\n\n"
        "Options of run, the default command:\n\n" + run.format_help()
    )
    top.set_defaults(handler=None)
    return top


def _with_command(argv: list[str]) -> list[str]:
    """argv with its command made explicit: ``run`` put in front when it names none."""
    if argv and (argv[0] in SUBCOMMANDS or argv[0] in ("-h", "--help", "--version")):
        return argv
    return ["run", *argv]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m stress`` and the ``zonelimit`` script; returns the exit code."""
    args_in = list(sys.argv[1:] if argv is None else argv)
    try:
        if args_in and not args_in[0].startswith("-") and args_in[0] not in SUBCOMMANDS:
            # not an option, so not `run`'s: a mistyped command (`zonelimit reprot x`)
            build_parser().error(
                f"COMMAND: unknown command {args_in[0]!r}; allowed: {', '.join(SUBCOMMANDS)}"
            )
        args_in = _with_command(args_in)
        parser = build_parser()
        args = parser.parse_args(args_in)
        if args.handler is None:
            parser.print_help()
            return EX_USAGE
        return int(args.handler(args, _subparser(parser, args.command)))
    except SystemExit as exc:  # argparse: --help, --version and usage errors end here
        code = exc.code
        if code is None:
            return EX_OK
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return EX_USAGE
    except KeyboardInterrupt:
        return EX_INTERRUPTED
    except BrokenPipeError:
        return _stdout_closed()


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The parser of ``command``, so that post-parse checks print that command's usage."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found = action.choices.get(command)
            if isinstance(found, argparse.ArgumentParser):
                return found
    return parser


if __name__ == "__main__":
    sys.exit(main())
