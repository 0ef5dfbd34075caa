"""The in-process runner: the same cores wired with function calls (``--inprocess``).

It is the numerical reference that the multi-process system is tested against (``lockstep``
must reproduce it to float tolerance) and a fast mode for debugging.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from areas.cortex import AreaCore, BootstrappedTarget, Efference
from areas.results import save_results
from ccdni.base.checkpoint import save_checkpoint
from ccdni.base.rundir import RunDirectory
from ccdni.base.spec import RunSpec
from ccdni.tasks import build_task
from cerebellum.synthesiser import CerebellumCore
from olive.comparator import ClimbingFibre, InferiorOlive

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
            cerebellar = olive.epoch_summary(metrics["epoch"])
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
