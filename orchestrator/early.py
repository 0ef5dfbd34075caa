"""What ``launch.py`` does before its heavy imports: start the region template.

A run through the processes forks its regions from the region template (a ``forkserver`` that
imports torch and the region shells once, :mod:`ccdni.base.template`). Started first thing,
the template's imports run beside the command's own instead of after them. This module imports
only the standard library and :mod:`ccdni.base.template` (itself standard library only).
"""

from __future__ import annotations

from collections.abc import Sequence

from ccdni.base.template import start_template

TEMPLATE_EXTRA = ("orchestrator.cli",)  # launch.py's one import: a region runs it again
# flags after which no region is forked from the template (in-process, help, Ray actors)
NO_TEMPLATE_FLAGS = frozenset({"--inprocess", "-h", "--help", "--backend"})


def wants_template(argv: Sequence[str]) -> bool:
    """Whether ``launch.py ARGV`` starts a run through local processes: the default command
    (no sub-command, or ``run``) or ``resume``, without a flag that rules processes out."""
    if argv and not argv[0].startswith("-") and argv[0] not in ("run", "resume"):
        return False  # status, ablate, sweep, bench, ...: no regions of their own
    return not any(arg.split("=", 1)[0] in NO_TEMPLATE_FLAGS for arg in argv)


def start_template_early(argv: Sequence[str]) -> bool:
    """Start the region template now if ``argv`` is a run through local processes."""
    if not wants_template(argv):
        return False
    try:
        return start_template(TEMPLATE_EXTRA)
    except OSError:  # no forkserver here: the launcher falls back when it starts regions
        return False
