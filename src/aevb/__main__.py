"""``python -m aevb`` runs the command line."""

import sys

from aevb.cli import run

if __name__ == "__main__":
    sys.exit(run())
