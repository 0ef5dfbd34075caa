"""Chains of stacked LSTM areas on seqMNIST, socket-free: the locked protocol equals true
backprop, ∂L/∂h crosses the boundary in the row layout (B·28, W), a row-wise cerebellum
trains area 0 well enough, and wrong shapes are refused with a clear message."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_no_process_left, run_chain

from areas.chain import batch_order, batches_per_epoch, chain_data, flat_images
from areas.chain_lstm import N_STEPS as ROWS
from areas.chain_lstm import LstmChainArea, make_lstm_block
from ccdni.base.optim import clip_and_step, make_adam
from ccdni.base.spec import SpecError, load_spec
from cerebellum.synthesiser import CerebellumCore
from olive.comparator import climbing_fibre_error
from wire.ids import StepId

STEPS = 3
WIDTH = 32
N_STEPS = 28  # one image row per step, as in the paper


def lstm_spec(**changes):
    values = dict(
        topology="chain",
        chain_block="lstm",
        chain_areas=2,
        chain_width=WIDTH,
        train_subset=STEPS * 50,
        val_subset=100,
        batch_size=50,
        epochs=1,
        figures=False,
        progress=False,
    )
    values.update(changes)
    return load_spec(**values)


def stack(blocks, images: torch.Tensor) -> torch.Tensor:
    """Flattened images (B, 784) through every LSTM layer → logits (B, 10), in one graph."""
    out = images.reshape(-1, ROWS, 28)  # (B, 28, 28): row i at step i
    for block in blocks:
        out = block(out)  # (B, 28, W) …, then (B, 10)
    return out


@torch.no_grad()
def lstm_chain_accuracy(blocks, data, chunk: int) -> float:
    """Validation accuracy of the stack, evaluated in chunks of ``chunk`` examples."""
    for block in blocks:
        block.eval()
    images = flat_images(data.val_images)
    correct = 0
    for start in range(0, images.shape[0], chunk):
        logits = stack(blocks, images[start : start + chunk])
        correct += int((logits.argmax(1) == data.val_labels[start : start + chunk]).sum())
    for block in blocks:
        block.train()
    return correct / images.shape[0]


def true_backprop(spec, data, steps: int) -> dict:
    """The locked LSTM chain's reference: the whole stack in one graph, one backward per
    batch, each layer clipped and stepped by its own Adam (as each area does)."""
    blocks = [make_lstm_block(spec, k) for k in range(spec.chain_areas)]
    optimisers = [make_adam(block.parameters(), spec.lr, spec) for block in blocks]
    images = flat_images(data.train_images)
    order = batch_order(spec, images.shape[0])
    losses = []
    for _ in range(steps):
        idx = next(order)
        loss = F.cross_entropy(stack(blocks, images[idx]), data.train_labels[idx])
        loss.backward()
        for block, optimiser in zip(blocks, optimisers):
            clip_and_step(block.parameters(), optimiser, spec.grad_clip)
        losses.append(float(loss.detach()))
    return {
        "blocks": [block.state_dict() for block in blocks],
        "losses": losses,
        "val_accuracy": lstm_chain_accuracy(blocks, data, spec.batch_size),
    }


@pytest.mark.parametrize("n_areas", [2, 3])
def test_locked_lstm_areas_match_true_backprop(n_areas):
    """LSTM areas passing (B·28, W) rows forward and ∂L/∂h back equal one-graph backprop
    through the stack: losses, weights (1e-5) and the chain's validation accuracy."""
    spec = lstm_spec(chain_areas=n_areas)
    data = chain_data(spec)
    reference = true_backprop(spec, data, STEPS)
    areas = [LstmChainArea(spec, k) for k in range(n_areas)]
    images = flat_images(data.train_images)  # (n, 784)
    order = batch_order(spec, images.shape[0])
    losses = []
    for _ in range(STEPS):
        idx = next(order)
        h = images[idx]  # (B, 784)
        for area in areas:
            h = area.forward(h)  # (B·28, W) …, then logits (B, 10)
        loss, grad = areas[-1].loss_backward(data.train_labels[idx])
        losses.append(loss)
        for area in reversed(areas[:-1]):
            assert grad.shape == (50 * N_STEPS, WIDTH)
            grad = area.backward(grad)
        assert grad is None  # area 0 has no upstream
    assert losses == pytest.approx(reference["losses"], abs=1e-6)
    for area, want in zip(areas, reference["blocks"]):
        got = area.block.state_dict()
        assert got.keys() == want.keys()
        for key, value in want.items():
            torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-5, msg=key)
    # the parameters really moved, and the chain's validation pass agrees with the reference
    fresh = LstmChainArea(spec, 0).block.state_dict()["lstm.weight_ih_l0"]
    assert not torch.allclose(fresh, reference["blocks"][0]["lstm.weight_ih_l0"])
    correct = 0
    for start in range(0, data.val_labels.shape[0], spec.batch_size):
        out = flat_images(data.val_images[start : start + spec.batch_size])
        for area in areas:
            out = area.infer(out)
        correct += int((out.argmax(1) == data.val_labels[start : start + spec.batch_size]).sum())
    assert correct / data.val_labels.shape[0] == reference["val_accuracy"]


def test_feedback_is_autograd_of_the_loss_in_row_layout():
    """The last LSTM area's ∂L/∂h equals autograd of the loss per example, in the (B·28, W) row
    layout, for every step."""
    spec = lstm_spec()
    data = chain_data(spec)
    area0, area1 = LstmChainArea(spec, 0), LstmChainArea(spec, 1)
    batch = 4
    images, labels = flat_images(data.train_images[:batch]), data.train_labels[:batch]
    h = area0.forward(images)  # (B·28, W)
    assert h.shape == (batch * N_STEPS, WIDTH)
    # row b·28 + t is example b at step t: area 0 run on example b alone gives the same rows
    for b in range(batch):
        alone = area0.block(images[b].view(1, N_STEPS, 28))[0]  # (28, W)
        torch.testing.assert_close(h[b * N_STEPS : (b + 1) * N_STEPS], alone.detach())
    # the reference ∂L/∂h: autograd through area 1's (not yet stepped) weights, per example
    want = torch.zeros_like(h)
    for b in range(batch):
        rows = h[b * N_STEPS : (b + 1) * N_STEPS].clone().requires_grad_(True)  # (28, W)
        logits = area1.block(rows.unsqueeze(0))  # (1, 10)
        loss_b = F.cross_entropy(logits, labels[b : b + 1]) / batch  # its share of the mean
        (want[b * N_STEPS : (b + 1) * N_STEPS],) = torch.autograd.grad(loss_b, rows)
    area1.forward(h)
    _, grad = area1.loss_backward(labels)
    assert grad.shape == (batch * N_STEPS, WIDTH)
    torch.testing.assert_close(grad, want, rtol=1e-5, atol=1e-7)
    assert grad[N_STEPS - 1].abs().sum() > 0  # every step gets feedback, not only the last
    assert grad[0].abs().sum() > 0


def test_row_wise_cerebellum_trains_area0_above_chance():
    """Backward-unlocked, in-process: area 0 steps with ĝ = C(h) applied row by row on
    (B·28, W); area 1 computes the true ∂L/∂h, the olive's climbing-fibre error teaches C."""
    spec = lstm_spec(
        chain_mode="backward-unlocked",
        train_subset=2000,
        val_subset=500,
        lr=3e-3,
        cerebellum_lr=1e-3,
        cerebellum_hidden=256,
        epochs=5,
    )
    data = chain_data(spec)
    area0, area1 = LstmChainArea(spec, 0), LstmChainArea(spec, 1)
    start = area0.block.state_dict()["lstm.weight_ih_l0"].clone()
    cerebellum = CerebellumCore(spec, ["boundary0"])
    images = flat_images(data.train_images)
    order = batch_order(spec, images.shape[0])
    n_batches = batches_per_epoch(spec, images.shape[0])
    for epoch in range(spec.epochs):
        for b in range(n_batches):
            idx, ids = next(order), StepId(epoch, b, 0)
            h = area0.forward(images[idx])  # (B·28, W): the efference, one row per step
            prediction = cerebellum.predict("boundary0", ids, h)  # ĝ (B·28, W), row-wise
            assert area0.backward(prediction) is None  # area 0 moves on with ĝ
            area1.forward(h)
            _, target = area1.loss_backward(data.train_labels[idx])  # the true ∂L/∂h
            _, error = climbing_fibre_error(prediction, target)
            assert cerebellum.learn("boundary0", ids, error)
    assert cerebellum.errors_applied["boundary0"] == spec.epochs * n_batches
    assert cerebellum.synthesisers["boundary0"].nuclei.weight.abs().sum() > 0  # C learned
    assert not torch.allclose(start, area0.block.state_dict()["lstm.weight_ih_l0"])
    accuracy = lstm_chain_accuracy([area0.block, area1.block], data, spec.batch_size)
    assert accuracy > 0.3, accuracy  # chance is 0.1


def test_wrong_shapes_raise_a_clear_value_error():
    """Inputs and feedback of the wrong shape raise a ValueError that names the expected shape."""
    spec = lstm_spec(chain_areas=3)
    area0, area1, area2 = (LstmChainArea(spec, k) for k in range(3))
    with pytest.raises(ValueError, match=r"area0 expects input of shape \(B, 784\)"):
        area0.forward(torch.zeros(5, 28, 28))
    with pytest.raises(ValueError, match=r"area0 expects input of shape \(B, 784\)"):
        area0.infer(torch.zeros(5, 28))
    with pytest.raises(ValueError, match=rf"area1 expects input of shape \(B·28, {WIDTH}\)"):
        area1.forward(torch.zeros(50, WIDTH))  # one row per example, not 28
    with pytest.raises(ValueError, match=rf"area2 expects input of shape \(B·28, {WIDTH}\)"):
        area2.forward(torch.zeros(56, WIDTH + 1))
    with pytest.raises(ValueError, match=r"got \(2, 28, 32\)"):
        area2.infer(torch.zeros(2, 28, WIDTH))
    area1.forward(torch.zeros(2 * N_STEPS, WIDTH))
    with pytest.raises(ValueError, match=rf"area1 expects ∂L/∂h of shape \(56, {WIDTH}\)"):
        area1.backward(torch.zeros(2, WIDTH))


def test_backward_unlocked_lstm_chain_pairs_every_row(tmp_path):
    """The cerebellum predicts ∂L/∂h_0(t) row by row; the olive pairs every batch's rows."""
    spec = lstm_spec(
        chain_width=16,
        chain_mode="backward-unlocked",
        train_subset=200,
        epochs=2,
        runs_dir=str(tmp_path),
    )
    run, outcome = run_chain(spec)
    assert outcome["status"] == "completed", outcome
    assert_no_process_left(run.path, expected_regions=4)
    area0 = [m for m in run.metrics("area0") if "epoch" in m and "train_seconds" in m]
    assert [m["predictions"] for m in area0] == [4, 4]  # every batch got its ĝ_0
    olive = [m for m in run.metrics("olive") if "epoch" in m]
    assert sum(m.get("pairs/boundary0", 0) for m in olive) == 8


@pytest.mark.parametrize("mode", ["forward-unlocked", "fully-unlocked"])
def test_forward_unlocking_of_lstm_chains_is_refused_with_the_reason(mode):
    """The forward modes are refused for LSTM chains, with the reason."""
    with pytest.raises(SpecError, match="needs chain_block ff"):
        lstm_spec(chain_mode=mode)


def test_benchmark_refuses_forward_unlocked_lstm_chains_in_one_line(capsys):
    """The benchmark refuses forward-unlocked LSTM chains with one error line and status 2."""
    from benchmarks import decoupling

    code = decoupling.main(["--block", "lstm", "--mode", "locked,forward-unlocked"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs chain_block ff" in err[0]


def test_lstm_chain_survives_a_scheduled_cerebellum_lesion(tmp_path):
    """Without ĝ_0 area 0 drops its graph (no update) instead of waiting wait_timeout."""
    batches = 4
    spec = lstm_spec(
        chain_width=16,
        chain_mode="backward-unlocked",
        train_subset=batches * 50,
        epochs=2,
        wait_timeout=5.0,
        ablate="cerebellum@epoch=1",
        runs_dir=str(tmp_path),
    )
    run, outcome = run_chain(spec)
    assert outcome["status"] == "completed", outcome
    area0 = [m for m in run.metrics("area0") if "epoch" in m and "train_seconds" in m]
    assert area0[1]["missing_predictions"] == batches and area0[1]["trained_batches"] == 0
    assert area0[1]["train_seconds"] < batches * spec.wait_timeout / 2  # never waited it out
    assert_no_process_left(run.path)
