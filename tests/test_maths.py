"""The maths of the socket-free cores against hand-computed and autograd references.

Tolerances: float64 checks (built under ``torch.set_default_dtype(torch.float64)``, because
``CorticalArea.initial_state`` makes its zeros in the default dtype, so ``.double()`` on the
module alone would feed a float32 state to a float64 LSTM) use rtol 1e-9 / atol 1e-11 — the
only differences there are summation orders. float32 checks state their tolerance inline.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from areas.cortex import AreaCore, CorticalArea, TruncatedLearner, truncation_bounds
from ccdni.base.rundir import RunDirectory
from ccdni.base.spec import load_spec
from ccdni.tasks.base import Batch, Task, build_task
from cerebellum.synthesiser import CerebellumCore, Synthesiser, granule_connectivity
from olive.comparator import InferiorOlive, climbing_fibre_error
from orchestrator.inprocess import DirectLink, run_inprocess
from wire.ids import StepId

F64 = {"rtol": 1e-9, "atol": 1e-11}


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


class RegressionTask(Task):
    """A fixed random regression batch scored at chosen steps (losses in several truncations)."""

    name = "regression"
    loss_kind = "mse"

    def __init__(self, n_steps=10, input_size=3, output_size=2, batch_size=4, scored=(1, 4, 6, 9)):
        self.n_steps = n_steps
        self.input_size = input_size
        self.output_size = output_size
        gen = torch.Generator().manual_seed(1234)
        dtype = torch.get_default_dtype()
        inputs = torch.randn(batch_size, n_steps, input_size, generator=gen, dtype=dtype)
        targets = torch.randn(batch_size, n_steps, output_size, generator=gen, dtype=dtype)
        loss_steps = torch.zeros(n_steps, dtype=torch.bool)
        loss_steps[list(scored)] = True
        self.batch = Batch(inputs, targets, loss_steps, torch.zeros(batch_size, dtype=torch.long))

    def train_batches(self, epoch, generator):
        yield self.batch

    def validation_batches(self):
        yield self.batch


def make_learner(task: Task, hidden: int = 5, **spec_changes):
    spec = load_spec(hidden=hidden, **spec_changes)
    torch.manual_seed(7)
    area = CorticalArea(task.input_size, hidden, task.output_size)
    return area, TruncatedLearner(area, task, spec), spec


def chained_forward(area: CorticalArea, task: Task, batch: Batch, bounds):
    """Forward truncation by truncation *without* detaching: boundary states and losses L_k."""
    state = area.initial_state(batch.size)
    states, losses = [], []
    for a, b in bounds:
        outputs, _, state = area(batch.inputs[:, a:b], state)
        loss = task.truncation_loss(outputs, batch, a, b)  # None: no scored step
        losses.append(outputs.sum() * 0.0 if loss is None else loss)  # L_k = 0 in the sum
        states.append(state)
    return states, losses


# --- 1. truncation bounds ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "t", "expected"),
    [
        (10, 3, [(0, 3), (3, 6), (6, 9), (9, 10)]),
        (28, 5, [(0, 5), (5, 10), (10, 15), (15, 20), (20, 25), (25, 28)]),
        (10, 2, [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)]),
        (10, 10, [(0, 10)]),
        (10, 11, [(0, 10)]),
        (10, 100, [(0, 10)]),
        (1, 1, [(0, 1)]),
        (7, 1, [(i, i + 1) for i in range(7)]),
    ],
)
def test_truncation_bounds(n: int, t: int, expected: list[tuple[int, int]]) -> None:
    assert truncation_bounds(n, t) == expected


@pytest.mark.parametrize("n", [1, 9, 10, 28, 31])
@pytest.mark.parametrize("t", [1, 2, 3, 4, 5, 7, 10, 40])
def test_truncation_bounds_partition_with_remainder_last(n: int, t: int) -> None:
    bounds = truncation_bounds(n, t)
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(b0[1] == b1[0] for b0, b1 in zip(bounds, bounds[1:]))  # contiguous
    sizes = [b - a for a, b in bounds]
    assert all(size == t for size in sizes[:-1])  # every truncation but the last has T steps
    assert sizes[-1] == (n % t or min(t, n))  # the remainder goes to the last one
    assert len(bounds) == math.ceil(n / t)


# --- 2. an oracle synthesiser turns truncated BPTT into full BPTT ------------------------------


@pytest.mark.parametrize(
    ("truncation", "scale", "scored"),
    [(3, 1.0, (1, 4, 6, 9)), (4, 0.1, (2, 5, 9)), (2, 0.5, (0, 3, 4, 7, 9)), (3, 1.0, (8,))],
)
def test_oracle_synthesiser_recovers_full_bptt(float64, truncation, scale, scored) -> None:
    task = RegressionTask(scored=scored)
    area, learner, _ = make_learner(
        task, update="sequence", synthetic_scale=scale, grad_clip=0.0, truncation=truncation
    )
    batch = task.batch
    bounds = truncation_bounds(task.n_steps, truncation)
    names = [name for name, _ in area.named_parameters()]
    params = [p for _, p in area.named_parameters()]

    # full BPTT of the whole-sequence loss L
    outputs, _, _ = area(batch.inputs, area.initial_state(batch.size))
    loss = task.truncation_loss(outputs, batch, 0, task.n_steps)
    full = dict(zip(names, torch.autograd.grad(loss, params)))

    # the true future gradient ∂L_{>k}/∂s_b at every boundary
    states, losses = chained_forward(area, task, batch, bounds)
    torch.testing.assert_close(sum(losses), loss, **F64)
    future = [
        torch.autograd.grad(sum(losses[k + 1 :]), states[k], retain_graph=True)[0]
        for k in range(len(bounds) - 1)
    ]
    for k, g in enumerate(future):  # the future matters exactly where later steps are scored
        has_future_loss = any(step >= bounds[k][1] for step in scored)
        assert (float(g.abs().max()) > 1e-6) == has_future_loss, k

    recorded: list[dict[str, torch.Tensor]] = []
    learner.step = lambda: recorded.append(
        {n: p.grad.detach().clone() for n, p in area.named_parameters()}
    )
    sequence = learner.sequence(batch, epoch=3, batch_index=1)
    assert sequence.n_truncations == len(bounds)
    for k in range(len(bounds)):
        efference = sequence.forward(k)
        last = k == len(bounds) - 1
        if last:
            assert efference is None
            prediction = None
        else:
            assert efference.ids == StepId(3, 1, k)
            assert not efference.state.requires_grad
            torch.testing.assert_close(efference.state, states[k].detach(), **F64)
            prediction = future[k] / scale  # oracle: ĝ_b such that λ·ĝ_b = ∂L_{>k}/∂s_b
        target = sequence.backward(k, prediction)
        if k == 0:
            assert target is None
        else:
            # with an oracle the bootstrapped target is the true future gradient at s_a
            assert target.ids == StepId(3, 1, k - 1)
            torch.testing.assert_close(target.feedback, future[k - 1], **F64)
        assert len(recorded) == (1 if last else 0), "update='sequence' steps once, at the end"

    for name in names:
        torch.testing.assert_close(recorded[0][name], full[name], **F64, msg=name)
    assert sequence.loss == pytest.approx(float(loss.detach()), rel=1e-12, abs=1e-14)
    torch.testing.assert_close(sequence.full_outputs(), outputs.detach(), **F64)

    if len(bounds) > 1:  # without the oracle the gradient really is different (truncated)
        area.zero_grad(set_to_none=True)
        plain = learner.sequence(batch, 0, 0)
        for k in range(len(bounds)):
            plain.forward(k)
            plain.backward(k, None)
        gap = max(float((recorded[-1][n] - full[n]).abs().max()) for n in names)
        assert gap > 1e-6


# --- 3. the bootstrapped target ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("truncation", "scored"), [(3, (1, 4, 6, 9)), (2, (1, 9)), (4, (9,)), (3, (0, 2, 5, 8))]
)
def test_bootstrapped_target_matches_autograd(float64, truncation, scored) -> None:
    scale = 0.1
    task = RegressionTask(scored=scored)
    area, learner, _ = make_learner(
        task, update="sequence", synthetic_scale=scale, truncation=truncation
    )
    batch = task.batch
    bounds = truncation_bounds(task.n_steps, truncation)
    n = len(bounds)
    gen = torch.Generator().manual_seed(99)
    predictions = [torch.randn(batch.size, 2 * area.hidden, generator=gen) for _ in range(n - 1)]

    # independent reference, computed before the pass (update="sequence": no step until the
    # last truncation's target has been read off)
    with torch.no_grad():
        states, _ = chained_forward(area, task, batch, bounds)
    references: list[torch.Tensor | None] = [None]
    directs: list[torch.Tensor | None] = [None]
    for k in range(1, n):
        a, b = bounds[k]
        s_a = states[k - 1].detach().clone().requires_grad_(True)
        outputs, _, _ = area(batch.inputs[:, a:b], s_a)
        loss = task.truncation_loss(outputs, batch, a, b)
        # no scored step: ∂L_k/∂s_a is exactly zero (L_k does not exist)
        direct = torch.zeros_like(s_a) if loss is None else torch.autograd.grad(loss, s_a)[0]
        directs.append(direct)
        if k < n - 1:  # g̃_a = ∂L_k/∂s_a + λ·(∂s_b/∂s_a)ᵀ ĝ_b
            _, vjp = torch.func.vjp(lambda s, a=a, b=b: area(batch.inputs[:, a:b], s)[2], s_a)
            (through,) = vjp(predictions[k])
            references.append((direct + scale * through).detach())
        else:  # the last truncation: no synthetic feedback, g̃_a = ∂L_k/∂s_a
            references.append(direct.detach())

    sequence = learner.sequence(batch, epoch=0, batch_index=5)
    for k in range(n):
        efference = sequence.forward(k)
        assert (efference is None) == (k == n - 1), "no efference (and no ĝ) at sequence end"
        target = sequence.backward(k, predictions[k] if k < n - 1 else None)
        if k == 0:
            assert target is None
            continue
        assert target.ids == StepId(0, 5, k - 1)
        assert not target.feedback.requires_grad
        torch.testing.assert_close(target.feedback, references[k], **F64, msg=f"k={k}")

    # the synthetic term really enters wherever a future exists
    for k in range(1, n - 1):
        assert float((references[k] - directs[k]).abs().max()) > 1e-6


def test_prediction_shape_is_checked() -> None:
    task = RegressionTask()
    _, learner, _ = make_learner(task, truncation=3)
    sequence = learner.sequence(task.batch, 0, 0)
    sequence.forward(0)
    with pytest.raises(ValueError, match="shape"):
        sequence.backward(0, torch.zeros(task.batch.size, 3))


# --- 4. no cerebellum: plain truncated BPTT -----------------------------------------------------


def test_no_cerebellum_is_plain_truncated_bptt() -> None:
    spec = load_spec(model="lstm", update="truncation", truncation=3, epochs=4)
    task = build_task(spec)
    core = AreaCore(spec, task)
    reference = copy.deepcopy(core.area)
    generator = torch.Generator()
    generator.set_state(core.data_generator.get_state())
    optimiser = torch.optim.Adam(reference.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-9)

    losses = []
    for _ in range(spec.epochs):
        metrics = core.run_epoch(None)
        assert metrics["predictions"] == 0 and metrics["targets_sent"] == 0
        losses.append(metrics["train_loss"])

    ref_losses = []
    for epoch in range(spec.epochs):
        for batch in task.train_batches(epoch, generator):
            state = reference.initial_state(batch.size)
            total = 0.0
            for a, b in truncation_bounds(batch.n_steps, 3):
                outputs, _, state = reference(batch.inputs[:, a:b], state.detach())
                loss = task.truncation_loss(outputs, batch, a, b)
                if loss is None:  # no scored step, no synthetic feedback: no gradient, no step
                    continue
                loss.backward()
                nn.utils.clip_grad_norm_(reference.parameters(), 1.0)
                optimiser.step()
                optimiser.zero_grad()
                total += float(loss.detach())
            ref_losses.append(total)

    assert losses == ref_losses
    for (name, got), want in zip(core.area.named_parameters(), reference.parameters()):
        assert torch.equal(got, want), (name, float((got - want).abs().max()))
    initial = AreaCore(spec, task).area
    assert not torch.equal(initial.lstm.weight_hh_l0, core.area.lstm.weight_hh_l0), "trained"


# --- 5. the synthesiser -----------------------------------------------------------------------


@pytest.mark.parametrize("layers", [1, 2])
def test_synthesiser_init_and_shapes(layers: int) -> None:
    torch.manual_seed(0)
    n_state, n_granule = 20, 80
    synthesiser = Synthesiser(n_state, n_granule, layers=layers)
    assert not synthesiser.sparse
    assert synthesiser.granule.weight.shape == (n_granule, n_state)
    assert synthesiser.nuclei.weight.shape == (n_state, n_granule)
    assert synthesiser.nuclei.bias.shape == (n_state,)
    if layers == 2:
        assert synthesiser.deep.weight.shape == (n_granule, n_granule)
    else:
        assert synthesiser.deep is None
    assert torch.equal(synthesiser.nuclei.weight, torch.zeros(n_state, n_granule))
    assert torch.equal(synthesiser.nuclei.bias, torch.zeros(n_state))
    prediction = synthesiser(torch.randn(7, n_state) * 5)
    assert prediction.shape == (7, n_state)
    assert torch.equal(prediction, torch.zeros(7, n_state)), "predictions start exactly at zero"

    layers_to_check = [(synthesiser.granule, n_state)]
    if layers == 2:
        layers_to_check.append((synthesiser.deep, n_granule))
    for linear, fan_in in layers_to_check:
        bound = 1 / math.sqrt(fan_in)  # kaiming-uniform a=√5 and the default bias init
        w, b = linear.weight.detach(), linear.bias.detach()
        assert float(w.abs().max()) <= bound and float(b.abs().max()) <= bound
        # uniform on ±bound: spread close to the bound, std ≈ bound/√3 (10 %)
        assert float(w.abs().max()) > 0.9 * bound and float(b.abs().max()) > 0.5 * bound
        assert float(w.std()) == pytest.approx(bound / math.sqrt(3), rel=0.1)


def test_granule_connectivity_exactly_k() -> None:
    mask = granule_connectivity(300, 20, 4, torch.Generator().manual_seed(3))
    assert mask.shape == (300, 20)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert bool((mask.sum(dim=1) == 4).all())
    again = granule_connectivity(300, 20, 4, torch.Generator().manual_seed(3))
    assert torch.equal(mask, again)
    assert bool((mask.sum(dim=0) > 0).all()), "random choice reaches every input"
    full = granule_connectivity(5, 6, 6, torch.Generator().manual_seed(0))
    assert torch.equal(full, torch.ones(5, 6))


def test_sparse_synthesiser_keeps_k_inputs_through_training() -> None:
    hidden, n_granule, k = 10, 80, 4
    spec = load_spec(model="scc-dni", hidden=hidden, cerebellum_hidden=n_granule, sparsity_k=k)
    core = CerebellumCore(spec, ["area0"])
    synthesiser = core.synthesisers["area0"]
    assert synthesiser.sparse
    mask = synthesiser.connectivity.clone()
    assert bool((mask.sum(dim=1) == k).all())
    initial = synthesiser.granule.weight.detach().clone()
    assert bool((synthesiser.inputs_per_granule() == k).all())
    assert torch.equal(initial != 0, mask.bool())
    nonzero_before = int((initial != 0).sum())

    gen = torch.Generator().manual_seed(5)
    for step in range(200):
        ids = StepId(0, step, 0)
        core.predict("area0", ids, torch.randn(8, 2 * hidden, generator=gen))
        assert core.learn("area0", ids, torch.randn(8, 2 * hidden, generator=gen))
    weight = synthesiser.granule.weight.detach()
    assert core.errors_applied["area0"] == 200
    assert torch.equal(synthesiser.connectivity, mask), "the mask is fixed for the run"
    assert bool((synthesiser.inputs_per_granule() == k).all())
    assert bool((weight[mask == 0] == 0).all()), "masked weights stay exactly zero"
    assert int((weight != 0).sum()) == nonzero_before
    assert not torch.equal(weight[mask == 1], initial[mask == 1]), "it did learn"


def test_dense_cerebellum_has_full_connectivity() -> None:
    core = CerebellumCore(load_spec(model="cc-dni", hidden=4, cerebellum_hidden=16), ["area0"])
    synthesiser = core.synthesisers["area0"]
    assert not synthesiser.sparse
    assert torch.equal(synthesiser.connectivity, torch.ones(16, 8))


# --- 6. the olive -----------------------------------------------------------------------------


def test_climbing_fibre_error_by_hand() -> None:
    prediction = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]], dtype=torch.float64)
    target = torch.tensor([[0.0, 0.0, 0.0], [0.5, 1.0, 1.0]], dtype=torch.float64)
    loss, error = climbing_fibre_error(prediction, target)
    # rows: ||(1,2,0)||² = 5, ||(0,-2,2)||² = 8 → mean 6.5; e = 2(p−t)/B = (p−t)
    assert loss == pytest.approx(6.5, abs=1e-15)
    torch.testing.assert_close(error, prediction - target, rtol=0, atol=0)
    p = prediction.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(((p - target) ** 2).sum(dim=1).mean(), p)
    torch.testing.assert_close(error, grad, **F64)

    gen = torch.Generator().manual_seed(0)
    p = torch.randn(5, 6, generator=gen, dtype=torch.float64)
    t = torch.randn(5, 6, generator=gen, dtype=torch.float64)
    loss, error = climbing_fibre_error(p, t)
    assert loss == pytest.approx(float(((p - t) ** 2).sum() / 5), rel=1e-12)
    torch.testing.assert_close(error, 2 * (p - t) / 5, **F64)


@pytest.mark.parametrize("prediction_first", [True, False])
def test_olive_pairs_in_either_order(prediction_first: bool) -> None:
    olive = InferiorOlive()
    ids = StepId(2, 0, 1)
    p, t = torch.ones(3, 4), torch.zeros(3, 4)
    first, second = (
        (olive.receive_prediction, olive.receive_target),
        (olive.receive_target, olive.receive_prediction),
    )[0 if prediction_first else 1]
    assert first("area0", ids, p if prediction_first else t) is None
    # other interfaces and ids do not pair with it
    assert second("area1", ids, t if prediction_first else p) is None
    assert second("area0", StepId(2, 0, 2), t if prediction_first else p) is None
    fibre = second("area0", (2, 0, 1), t if prediction_first else p)  # a plain tuple pairs too
    assert fibre is not None
    assert fibre.interface == "area0" and fibre.ids == ids
    assert fibre.loss == pytest.approx(4.0)
    torch.testing.assert_close(fibre.error, torch.full((3, 4), 2 / 3), rtol=0, atol=1e-7)
    # paired items are consumed: the same target again waits for a new prediction
    assert second("area0", ids, t if prediction_first else p) is None


def test_olive_expiry_and_epoch_summary() -> None:
    olive = InferiorOlive(max_pending=3)
    for b in range(5):
        assert olive.receive_prediction("area0", StepId(0, b, 0), torch.ones(2, 2)) is None
    assert olive.expired == 2 and len(olive.predictions) == 3
    assert olive.receive_target("area0", StepId(0, 0, 0), torch.zeros(2, 2)) is None  # expired
    assert olive.receive_target("area0", StepId(0, 1, 0), torch.zeros(2, 2)) is None  # expired
    assert olive.receive_target("area0", StepId(0, 2, 0), torch.zeros(2, 2)).loss == 2.0
    assert olive.receive_target("area0", StepId(0, 3, 0), torch.full((2, 2), 2.0)).loss == 2.0
    assert olive.receive_prediction("area0", StepId(1, 0, 0), torch.ones(2, 2)) is None
    assert olive.receive_target("area0", StepId(1, 0, 0), torch.full((2, 2), 4.0)).loss == 18.0
    summary = olive.epoch_summary(0)
    assert summary == {"epoch": 0, "cerebellar_loss": 2.0, "pairs": 2}
    assert olive.epoch_summary(0) is None, "summaries forget their epoch"
    assert olive.epoch_summary(1) == {"epoch": 1, "cerebellar_loss": 18.0, "pairs": 1}
    assert olive.epoch_summary(7) is None
    # stale unpaired items are dropped by epoch
    assert olive.forget_before(1) == 3  # 2 old targets + the prediction of batch 4
    assert not olive.predictions and not olive.targets


# --- 7. the cerebellum learns by Adam on <e, C(s)> ---------------------------------------------


@pytest.mark.parametrize("grad_clip", [0.0, 1.0])
@pytest.mark.parametrize("model", ["cc-dni", "scc-dni"])
def test_cerebellum_learn_is_an_adam_step(grad_clip: float, model: str) -> None:
    spec = load_spec(model=model, hidden=4, cerebellum_hidden=12, grad_clip=grad_clip, lr=3e-3)
    core = CerebellumCore(spec, ["area0"])
    synthesiser = core.synthesisers["area0"]
    manual = copy.deepcopy(synthesiser)
    optimiser = torch.optim.Adam(manual.parameters(), lr=3e-3, betas=(0.9, 0.98), eps=1e-9)
    gen = torch.Generator().manual_seed(11)
    for step in range(4):
        ids = StepId(1, step, 0)
        state = torch.randn(6, 8, generator=gen)
        error = torch.randn(6, 8, generator=gen) * 10  # large enough for the clip to bite
        prediction = core.predict("area0", ids, state)
        torch.testing.assert_close(prediction, manual(state).detach(), rtol=0, atol=0)
        assert core.learn("area0", ids, error)
        (error * manual(state)).sum().backward()  # loss <e, C(s)>: its gradient wrt C(s) is e
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(manual.parameters(), grad_clip)
        optimiser.step()
        optimiser.zero_grad()
        for (name, got), want in zip(synthesiser.named_parameters(), manual.parameters()):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-7, msg=f"{step} {name}")
    assert core.errors_applied["area0"] == 4 and core.dropped_errors == 0


def test_cerebellum_drops_unknown_errors() -> None:
    core = CerebellumCore(load_spec(hidden=4, cerebellum_hidden=12), ["area0"])
    before = copy.deepcopy(core.synthesisers["area0"].state_dict())
    assert core.learn("area0", StepId(0, 0, 0), torch.ones(2, 8)) is False
    assert core.dropped_errors == 1
    core.predict("area0", StepId(0, 1, 0), torch.ones(2, 8))
    assert core.learn("area0", StepId(0, 1, 0), torch.ones(2, 8)) is True
    assert core.learn("area0", StepId(0, 1, 0), torch.ones(2, 8)) is False, "used once"
    assert core.dropped_errors == 2 and core.errors_applied["area0"] == 1
    frozen = CerebellumCore(load_spec(hidden=4, cerebellum_hidden=12), ["area0"], learning=False)
    frozen.predict("area0", StepId(0, 0, 0), torch.ones(2, 8))
    assert frozen.learn("area0", StepId(0, 0, 0), torch.ones(2, 8)) is True
    after = frozen.synthesisers["area0"].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "olive lesion: frozen"


# --- 8. the in-process runner is deterministic --------------------------------------------------


TIMING_KEYS = {"wait_seconds", "train_seconds", "epoch_seconds"}


def inprocess_metrics(tmp_path, seed: int, name: str) -> list[dict]:
    spec = load_spec(
        model="cc-dni", inprocess=True, epochs=3, seed=seed, runs_dir=str(tmp_path), run_name=name
    )
    run = RunDirectory.create(spec)
    run_inprocess(spec, run, log=None)
    return [{k: v for k, v in m.items() if k not in TIMING_KEYS} for m in run.metrics()]


def test_inprocess_training_is_deterministic(tmp_path) -> None:
    first = inprocess_metrics(tmp_path, 0, "a")
    second = inprocess_metrics(tmp_path, 0, "b")
    other = inprocess_metrics(tmp_path, 1, "c")
    assert first == second
    area = [m for m in first if m["region"] == "area0"]
    olive = [m for m in first if m["region"] == "olive"]
    assert len(area) == 3 and len(olive) == 3
    assert all(m["predictions"] == 4 and m["targets_sent"] == 4 for m in area)  # T=2, N=10
    assert all(m["cerebellar_loss"] > 0 for m in olive)
    other_area = [m for m in other if m["region"] == "area0"]
    assert [m["train_loss"] for m in other_area] != [m["train_loss"] for m in area]
    assert other != first


def test_direct_link_teaches_the_cerebellum() -> None:
    spec = load_spec(model="cc-dni", epochs=2)
    task = build_task(spec)
    area = AreaCore(spec, task)
    cerebellum = CerebellumCore(spec, ["area0"])
    olive = InferiorOlive()
    link = DirectLink(cerebellum, olive, "area0")
    before = copy.deepcopy(cerebellum.synthesisers["area0"].state_dict())
    area.run_epoch(link)
    # 5 truncations: 4 predictions, 4 targets (k=1..4), all paired and applied
    assert cerebellum.errors_applied["area0"] == 4 and cerebellum.dropped_errors == 0
    assert not olive.predictions and not olive.targets
    after = cerebellum.synthesisers["area0"].state_dict()
    assert not torch.equal(before["nuclei.weight"], after["nuclei.weight"])


def test_area_weights_depend_only_on_the_seed() -> None:
    spec = load_spec(model="lstm")
    task = build_task(spec)
    torch.manual_seed(1)
    first = AreaCore(spec, task).area.state_dict()
    torch.manual_seed(2)
    torch.rand(100)
    second = AreaCore(spec, task).area.state_dict()
    other = AreaCore(spec.replace(seed=1), task).area.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["lstm.weight_hh_l0"], other["lstm.weight_hh_l0"])
