"""Chains of feed-forward areas (spatial DNI): locked = true backprop; unlocked learns; the
decoupling benchmark prints all its fields."""

from __future__ import annotations

import torch
from conftest import assert_no_process_left

from areas.chain import ChainArea, batch_order, chain_data, flat_images, train_chain_inprocess
from benchmarks import decoupling
from orchestrator.launcher import Supervisor
from orchestrator.logs import configure_logging
from orchestrator.progress import Progress
from orchestrator.rundir import RunDirectory
from orchestrator.spec import load_spec

STEPS = 3


def chain_spec(tmp_path, **changes):
    values = dict(
        topology="chain",
        chain_areas=2,
        chain_width=32,
        train_subset=STEPS * 50,
        val_subset=100,
        batch_size=50,
        epochs=1,
        runs_dir=str(tmp_path),
        figures=False,
        progress=False,
    )
    values.update(changes)
    return load_spec(**values)


def assert_same_blocks(got: list[dict], want: list[dict], tol: float = 1e-5) -> None:
    assert len(got) == len(want)
    for block_got, block_want in zip(got, want):
        assert block_got.keys() == block_want.keys()
        for key, value in block_want.items():
            torch.testing.assert_close(block_got[key], value, rtol=tol, atol=tol, msg=key)


def test_locked_cores_match_true_backprop(tmp_path):
    spec = chain_spec(tmp_path, chain_areas=3)
    data = chain_data(spec)
    reference = train_chain_inprocess(spec, data, steps=STEPS)
    areas = [ChainArea(spec, k) for k in range(3)]
    images = flat_images(data.train_images)
    order = batch_order(spec, images.shape[0])
    for _ in range(STEPS):
        idx = next(order)
        h = images[idx]
        for area in areas:
            h = area.forward(h)
        _, grad = areas[-1].loss_backward(data.train_labels[idx])
        for area in reversed(areas[:-1]):
            grad = area.backward(grad)
        assert grad is None  # area 0 has no upstream
    assert_same_blocks([a.block.state_dict() for a in areas], reference["blocks"])
    # the parameters really moved
    fresh = ChainArea(spec, 0).block.state_dict()
    assert not torch.allclose(fresh["linear.weight"], reference["blocks"][0]["linear.weight"])


def run_chain(spec):
    run = RunDirectory.create(spec)
    log = configure_logging("orchestrator", run.log_path("orchestrator"), "info", console=False)
    with Progress(spec, log, enabled=False) as progress:
        outcome = Supervisor(spec, run, log, progress).execute()
    return run, outcome


def test_locked_processes_match_inprocess_reference(tmp_path):
    spec = chain_spec(tmp_path)
    run, outcome = run_chain(spec)
    assert outcome["status"] == "completed", outcome
    assert_no_process_left(run.path, expected_regions=2)  # no cerebellum, no olive
    saved = [torch.load(run.checkpoint_path(f"area{k}"))["block"] for k in range(2)]
    reference = train_chain_inprocess(spec, steps=STEPS)
    assert_same_blocks(saved, reference["blocks"])
    last = [m for m in run.metrics("area1") if "val_accuracy" in m]
    assert len(last) == 1 and 0.0 <= last[0]["val_accuracy"] <= 1.0


def test_benchmark_tiny_budget_prints_every_field_and_unlocked_learns(tmp_path, capsys):
    argv = [
        "--areas",
        "2",
        "--width",
        "64",
        "--train-subset",
        "2000",
        "--val-subset",
        "300",
        "--batch",
        "50",
        "--runs-dir",
        str(tmp_path),
    ]
    summaries = decoupling.run_benchmark(decoupling.parse_args(argv))
    text = decoupling.report(decoupling.parse_args(argv), summaries)
    for mode in ("locked", "backward-unlocked"):
        assert summaries[mode]["status"] == "completed", summaries[mode]
        assert f"[{mode}]" in text
    for field in (
        "busy fraction",
        "step seconds",
        "samples/s",
        "ideal ratio",
        "actual unlocked/locked throughput ratio",
        "val accuracy per epoch",
        "time to target accuracy",
    ):
        assert field in text, field
    # the unlocked chain learns: far better than chance (0.1) on a small subset
    assert summaries["backward-unlocked"]["val_accuracy"][-1] > 0.5
    unlocked_run = tmp_path / "chain-K2-backward-unlocked"
    assert_no_process_left(unlocked_run, expected_regions=4)  # 2 areas, cerebellum, olive
    olive = [
        m
        for m in RunDirectory(unlocked_run).metrics("olive")
        if "epoch" in m and "cerebellar_loss" in str(m)
    ]
    assert olive, "the olive paired predictions with targets"


def test_bench_subcommand_reaches_the_benchmark(capsys):
    import pytest

    from orchestrator.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "decoupling", "--help"])
    assert exit_info.value.code == 0
    assert "--areas" in capsys.readouterr().out
