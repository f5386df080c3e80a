"""``python -m stress race``: hunt a catalogued race, or the configuration as given, over seeds.

One command to hunt a race and get a replay command for the failing seed::

    python -m stress race --inject refcount-eq0 --seeds 1..20 --sched pct
    python -m stress race --era 2005 --budget 10m          # no injection: the allocator as it was
    python -m stress race --policy path/to/mine.py:Mine    # your policy, every oracle armed

Without ``--inject`` the hunt runs the configuration as given -- any era, policy or
plugin -- with every oracle armed (the audit, INVARIANTS, WITNESS, the watchdog); under
pct the trimming policy runs too, its callouts placed by step, so a failing seed
replays exactly.  Whatever it finds counts, reported by class ("leak 2, wedged 1").
``--budget 30m`` hunts seed after seed, from the first of ``--seeds``, until a seed
fails or the time is spent (the seed running then completes; with ``--jobs`` or
``--cluster`` the seeds running then are stopped and recorded as cut by the budget).

For every seed it runs one short stress run (``stress.engine.runner.execute``) with the
injection switched on, the oracles armed (``--invariants``: poisoning, duplicate
free/alloc, WITNESS) and the chosen scheduling, into ``OUT/seed-N/``; it prints the
verdict, the time to detection and ``python -m stress replay OUT/seed-N``; and ends
with ``found in k of n seeds``.  In ``pct`` mode a run folder holds its schedule, so
the replay follows the very interleaving that failed.

Each catalogue row has a *hunt profile* (:data:`HUNTS`): the workload and sizes that
put its window under load (a small cluster limit for the zonelimit rows, where
sleeping must happen), the verdict classes its oracle reports, and a per-seed run
length.  Options given on the command line beat the profile.

Exit codes: 1 if any seed found a defect (the system under test failed, cli.md), 3 if
the tester failed on some seed, or lost it (``--jobs``, ``--cluster``: recorded in
race.json ``lost``, state ``partial``), and none found a defect, 0 if every seed ran clean.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stress import config as _config
from stress import documents, options, plugins
from stress.commands import shrink
from stress.commands.export_test import export_test
from stress.commands.run import MAX_STEPS
from stress.config import RunConfig, resolve_era
from stress.cpulist import usable_cores
from stress.engine import scaleout
from stress.engine.executor import Executor, LocalExecutor, LostRun, RunRequest
from stress.engine.sched.plan import STEPS_PER_S
from stress.files import FolderError, claim_folder, move_aside, new_folder
from stress.options import EX_FAIL, EX_OK, EX_TESTER, UsageError
from stress.output import monitor
from stress.output.progress import RunProgress, wanted

HELP = "race hunting and schedule replay (races.md)"
DESCRIPTION = HELP
HUNT_HISTORIES = 3  #: items per failing seed whose INVARIANTS history the hunt report shows


@dataclass(frozen=True)
class Hunt:
    """How to hunt one catalogue row: what to run and which verdicts mean "caught"."""

    verdicts: frozenset[str]  #: verdict classes the row's oracle reports (races.md)
    workload: str = "netperf"
    era: str = "modern"
    nmbclusters: int = 512
    cpus: int = 2  #: simulated CPUs the workload's roles need (more than the cores: oversubscribed)
    duration: float = 4.0
    wedge_timeout: float = 1.0
    oracle: str = ""  #: the oracle, in words (docs/races.md)


#: The catalogue of races.md, with the oracle that must catch each row.
HUNTS: dict[str, Hunt] = {
    "refcount-eq0": Hunt(frozenset({"leak"}), nmbclusters=2048,
                         oracle="audit: cluster with refcount 0, neither free nor cached: lost"),
    "refcount-unlocked": Hunt(frozenset({"double-free", "corrupt", "leak"}), nmbclusters=2048,
                              oracle="INVARIANTS duplicate free / poison, payload check, audit lost"),
    "lost-wakeup": Hunt(frozenset({"wedged"}), workload="race-limit", nmbclusters=8, duration=3.0,
                        oracle="watchdog: sleepers while the keg has free items"),
    "wake-one": Hunt(frozenset({"wedged"}), workload="race-wakeone", cpus=3, duration=3.0,
                     oracle="watchdog: wedge with free items available"),
    "cache-drain-unsafe": Hunt(frozenset({"double-free", "corrupt"}), workload="race-drain", duration=3.0,
                               oracle="duplicate-alloc check, payload corruption, audit double-owned"),
    "stats-unlocked": Hunt(frozenset({"corrupt", "leak"}),
                           oracle="audit: counters vs a full walk of the arena"),
}

#: A hunt without an injection: the configuration as given, every verdict on the
#: allocator a finding (a wedge of the 2005 era is its bug: exhaustion by lost clusters).
AS_GIVEN = Hunt(frozenset({"leak", "wedged", "double-free", "corrupt", "lock-order"}), nmbclusters=2048,
                oracle="every oracle: the audit, INVARIANTS, WITNESS, payload checks, the watchdog")


def hunt_of(inject: tuple[str, ...]) -> Hunt:
    """The hunt profile: the first injection's, or :data:`AS_GIVEN`."""
    return HUNTS[inject[0]] if inject else AS_GIVEN


parse_seeds = options.seed_range  #: ``A..B`` (inclusive) or ``N``: the seeds to hunt over


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``race`` (each help text ends with its default)."""
    names = ", ".join(_config.INJECTIONS)
    parser.add_argument("--inject", type=options.injection_list, action="append", default=[],
                        metavar="NAME[,NAME]",
                        help=f"the race(s) to re-introduce and hunt: {names} (default: none: hunt the "
                             "configuration as given, every oracle armed)")
    parser.add_argument("--budget", type=options.duration, default=None, metavar="TIME",
                        help="hunt seed after seed (from the first of --seeds) until one fails or TIME is "
                             "spent: 90s, 30m, 2h; with --jobs/--cluster the seeds running then are stopped, "
                             "recorded as cut by the budget (default: the seeds of --seeds, each once)")
    parser.add_argument("--policy", type=plugins.spec_checker("policy"), default=None, metavar="NAME",
                        help="trimming policy, a name or a plugin (FILE.py:CLASS, MODULE:CLASS) "
                             "(default: the era's)")
    parser.add_argument("--seeds", type=parse_seeds, default=parse_seeds("1..10"), metavar="A..B",
                        help="seeds to run, inclusive; one run per seed (default: 1..10)")
    parser.add_argument("--sched", type=options.one_of(("free", "jitter", "pct")), default="pct", metavar="MODE",
                        help="free (real parallel cores), jitter (random delays at sched points), "
                             "pct (one CPU at a time, PCT priorities; failures replay exactly) "
                             "(default: pct)")
    parser.add_argument("--pct-depth", type=options.whole_number(1, options.MAX_PCT_DEPTH),
                        default=_config.RunConfig.pct_depth, metavar="D",
                        help="PCT bug depth, D-1 priority change points (default: %(default)s)")
    parser.add_argument("--jitter", type=options.probability, default=None, metavar="P",
                        help="probability of a delay at each sched point, with --sched jitter "
                             "(default: 0.05)")
    parser.add_argument("--cpus", type=options.whole_number(1, options.MAX_CPUS), default=None, metavar="N",
                        help="simulated CPUs (default: the injection's hunt profile: 2, wake-one 3; "
                             "a profile that needs more CPUs than usable cores oversubscribes them)")
    parser.add_argument("--oversubscribe", action="store_true",
                        help="allow more CPUs than usable cores (default: off)")
    parser.add_argument("--duration", type=options.seconds(), default=None, metavar="S",
                        help="seconds per seed; under pct, converted to scheduling steps at "
                             f"{STEPS_PER_S:,} per second (default: the injection's hunt profile, see "
                             "docs/races.md)")
    parser.add_argument("--steps", type=options.whole_number(1, MAX_STEPS), default=None, metavar="N",
                        help="with --sched pct: scheduling steps per seed; the run, its callout and its "
                             "wedge test are placed by step, so a seed gives the same verdict on any machine "
                             "(default: the duration's)")
    parser.add_argument("--workload", type=plugins.spec_checker("workload"), default=None, metavar="NAME",
                        help="workload, a name or a plugin (FILE.py:CLASS, MODULE:CLASS) "
                             "(default: the injection's hunt profile)")
    parser.add_argument("--era", type=options.one_of(_config.ERAS), default=None, metavar="ERA",
                        help="allocator preset the injection is added to (default: modern: the fixed "
                             "allocator, so only the injected defect can fire)")
    parser.add_argument("--nmbclusters", type=options.whole_number(options.MIN_NMBCLUSTERS, options.MAX_NMBCLUSTERS),
                        default=None,
                        metavar="N", help="cluster limit (default: the injection's hunt profile)")
    parser.add_argument("--wedge-timeout", type=options.seconds(), default=None, metavar="S",
                        help="wedge watchdog timeout (default: the injection's hunt profile)")
    parser.add_argument("--no-invariants", action="store_true",
                        help="hunt without INVARIANTS checks (default: INVARIANTS on)")
    parser.add_argument("--stop-first", action="store_true",
                        help="stop at the first seed that finds the race (default: run every seed)")
    scaleout.add_arguments(parser.add_argument_group("where the seeds run (docs/scale-out.md)"))
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="folder for the hunt: one run folder per seed (default: "
                             "results/race-<timestamp>-<inject>/)")
    parser.add_argument("--json", action="store_true",
                        help="print the hunt summary as JSON instead of lines (default: off)")
    parser.add_argument("--export-test", default=None, metavar="RUN_DIR",
                        help="hunt nothing: write a pytest file that replays RUN_DIR's failing pct run and "
                             "asserts its verdict (to --out FILE, default test_zonelimit_<folder>.py)")
    parser.add_argument("--shrink", default=None, metavar="RUN_DIR",
                        help="hunt nothing: shrink RUN_DIR's failing pct schedule by replays (its stop step bisected, "
                             "its switches delta-debugged) to one that fails the same way, into --out DIR "
                             "(default: RUN_DIR/shrunk/)")
    parser.add_argument("--max-tries", type=options.whole_number(1, 100_000), default=None, metavar="N",
                        help=f"with --shrink: replays to try at most (default: {shrink.DEFAULT_TRIES})")
    parser.add_argument("--quiet", action="store_true", help="only the summary line (default: off)")


def hunt_config(inject: tuple[str, ...], seed: int, sched: str, *, cpus: int | None = None, pct_depth: int = 3,
                jitter: float | None = None, duration: float | None = None, workload: str | None = None,
                era: str | None = None, nmbclusters: int | None = None, wedge_timeout: float | None = None,
                invariants: bool = True, oversubscribe: bool = False, out: str | None = None,
                steps: int = 0, policy: str | None = None) -> RunConfig:
    """The RunConfig of one hunt run: the first injection's profile, overridden by
    explicit values; the era preset's knobs (modern by default: fixed allocator)."""
    h = hunt_of(inject)
    if cpus is None:  # the profile's: its roles need that many, oversubscribed if need be
        cpus = h.cpus
        oversubscribe = oversubscribe or cpus > len(usable_cores())
    era = era or h.era
    knobs = resolve_era(era, {"policy": policy})
    return plugins.with_records(RunConfig(
        cpus=cpus, duration=duration if duration is not None else h.duration,
        workload=workload or h.workload, era=era, policy=knobs["policy"], refcount=knobs["refcount"],
        wakeup=knobs["wakeup"], nmbclusters=nmbclusters or h.nmbclusters,
        interval=1.0, wedge_timeout=wedge_timeout if wedge_timeout is not None else h.wedge_timeout,
        seed=seed, inject=inject, sched=sched,
        jitter=(jitter if jitter is not None else 0.05) if sched == "jitter" else 0.0,
        pct_depth=pct_depth, steps=steps if sched == "pct" else 0, invariants=invariants,
        oversubscribe=oversubscribe, out=out, verbosity=-1,
    ))


def detection_time(doc: dict[str, Any]) -> float:
    """Seconds from start to detection: the wedge time, else the end of the run (the
    audit's findings are known only then)."""
    wedge = doc.get("wedge")
    if isinstance(wedge, dict) and isinstance(wedge.get("at_s"), (int, float)):
        return float(wedge["at_s"])
    return float(doc.get("duration_s", 0.0) or 0.0)


def detection_step(doc: dict[str, Any]) -> int | None:
    """The step of detection in a run placed by step: the wedge's, else the allocator
    panic's (the run stopped there), else the step at which the run stopped (the audit's
    findings are known then); None otherwise."""
    wedge = doc.get("wedge")
    if isinstance(wedge, dict) and isinstance(wedge.get("at_step"), int):
        return int(wedge["at_step"])
    schedule = doc.get("schedule")
    if isinstance(schedule, dict) and isinstance(schedule.get("panicked_at_step"), int):
        return int(schedule["panicked_at_step"])
    if isinstance(schedule, dict) and schedule.get("budget") and isinstance(schedule.get("total_steps"), int):
        return int(schedule["total_steps"])
    return None


def caught_by_oracle(doc: dict[str, Any], verdicts: frozenset[str]) -> bool:
    """Whether a run's verdict is the class the row's oracle reports.

    - A wedge counts for a wakeup row only if free items existed while CPUs slept (the
      watchdog's ``free_items_meanwhile``): a wedge with nothing free is a resource
      deadlock of the workload at that limit, not a lost wakeup.
    - A leak that ran the cluster zone dry ends *wedged* (verdict precedence,
      stress/audit.py) with lost clusters in the audit: that is the leak oracle firing
      too (the 2005 story)."""
    verdict = doc.get("verdict")
    wedge = doc.get("wedge") or {}
    if verdict == "wedged" and "wedged" in verdicts:
        return bool(wedge.get("free_items_meanwhile", True))
    if verdict in verdicts:
        return True
    lost = ((doc.get("audit") or {}).get("lost") or {}).get("cluster") or 0
    return verdict == "wedged" and "leak" in verdicts and lost > 0


@dataclass
class SeedResult:
    """One seed of a hunt."""

    seed: int
    verdict: str
    exit_code: int
    detected_s: float
    folder: Path
    expected: bool  #: the verdict is one the injection's oracle reports
    detected_step: int | None = None  #: pct: the step of the wedge (or of the stop), placed by step
    #: INVARIANTS: the recorded history of the first lost / double-freed items (run.json's audit)
    histories: list[dict[str, Any]] = field(default_factory=list)
    cut_by: str | None = None  #: interrupted by the hunt itself: "budget" (its deadline) or "stop-first"

    @property
    def failed(self) -> bool:
        """The system under test failed (any verdict class)."""
        return self.exit_code == EX_FAIL

    @property
    def interrupted(self) -> bool:
        """A stop signal cut this seed's run: no verdict on the allocator."""
        return self.verdict == "interrupted"

    @property
    def found(self) -> bool:
        """The hunted race was found: a failure of the row's class."""
        return self.failed and self.expected

    def replay_command(self) -> str:
        return f"python -m stress replay {shlex.quote(str(self.folder))}"

    def line(self) -> str:
        """``seed 3: leak after 1.42 s  replay: python -m stress replay ...``."""
        what = self.verdict if self.expected or not self.failed else f"{self.verdict} (not this row's oracle)"
        if self.interrupted:
            return f"seed {self.seed}: interrupted (no verdict)" + (
                f", cut by the {'budget' if self.cut_by == 'budget' else '--stop-first'}" if self.cut_by else "")
        if not self.failed:
            return f"seed {self.seed}: {what}"
        when = f"at step {self.detected_step:,}" if self.detected_step is not None else f"after {self.detected_s:.2f} s"
        return f"seed {self.seed}: {what} {when}  replay: {self.replay_command()}"

    def history_lines(self) -> list[str]:
        """How the first lost / double-freed items got there (INVARIANTS), under the seed's line."""
        if not self.failed or self.interrupted:
            return []
        from allocator.audit import history_lines

        return ["  " + line for line in history_lines(self.histories)]

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "verdict": self.verdict, "exit_code": self.exit_code,
                "detected_s": round(self.detected_s, 3), "detected_step": self.detected_step,
                "folder": str(self.folder),
                "expected_class": self.expected, "replay": self.replay_command(),
                "item_histories": self.histories,
                **({"cut_by": self.cut_by} if self.cut_by else {})}


Execute = Callable[[RunConfig, Path], dict[str, Any]]


def _execute() -> Execute:
    from stress.engine.runner import execute

    return lambda cfg, out: execute(cfg, out)


def run_hunt(cfgs: Iterable[RunConfig], root: Path, execute: Execute | None = None,
             echo: Callable[[str], None] | None = None, stop_first: bool = False,
             progress: RunProgress | None = None, stop: Any = None,
             executor: Executor | None = None, deadline: float | None = None,
             lost: list[dict[str, Any]] | None = None) -> list[SeedResult]:
    """Run each configuration (one per seed) into ``root/seed-N`` and classify it
    (``progress``: seeds done of the total, the current seed's time, an ETA).

    ``stop`` (the command's stress.engine.stopping.StopSignals): after a stop signal no
    new seed starts; the seed it cut is kept, with its verdict ``interrupted``.
    ``executor``: where the seeds run (default: one after the other here, through
    ``execute``; ``--jobs J``, ``--cluster``: docs/scale-out.md).  With ``stop_first``
    the seed that finds the race stops the others still running (their verdict:
    interrupted, ``cut_by`` "stop-first"); several may find it at once.  ``deadline``
    (``time.monotonic()``, --budget): no seed starts after it, and the seeds a parallel
    executor is running then are stopped (``cut_by`` "budget"; in this process the
    running seed completes).  A cut seed is never a finding.  ``lost``: receives the record of each seed the
    executor gave up on (stress.engine.executor.LostRun; its folder, if not empty, moved
    aside as ``seed-N.lost``); the other seeds go on."""
    if executor is None:
        ex = execute or _execute()
        executor = LocalExecutor(lambda cfg, folder, echo=None: ex(cfg, folder))
    requests = (RunRequest(cfg.seed, cfg.replace(out=str(root / f"seed-{cfg.seed}")), root / f"seed-{cfg.seed}",
                           f"seed {cfg.seed}") for cfg in cfgs)
    begun: list[Path] = []

    def started(req: RunRequest) -> None:
        req.folder.mkdir(parents=True, exist_ok=True)
        begun.append(req.folder)
        if progress is not None:
            progress.start(req.label)

    cut: list[str] = []  #: why the hunt itself stopped its seeds, the first reason

    def should_stop() -> bool:
        if stop is not None and stop.requested:
            return True
        if deadline is not None and time.monotonic() >= deadline:
            if not cut:
                cut.append("budget")
            return True
        return False

    out: list[SeedResult] = []
    try:
        for req, doc in executor.run(requests, on_start=started, should_stop=should_stop):
            if isinstance(doc, LostRun):
                if lost is None:
                    raise RuntimeError(f"{req.label}: lost: {doc.reason}")
                lost.append(_lost_seed(req, doc, progress, echo))
                continue
            signalled = stop is not None and stop.requested
            result = _seed_result(req, doc, progress, echo, None if signalled or not cut else cut[0])
            out.append(result)
            if stop_first and result.found:
                if not cut:
                    cut.append("stop-first")
                executor.stop()
    except KeyboardInterrupt:  # stopped before a run started (stopping.Stopped)
        if begun and begun[-1].is_dir() and not any(begun[-1].iterdir()):
            begun[-1].rmdir()
        if stop is None:
            raise
    return sorted(out, key=lambda r: r.seed)


def _lost_seed(req: RunRequest, lost: LostRun, progress: RunProgress | None,
               echo: Callable[[str], None] | None) -> dict[str, Any]:
    """race.json's record of a lost seed; its folder removed if empty, else moved aside."""
    if progress is not None:
        progress.done()
    kept: str | None = None
    if req.folder.is_dir():
        if any(req.folder.iterdir()):
            kept = str(move_aside(req.folder, "lost"))
        else:
            req.folder.rmdir()
    if echo is not None:
        echo(f"seed {req.key}: lost ({lost.reason})")
    return lost.record({"seed": req.key, "folder": kept})


def _seed_result(req: RunRequest, doc: dict[str, Any], progress: RunProgress | None,
                 echo: Callable[[str], None] | None, cut: str | None = None) -> SeedResult:
    """One seed's run.json classified (and its line echoed); an interrupted seed was
    stopped by the hunt itself when ``cut`` says why ("budget", "stop-first")."""
    cfg = req.config
    if progress is not None:
        progress.done()
    verdict = str(doc.get("verdict", "error"))
    code = int(doc.get("exit_code", EX_TESTER))
    # without an injection every verdict on the allocator is a finding (exit 1): an
    # exhaustion wedge is how the 2005 allocator failed
    expected = verdict != "interrupted" and (caught_by_oracle(doc, HUNTS[cfg.inject[0]].verdicts)
                                             if cfg.inject else code == EX_FAIL)
    histories = (doc.get("audit") or {}).get("item_histories") or []
    cut_by = cut if verdict == "interrupted" else None
    r = SeedResult(cfg.seed, verdict, code, detection_time(doc), req.folder, expected, detection_step(doc),
                   [h for h in histories if isinstance(h, dict)][:HUNT_HISTORIES], cut_by)
    if echo is not None:
        echo(r.line())
        for line in r.history_lines():
            echo(line)
    return r


def by_class(results: list[SeedResult]) -> dict[str, int]:
    """Seeds per verdict class among those that failed (``{"leak": 2, "wedged": 1}``)."""
    out: dict[str, int] = {}
    for r in results:
        if r.failed and not r.interrupted:
            out[r.verdict] = out.get(r.verdict, 0) + 1
    return dict(sorted(out.items()))


def summary_line(results: list[SeedResult], inject: tuple[str, ...], sched: str, stopped: str | None = None,
                 what: str = "", budget: float | None = None, lost: int = 0) -> str:
    """``found in k of n seeds (inject refcount-eq0, sched pct)``, plus the seeds that
    failed some other way, if any, and the stop signal that cut the hunt short.  A seed
    the signal cut is not counted among the n.  Without an injection (``what``: the
    configuration in words) every failure is a finding, listed by class."""
    done = [r for r in results if not r.interrupted]
    k = sum(r.found for r in done)
    other = sum(r.failed and not r.found for r in done)
    extra = f"; {other} other failures" if other else ""
    classes = by_class(done)
    if not inject and classes:
        extra += ": " + ", ".join(f"{verdict} {n}" for verdict, n in classes.items())
    if budget is not None and not stopped and not k:
        extra += f"; the budget of {budget:g} s is spent"
    cut = sum(r.cut_by == "budget" for r in results)
    if cut:
        extra += f"; {cut} seed{'' if cut == 1 else 's'} running at its end cut (no verdict)"
    if lost:
        extra += f"; {lost} seed{'' if lost == 1 else 's'} lost (the tester's failure, not the allocator's)"
    if stopped:
        extra += f"; interrupted by {stopped} after {len(done)} seeds"
    hunted = f"inject {','.join(inject)}" if inject else f"no injection: {what}"
    return f"found in {k} of {len(done)} seeds ({hunted}, sched {sched}){extra}"


def default_root(inject: tuple[str, ...]) -> Path:
    """Create and claim results/race-<timestamp>-<inject>/ (``-as-given`` without an
    injection), never an existing folder."""
    return new_folder(Path("results"), f"race-{time.strftime('%Y%m%d-%H%M%S')}-{'+'.join(inject) or 'as-given'}")


def main(args: argparse.Namespace) -> int:
    """Run the hunt described by ``args``; print per-seed lines and the summary."""
    try:
        return _hunt(args)
    except UsageError as exc:
        return options.usage_error(exc)


def _hunt(args: argparse.Namespace) -> int:
    if args.max_tries is not None and args.shrink is None:
        raise UsageError("--max-tries: only with --shrink RUN_DIR")
    if args.shrink is not None:
        if args.export_test is not None:
            raise UsageError("--shrink: hunts nothing and exports nothing: give --export-test alone")
        if args.max_tries is None:
            args.max_tries = shrink.DEFAULT_TRIES
        return shrink.main(args)
    if args.export_test is not None:
        path = export_test(Path(args.export_test), Path(args.out) if args.out else None)
        print(f"wrote {path}: a pytest test that replays {args.export_test} and asserts its verdict")
        return EX_OK
    inject = tuple(dict.fromkeys(n for group in args.inject for n in group))
    if args.jitter is not None and args.sched != "jitter":
        raise UsageError(f"--jitter: only with --sched jitter (got --sched {args.sched})")
    if args.steps is not None and args.sched != "pct":
        raise UsageError(f"--steps: only with --sched pct (got --sched {args.sched})")
    oversubscribe = args.oversubscribe
    cpus = args.cpus
    if cpus is None:  # the profile's: its roles need that many, so oversubscribe if must
        cpus = hunt_of(inject).cpus
        oversubscribe = oversubscribe or cpus > len(usable_cores())
    options.check_cpus(cpus, oversubscribe)
    from stress.engine.jobs import check_jobs

    check_jobs(args.jobs, [cpus], args.oversubscribe)
    scaleout.check_arguments(args)
    options.check_out(args.out)
    try:  # claimed: this hunt's alone (stress/files.py), released by the command line
        root = claim_folder(Path(args.out)) if args.out else default_root(inject)
    except FolderError as exc:
        raise UsageError(f"--out: {exc}") from None
    seeds = range(args.seeds.start, min(args.seeds.start + options.MAX_HUNT_SEEDS, options.MAX_SEED + 1)) \
        if args.budget is not None else args.seeds

    def config(seed: int) -> RunConfig:
        return hunt_config(inject, seed, args.sched, cpus=cpus, pct_depth=args.pct_depth, jitter=args.jitter,
                           duration=args.duration, workload=args.workload, era=args.era,
                           nmbclusters=args.nmbclusters, wedge_timeout=args.wedge_timeout,
                           invariants=not args.no_invariants, oversubscribe=oversubscribe, steps=args.steps or 0,
                           policy=args.policy)

    first = config(seeds.start)  # the configuration, checked before any run
    what = f"era {first.era}, policy {first.policy}, refcount {first.refcount}, wakeup {first.wakeup}, " \
           f"workload {first.workload}"
    cfgs = (config(seed) for seed in seeds)
    quiet = args.quiet or args.json
    deadline = time.monotonic() + args.budget if args.budget is not None else None

    from stress.engine import stopping

    start = documents.host_start()
    total = None if args.budget is not None else len(seeds)
    with RunProgress(total, "seeds", enabled=wanted(quiet), quiet_lines=quiet) as progress, \
            stopping.command_signals() as stop, \
            scaleout.opened(args, stop, oversubscribe=args.oversubscribe) as where:
        hunted = ','.join(inject) or f"the configuration as given ({what})"
        over = (f"seeds from {seeds.start} for {args.budget:g} s or until one fails" if args.budget is not None
                else f"seeds {seeds.start}..{seeds.stop - 1}")
        progress.say(f"hunting {hunted} over {over} ({args.sched}, {cpus} CPUs) into {root}")
        lost: list[dict[str, Any]] = []
        results = run_hunt(cfgs, root, echo=None if quiet else progress.say,
                           stop_first=args.stop_first or args.budget is not None,
                           progress=progress, stop=stop, deadline=deadline,
                           executor=None if args.jobs == 1 and args.cluster is None else where, lost=lost)
        stopped = stop.freeze()  # race.json, written next, says whether a signal cut the hunt
    line = summary_line(results, inject, args.sched, stopped, what=what, budget=args.budget, lost=len(lost))
    doc = documents.race_document(inject=list(inject), sched=args.sched, folder=root,
                                  seeds=[r.to_dict() for r in results], found=sum(r.found for r in results),
                                  summary=line, start=start)
    doc["interrupted"] = stopped  # the signal that cut the hunt short, or null
    doc["lost"] = lost  # seeds the executor gave up on (--jobs, --cluster): no verdict
    doc["state"] = "partial" if stopped or lost else "complete"
    doc["by_class"] = by_class(results)
    doc["budget_s"] = args.budget
    doc["configuration"] = {"era": first.era, "policy": first.policy, "refcount": first.refcount,
                            "wakeup": first.wakeup, "workload": first.workload}
    documents.write_race_json(root, doc)
    if args.json:
        print(documents.doc_text(doc, documents.RACE_FORMAT, indent=1), end="")
    else:
        print(line)
    if lost:
        print(f"{options.PROG}: race: {monitor.lost_words(lost, 'seed {seed}')}; race.json in {root} "
              "says which", file=sys.stderr)
    if stopped:
        return stopping.EXIT_CODES.get(stopped, options.EX_SIGINT)
    if any(r.failed for r in results):
        return EX_FAIL
    if lost or any(r.exit_code not in (EX_OK, EX_FAIL) and r.cut_by is None for r in results):
        return EX_TESTER
    return EX_OK
