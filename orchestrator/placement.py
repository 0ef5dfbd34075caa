"""Where each region process runs: its torch device and, optionally, the CPU cores it may use.

Derived once, by the orchestrator at launch, from the spec (``device``, ``area_devices``,
``pin_cores``) and the machine (the cores this process may use, the visible CUDA devices):

- **devices**: every region gets ``spec.device``; with ``area_devices = "cuda:0,cuda:1"`` the
  area processes get those devices round-robin (area k → entry k mod n) and the cerebellum and
  olive keep ``spec.device``. More areas than GPUs means areas share a GPU, whose kernels are
  then *time-sliced* (no two contexts run at once on one GPU without MPS): the plan says so.
- **cores** (``pin_cores``): area k is pinned to core k mod C of the C cores available
  (``os.sched_getaffinity``); the cerebellum and olive share the cores left over, or float over
  every core when none are left. More areas than cores means areas share cores: the plan says so.

Each region applies its own placement as its first act (:func:`ccdni.base.region.apply_placement`), so the
orchestrator's own affinity is untouched.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from ccdni.base.spec import RunSpec, SpecError

_DEVICE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")


@dataclass(frozen=True)
class Placement:
    """One region's device and CPU cores (``None``: every core, no pinning)."""

    device: str
    cores: tuple[int, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "cores": list(self.cores) if self.cores else None}


@dataclass(frozen=True)
class PlacementPlan:
    """Every region's placement and the notes a user should read (sharing, time-slicing)."""

    regions: dict[str, Placement]
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "regions": {name: p.to_dict() for name, p in self.regions.items()},
            "notes": list(self.notes),
        }

    def describe(self) -> str:
        """One line per region, then the notes (for benchmark output and logs)."""
        lines = []
        for name, p in self.regions.items():
            cores = "any core" if p.cores is None else "core " + ",".join(map(str, p.cores))
            lines.append(f"{name}: {p.device}, {cores}")
        return "; ".join(lines) + "".join(f"\nnote: {n}" for n in self.notes)


def region_names(spec: RunSpec) -> tuple[str, ...]:
    """The processes of a run: its areas, and the cerebellum and olive when it uses them."""
    return (*spec.area_names, *(("cerebellum", "olive") if spec.uses_cerebellum else ()))


def available_cores() -> tuple[int, ...]:
    """The CPU cores this process may run on (all of them where affinity is unsupported)."""
    if hasattr(os, "sched_getaffinity"):
        return tuple(sorted(os.sched_getaffinity(0)))
    return tuple(range(os.cpu_count() or 1))


def cuda_device_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def parse_devices(text: str) -> tuple[str, ...]:
    """``'cuda:0, cuda:1'`` → ``('cuda:0', 'cuda:1')``; a malformed entry is a SpecError."""
    devices = tuple(d.strip() for d in text.split(",") if d.strip())
    for device in devices:
        if not _DEVICE.match(device):
            raise SpecError(f"area_devices: {device!r} is not a torch device (cpu, cuda, cuda:N)")
    return devices


def check_device(device: str, n_cuda: int, what: str) -> None:
    """A CUDA device this machine does not have is an error naming it."""
    if not device.startswith("cuda"):
        return
    if n_cuda == 0:
        raise SpecError(f"{what} is {device!r} but this machine has no CUDA device")
    index = int(device.partition(":")[2] or 0)
    if index >= n_cuda:
        raise SpecError(f"{what} is {device!r} but this machine has {n_cuda} CUDA device(s)")


def plan_placement(
    spec: RunSpec,
    regions: list[str],
    cores: tuple[int, ...] | None = None,
    n_cuda: int | None = None,
) -> PlacementPlan:
    """The placement of ``regions`` (area names and any of 'cerebellum', 'olive')."""
    cores = available_cores() if cores is None else cores
    areas = [r for r in regions if r.startswith("area")]
    others = [r for r in regions if not r.startswith("area")]
    area_devices = parse_devices(spec.area_devices) or (spec.device,)
    needs_cuda = any(d.startswith("cuda") for d in (*area_devices, spec.device))
    n_cuda = (cuda_device_count() if needs_cuda else 0) if n_cuda is None else n_cuda
    check_device(spec.device, n_cuda, "device")
    for device in area_devices:
        check_device(device, n_cuda, "area_devices")
    notes: list[str] = []
    placements: dict[str, Placement] = {}

    area_cores: dict[str, tuple[int, ...] | None] = {a: None for a in areas}
    other_cores: tuple[int, ...] | None = None
    if spec.pin_cores and cores:
        for k, name in enumerate(areas):
            area_cores[name] = (cores[k % len(cores)],)
        left = cores[len(areas) :]
        other_cores = tuple(left) if left else None
        if len(areas) > len(cores):
            notes.append(
                f"{len(areas)} areas on {len(cores)} cores: areas share cores "
                "(their steps are time-shared, not parallel)"
            )
        if others and other_cores is None:
            notes.append(
                f"{', '.join(others)} float over all {len(cores)} cores (none left after "
                "pinning the areas): they compete with the areas"
            )
    elif len(areas) + len(others) > len(cores):
        notes.append(f"{len(areas) + len(others)} processes share {len(cores)} cores (not pinned)")

    for k, name in enumerate(areas):
        placements[name] = Placement(area_devices[k % len(area_devices)], area_cores[name])
    for name in others:
        placements[name] = Placement(spec.device, other_cores)

    by_gpu: dict[str, list[str]] = {}
    for name, p in placements.items():
        if p.device.startswith("cuda"):
            by_gpu.setdefault(_canonical(p.device), []).append(name)
    for gpu, names in by_gpu.items():
        if len(names) > 1:
            notes.append(
                f"{', '.join(names)} share {gpu}: the kernels of one GPU are time-sliced "
                "between processes (no concurrent execution without MPS)"
            )
    return PlacementPlan(placements, tuple(notes))


def _canonical(device: str) -> str:
    return device if ":" in device else "cuda:0"
