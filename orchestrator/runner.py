"""One run from spec to summary: in-process or as processes, then summary and figures."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ccdni.base.logs import configure_logging
from ccdni.base.rundir import RunDirectory
from ccdni.base.spec import RunSpec
from ccdni.reporting.figures import draw_run
from ccdni.tasks.base import headline
from orchestrator.launcher import Supervisor
from orchestrator.placement import plan_placement, region_names
from orchestrator.progress import Progress


@dataclass(frozen=True)
class RunOutcome:
    run: RunDirectory
    summary: dict[str, Any]


def execute_run(
    spec: RunSpec,
    console: bool = True,
    run: RunDirectory | None = None,
    resume_epoch: int | None = None,
) -> RunOutcome:
    """Create the run directory (or reuse it to resume), run, write summary and figures.

    The task's data are checked first (:func:`check_task_data`): when they are missing,
    :class:`ccdni.tasks.mnist_data.DataMissingError` is raised before anything is created or spawned.
    """
    check_task_data(spec)
    if not spec.inprocess:  # an impossible placement (a missing GPU) fails before anything
        plan_placement(spec, list(region_names(spec)))
    run = run or RunDirectory.create(spec)
    log = configure_logging(
        "orchestrator",
        run.log_path("orchestrator"),
        spec.log_level,
        console=console,
        run=run.path.name,
    )
    log.info(
        "run_start",
        run_dir=str(run.path),
        mode="inprocess" if spec.inprocess else "processes",
        resume_epoch=resume_epoch,
    )
    started = time.perf_counter()
    with Progress(spec, log, enabled=console) as progress:
        if spec.inprocess:
            outcome = _inprocess(spec, run, log)
        else:
            outcome = Supervisor(spec, run, log, progress, resume_epoch).execute()
    wall = time.perf_counter() - started
    summary = summarise(run, spec, outcome, wall)
    if spec.figures and summary["epochs_completed"]:
        if spec.topology == "chain":
            title = f"{_chain_task(spec)} · {spec.chain_mode} · seed {spec.seed}"
        else:
            title = f"{spec.task} · {spec.model} · T={spec.truncation} · seed {spec.seed}"
        try:
            summary["figures"] = [
                str(p.relative_to(run.path)) for p in draw_run(run, spec.model, title)
            ]
        except Exception as exc:  # a figure is never worth the numbers recorded
            summary["figures_error"] = f"{type(exc).__name__}: {exc}"
            log.warning("figures_failed", error=summary["figures_error"])
    run.write_json(run.summary_path, summary)
    log.info("run_end", **{k: v for k, v in summary.items() if not isinstance(v, (dict, list))})
    return RunOutcome(run, summary)


def check_task_data(spec: RunSpec) -> None:
    """Raise ``DataMissingError`` (one line: where, and how to get it) if the task's data are
    missing; with ``spec.download`` fetch them now, in this process, before any region starts."""
    if spec.task.endswith("seqmnist") or spec.topology == "chain":
        from ccdni.tasks.mnist_data import check_mnist

        check_mnist(spec.resolved_data_dir, download=spec.download)


def _inprocess(spec: RunSpec, run: RunDirectory, log: Any) -> dict[str, Any]:
    from orchestrator.inprocess import run_inprocess

    step = max(1, spec.epochs // 10)
    chosen = headline(spec)

    def on_epoch(metrics: dict[str, Any]) -> None:
        epoch = metrics["epoch"] + 1
        if epoch % step == 0 or epoch == spec.epochs:
            log.info(
                "progress",
                epoch=epoch,
                of=spec.epochs,
                train_loss=metrics["train_loss"],
                **{chosen.metric: metrics.get(chosen.metric)},
            )

    try:
        run_inprocess(spec, run, log, on_epoch)
    except KeyboardInterrupt:
        return {"status": "interrupted", "reason": "interrupted by the user", "shutdown_stages": []}
    return {"status": "completed", "reason": None, "shutdown_stages": []}


def summarise(
    run: RunDirectory, spec: RunSpec, outcome: dict[str, Any], wall: float
) -> dict[str, Any]:
    """The run's final numbers, read back from what was recorded."""
    metrics = run.metrics()
    # the area whose numbers stand for the run: the only one, or the last of a chain (readout)
    scored = spec.area_names[-1]
    area = [m for m in metrics if m.get("region") == scored and "epoch" in m]
    olive = [m for m in metrics if m.get("region") == "olive" and "cerebellar_loss" in m]
    final = area[-1] if area else {}
    last5 = area[-5:]
    val_keys = [k for k in final if k.startswith("val_")]
    chosen = headline(spec)
    values = [m[chosen.metric] for m in area if chosen.metric in m]
    return {
        "run": run.path.name,
        "status": outcome["status"],
        "reason": outcome["reason"],
        "mode": "inprocess" if spec.inprocess else "processes",
        "task": spec.task if spec.topology == "single" else _chain_task(spec),
        "model": spec.model if spec.topology == "single" else spec.chain_mode,
        "truncation": spec.truncation if spec.topology == "single" else None,
        "seed": spec.seed,
        "timing": spec.timing,
        "epochs_completed": len(area),
        "epochs": spec.epochs,
        "wall_seconds": round(wall, 3),
        "final": {k: final[k] for k in ["train_loss", *val_keys] if k in final},
        "last5_mean": {k: sum(m[k] for m in last5) / len(last5) for k in val_keys},
        "headline": {
            "metric": chosen.metric,
            "label": chosen.label,
            "lower_is_better": chosen.lower_is_better,
            "final": values[-1] if values else None,
            "last5_mean": sum(values[-5:]) / len(values[-5:]) if values else None,
        },
        "cerebellar_loss_final": olive[-1]["cerebellar_loss"] if olive else None,
        "missing_predictions": sum(m.get("missing_predictions", 0) for m in area),
        "shutdown_stages": outcome["shutdown_stages"],
        "pid": os.getpid(),
    }


def _chain_task(spec: RunSpec) -> str:
    data = "mnist" if spec.chain_block == "ff" else "seqmnist-lstm"
    return f"{data}-chain-K{spec.chain_areas}"


class ResumeError(RuntimeError):
    """The run directory cannot be resumed; the text says why."""


def resume_run(run_path: str | Path, console: bool = True) -> RunOutcome:
    """Continue a run from its last complete checkpoint, in the same run directory."""
    from ccdni.base.checkpoint import CheckpointError, load_checkpoint
    from ccdni.base.spec import SpecError, load_spec
    from orchestrator.client import ControlError, orchestrator_alive

    run = RunDirectory(run_path)
    try:
        spec = load_spec(run.spec_path)
        if orchestrator_alive(run.path):
            raise ResumeError(f"the run in {run.path} is still running")
    except (SpecError, ControlError) as exc:
        raise ResumeError(str(exc)) from None
    if spec.inprocess:
        raise ResumeError("in-process runs keep no per-epoch checkpoints; run them again")
    if spec.topology == "chain":
        raise ResumeError("chain runs keep only their final checkpoints; run them again")
    epochs, saved_metrics = [], []
    for area in spec.area_names:
        path = run.checkpoint_path(area)
        try:
            state = load_checkpoint(path, area, spec).state if path.exists() else {"epoch": 0}
        except CheckpointError as exc:
            raise ResumeError(str(exc)) from None
        epochs.append(int(state["epoch"]))
        if state.get("last_metric"):
            saved_metrics.append({"region": area, **state["last_metric"]})
    epoch = min(epochs)
    if epoch >= spec.epochs:
        raise ResumeError(f"the run in {run.path} already completed its {spec.epochs} epochs")
    kept = [r for r in run.metrics() if "epoch" in r and r["epoch"] < epoch]
    recorded = {(r.get("region"), r["epoch"]) for r in kept}
    for record in saved_metrics:  # killed after the checkpoint, before the metric arrived
        if (
            record.get("epoch", epoch) < epoch
            and (record["region"], record["epoch"]) not in recorded
        ):
            kept.append(record)
    tmp = run.metrics_path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    os.replace(tmp, run.metrics_path)
    run.append_event("resume", epoch=epoch)
    return execute_run(spec, console, run=run, resume_epoch=epoch)
