"""``python -m stress [run] [options]``: one stress run, from argv to the exit code.

The default command (``python -m stress --cpus 2`` is ``python -m stress run --cpus 2``).
It turns argv into one resolved :class:`~stress.config.RunConfig`, hands it to the engine
and prints what a person (or ``--json``) reads::

    argv --> add_arguments / parse --> config_from_args(args) --> RunConfig
         --> main_run(cfg): config line, CPU map --> stress.engine.runner.execute(cfg, folder, echo)
         --> summary lines (stress.output.monitor) or run.json on stdout --> exit code

Design decisions:

- Options whose default comes from ``--era`` (``--policy``, ``--refcount``, ``--wakeup``)
  default to None, so an explicit value is recognisable and beats the preset
  (``stress.config.resolve_era``).
- Checks that involve several options (more CPUs than cores, --jitter with --sched) run
  after parsing, in :func:`config_from_args`, and raise ``options.UsageError``; ``main``
  prints them through ``parser.error`` (exit 2, the option named on the last line).
- The engine is imported only when a run starts: ``--help`` and bad options stay fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from allocator.policy import POLICY_PARAMS
from stress import config as _config
from stress import documents, files, options, plugins
from stress.config import RunConfig, resolve_era
from stress.cpulist import format_cpulist, usable_cores
from stress.engine.leases import LEASE_WAIT_S
from stress.engine.sched.plan import STEPS_PER_S
from stress.options import UsageError
from stress.output import monitor
from stress.variants import policy_params

MAX_STEPS = 10**12  #: a bound no run reaches: about a year at the nominal rate

HELP = "one stress run (the default command)"
DESCRIPTION = ("One stress run: workers pinned to cores, live netstat -m, watchdog, audit, run folder.\n"
               "Exit 0 ok, 1 the allocator failed, 2 usage, 3 the tester failed, 130 interrupted.")

_DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in dataclasses.fields(RunConfig) if f.default is not dataclasses.MISSING
}


def _policy_params_help() -> str:
    """The built-in policies' parameters with their defaults (a plugin's: docs/extending.md)."""
    return "; ".join(
        f"{policy}: " + ", ".join(f"{name}={default:g}" for name, (default, _) in params.items())
        for policy, params in POLICY_PARAMS.items()
        if params
    )


def _era_default(knob: str) -> str:
    presets = ", ".join(f"{era}: {_config.ERA_PRESETS[era][knob]}" for era in _config.ERAS)
    return f"from --era ({presets})"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every option of ``run`` (cli.md) to ``parser``.

    Each help text ends with the default, so ``--help`` documents every default.
    """
    cores = usable_cores()
    d = _DEFAULTS
    g = parser.add_argument_group("what to run")
    g.add_argument("--cpus", type=options.whole_number(1, options.MAX_CPUS), default=None, metavar="N",
                   help=f"simulated CPUs = worker processes, CPU k pinned to core k mod cores "
                        f"(default: the number of usable cores, {len(cores)} here: {format_cpulist(cores)})")
    g.add_argument("--cores", type=options.cpu_list, default=None, metavar="LIST",
                   help="run on exactly these cores, e.g. 0-3,7; refused when one is not usable or is "
                        "leased by another run (default: lease min(--cpus, usable) free cores, waiting "
                        "while other runs hold them; docs/scale-out.md)")
    g.add_argument("--lease-wait", type=options.seconds(allow_zero=True), default=LEASE_WAIT_S, metavar="S",
                   help="how long to wait for free cores while other runs hold them; then one line naming "
                        "them, exit 3, nothing written; 0: do not wait (default: "
                        f"{LEASE_WAIT_S:g}; docs/scale-out.md)")
    g.add_argument("--run-config", default=None, metavar="FILE", help=argparse.SUPPRESS)  # a child run
    g.add_argument("--oversubscribe", action="store_true",
                   help="allow more CPUs than usable cores (they then interleave instead of running "
                        "in parallel; a warning is printed) (default: off)")
    g.add_argument("--duration", type=options.seconds(), default=None, metavar="S",
                   help=f"total run time in seconds; not with --rounds, whose runs last rounds x "
                        f"(round-length + idle) (default: {d['duration']:g})")
    g.add_argument("--workload", type=plugins.spec_checker("workload"), default=d["workload"], metavar="NAME",
                   help=f"{plugins.help_names('workload')}; or a plugin: path/to/file.py:CLASS or "
                        f"MODULE:CLASS (docs/extending.md) (default: {d['workload']})")
    g.add_argument("--rounds", type=options.whole_number(0, options.MAX_ROUNDS), default=d["rounds"], metavar="R",
                   help="netperf-style on/off rounds, netstat -m printed after each; 0 = one continuous "
                        f"round (default: {d['rounds']})")
    g.add_argument("--round-length", type=options.seconds(), default=None, metavar="S",
                   help=f"seconds of load per round, with --rounds (default: {d['round_length']:g})")
    g.add_argument("--idle", type=options.seconds(allow_zero=True), default=None, metavar="S",
                   help=f"idle seconds between rounds, with --rounds (default: {d['idle']:g})")
    g.add_argument("--seed", type=options.whole_number(0, options.MAX_SEED), default=d["seed"], metavar="N",
                   help=f"seeds every random choice; recorded in run.json (default: {d['seed']})")

    g = parser.add_argument_group("allocator semantics (an explicit option beats the --era preset)")
    g.add_argument("--era", type=options.one_of(_config.ERAS), default=d["era"], metavar="ERA",
                   help="preset of allocator semantics: 2005 (Dec 2005 -CURRENT: refcount bug, wake one, "
                        "no trimming), 2007 (refcount fixed, packet zone drained on cluster exhaustion, "
                        "wake all), modern (all fixes plus the default trimming policy) "
                        f"(default: {d['era']})")
    g.add_argument("--policy", type=plugins.spec_checker("policy"), default=None, metavar="NAME",
                   help=f"packet-zone / bucket-cache trimming: {plugins.help_names('policy')}; or a plugin: "
                        f"path/to/file.py:CLASS or MODULE:CLASS (docs/extending.md) "
                        f"(default: {_era_default('policy')})")
    g.add_argument("--policy-param", type=options.policy_param, action="append", default=None, metavar="NAME=VALUE",
                   help="a tuning parameter of --policy, repeatable, as NAME=VALUE or POLICY.NAME=VALUE "
                        "(k=3 or median.k=3): "
                        f"{_policy_params_help()} (default: the policy's own defaults)")
    g.add_argument("--refcount", type=options.one_of(_config.REFCOUNT_MODES), default=None, metavar="MODE",
                   help=f"cluster refcount release: buggy-eq0 (the 2005 test) or atomic "
                        f"(default: {_era_default('refcount')})")
    g.add_argument("--wakeup", type=options.one_of(_config.WAKEUP_MODES), default=None, metavar="MODE",
                   help=f"zonelimit wakeup: one (2005) or all (default: {_era_default('wakeup')})")
    g.add_argument("--nmbclusters", type=options.whole_number(options.MIN_NMBCLUSTERS, options.MAX_NMBCLUSTERS),
                   default=d["nmbclusters"], metavar="N", help=f"cluster zone limit (default: {d['nmbclusters']})")
    g.add_argument("--trim-interval", type=options.seconds(minimum=options.MIN_PERIOD), default=d["trim_interval"],
                   metavar="S",
                   help=f"period of the trimming policy's decisions (default: {d['trim_interval']:g})")
    g.add_argument("--page-budget", type=options.whole_number(0, options.MAX_PAGE_BUDGET), default=d["page_budget"],
                   metavar="PAGES",
                   help="pages the VM has for the kegs: when free pages fall below about 2%% of it, "
                        "vm_lowmem asks every zone's policy to give memory back; 0 = no budget, no "
                        f"low-memory event ever, as on the Dec 2005 machines (default: {d['page_budget']})")

    g = parser.add_argument_group("monitoring and watchdog")
    g.add_argument("--interval", type=options.seconds(minimum=options.MIN_PERIOD), default=d["interval"], metavar="S",
                   help=f"sampling period of the monitor (default: {d['interval']:g})")
    g.add_argument("--wedge-timeout", type=options.seconds(), default=d["wedge_timeout"], metavar="S",
                   help="how long all CPUs may sleep in zonelimit without progress before the run is "
                        f"declared wedged (default: {d['wedge_timeout']:g})")

    g = parser.add_argument_group("race hunting (races.md)")
    g.add_argument("--inject", type=options.injection_list, action="append", default=None, metavar="NAME[,NAME]",
                   help=f"deliberately re-introduce known races: {', '.join(_config.INJECTIONS)}; "
                        "repeatable (default: none)")
    g.add_argument("--sched", type=options.one_of(_config.SCHED_MODES), default=None, metavar="MODE",
                   help="scheduling at sched points: free, jitter (random delays), pct (one CPU at a "
                        "time, PCT priorities), replay (use `replay RUN_DIR`) "
                        f"(default: jitter if --jitter > 0, else {d['sched']})")
    g.add_argument("--jitter", type=options.probability, default=None, metavar="P",
                   help=f"probability of a random delay at each sched point (default: {d['jitter']:g}; "
                        "with --sched jitter: 0.01)")
    g.add_argument("--pct-depth", type=options.whole_number(1, options.MAX_PCT_DEPTH), default=d["pct_depth"],
                   metavar="D",
                   help="PCT bug depth: D-1 priority change points, with --sched pct "
                        f"(default: {d['pct_depth']})")
    g.add_argument("--steps", type=options.whole_number(1, MAX_STEPS), default=None, metavar="N",
                   help="with --sched pct: the run's length in scheduling steps; its rounds, trimming "
                        "callout and wedge test are placed by step too, so one seed gives one schedule and "
                        "one verdict on any machine (default: --duration, or the rounds, at "
                        f"{STEPS_PER_S:,} steps per second)")

    g = parser.add_argument_group("debugging and profiling")
    g.add_argument("--invariants", action="store_true",
                   help="INVARIANTS-style checks: poisoning, duplicate free/alloc, lock order (default: off)")
    g.add_argument("--lock-profile", action="store_true",
                   help="LOCK_PROFILING-style statistics per lock and acquisition point (default: off)")
    g.add_argument("--profile", action="store_true",
                   help="sample all workers with py-spy; write its flame graph SVG and speedscope file "
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
                   help="print the final run.json to stdout instead of the human summary, with the run "
                        "folder in \"folder\" (default: off)")
    g.add_argument("-q", "--quiet", action="store_true", help="less output (default: off)")
    g.add_argument("-v", "--verbose", action="count", default=0,
                   help="more output, repeatable (default: 0)")


def _py_spy_available() -> bool:
    return bool(shutil.which("py-spy") or (Path(sys.executable).parent / "py-spy").exists())


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Resolve parsed run options into a RunConfig: era preset, then explicit options, then checks.

    Every problem raises ``options.UsageError`` naming the option.
    """
    cores = usable_cores()
    cpus = args.cpus if args.cpus is not None else len(cores)
    options.check_cpus(cpus, args.oversubscribe)
    verbosity = options.verbosity(args.quiet, args.verbose)
    options.check_out(args.out)

    knobs = resolve_era(args.era, {"refcount": args.refcount, "wakeup": args.wakeup, "policy": args.policy})

    if args.rounds == 0:
        for flag, value in (("--round-length", args.round_length), ("--idle", args.idle)):
            if value is not None:
                raise UsageError(f"{flag}: only meaningful with --rounds R (R >= 1)")
    round_length = args.round_length if args.round_length is not None else _DEFAULTS["round_length"]
    idle = args.idle if args.idle is not None else _DEFAULTS["idle"]
    duration = options.run_length(args.duration, args.rounds, round_length, idle, _DEFAULTS["duration"])

    sched = args.sched
    if sched is None:
        sched = "jitter" if args.jitter else _DEFAULTS["sched"]
    if sched == "replay":
        raise UsageError("--sched: replay follows a recorded schedule: use `python -m stress replay RUN_DIR`; "
                         "here allowed: free, jitter, pct")
    if args.jitter and sched != "jitter":
        raise UsageError(f"--jitter: only with --sched jitter (got --sched {sched})")
    if args.steps is not None and sched != "pct":
        raise UsageError(f"--steps: only with --sched pct (a run placed by step; got --sched {sched})")
    jitter = args.jitter if args.jitter is not None else (0.01 if sched == "jitter" else _DEFAULTS["jitter"])

    inject = tuple(dict.fromkeys(n for group in (args.inject or []) for n in group))

    params = policy_params(knobs["policy"], args.policy_param or [])  # k=3 or median.k=3

    if args.profile and not _py_spy_available():
        raise UsageError("--profile: py-spy is not installed (pip install py-spy)")

    return with_plugins(RunConfig(
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
        steps=args.steps or 0,
        invariants=args.invariants,
        lock_profile=args.lock_profile,
        profile=args.profile,
        oversubscribe=args.oversubscribe,
        out=args.out,
        json=args.json,
        verbosity=verbosity,
        policy_params=params,
    ))


def with_plugins(cfg: RunConfig) -> RunConfig:
    """``cfg`` recording the plugins it runs (``RunConfig.plugins``: spec, version, source
    hash); a plugin that cannot be loaded is a UsageError naming the option."""
    try:
        return plugins.with_records(cfg)
    except plugins.PluginError as exc:
        raise UsageError(f"--{exc.kind or 'policy'}: {exc}") from None


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``run``: one stress run."""
    if args.run_config is not None:
        return child_run(args)
    try:
        cfg = config_from_args(args)
    except UsageError as exc:
        parser.error(str(exc))
    options.oversubscription_warning(cfg.cpus)
    return start_run(cfg, cores=args.cores, lease_wait=args.lease_wait)


def child_run(args: argparse.Namespace) -> int:
    """A run started by a scheduler (``compare --jobs``, a Dask task; stress/engine/jobs.py):
    its resolved configuration from ``--run-config`` (RunConfig.to_dict as JSON), its
    cores from ``--cores`` (leased for it by its parent), its folder from ``--out``.  It
    dies with the parent *process* that started it (its lifeline:
    stress/engine/lifeline.py), as workers die with their manager."""
    import json

    from stress.engine import lifeline

    lifeline.hold_from_env()
    try:
        if args.run_config == "-":
            cfg = RunConfig.from_dict(json.load(sys.stdin))
        else:
            with open(args.run_config, encoding="utf-8") as f:
                cfg = RunConfig.from_dict(json.load(f))
    except (OSError, ValueError, TypeError) as exc:
        return options.usage_error(f"--run-config: {exc}")
    return start_run(cfg.replace(out=args.out), cores=args.cores)


def start_run(cfg: RunConfig, what: str = "run", folder: Path | None = None, cores: list[int] | None = None,
              lease_wait: float = LEASE_WAIT_S) -> int:
    """Hand a resolved configuration to :func:`main_run`, guarded (cli.md's exit codes)."""
    return options.call_guarded(what, lambda: main_run(cfg, folder, cores, lease_wait=lease_wait, what=what))


def take_lease(cfg: RunConfig, cores: list[int] | None, stop: Any = None,
               lease_wait: float = LEASE_WAIT_S) -> tuple[Any, str]:
    """The run's core lease (stress/engine/leases.py): exactly ``cores`` (UsageError when
    taken or not usable), else min(--cpus, usable) free cores, waiting for them at most
    ``lease_wait`` seconds while other runs hold them (then leases.LeaseTimeout; a stop
    signal ends the wait: ``stop.check``).  (None, why) when the lease table cannot be
    used: the run goes on unleased, with a warning."""
    from stress.engine import leases

    try:
        if cores is not None:
            return leases.pick(cores), ""
        return leases.acquire(cfg.cpus, waiting=options.warn, check=None if stop is None else stop.check,
                              limit=lease_wait), ""
    except leases.LeaseTimeout:
        raise
    except leases.LeaseError as exc:
        raise UsageError(f"--cores: {exc}") from None
    except OSError as exc:
        why = f"lease table {leases.lease_dir()} unusable: {exc.strerror or exc}"
        options.warn(f"{why}; running without a core lease")
        return None, why


def main_run(cfg: RunConfig, folder: Path | None = None, cores: list[int] | None = None,
             lease_wait: float = LEASE_WAIT_S, what: str = "run") -> int:
    """Lease the run's cores, claim the run folder (``folder``, already claimed, else
    --out or a new one), print the configuration and the CPU map, run, print the summary
    (or only run.json with --json); return the run's exit code.  Cores held by others for
    longer than ``lease_wait``: one line naming them, exit 3, nothing written (the folder
    is claimed only once the cores are ours)."""
    from stress.engine import leases, stopping
    from stress.engine.pinning import PinningError, cpu_map

    with stopping.command_signals() as stop:
        try:
            lease, why = take_lease(cfg, cores, stop, lease_wait)
        except BaseException as exc:  # a replay's folder is claimed before: left empty, it goes
            if folder is not None:
                files.release_folder(folder)
            if not isinstance(exc, leases.LeaseTimeout):
                raise
            print(f"{options.PROG}: {what}: {exc}", file=sys.stderr)
            return options.EX_TESTER
        with leases.running_in(lease, why):  # the affinity is the lease: workers pin within it
            try:
                mapping = cpu_map(cfg.cpus, cfg.oversubscribe)
            except PinningError as exc:
                return options.usage_error(f"--cpus: {exc}")
            stop.check()  # stopped before the run: no folder
            if folder is None:
                folder = claim_out(cfg.out, lambda: documents.default_run_dir(cfg))
            with files.holding(folder):  # released however the run ends; removed if nothing was written
                return _run_into(cfg, folder, mapping, stop)


def claim_out(out: str | None, default: Callable[[], Path]) -> Path:
    """Claim ``--out`` (new, or an empty folder) or make the default folder: the folder is
    this run's alone (stress/files.py); any problem is a usage error naming --out."""
    try:
        return files.claim_folder(Path(out)) if out else default()
    except files.FolderError as exc:
        raise UsageError(f"--out: {exc}") from None


def _run_into(cfg: RunConfig, folder: Path, mapping: dict[int, int], stop: Any) -> int:
    """The run itself, into a claimed ``folder``, then what a person reads.  Once run.json
    is written the signals are frozen: one that came before is written into run.json
    (``interrupted``), one that comes while the summary prints changes nothing (the result
    is complete and says how the run ended), so the process's exit code is always
    run.json's."""
    from stress.engine.runner import execute, mark_interrupted

    talk = not cfg.json and cfg.verbosity >= 0
    echo: Callable[[str], None] | None = None
    if talk:
        def echo(line: str) -> None:
            print(line, flush=True)

        echo(monitor.config_line(cfg))
        for line in monitor.mapping_lines(mapping):
            echo(line)
    doc = execute(cfg, folder, echo)
    late = stop.freeze()
    if late and doc.get("verdict") != "interrupted":
        doc = mark_interrupted(doc, late, "while the results were written")
        documents.write_run_json(folder, doc)
    if cfg.json:  # run.json as written, plus the folder it was written to
        sys.stdout.write(documents.run_json_text({"folder": str(folder), **doc}))
        sys.stdout.flush()
    else:
        lines = (monitor.verdict_lines(doc) + [f"run folder: {folder}"] if cfg.verbosity < 0
                 else monitor.summary_lines(doc, folder))
        for line in lines:
            print(line, flush=True)
    return int(doc["exit_code"])
