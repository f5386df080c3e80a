"""The command line: ``python -m stress [run|compare|race|replay|report|stat|bench] ...`` (cli.md).

Parse, hand over, return the exit code.  Each command is one module of
:mod:`stress.commands` with the same small interface::

    HELP, DESCRIPTION          one line for the command list; the --help text
    add_arguments(parser)      its options (value checkers from stress.options)
    main(args[, parser]) -> int

Who does what::

    argv --> cli.main --> build_parser() --> args --> commands.<name>.main(args[, parser]) --> exit code
               run     -> commands.run: config_from_args -> main_run -> engine -> summary
               replay  -> commands.replay: load_run -> prepare_replay -> commands.run.main_run
               report  -> commands.report: load_run -> output.monitor lines
               stat    -> commands.stat: engine.live (live.json or a pid) -> Uma.attach(readonly) -> lines
               compare, race, bench -> commands.<name>.main(args), guarded by options.call_guarded

Design decisions:

- ``run`` is the default command: argv not starting with a command name gets ``run``
  put in front (``python -m stress --cpus 2`` is ``python -m stress run --cpus 2``).
- Every error line reads ``zonelimit: error: --x: ...`` (:mod:`stress.options`).
- Abbreviated long options are refused (``allow_abbrev=False``): a prefix that works
  today would become ambiguous, and so break scripts, when an option is added.
- Every command runs under the one stop mechanism (``stress.engine.stopping.command_signals``):
  SIGINT and SIGTERM are recorded, the command stops what it runs and starts nothing
  new, and the process exits 130 or 143 (cli.md) whatever the command returned, unless
  the command froze the signals after its last document (then that document's code
  stands: it says how the run ended).  A signal during start-up stops the command
  before it starts anything.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from stress import options
from stress.commands import bench, compare, race, replay, report, run, stat
from stress.documents import package_version
from stress.engine import stopping
from stress.files import release_all
from stress.options import PROG, ZonelimitParser

SUBCOMMANDS = ("run", "compare", "race", "replay", "report", "stat", "bench")
#: commands whose ``main(args, parser)`` gets the parser (their post-parse checks print its usage)
PARSER_COMMANDS = {"run": run, "replay": replay, "report": report, "stat": stat}
#: commands whose ``main(args)`` runs guarded by options.call_guarded (crash 3, Ctrl-C 130)
GUARDED_COMMANDS = {"compare": compare, "race": race, "bench": bench}


def _add_command(sub: Any, name: str, module: ModuleType) -> argparse.ArgumentParser:
    """Subcommand ``name`` from its module: HELP, DESCRIPTION, add_arguments, main."""
    p: argparse.ArgumentParser = sub.add_parser(name, help=module.HELP, description=module.DESCRIPTION,
                                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                                allow_abbrev=False)
    module.add_arguments(p)
    if name in GUARDED_COMMANDS:
        def handler(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
            return options.call_guarded(name, lambda: module.main(args))
    else:
        def handler(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
            return int(module.main(args, parser))
    p.set_defaults(handler=handler)
    return p


def build_parser() -> ZonelimitParser:
    """The whole parser, every subcommand with its options (so each ``--help`` lists them)."""
    top = ZonelimitParser(
        prog=PROG,
        description="zonelimit: a multi-process stress tester for per-CPU caching slab allocators\n"
                    "(FreeBSD UMA and mbufs, Dec 2005).  Without a command, `run` is meant.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    top.add_argument("--version", action="version", version=f"{PROG} {package_version()}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", parser_class=ZonelimitParser)
    modules = {**PARSER_COMMANDS, **GUARDED_COMMANDS}
    parsers = {name: _add_command(sub, name, modules[name]) for name in SUBCOMMANDS}
    top.epilog = (
        "commands: " + ", ".join(SUBCOMMANDS) + "; `zonelimit COMMAND --help` describes each.\n\n"
        "Options of run, the default command:\n\n" + parsers["run"].format_help()
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
    with stopping.command_signals() as stop:
        code = _main(argv, stop)
        if stop.requested and code not in (options.EX_USAGE,):
            return int(stop.exit_code or options.EX_SIGINT)
        return code


def _main(argv: Sequence[str] | None, stop: stopping.StopSignals) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    try:
        if stop.requested:
            print(f"{PROG}: stopped by {stop.name} during start-up; nothing was started", file=sys.stderr)
            return int(stop.exit_code or options.EX_SIGINT)
        if args_in and not args_in[0].startswith("-") and args_in[0] not in SUBCOMMANDS:
            # not an option, so not `run`'s: a mistyped command (`zonelimit reprot x`)
            build_parser().error(
                f"COMMAND: unknown command {args_in[0]!r}; allowed: {', '.join(SUBCOMMANDS)}"
                + options.did_you_mean(args_in[0], SUBCOMMANDS)
            )
        args_in = _with_command(args_in)
        parser = build_parser()
        args, extra = parser.parse_known_args(args_in)
        if extra:  # the command's parser says so, with its own options to suggest from
            _subparser(parser, args.command).error(f"unrecognized arguments: {' '.join(extra)}")
        if args.handler is None:
            parser.print_help()
            return options.EX_USAGE
        stop.check()  # a signal while the options were read: start nothing
        return int(args.handler(args, _subparser(parser, args.command)))
    except SystemExit as exc:  # argparse: --help, --version and usage errors end here
        code = exc.code
        if code is None:
            return options.EX_OK
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return options.EX_USAGE
    except KeyboardInterrupt:  # Ctrl-C, or stopping.Stopped (SIGINT or SIGTERM)
        print(f"{PROG}: stopped by {stop.name or 'SIGINT'}", file=sys.stderr)
        return int(stop.exit_code or options.EX_SIGINT)
    except BrokenPipeError:
        return options.stdout_closed()
    finally:
        release_all()  # every result folder this command claimed (stress/files.py)


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
