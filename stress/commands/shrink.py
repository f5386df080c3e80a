"""``race --shrink RUN_DIR``: a failing pct run's schedule made short, by replays.

    RUN_DIR/run.json, schedule.json --> replay.recorded_config (the checks of ``replay``)
      try 1:   the whole recording as a guide             must fail as RUN_DIR did
      steps:   the earliest stop that still fails          shrink.shortest_stop (bisection; not a wedge's)
      switches: delta debugging over the recorded switches shrink.ddmin
      steps:   once more, with the switches kept            (if tries remain)
    each try: shrink.guide(...) --> OUT/.tries/try-N/guide/schedule.json
              --> replay.prepare_replay --> runner.execute (a real replay run, bounded by steps)
              --> run.json: fails the same way? (shrink.failure_of) --> the recording of what ran
    the smallest failing try's recording --> OUT/schedule.json --> a plain replay of it
      --> OUT/run.json ...  (same failure, no divergence: else nothing is kept, exit 3)

Every try is the code path of ``python -m stress replay`` (prepare_replay, then the
runner), following a *guide* (stress/engine/sched/shrink.py), bounded by steps, so
which candidates fail does not depend on the load of the machine.  A try's stall
timeout is at least :data:`STALL_S` seconds: under the token it only guards against a
stuck tester, and a loaded machine holds the token longer.  A try the tester fails
(exit 3) is run once more; a second failure ends the shrink (exit 3).

Exit codes: 0 the shrunk run folder is written; 2 bad input (not a run folder, a run
that did not fail, no pct schedule); 3 the tester failed (RUN_DIR does not replay to
its own failure, a try failed twice, the shrunk schedule did not replay exactly);
130/143 a signal stopped it: nothing is written (what was is removed, and the folder
with it unless --out named an existing empty one).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stress.commands import replay
from stress.config import RunConfig
from stress.documents import SCHEDULE_FILE, DocumentError, Schedule, load_schedule
from stress.engine.sched.shrink import (
    BudgetSpent,
    ddmin,
    describe_failure,
    failure_of,
    guide,
    shortest_stop,
)
from stress.engine.stopping import Stopped, command_signals
from stress.files import CLAIM, FolderError, claim_folder, new_folder, release_folder
from stress.options import EX_OK, EX_SIGINT, EX_SIGTERM, EX_TESTER, UsageError, check_cpus, check_out

DEFAULT_TRIES = 100  #: replays a shrink makes at most (--max-tries)
STALL_S = 10.0  #: the least stall timeout of a try (seconds; the verdicts are by step)
SHRUNK = "shrunk"  #: the default output folder, inside RUN_DIR
TRIES = ".tries"  #: the tries' run folders, inside the output folder, removed at the end


class TesterFailed(Exception):
    """A try (or the original) could not be judged: the tester failed; one line."""


@dataclass
class Shrunk:
    """What a shrink found: the schedule before and after, and what it cost."""

    folder: Path
    before: Schedule
    after: Schedule
    kept: int  #: recorded switches kept in the guide (the preemptions that matter)
    tries: int
    spent: bool  #: the budget ran out before the switches were 1-minimal
    failure: str

    def lines(self) -> list[str]:
        how = (f"the budget of {self.tries} tries is spent: shorter, not minimal" if self.spent
               else f"{self.tries} tries: 1-minimal")
        return [f"shrunk {self.failure}: switches {len(self.before.switches):,} -> {len(self.after.switches):,} "
                f"({self.kept:,} of the recorded kept in the guide), steps {self.before.stop_step:,} -> "
                f"{self.after.stop_step:,} ({how})",
                f"replay: python -m stress replay {shlex.quote(str(self.folder))}"]

    def to_dict(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "failure": self.failure,
                "switches": {"before": len(self.before.switches), "after": len(self.after.switches),
                             "kept": self.kept},
                "steps": {"before": self.before.stop_step, "after": self.after.stop_step},
                "tries": self.tries, "minimal": not self.spent,
                "replay": f"python -m stress replay {shlex.quote(str(self.folder))}"}


class Tries:
    """The budget of tries, and each try: a real replay of a guide, judged."""

    def __init__(self, cfg: RunConfig, failure: tuple[Any, ...], work: Path, max_tries: int,
                 stop: Any, echo: Callable[[str], None]) -> None:
        self.cfg = cfg
        self.failure = failure
        self.work = work
        self.max_tries = max_tries
        self.stop = stop
        self.echo = echo
        self.count = 0
        self.spent = False
        self.best: Schedule | None = None  #: the recording of the smallest failing try
        self.best_kept = 0

    def fails(self, candidate: Schedule, what: str) -> bool:
        """Replay ``candidate``: does it fail as the original did?  Keeps its recording
        when it does (the tries only get smaller, so the last failing one is the best)."""
        if self.count >= self.max_tries:
            self.spent = True
            raise BudgetSpent
        self.count += 1
        doc, recorded = self._replay(candidate, f"try-{self.count}")
        if doc.get("exit_code") not in (0, 1):  # the tester's failure: once more, then give up
            self.echo(f"try {self.count}: {what}: the tester failed ({doc.get('verdict')}); once more")
            doc, recorded = self._replay(candidate, f"try-{self.count}-again")
            if doc.get("exit_code") not in (0, 1):
                raise TesterFailed(f"try {self.count} failed twice in the tester: {doc.get('verdict')}: "
                                   f"{doc.get('verdict_detail')}")
        same = failure_of(doc) == self.failure
        if same and recorded is None:
            raise TesterFailed(f"try {self.count} kept no {SCHEDULE_FILE}")
        # what ran must be no longer than the best so far: a shrink never lengthens
        longer = same and recorded is not None and self.best is not None and \
            len(recorded.switches) > len(self.best.switches)
        self.echo(f"try {self.count}: {what}: {describe_failure(failure_of(doc))}"
                  + (" -- the same failure, but more switches ran" if longer else
                     " -- fails the same way" if same else ""))
        if same and not longer and recorded is not None:
            self.best, self.best_kept = recorded, len(candidate.switches)
            return True
        return False

    def _replay(self, candidate: Schedule, name: str) -> tuple[dict[str, Any], Schedule | None]:
        from stress.engine.runner import execute

        self.stop.check()  # no try starts after a stop signal
        folder = self.work / name
        (folder / "guide").mkdir(parents=True)
        candidate.save(folder / "guide")
        cfg = replay.prepare_replay(folder / "guide", self.cfg).replace(out=str(folder / "run"))
        try:
            doc = execute(cfg, folder / "run")
            if doc.get("verdict") == "interrupted" or self.stop.requested:
                raise Stopped(self.stop.name or "SIGINT")
            try:
                recorded = load_schedule(folder / "run")
            except (OSError, DocumentError):
                recorded = None
            return doc, recorded
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _original(run_dir: Path, args: argparse.Namespace) -> tuple[RunConfig, dict[str, Any], Schedule]:
    """RUN_DIR's configuration (replay's checks), run.json and schedule: UsageError unless
    it is a failed pct run with a complete schedule placed by step."""
    plugin_args = argparse.Namespace(policy=args.policy, workload=args.workload, trust_plugins=False, force=False)
    try:
        cfg, doc = replay.recorded_config(run_dir, plugin_args)
    except UsageError as exc:  # named for this command's option
        raise UsageError(f"--shrink: {str(exc).removeprefix('RUN_DIR: ')}") from None
    if doc.get("exit_code") != 1:
        raise UsageError(f"--shrink: {run_dir} did not fail (verdict {doc.get('verdict')}, exit "
                         f"{doc.get('exit_code')}): there is no failure to keep")
    try:
        schedule = load_schedule(run_dir)
    except FileNotFoundError:
        raise UsageError(f"--shrink: {run_dir} has no {SCHEDULE_FILE}: only a pct run (or its replay) has a "
                         "schedule to shrink; hunt with --sched pct") from None
    except (DocumentError, OSError) as exc:
        raise UsageError(f"--shrink: {exc}") from None
    if schedule.guide:
        raise UsageError(f"--shrink: {run_dir}/{SCHEDULE_FILE} is a guide, not a recording")
    if schedule.overflow:
        raise UsageError(f"--shrink: {run_dir}/{SCHEDULE_FILE}: the recording is incomplete (its log overflowed)")
    if not schedule.plan or schedule.stop_step <= 0:
        raise UsageError(f"--shrink: {run_dir}/{SCHEDULE_FILE} was recorded before runs were placed by step: "
                         "hunt it again to shrink it")
    if schedule.ncpus != cfg.cpus:
        raise UsageError(f"--shrink: {run_dir}/{SCHEDULE_FILE} was recorded for {schedule.ncpus} CPUs, run.json "
                         f"says {cfg.cpus}")
    oversubscribe = cfg.oversubscribe or args.oversubscribe
    check_cpus(cfg.cpus, oversubscribe)
    return cfg.replace(oversubscribe=oversubscribe, verbosity=-1, json=False,
                       wedge_timeout=max(cfg.wedge_timeout, STALL_S)), doc, schedule


def shrink(run_dir: Path, out: Path, cfg: RunConfig, doc: dict[str, Any], original: Schedule,
           max_tries: int, stop: Any, echo: Callable[[str], None]) -> Shrunk:
    """Shrink ``original`` into ``out`` (claimed, empty): the phases of the module
    docstring, then the plain replay of the result into ``out``.  Raises TesterFailed,
    or Stopped on a signal; the caller removes ``out`` then."""
    failure = failure_of(doc)
    assert failure is not None
    work = out / TRIES
    tries = Tries(cfg, failure, work, max_tries, stop, echo)
    switches = list(original.switches)
    stop_step = original.stop_step
    try:
        if not tries.fails(guide(original, switches, stop_step), f"the recording as a guide, stop at step "
                                                                    f"{stop_step:,}"):
            raise TesterFailed(f"{run_dir} does not replay to its own failure as a guide "
                               f"({describe_failure(failure)}): the run is not deterministic under the token")

        def stops_at(kept: list[tuple[int, int, int]]) -> Callable[[int], bool]:
            return lambda s: tries.fails(guide(original, kept, s), f"stop at step {s:,}, "
                                         f"{_switches(sum(1 for x in kept if x[0] < s))}")

        # A wedge stops the run by itself, at the step its test fires after wedge_steps
        # without progress: no earlier stop finds it, so its steps shrink only as the
        # switches do (the recording of what ran stops at the wedge).
        by_stop = failure[0] != "wedged"
        if by_stop:
            stop_step = shortest_stop(0, stop_step, stops_at(switches))
        switches = [s for s in switches if s[0] < stop_step]
        switches = ddmin(switches, lambda kept: tries.fails(guide(original, kept, stop_step),
                                                           f"{len(kept):,} of {_switches(len(switches))}"))
        if by_stop and not tries.spent:
            stop_step = shortest_stop(max(s[0] for s in switches) if switches else 0, stop_step,
                                      stops_at(switches))
    except BudgetSpent:
        pass
    best = tries.best
    assert best is not None  # the first try failed the same way, or we raised
    best = dataclasses.replace(best, labels=original.labels)
    _verify(out, cfg, best, failure, work)
    return Shrunk(out, original, best, tries.best_kept, tries.count, tries.spent, describe_failure(failure))


def _switches(n: int) -> str:
    return f"{n:,} switch" + ("" if n == 1 else "es")


def _verify(out: Path, cfg: RunConfig, best: Schedule, failure: tuple[Any, ...], work: Path) -> None:
    """``out/schedule.json`` (the smallest failing try's recording), replayed plainly --
    the run folder ``replay`` would make -- into ``out``: it must fail the same way with
    no divergence, or TesterFailed."""
    from stress.engine.runner import execute

    best.save(out)
    folder = work / "verify"
    doc = execute(replay.prepare_replay(out, cfg).replace(out=str(out)), folder)
    if doc.get("verdict") == "interrupted":
        raise Stopped(str((doc.get("stop") or {}).get("signal") or "SIGINT"))
    divergences = (doc.get("schedule") or {}).get("divergences")
    if failure_of(doc) != failure or divergences:
        raise TesterFailed(f"the shrunk schedule replayed to {describe_failure(failure_of(doc))} with "
                           f"{divergences} divergences, not to {describe_failure(failure)}")
    names = sorted(os.listdir(folder), key=lambda n: n == "run.json")  # run.json last: the folder is whole
    for name in names:
        if name != SCHEDULE_FILE:  # the one it followed, the same
            os.replace(folder / name, out / name)
    shutil.rmtree(work, ignore_errors=True)


def _discard(out: Path) -> None:
    """Remove everything the shrink wrote into ``out``; the folder itself goes with its
    claim when the claim made it (a folder the user gave, empty, stays empty)."""
    for entry in list(out.iterdir()) if out.is_dir() else []:
        if entry.name == CLAIM:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    release_folder(out)


def main(args: argparse.Namespace) -> int:
    """``race --shrink RUN_DIR [--max-tries N] [--out DIR]``."""
    run_dir = Path(args.shrink)
    cfg, doc, original = _original(run_dir, args)
    check_out(args.out)
    try:
        out = claim_folder(Path(args.out)) if args.out else new_folder(run_dir, SHRUNK)
    except FolderError as exc:
        raise UsageError(f"--out: {exc}") from None
    quiet = args.quiet or args.json

    def echo(line: str) -> None:
        if not quiet:
            print(line, flush=True)

    echo(f"shrinking {run_dir} ({describe_failure(failure_of(doc))}: {len(original.switches):,} switches, "
         f"stop at step {original.stop_step:,}) by replays, at most {args.max_tries} tries, into {out}")
    with command_signals() as stop:
        try:
            result = shrink(run_dir, out, cfg, doc, original, args.max_tries, stop, echo)
        except (Stopped, TesterFailed) as exc:
            _discard(out)
            if isinstance(exc, Stopped):
                print(f"race --shrink: stopped by {exc.signal}: nothing written", file=sys.stderr)
                return exc.exit_code
            print(f"race --shrink: {exc}; nothing written", file=sys.stderr)
            return EX_TESTER
        late = stop.freeze()  # from here on the result stands
        if late:  # a signal while the result was written: it does not stand
            _discard(out)
            print(f"race --shrink: stopped by {late}: nothing written", file=sys.stderr)
            return EX_SIGINT if late == "SIGINT" else EX_SIGTERM
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
    else:
        for line in result.lines():
            print(line)
    return EX_OK
