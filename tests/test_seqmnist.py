"""The seqMNIST family: templates, loss sparsity, the MNIST split and the batches."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from ccdni.base.spec import RunSpec
from ccdni.tasks.base import build_task
from ccdni.tasks.mnist_data import N_TRAIN, N_VALIDATION, DataMissingError, load_mnist
from ccdni.tasks.seqmnist import (
    TEMPLATE_CORNERS,
    CircleSeqMnist,
    DrawDigitSeqMnist,
    LineDrawSeqMnist,
    SeqMnist,
    SeqMnistTask,
    build_seqmnist_task,
    digit_template,
    segment_point_counts,
)

DATA_DIR = Path(os.environ.get("CCDNI_DATA") or Path(__file__).parents[2] / "shared" / "data")
SUBSET = {"train_subset": 120, "val_subset": 70}


@pytest.fixture(scope="module")
def data():
    return load_mnist(DATA_DIR)


def small_spec(task: str, **changes) -> RunSpec:
    return RunSpec(task=task, data_dir=str(DATA_DIR), batch_size=50, **SUBSET, **changes)


# --- templates --------------------------------------------------------------------------------


@pytest.mark.parametrize("digit", range(10))
def test_template_path(digit: int) -> None:
    path = digit_template(digit)
    corners = torch.tensor(TEMPLATE_CORNERS[digit])
    assert path.shape == (28, 2)
    assert torch.equal(path[0], corners[0])
    assert torch.equal(path[-1], corners[-1])
    assert bool(((path >= 0) & (path <= 1)).all())
    # within each segment (start corner up to the next corner) the steps are equal
    counts = segment_point_counts(corners.shape[0] - 1)
    start = 0
    for i, count in enumerate(counts):
        assert torch.allclose(path[start], corners[i], atol=1e-6)
        points = torch.cat([path[start : start + count], corners[i + 1 : i + 2]])
        steps = (points[1:] - points[:-1]).norm(dim=1)
        assert torch.allclose(steps, steps.mean().expand_as(steps), atol=1e-6)
        start += count


@pytest.mark.parametrize("n_segments", range(1, 11))
def test_segment_counts_match_the_authors_rule(n_segments: int) -> None:
    # the authors' fit_points: ⌊28/S⌋ each; 28 mod S − 1 extra over the first segments, or the
    # last segment one fewer when S divides 28; the end point appended
    div, rem = divmod(28, n_segments)
    expected = [div] * n_segments
    if rem:
        for i in range(rem - 1):
            expected[i] += 1
    else:
        expected[-1] -= 1
    assert segment_point_counts(n_segments) == expected
    assert sum(expected) + 1 == 28


# --- loss sparsity ----------------------------------------------------------------------------


def test_ld_gamma5_scores_every_fifth_step(data) -> None:
    task = LineDrawSeqMnist(data.subset(60, 10), batch_size=50, gamma=5)
    batch = next(task.train_batches(0, torch.Generator().manual_seed(0)))
    scored = (batch.loss_steps.nonzero().flatten() + 1).tolist()  # 1-based
    assert scored == [5, 10, 15, 20, 25]
    outputs = torch.randn(batch.size, 28, 2, requires_grad=True)
    # truncations of 4 steps, each loss computed from that truncation's outputs (B, T, O)
    losses = [
        task.truncation_loss(outputs[:, s : s + 4], batch, s, min(s + 4, 28))
        for s in range(0, 28, 4)
    ]
    # steps 1-4 and 21-24 (1-based) hold no scored step: no loss there at all
    assert [loss is None for loss in losses] == [True, False, False, False, False, True, False]
    loss = sum(loss for loss in losses if loss is not None)
    loss.backward()
    per_step = outputs.grad.abs().sum(dim=(0, 2))  # (N,)
    assert bool((per_step[batch.loss_steps] > 0).all())
    assert bool((per_step[~batch.loss_steps] == 0).all())
    # the truncation losses add up to the sequence loss
    assert torch.allclose(loss, task.truncation_loss(outputs, batch, 0, 28))


def test_ld_line_ends_on_the_circle_point(data) -> None:
    line = LineDrawSeqMnist(data.subset(60, 10), gamma=8)
    circle = CircleSeqMnist(data.subset(60, 10))
    labels = torch.arange(10)
    paths, points = line.targets_for(labels), circle.targets_for(labels)[:, -1]
    assert torch.allclose(paths[:, -1], points, atol=1e-5)
    assert torch.equal(paths[:, 0], torch.zeros(10, 2))  # starts at the origin (paper A.2.4)
    steps = (paths[:, 1:] - paths[:, :-1]).norm(dim=2)  # (10, 27): equally spaced
    assert torch.allclose(steps, torch.full_like(steps, 10 / 27), atol=1e-5)
    assert (line.loss_steps.nonzero().flatten() + 1).tolist() == [8, 16, 24]


# --- data -------------------------------------------------------------------------------------


def test_split_sizes_ranges_and_disjointness(data) -> None:
    assert data.train_images.shape == (N_TRAIN, 28, 28) == (48_000, 28, 28)
    assert data.val_images.shape == (N_VALIDATION, 28, 28) == (12_000, 28, 28)
    assert data.train_images.dtype == torch.float32
    assert data.train_labels.shape == (48_000,) and data.val_labels.shape == (12_000,)
    together = torch.cat([data.train_index, data.val_index])
    assert torch.equal(together.sort().values, torch.arange(60_000))  # disjoint and complete
    sub = data.subset(100, 30)
    assert sub.train_images.shape == (100, 28, 28) and sub.val_images.shape == (30, 28, 28)
    assert float(sub.train_images.min()) == 0.0 and float(sub.train_images.max()) == 1.0
    assert set(sub.train_labels.tolist()) <= set(range(10))
    assert load_mnist(DATA_DIR) is data  # cached in-process


def test_missing_data_dir(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataMissingError) as info:
        load_mnist(missing)
    message = str(info.value)
    assert str(missing / "MNIST" / "raw") in message
    assert "--download" in message and "\n" not in message
    with pytest.raises(FileNotFoundError):
        build_seqmnist_task(RunSpec(task="seqmnist", data_dir=str(missing)))


# --- tasks ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "cls", "target_shape", "n_scored"),
    [
        ("seqmnist", SeqMnist, (50, 28), 1),
        ("c-seqmnist", CircleSeqMnist, (50, 28, 2), 1),
        ("dd-seqmnist", DrawDigitSeqMnist, (50, 28, 2), 28),
        ("ld-seqmnist", LineDrawSeqMnist, (50, 28, 2), 28),
    ],
)
def test_task_batches(task, cls, target_shape, n_scored) -> None:
    built = build_task(small_spec(task))
    assert isinstance(built, cls) and isinstance(built, SeqMnistTask)
    assert (built.name, built.n_steps, built.input_size) == (task, 28, 28)
    assert built.n_train_batches() == 2  # 120 // 50, the rest dropped
    train = list(built.train_batches(0, torch.Generator().manual_seed(1)))
    assert len(train) == 2
    batch = train[0]
    assert batch.inputs.shape == (50, 28, 28) and batch.targets.shape == target_shape
    assert batch.labels.shape == (50,) and batch.loss_steps.shape == (28,)
    assert int(batch.loss_steps.sum()) == n_scored
    if task == "seqmnist":
        assert torch.equal(batch.targets, batch.labels.unsqueeze(1).expand(50, 28))
    # row i of the image is the input at step i
    data = built.data
    i = int((data.train_images == batch.inputs[0]).all(dim=(1, 2)).nonzero()[0])
    assert int(data.train_labels[i]) == int(batch.labels[0])
    # a new epoch draws a new order; validation is fixed, the last partial batch kept
    again = next(built.train_batches(1, torch.Generator().manual_seed(2)))
    assert not torch.equal(again.labels, batch.labels)
    val = list(built.validation_batches())
    assert [b.size for b in val] == [50, 20]
    assert all(torch.equal(a.inputs, b.inputs) for a, b in zip(val, built.validation_batches()))
    outputs = torch.zeros(50, 28, built.output_size)
    metrics = built.evaluate(outputs, batch)
    assert ("error_pct" in metrics) == (task == "seqmnist")
    assert ("mse_x100" in metrics) == (task == "dd-seqmnist")


def test_zero_output_scores_100_on_the_circle() -> None:
    task = build_task(small_spec("c-seqmnist"))
    for batch in task.validation_batches():
        metrics = task.evaluate(torch.zeros(batch.size, 28, 2), batch)
        assert metrics["mse"] == pytest.approx(100.0, abs=1e-4)
        assert metrics["loss"] == pytest.approx(100.0, abs=1e-4)


def test_dd_mse_x100(data) -> None:
    task = DrawDigitSeqMnist(data.subset(60, 10))
    batch = next(task.validation_batches())
    metrics = task.evaluate(batch.targets + 0.1, batch)  # off by 0.1 in x and y
    assert metrics["mse"] == pytest.approx(0.02, rel=1e-4)
    assert metrics["mse_x100"] == pytest.approx(2.0, rel=1e-4)
