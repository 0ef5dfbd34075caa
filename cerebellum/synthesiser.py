"""The cerebellar synthesiser C and the cerebellum's learning core (socket-free).

C maps an area's efference copy s (B, 2H) — mossy-fibre input — through M granule units
(ReLU), optionally a second hidden layer, to the predicted feedback ĝ (B, 2H) at the
cerebellar nuclei. The output layer's weight and bias start at zero so that predictions start
at zero, as in the paper and in Jaderberg et al. (2017). Input and output sizes may differ:
a chain's forward synthesiser maps the image x (B, 784) to the predicted activity ĥ_k (B, W)
(forward DNI, the cerebellar inverse model); the spec's ``interface_io`` gives both sizes.

Sparse cerebellum (sCC-DNI): every granule unit receives exactly K of the 2H inputs, chosen at
random without replacement; the connectivity mask is fixed for the whole run and applied in the
forward pass, so masked weights get no gradient and stay exactly zero.

Climbing-fibre errors can be applied at once (:meth:`CerebellumCore.learn`) or queued and
applied lazily (:meth:`CerebellumCore.receive_error`, :meth:`CerebellumCore.settle`): an area
says with each efference how many errors of its interface must have been applied before the
answer (``errors_expected``), and :meth:`~CerebellumCore.settle` applies exactly that many,
oldest first, keeping later ones queued. The answer then depends on that count only, never on
when the errors happened to arrive.
"""

from __future__ import annotations

from bisect import insort
from collections import OrderedDict
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ccdni.base.optim import clip_gradient, make_adam, step_and_clear
from ccdni.base.seeding import derived_seed
from wire.ids import StepId

if TYPE_CHECKING:
    from ccdni.base.spec import RunSpec

_set_grad_enabled = torch._C._set_grad_enabled  # what torch.no_grad calls, without its layers


def granule_connectivity(
    n_granule: int, n_inputs: int, k: int, generator: torch.Generator | None
) -> torch.Tensor:
    """(M, N) mask with exactly ``k`` ones per row (inputs drawn without replacement)."""
    mask = torch.zeros(n_granule, n_inputs)
    for row in range(n_granule):
        mask[row, torch.randperm(n_inputs, generator=generator)[:k]] = 1.0
    return mask


class Synthesiser(nn.Module):
    """C: efference (B, N_in) → prediction (B, N_out); N_in = N_out = 2H for feedback."""

    connectivity: torch.Tensor  # (M, N_in) buffer: the fixed granule connectivity mask

    def __init__(
        self,
        input_size: int,
        n_granule: int,
        layers: int = 1,
        granule_inputs: int | None = None,
        generator: torch.Generator | None = None,
        output_size: int | None = None,
    ):
        super().__init__()
        output_size = input_size if output_size is None else output_size
        self.granule = nn.Linear(input_size, n_granule)  # mossy fibres → granule cells
        self.deep = nn.Linear(n_granule, n_granule) if layers == 2 else None
        self.nuclei = nn.Linear(n_granule, output_size)  # → cerebellar nuclei: the prediction
        nn.init.zeros_(self.nuclei.weight)  # zero output weight and bias, as in the paper
        nn.init.zeros_(self.nuclei.bias)
        if granule_inputs is not None:
            mask = granule_connectivity(n_granule, input_size, granule_inputs, generator)
            with torch.no_grad():
                self.granule.weight.mul_(mask)
        else:
            mask = torch.ones(n_granule, input_size)
        self.register_buffer("connectivity", mask)  # (M, N_in), fixed for the run
        self.sparse = granule_inputs is not None

    def forward(self, efference: torch.Tensor) -> torch.Tensor:
        """efference (B, N_in) → prediction (B, N_out)."""
        weight = self.granule.weight * self.connectivity if self.sparse else self.granule.weight
        granule = F.relu(F.linear(efference, weight, self.granule.bias))  # (B, M)
        if self.deep is not None:
            granule = F.relu(self.deep(granule))  # (B, M)
        return self.nuclei(granule)  # (B, N_out)

    def inputs_per_granule(self) -> torch.Tensor:
        """(M,) number of non-zero input weights of each granule unit."""
        return (self.granule.weight != 0).sum(dim=1)


def predict_without_autograd(synthesiser: Synthesiser, efference: torch.Tensor) -> torch.Tensor:
    """C(s) with autograd switched off and on by one call each (not ``torch.no_grad``'s Python
    context manager), through ``forward`` (no hooks are ever registered on C)."""
    grad = torch.is_grad_enabled()
    _set_grad_enabled(False)
    try:
        return synthesiser.forward(efference)
    finally:
        _set_grad_enabled(grad)


class CerebellumCore:
    """One synthesiser and optimiser per interface; answers efferences, learns from errors.

    The efference of every outstanding prediction is kept until its climbing-fibre error
    arrives; the prediction is then recomputed from it with the current weights and the error
    back-propagated through C (the graph of the original prediction is gone by then).
    """

    MAX_OUTSTANDING = 1024  # efferences kept per interface while waiting for their errors

    def __init__(self, spec: RunSpec, interfaces: list[str], learning: bool | None = None):
        """One synthesiser per interface, sized by ``spec.interface_io`` ((2H, 2H) for a name
        it does not list); a chain's forward{k} synthesisers are always dense. ``learning``
        (default: the spec's ``cerebellum_learns``, False for the zero-dni control) off: errors
        are counted as applied but never change a weight."""
        self.spec = spec
        self.device = torch.device(spec.device)
        self.synthesisers: dict[str, Synthesiser] = {}
        self.optimisers: dict[str, torch.optim.Adam] = {}
        self.outstanding: dict[str, OrderedDict[StepId, torch.Tensor]] = {}
        self.errors_applied: dict[str, int] = {}
        self.dropped_errors = 0
        # lazy errors: queued (in StepId order) until a request needs them; errors taken up
        # (applied or dropped) per interface, and where the count an area speaks of starts
        self.queued: dict[str, list[tuple[StepId, torch.Tensor]]] = {}
        self.consumed: dict[str, int] = {}
        self.count_base: dict[str, int] = {}
        self.learning = spec.cerebellum_learns if learning is None else learning
        for interface in interfaces:
            with torch.random.fork_rng(devices=[]):
                seed = derived_seed(spec.seed, f"cerebellum/{interface}")
                torch.manual_seed(seed)
                input_size, output_size = spec.interface_io.get(
                    interface, (spec.state_size, spec.state_size)
                )
                forward_model = interface.startswith("forward")  # ĥ = C(x): dense
                synthesiser = Synthesiser(
                    input_size,
                    spec.cerebellum_hidden,
                    spec.cerebellum_layers,
                    None if forward_model else spec.granule_inputs,
                    torch.Generator().manual_seed(seed + 1),
                    output_size=output_size,
                ).to(self.device)
            self.synthesisers[interface] = synthesiser
            self.optimisers[interface] = make_adam(
                synthesiser.parameters(), spec.cerebellar_lr, spec
            )
            self.outstanding[interface] = OrderedDict()
            self.errors_applied[interface] = 0
            self.queued[interface] = []
            self.consumed[interface] = 0
            self.count_base[interface] = 0

    def predict(self, interface: str, ids: StepId, efference: torch.Tensor) -> torch.Tensor:
        """ĝ = C(s) (or ĥ = C(x)) for the efference copy ``s`` (B, N_in) → (B, N_out);
        remembers ``s`` until its error arrives.

        Without autograd (the prediction is never back-propagated: :meth:`learn` recomputes
        it), switched off and on with one call each instead of ``torch.no_grad``'s Python
        context manager, and through ``forward`` (no hooks are ever registered on C)."""
        if efference.device != self.device:
            efference = efference.to(self.device)
        prediction = predict_without_autograd(self.synthesisers[interface], efference)
        self.remember(interface, ids, efference)
        return prediction

    def remember(self, interface: str, ids: StepId, efference: torch.Tensor) -> None:
        """Keep the efference of prediction ``ids`` until its error arrives (the oldest go
        beyond ``MAX_OUTSTANDING``)."""
        pending = self.outstanding[interface]
        pending[ids] = efference
        while len(pending) > self.MAX_OUTSTANDING:
            pending.popitem(last=False)

    def learn(self, interface: str, ids: StepId, climbing_fibre_error: torch.Tensor) -> bool:
        """Back-propagate e = ∂L_C/∂ĝ through C(s) and step; False if ``s`` is unknown."""
        efference = self.outstanding[interface].pop(ids, None)
        if efference is not None and self.learning:
            self.step(interface, efference, climbing_fibre_error)
        self.count(interface, applied=efference is not None)
        return efference is not None

    def step(
        self, interface: str, efference: torch.Tensor, climbing_fibre_error: torch.Tensor
    ) -> None:
        """One learning step: C(s) recomputed from the efference s (B, N_in), e (B, N_out)
        back-propagated through it, the gradient clipped and Adam stepped."""
        for _ in self.stepping(interface, efference, climbing_fibre_error):
            pass

    def stepping(
        self, interface: str, efference: torch.Tensor, climbing_fibre_error: torch.Tensor
    ) -> Iterator[str]:
        """:meth:`step` in its stages, yielding the name of each one done (``forward``,
        ``backward``, ``clip``) before the next; the weights change only in the last one
        (Adam), so C(s') computed without autograd between two stages is the prediction of
        the weights before the step. A step must be run to its end before another starts
        (the gradient of a second one would add to this one's)."""
        synthesiser = self.synthesisers[interface]
        prediction = synthesiser(efference)  # (B, N_out), with its graph this time
        yield "forward"
        prediction.backward(climbing_fibre_error.to(self.device))
        del prediction
        yield "backward"
        if self.spec.grad_clip > 0:
            clip_gradient(list(synthesiser.parameters()), self.spec.grad_clip)
            yield "clip"
        step_and_clear(self.optimisers[interface])

    def learning_next(self, interface: str) -> Iterator[str]:
        """Apply the oldest queued error of ``interface`` (there must be one) in the stages of
        :meth:`stepping`, yielding between them; counted once the last stage is done. Run to
        its end, it is ``settle(interface, errors_counted(interface) + 1)``."""
        ids, climbing_fibre_error = self.queued[interface].pop(0)
        efference = self.outstanding[interface].pop(ids, None)
        if efference is not None and self.learning:
            yield from self.stepping(interface, efference, climbing_fibre_error)
        self.count(interface, applied=efference is not None)

    def count(self, interface: str, applied: bool) -> None:
        """One error of ``interface`` taken up: applied, or dropped (its efference unknown)."""
        self.consumed[interface] += 1
        if applied:
            self.errors_applied[interface] += 1
        else:
            self.dropped_errors += 1

    # -- lazy errors --------------------------------------------------------------------------------
    def receive_error(
        self, interface: str, ids: StepId, climbing_fibre_error: torch.Tensor
    ) -> None:
        """Queue e (B, N_out) for the prediction ``ids``; applied by :meth:`settle` or
        :meth:`apply_errors`, oldest ``ids`` first."""
        insort(self.queued[interface], (StepId(*ids), climbing_fibre_error), key=lambda e: e[0])

    def errors_counted(self, interface: str) -> int:
        """Errors of ``interface`` taken up (applied, or dropped as unknown) since the count
        (re)started: what an area's ``errors_expected`` is compared with."""
        return self.consumed[interface] - self.count_base[interface]

    def settle(self, interface: str, errors_expected: int) -> bool:
        """Apply queued errors, oldest first, until ``errors_expected`` are counted, and no
        more. False, applying nothing, while fewer have arrived."""
        queue = self.queued[interface]
        missing = errors_expected - self.errors_counted(interface)
        if missing > len(queue):
            return False
        for _ in range(max(missing, 0)):
            ids, error = queue.pop(0)
            self.learn(interface, ids, error)
        return True

    def apply_errors(self, interface: str | None = None) -> int:
        """Apply every queued error (of ``interface``, or of every interface); how many."""
        applied = 0
        for name in [interface] if interface is not None else list(self.queued):
            queue = self.queued[name]
            while queue:
                ids, error = queue.pop(0)
                self.learn(name, ids, error)
                applied += 1
        return applied

    def restart_count(self, interface: str) -> None:
        """Apply what is queued and count ``interface``'s errors from zero again (an area asks
        for it after a revival: errors in flight then were lost)."""
        self.apply_errors(interface)
        self.count_base[interface] = self.consumed[interface]

    @torch.no_grad()
    def fingerprint(self) -> float:
        """Σ|w| over every synthesiser parameter: changes whenever learning happens."""
        return float(sum(p.abs().sum() for s in self.synthesisers.values() for p in s.parameters()))

    def state_dict(self) -> dict:
        return {
            "synthesisers": {k: v.state_dict() for k, v in self.synthesisers.items()},
            "optimisers": {k: v.state_dict() for k, v in self.optimisers.items()},
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Weights and optimisers; the error accounting restarts (a new process)."""
        for key, value in state["synthesisers"].items():
            self.synthesisers[key].load_state_dict(value)
        for key, value in state["optimisers"].items():
            self.optimisers[key].load_state_dict(value)
