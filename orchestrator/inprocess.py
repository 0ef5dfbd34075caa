"""The in-process runner: the same cores wired with function calls (``--inprocess``).

It is the numerical reference that the multi-process system is tested against (``lockstep``
must reproduce it to float tolerance) and a fast mode for debugging.

A single area runs :meth:`areas.cortex.AreaCore.run_epoch` through a :class:`DirectLink`. A
chain wires K :class:`areas.chain_core.ChainAreaCore` s, one :class:`CerebellumCore` and one
:class:`InferiorOlive` (:class:`DirectCerebellum`) through :class:`DirectChainLinks`: per
training batch every area's forward half runs in order 0..K-1, then every backward half in
order K-1..0, activities and feedback passing through mailboxes between neighbours; validation
runs chunk by chunk through areas 0..K-1. The cerebellum applies exactly the errors each request
expects, as under lockstep (with no lag bound, ``chain_max_lag`` -1, every error as it comes).
Both write the records the processes write (one per area, the olive and the cerebellum per
epoch) and the same checkpoints.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from areas.chain import chain_data
from areas.chain_core import ChainAreaCore, ChainTimeout
from areas.cortex import AreaCore, BootstrappedTarget, Efference
from areas.results import save_results
from ccdni.base.checkpoint import save_checkpoint
from ccdni.base.rundir import RunDirectory
from ccdni.base.spec import RunSpec
from ccdni.tasks import build_task
from cerebellum.synthesiser import CerebellumCore
from olive.comparator import ClimbingFibre, InferiorOlive
from wire.ids import StepId

INTERFACE = "area0"


class DirectLink:
    """The area's link to the cerebellum and olive as plain function calls.

    A lesion sets ``cerebellum`` or ``olive`` to None: without a cerebellum there is no
    prediction (plain truncated BPTT); without an olive the cerebellum keeps predicting with
    frozen weights.
    """

    def __init__(self, cerebellum: CerebellumCore, olive: InferiorOlive, interface: str):
        self.cerebellum: CerebellumCore | None = cerebellum
        self.olive: InferiorOlive | None = olive
        self.interface = interface
        self.asked: set = set()

    def _teach(self, fibre: ClimbingFibre | None) -> None:
        if fibre is not None and self.cerebellum is not None:
            self.cerebellum.learn(fibre.interface, fibre.ids, fibre.error)

    def predict(self, efference: Efference) -> torch.Tensor | None:
        if self.cerebellum is None:
            return None
        prediction = self.cerebellum.predict(self.interface, efference.ids, efference.state)
        self.asked.add(efference.ids)
        if self.olive is not None:
            self._teach(self.olive.receive_prediction(self.interface, efference.ids, prediction))
        return prediction

    def send_target(self, target: BootstrappedTarget) -> bool:
        if target.ids not in self.asked or self.olive is None or self.cerebellum is None:
            return False
        self.asked.discard(target.ids)
        self._teach(self.olive.receive_target(self.interface, target.ids, target.feedback))
        return True

    def lesion(self, region: str) -> None:
        """Remove a region, as killing its process does."""
        if region == "cerebellum":
            self.cerebellum = None
        elif region == "olive":
            self.olive = None


def run_inprocess(
    spec: RunSpec,
    run: RunDirectory,
    log: Any,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train every epoch in this process, recording into ``run``; returns the final metrics."""
    torch.set_num_threads(spec.threads)
    if spec.topology == "chain":
        return run_chain_inprocess(spec, run, on_epoch)
    task = build_task(spec)
    area = AreaCore(spec, task, INTERFACE)
    cerebellum = CerebellumCore(spec, [INTERFACE]) if spec.uses_cerebellum else None
    olive = InferiorOlive() if spec.uses_cerebellum else None
    link = DirectLink(cerebellum, olive, INTERFACE) if cerebellum and olive else None
    run.append_event("start", region="inprocess", pid=None)
    last: dict[str, Any] = {}
    for _ in range(spec.epochs):
        for region, epoch in spec.ablation_schedule:
            if epoch == area.epoch and link is not None:
                link.lesion(region)
                run.append_event("ablate", region=region, epoch=epoch, cause="scheduled")
        started = time.perf_counter()
        metrics = area.run_epoch(link)
        record = {"region": INTERFACE, **metrics, "epoch_seconds": time.perf_counter() - started}
        run.append_metric(record)
        last = record
        if olive is not None:
            cerebellar = olive.epoch_summary(metrics["epoch"], per_interface=True)
            if cerebellar is not None:
                run.append_metric({"region": "olive", **cerebellar})
                last = {**last, "cerebellar_loss": cerebellar["cerebellar_loss"]}
        if on_epoch is not None:
            on_epoch(last)
    save_checkpoint(run.checkpoint_path(INTERFACE), area.state_dict(), INTERFACE, area.epoch, spec)
    if cerebellum is not None:
        path = run.checkpoint_path("cerebellum")
        save_checkpoint(path, cerebellum.state_dict(), "cerebellum", area.epoch, spec)
    save_results(area, run)
    run.append_event("exit", region="inprocess", exitcode=0)
    return last


# -- chains ---------------------------------------------------------------------------------------
class DirectCerebellum:
    """A chain's cerebellum and olive as function calls, shared by every area's links.

    A request is answered at once once the errors it expects have been applied
    (:meth:`CerebellumCore.settle`: exactly that many, as the cerebellum process does under
    lockstep). In-process every target is sent before any later request, so a request whose
    errors have not arrived never will be: it gets no answer, as an area process gives up
    waiting. A lesion sets ``cerebellum_alive`` or ``olive_alive`` to False.
    """

    def __init__(self, spec: RunSpec):
        self.core = CerebellumCore(spec, list(spec.interfaces))
        self.olive = InferiorOlive()
        self.exact = spec.chain_max_lag >= 0  # a lag window: exactly; none: every error at once
        self.cerebellum_alive = True
        self.olive_alive = True
        self.answers: dict[tuple[str, StepId], torch.Tensor | None] = {}
        self.predictions = 0
        self.errors_sent = 0

    def request(self, interface: str, ids: StepId, efference: torch.Tensor, expected: int) -> bool:
        if not self.cerebellum_alive:
            return False
        prediction = None
        if not self.olive_alive or self.core.settle(interface, expected):
            prediction = self.core.predict(interface, ids, efference)
            self.predictions += 1
            if self.olive_alive:
                self._teach(self.olive.receive_prediction(interface, ids, prediction))
        self.answers[(interface, ids)] = prediction
        return True

    def answer(self, interface: str, ids: StepId) -> torch.Tensor | None:
        return self.answers.pop((interface, ids), None)

    def send_target(self, interface: str, ids: StepId, target: torch.Tensor) -> bool:
        if not (self.olive_alive and self.cerebellum_alive):
            return False
        self._teach(self.olive.receive_target(interface, ids, target))
        return True

    def _teach(self, fibre: ClimbingFibre | None) -> None:
        if fibre is None:
            return
        self.errors_sent += 1
        self.core.receive_error(fibre.interface, fibre.ids, fibre.error)
        if not self.exact:
            self.core.apply_errors(fibre.interface)

    def lesion(self, region: str) -> None:
        """Remove a region, as killing its process does (the olive then drops what it can no
        longer pair)."""
        if region == "cerebellum":
            self.cerebellum_alive = False
            self.answers.clear()
            self.olive.expired += len(self.olive.predictions) + len(self.olive.targets)
            self.olive.predictions.clear()
            self.olive.targets.clear()
        elif region == "olive":
            self.olive_alive = False


class DirectChainLinks:
    """Area k's :class:`areas.chain_core.ChainLinks` as function calls: mailboxes shared with
    its neighbours, the shared :class:`DirectCerebellum`. The driver's order makes every
    message present when it is read, so flow control is not needed."""

    def __init__(
        self,
        k: int,
        mailboxes: dict[tuple[str, int, StepId], torch.Tensor | None],
        cerebellum: DirectCerebellum | None,
    ):
        self.k = k
        self.mailboxes = mailboxes
        self.cerebellum = cerebellum

    @property
    def cerebellum_alive(self) -> bool:
        return self.cerebellum is not None and self.cerebellum.cerebellum_alive

    @property
    def olive_alive(self) -> bool:
        return self.cerebellum is not None and self.cerebellum.olive_alive

    def tick(self) -> None:
        pass

    def begin_batch(self, ids: StepId) -> None:
        pass

    def batch_done(self, ids: StepId) -> None:
        pass

    def _take(self, what: str, boundary: int, ids: StepId) -> torch.Tensor | None:
        try:
            return self.mailboxes.pop((what, boundary, ids))
        except KeyError:
            raise ChainTimeout(
                f"area{self.k}: no {what} {tuple(ids)} at boundary {boundary}"
            ) from None

    def activity_in(self, ids: StepId, rows: int) -> torch.Tensor:
        activity = self._take("activity", self.k - 1, ids)
        assert activity is not None
        return activity

    def activity_out(self, ids: StepId, activity: torch.Tensor) -> None:
        self.mailboxes[("activity", self.k, ids)] = activity

    def feedback_in(self, ids: StepId, rows: int) -> torch.Tensor | None:
        return self._take("feedback", self.k, ids)

    def feedback_out(self, ids: StepId, feedback: torch.Tensor | None) -> None:
        self.mailboxes[("feedback", self.k - 1, ids)] = feedback

    def request(
        self, interface: str, ids: StepId, efference: torch.Tensor, errors_expected: int
    ) -> bool:
        assert self.cerebellum is not None
        return self.cerebellum.request(interface, ids, efference, errors_expected)

    def prediction(self, interface: str, ids: StepId, rows: int) -> torch.Tensor | None:
        assert self.cerebellum is not None
        return self.cerebellum.answer(interface, ids)

    def send_target(self, interface: str, ids: StepId, target: torch.Tensor) -> bool:
        assert self.cerebellum is not None
        return self.cerebellum.send_target(interface, ids, target)

    def end_epoch(self, epoch: int, interfaces: tuple[str, ...]) -> None:
        pass  # the driver reports the olive's epoch once every area has ended it


def run_chain_inprocess(
    spec: RunSpec,
    run: RunDirectory,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train a chain in this process (module docstring), recording into ``run``; returns the
    last area's final record."""
    data = chain_data(spec)
    areas = [ChainAreaCore(spec, k, data) for k in range(spec.chain_areas)]
    cerebellum = DirectCerebellum(spec) if spec.uses_cerebellum else None
    mailboxes: dict[tuple[str, int, StepId], torch.Tensor | None] = {}
    links = [DirectChainLinks(k, mailboxes, cerebellum) for k in range(spec.chain_areas)]
    pairs = list(zip(areas, links))
    run.append_event("start", region="inprocess", pid=None)
    last: dict[str, Any] = {}
    for epoch in range(spec.epochs):
        for region, at in spec.ablation_schedule:
            if at == epoch and cerebellum is not None:
                cerebellum.lesion(region)
                run.append_event("ablate", region=region, epoch=epoch, cause="scheduled")
        for area in areas:
            area.begin_epoch(epoch)
        for b in range(areas[0].n_batches):
            for area, link in pairs:
                area.forward_half(link, b)
            for area, link in reversed(pairs):
                area.backward_half(link)
        records = [area.end_epoch(link) for area, link in pairs]
        for chunk in range(areas[0].validation_chunks):
            for area, link in pairs:
                area.validate_chunk(link, epoch, chunk)
        for area, record in zip(areas, records):
            record.update(area.validation_metrics())
            run.append_metric({"region": area.role.name, **record})
        last = records[-1]
        if cerebellum is not None:
            if cerebellum.olive_alive:
                summary = cerebellum.olive.epoch_summary(epoch, per_interface=True)
                if summary is not None:
                    run.append_metric({"region": "olive", **summary})
                cerebellum.olive.forget_before(epoch)  # unpaired items of earlier epochs
            if cerebellum.cerebellum_alive:
                if epoch == spec.epochs - 1:  # what is still queued, as the process at its exit
                    cerebellum.core.apply_errors()
                run.append_metric({"region": "cerebellum", **_cerebellum_record(cerebellum, epoch)})
        if on_epoch is not None:
            on_epoch(last)
    final = spec.epochs - 1
    for area in areas:
        path = run.checkpoint_path(area.role.name)
        save_checkpoint(path, area.state_dict(), area.role.name, final, spec)
    if cerebellum is not None and cerebellum.cerebellum_alive:
        core = cerebellum.core
        path = run.checkpoint_path("cerebellum")
        save_checkpoint(path, core.state_dict(), "cerebellum", final, spec)
        totals = {
            "predictions_total": cerebellum.predictions,
            "errors_applied": sum(core.errors_applied.values()),
            "dropped_errors": core.dropped_errors,
            "answered_between_stages": 0,  # a function call: never in the middle of a step
        }
        run.append_metric({"region": "cerebellum", **totals})
    if cerebellum is not None and cerebellum.olive_alive:
        olive = {"errors_sent": cerebellum.errors_sent, "expired": cerebellum.olive.expired}
        run.append_metric({"region": "olive", **olive})
    run.append_event("exit", region="inprocess", exitcode=0)
    return last


def _cerebellum_record(cerebellum: DirectCerebellum, epoch: int) -> dict[str, Any]:
    """The cerebellum's per-epoch record, as its process writes it."""
    core = cerebellum.core
    return {
        "epoch": epoch,
        "predictions": cerebellum.predictions,
        "errors_applied": sum(core.errors_applied.values()),
        "weight_fingerprint": core.fingerprint(),
        "olive_lesioned": not cerebellum.olive_alive,
    }
