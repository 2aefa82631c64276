"""``python -m aevb`` runs the command line."""

import sys

from aevb.cli import main

if __name__ == "__main__":
    sys.exit(main())
