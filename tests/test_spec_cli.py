"""The run spec, the command line and the target-reaching task."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ccdni.base.spec import FIELDS, RunSpec, SpecError, load_spec, to_toml
from ccdni.tasks.base import build_task
from ccdni.tasks.target_reaching import RADIUS, TargetReaching, integer_cues, target_points
from orchestrator.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
SEQMNIST_TASKS = ("seqmnist", "c-seqmnist", "dd-seqmnist", "ld-seqmnist")


# --- 1. defaults, presets, precedence -----------------------------------------------------------


def test_defaults_are_the_papers_target_reaching_numbers() -> None:
    spec = load_spec()
    assert spec == RunSpec()
    assert spec.task == "target-reaching" and spec.n_targets == 6 and spec.cue == "integer"
    assert spec.hidden == 10 and spec.state_size == 20
    assert spec.cerebellum_hidden == 80 and spec.cerebellum_layers == 1
    assert spec.lr == 1e-3 and spec.cerebellar_lr == 1e-3
    assert spec.batch_size == 50 and spec.epochs == 300 and spec.truncation == 2
    assert spec.synthetic_scale == 0.1
    assert (spec.adam_beta1, spec.adam_beta2, spec.adam_eps) == (0.9, 0.98, 1e-9)
    assert spec.grad_clip == 1.0
    assert spec.sparsity_k == 4 and spec.input_noise_var == 0.1
    assert spec.granule_inputs is None and spec.uses_cerebellum
    assert spec.expansion_ratio == 4.0


@pytest.mark.parametrize("task", SEQMNIST_TASKS)
def test_seqmnist_preset(task: str) -> None:
    spec = load_spec(task=task)
    assert (spec.hidden, spec.cerebellum_hidden, spec.lr, spec.epochs) == (30, 300, 1e-4, 25)
    assert spec.batch_size == 50


def test_noisy_cue_preset() -> None:
    assert load_spec(cue="28d-noisy").hidden == 30
    assert load_spec(cue="28d-noisy", hidden=12).hidden == 12
    assert load_spec(cue="2d").hidden == 10


def test_precedence_defaults_preset_toml_flags(tmp_path: Path) -> None:
    path = tmp_path / "spec.toml"
    path.write_text('task = "seqmnist"\nhidden = 20\nbatch_size = 25\n')
    spec = load_spec(path)
    assert spec.task == "seqmnist"
    assert spec.hidden == 20 and spec.batch_size == 25  # TOML beats the preset
    assert spec.cerebellum_hidden == 300 and spec.lr == 1e-4  # the preset beats the defaults
    assert spec.adam_beta2 == 0.98  # untouched default
    flagged = load_spec(path, hidden=40, lr=5e-4, epochs=None)  # None: flag not given
    assert flagged.hidden == 40 and flagged.lr == 5e-4  # flags beat TOML and preset
    assert flagged.batch_size == 25 and flagged.epochs == 25
    # a [run] table works too, and a flag may change the task (and with it the preset)
    table = tmp_path / "table.toml"
    table.write_text('[run]\nmodel = "lstm"\ncerebellum_hidden = 50\n')
    spec = load_spec(table, task="c-seqmnist")
    assert spec.model == "lstm" and spec.cerebellum_hidden == 50 and spec.hidden == 30


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"task": "seqmnist", "hidden": 7, "model": "scc-dni", "sparsity_k": 3, "download": True},
        {"run_name": 'quote " and back\\slash', "data_dir": "/tmp/ü data", "lr": 2.5e-7},
        {"cue": "28d-noisy", "hidden": 10, "cerebellum_lr": 0.0, "figures": False},
    ],
)
def test_to_toml_round_trips(tmp_path: Path, changes: dict) -> None:
    spec = load_spec(**changes)
    path = tmp_path / "resolved.toml"
    path.write_text(to_toml(spec))
    assert load_spec(path) == spec


# --- 2. bad values ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"model": "foo"}, "model"),
        ({"truncation": 0}, "truncation"),
        ({"truncation": "zero"}, "truncation"),
        ({"truncation": 2.5}, "truncation"),
        ({"lr": -1.0}, "lr"),
        ({"lr": 0.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"lr": float("inf")}, "lr"),
        ({"epochs": 0}, "epochs"),
        ({"hidden": True}, "hidden"),
        ({"synthetic_scale": -0.1}, "synthetic_scale"),
        ({"adam_beta2": 1.0}, "adam_beta2"),
        ({"cerebellum_layers": 3}, "cerebellum_layers"),
        ({"model": "scc-dni", "hidden": 2, "sparsity_k": 5}, "sparsity_k"),
        ({"model": "scc-dni", "sparsity_k": 0}, "sparsity_k"),
        ({"no_such_field": 1}, "no_such_field"),
        ({"download": "maybe"}, "download"),
    ],
)
def test_bad_values_raise_spec_error_naming_the_field(changes: dict, field: str) -> None:
    with pytest.raises(SpecError, match=field):
        load_spec(**changes)


def test_k_up_to_2h_is_allowed() -> None:
    assert load_spec(model="scc-dni", hidden=2, sparsity_k=4).granule_inputs == 4


def test_bad_toml_files(tmp_path: Path) -> None:
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("hidden = 10\ncolour = 'red'\n")
    with pytest.raises(SpecError, match="colour"):
        load_spec(unknown)
    invalid = tmp_path / "invalid.toml"
    invalid.write_text("hidden = = 10\n")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec(invalid)
    wrong_type = tmp_path / "wrong.toml"
    wrong_type.write_text("epochs = 'many'\n")
    with pytest.raises(SpecError, match="epochs"):
        load_spec(wrong_type)
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "missing.toml")


def test_spec_is_frozen() -> None:
    spec = load_spec()
    with pytest.raises(AttributeError):
        spec.hidden = 3  # type: ignore[misc]


# --- 3. the command line ------------------------------------------------------------------------

SAFETY = [
    "--inprocess",
    "--epochs",
    "1",
    "--no-figures",
    "--no-progress",
]  # if parsing wrongly passed


def launch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "launch.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_run_help_lists_every_field() -> None:
    result = launch("run", "--help")
    assert result.returncode == 0, result.stderr
    for name in FIELDS:
        assert "--" + name.replace("_", "-") in result.stdout, name
    assert "--spec" in result.stdout
    # flags not given stay None, so they cannot override the TOML or the preset
    args = build_parser().parse_args(["run", "--hidden", "3", "--no-figures"])
    assert args.hidden == 3 and args.figures is False
    assert all(getattr(args, name) is None for name in FIELDS if name not in ("hidden", "figures"))


@pytest.mark.parametrize(
    ("args", "mention"),
    [
        (["--no-such-flag"], "--no-such-flag"),
        (["--truncation", "zero"], "truncation"),
        (["--truncation", "0"], "truncation"),
        (["--model", "foo"], "model"),
        (["--lr", "-1"], "lr"),
        (["--lr", "nan"], "lr"),
        (["--spec", "no/such/spec.toml"], "does not exist"),
    ],
    ids=[
        "unknown-flag",
        "truncation-zero",
        "truncation-0",
        "model-foo",
        "lr-negative",
        "lr-nan",
        "missing-spec",
    ],
)
@pytest.mark.parametrize("command", [["run"], []], ids=["run", "implicit-run"])
def test_bad_flags_exit_2_with_one_line(tmp_path: Path, command, args, mention) -> None:
    runs = tmp_path / "runs"
    result = launch(*command, "--runs-dir", str(runs), *SAFETY, *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert mention in lines[0] and "error" in lines[0]
    assert result.stdout == ""
    assert not runs.exists() or not any(runs.iterdir())


# --- 4. target reaching -------------------------------------------------------------------------


def test_cues_and_targets_for_six_targets() -> None:
    task = TargetReaching()
    assert task.n_steps == 10 and task.input_size == 1 and task.output_size == 2
    assert task.cue_vectors.shape == (7, 1)
    assert sorted(task.cue_vectors[:, 0].tolist()) == [-3, -2, -1, 0, 1, 2, 3]
    assert task.cue_vectors[0, 0] == 0  # class 0: stay at the origin
    targets = task.targets
    assert targets.shape == (7, 2)
    assert torch.equal(targets[0], torch.zeros(2))
    radii = targets[1:].norm(dim=1)
    torch.testing.assert_close(radii, torch.full((6,), RADIUS), rtol=0, atol=1e-5)
    angles = torch.atan2(targets[1:, 1].double(), targets[1:, 0].double()) % (2 * math.pi)
    steps = torch.diff(torch.sort(angles).values)
    torch.testing.assert_close(steps, torch.full((5,), 2 * math.pi / 6, dtype=torch.float64))
    assert len({tuple(t) for t in targets.tolist()}) == 7


def test_batches_score_only_the_last_step() -> None:
    task = TargetReaching(batch_size=64)
    (batch,) = list(task.train_batches(0, torch.Generator().manual_seed(0)))
    assert batch.inputs.shape == (64, 10, 1) and batch.targets.shape == (64, 10, 2)
    assert batch.loss_steps.tolist() == [False] * 9 + [True]
    assert torch.equal(batch.inputs[:, 0], task.cue_vectors[batch.labels])
    assert bool((batch.inputs[:, 1:] == 0).all()), "zeros after the cue"
    assert torch.equal(batch.targets[:, -1], task.targets[batch.labels])
    # only the last output matters for the loss
    outputs = torch.randn(64, 10, 2)
    changed = outputs.clone()
    changed[:, :-1] += 100.0
    loss = task.truncation_loss(outputs, batch, 0, 10)
    assert float(loss) == float(task.truncation_loss(changed, batch, 0, 10))
    expected = ((outputs[:, -1] - batch.targets[:, -1]) ** 2).sum(dim=1).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=0)
    assert task.truncation_loss(outputs, batch, 0, 9) is None, "no scored step: no loss at all"
    # a static model at the origin scores the mean squared radius
    zero = task.evaluate(torch.zeros(64, 10, 2), batch)["mse"]
    moved = (batch.labels != 0).float().mean() * RADIUS**2
    assert zero == pytest.approx(float(moved), rel=1e-5)


def test_validation_is_fixed_and_balanced() -> None:
    task = TargetReaching()
    (first,) = list(task.validation_batches())
    (second,) = list(task.validation_batches())
    assert torch.equal(first.inputs, second.inputs) and first.size == 70
    assert torch.bincount(first.labels).tolist() == [10] * 7


def test_noisy_28d_cue() -> None:
    spec = load_spec(cue="28d-noisy", batch_size=2000)
    assert spec.hidden == 30
    task = build_task(spec)
    assert task.input_size == 28
    (batch,) = list(task.train_batches(0, torch.Generator().manual_seed(0)))
    assert batch.inputs.shape == (2000, 10, 28)
    noise = batch.inputs.clone()
    noise[:, 0] -= task.cue_vectors[batch.labels]
    # 2000·10·28 samples: the variance estimate has sd ≈ 2e-4; the tolerance is 0.01
    assert float(noise.var()) == pytest.approx(0.1, abs=0.01)
    assert float(noise.mean()) == pytest.approx(0.0, abs=0.01)
    codes = task.cue_vectors
    assert codes.shape == (7, 28) and set(codes.unique().tolist()) <= {0.0, 1.0}
    assert bool((codes[0] == 0).all())
    assert len({tuple(c) for c in codes.tolist()}) == 7, "one code per target"
    quiet = build_task(load_spec(cue="28d-noisy", input_noise_var=0.5, batch_size=2000))
    (batch,) = list(quiet.train_batches(0, torch.Generator().manual_seed(0)))
    assert float(batch.inputs[:, 1:].var()) == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize("n_targets", [3, 9])
def test_three_and_nine_targets(n_targets: int) -> None:
    task = build_task(load_spec(n_targets=n_targets))
    cues = task.cue_vectors[:, 0].tolist()
    assert len(cues) == n_targets + 1 and len(set(cues)) == n_targets + 1
    assert cues[0] == 0 and all(c == int(c) and c != 0 for c in cues[1:])
    # an odd count puts the extra cue on the positive side (documented in integer_cues)
    expected = {3: [-1, 1, 2], 9: [-4, -3, -2, -1, 1, 2, 3, 4, 5]}[n_targets]
    assert sorted(cues[1:]) == expected == integer_cues(n_targets)
    targets = target_points(n_targets)
    assert torch.equal(task.targets, targets) and targets.shape == (n_targets + 1, 2)
    torch.testing.assert_close(
        targets[1:].norm(dim=1), torch.full((n_targets,), RADIUS), rtol=0, atol=1e-5
    )
    (batch,) = list(task.train_batches(0, torch.Generator().manual_seed(0)))
    assert int(batch.labels.max()) <= n_targets
    assert torch.bincount(next(task.validation_batches()).labels).numel() == n_targets + 1


def test_other_cue_kinds() -> None:
    scaled = TargetReaching(cue="integer-x0.1")
    torch.testing.assert_close(scaled.cue_vectors, 0.1 * TargetReaching().cue_vectors)
    planar = TargetReaching(cue="2d")
    assert planar.input_size == 2
    torch.testing.assert_close(planar.cue_vectors, 0.1 * planar.targets)
    with pytest.raises(ValueError, match="cue"):
        TargetReaching(cue="nope")
