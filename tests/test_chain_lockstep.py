"""Every chain mode and block: lockstep processes equal the direct in-process run (the same
cores wired by function calls), and the cerebellum answers before it learns, applies exactly
the errors a request expects under lockstep, and loses none."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_no_process_left, per_epoch, run_chain

from ccdni.base.checkpoint import load_checkpoint
from ccdni.base.rundir import RunDirectory
from ccdni.base.spec import SpecError, load_spec
from cerebellum.process import CerebellumShell
from cerebellum.synthesiser import CerebellumCore
from orchestrator.inprocess import run_chain_inprocess
from wire.ids import StepId
from wire.protocol import ClimbingHeader, EfferenceHeader, decode, encode, step_header

pytestmark = pytest.mark.timeout(240)

CASES = [  # (block, mode, areas): every mode of both blocks (forward modes of LSTM are refused)
    ("ff", "locked", 2),
    ("ff", "backward-unlocked", 2),
    ("ff", "forward-unlocked", 2),
    ("ff", "fully-unlocked", 3),  # the middle area asks for ĥ_0 and ĝ_1, sends two targets
    ("lstm", "locked", 2),
    ("lstm", "backward-unlocked", 2),
]
TIMING_KEYS = ("_seconds", "_at", "busy_fraction", "samples_per_s")


def lockstep_spec(tmp_path, block: str, mode: str, areas: int, **changes):
    values = dict(
        topology="chain",
        chain_block=block,
        chain_mode=mode,
        chain_areas=areas,
        chain_width=16,
        chain_max_lag=1,  # batch n waits for the errors of batches < n − 1: the window bites
        train_subset=200,
        val_subset=100,
        batch_size=50,
        epochs=2,
        timing="lockstep",
        runs_dir=str(tmp_path),
        figures=False,
        progress=False,
    )
    values.update(changes)
    return load_spec(**values)


def numbers(record: dict) -> dict:
    """A metric record without its clock readings."""
    return {k: v for k, v in record.items() if not any(t in k for t in TIMING_KEYS)}


def assert_same_state(got, want, name: str) -> None:
    if isinstance(want, dict):
        assert got.keys() == want.keys(), name
        for key in want:
            assert_same_state(got[key], want[key], f"{name}/{key}")
    elif isinstance(want, torch.Tensor):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.parametrize(("block", "mode", "areas"), CASES, ids=lambda v: str(v))
def test_lockstep_processes_equal_the_direct_run(tmp_path, block, mode, areas):
    """Lockstep processes and the direct in-process run end with the same weights in every area
    and the cerebellum (1e-5), write the same numbers every epoch, and apply every error."""
    spec = lockstep_spec(tmp_path, block, mode, areas, run_name="processes")
    run, outcome = run_chain(spec)
    assert outcome["status"] == "completed", outcome
    assert_no_process_left(run.path, expected_regions=areas + 2 * spec.uses_cerebellum)
    direct_spec = lockstep_spec(tmp_path, block, mode, areas, run_name="direct", inprocess=True)
    direct = RunDirectory.create(direct_spec)
    run_chain_inprocess(direct_spec, direct)

    regions = [*spec.area_names, *(["cerebellum"] if spec.uses_cerebellum else [])]
    for region in regions:
        want = load_checkpoint(direct.checkpoint_path(region)).state
        got = load_checkpoint(run.checkpoint_path(region)).state
        key = "block" if region.startswith("area") else "synthesisers"
        assert_same_state(got[key], want[key], region)

    want, got = per_epoch(direct.path), per_epoch(run.path)
    assert want.keys() == got.keys()
    assert {region for region, _ in want} == {
        *regions,
        *(["olive"] if spec.uses_cerebellum else []),
    }
    for key, record in want.items():
        assert numbers(got[key]) == pytest.approx(numbers(record), rel=1e-5, abs=1e-6), key
    assert 0.0 <= want[(spec.area_names[-1], spec.epochs - 1)]["val_accuracy"] <= 1.0
    if spec.uses_cerebellum:  # no error lost: every target sent was paired and applied
        sent = sum(
            r.get("targets_sent", 0) for (region, _), r in want.items() if region.startswith("area")
        )
        assert sent == spec.epochs * 4 * len(spec.interfaces)
        for directory in (direct, run):
            totals = [r for r in directory.metrics("cerebellum") if "predictions_total" in r]
            assert totals and totals[-1]["errors_applied"] == sent, directory.path.name
            assert totals[-1]["dropped_errors"] == 0


def test_the_direct_run_is_deterministic_and_follows_the_seed(tmp_path):
    """Two direct runs of a fully-unlocked chain write identical numbers; another seed differs."""
    results = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        spec = lockstep_spec(
            tmp_path, "ff", "fully-unlocked", 2, run_name=name, seed=seed, inprocess=True
        )
        run = RunDirectory.create(spec)
        run_chain_inprocess(spec, run)
        results.append([numbers(r) for r in run.metrics()])
    assert results[0] == results[1]
    assert results[0] != results[2]


def test_lockstep_chains_need_a_lag_window():
    """Under lockstep an unlocked chain without a lag bound is refused: nothing would make the
    cerebellum's answers deterministic; a locked chain needs none."""
    with pytest.raises(SpecError, match="needs chain_max_lag ≥ 0"):
        load_spec(
            topology="chain", chain_mode="backward-unlocked", chain_max_lag=-1, timing="lockstep"
        )
    load_spec(topology="chain", chain_mode="locked", chain_max_lag=-1, timing="lockstep")
    load_spec(topology="chain", chain_mode="fully-unlocked", inprocess=True)


# -- the cerebellum's bursts: predictions before learning, exactly the errors expected ------------
class FakeRouter:
    """Stands in for the cerebellum's ROUTER: records what is sent, has nothing waiting."""

    class sock:  # noqa: N801 - the attribute the shell polls
        @staticmethod
        def poll(timeout, flags=None):
            return 0

    def __init__(self):
        self.sent: list[tuple] = []
        self.rejected: list[str] = []

    def send(self, header, tensors=(), to=None):
        self.sent.append((header, list(tensors), to))
        return True

    def reject(self, reason, sender=None):
        self.rejected.append(reason)


def cerebellum_shell(spec) -> CerebellumShell:
    """The cerebellum's message logic without sockets, its olive already heard from."""
    shell = object.__new__(CerebellumShell)
    shell.spec, shell.name = spec, "cerebellum"
    shell.core = CerebellumCore(spec, ["area0"])
    shell.router = FakeRouter()
    shell.olive_known, shell.olive_lesioned = True, False
    shell.exact = spec.timing == "lockstep"
    shell.deferred, shell.predictions, shell.epoch = [], 0, -1
    shell.records = []
    shell.metric = shell.records.append
    shell.checkpoint = lambda: None
    return shell


def efference(step: int, state: torch.Tensor, expected: int):
    header = step_header(
        EfferenceHeader, "run", "area0", StepId(0, 0, step), errors_expected=expected
    )
    return "area0", decode([bytes(f) for f in encode(header, [state])])


def climbing(step: int, error: torch.Tensor):
    header = step_header(ClimbingHeader, "run", "area0", StepId(0, 0, step))
    return "olive", decode([bytes(f) for f in encode(header, [error])])


def burst(shell: CerebellumShell, *messages) -> list[torch.Tensor]:
    """Handle ``messages`` as one burst; the predictions sent to the area."""
    before = len(shell.router.sent)
    for sender, message in messages:
        shell.handle(sender, message)
    shell.end_burst()
    return [t[0] for _, t, to in shell.router.sent[before:] if to == "area0"]


@pytest.mark.parametrize("timing", ["lockstep", "wait"])
def test_a_burst_answers_before_it_learns_and_lockstep_keeps_later_errors(timing):
    """Errors that arrive with a request are applied after it is answered unless it expects
    them, and then exactly as many as it expects: the answers equal a direct sequence of
    predict/learn calls under either timing; lockstep keeps the rest queued until needed, and
    on the way out every error received has been applied."""
    spec = load_spec(hidden=4, cerebellum_hidden=12, timing=timing)
    shell = cerebellum_shell(spec)
    reference = CerebellumCore(spec, ["area0"])
    generator = torch.Generator().manual_seed(3)
    states = [torch.randn(6, 8, generator=generator) for _ in range(4)]
    errors = [torch.randn(6, 8, generator=generator) for _ in range(3)]

    def want(step: int, learned: int) -> torch.Tensor:
        while reference.errors_applied["area0"] < learned:
            done = reference.errors_applied["area0"]
            assert reference.learn("area0", StepId(0, 0, done), errors[done])
        return reference.predict("area0", StepId(0, 0, step), states[step])

    for step in (0, 1):  # predictions with the initial weights (zero output layer)
        reference.predict("area0", StepId(0, 0, step), states[step])
    (p0, p1) = burst(shell, efference(0, states[0], 0), efference(1, states[1], 0))
    assert torch.equal(p0, torch.zeros(6, 8)) and torch.equal(p1, torch.zeros(6, 8))
    # two errors and a request that expects one: it is answered after exactly one
    (p2,) = burst(shell, climbing(0, errors[0]), climbing(1, errors[1]), efference(2, states[2], 1))
    torch.testing.assert_close(p2, want(2, 1), rtol=0, atol=0)
    assert p2.abs().sum() > 0, "the error was applied before the answer"
    applied = shell.core.errors_applied["area0"]
    assert applied == (1 if timing == "lockstep" else 2)  # lockstep: the second stays queued
    # a request that expects an error not yet arrived waits for it, then gets its answer
    assert burst(shell, efference(3, states[3], 3)) == []
    (p3,) = burst(shell, climbing(2, errors[2]))
    torch.testing.assert_close(p3, want(3, 3), rtol=0, atol=0)
    assert [h.ids for h, _, to in shell.router.sent if to == "olive"] == [
        StepId(0, 0, s) for s in range(4)
    ], "every prediction also went to the olive"
    shell.finish()
    assert shell.core.errors_applied["area0"] == 3 and not shell.core.queued["area0"]
    assert shell.records[-1] == {
        "predictions_total": 4,
        "errors_applied": 3,
        "dropped_errors": 0,
        "answered_between_stages": 0,
    }
    assert shell.router.rejected == []
