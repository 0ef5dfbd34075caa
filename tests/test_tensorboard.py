"""--tensorboard: every region's epoch metrics become namespaced scalars of the run."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccdni.base.spec import load_spec
from orchestrator.runner import execute_run

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="the tensorboard extra is not installed (pip install -e '.[tensorboard]')",
)


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of the event files in ``folder``: [(step, value), ...]."""
    accumulator = event_accumulator.EventAccumulator(str(folder))
    accumulator.Reload()
    return {
        tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


def test_event_files_hold_every_regions_metrics(tmp_path: Path) -> None:
    """Through the processes, the run's event files hold area0/, olive/ and cerebellum/ tags at
    each epoch, with the same values as metrics.jsonl."""
    spec = load_spec(
        epochs=4, tensorboard=True, runs_dir=str(tmp_path), run_name="tb", figures=False,
        progress=False,
    )  # fmt: skip
    outcome = execute_run(spec, console=False)
    assert outcome.summary["status"] == "completed"
    tags = scalars(outcome.run.path / "tensorboard")
    for tag in ("area0/train_loss", "area0/val_mse", "olive/cerebellar_loss"):
        assert [step for step, _ in tags[tag]] == [0, 1, 2, 3], tag
    assert any(tag.startswith("cerebellum/") for tag in tags)
    area = [r for r in outcome.run.metrics("area0") if "epoch" in r]
    assert [v for _, v in tags["area0/val_mse"]] == pytest.approx([r["val_mse"] for r in area])
