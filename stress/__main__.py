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
    code = main()
    # The command is over and its exit code is its last document's.  Python's own
    # finalization (atexit, joining threads, then _PySignal_Fini) puts the default action
    # back on every signal that had a Python handler, so a SIGINT or SIGTERM in the last
    # few hundred milliseconds of the process would kill it (-2, -15) after run.json said
    # 0: ignored handlers are left alone, so ignore them from here to the end.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(code)
