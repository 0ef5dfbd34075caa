"""ccdni's command line. ``python launch.py`` runs the default experiment; see ``--help``."""

import sys

from orchestrator.cli import main

if __name__ == "__main__":
    sys.exit(main())
