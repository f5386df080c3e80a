"""``python -m stress``: the command line of zonelimit (thin; everything is in stress.cli)."""

import sys

from stress.cli import main

if __name__ == "__main__":
    sys.exit(main())
