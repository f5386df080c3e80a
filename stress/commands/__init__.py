"""The commands: one module each, the top layer (docs/architecture.md).

Each module has ``HELP`` (one line), ``DESCRIPTION`` (its --help text),
``add_arguments(parser)`` and ``main(args[, parser]) -> int``; stress/cli.py builds the
parser from them and dispatches.  A command turns its options into configurations
(value checks from stress.options), hands them to the engine, and prints what comes
back through stress.output; it is the only layer that prints for a person.
"""
