"""Options and exit codes: every value checker, every exit code, one style of usage error.

The one place where the command line's contract with its users is written down
(cli.md), so that every command refuses bad input the same way:

    0    the run completed and every audit passed
    1    the system under test failed (wedged, leak, double free, corrupt, lock order)
    2    usage error: bad option or value; the LAST stderr line names the option and
         what is allowed (``zonelimit: error: --x: must be ..., got '...'``); no traceback
    3    the tester itself failed (the message says what, with the traceback)
    130  interrupted by Ctrl-C;  143  stopped by SIGTERM (the shell's 128 + 15)

How a command uses it:

- value checkers (:func:`whole_number`, :func:`seconds`, :func:`probability`,
  :func:`one_of`, ...) are argparse ``type=`` functions: each returns the value or raises
  ``ArgumentTypeError("must be ..., got '...'")``, which :class:`ZonelimitParser` prints
  as ``zonelimit: error: --x: must be ...``;
- checks that involve several options or the machine (:func:`check_cpus`,
  :func:`check_out`, :func:`verbosity`) raise :class:`UsageError` ``("--x: ...")``; a
  command turns it into its one stderr line with :func:`usage_error` (or
  ``parser.error``, which adds argparse's usage line before it);
- :func:`call_guarded` maps what escapes a command to the codes above (Ctrl-C 130, a
  crash 3 with its traceback, a closed stdout 1).

This module knows names only through its callers (workloads, policies): it sits below
every command and imports nothing of the tester but the configuration's own constants.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NoReturn

from allocator.layout import CLUSTER_IPERS
from stress.config import INJECTIONS
from stress.cpulist import format_cpulist, parse_cpulist, usable_cores

PROG = "zonelimit"

EX_OK = 0  #: the run completed and every audit passed
EX_FAIL = 1  #: the system under test failed (the verdict says how)
EX_USAGE = 2  #: bad option or value
EX_TESTER = 3  #: the tester itself failed
EX_SIGINT = 130  #: interrupted by Ctrl-C (128 + SIGINT), after a clean stop and a partial result
EX_SIGTERM = 143  #: stopped by SIGTERM (128 + SIGTERM), after a clean stop and a partial result

MAX_CPUS = 256  #: MAXCPU: one process per simulated CPU; more is a fork bomb, not a test
MIN_NMBCLUSTERS = CLUSTER_IPERS  #: one cluster slab; the allocator refuses fewer
MAX_NMBCLUSTERS = 1 << 20  #: the arena holds 2 KB per cluster plus 2 mbufs each: ~2.6 GB at the cap
MAX_SECONDS = 30 * 86400  #: any time option, and a whole run: longer than any soak; more is a typo
MIN_PERIOD = 0.01  #: --interval, --trim-interval: the manager's loop wakes every 50 ms; finer is a spin
MAX_ROUNDS = 1_000_000  #: --rounds
MAX_SEED = 2**64 - 1  #: a seed is a 64-bit word (numpy's SeedSequence takes any, run.json keeps it exact)
MAX_HUNT_SEEDS = 100000  #: seeds one hunt runs at most (a --seeds range, or a --budget's)
MAX_PCT_DEPTH = 64  #: --pct-depth
MAX_REPEAT = 1000  #: compare --repeat, bench --repeat
MAX_PAGE_BUDGET = 1 << 31  #: --page-budget: 8 TB of 4 KB pages; the arena's words are 64-bit, the VM's int


class UsageError(ValueError):
    """Bad input: the message is one line that starts with the option (``--x: ...``)."""


def usage_error(message: object) -> int:
    """Print the one usage-error line on stderr and return :data:`EX_USAGE`."""
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
    return EX_USAGE


def warn(message: str) -> None:
    """One warning line on stderr (stdout stays clean for ``--json``)."""
    print(f"{PROG}: warning: {message}", file=sys.stderr, flush=True)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the choice closest to a mistyped ``word``
    (difflib's ratio >= 0.6, or a choice that starts with it), else ``""``; appended to
    the one error line, so a typo costs one look, not a trip to --help."""
    names = [c for c in dict.fromkeys(choices) if c and c != word]
    close = difflib.get_close_matches(word, names, n=1, cutoff=0.6)
    if not close and len(word) >= 3:
        close = [c for c in names if c.startswith(word)][:1]
    return f" (did you mean {close[0]!r}?)" if close else ""


def _mistyped_options(extra: str, known: Iterable[str]) -> str:
    """The suggestions for ``unrecognized arguments: --cpu 2 --durration 1``: one
    ``(did you mean ...)`` per unknown option (``--x=value`` too)."""
    options = [o for o in known if o.startswith("--")]
    hints = []
    for word in extra.split():
        if word.startswith("--"):
            name = word.split("=", 1)[0]
            hint = did_you_mean(name, options)
            if hint:
                hints.append(f"{name}{hint}")
    return ("; " + "; ".join(hints)) if hints else ""


class ZonelimitParser(argparse.ArgumentParser):
    """argparse with one error style: usage, then ``zonelimit: error: --option: what is allowed``."""

    def error(self, message: str) -> NoReturn:
        """Print the usage line and a one-line message naming the option; exit 2."""
        self.print_usage(sys.stderr)
        message = re.sub(r"^argument ([^:]+): ", r"\1: ", message)
        message = message.replace("expected one argument", "expects a value")
        if message.startswith("unrecognized arguments: "):
            extra = message.removeprefix("unrecognized arguments: ")
            message = (f"{extra}: unrecognized argument; the options are listed by --help"
                       + _mistyped_options(extra, self._option_string_actions))
        self.exit(EX_USAGE, f"{PROG}: error: {message}\n")


# --- value checkers: each returns the value or raises ArgumentTypeError("must be ..., got ...") ---


def whole_number(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    """A checker for whole numbers in ``[minimum, maximum]`` (either end may be open)."""
    if minimum is None:
        allowed = ""
    elif maximum is None:
        allowed = f" >= {minimum}"
    elif maximum >= 2**32:  # a huge cap (a seed's) reads better as a width
        allowed = f" >= {minimum} that fits in {maximum.bit_length()} bits"
    else:
        allowed = f" from {minimum} to {maximum}"

    def check(text: str) -> int:
        try:
            value = int(text.strip(), 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number{allowed}, got {text!r}") from None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be a whole number{allowed}, got {text!r}")
        return value

    check.__name__ = "whole number"
    return check


def _finite(text: str) -> float:
    """``float(text)``, NaN for anything that is not a number (NaN fails every check)."""
    try:
        return float(text)
    except ValueError:
        return math.nan


def finite_number(text: str) -> float | None:
    """``float(text)`` when it is a finite number, else None (``nan``, ``inf``, ``1e999``, words)."""
    value = _finite(text)
    return value if math.isfinite(value) else None


def seconds(allow_zero: bool = False, minimum: float | None = None) -> Callable[[str], float]:
    """A checker for a finite number of seconds, > 0 (or >= 0 with ``allow_zero``; or
    >= ``minimum``), at most :data:`MAX_SECONDS`."""
    if minimum is not None:
        allowed = f"from {minimum:g} to {MAX_SECONDS}"
    else:
        allowed = (">= 0" if allow_zero else "> 0") + f" and at most {MAX_SECONDS} (30 days)"

    def check(text: str) -> float:
        value = _finite(text)
        low_ok = value >= minimum if minimum is not None else (value > 0 or (value == 0 and allow_zero))
        if not math.isfinite(value) or not low_ok or value > MAX_SECONDS:
            raise argparse.ArgumentTypeError(f"must be a number of seconds {allowed}, got {text!r}")
        return value

    check.__name__ = "seconds"
    return check


_DURATION_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration(text: str) -> float:
    """A length of time: seconds, or a number with ``s``, ``m`` or ``h`` (``30m``,
    ``1.5h``, ``90s``), > 0 and at most :data:`MAX_SECONDS`."""
    t = text.strip().lower()
    unit = t[-1:] if t[-1:] in ("s", "m", "h") else ""
    try:
        value = float(t[: len(t) - len(unit)]) * _DURATION_UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a time like 90, 90s, 30m or 2h, got {text!r}") from None
    if not math.isfinite(value) or value <= 0 or value > MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"must be a time > 0 and at most 30 days, got {text!r}")
    return value


def positive_number(text: str) -> float:
    """A finite number > 0 (a ratio, a spread)."""
    value = _finite(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def probability(text: str) -> float:
    """A probability in [0, 1]."""
    value = _finite(text)
    if not 0.0 <= value <= 1.0:  # also false for NaN
        raise argparse.ArgumentTypeError(f"must be a probability from 0 to 1, got {text!r}")
    return value


def seed_range(text: str) -> range:
    """``A..B`` (inclusive) or ``N``: seeds to hunt over, each a 64-bit word, at most
    100000 at once."""
    try:
        if ".." in text:
            a, b = text.split("..", 1)
            lo, hi = int(a.strip(), 10), int(b.strip(), 10)
        else:
            lo = hi = int(text.strip(), 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be A..B or N (whole numbers), got {text!r}") from None
    if lo < 0 or hi < lo or hi > MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be A..B with 0 <= A <= B < 2**64, got {text!r}")
    if hi - lo >= MAX_HUNT_SEEDS:
        raise argparse.ArgumentTypeError(f"at most {MAX_HUNT_SEEDS} seeds at once, got {text!r}")
    return range(lo, hi + 1)


def one_of(names: Sequence[str]) -> Callable[[str], str]:
    """A checker for one name out of ``names``."""

    def check(text: str) -> str:
        if text not in names:
            raise argparse.ArgumentTypeError(
                f"must be one of {', '.join(names)}; got {text!r}{did_you_mean(text, names)}")
        return text

    check.__name__ = "name"
    return check


def injection_list(text: str) -> list[str]:
    """``NAME[,NAME]``: race-catalogue injection switches (races.md)."""
    names = [n.strip() for n in text.split(",")]
    bad = [n for n in names if n not in INJECTIONS]
    if not text.strip() or bad:
        hint = did_you_mean(bad[0], INJECTIONS) if bad else ""
        raise argparse.ArgumentTypeError(
            f"must be NAME[,NAME] with names from {', '.join(INJECTIONS)}; got {text!r}{hint}"
        )
    return names


def policy_param(text: str) -> tuple[str, float]:
    """``NAME=VALUE``: one tuning parameter of the trimming policy."""
    name, sep, value_text = text.partition("=")
    value = _finite(value_text)
    if not sep or not name.strip() or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be NAME=VALUE with a finite number VALUE, got {text!r}")
    return name.strip(), value


# --- checks after parsing: each raises UsageError("--x: ...") -----------------------------


def cpu_list(text: str) -> list[int]:
    """``--cores 0-3,7``: a CPU list (stress/cpulist.py)."""
    try:
        return parse_cpulist(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def check_cpus(cpus: int, oversubscribe: bool, *, remedy: str = "or add --oversubscribe") -> None:
    """More simulated CPUs than usable cores only with --oversubscribe (architecture.md, rule 1).

    ``remedy`` is what the message offers instead (a command without --oversubscribe
    says so).
    """
    cores = usable_cores()
    if cpus > len(cores) and not oversubscribe:
        raise UsageError(f"--cpus: must be 1 to {len(cores)}, the usable cores ({format_cpulist(cores)}), "
                         f"got {cpus}; {remedy}")


def oversubscription_warning(cpus: int) -> None:
    """Warn (on stderr, so --json output stays clean) when CPUs will share cores."""
    ncores = len(usable_cores())
    if cpus > ncores:
        warn(f"--oversubscribe: {cpus} CPUs on {ncores} cores: CPUs sharing a core interleave "
             "instead of running in parallel, so races show less often")


def check_out(out: str | os.PathLike[str] | None, *, may_hold_files: bool = False) -> None:
    """``--out`` names a folder this command can write a result into: refused here, before
    anything runs, with one line naming --out.

    A result is never overwritten: the folder must be new or empty (unless
    ``may_hold_files``: a folder of timestamped results); a new folder's parent must
    exist (a mistyped parent is refused, not created) and be a writable folder; no name in
    the path may exceed the file system's limit.  The run claims the folder atomically
    later (stress/files.py); this check only refuses early and in plain words.
    """
    if out is None:
        return
    text = os.fspath(out)
    if not text.strip() or "\0" in text:
        raise UsageError(f"--out: must name a folder, got {text!r}")
    try:
        _check_out_path(Path(text), may_hold_files)
    except OSError as exc:
        raise UsageError(f"--out: {text}: {exc.strerror or exc}") from None


def _check_out_path(path: Path, may_hold_files: bool) -> None:
    absolute = Path(os.path.abspath(path))
    anchor = next((p for p in (absolute, *absolute.parents) if p.is_dir()), Path("/"))
    try:
        name_max = os.pathconf(anchor, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    long_names = [part for part in absolute.parts if len(os.fsencode(part)) > name_max]
    if long_names:
        raise UsageError(f"--out: a name in it is longer than the {name_max} bytes this file system allows "
                         f"({len(os.fsencode(long_names[0]))} bytes)")
    if os.path.lexists(path):
        if not path.is_dir():
            raise UsageError(f"--out: {path} exists and is not a folder")
        if not may_hold_files and any(not name.startswith(".") for name in os.listdir(path)):
            raise UsageError(f"--out: {path} already holds files and runs never overwrite; give a new or "
                             "empty folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise UsageError(f"--out: {path} is not writable (permissions, or a read-only file system)")
        return
    parent = absolute.parent
    if not parent.is_dir():
        ancestor = next((p for p in parent.parents if os.path.lexists(p)), Path("/"))
        if os.path.lexists(parent) or not ancestor.is_dir():
            raise UsageError(f"--out: {path}: a parent of it is a file, not a folder")
        if not may_hold_files:
            raise UsageError(f"--out: {path}: its parent folder {path.parent} does not exist (create it first)")
        parent = ancestor
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"--out: {path}: cannot create it: {parent} is not writable (permissions, or a "
                         "read-only file system)")


def run_length(duration: float | None, rounds: int, round_length: float, idle: float, default: float) -> float:
    """The seconds a run lasts: ``--duration``, or with ``--rounds`` R the rounds'
    R x (round-length + idle).  Both at once is refused: the rounds decide a run's length,
    so a --duration beside them would be recorded and not honoured."""
    if rounds:
        if duration is not None:
            raise UsageError(f"--duration: not with --rounds: a run of rounds lasts rounds x (round-length + idle) "
                             f"= {rounds * (round_length + idle):g} s; give one or the other")
        total = rounds * (round_length + idle)
        if total > MAX_SECONDS:
            raise UsageError(f"--rounds: {rounds} rounds of {round_length + idle:g} s last {total:g} s, more than "
                             f"{MAX_SECONDS} s (30 days)")
        return total
    return default if duration is None else duration


def verbosity(quiet: bool, verbose: int) -> int:
    """-1 quiet, 0 normal, 1+ verbose; --quiet with -v is a contradiction."""
    if quiet and verbose:
        raise UsageError("--quiet: cannot be combined with -v/--verbose; choose one")
    return -1 if quiet else int(verbose)


# --- handing over -------------------------------------------------------------------------


def call_guarded(what: str, fn: Callable[[], int]) -> int:
    """Run a command's body and map the unexpected to cli.md's codes: a usage error 2,
    Ctrl-C 130, a closed stdout 1, a crash 3 (with its traceback)."""
    try:
        code = fn()
    except UsageError as exc:
        return usage_error(exc)
    except KeyboardInterrupt:
        print(f"{PROG}: {what}: interrupted", file=sys.stderr)
        return EX_SIGINT
    except BrokenPipeError:
        return stdout_closed()
    except Exception:
        traceback.print_exc()
        print(f"{PROG}: {what}: the tester itself failed (traceback above)", file=sys.stderr)
        return EX_TESTER
    if not isinstance(code, int) or isinstance(code, bool):
        print(f"{PROG}: {what}: returned {code!r} instead of an exit code", file=sys.stderr)
        return EX_TESTER
    return code


def stdout_closed() -> int:
    """The reader of stdout went away (``| head``): no traceback, exit 1 (Python's advice).

    stdout is pointed at /dev/null so that the interpreter's final flush cannot fail again.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return EX_FAIL
