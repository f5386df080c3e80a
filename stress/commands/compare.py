"""``python -m stress compare``: an experiment -- variants of a run, the same seeds, paired statistics.

Why: a trimming policy (or any knob) is only better than another under the same load,
measured the same way, and only where the noise of a shared machine cannot explain the
difference.  So compare runs every variant with the *same seeds* (repeat r of every
variant uses seed + r - 1, one after the other, so machine drift hits them alike),
reduces each run to the figures of policies.md, and judges each variant against the
baseline pair by pair (stress/stats.py, stress/output/comparison.py).

Data flow::

    argv --> plan: variants (--configs | --variant | --sweep; stress.variants) resolved
             through run's own parser (every run option can vary, checked as run checks it)
         --> OUT/compare.json, state "running": the plan, no run yet
         --> repeat r = 1..R, then one more at a time while --precision is not met:
               [RunRequest(variant, seed + r - 1, OUT/<variant>-s<seed>/) for every variant]
               --> stress.engine.executor.LocalExecutor.run(requests) --> run.json documents
               --> output.comparison.run_figures -> the run's entry; compare.json rewritten
         --> output.comparison.analyse: medians and intervals, paired comparisons, noise,
             precision, warnings
         --> OUT/compare.json ("complete", or "partial" after Ctrl-C / SIGTERM),
             OUT/compare.txt (the table as printed), OUT/compare.png (output.plots.plot_compare)

``--resume OUT`` takes the plan from OUT/compare.json and makes the runs it lacks, in the
same order: the document it ends with is the one an uninterrupted compare would have
written (apart from timings).  ``--merge DIR...`` joins comparisons of the same variants.
compare.json (``zonelimit.compare/2``) is described in docs/results-format.md.

A run the executor loses (``--jobs``: its child ended without run.json; ``--cluster``:
Dask gave up on its task) is recorded in the sitting's ``lost_runs``; the others run,
then the comparison ends partial with exit 3 and ``--resume`` makes the lost run again.

Stops: SIGINT or SIGTERM during a run stop that run cleanly (the runner's own handling;
its folder is kept, renamed ``<dir>.interrupted``); between runs they are recorded, and
no new run starts.  Either way the runs that finished are analysed and written, marked
partial, and compare exits 130 or 143.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from allocator.policy import POLICY_PARAMS, policy_names, policy_params
from stress import documents, files, options, plugins, stats, variants
from stress.commands import run as run_command
from stress.config import ERA_PRESETS, RunConfig, spec_label
from stress.cpulist import usable_cores
from stress.engine import scaleout, stopping
from stress.engine.executor import Executor, LostRun, RunRequest
from stress.engine.stopping import StopSignals
from stress.options import EX_OK, EX_SIGINT, EX_SIGTERM, EX_TESTER, UsageError
from stress.output import comparison, monitor
from stress.output.plots import plot_compare
from stress.output.progress import RunProgress, wanted
from stress.variants import Variant

LOST = "lost"  #: the stop reason of a sitting in which the executor lost a run (exit 3)

HELP = "variants of a run side by side, same seeds, paired statistics (policies.md)"
DESCRIPTION = """\
Variants of a run side by side: every variant runs with the same seeds, every figure gets
its median and 95% interval, and each variant is compared with the baseline pair by pair
(same seed); a difference is called only when its interval excludes no change and the
signed-rank test agrees.

  compare --variant none:policy=none --variant k1:policy=median,median.k=1 --repeat 6
  compare --sweep median.k=1,2,3 --sweep nmbclusters=1024,2048 --precision 5% --max-repeat 20
  compare --configs 2005,2007,modern:median          (the first compare's shorthand)
  compare --resume DIR | --merge DIR DIR ...

Exit 0 when every run ended with a verdict on the allocator (a wedged run is a result),
2 on bad options, 3 if a run failed as a tester or was lost (--jobs, --cluster; partial
result), 130 / 143 when stopped (partial result)."""

Execute = Callable[..., dict[str, Any]]
"""``stress.engine.runner.execute(cfg, out_dir, echo=None) -> run.json document``."""

DEFAULT_CONFIGS = ("2005", "2007") + tuple(f"modern:{p}" for p in POLICY_PARAMS)
"""The default comparison: --era 2005, --era 2007, --era modern with each policy."""
DEFAULT_REPEAT = 3
DEFAULT_MAX_REPEAT = 30
#: run options a variant may not set: where the run writes and how it talks, the seed
#: (compare sets the seeds: that is what pairs the variants) and --lock-profile (on in
#: every run, the same cost for all, so that lock wait per op is measured)
NOT_VARIED = {"out", "json", "quiet", "verbose", "seed", "policy_param", "help", "lock_profile", "cores",
              "run_config"}
#: compare's own options that shape the plan (refused with --resume / --merge)
PLAN_OPTIONS = ("cpus", "duration", "workload", "configs", "variant", "sweep", "baseline", "repeat", "precision",
                "max_repeat", "nmbclusters", "rounds", "round_length", "idle", "interval", "trim_interval",
                "wedge_timeout", "page_budget", "seed", "policy_param", "max_spread")


def precision_value(text: str) -> float:
    """``5%`` or ``0.05``: a relative precision in (0, 1)."""
    t = text.strip()
    value = options._finite(t[:-1]) / 100 if t.endswith("%") else options._finite(t)
    if not 0 < value < 1:  # also false for NaN
        raise argparse.ArgumentTypeError(f"must be a fraction or percentage between 0 and 1 (5% or 0.05), "
                                         f"got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m stress compare``."""
    whole, secs = options.whole_number, options.seconds
    g = parser.add_argument_group("what every run does (run's options; a variant may change any run option)")
    g.add_argument("--cpus", type=whole(1, options.MAX_CPUS), default=None, metavar="N",
                   help="simulated CPUs (default: usable cores)")
    g.add_argument("--duration", type=secs(), default=None, metavar="S",
                   help="seconds per run (default 10; with --rounds: rounds x (round-length + idle))")
    g.add_argument("--workload", type=plugins.spec_checker("workload"), default=None, metavar="NAME",
                   help="workload shape of every run, e.g. netperf, burst, netperf-nfs, or a plugin "
                        "(FILE.py:CLASS, MODULE:CLASS; docs/extending.md) (default netperf)")
    g.add_argument("--nmbclusters", type=whole(options.MIN_NMBCLUSTERS, options.MAX_NMBCLUSTERS),
                   default=None, metavar="N", help="cluster zone limit (default: run's)")
    g.add_argument("--rounds", type=whole(0, options.MAX_ROUNDS), default=None, metavar="R",
                   help="on/off rounds (default: run's)")
    g.add_argument("--round-length", type=secs(), default=None, metavar="S", help="seconds per round")
    g.add_argument("--idle", type=secs(allow_zero=True), default=None, metavar="S",
                   help="idle seconds between rounds")
    g.add_argument("--interval", type=secs(minimum=options.MIN_PERIOD), default=0.25, metavar="S",
                   help="sampling period: the figures are computed from these samples (default 0.25)")
    g.add_argument("--trim-interval", type=secs(minimum=options.MIN_PERIOD), default=None, metavar="S",
                   help="policy period (default: run's)")
    g.add_argument("--wedge-timeout", type=secs(), default=None, metavar="S",
                   help="wedge timeout (default: run's)")
    g.add_argument("--page-budget", type=whole(0, options.MAX_PAGE_BUDGET), default=None, metavar="PAGES",
                   help="pages the VM has for the kegs, 0 = none (default: run's)")
    g.add_argument("--policy-param", action="append", default=[], metavar="[POLICY.]PARAM=VALUE",
                   help="a policy parameter for every variant running that policy, e.g. median.k=3, or k=3 "
                        "for every variant whose policy has a k (repeatable); see docs/policies.md")

    g = parser.add_argument_group("the variants")
    g.add_argument("--variant", action="append", default=[], metavar="NAME:OPT=VAL,...",
                   help="a variant: a name and run options, e.g. k3:policy=median,median.k=3 (a list inside a "
                        "value uses +: inject=wake-one+lost-wakeup); repeatable")
    g.add_argument("--sweep", action="append", default=[], metavar="OPT=V1,V2,...",
                   help="run every variant with each value (repeatable: the cartesian product); without "
                        "--variant the sweep makes the variants; one value sets an option for every variant")
    g.add_argument("--configs", default=None, metavar="LIST",
                   help="shorthand: comma-separated ERA or ERA:POLICY variants (default, without --variant "
                        f"and --sweep: {','.join(DEFAULT_CONFIGS)})")
    g.add_argument("--baseline", default=None, metavar="NAME",
                   help="the variant every other is compared with (default: the first)")

    g = parser.add_argument_group("repeats and statistics")
    g.add_argument("--repeat", type=whole(1, options.MAX_REPEAT), default=None, metavar="R",
                   help=f"runs per variant, seeds --seed .. --seed + R - 1 (default {DEFAULT_REPEAT}; with "
                        f"--precision at least {stats.MIN_PAIRS}); fewer than {stats.MIN_PAIRS} can call no "
                        "difference")
    g.add_argument("--seed", type=whole(0, options.MAX_SEED), default=0, metavar="N",
                   help="seed of repeat 1; repeat r uses seed + r - 1 in every variant (default 0)")
    g.add_argument("--precision", type=precision_value, default=None, metavar="P",
                   help="repeat (one more seed at a time) until every key figure's 95%% interval is within "
                        "±P of its median, in every variant: stranded clusters, throughput, lock wait per "
                        "op (like netperf -I 95,P); e.g. 5%% (default: off)")
    g.add_argument("--max-repeat", type=whole(1, options.MAX_REPEAT), default=None, metavar="N",
                   help=f"with --precision: give up (loudly) after N repeats (default {DEFAULT_MAX_REPEAT})")
    g.add_argument("--require-quiet", action="store_true",
                   help="refuse to start while other processes load the machine beyond its usable cores "
                        "(1-minute load average) or take over half of the cores (a 1 s sample) (default: off)")
    g.add_argument("--max-spread", type=options.positive_number, default=None, metavar="F",
                   help=argparse.SUPPRESS)  # the first compare's threshold: accepted, ignored with a warning

    g = parser.add_argument_group("where the runs run (docs/scale-out.md)")
    scaleout.add_arguments(g)
    g.add_argument("--oversubscribe", action="store_true",
                   help="with --jobs: let runs share cores when there are not enough (default: off)")

    g = parser.add_argument_group("partial results")
    g.add_argument("--resume", default=None, metavar="DIR",
                   help="complete the comparison in DIR that a stop cut short, with its own plan")
    g.add_argument("--merge", nargs="+", default=None, metavar="DIR",
                   help="join comparisons of the same variants into --out (pairs stay within the "
                        "comparison they were measured in; every seed is kept)")
    g.add_argument("--trust-plugins", action="store_true",
                   help="with --resume: load the plugin policies and workloads DIR/compare.json names "
                        "(a document names no code that is loaded without it; docs/extending.md)")

    g = parser.add_argument_group("output")
    g.add_argument("--out", default=None, metavar="DIR",
                   help="folder for the comparison, new or empty (default results/<stamp>-compare-<workload>-cpus<N>)")
    g.add_argument("--json", action="store_true", help="print compare.json instead of the table")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress and no per-run lines")


# --- resolving variants into run configurations --------------------------------------------------


class _RefusingParser(options.ZonelimitParser):
    """run's parser, whose errors become UsageError (a variant's mistake is reported as
    the variant's, in one line, and compare goes on to exit 2 by itself)."""

    def error(self, message: str) -> Any:
        message = re.sub(r"^argument ([^:]+): ", r"\1: ", message)
        raise UsageError(message.replace("expected one argument", "expects a value"))


@dataclasses.dataclass
class RunOptions:
    """run's parser and its options by name, to resolve variants the way run resolves argv."""

    parser: argparse.ArgumentParser
    actions: dict[str, argparse.Action]

    @staticmethod
    def build() -> RunOptions:
        parser = _RefusingParser(prog="run", add_help=False, allow_abbrev=False)
        run_command.add_arguments(parser)
        actions = {a.dest: a for a in parser._actions if a.option_strings and a.dest not in NOT_VARIED}
        return RunOptions(parser, actions)

    def argv(self, opts: dict[str, str], where: str) -> list[str]:
        """run's argv for ``opts`` (option -> value text)."""
        out: list[str] = []
        for key, text in opts.items():
            action = self.actions.get(key)
            if action is None:
                allowed = ", ".join(sorted(self.actions))
                raise UsageError(f"{where}: {key}: not an option a variant can set (run options: {allowed}; "
                                 "a policy parameter is POLICY.PARAM)")
            flag = next(s for s in action.option_strings if s.startswith("--"))
            if action.nargs == 0:  # a switch
                on = text.strip().lower()
                if on not in ("1", "0", "true", "false", "on", "off", "yes", "no"):
                    raise UsageError(f"{where}: {key}: a switch takes 1 or 0 (true/false, on/off), got {text!r}")
                if on in ("1", "true", "on", "yes"):
                    out.append(flag)
            else:
                out += [flag, text.replace(variants.LIST_SEP, ",")]
        return out


def _text(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def base_options(args: argparse.Namespace) -> dict[str, str]:
    """compare's own run options as run option texts (only those given, and --interval)."""
    base = {}
    for opt in ("cpus", "duration", "workload", "nmbclusters", "rounds", "round_length", "idle", "interval",
                "trim_interval", "wedge_timeout", "page_budget"):
        if getattr(args, opt) is not None:
            base[opt] = _text(getattr(args, opt))
    return base


def global_params(items: Sequence[str]) -> list[tuple[str, float]]:
    """--policy-param items as (name, value): ``median.k=3`` or ``k=3`` (checked against
    the policies by :func:`check_global_params` once the variants' plugins are loaded)."""
    out = []
    for item in items:
        try:
            out.append(options.policy_param(item))
        except argparse.ArgumentTypeError as exc:
            raise UsageError(f"--policy-param: {exc}") from None
    return out


def check_global_params(params: list[tuple[str, float]]) -> None:
    """Each --policy-param names a known policy (built in, or a plugin a variant loaded)
    and one of its parameters; an unowned ``k=3`` is a parameter of some policy."""
    for name, value in params:
        owner, param = variants.split_param(name)
        if owner is not None:
            variants.policy_params(owner, [(name, value)])  # a known policy, and one of its parameters
        elif not any(param in policy_params(p) for p in policy_names()):
            raise UsageError(f"--policy-param: no policy has a parameter {param!r}")


def resolve(v: Variant, base: dict[str, str], params: list[tuple[str, float]], ro: RunOptions) -> RunConfig:
    """A variant's RunConfig (seed 0): compare's options, then the variant's, resolved by
    run's own parser and checks (era preset, then explicit options); the policy
    parameters given to compare that belong to the variant's policy, then the variant's."""
    where = v.origin
    mine = {k: val for k, val in v.options if "." not in k}
    dotted = []
    for k, val in v.options:
        if "." in k:
            try:
                dotted.append(options.policy_param(f"{k}={val}"))
            except argparse.ArgumentTypeError as exc:
                raise UsageError(f"{where}: {k}: {exc}") from None
    try:
        args = ro.parser.parse_args(ro.argv({**base, **mine}, where))
        policy = args.policy or ERA_PRESETS[args.era]["policy"]
        given = [(n, x) for n, x in params if variants.split_param(n)[0] in (None, policy)
                 and variants.split_param(n)[1] in policy_params(policy)]  # a plugin is loaded by now
        args.policy_param = given + dotted
        cfg = run_command.config_from_args(args)
    except UsageError as exc:
        raise UsageError(f"{where}: {exc}") from None
    return cfg.replace(seed=0, lock_profile=True, verbosity=-1, json=False, out=None)


def plan_variants(args: argparse.Namespace) -> list[Variant]:
    """--configs, --variant and --sweep as the list of variants (the default configs when
    none is given)."""
    given = [variants.parse_variant(t) for t in args.variant]
    if args.configs is not None:
        given = variants.parse_configs(args.configs) + given
    sweeps = [variants.parse_sweep(t) for t in args.sweep]
    if not given and not sweeps:
        given = variants.parse_configs(",".join(DEFAULT_CONFIGS))
    return variants.expand(given, sweeps)


def resolve_all(args: argparse.Namespace, vs: list[Variant]) -> list[RunConfig]:
    """Every variant's RunConfig; a --policy-param that no variant can use is refused."""
    ro = RunOptions.build()
    base = base_options(args)
    params = global_params(args.policy_param)
    cfgs = [resolve(v, base, params, ro) for v in vs]
    check_global_params(params)
    for name, value in params:
        owner, param = variants.split_param(name)
        if not any(param in c.policy_params and (owner in (None, c.policy)) for c in cfgs):
            raise UsageError(f"--policy-param {name}={value:g}: no variant runs a policy with that parameter "
                             f"(policies: {', '.join(sorted({c.policy for c in cfgs}))})")
    return cfgs


# --- the document: plan, variants and runs --------------------------------------------------------


def shared_and_own(cfgs: list[RunConfig]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """compare.json's ``base`` (the run options every variant shares) and each variant's
    ``config`` (the options in which it differs)."""
    dicts = [{k: v for k, v in c.to_dict().items() if k not in documents.NOT_RUN_OPTIONS} for c in cfgs]
    shared = {k: v for k, v in dicts[0].items() if all(d.get(k) == v for d in dicts[1:])}
    return shared, [{k: v for k, v in d.items() if k not in shared} for d in dicts]


def run_config(doc: dict[str, Any], index: int) -> RunConfig:
    """Variant ``index``'s RunConfig (seed 0) from a compare document: base + its config."""
    v = doc["variants"][index]
    return RunConfig.from_dict({**doc["base"], **v["config"], "seed": 0, "verbosity": -1})


def slug(name: str, opts: Sequence[tuple[str, str]] = ()) -> str:
    """A variant name as part of a folder name; a plugin spec among the variant's options
    (``policy=path/to/halve.py:Halve``) by its class name (stress.config.spec_label)."""
    for key, value in opts:
        if key in plugins.KINDS and ":" in value:
            name = name.replace(value, spec_label(value))
    return re.sub(r"[^A-Za-z0-9._=+-]", "_", name).strip("._") or "variant"


def new_plan(args: argparse.Namespace) -> tuple[dict[str, Any], list[RunConfig]]:
    """The compare document of a new comparison (no run yet), and each variant's RunConfig."""
    vs = plan_variants(args)
    cfgs = resolve_all(args, vs)
    names = [v.name for v in vs]
    baseline = args.baseline if args.baseline is not None else names[0]
    if baseline not in names:
        raise UsageError(f"--baseline: no variant named {baseline!r} (variants: {', '.join(names)})")
    repeat = args.repeat if args.repeat is not None else DEFAULT_REPEAT
    max_repeat = None
    if args.max_repeat is not None and args.precision is None:
        raise UsageError("--max-repeat: only with --precision")
    if args.precision is not None:
        repeat = max(repeat, stats.MIN_PAIRS)
        max_repeat = args.max_repeat if args.max_repeat is not None else max(DEFAULT_MAX_REPEAT, repeat)
        if max_repeat < repeat:
            raise UsageError(f"--max-repeat: must be at least the {repeat} repeats --precision starts with "
                             f"(got {max_repeat})")
    most = max_repeat or repeat
    if args.seed + most - 1 > options.MAX_SEED:
        raise UsageError(f"--seed: repeat r runs seed + r - 1, so --seed must be at most "
                         f"{options.MAX_SEED - most + 1} with {most} repeats, got {args.seed}")
    for cfg in cfgs:
        options.check_cpus(cfg.cpus, cfg.oversubscribe, remedy="or give the variant oversubscribe=1")
    base, own = shared_and_own(cfgs)
    slugs: list[str] = []
    for v in vs:
        s = slug(v.name, v.options)
        slugs.append(s if s not in slugs else f"{s}-{len(slugs) + 1}")
    entries = [{"name": v.name, "options": v.as_dict(), "config": c, "baseline": v.name == baseline, "folder": s,
                "runs": []} for v, c, s in zip(vs, own, slugs, strict=True)]
    plan = {"seed": args.seed, "repeat": repeat, "precision": args.precision, "max_repeat": max_repeat,
            "baseline": baseline, "key_figures": list(comparison.KEY_FIGURES)}
    doc = documents.compare_document(base=base, plan=plan, variants=entries, start=documents.host_start())
    return doc, [run_config(doc, i) for i in range(len(vs))]


def run_entry(rdoc: dict[str, Any], folder: Path, seed: int, parallel: bool) -> dict[str, Any]:
    """A run of a variant, as compare.json keeps it: where, which seed, how it ended, its figures."""
    return {"dir": folder.name, "seed": seed, "verdict": rdoc.get("verdict"), "exit_code": rdoc.get("exit_code"),
            "duration_s": rdoc.get("duration_s"), "figures": comparison.run_figures(rdoc, folder),
            "noise": rdoc.get("noise"), "parallel": parallel}


def aside(folder: Path, why: str = "interrupted") -> Path:
    """Move a cut (or lost) run's folder out of the way (``<dir>.interrupted``, ``-2`` ...
    if taken): the run stays readable, and its place is free for the run that replaces it."""
    return files.move_aside(folder, why)


# --- the loop -------------------------------------------------------------------------------------


@dataclasses.dataclass
class Session:
    """One sitting of a comparison (a first start or a resume): where it writes, how it
    runs, who watches."""

    out: Path
    doc: dict[str, Any]
    configs: list[RunConfig]
    executor: Executor
    progress: RunProgress
    signals: StopSignals

    def done(self) -> set[tuple[int, int]]:
        """(variant index, seed) of every run already in the document."""
        return {(i, int(r["seed"])) for i, v in enumerate(self.doc["variants"]) for r in v["runs"]
                if not r.get("origin")}

    def write(self) -> None:
        documents.write_compare_json(self.out, self.doc)

    def requests(self, repeats: int) -> list[RunRequest]:
        """The runs still missing for ``repeats`` repeats, repeat by repeat (every variant
        of one seed before the next seed)."""
        done = self.done()
        seed0 = int(self.doc["plan"]["seed"])
        out = []
        for seed in range(seed0, seed0 + repeats):
            for i, v in enumerate(self.doc["variants"]):
                if (i, seed) in done:
                    continue
                folder = self.out / f"{v.get('folder') or slug(v['name'])}-s{seed}"
                cfg = self.configs[i].replace(seed=seed, out=str(folder))
                out.append(RunRequest((i, seed), cfg, folder, f"{v['name']} seed {seed}"))
        return out

    def claim(self, req: RunRequest) -> None:
        """Before a run: its folder, new (a leftover of a cut run is moved aside)."""
        if req.folder.exists():
            aside(req.folder)
        req.folder.mkdir()
        self.progress.start(req.label)

    def interrupted(self, name: str) -> None:
        """Record a run folder a signal cut (moved aside): the first, and with --jobs all."""
        sitting = self.doc["history"][-1]
        sitting.setdefault("interrupted_run", name)
        if name != sitting["interrupted_run"] or "interrupted_runs" in sitting:
            sitting["interrupted_runs"] = [*sitting.get("interrupted_runs", [sitting["interrupted_run"]]), name]

    def lost(self, req: RunRequest, lost: LostRun) -> None:
        """Record a run the executor gave up on (a ``--jobs`` child without run.json, a Dask
        task whose workers died): in this sitting's ``lost_runs``, with what its folder
        kept (moved aside as ``<dir>.lost``; an empty one is removed)."""
        i, seed = req.key
        kept: str | None = None
        if req.folder.is_dir():
            if any(req.folder.iterdir()):
                kept = aside(req.folder, "lost").name
            else:
                req.folder.rmdir()
        entry = lost.record({"variant": self.doc["variants"][i]["name"], "seed": seed, "folder": kept})
        sitting = self.doc["history"][-1]
        sitting["lost_runs"] = [*sitting.get("lost_runs", []), entry]
        self.write()
        self.progress.say(f"{req.label}: lost ({lost.reason})")

    def run(self) -> str | None:
        """Make the plan's runs; the stop signal's name if a signal cut it short, else
        ``"lost"`` if the executor lost a run (the others ran; no further repeat starts)."""
        plan = self.doc["plan"]
        repeats = int(plan["repeat"])
        while True:
            todo = self.requests(repeats)
            self.progress.plan(self.progress.completed + len(todo))
            cut: str | None = None
            for req, rdoc in self.executor.run(todo, on_start=self.claim,
                                               should_stop=lambda: self.signals.name is not None):
                self.progress.done()
                if isinstance(rdoc, LostRun):
                    self.lost(req, rdoc)
                    continue
                code = rdoc.get("exit_code")
                if code in (EX_SIGINT, EX_SIGTERM):  # the runner stopped this run cleanly: keep it aside
                    self.interrupted(aside(req.folder).name)
                    cut = cut or str((rdoc.get("stop") or {}).get("signal")
                                     or ("SIGINT" if code == EX_SIGINT else "SIGTERM"))
                    self.executor.stop()  # no new run; runs still going end (and are kept) first
                    continue
                i, seed = req.key
                entry = run_entry(rdoc, req.folder, seed, self.executor.parallel)
                self.doc["variants"][i]["runs"].append(entry)
                self.doc["variants"][i]["runs"].sort(key=lambda r: int(r["seed"]))
                self.write()
                self.progress.say(run_line(self.doc["variants"][i]["name"], entry))
            if self.signals.name is not None or cut is not None:
                return self.signals.name or cut
            if self.doc["history"][-1].get("lost_runs"):
                return LOST
            if plan.get("precision") is None:
                return None
            status = comparison.precision_status(comparison.analyse(self.doc))
            if status is None or status["reached"] or status["gave_up"]:
                return None
            repeats += 1


def run_line(name: str, entry: dict[str, Any]) -> str:
    """One line per finished run: variant, seed, verdict, throughput, stranded clusters."""
    figs = entry["figures"]
    stranded = figs.get("stranded_avg")
    return (f"{name} seed {entry['seed']}: {entry['verdict']}, {figs.get('ops_per_s') or 0:,.0f} ops/s, "
            "stranded clusters avg " + ("-" if stranded is None else f"{stranded:,.0f}"))


def finish(out: Path, doc: dict[str, Any], stopped: str | None, start: dict[str, Any]) -> list[str]:
    """Mark the document complete or partial, analyse it and write its three files;
    ``host`` is this sitting's (``start``: when it began)."""
    now = documents.timestamp()
    doc["finished"] = now
    doc["host"] = documents.host_record(start)
    doc["state"] = "partial" if stopped else "complete"
    code = {"SIGINT": EX_SIGINT, "SIGTERM": EX_SIGTERM, LOST: EX_TESTER}.get(stopped or "", EX_SIGINT)
    doc["stop"] = {"reason": stopped, "exit_code": code} if stopped else None
    if doc["history"]:
        doc["history"][-1].update(ended=now, reason=stopped or "completed")
    return write_all(out, comparison.analyse(doc))


def write_all(out: Path, doc: dict[str, Any]) -> list[str]:
    """compare.json, compare.txt and compare.png; the report lines."""
    lines = comparison.report_lines(doc)
    documents.write_compare_json(out, doc)
    files.write_text(out / documents.COMPARE_TXT, "\n".join(lines) + "\n")
    try:
        plot_compare(out, doc)
    except Exception as exc:  # noqa: BLE001 - a missing picture must not cost the table
        options.warn(f"compare.png not drawn: {exc!r}")
    return lines


def show(args: argparse.Namespace, out: Path, doc: dict[str, Any], lines: list[str]) -> None:
    """The table and the folder on stdout, or compare.json with --json."""
    if args.json:
        print(documents.compare_json_text({"folder": str(out), **doc}), end="")  # where it was written
        return
    for line in lines:
        print(line)
    print(f"compare folder: {out}")


def exit_code(doc: dict[str, Any]) -> int:
    """130 / 143 after a stop; 3 if a run was lost or failed as a tester; else 0."""
    if doc.get("stop"):
        return int(doc["stop"]["exit_code"])
    errors = [r for v in doc["variants"] for r in v["runs"] if r.get("verdict") == "error"]
    return EX_TESTER if errors else EX_OK


# --- noise before starting -------------------------------------------------------------------------


def machine_load(sample_s: float = 1.0) -> tuple[float, float]:
    """(1-minute load average, cores' worth of CPU others used over ``sample_s``)."""
    from stress.engine.noise import NoiseProbe

    probe = NoiseProbe()
    time.sleep(sample_s)
    noise = probe.finish(usable_cores())
    busy = float(noise.get("others_cpu_s") or 0.0) / max(float(noise["wall_s"]), 1e-9)
    return os.getloadavg()[0], busy


def check_quiet(load: float, busy: float, cores: int) -> None:
    """--require-quiet: refuse (UsageError) while others load the machine."""
    if load > cores:
        raise UsageError(f"--require-quiet: the 1-minute load average is {load:.2f}, above the {cores} usable "
                         "cores: other processes would share the runs' cores; wait, or leave out --require-quiet")
    if busy > cores / 2:
        raise UsageError(f"--require-quiet: other processes used {busy:.1f} of the {cores} usable cores over the "
                         "last second; wait, or leave out --require-quiet")


# --- the command ---------------------------------------------------------------------------------


def _changed(args: argparse.Namespace, names: Sequence[str]) -> list[str]:
    defaults = argparse.ArgumentParser()
    add_arguments(defaults)
    d = defaults.parse_args([])
    return [n for n in names if getattr(args, n) != getattr(d, n)]


def claim_out(args: argparse.Namespace, name: str) -> Path:
    """``--out`` claimed (new, or an empty folder), or a new ``results/<name>``: the
    comparison's alone (stress/files.py); released when compare is done with it."""
    try:
        if args.out:
            return files.claim_folder(Path(args.out))
        return files.new_folder(Path("results"), name)
    except files.FolderError as exc:
        raise UsageError(f"--out: {exc}") from None


def start(args: argparse.Namespace) -> tuple[Path, dict[str, Any], list[RunConfig]]:
    """A new comparison: its folder and its document, written before the first run."""
    options.check_out(args.out)  # early, in plain words; the claim below is the exclusive one
    if args.max_spread is not None:
        options.warn("--max-spread: ignored: compare now judges differences by their 95% intervals "
                     "(docs/policies.md)")
    doc, cfgs = new_plan(args)
    check_jobs(args, cfgs)
    if args.require_quiet:
        check_quiet(*machine_load(), len(usable_cores()))
    base = doc["base"]
    out = claim_out(args, f"{time.strftime('%Y%m%d-%H%M%S')}-compare-{spec_label(str(base.get('workload', 'mixed')))}-"
                          f"cpus{base.get('cpus', 'n')}")
    documents.write_compare_json(out, doc)
    return out, doc, cfgs


def resume(args: argparse.Namespace) -> tuple[Path, dict[str, Any], list[RunConfig]]:
    """A comparison a stop cut short: its folder, its document, its configurations."""
    extra = _changed(args, (*PLAN_OPTIONS, "out", "merge"))
    if extra:
        raise UsageError(f"--resume: takes the plan from DIR/compare.json; leave out --{extra[0].replace('_', '-')}")
    out = Path(args.resume)
    try:
        doc = documents.read_compare(out)
    except documents.DocumentError as exc:
        raise UsageError(f"--resume: {exc}") from None
    if doc.get("upgraded_from") or doc.get("merged_from"):
        raise UsageError(f"--resume: {out} is {'a merge' if doc.get('merged_from') else 'an older format'}: "
                         "only a comparison that a stop cut short can be resumed")
    if doc.get("state") == "complete":
        raise UsageError(f"--resume: {out} is complete: nothing to resume")
    try:
        cfgs = [run_config(doc, i) for i in range(len(doc["variants"]))]
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"--resume: {out}/compare.json: unusable variant configuration: {exc!r}") from None
    for cfg in cfgs:
        options.check_cpus(cfg.cpus, cfg.oversubscribe, remedy="resume it on a machine with enough cores")
    load_plugins(out, cfgs, args.trust_plugins)
    check_jobs(args, cfgs)
    if args.require_quiet:
        check_quiet(*machine_load(), len(usable_cores()))
    try:  # one sitting at a time: a second resume of the same folder is refused
        files.reclaim_folder(out)
    except files.FolderError as exc:
        raise UsageError(f"--resume: {exc}") from None
    doc["state"], doc["stop"], doc["finished"] = "running", None, None
    return out, doc, cfgs


def load_plugins(out: Path, cfgs: list[RunConfig], trusted: bool) -> None:
    """The plugins a resumed comparison runs, loaded only with --trust-plugins (a folder
    travels: its document names code, and naming is not consent) and only with the
    source the comparison recorded (stress.plugins.load_config)."""
    needed = {str(r.get("spec")) for c in cfgs for r in plugins.recorded_plugins(c).values()}
    if needed and not trusted:
        raise UsageError(f"--resume: {out} runs the plugins {', '.join(sorted(needed))}; a document's code is "
                         "loaded only with --trust-plugins")
    for cfg in cfgs:
        try:
            plugins.load_config(cfg)
        except plugins.PluginError as exc:
            raise UsageError(f"--resume: {exc}") from None


def main(args: argparse.Namespace, execute: Execute | None = None) -> int:
    """``python -m stress compare``: 0 when every run ended with a verdict on the allocator
    (a wedged 2005 run is a result, not a failure of compare), 2 on bad options, 3 if a
    run failed as a tester (verdict "error"), 130 / 143 when a signal stopped it."""
    try:
        if args.merge is not None:
            return merge(args)
        # the command's own signals (stress.cli), shared with every run made here
        with stopping.command_signals() as signals, scaleout.opened(args, signals, execute,
                                                                     args.oversubscribe) as where:
            out, doc, cfgs = resume(args) if args.resume else start(args)
            with files.holding(out):
                return run_session(args, out, doc, cfgs, where, signals)
    except UsageError as e:
        return options.usage_error(e)


def check_jobs(args: argparse.Namespace, cfgs: list[RunConfig]) -> None:
    """--jobs J: J runs of the widest variant must fit the usable cores (or --oversubscribe,
    which belongs to --jobs and --cluster: a variant oversubscribes with oversubscribe=1)."""
    from stress.engine.jobs import check_jobs as fits

    if args.oversubscribe and args.jobs == 1 and args.cluster is None:
        raise UsageError("--oversubscribe: only with --jobs J or --cluster (a variant oversubscribes with "
                         "oversubscribe=1)")
    fits(args.jobs, [c.cpus for c in cfgs], args.oversubscribe)


def run_session(args: argparse.Namespace, out: Path, doc: dict[str, Any], cfgs: list[RunConfig],
                executor: Executor, signals: StopSignals) -> int:
    """Make the missing runs, then write and print the result (partial after a stop)."""
    sitting = documents.host_start()
    doc["history"].append({"started": sitting["started"], "resumed": bool(args.resume), "jobs": args.jobs})
    documents.write_compare_json(out, doc)
    quiet = args.quiet or args.json
    with RunProgress(0, "runs", enabled=wanted(quiet), quiet_lines=quiet) as progress:
        if not quiet:
            progress.say(f"compare: {len(doc['variants'])} variants into {out}")
        stopped = Session(out, doc, cfgs, executor, progress, signals).run()
    # From here signals are frozen: one that came after the last run, before the documents
    # are written, is written into them (partial, its exit code); a later one changes
    # nothing, so the process's exit code is always compare.json's.
    late = signals.freeze()
    stopped = stopped or late
    show(args, out, doc, finish(out, doc, stopped, sitting))
    if stopped:
        kept = sum(len(v["runs"]) for v in doc["variants"])
        how = f"stopped by {stopped}" if stopped != LOST else monitor.lost_words(
            doc["history"][-1]["lost_runs"], "run {variant} seed {seed}")
        print(f"{options.PROG}: compare: {how}: {kept} run{'' if kept == 1 else 's'} kept; "
              f"complete it with: python -m stress compare --resume {out}", file=sys.stderr)
    return exit_code(doc)


# --- merge -------------------------------------------------------------------------------------------


def merge(args: argparse.Namespace) -> int:
    """``--merge DIR...``: one comparison of the runs of several (same variants, same
    options); runs pair within the comparison they come from; the table of the whole."""
    extra = _changed(args, tuple(o for o in PLAN_OPTIONS if o != "baseline") + ("resume", "require_quiet"))
    if extra:
        raise UsageError(f"--merge: joins finished comparisons; leave out --{extra[0].replace('_', '-')}")
    dirs = [Path(d) for d in args.merge]
    if len({d.resolve() for d in dirs}) != len(dirs):
        raise UsageError("--merge: a folder is listed twice")
    docs = []
    for d in dirs:
        try:
            docs.append(documents.read_compare(d))
        except documents.DocumentError as exc:
            raise UsageError(f"--merge: {exc}") from None
    first = docs[0]
    names = [v["name"] for v in first["variants"]]

    def full(doc: dict[str, Any], v: dict[str, Any]) -> dict[str, Any]:
        return {**doc["base"], **v["config"]}

    for d, doc in zip(dirs[1:], docs[1:], strict=True):
        if sorted(v["name"] for v in doc["variants"]) != sorted(names):
            raise UsageError(f"--merge: {d} has other variants ({', '.join(v['name'] for v in doc['variants'])}) "
                             f"than {dirs[0]} ({', '.join(names)})")
        for v in doc["variants"]:
            mine = next(x for x in first["variants"] if x["name"] == v["name"])
            a, b = full(first, mine), full(doc, v)
            diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            if diff:
                raise UsageError(f"--merge: variant {v['name']} differs between {dirs[0]} and {d}: {diff[0]} "
                                 f"{a.get(diff[0])!r} vs {b.get(diff[0])!r}")
    baseline = args.baseline if args.baseline is not None else first["plan"].get("baseline") or names[0]
    if baseline not in names:
        raise UsageError(f"--baseline: no variant named {baseline!r} (variants: {', '.join(names)})")
    options.check_out(args.out)
    out = claim_out(args, f"{time.strftime('%Y%m%d-%H%M%S')}-compare-merged")
    with files.holding(out):
        return write_merge(args, out, dirs, docs, baseline)


def write_merge(args: argparse.Namespace, out: Path, dirs: list[Path], docs: list[dict[str, Any]],
                baseline: str) -> int:
    """The merged comparison into ``out``: every run of every source, pointed at where it is."""
    first = docs[0]
    merged_variants = []
    for v in first["variants"]:
        runs = []
        for i, (d, doc) in enumerate(zip(dirs, docs, strict=True)):
            src = next(x for x in doc["variants"] if x["name"] == v["name"])
            for r in src["runs"]:
                origin = f"{i + 1}" + (f"/{r['origin']}" if r.get("origin") else "")
                runs.append({**r, "dir": os.path.relpath(d / r["dir"], out), "origin": origin})
        merged_variants.append({**{k: v[k] for k in ("name", "options", "config")}, "baseline": v["name"] == baseline,
                                "runs": runs})
    seeds = sorted({int(r["seed"]) for v in merged_variants for r in v["runs"]})
    plan = {"seed": seeds[0] if seeds else 0, "repeat": comparison.complete_repeats(merged_variants),
            "precision": None, "max_repeat": None, "baseline": baseline,
            "key_figures": list(comparison.KEY_FIGURES)}
    doc = documents.compare_document(base=first["base"], plan=plan, variants=merged_variants,
                                     start=documents.host_start())
    doc["merged_from"] = [{"origin": str(i + 1), "folder": str(d), "format": x.get("upgraded_from") or x["format"],
                           "created": x.get("created"), "state": x.get("state")} for i, (d, x) in
                          enumerate(zip(dirs, docs, strict=True))]
    doc["state"] = "complete" if all(x.get("state") == "complete" for x in docs) else "partial"
    doc["finished"] = doc["created"]
    show(args, out, doc, write_all(out, comparison.analyse(doc)))
    return exit_code(doc)
