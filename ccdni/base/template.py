"""The region template: one process that imports what every region imports, then forks them.

Starting a region from a fresh interpreter costs the import of torch, of ``torch._dynamo``
(which the first ``torch.optim.Adam`` pulls in: ~900 modules) and of the shells — seconds
per region, paid by every region at once on a shared machine. Instead the orchestrator starts
one ``multiprocessing`` *forkserver* that has imported :data:`PRELOAD` and forks each region
from it: every region is still its own process with its own pid, but it starts with
everything imported.

A forked region first calls :func:`leave_template` (in ``ccdni.base.region.region_main``): it
takes the orchestrator's environment and stdio as they were when it was started, drops the
template's liveness pipe (otherwise every region would keep the template alive), and gets the
orchestrator's *lifeline*, a pipe end that reads EOF the moment the orchestrator dies, which
:func:`watch_lifeline` turns into the kernel's orphan signal. The template itself exits when
the orchestrator does.

This module imports only the standard library, so that a command can start the template
first thing (:func:`start_template`), letting its imports run beside the command's own.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
from collections.abc import Sequence
from typing import Any

TEMPLATE = "template"  # options["started_by"] of a region forked by the template
ORPHAN_SIGNAL = signal.SIGUSR1  # what ccdni.base.region treats as the orchestrator's death
START_METHODS = ("forkserver", "spawn")  # CCDNI_START_METHOD; forkserver where the OS has it
# What the template imports, in order: the heaviest first. The shells' modules are those of
# ccdni.base.region.SHELLS (a test keeps the two in step).
PRELOAD = (
    "torch",
    "torch._dynamo",
    "torch.optim",
    "numpy",
    "zmq",
    "msgpack",
    "structlog",
    "ccdni.base.checkpoint",
    "ccdni.base.region",
    "ccdni.tasks",
    "areas.process",
    "areas.chain_process",
    "cerebellum.process",
    "olive.process",
)


def start_method() -> str:
    """``forkserver`` (regions forked from the template) unless ``CCDNI_START_METHOD=spawn``
    or the OS has no forkserver."""
    method = os.environ.get("CCDNI_START_METHOD", "forkserver")
    if method not in START_METHODS or method not in multiprocessing.get_all_start_methods():
        return "spawn"
    return method


def template_context(extra: Sequence[str] = ()) -> Any:
    """The multiprocessing context regions start from: the template's (which imports
    :data:`PRELOAD` and ``extra``: e.g. the main module's own imports, which a region runs
    again as ``spawn`` would) or plain ``spawn``."""
    method = start_method()
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload(["__main__", *PRELOAD, *extra])
    return context


def start_template(extra: Sequence[str] = ()) -> bool:
    """Start the template now if regions start from one (idempotent), so that its imports
    overlap whatever this process does before its first run launches; True if it runs.
    ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` default to 1 for its imports (no BLAS
    threads in the template; each region sets its own thread count)."""
    if template_context(extra).get_start_method() != "forkserver":
        return False
    from multiprocessing import forkserver

    saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    for key, value in saved.items():
        if value is None:
            os.environ[key] = "1"
    try:
        forkserver.ensure_running()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
    return True


class ChildFd:
    """One of this process's file descriptors, handed to a child as the child is started:
    pickled only inside ``Process.start()``, where multiprocessing passes the descriptor
    itself along (no resource-sharer thread). In the child, ``detach()`` gives the fd."""

    def __init__(self, fd: int):
        self.fd = fd

    def __reduce__(self) -> Any:
        from multiprocessing.reduction import DupFd

        return (_passed_fd, (DupFd(self.fd),))


def _passed_fd(handle: Any) -> Any:
    return handle


def stdio_for_child() -> tuple[ChildFd | None, ...]:
    """This process's stdout and stderr as they are now, for a region the template forks
    (which would otherwise write where the orchestrator's were when the template started)."""
    handles: list[ChildFd | None] = []
    for fd in (1, 2):
        try:
            os.fstat(fd)
        except OSError:
            handles.append(None)
            continue
        handles.append(ChildFd(fd))
    return tuple(handles)


def child_options(lifeline: int) -> dict[str, Any]:
    """What a region forked by the template needs from the orchestrator (this process): its
    environment and stdio now, and the read end of its lifeline pipe."""
    return {
        "started_by": TEMPLATE,
        "environ": dict(os.environ),
        "stdio": stdio_for_child(),
        "lifeline": ChildFd(lifeline),
    }


class OrchestratorGone(Exception):
    """The orchestrator died before this region could start."""


def leave_template(options: dict[str, Any], parent_pid: int) -> tuple[int, int | None]:
    """First thing in a region forked by the template: take the environment and the stdout /
    stderr the orchestrator had when it started this region (the template's are those of its
    own start), let go of the template's liveness pipe (held by every child it forks, it
    would keep the template alive after the orchestrator's death), and return the pid to
    watch — the template, which exits after the orchestrator, once its interpreter has torn
    down (seconds) — and the orchestrator's lifeline: a pipe end that reads EOF the moment
    the orchestrator dies. Raises :class:`OrchestratorGone` if it is already gone."""
    environ = options.get("environ")
    if environ is not None:
        os.environ.clear()
        os.environ.update(environ)
    for target, handle in zip((1, 2), options.get("stdio") or ()):
        if handle is not None:  # the orchestrator's fd, passed along by multiprocessing
            with contextlib.suppress(OSError):
                fd = handle.detach()
                os.dup2(fd, target)
                os.close(fd)
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    alive = getattr(server, "_forkserver_alive_fd", None)
    if alive is not None:
        with contextlib.suppress(OSError):
            os.close(alive)
        server._forkserver_alive_fd = None  # type: ignore[union-attr]
    lifeline = None
    handle = options.get("lifeline")
    if handle is not None:
        with contextlib.suppress(OSError):
            lifeline = handle.detach()
    try:
        os.kill(parent_pid, 0)
    except ProcessLookupError:
        raise OrchestratorGone() from None
    except PermissionError:
        pass
    return os.getppid(), lifeline


def watch_lifeline(fd: int) -> None:
    """A daemon thread blocked reading the orchestrator's lifeline: at EOF (the orchestrator
    died, however) it sends this process :data:`ORPHAN_SIGNAL`, the kernel's own notice of an
    orphan, so the region takes the orphan's way out at once."""

    def wait() -> None:
        with contextlib.suppress(OSError):
            while os.read(fd, 1):
                pass
        os.kill(os.getpid(), ORPHAN_SIGNAL)

    threading.Thread(target=wait, name="ccdni-lifeline", daemon=True).start()
