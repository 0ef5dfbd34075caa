"""structlog, configured once per process.

Every process writes JSON lines to its own file in the run directory; the orchestrator (and
the in-process runner) also log to stderr — rendered for people on a terminal, JSON otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Any, TextIO

import structlog

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_files: list[TextIO] = []


class _Tee:
    """A file-like logger target writing each line to several streams."""

    def __init__(self, streams: list[tuple[TextIO, bool]]):
        self.streams = streams

    def msg(self, message: str) -> None:
        for stream, _ in list(self.streams):
            try:
                stream.write(message + "\n")
                stream.flush()
            except (OSError, ValueError):  # a closed terminal must not stop the run
                self.streams.remove((stream, _))

    log = debug = info = warning = warn = error = critical = exception = msg


def configure_logging(
    region: str,
    log_file: Path | None = None,
    level: str = "info",
    console: bool = False,
    **bound: Any,
) -> structlog.stdlib.BoundLogger:
    """Configure structlog for this process and return a logger bound to ``region``.

    JSON lines go to ``log_file``; with ``console`` they also go to stderr: every line as
    JSON when stderr is not a terminal, only warnings and errors (rendered for people) when it
    is, so that they stay out of the live display's way.
    """
    for fh in _files:
        fh.close()
    _files.clear()
    streams: list[tuple[TextIO, bool]] = []
    if log_file is not None:
        fh = open(log_file, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the process
        _files.append(fh)
        streams.append((fh, False))
    pretty = console and sys.stderr.isatty()
    if console and not pretty:
        streams.append((sys.stderr, False))
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    json_renderer = structlog.processors.JSONRenderer()
    console_renderer = structlog.dev.ConsoleRenderer(colors=True) if pretty else None

    def render(logger: Any, name: str, event: dict[str, Any]) -> str:
        text = json_renderer(logger, name, dict(event))
        # on a terminal only warnings and errors: the live display shows the progress
        if console_renderer is not None and LEVELS.get(event.get("level", ""), 20) >= 30:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(console_renderer(logger, name, dict(event)) + "\n")
        return text

    structlog.configure(
        processors=[*processors, render],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level, logging.INFO)),
        logger_factory=lambda *args: _Tee(streams),
        cache_logger_on_first_use=False,
    )
    return structlog.get_logger().bind(region=region, **bound)
