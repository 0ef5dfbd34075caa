"""The paper's update rule: parameters move only where a real or synthetic gradient exists.

A zero gradient is not an absent gradient: Adam steps on a zero gradient through its moments.
These tests pin down which optimiser steps happen (per truncation, per sequence, per chain
batch), the ``step_without_feedback`` option that restores the old behaviour, and the
``zero-dni`` control through the processes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import assert_no_process_left, assert_same_losses, per_epoch

from areas.chain import ChainArea
from areas.cortex import AreaCore
from ccdni.base.spec import load_spec
from ccdni.tasks import build_task
from cerebellum.synthesiser import CerebellumCore
from orchestrator.runner import execute_run


def adam_steps(core: AreaCore) -> dict[str, int]:
    """Adam's per-parameter step count of the area (0 for a parameter never stepped)."""
    state = core.learner.optimiser.state
    return {
        name: int(state[p]["step"]) if p in state else 0 for name, p in core.area.named_parameters()
    }


@pytest.mark.parametrize(
    ("model", "truncation", "update", "lstm_steps", "readout_steps"),
    [
        ("lstm", 2, "truncation", 1, 1),  # only the last truncation is scored
        ("cc-dni", 2, "truncation", 5, 1),  # ĝ at every boundary: a step per truncation
        ("zero-dni", 2, "truncation", 5, 1),  # ĝ = 0 is still an available gradient
        ("lstm", 3, "truncation", 1, 1),
        ("cc-dni", 3, "truncation", 4, 1),
        ("lstm", 2, "sequence", 1, 1),  # once per sequence whatever the model
        ("cc-dni", 2, "sequence", 1, 1),
    ],
)
def test_optimiser_steps_only_where_a_gradient_exists(
    model: str, truncation: int, update: str, lstm_steps: int, readout_steps: int
) -> None:
    """Per sequence, the LSTM weights are stepped once per truncation that has a loss or a
    prediction, and the readout only when a loss reached it."""
    spec = load_spec(model=model, truncation=truncation, update=update, epochs=3)
    core = AreaCore(spec, build_task(spec))
    cerebellum = CerebellumCore(spec, ["area0"]) if spec.uses_cerebellum else None

    class Link:
        def predict(self, efference):
            return cerebellum.predict("area0", efference.ids, efference.state)

        def send_target(self, target):
            return False

    for epoch in range(3):
        metrics = core.run_epoch(Link() if cerebellum is not None else None)
        assert metrics["optimiser_steps"] == lstm_steps
        steps = adam_steps(core)
        assert steps["lstm.weight_hh_l0"] == lstm_steps * (epoch + 1)
        assert steps["readout.weight"] == readout_steps * (epoch + 1)


def test_step_without_feedback_restores_the_old_behaviour() -> None:
    """With ``step_without_feedback`` the T=2 LSTM steps at every truncation (on zero gradients
    of the unscored ones) and, on momentum alone, learns what no gradient links (val MSE ≈ 52,
    as every result of earlier versions did); without it, once per sequence, and it stays
    near the static model's 85.7."""
    results = {}
    for legacy in (False, True):
        spec = load_spec(model="lstm", truncation=2, epochs=300, step_without_feedback=legacy)
        core = AreaCore(spec, build_task(spec))
        records = [core.run_epoch(None) for _ in range(spec.epochs)]
        assert {r["optimiser_steps"] for r in records} == {5 if legacy else 1}
        results[legacy] = records[-1]["val_mse"]
        steps = adam_steps(core)
        assert steps["readout.weight"] == (5 if legacy else 1) * spec.epochs
    assert results[False] > 80.0 and results[True] < 70.0, results


def test_chain_area_without_feedback_leaves_its_optimiser_alone() -> None:
    """A chain area that gets no feedback for a batch drops it without an optimiser step;
    with ``step_without_feedback`` it steps on a zero gradient and its weights move."""
    for legacy in (False, True):
        spec = load_spec(
            topology="chain", chain_mode="backward-unlocked", chain_width=16,
            step_without_feedback=legacy,
        )  # fmt: skip
        area = ChainArea(spec, 0)
        generator = torch.Generator().manual_seed(0)
        area.forward(torch.randn(8, 28 * 28, generator=generator))
        area.backward(torch.randn(8, 16, generator=generator))  # one real ĝ_0: Adam has moments
        weight = area.block.linear.weight
        before = weight.detach().clone()
        for _ in range(2):
            area.forward(torch.randn(8, 28 * 28, generator=generator))  # then no ĝ_0 comes
            area.discard()
        steps = int(area.optimiser.state[weight]["step"])
        moved = not torch.equal(before, weight)
        if legacy:
            assert steps == 3 and moved, "stepped on zero gradients, moved on momentum"
        else:
            assert steps == 1 and not moved


def test_zero_dni_through_the_processes(tmp_path: Path) -> None:
    """zero-dni through the processes: the cerebellum's weights never change, every prediction
    is exactly zero, and under lockstep the run equals its in-process run (1e-6)."""
    common = dict(
        model="zero-dni",
        epochs=6,
        seed=2,
        timing="lockstep",
        runs_dir=str(tmp_path),
        figures=False,
        progress=False,
    )
    reference = execute_run(load_spec(inprocess=True, run_name="ref", **common), console=False)
    processes = execute_run(load_spec(inprocess=False, run_name="proc", **common), console=False)
    assert processes.summary["status"] == "completed", processes.summary["reason"]
    assert_same_losses(reference.run.path, processes.run.path)
    epochs = per_epoch(processes.run.path)
    area = [r for (region, _), r in sorted(epochs.items()) if region == "area0"]
    assert all(r["predictions"] == 4 and r["prediction_abs_max"] == 0.0 for r in area)
    assert all(r["optimiser_steps"] == 5 for r in area)  # a step per truncation all the same
    cerebellum = [r for (region, _), r in epochs.items() if region == "cerebellum"]
    initial = CerebellumCore(load_spec(**common), ["area0"]).fingerprint()
    assert len(cerebellum) >= 5
    assert {r["weight_fingerprint"] for r in cerebellum} == {initial}
    assert sum(r["errors_applied"] for r in cerebellum) > 0  # the olive did teach it
    assert_no_process_left(processes.run.path)
