"""Checkpoints: atomic, checksummed, and loaded without pickle."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import torch

from ccdni.base.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ccdni.base.spec import load_spec


class Payload:
    """An object whose unpickling would run code (it creates a file)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def state() -> dict:
    generator = torch.Generator().manual_seed(3)
    return {
        "weights": {"w": torch.randn(4, 3, generator=generator)},
        "rng": generator.get_state(),
        "epoch": 7,
        "last_metric": {"train_loss": 0.5, "alive": True},
    }


def test_round_trip_keeps_every_value(tmp_path: Path) -> None:
    """A saved state comes back equal, with its region, epoch and no temporary file left."""
    spec = load_spec(seed=4)
    path = tmp_path / "area0.pt"
    original = state()
    save_checkpoint(path, original, "area0", 7, spec)
    loaded = load_checkpoint(path, "area0", spec)
    assert (loaded.region, loaded.epoch) == ("area0", 7)
    assert torch.equal(loaded.state["weights"]["w"], original["weights"]["w"])
    assert torch.equal(loaded.state["rng"], original["rng"])
    assert loaded.state["last_metric"] == original["last_metric"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["area0.pt"]
    # a run resumed for more epochs, elsewhere, is the same spec
    assert load_checkpoint(path, "area0", spec.replace(epochs=900, device="cuda:1")).epoch == 7


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda b: b[: len(b) // 2], "damaged or not a ccdni checkpoint"),
        (lambda b: b"", "damaged or not a ccdni checkpoint"),
        (lambda b: b"not a torch file at all", "damaged or not a ccdni checkpoint"),
    ],
)
def test_damaged_files_are_refused_by_name(tmp_path: Path, damage, reason: str) -> None:
    """A truncated, empty or foreign file is one error naming the file and the problem."""
    path = tmp_path / "cerebellum.pt"
    save_checkpoint(path, state(), "cerebellum", 2)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError, match=reason) as caught:
        load_checkpoint(path, "cerebellum")
    assert str(path) in str(caught.value)


def test_altered_payload_fails_the_checksum(tmp_path: Path) -> None:
    """A checkpoint whose state was changed after it was written is refused (checksum)."""
    path = tmp_path / "area0.pt"
    save_checkpoint(path, state(), "area0", 1)
    envelope = torch.load(path, weights_only=True)
    envelope["payload"][-20] ^= 0xFF  # flip bits inside the serialised state
    torch.save(envelope, path)
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(path, "area0")


def test_checkpoint_crafted_to_run_code_is_refused(tmp_path: Path) -> None:
    """A file holding a pickled object that would run code on load is refused, and the code
    does not run — both as the envelope and as the (checksummed) state inside it."""
    marker = tmp_path / "pwned"
    outer = tmp_path / "outer.pt"
    torch.save({"format": 1, "evil": Payload(marker)}, outer)
    with pytest.raises(CheckpointError, match="need pickle"):
        load_checkpoint(outer)
    inner = tmp_path / "inner.pt"
    save_checkpoint(inner, state(), "area0", 1)
    buffer = io.BytesIO()
    torch.save({"epoch": 1, "evil": Payload(marker)}, buffer)
    envelope = torch.load(inner, weights_only=True)
    payload = buffer.getvalue()
    envelope["payload"] = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
    import hashlib

    envelope["sha256"] = hashlib.sha256(payload).hexdigest()  # a forger can fix the checksum
    torch.save(envelope, inner)
    with pytest.raises(CheckpointError, match="need pickle"):
        load_checkpoint(inner)
    assert not marker.exists(), "the crafted object's code ran"


def test_another_regions_or_specs_checkpoint_is_refused(tmp_path: Path) -> None:
    """A checkpoint of another region, or written for another spec (seed), is refused."""
    path = tmp_path / "area0.pt"
    save_checkpoint(path, state(), "area0", 3, load_spec(seed=0))
    with pytest.raises(CheckpointError, match="not 'cerebellum'"):
        load_checkpoint(path, "cerebellum")
    with pytest.raises(CheckpointError, match="another spec"):
        load_checkpoint(path, "area0", load_spec(seed=1))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
