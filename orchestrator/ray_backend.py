"""Regions as Ray actors (``--backend ray``; needs the ``ray`` extra).

Ray is the control plane: it places every region in a placement group (one bundle per region
with its CPU and, for a CUDA device, its fractional GPU), starts it as an actor, reports its
death, and ``ray.kill`` is a lesion. ZeroMQ stays the data path: tcp:// between the regions,
authenticated with the run's CURVE keys. The orchestrator (this process, the Ray driver) keeps
supervising exactly as with local processes: :class:`RayRegionProcess` looks like a
``multiprocessing.Process`` to it — ``start``, ``pid``, a ``sentinel`` file descriptor that
becomes readable when the region ends, ``exitcode``, ``join``, ``terminate``, ``kill``.

Endpoints: each region's bundle is on a known node; a short Ray task in that bundle picks a
free port on that node, so a region binds ``tcp://NODE_IP:PORT`` where it runs. On several
machines the run directory must be on a file system every node mounts (the regions write
their logs, metrics and checkpoints there, and read the run's keys from it).

Actors are owned by the driver: if the orchestrator dies, Ray ends them (that is their
orphan check); after a run no actor is left (:meth:`RayBackend.close` kills any survivor).
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, field
from typing import Any

PLACEMENT_TIMEOUT = 30.0  # seconds Ray gets to reserve every region's bundle


class RayBackendError(RuntimeError):
    """Ray is missing or refused what the run needs; the text says why."""


def _ray():
    try:
        import ray
    except ImportError:
        raise RayBackendError("--backend ray needs Ray: pip install -e '.[ray]'") from None
    return ray


def region_actor_class():
    """The actor every region runs in (defined lazily: importing Ray is slow)."""
    ray = _ray()

    @ray.remote(max_restarts=0, max_task_retries=0)
    class RegionActor:
        """One brain region: ``run`` is the region's whole life and returns its exit code."""

        def pid(self) -> int:
            return os.getpid()

        def run(self, *args: Any) -> int:
            from ccdni.base.region import region_run

            return region_run(*args, hosted=True)

    return RegionActor


def _free_port(host: str) -> int:
    from wire.transport import free_port

    return free_port(host)


@dataclass
class RayRegionProcess:
    """A region's actor seen through the interface the Supervisor uses for a process."""

    name: str
    actor: Any
    args: tuple
    pid: int | None = None
    exitcode: int | None = None
    _ref: Any = None
    _read_fd: int = -1
    _write_fd: int = -1
    _thread: threading.Thread | None = None
    _killed: bool = False
    death_cause: str | None = None  # why Ray says the actor died, when we did not kill it
    _done: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        ray = _ray()
        self.pid = int(ray.get(self.actor.pid.remote(), timeout=120))
        self._read_fd, self._write_fd = os.pipe()
        self._ref = self.actor.run.remote(*self.args)
        self._thread = threading.Thread(target=self._watch, name=f"ray-{self.name}", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        """Wait for the actor's ``run`` to end (returned, or the actor died); then make the
        sentinel readable."""
        ray = _ray()
        try:
            self.exitcode = int(ray.get(self._ref))
        except Exception as exc:  # RayActorError, ActorDiedError, WorkerCrashedError, ...
            self.exitcode = -9 if self._killed else None
            if not self._killed:
                self.death_cause = f"Ray reports the actor dead ({type(exc).__name__})"
        # the region has ended: its actor goes too, freeing the bundle for a revival
        with contextlib.suppress(Exception):
            ray.kill(self.actor, no_restart=True)
        self._done.set()
        with contextlib.suppress(OSError):
            os.write(self._write_fd, b"x")

    @property
    def sentinel(self) -> int:
        return self._read_fd

    def is_alive(self) -> bool:
        return self._ref is not None and not self._done.is_set()

    def join(self, timeout: float | None = None) -> None:
        self._done.wait(timeout)

    def kill(self) -> None:
        """A lesion: the actor is killed (no restart)."""
        self._killed = True
        with contextlib.suppress(Exception):
            _ray().kill(self.actor, no_restart=True)

    def terminate(self) -> None:
        """SIGTERM where the actor runs on this machine, else the same as kill."""
        import signal

        if self.pid is not None and _local(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
                return
        self.kill()

    def close(self) -> None:
        for fd in (self._read_fd, self._write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def _local(pid: int) -> bool:
    """Whether ``pid`` is a process of this machine that belongs to Ray's local workers."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


class RayBackend:
    """Starts a run's regions as Ray actors in one placement group."""

    def __init__(self, address: str = "", regions: int = 3, cpus_per_region: float = 1.0):
        ray = _ray()
        self.ray = ray
        self.started_ray = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address:
                kwargs["address"] = address
            else:
                # a local Ray: one logical CPU per region even on a small machine (a region
                # uses one intra-op thread and mostly waits on its peers, as local processes)
                kwargs["num_cpus"] = max(os.cpu_count() or 1, int(regions * cpus_per_region))
            try:
                ray.init(**kwargs)
            except Exception as exc:  # ConnectionError, RuntimeError, ValueError, ...
                where = f"the Ray cluster at {address}" if address else "a local Ray"
                raise RayBackendError(f"cannot start {where}: {exc}") from None
            self.started_ray = True
        self.cpus_per_region = cpus_per_region
        self.group: Any = None
        self.bundles: dict[str, int] = {}
        self.processes: list[RayRegionProcess] = []

    def place(self, regions: dict[str, str]) -> dict[str, str]:
        """Reserve a bundle per region (``regions``: name → torch device) and return each
        region's node IP address."""
        from ray.util.placement_group import placement_group, placement_group_table

        names = list(regions)
        bundles = []
        for name in names:
            bundle: dict[str, float] = {"CPU": self.cpus_per_region}
            if regions[name].startswith("cuda"):
                bundle["GPU"] = 0.25  # fractional: several regions may share one GPU
            bundles.append(bundle)
        self.group = placement_group(bundles, strategy="PACK")
        try:
            self.ray.get(self.group.ready(), timeout=PLACEMENT_TIMEOUT)
        except Exception as exc:
            total = self.ray.cluster_resources()
            raise RayBackendError(
                f"Ray could not reserve {len(bundles)} bundles {bundles[0]} for the run's "
                f"regions within {PLACEMENT_TIMEOUT:g} s (cluster resources: {total}): "
                f"{type(exc).__name__}"
            ) from None
        table = placement_group_table(self.group)
        nodes = {n["NodeID"]: n["NodeManagerAddress"] for n in self.ray.nodes() if n["Alive"]}
        self.bundles = {name: i for i, name in enumerate(names)}
        return {name: nodes[table["bundles_to_node_id"][i]] for i, name in enumerate(names)}

    def driver_address(self) -> str:
        """This process's (the orchestrator's) address as the cluster sees it."""
        return str(self.ray.util.get_node_ip_address())

    def _strategy(self, name: str):
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        return PlacementGroupSchedulingStrategy(
            placement_group=self.group, placement_group_bundle_index=self.bundles[name]
        )

    def free_port(self, name: str, host: str) -> int:
        """A free port on the node of ``name``'s bundle (a short task run there)."""
        task = self.ray.remote(num_cpus=0)(_free_port)
        return int(
            self.ray.get(task.options(scheduling_strategy=self._strategy(name)).remote(host))
        )

    def process(self, name: str, device: str, args: tuple) -> RayRegionProcess:
        """A not-yet-started region actor in ``name``'s bundle."""
        options: dict[str, Any] = {
            "num_cpus": self.cpus_per_region,
            "scheduling_strategy": self._strategy(name),
        }
        if device.startswith("cuda"):
            options["num_gpus"] = 0.25
        actor = region_actor_class().options(**options).remote()
        process = RayRegionProcess(name, actor, args)
        self.processes.append(process)
        return process

    def close(self) -> None:
        """Kill every actor left, free the placement group, and stop a Ray we started."""
        for process in self.processes:
            if process.is_alive():
                process.kill()
                process.join(5.0)
            process.close()
        self.processes.clear()
        if self.group is not None:
            from ray.util.placement_group import remove_placement_group

            with contextlib.suppress(Exception):
                remove_placement_group(self.group)
            self.group = None
        if self.started_ray:
            self.ray.shutdown()
            self.started_ray = False
