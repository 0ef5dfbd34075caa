"""Checkpoints: one atomic writer and one verifying reader for every region.

A checkpoint file is a torch file holding a small envelope::

    {"format": 1, "region": "area0", "epoch": 12, "spec_digest": "…", "sha256": "…",
     "payload": uint8 tensor}

``payload`` is the region's state (weights, optimiser, RNG states, counters) serialised by
``torch.save``; ``sha256`` is its checksum. Both the envelope and the payload are read with
``torch.load(..., weights_only=True)``: only tensors, numbers, strings and containers of them
can be restored, never an arbitrary object — whoever can write a run directory cannot make a
region run code. A file cut short, altered, written by something else or for another run's
spec is refused with :class:`CheckpointError`, whose text names the file and the problem.

Writes go to ``NAME.tmp`` and are renamed over ``NAME``: a kill during the write leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from ccdni.base.spec import RunSpec

FORMAT = 1
ZIP_MAGIC = b"PK\x03\x04"  # what every torch.save file starts with
# fields that may differ between the run that wrote a checkpoint and the one resuming from it:
# how long to train, where the regions run, where files go, what is shown
RESUMABLE_FIELDS = frozenset(
    {
        "epochs",
        "device",
        "area_devices",
        "pin_cores",
        "threads",
        "transport",
        "tcp_host",
        "insecure_tcp",
        "backend",
        "ray_address",
        "runs_dir",
        "run_name",
        "data_dir",
        "download",
        "figures",
        "progress",
        "log_level",
    }
)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the text names the file and what is wrong."""


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint: who wrote it, after which epoch, for which spec, and its state."""

    path: Path
    region: str
    epoch: int
    spec_digest: str
    state: dict[str, Any]


def spec_digest(spec: RunSpec | None) -> str:
    """A short digest of everything in the spec that determines the numbers (not ``epochs``:
    a run may be resumed to train for longer)."""
    if spec is None:
        return ""
    fields = {k: v for k, v in sorted(spec.to_dict().items()) if k not in RESUMABLE_FIELDS}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def save_checkpoint(
    path: Path, state: dict[str, Any], region: str, epoch: int, spec: RunSpec | None = None
) -> None:
    """Write ``state`` (tensors, numbers, strings and containers only) atomically to ``path``."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    envelope = {
        "format": FORMAT,
        "region": region,
        "epoch": int(epoch),
        "spec_digest": spec_digest(spec),
        "sha256": hashlib.sha256(payload).hexdigest(),
        "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(envelope, tmp)
    os.replace(tmp, path)


def _load(source: Any, path: Path, what: str) -> Any:
    head = source.getvalue()[:4] if isinstance(source, io.BytesIO) else _head(path)
    if head != ZIP_MAGIC:  # torch files are zip archives; anything else is not ours
        raise CheckpointError(
            f"{path}: {what} is damaged or not a ccdni checkpoint (not a torch file)"
        )
    try:
        return torch.load(source, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: {what} holds objects that need pickle to load; refused (loading them "
            f"could run code): {str(exc).splitlines()[0]}"
        ) from None
    except Exception as exc:  # zip and storage errors come in many types
        raise CheckpointError(
            f"{path}: {what} is damaged or not a ccdni checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'unreadable'})"
        ) from None


def _head(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(4)


def load_checkpoint(
    path: Path, region: str | None = None, spec: RunSpec | None = None
) -> Checkpoint:
    """Read and verify ``path``; raise :class:`CheckpointError` naming the file if it is missing,
    damaged, altered, not a ccdni checkpoint, another region's, or written for another spec."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint does not exist")
    envelope = _load(path, path, "the file")
    if not isinstance(envelope, dict) or envelope.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a ccdni checkpoint (format {FORMAT} expected)")
    payload = envelope.get("payload")
    if not isinstance(payload, torch.Tensor) or payload.dtype != torch.uint8:
        raise CheckpointError(f"{path}: not a ccdni checkpoint (no payload)")
    data = payload.numpy().tobytes()
    if hashlib.sha256(data).hexdigest() != envelope.get("sha256"):
        raise CheckpointError(f"{path}: checksum mismatch (the file was altered or damaged)")
    if region is not None and envelope.get("region") != region:
        raise CheckpointError(
            f"{path}: written by region {envelope.get('region')!r}, not {region!r}"
        )
    if spec is not None and envelope.get("spec_digest") != spec_digest(spec):
        raise CheckpointError(
            f"{path}: written for another spec (its digest {envelope.get('spec_digest')!r} "
            f"differs from this run's {spec_digest(spec)!r})"
        )
    state = _load(io.BytesIO(data), path, "the state")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: the state is not a mapping")
    return Checkpoint(
        path, str(envelope["region"]), int(envelope["epoch"]), str(envelope["spec_digest"]), state
    )
