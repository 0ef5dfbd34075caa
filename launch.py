"""ccdni's command line. ``python launch.py`` runs the default experiment; see ``--help``."""

import sys

if __name__ == "__main__":
    from orchestrator.early import start_template_early

    # before the heavy imports below: the region template (a forkserver that imports torch
    # and the region shells once) then imports beside this process's own imports
    start_template_early(sys.argv[1:])

from orchestrator.cli import main

if __name__ == "__main__":
    sys.exit(main())
