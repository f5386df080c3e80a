"""``python -m stress``: the command line of zonelimit (thin; everything is in stress.cli).

The first thing it does, before importing the tester (numpy, matplotlib: a few hundred
milliseconds), is to record SIGINT and SIGTERM instead of dying on them: a signal during
start-up is handed to the command's stop mechanism (stress.engine.stopping), which ends
the command before anything starts, with exit 130 or 143 and no traceback.
"""

import signal
import sys

_early: list[str] = []


def _record(signum: int, frame: object) -> None:
    _early.append(signal.Signals(signum).name)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, _record)
    signal.signal(signal.SIGTERM, _record)
    from stress.cli import main
    from stress.engine.stopping import early_signals

    early_signals(_early)
    sys.exit(main())
