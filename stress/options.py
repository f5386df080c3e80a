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
from stress.cpulist import format_cpulist, usable_cores

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


def seconds(allow_zero: bool = False) -> Callable[[str], float]:
    """A checker for a finite number of seconds, > 0 (or >= 0 with ``allow_zero``)."""
    allowed = ">= 0" if allow_zero else "> 0"

    def check(text: str) -> float:
        value = _finite(text)
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(f"must be a number of seconds {allowed}, got {text!r}")
        return value

    check.__name__ = "seconds"
    return check


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
    """A result is never overwritten: ``--out`` must be a folder, new or (unless
    ``may_hold_files``: a folder of timestamped results) empty."""
    if out is None:
        return
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out: {out} exists and is not a folder")
    if not may_hold_files and path.is_dir() and any(path.iterdir()):
        raise UsageError(f"--out: {out} already holds files and runs never overwrite; give a new or empty folder")


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
