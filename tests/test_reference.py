"""An independent reference implementation of the paper's learning rule (appendix A) on target
reaching, checked epoch by epoch against the project's in-process runner.

The reference below is a plain PyTorch training loop written from the paper's description, not
from the project's areas / cerebellum / olive code. From the project it takes only the task's
data (the batches), the initial weights (read out of freshly built ``AreaCore`` and
``CerebellumCore`` objects and copied into our own ``nn.LSTM`` / ``nn.Linear`` modules) and the
runner whose per-epoch records it is compared with.

The rule, per truncation k over steps [a, b) of an N-step sequence:

1. s_a: the previous truncation's final state [h; c], detached (a grad-requiring leaf for k > 0;
   zeros for k = 0).
2. forward the LSTM from s_a; L_k = scored-step loss in [a, b) / number of scored steps, absent
   when no step of [a, b) is scored.
3. for b < N with a cerebellum: ĝ_b = C(s_b.detach()).
4. objective = L_k + λ·Σ ĝ_b ⊙ s_b (terms that exist); if neither exists, nothing happens;
   otherwise backward, clip the area's gradient norm to 1, Adam step, zero grads (to None).
5. target for ĝ_a: g̃_a = s_a.grad.
6. the cerebellum recomputes C(s_a) with its current weights and back-propagates
   e = 2(ĝ_a − g̃_a)/B, clips to 1, steps its own Adam (never for zero-dni).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
import structlog
import torch
from torch import nn

from areas.cortex import AreaCore
from ccdni.base.rundir import RunDirectory
from ccdni.base.spec import load_spec
from ccdni.tasks import build_task
from cerebellum.synthesiser import CerebellumCore
from orchestrator.inprocess import run_inprocess

# the paper's / authors' numbers (asserted against the spec, not read from it)
LR = 1e-3
BETAS = (0.9, 0.98)
EPS = 1e-9
CLIP = 1.0
LAMBDA = 0.1
N_STEPS = 10
BATCH = 50

EPOCHS = 150  # enough for the models to part by far more than the tolerance (≈1e-3 at 85)
MODELS = ("lstm", "cc-dni", "scc-dni", "zero-dni")
TOL = {"abs": 1e-5, "rel": 1e-5}


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread, so every reduction runs in a fixed order."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# --- the reference ------------------------------------------------------------------------


def spans(n_steps: int, truncation: int) -> list[tuple[int, int]]:
    """[(0, T), (T, 2T), ...]; the remainder goes in the last truncation."""
    return [(a, min(a + truncation, n_steps)) for a in range(0, n_steps, truncation)]


class RefArea:
    """LSTM + linear readout, state s = [h; c]."""

    def __init__(self, lstm_state: dict, readout_state: dict, input_size: int, hidden: int):
        self.hidden = hidden
        self.lstm = nn.LSTM(input_size, hidden, batch_first=True)
        self.lstm.load_state_dict(lstm_state)
        out = readout_state["weight"].shape[0]
        self.readout = nn.Linear(hidden, out)
        self.readout.load_state_dict(readout_state)
        self.params = [*self.lstm.parameters(), *self.readout.parameters()]
        self.adam = torch.optim.Adam(self.params, lr=LR, betas=BETAS, eps=EPS)

    def forward(self, s: torch.Tensor, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Outputs (B, t, O) of every step and the final state (B, 2H)."""
        h0 = s[:, : self.hidden].unsqueeze(0).contiguous()
        c0 = s[:, self.hidden :].unsqueeze(0).contiguous()
        hs, (hn, cn) = self.lstm(inputs, (h0, c0))
        return self.readout(hs), torch.cat([hn[0], cn[0]], dim=1)


class RefCerebellum:
    """ĝ = nuclei(relu(granule(s))), the granule weight masked for the sparse model."""

    def __init__(self, granule: dict, nuclei: dict, mask: torch.Tensor, sparse: bool):
        self.granule = nn.Linear(granule["weight"].shape[1], granule["weight"].shape[0])
        self.granule.load_state_dict(granule)
        self.nuclei = nn.Linear(nuclei["weight"].shape[1], nuclei["weight"].shape[0])
        self.nuclei.load_state_dict(nuclei)
        self.mask = mask.clone()
        self.sparse = sparse
        self.params = [*self.granule.parameters(), *self.nuclei.parameters()]
        self.adam = torch.optim.Adam(self.params, lr=LR, betas=BETAS, eps=EPS)

    def __call__(self, s: torch.Tensor) -> torch.Tensor:
        w = self.granule.weight * self.mask if self.sparse else self.granule.weight
        return self.nuclei(torch.relu(nn.functional.linear(s, w, self.granule.bias)))

    def learn(self, s_a: torch.Tensor, predicted: torch.Tensor, target: torch.Tensor) -> None:
        """One step on L_C = mean_B ||ĝ_a − g̃_a||², recomputing C(s_a) with current weights."""
        error = 2.0 * (predicted - target) / predicted.shape[0]
        self(s_a.detach()).backward(error)
        torch.nn.utils.clip_grad_norm_(self.params, CLIP)
        self.adam.step()
        self.adam.zero_grad(set_to_none=True)


def scored_loss(outputs: torch.Tensor, batch, a: int, b: int) -> torch.Tensor | None:
    """L_k: squared distance (summed over dims, mean over batch) on scored steps of [a, b),
    over the sequence's number of scored steps; None if [a, b) holds no scored step."""
    mask = batch.loss_steps[a:b]
    if not bool(mask.any()):
        return None
    diff = outputs[:, mask] - batch.targets[:, a:b][:, mask]
    return (diff**2).sum(dim=2).mean(dim=0).sum() / int(batch.loss_steps.sum())


@dataclass
class RefResult:
    train_loss: list[float] = field(default_factory=list)
    val_mse: list[float] = field(default_factory=list)
    optimiser_steps: list[int] = field(default_factory=list)
    cerebellum_steps: int = 0


def initial_weights(spec):
    """(task, area weights, cerebellum weights or None, data-generator copy) for ``spec``,
    read out of freshly built project objects (the runner builds its own from the same spec)."""
    task = build_task(spec)
    core = AreaCore(spec, task, "area0")
    gen = torch.Generator()
    gen.set_state(core.data_generator.get_state())
    area = core.area
    area_w = (
        {k: v.detach().clone() for k, v in area.lstm.state_dict().items()},
        {k: v.detach().clone() for k, v in area.readout.state_dict().items()},
    )
    cb_w = None
    if spec.model != "lstm":
        synth = CerebellumCore(spec, ["area0"]).synthesisers["area0"]
        assert synth.deep is None  # one hidden layer, as in the paper
        cb_w = (
            {k: v.detach().clone() for k, v in synth.granule.state_dict().items()},
            {k: v.detach().clone() for k, v in synth.nuclei.state_dict().items()},
            synth.connectivity.detach().clone(),
            bool(synth.sparse),
        )
    return task, area_w, cb_w, gen


_REFS: dict[tuple, RefResult] = {}


def reference_run(spec) -> RefResult:
    """:func:`train_reference` for ``spec``, cached (several tests read the same runs)."""
    key = (spec.model, spec.truncation, spec.seed, spec.epochs)
    if key not in _REFS:
        _REFS[key] = train_reference(spec)
    return _REFS[key]


def train_reference(spec) -> RefResult:
    """Train ``spec.epochs`` epochs with the paper's rule; per-epoch train loss, val MSE, steps."""
    task, area_w, cb_w, gen = initial_weights(spec)
    area = RefArea(*area_w, task.input_size, spec.hidden)
    cerebellum = RefCerebellum(*cb_w) if cb_w is not None else None
    learns = spec.model in ("cc-dni", "scc-dni")
    result = RefResult()
    for epoch in range(spec.epochs):
        losses, steps = [], 0
        for batch in task.train_batches(epoch, gen):
            n = batch.inputs.shape[1]
            bounds = spans(n, spec.truncation)
            s = torch.zeros(batch.inputs.shape[0], 2 * spec.hidden)
            pending = None  # ĝ_a predicted at the end of the previous truncation
            total = 0.0
            for k, (a, b) in enumerate(bounds):
                s_a = s.detach()
                if k > 0:
                    s_a.requires_grad_(True)
                outputs, s_b = area.forward(s_a, batch.inputs[:, a:b])
                loss = scored_loss(outputs, batch, a, b)
                g_b = cerebellum(s_b.detach()).detach() if cerebellum and b < n else None
                terms = []
                if loss is not None:
                    total += float(loss.detach())
                    terms.append(loss)
                if g_b is not None:
                    terms.append(LAMBDA * (g_b * s_b).sum())
                if terms:
                    sum(terms).backward()
                    torch.nn.utils.clip_grad_norm_(area.params, CLIP)
                    area.adam.step()
                    area.adam.zero_grad(set_to_none=True)
                    steps += 1
                    if pending is not None and s_a.grad is not None and learns:
                        cerebellum.learn(s_a, pending, s_a.grad.detach())
                        result.cerebellum_steps += 1
                pending = g_b
                s = s_b.detach()
            losses.append(total)
        result.train_loss.append(sum(losses) / len(losses))
        result.optimiser_steps.append(steps)
        with torch.no_grad():
            sq_sum, count = 0.0, 0
            for batch in task.validation_batches():
                s0 = torch.zeros(batch.inputs.shape[0], 2 * spec.hidden)
                outputs, _ = area.forward(s0, batch.inputs)
                diff = outputs[:, batch.loss_steps] - batch.targets[:, batch.loss_steps]
                sq = (diff**2).sum(dim=-1)  # (B, |S|)
                sq_sum += float(sq.mean(dim=1).sum())
                count += int(sq.shape[0])
            result.val_mse.append(sq_sum / count)
    return result


# --- the project's runner (cached: several tests read the same runs) -----------------------

_RUNS: dict[tuple, list[dict]] = {}


def make_spec(model: str, truncation: int, seed: int = 0, epochs: int = EPOCHS):
    spec = load_spec(model=model, truncation=truncation, epochs=epochs, seed=seed)
    assert spec.task == "target-reaching" and spec.update == "truncation"
    assert (spec.lr, (spec.adam_beta1, spec.adam_beta2), spec.adam_eps) == (LR, BETAS, EPS)
    assert (spec.grad_clip, spec.synthetic_scale, spec.batch_size) == (CLIP, LAMBDA, BATCH)
    assert spec.cerebellum_lr in (0.0, LR) and not spec.step_without_feedback
    return spec


def runner_metrics(spec, tmp_path_factory) -> list[dict]:
    """The area's per-epoch records of the in-process runner for ``spec`` (cached)."""
    key = (spec.model, spec.truncation, spec.seed, spec.epochs)
    if key not in _RUNS:
        spec = spec.replace(runs_dir=str(tmp_path_factory.mktemp("runs")), figures=False)
        run = RunDirectory.create(spec)
        run_inprocess(spec, run, structlog.get_logger())
        records = sorted(run.metrics(region="area0"), key=lambda r: r["epoch"])
        assert [r["epoch"] for r in records] == list(range(spec.epochs))
        _RUNS[key] = records
    return _RUNS[key]


# --- tests ---------------------------------------------------------------------------------


def test_reference_batches_and_weights_are_deterministic():
    """Two builds from one spec give the same initial weights and batches (the comparison's
    premise: the runner starts from what the reference copied)."""
    spec = make_spec("scc-dni", 2, epochs=2)
    first, second = initial_weights(spec), initial_weights(spec)
    for w1, w2 in zip(first[1], second[1]):
        for name in w1:
            assert torch.equal(w1[name], w2[name]), name
    for w1, w2 in zip(first[2][:3], second[2][:3]):
        if isinstance(w1, dict):
            for name in w1:
                assert torch.equal(w1[name], w2[name]), name
        else:
            assert torch.equal(w1, w2)
    assert first[2][3] is True and torch.all(first[2][2].sum(dim=1) == spec.sparsity_k)
    assert float(first[2][1]["weight"].abs().sum()) == 0.0  # output layer starts at zero
    b1 = next(iter(first[0].train_batches(0, first[3])))
    b2 = next(iter(second[0].train_batches(0, second[3])))
    assert torch.equal(b1.inputs, b2.inputs) and torch.equal(b1.targets, b2.targets)
    assert b1.inputs.shape[:2] == (BATCH, N_STEPS)
    assert b1.loss_steps.tolist() == [False] * (N_STEPS - 1) + [True]


CASES = [(m, t, 0) for m in MODELS for t in (2, 3)] + [("cc-dni", 3, 1), ("scc-dni", 2, 1)]


@pytest.mark.parametrize(("model", "truncation", "seed"), CASES)
def test_reference_matches_runner(model, truncation, seed, tmp_path_factory):
    """Per-epoch train_loss and val_mse of the independent reference loop equal the in-process
    runner's to 1e-5 for every model and truncation."""
    spec = make_spec(model, truncation, seed)
    got = runner_metrics(spec, tmp_path_factory)
    ref = reference_run(spec)
    for epoch, record in enumerate(got):
        assert record["train_loss"] == pytest.approx(ref.train_loss[epoch], **TOL), (
            "train_loss",
            epoch,
        )
        assert record["val_mse"] == pytest.approx(ref.val_mse[epoch], **TOL), ("val_mse", epoch)
    assert [r["optimiser_steps"] for r in got] == ref.optimiser_steps


@pytest.mark.parametrize(
    ("model", "expected"), [("lstm", 1), ("cc-dni", 5), ("scc-dni", 5), ("zero-dni", 5)]
)
def test_optimiser_steps_per_sequence(model, expected, tmp_path_factory):
    """At T=2 the runner (and the reference) step once per sequence for lstm (only the last
    truncation has a gradient) and once per truncation (5) for the models with a cerebellum."""
    spec = make_spec(model, 2)
    assert len(spans(N_STEPS, 2)) == 5
    got = runner_metrics(spec, tmp_path_factory)
    assert all(r["optimiser_steps"] == expected for r in got), [r["optimiser_steps"] for r in got]
    ref = reference_run(spec)
    assert ref.optimiser_steps == [expected] * spec.epochs
    learning = model in ("cc-dni", "scc-dni")
    assert ref.cerebellum_steps == (4 * spec.epochs if learning else 0)


def test_models_really_differ(tmp_path_factory):
    """The comparison is not vacuous: cc-dni's final val_mse differs from lstm's and zero-dni's,
    and zero-dni's differs from lstm's."""
    final = {
        m: runner_metrics(make_spec(m, 2), tmp_path_factory)[-1]["val_mse"]
        for m in ("lstm", "cc-dni", "zero-dni")
    }
    assert all(math.isfinite(v) for v in final.values())
    margin = 0.01  # ten times the approx tolerance at val_mse ≈ 85 (rel 1e-5)
    assert abs(final["cc-dni"] - final["lstm"]) > margin, final
    assert abs(final["cc-dni"] - final["zero-dni"]) > margin, final
    assert abs(final["zero-dni"] - final["lstm"]) > margin, final


@pytest.mark.parametrize(("model", "other"), [("cc-dni", "lstm"), ("cc-dni", "zero-dni")])
def test_reference_discriminates_models(model, other, tmp_path_factory):
    """At the comparison's tolerance the reference for one model does not match the runner's
    record of another, so a match means the learning rules agree."""
    ref = reference_run(make_spec(model, 2))
    got = runner_metrics(make_spec(other, 2), tmp_path_factory)
    assert [r["val_mse"] for r in got] != pytest.approx(ref.val_mse, **TOL)
