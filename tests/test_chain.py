"""Chains of feed-forward areas (spatial DNI): locked = true backprop; unlocked learns; the
forward synthesiser ĥ = C(x) learns from climbing-fibre errors and stands in for h; a lesioned
cerebellum never stalls an unlocked chain; the decoupling benchmark prints all its fields."""

from __future__ import annotations

import copy
import time

import pytest
import torch
from conftest import assert_no_process_left, records, run_chain
from torch import nn

from areas.chain import (
    ChainArea,
    batch_order,
    batches_per_epoch,
    chain_data,
    flat_images,
    make_block,
)
from benchmarks import decoupling
from ccdni.base.checkpoint import load_checkpoint
from ccdni.base.optim import clip_and_step, make_adam
from ccdni.base.rundir import RunDirectory
from ccdni.base.spec import SpecError, load_spec
from cerebellum.synthesiser import CerebellumCore
from olive.comparator import InferiorOlive
from orchestrator.inprocess import run_chain_inprocess
from wire.ids import StepId

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


def true_backprop(spec, data, steps: int) -> list[dict]:
    """The locked chain's reference: every block in one graph, one backward per batch, each
    block clipped and stepped by its own Adam (as each area does); the blocks' state dicts."""
    blocks = [make_block(spec, k) for k in range(spec.chain_areas)]
    optimisers = [make_adam(block.parameters(), spec.lr, spec) for block in blocks]
    images = flat_images(data.train_images)
    order = batch_order(spec, images.shape[0])
    for _ in range(steps):
        idx = next(order)
        out = images[idx]
        for block in blocks:
            out = block(out)
        torch.nn.functional.cross_entropy(out, data.train_labels[idx]).backward()
        for block, optimiser in zip(blocks, optimisers):
            clip_and_step(block.parameters(), optimiser, spec.grad_clip)
    return [block.state_dict() for block in blocks]


def test_locked_cores_match_true_backprop(tmp_path):
    """Three ChainArea cores passing h forward and ∂L/∂h back, and the direct in-process run of
    the locked chain, both equal one-graph backprop (1e-5), and the weights moved."""
    spec = chain_spec(tmp_path, chain_areas=3, inprocess=True)
    data = chain_data(spec)
    reference = {"blocks": true_backprop(spec, data, STEPS)}
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
    # the direct run (the processes' reference) of one epoch of STEPS batches is the same
    assert batches_per_epoch(spec, data.train_images.shape[0]) == STEPS
    run = RunDirectory.create(spec)
    run_chain_inprocess(spec, run)
    saved = [load_checkpoint(run.checkpoint_path(f"area{k}")).state["block"] for k in range(3)]
    assert_same_blocks(saved, reference["blocks"])
    (last,) = [m for m in run.metrics("area2") if "val_accuracy" in m]
    assert 0.0 <= last["val_accuracy"] <= 1.0


def test_benchmark_tiny_budget_prints_every_field_and_unlocked_learns(tmp_path, capsys):
    """The decoupling benchmark at a tiny budget prints every field for both modes, and the
    backward-unlocked chain learns far above chance."""
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
    """`launch.py bench decoupling --help` reaches the benchmark's own argument parser."""
    import pytest

    from orchestrator.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "decoupling", "--help"])
    assert exit_info.value.code == 0
    assert "--areas" in capsys.readouterr().out


# -- forward and full unlocking ------------------------------------------------------------------
def test_spec_interfaces_per_chain_mode(tmp_path):
    """Each chain mode serves exactly its interfaces with their (input, output) sizes, and lesions
    and in-process runs are allowed where they make sense."""
    sizes = {
        "locked": {"boundary0": (32, 32), "boundary1": (32, 32)},
        "backward-unlocked": {"boundary0": (32, 32), "boundary1": (32, 32)},
        "forward-unlocked": {"forward0": (784, 32), "forward1": (784, 32)},
        "fully-unlocked": {
            "boundary0": (32, 32),
            "boundary1": (32, 32),
            "forward0": (784, 32),
            "forward1": (784, 32),
        },
    }
    for mode, io in sizes.items():
        spec = chain_spec(tmp_path, chain_areas=3, chain_mode=mode)
        assert spec.interface_io == io and set(spec.interfaces) == set(io), mode
        assert spec.interface_sizes == {name: out for name, (_, out) in io.items()}
        assert spec.uses_cerebellum == (mode != "locked")
    single = load_spec(hidden=7)
    assert single.interface_io == {"area0": (14, 14)} and single.interface_sizes == {"area0": 14}
    assert chain_spec(tmp_path, chain_mode="fully-unlocked", ablate="olive@epoch=0").ablate
    with pytest.raises(SpecError, match="locked has no cerebellum"):
        chain_spec(tmp_path, ablate="cerebellum@epoch=0")
    assert chain_spec(tmp_path, chain_mode="fully-unlocked", inprocess=True).inprocess


def test_forward_synthesiser_learns_activity_as_autograd_of_the_mse(tmp_path):
    """forward0: x (B, 784) → ĥ_0 (B, W), zero at first; trained through the olive's
    climbing-fibre errors on (x, h_0) pairs it takes exactly the Adam step of autograd on
    L_C = mean_b ||ĥ − h||², and the MSE on a fixed batch falls."""
    spec = chain_spec(
        tmp_path, chain_mode="fully-unlocked", cerebellum_hidden=64, cerebellum_lr=3e-3
    )
    core = CerebellumCore(spec, list(spec.interfaces))
    synthesiser = core.synthesisers["forward0"]
    assert synthesiser.granule.in_features == 784 and synthesiser.nuclei.out_features == 32
    data = chain_data(spec)
    x = flat_images(data.train_images)[:50]  # (B, 784)
    h = ChainArea(spec, 0).forward(x)  # (B, W): the target area 0 would send
    olive = InferiorOlive()
    reference = copy.deepcopy(synthesiser)
    reference_adam = make_adam(reference.parameters(), spec.cerebellar_lr, spec)
    losses = []
    for step in range(40):
        ids = StepId(0, step, 0)
        prediction = core.predict("forward0", ids, x)  # (B, W)
        if step == 0:
            assert torch.equal(prediction, torch.zeros(50, 32)), "ĥ starts at zero"
        assert olive.receive_target("forward0", ids, h) is None
        fibre = olive.receive_prediction("forward0", ids, prediction)
        assert fibre is not None and fibre.interface == "forward0"
        losses.append(fibre.loss)
        assert core.learn("forward0", ids, fibre.error)
        loss = ((reference(x) - h) ** 2).sum(dim=1).mean()  # autograd reference
        assert loss.item() == pytest.approx(fibre.loss, rel=1e-5)
        loss.backward()
        nn.utils.clip_grad_norm_(reference.parameters(), spec.grad_clip)
        reference_adam.step()
        reference_adam.zero_grad(set_to_none=True)
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(synthesiser.state_dict()[name], value, msg=name)
    assert core.errors_applied["forward0"] == 40
    assert losses[-1] < 0.5 * losses[0], losses


def unlocked_spec(tmp_path, mode: str, **changes):
    values = dict(
        chain_mode=mode,
        chain_width=64,
        train_subset=3000,
        val_subset=500,
        epochs=2,
        lr=1e-3,
        cerebellum_hidden=512,
        cerebellum_lr=3e-3,
        wait_timeout=10.0,  # a loaded machine must not turn late answers into missing ones
        run_name=mode,
    )
    values.update(changes)
    return chain_spec(tmp_path, **values)


def olive_epochs(run: RunDirectory) -> list[dict]:
    return [m for m in run.metrics("olive") if "epoch" in m and "cerebellar_loss" in m]


def r_squared(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """1 − Σ(ĥ − h)² / Σ(h − mean h)²: the share of h's variance the prediction explains."""
    residual = ((prediction - target) ** 2).sum()
    return float(1 - residual / ((target - target.mean(dim=0)) ** 2).sum())


@pytest.mark.parametrize("mode", ["forward-unlocked", "fully-unlocked"])
def test_forward_unlocked_chains_learn_through_the_cerebellum(tmp_path, mode):
    """Forward- and fully-unlocked chains learn on ĥ_0 = C(x), whose loss falls and which explains
    much of the true h_0 on held-out images."""
    # lag 0: each synthesiser has learned from every earlier batch before it answers, so the
    # outcome does not hang on how the machine's load interleaves the processes
    spec = unlocked_spec(tmp_path, mode, chain_max_lag=0)
    run, outcome = run_chain(spec)
    assert outcome["status"] == "completed", outcome
    assert_no_process_left(run.path, expected_regions=4)
    last = [m for m in run.metrics("area1") if "val_accuracy" in m]
    assert len(last) == 2 and last[-1]["val_accuracy"] > 0.5, last  # chance: 0.1
    assert sum(m["synthetic_inputs"] for m in last) >= 0.9 * 2 * 60  # ran on ĥ_0
    # the forward synthesiser learned: the olive's loss on forward0 fell ...
    olive = olive_epochs(run)
    assert [m["epoch"] for m in olive] == [0, 1]
    forward_losses = [m["cerebellar_loss/forward0"] for m in olive]
    assert forward_losses[-1] < forward_losses[0], forward_losses
    if mode == "fully-unlocked":
        assert all(m["pairs/boundary0"] >= 50 for m in olive), olive
    # ... and ĥ_0 = C(x) explains much of the true h_0 on held-out images
    spec_data = chain_data(spec)
    x = flat_images(spec_data.val_images)[:100]
    area0 = ChainArea(spec, 0)
    area0.block.load_state_dict(load_checkpoint(run.checkpoint_path("area0")).state["block"])
    core = CerebellumCore(spec, list(spec.interfaces))
    fresh = core.synthesisers["forward0"]
    with torch.no_grad():
        h = area0.block(x)  # (B, W), batch statistics as in training
        assert r_squared(fresh(x), h) < 0.0  # zero predictions explain nothing
        state = load_checkpoint(run.checkpoint_path("cerebellum")).state["synthesisers"]["forward0"]
        fresh.load_state_dict(state)
        explained = r_squared(fresh(x), h)
    assert explained > 0.2, explained  # measured 0.43–0.75 (a mean-only fit: ≈ 0)


def test_fully_unlocked_three_areas_pair_every_interface(tmp_path):
    """Area 1 asks for ĥ_0 (forward0) and ĝ_1 (boundary1) on one link and sends targets for
    boundary0 and forward1: every interface is served and paired every batch."""
    spec = unlocked_spec(
        tmp_path, "fully-unlocked", chain_areas=3, chain_width=32, train_subset=500, epochs=1
    )
    run, outcome = run_chain(spec)
    assert outcome["status"] == "completed", outcome
    assert_no_process_left(run.path, expected_regions=5)
    (olive,) = olive_epochs(run)
    for name in ("boundary0", "boundary1", "forward0", "forward1"):
        assert olive[f"pairs/{name}"] == 10, olive
    area1 = next(m for m in run.metrics("area1") if "epoch" in m)
    assert area1["synthetic_inputs"] == 10 and area1["predictions"] == 10, area1
    assert area1["targets_sent"] == 20 and area1["trained_batches"] == 10, area1
    assert 0.0 <= next(m for m in run.metrics("area2") if "epoch" in m)["val_accuracy"] <= 1.0


@pytest.mark.parametrize("mode", ["backward-unlocked", "fully-unlocked"])
def test_scheduled_cerebellum_lesion_never_stalls_an_unlocked_chain(tmp_path, mode):
    """The cerebellum is killed at the start of epoch 1 (area 0 asks for it, every area
    waits to hear of it): no area then waits wait_timeout (5 s) per batch for an answer."""
    batches = 20
    spec = unlocked_spec(
        tmp_path,
        mode,
        chain_width=32,
        train_subset=batches * 50,
        val_subset=100,
        cerebellum_hidden=64,
        wait_timeout=5.0,
        ablate="cerebellum@epoch=1",
    )
    started = time.monotonic()
    run, outcome = run_chain(spec)
    elapsed = time.monotonic() - started
    assert outcome["status"] == "completed", outcome
    assert elapsed < 0.5 * batches * spec.wait_timeout, elapsed  # stalled: ≥ 100 s
    events = records(run.path / "events.jsonl")
    assert [e["region"] for e in events if e["event"] == "ablation_requested"] == ["cerebellum"]
    assert any(e["event"] == "lesion" and e["region"] == "cerebellum" for e in events)
    area0, area1 = ([m for m in run.metrics(a) if "epoch" in m] for a in ("area0", "area1"))
    assert area0[0]["missing_predictions"] <= 1 and area0[0]["cerebellum_alive"]
    # epoch 1: no ĝ_0 (no update of area 0), no targets for the olive
    assert area0[1]["missing_predictions"] == batches and area0[1]["trained_batches"] == 0
    assert not area0[1]["cerebellum_alive"] and not area1[1]["cerebellum_alive"]
    if mode == "backward-unlocked":  # area 1 still learns from the true h_0
        assert area1[1]["trained_batches"] == batches
        assert area1[1]["targets_withheld"] == batches and area1[1]["targets_sent"] == 0
    else:  # no ĥ_0: area 1 skips every batch; area 0 withholds its h_0 targets
        assert area1[1]["skipped_batches"] == batches and area1[1]["trained_batches"] == 0
        assert area0[1]["targets_withheld"] == batches
        assert area1[0]["skipped_batches"] <= spec.chain_max_lag + 1  # epoch 0's tail
    assert all("val_accuracy" in m for m in area1)  # validation runs the true chain


def test_resuming_a_chain_run_is_refused_with_the_reason(tmp_path):
    """Resuming a chain run is refused with the reason (chains keep only final checkpoints)."""
    from orchestrator.runner import ResumeError, resume_run

    run = RunDirectory.create(chain_spec(tmp_path, run_name=""))
    assert "-chain-K2-locked-s0" in run.path.name  # a chain's default run name says what it is
    run.write_json(run.regions_path, {"orchestrator": {"pid": None, "alive": False}})
    with pytest.raises(ResumeError, match="chain runs keep only their final checkpoints"):
        resume_run(run.path, console=False)


def test_chain_run_from_the_command_line_draws_its_learning_curve(tmp_path):
    """`launch.py --topology chain …` end to end: summary line, figure, nothing left behind."""
    import subprocess
    import sys

    from conftest import ROOT

    runs = tmp_path / "runs"
    result = subprocess.run(
        [
            sys.executable,
            "launch.py",
            *("--topology", "chain", "--chain-mode", "fully-unlocked", "--chain-width", "16"),
            *("--train-subset", "200", "--val-subset", "100", "--batch-size", "50"),
            *("--epochs", "2", "--runs-dir", str(runs)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "completed: mnist-chain-K2 fully-unlocked seed=0 [processes] 2/2" in result.stdout
    (run,) = runs.iterdir()
    assert (run / "figures" / "learning_curve.png").stat().st_size > 0
    assert_no_process_left(run, expected_regions=4)


class FakeEndpoint:
    """Stands in for a chain area's socket: hands out queued messages, records rejections."""

    def __init__(self, messages):
        self.messages = list(messages)
        self.rejected: list[str] = []

    def receive(self, timeout):
        return ("area0", self.messages.pop(0)) if self.messages else None

    def reject(self, reason, sender=None):
        self.rejected.append(reason)


def activity(ids, tensor):
    from wire.protocol import ActivityHeader, decode, encode, step_header

    return decode(encode(step_header(ActivityHeader, "run", "boundary0", ids), [tensor]))


def test_a_wrong_sized_activity_is_rejected_and_the_area_keeps_waiting(tmp_path):
    """A tensor of the wrong batch size (or width) for a batch is dropped with its reason;
    the valid one that follows is used, and nothing valid means a ChainTimeout naming it."""
    from areas.chain_core import ChainRole
    from areas.chain_process import ChainTimeout, ZmqChainLinks

    spec = chain_spec(tmp_path, lockstep_timeout=0.3)
    ids = StepId(0, 4, 0)
    good = torch.ones(50, 32)
    upstream = FakeEndpoint(
        [activity(ids, torch.ones(49, 32)), activity(ids, torch.ones(50, 31)), activity(ids, good)]
    )
    links = ZmqChainLinks(spec, ChainRole.of(spec, 1), "run", lambda: None, upstream=upstream)
    assert torch.equal(links.activity_in(ids, rows=50), good)
    assert len(upstream.rejected) == 2
    assert "shape (49, 32), expected (50, 32)" in upstream.rejected[0]
    links.upstream = FakeEndpoint([activity(ids, torch.ones(49, 32))])
    with pytest.raises(ChainTimeout, match=r"no valid activity \(0, 4, 0\) from area0"):
        links.activity_in(ids, rows=50)


def test_epoch_spans_run_from_the_first_start_to_the_last_end():
    """An epoch's span runs from the first area's start to the last area's end (the last area's own
    time for older runs)."""
    areas = {
        "area0": [{"train_started_at": 10.0, "train_ended_at": 12.0, "train_seconds": 2.0}],
        "area1": [{"train_started_at": 10.5, "train_ended_at": 13.0, "train_seconds": 2.5}],
    }
    assert decoupling.epoch_spans(areas) == [3.0]
    del areas["area0"][0]["train_started_at"]  # an older run: the last area's own loop
    assert decoupling.epoch_spans(areas) == [2.5]


def test_forward_modes_need_a_lag_bound(tmp_path):
    """The forward-unlocked modes refuse chain_max_lag -1; backward-unlocked accepts it (flow
    control bounds it)."""
    with pytest.raises(SpecError, match="needs chain_max_lag ≥ 0"):
        chain_spec(tmp_path, chain_mode="fully-unlocked", chain_max_lag=-1)
    chain_spec(tmp_path, chain_mode="backward-unlocked", chain_max_lag=-1)  # flow control


def test_repeats_report_the_median_run_and_a_failed_repeat_fails_the_mode():
    """Repeats report the median run, and one failed repeat fails the mode and its ratios."""
    runs = [
        {"status": "completed", "samples_per_s": v, "run": i} for i, v in enumerate((30, 10, 20))
    ]
    chosen = decoupling.median_run(runs)
    assert chosen["run"] == 2 and chosen["samples_per_s_repeats"] == [30, 10, 20]
    failed = {"status": "failed", "samples_per_s": 99.0, "run": 3}
    assert decoupling.median_run([*runs, failed]) is failed
    summaries = {
        "locked": {"status": "completed", "samples_per_s": 10.0, "time_to_target": 2.0},
        "backward-unlocked": {"status": "failed", "samples_per_s": 30.0, "time_to_target": 1.0},
    }
    assert decoupling.ratios(summaries) == {}  # a failed run's numbers are no measurement
