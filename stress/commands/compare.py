"""``python -m stress compare``: the same seeded workload under several configurations.

Why: a trimming policy is only better than another under the same load, measured the
same way, with the noise of a shared 2-core machine in view.  So compare runs every
configuration ``--repeat R`` times with the same seeds (repeat r uses ``seed + r`` in
every configuration), reduces each run to the figures of policies.md, and prints one
table of median and spread per figure, warning loudly where the spread is too wide to
rank the configurations.

Data flow::

    compare.main(args)
      for each repeat r, for each configuration c:        (interleaved: drift hits all alike)
        stress.engine.runner.execute(RunConfig(c, seed + r), OUT/<c>-r<r>/) -> run.json document
        output.comparison.run_figures(doc, folder)        -> one row of figures
      output.comparison.row_summary(runs)  -> median, min, max, spread per figure
      OUT/compare.json   documents.compare_document, format "zonelimit.compare/1"
      OUT/compare.txt    output.comparison.report_lines: the table as printed, warnings, target
      OUT/compare.png    output.plots.plot_compare: cluster usage over time per configuration

compare.json (``"zonelimit.compare/1"``)::

    {"format": "zonelimit.compare/1", "version": .., "created": "<ISO time>",
     "host": {the host record: cores, CPU model, versions, git commit, load at start and end},
     "base": {resolved options shared by every configuration},
     "repeat": R, "seeds": [..],
     "figures": [{"key": .., "label": .., "unit": .., "better": "lower" | "higher"}, ..],
     "rows": [{"label": "modern:median", "era": .., "policy": .., "refcount": .., "wakeup": ..,
               "summary": {figure: {"median": .., "min": .., "max": .., "spread": .., "n": ..}},
               "runs": [{"dir": "<relative run folder>", "seed": .., "verdict": .., "exit_code": ..,
                         "figures": {figure: value or null}}]}, ..],
     "warnings": ["..."], "target": {"met": bool | null, "checks": ["..."]}}

What each figure is, and where it comes from: stress/output/comparison.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from allocator.policy import POLICY_NAMES, policy_params
from stress import documents, options, plugins
from stress.config import ERAS, RunConfig, resolve_era, spec_label
from stress.cpulist import usable_cores
from stress.files import FolderError, claim_folder, new_folder, write_text
from stress.options import EX_OK, EX_SIGINT, EX_SIGTERM, EX_TESTER, UsageError
from stress.output.comparison import figure_specs, rank_warnings, report_lines, row_summary, run_figures, target_check
from stress.output.plots import plot_compare

HELP = "the same workload under several configurations, side by side (policies.md)"
DESCRIPTION = HELP

Execute = Callable[..., dict[str, Any]]
"""``stress.engine.runner.execute(cfg, out_dir, echo=None) -> run.json document``."""

DEFAULT_CONFIGS = ("2005", "2007") + tuple(f"modern:{p}" for p in POLICY_NAMES)
"""The default comparison: --era 2005, --era 2007, --era modern with each policy."""


# --- configurations -----------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One configuration of the comparison: an era, optionally with a policy."""

    label: str
    era: str
    policy: str | None


def parse_configs(text: str) -> list[Variant]:
    """``2005,2007,modern:median`` -> variants; raise UsageError naming what is allowed."""
    out: list[Variant] = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        era, _, policy = item.partition(":")
        if era not in ERAS:
            raise UsageError(f"--configs: unknown era {era!r} in {item!r} (allowed: {', '.join(ERAS)})")
        if policy:  # a built-in, an installed plugin or FILE.py:CLASS / MODULE:CLASS
            try:
                plugins.spec_checker("policy")(policy)
            except argparse.ArgumentTypeError as exc:
                unknown = "unknown " if plugins.spec_origin(policy) == "entry-point" else ""
                raise UsageError(f"--configs: {unknown}policy {policy!r} in {item!r}: {exc}") from None
        out.append(Variant(item, era, policy or None))
    if not out:
        raise UsageError("--configs: no configuration given (for example: 2005,2007,modern:median)")
    if len({v.label for v in out}) != len(out):
        raise UsageError("--configs: a configuration is listed twice")
    return out


def parse_policy_params(items: Sequence[str]) -> dict[str, dict[str, float]]:
    """``median.k=3`` items -> {"median": {"k": 3.0}}; raise UsageError on a bad item."""
    out: dict[str, dict[str, float]] = {}
    for item in items:
        name, eq, value = item.partition("=")
        policy, dot, param = name.rpartition(".")  # a plugin spec may hold dots: x/halve.py:Halve.keep
        if not eq or not dot:
            raise UsageError(f"--policy-param: expected POLICY.PARAM=VALUE, got {item!r}")
        try:
            known = policy_params(policy)
        except ValueError:
            allowed = ", ".join(POLICY_NAMES)
            raise UsageError(f"--policy-param: unknown policy {policy!r} (allowed: {allowed}, or a plugin "
                             f"of --configs){options.did_you_mean(policy, POLICY_NAMES)}") from None
        if param not in known:
            allowed = ", ".join(known) or "none"
            raise UsageError(
                f"--policy-param: policy {policy!r} has no parameter {param!r} (allowed: {allowed})")
        number = options.finite_number(value)
        if number is None:
            raise UsageError(f"--policy-param: {item!r}: {value!r} is not a finite number")
        out.setdefault(policy, {})[param] = number
    return out


def variant_config(base: dict[str, Any], v: Variant, seed: int,
                   params: dict[str, dict[str, float]]) -> RunConfig:
    """The RunConfig of one run: the base options, the variant's era preset and policy."""
    knobs = resolve_era(v.era, {"policy": v.policy})
    policy = knobs["policy"]
    return plugins.with_records(RunConfig(**{**base, **knobs, "era": v.era, "seed": seed,
                                             "policy_params": dict(params.get(policy, {}))}))


# --- the command --------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m stress compare``."""
    whole, secs = options.whole_number, options.seconds
    parser.add_argument("--cpus", type=whole(1, options.MAX_CPUS), default=None, metavar="N",
                        help="simulated CPUs (default: usable cores)")
    parser.add_argument("--duration", type=secs(), default=None, metavar="S",
                        help="seconds per run; not with --rounds (default 10)")
    parser.add_argument("--workload", type=plugins.spec_checker("workload"), default="netperf", metavar="NAME",
                        help="workload shape of every run, e.g. netperf, burst, netperf-nfs, or a plugin "
                             "(FILE.py:CLASS, MODULE:CLASS) (default netperf)")
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS), metavar="LIST",
                        help="comma-separated ERA or ERA:POLICY, POLICY a name or a plugin (FILE.py:CLASS, "
                             "MODULE:CLASS) (default: %(default)s)")
    parser.add_argument("--repeat", type=whole(1, options.MAX_REPEAT), default=3, metavar="R",
                        help="runs per configuration (default 3)")
    parser.add_argument("--nmbclusters", type=whole(options.MIN_NMBCLUSTERS, options.MAX_NMBCLUSTERS),
                        default=None, metavar="N", help="cluster zone limit (default: run's)")
    parser.add_argument("--rounds", type=whole(0, options.MAX_ROUNDS), default=None, metavar="R",
                        help="on/off rounds (default: run's)")
    parser.add_argument("--round-length", type=secs(), default=None, metavar="S", help="seconds per round")
    parser.add_argument("--idle", type=secs(allow_zero=True), default=None, metavar="S",
                        help="idle seconds between rounds")
    parser.add_argument("--interval", type=secs(minimum=options.MIN_PERIOD), default=0.25, metavar="S",
                        help="sampling period: the figures are computed from these samples (default 0.25)")
    parser.add_argument("--trim-interval", type=secs(minimum=options.MIN_PERIOD), default=None, metavar="S",
                        help="policy period (default: run's)")
    parser.add_argument("--wedge-timeout", type=secs(), default=None, metavar="S",
                        help="wedge timeout (default: run's)")
    parser.add_argument("--page-budget", type=whole(0, options.MAX_PAGE_BUDGET), default=None, metavar="PAGES",
                        help="pages the VM has for the kegs, 0 = none (default: run's)")
    parser.add_argument("--seed", type=whole(0, options.MAX_SEED), default=0, metavar="N",
                        help="seed of repeat 1; repeat r uses seed + r - 1")
    parser.add_argument("--policy-param", action="append", default=[], metavar="POLICY.PARAM=VALUE",
                        help="a policy parameter, e.g. median.k=3 (repeatable); see docs/policies.md")
    parser.add_argument("--max-spread", type=options.positive_number, default=0.10, metavar="F",
                        help="relative spread above which a figure is too noisy to rank (default 0.10)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="folder for the comparison (default results/<stamp>-compare-<workload>-cpus<N>)")
    parser.add_argument("--json", action="store_true", help="print compare.json instead of the table")
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-run lines")


def _base_options(args: argparse.Namespace) -> dict[str, Any]:
    """The RunConfig fields every configuration shares, checked (UsageError if bad)."""
    cpus = args.cpus if args.cpus is not None else len(usable_cores())
    options.check_cpus(cpus, False, remedy="compare does not oversubscribe")
    options.check_out(args.out)
    if args.seed + args.repeat - 1 > options.MAX_SEED:
        raise UsageError(f"--seed: repeat r runs seed + r - 1, so --seed must be at most "
                         f"{options.MAX_SEED - args.repeat + 1} with --repeat {args.repeat}, got {args.seed}")
    rounds = args.rounds or 0
    if not rounds:
        for flag, value in (("--round-length", args.round_length), ("--idle", args.idle)):
            if value is not None:
                raise UsageError(f"{flag}: only meaningful with --rounds R (R >= 1)")
    defaults = RunConfig(cpus=1)
    duration = options.run_length(args.duration, rounds,
                                  args.round_length if args.round_length is not None else defaults.round_length,
                                  args.idle if args.idle is not None else defaults.idle, 10.0)
    base: dict[str, Any] = {"cpus": cpus, "duration": duration, "workload": args.workload,
                            "lock_profile": True, "verbosity": -1}
    for opt in ("nmbclusters", "rounds", "round_length", "idle", "interval", "trim_interval", "wedge_timeout",
                "page_budget"):
        if getattr(args, opt) is not None:
            base[opt] = getattr(args, opt)
    return base


def _compare_dir(args: argparse.Namespace, base: dict[str, Any]) -> Path:
    """--out (new or empty), or a new results/<stamp>-compare-<workload>-cpus<N>/."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:  # claimed: this comparison's alone (stress/files.py), released by the command line
        if args.out:
            return claim_folder(Path(args.out))
        return new_folder(Path("results"), f"{stamp}-compare-{base['workload']}-cpus{base['cpus']}")
    except FolderError as exc:
        raise UsageError(f"--out: {exc}") from None


def run_compare(args: argparse.Namespace, execute: Execute,
                echo: Callable[[str], None] | None = None) -> tuple[dict[str, Any], Path]:
    """Run every configuration ``--repeat`` times and build the compare.json document."""
    variants = parse_configs(args.configs)
    params = parse_policy_params(args.policy_param)
    base = _base_options(args)
    out = _compare_dir(args, base)
    start = documents.host_start()
    seeds = [args.seed + r for r in range(args.repeat)]
    rows: list[dict[str, Any]] = []
    for v in variants:
        cfg0 = variant_config(base, v, seeds[0], params)
        rows.append({"label": v.label, "era": v.era, "policy": cfg0.policy, "refcount": cfg0.refcount,
                     "wakeup": cfg0.wakeup, "policy_params": dict(cfg0.policy_params), "runs": []})
    total = len(variants) * len(seeds)
    done = 0
    for r, seed in enumerate(seeds, start=1):  # interleave configurations: drift hits all alike
        for v, row in zip(variants, rows, strict=True):
            cfg = variant_config(base, v, seed, params)
            run_dir = out / f"{v.era}{'-' + spec_label(v.policy) if v.policy else ''}-r{r}"
            run_dir.mkdir()
            doc = execute(cfg, run_dir, echo=None)
            if doc.get("exit_code") in (EX_SIGINT, EX_SIGTERM):
                # the runner caught Ctrl-C / SIGTERM and stopped its run cleanly: stop here too
                raise KeyboardInterrupt
            figs = run_figures(doc, run_dir)
            row["runs"].append({"dir": run_dir.name, "seed": seed, "verdict": doc.get("verdict"),
                                "exit_code": doc.get("exit_code"), "figures": figs})
            done += 1
            if echo:
                stranded = figs["stranded_avg"]
                echo(f"[{done}/{total}] {v.label} seed {seed}: {doc.get('verdict')}, "
                     f"{figs['ops_per_s'] or 0:,.0f} ops/s, stranded clusters avg "
                     + ("-" if stranded is None else f"{stranded:,.0f}"))
    for row in rows:
        row["summary"] = row_summary(row["runs"])
    shared = variant_config(base, variants[0], seeds[0], params).to_dict()
    for knob in ("era", "policy", "refcount", "wakeup", "seed", "policy_params"):
        shared.pop(knob, None)  # these vary per configuration or per repeat
    doc = documents.compare_document(base=shared, seeds=seeds, figures=figure_specs(), rows=rows,
                                     max_spread=args.max_spread, warnings=rank_warnings(rows, args.max_spread),
                                     target=target_check(rows), start=start)
    return doc, out


def write_compare(out: Path, doc: dict[str, Any]) -> list[str]:
    """Write compare.json, compare.txt and compare.png into ``out``; return the report lines."""
    lines = report_lines(doc)
    documents.write_compare_json(out, doc)
    write_text(out / documents.COMPARE_TXT, "\n".join(lines) + "\n")
    plot_compare(out, doc["rows"], out, doc["base"].get("nmbclusters"))
    return lines


def rebuild(out: Path) -> list[str]:
    """Recompute every figure of a finished comparison from its run folders (after a
    change to how figures are computed) and rewrite its three files; return the report."""
    out = Path(out)
    doc = documents.read_compare(out)
    for row in doc["rows"]:
        for run in row["runs"]:
            run_dir = out / run["dir"]
            run["figures"] = run_figures(documents.load_run(run_dir), run_dir)
        row["summary"] = row_summary(row["runs"])
    doc["figures"] = figure_specs()
    spread = float(doc.get("max_spread", 0.10))
    doc["warnings"] = rank_warnings(doc["rows"], spread)
    doc["target"] = target_check(doc["rows"])
    return write_compare(out, doc)


def main(args: argparse.Namespace, execute: Execute | None = None) -> int:
    """``python -m stress compare``: 0 when every run ended with a verdict on the allocator
    (a wedged 2005 run is a result, not a failure of compare), 2 on bad options, 3 if a
    run failed as a tester (verdict "error"), 130 on Ctrl-C."""
    try:
        if execute is None:
            from stress.engine.runner import execute as engine_execute

            execute = engine_execute
        echo = None if args.quiet or args.json else (lambda line: print(line, flush=True))
        doc, out = run_compare(args, execute, echo)
    except UsageError as e:
        return options.usage_error(e)
    except KeyboardInterrupt:
        print(f"{options.PROG}: compare: interrupted", file=sys.stderr)
        return EX_SIGINT
    lines = write_compare(out, doc)
    if args.json:
        print(documents.compare_json_text({"folder": str(out), **doc}), end="")
    else:
        for line in lines:
            print(line)
        print(f"compare folder: {out}")
    errors = [run for row in doc["rows"] for run in row["runs"] if run["verdict"] == "error"]
    return EX_TESTER if errors else EX_OK
