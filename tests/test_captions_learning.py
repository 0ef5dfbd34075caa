"""The captioning area: teacher forcing, bits per word, greedy decoding, the oracle synthesiser,
lockstep processes against the in-process reference, and a run from the command line."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from caption_helpers import ROOT, tiny_corpus, write_coco_corpus
from conftest import assert_no_process_left, assert_same_losses, per_epoch

from areas.cortex import TruncatedLearner, truncation_bounds
from ccdni.base.spec import load_spec
from ccdni.tasks.base import Batch
from ccdni.tasks.captions.area import IMAGE_STEP, CaptioningArea
from ccdni.tasks.captions.coco import VOCAB_FILE, load_corpus
from ccdni.tasks.captions.metrics import bits_per_word
from ccdni.tasks.captions.task import CaptionTask
from ccdni.tasks.captions.vocabulary import BOS_ID, EOS_ID, PAD_ID, Vocabulary
from orchestrator.runner import execute_run
from wire.ids import StepId

F64 = {"rtol": 1e-9, "atol": 1e-11}
CAPTIONS = {
    "train": [
        ["a dog on a mat", "a dog", "the cat sat on the mat with a dog"],
        ["a cat", "one cat and one dog on the mat"],
    ],
    "val": [["a dog on a mat"]],
    "test": [["a cat"]],
}


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: reductions happen in one order on every run."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def small_task(tmp_path: Path, batch_size: int = 5) -> CaptionTask:
    root = write_coco_corpus(tmp_path / "corpus", CAPTIONS, feature_size=5)
    words = (c for per_image in CAPTIONS["train"] for c in per_image)
    Vocabulary.from_captions(words).save(root / VOCAB_FILE)
    return CaptionTask(load_corpus(root), batch_size=batch_size)


def test_teacher_forcing_layout(tmp_path: Path) -> None:
    """Image at step 0, <bos> then the words as inputs; the words then <eos> as scored targets."""
    task = small_task(tmp_path)
    vocabulary = task.vocabulary
    batch = task.make_batch(task.train, torch.tensor([1, 0]))  # "a dog", "a dog on a mat"
    assert batch.inputs.shape == (2, 7, 6) and batch.targets.shape == (2, 7)
    ids = batch.inputs[..., 0].long()
    a, dog = vocabulary.encode(["a", "dog"])
    assert ids[0].tolist() == [IMAGE_STEP, BOS_ID, a, dog, PAD_ID, PAD_ID, PAD_ID]
    assert batch.targets[0].tolist() == [PAD_ID, a, dog, EOS_ID, PAD_ID, PAD_ID, PAD_ID]
    assert vocabulary.decode(batch.targets[1, 1:].tolist()) == ["a", "dog", "on", "a", "mat"]
    assert batch.score_mask.tolist() == [[False, True, True, True, False, False, False]] + [
        [False] + [True] * 6
    ]
    assert torch.equal(batch.inputs[:, 0, 1:], task.train.features[[0, 0]])
    assert not bool(batch.inputs[:, 1:, 1:].any())  # the feature only at the image step
    assert batch.loss_steps.tolist() == batch.score_mask.any(0).tolist()


def test_bits_per_word_of_a_hand_made_distribution_is_its_entropy(tmp_path: Path) -> None:
    """Words drawn in proportion to p score H(p) bits per word; padded steps do not count."""
    p = torch.tensor([0.5, 0.25, 0.125, 0.125])
    entropy = float(-(p * p.log2()).sum())  # 1.75 bits
    targets = torch.tensor([[0, 0, 1, 2, 3], [0, 0, 1, 3, 3]])  # (2, 5); the last step padded
    mask = torch.tensor([[True] * 4 + [False], [True] * 4 + [False]])
    targets[1, 3] = 2  # counts 4, 2, 1, 1 over the 8 scored words
    logits = p.log().expand(2, 5, 4)
    assert bits_per_word(logits, targets, mask) == pytest.approx(entropy, abs=1e-6)
    assert entropy == pytest.approx(1.75)
    task = small_task(tmp_path)
    batch = Batch(torch.zeros(2, 5, 6), targets, mask.any(0), torch.zeros(2), score_mask=mask)
    metrics = task.evaluate(logits, batch)
    assert metrics["bpw"] == pytest.approx(entropy, abs=1e-6)
    assert metrics["loss"] == pytest.approx(entropy * math.log(2), abs=1e-6)
    assert task.evaluation_weight(batch) == 8
    assert float(task.truncation_loss(logits, batch, 0, 5)) == pytest.approx(metrics["loss"])


def test_greedy_decoding_stops_at_eos_or_twenty_words(tmp_path: Path) -> None:
    """Greedy captions end at the first <eos>, or after 20 words."""
    task = small_task(tmp_path)
    area = task.build_area(load_spec(task="captions", hidden=8)).eval()
    dog = task.vocabulary.encode(["dog"])[0]
    with torch.no_grad():
        area.readout.weight.zero_()
        area.readout.bias.zero_()
        area.readout.bias[dog] = 5.0
    ids = area.greedy(task.train.features)
    assert ids.shape == (2, 20) and bool((ids == dog).all())
    with torch.no_grad():
        area.readout.bias[EOS_ID] = 10.0
    ids = area.greedy(task.train.features)
    assert ids[:, 0].tolist() == [EOS_ID, EOS_ID] and bool((ids[:, 1:] == PAD_ID).all())
    assert task.vocabulary.decode(ids[0].tolist()) == []


def chained_forward(area, task, batch, bounds):
    """Forward truncation by truncation *without* detaching: boundary states and losses L_k."""
    state = area.initial_state(batch.size)
    states, losses = [], []
    for a, b in bounds:
        outputs, _, state = area(batch.inputs[:, a:b], state)
        loss = task.truncation_loss(outputs, batch, a, b)
        losses.append(outputs.sum() * 0.0 if loss is None else loss)  # L_k = 0 in the sum
        states.append(state)
    return states, losses


@pytest.mark.parametrize("truncation", [2, 3, 4])
def test_oracle_synthesiser_recovers_full_bptt(tmp_path: Path, float64, truncation: int) -> None:
    """Per-truncation updates with the true future gradient as ĝ sum to full BPTT (dropout off)."""
    scale = 0.1
    task = small_task(tmp_path)
    spec = load_spec(
        task="captions", hidden=6, update="sequence", synthetic_scale=scale, grad_clip=0.0
    ).replace(truncation=truncation)
    torch.manual_seed(3)
    area = CaptioningArea(task.corpus.feature_size, len(task.vocabulary), hidden=6, embedding=8)
    area.eval()  # dropout off: the truncated and the whole-sequence forwards must be the same
    learner = TruncatedLearner(area, task, spec)
    batch = task.make_batch(task.train, torch.arange(5))  # five captions of 1..9 words
    assert len(set(batch.score_mask.sum(1).tolist())) > 2  # examples end at different steps
    bounds = truncation_bounds(batch.n_steps, truncation)
    names = [name for name, _ in area.named_parameters()]
    params = [p for _, p in area.named_parameters()]

    outputs, _, _ = area(batch.inputs, area.initial_state(batch.size))
    loss = task.truncation_loss(outputs, batch, 0, batch.n_steps)  # mean over the words
    full = dict(zip(names, torch.autograd.grad(loss, params)))

    states, losses = chained_forward(area, task, batch, bounds)
    torch.testing.assert_close(sum(losses), loss, **F64)
    future = [
        torch.autograd.grad(sum(losses[k + 1 :]), states[k], retain_graph=True)[0]
        for k in range(len(bounds) - 1)
    ]
    recorded: list[dict[str, torch.Tensor]] = []
    learner.step = lambda: recorded.append(
        {n: p.grad.detach().clone() for n, p in area.named_parameters()}
    )
    sequence = learner.sequence(batch, epoch=1, batch_index=2)
    for k in range(len(bounds)):
        efference = sequence.forward(k)
        prediction = None if efference is None else future[k] / scale  # λ·ĝ_b = ∂L_{>k}/∂s_b
        target = sequence.backward(k, prediction)
        if k > 0:
            assert target.ids == StepId(1, 2, k - 1)
            torch.testing.assert_close(target.feedback, future[k - 1], **F64)
    assert len(recorded) == 1
    for name in names:
        torch.testing.assert_close(recorded[0][name], full[name], **F64, msg=name)
    assert sequence.loss == pytest.approx(float(loss.detach()), rel=1e-12)
    area.zero_grad(set_to_none=True)  # without the oracle the gradient really is truncated
    plain = learner.sequence(batch, 0, 0)
    for k in range(len(bounds)):
        plain.forward(k)
        plain.backward(k, None)
    gap = max(float((recorded[-1][n] - full[n]).abs().max()) for n in names)
    assert gap > 1e-6


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    return tiny_corpus(tmp_path_factory)


def test_lockstep_processes_reproduce_inprocess(tmp_path: Path, corpus_dir: Path) -> None:
    """The captioning area as processes under lockstep equals its in-process run (1e-6)."""
    common = dict(
        task="captions",
        captions_dir=str(corpus_dir),
        train_subset=40,  # 200 captions: two batches of 100 per epoch
        val_subset=10,
        model="cc-dni",
        truncation=3,
        epochs=2,
        seed=4,
        timing="lockstep",
        runs_dir=str(tmp_path),
        figures=False,
        progress=False,
    )
    reference = execute_run(load_spec(inprocess=True, run_name="ref", **common), console=False)
    processes = execute_run(load_spec(inprocess=False, run_name="proc", **common), console=False)
    assert processes.summary["status"] == "completed", processes.summary["reason"]
    assert processes.summary["headline"]["metric"] == "val_bpw"
    want = assert_same_losses(reference.run.path, processes.run.path)
    got = per_epoch(processes.run.path)
    assert len(want) == 4  # area and olive, two epochs
    for key, record in want.items():
        if key[0] == "area0":
            assert record["predictions"] > 0
            assert got[key]["val_bpw"] == pytest.approx(record["val_bpw"], rel=1e-6, abs=1e-6)
    results = [
        json.loads((r.run.path / "results" / "area0-captions.json").read_text())
        for r in (reference, processes)
    ]
    assert results[0]["test_bpw"] == pytest.approx(results[1]["test_bpw"], rel=1e-6)
    assert [c["generated"] for c in results[0]["captions"]] == [
        c["generated"] for c in results[1]["captions"]
    ]
    assert_no_process_left(processes.run.path, expected_regions=3)


def test_launch_captions_end_to_end(tmp_path: Path, corpus_dir: Path) -> None:
    """launch.py --task captions trains through the processes, survives a cerebellar lesion,
    and leaves metrics, checkpoints, a learning curve and greedy test captions."""
    runs = tmp_path / "runs"
    command = [sys.executable, "launch.py", "--task", "captions", "--captions-dir", str(corpus_dir)]
    command += ["--train-subset", "20", "--val-subset", "10", "--epochs", "2", "--model", "scc-dni"]
    command += ["--truncation", "2", "--ablate", "cerebellum@epoch=1", "--runs-dir", str(runs)]
    result = subprocess.run(
        [*command, "--run-name", "e2e"], cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (
        result.stdout.startswith("completed: captions scc-dni T=2") and "val_bpw=" in result.stdout
    )
    run = runs / "e2e"
    for name in (
        "figures/learning_curve.png",
        "checkpoints/area0.pt",
        "results/area0-captions.json",
    ):
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["headline"]["metric"] == "val_bpw"
    area = [per_epoch(run)[("area0", e)] for e in range(2)]
    assert area[0]["predictions"] > 0 and area[1]["predictions"] == 0  # lesioned at epoch 1
    assert all(math.isfinite(r["val_bpw"]) and r["val_bpw"] > 0 for r in area)
    captions = json.loads((run / "results" / "area0-captions.json").read_text())
    assert len(captions["captions"]) == 30 and 0 < captions["test_bpw"] < 10
    assert all(len(c["generated"].split()) <= 20 for c in captions["captions"])
    assert_no_process_left(run)
