"""One run from spec to summary: in-process or as processes, then summary and figures."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ccdni.base.logs import configure_logging
from ccdni.base.rundir import RunDirectory, RunDirectoryError, describe_os_error
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
    resume_lesioned: tuple[str, ...] = (),
    resume_checkpoints: tuple[str, ...] = (),
) -> RunOutcome:
    """Create the run directory (or reuse it to resume), run, write summary and figures.

    The task's data are checked first (:func:`check_task_data`): when they are missing,
    :class:`ccdni.tasks.mnist_data.DataMissingError` is raised before anything is created or spawned.
    A bad run name raises SpecError, and a run directory that cannot be created or written
    (permissions, a full disk) RunDirectoryError, both naming what is wrong in one line.
    """
    check_task_data(spec)
    if not spec.inprocess:  # an impossible placement (a missing GPU) fails before anything
        plan_placement(spec, list(region_names(spec)))
    run = run or RunDirectory.create(spec)
    try:
        log = configure_logging(
            "orchestrator",
            run.log_path("orchestrator"),
            spec.log_level,
            console=console,
            run=run.path.name,
        )
    except OSError as exc:
        raise RunDirectoryError(
            f"cannot write {run.log_path('orchestrator')}: {describe_os_error(exc)}"
        ) from None
    log.info(
        "run_start",
        run_dir=str(run.path),
        mode="inprocess" if spec.inprocess else "processes",
        resume_epoch=resume_epoch,
    )
    started = time.perf_counter()
    sink = None
    if spec.tensorboard:
        from orchestrator.tensorboard import TensorBoardSink

        sink = TensorBoardSink(run.path / "tensorboard")
        run.metric_sinks.append(sink)
    try:
        with Progress(spec, log, enabled=console) as progress:
            if spec.inprocess:
                outcome = _inprocess(spec, run, log)
            else:
                outcome = Supervisor(
                    spec,
                    run,
                    log,
                    progress,
                    resume_epoch,
                    resume_lesioned=resume_lesioned,
                    resume_checkpoints=resume_checkpoints,
                ).execute()
    finally:
        if sink is not None:
            sink.close()
            run.metric_sinks.remove(sink)
    wall = time.perf_counter() - started
    summary = summarise(run, spec, outcome, wall)
    if spec.figures and summary["epochs_completed"]:
        if spec.topology == "chain":
            title = f"{_chain_task(spec)} · {spec.chain_mode} · seed {spec.seed}"
        else:
            title = f"{spec.task} · {spec.model} · T={spec.truncation} · seed {spec.seed}"
        try:
            summary["figures"] = [
                str(p.relative_to(run.path))
                for p in draw_run(run, spec.model, title, spec=spec, status=summary["status"])
            ]
        except Exception as exc:  # a figure is never worth the numbers recorded
            summary["figures_error"] = f"{type(exc).__name__}: {exc}"
            log.warning("figures_failed", error=summary["figures_error"])
    try:
        run.write_json(run.summary_path, summary)
    except OSError as exc:
        ended = summary["status"] + (f": {summary['reason']}" if summary["reason"] else "")
        raise RunDirectoryError(f"{exc} (the run {ended})") from None
    log.info("run_end", **{k: v for k, v in summary.items() if not isinstance(v, (dict, list))})
    return RunOutcome(run, summary)


def check_task_data(spec: RunSpec) -> None:
    """Raise ``DataMissingError`` (one line: where, and how to get it) if the task's data are
    missing; with ``spec.download`` fetch them now, in this process, before any region starts."""
    if spec.task.endswith("seqmnist") or spec.topology == "chain":
        from ccdni.tasks.mnist_data import check_mnist

        check_mnist(spec.resolved_data_dir, download=spec.download)
    elif spec.task == "captions":
        from ccdni.tasks.captions.task import build_caption_task

        build_caption_task(spec)  # reads and checks the corpus (cached for the run)


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
                train_loss=metrics.get("train_loss"),  # none if no batch ran (a chain)
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
        "lesions": outcome.get("lesions", scheduled_lesions(run)),  # region, epoch, phase, …
        **history(run, spec),
        "io_error": outcome.get("io_error"),
        "pid": os.getpid(),
    }


def scheduled_lesions(run: RunDirectory) -> list[dict[str, Any]]:
    """The lesions of an in-process run: its scheduled ablations (``ablate`` events)."""
    return [
        {
            "region": e.get("region"),
            "epoch": e.get("epoch"),
            "phase": "running",
            "cause": e.get("cause", "scheduled"),
            "detected_by": "schedule",
        }
        for e in run.events_named("ablate")
    ]


def history(run: RunDirectory, spec: RunSpec) -> dict[str, Any]:
    """What else the summary says happened: revivals and resumes with their epochs (over the
    whole run directory, every session), whether the same seed gives the same numbers
    (``--inprocess`` and ``--timing lockstep`` do; ``wait`` and ``stale`` depend on timing),
    and where the figures go."""
    deterministic = spec.inprocess or spec.timing == "lockstep"
    return {
        "deterministic": deterministic,
        "determinism": "in-process"
        if spec.inprocess
        else f"timing {spec.timing}: "
        + ("deterministic" if deterministic else "depends on process timing"),
        "revivals": [
            {
                "region": e.get("region"),
                "epoch": e.get("epoch"),
                "from_checkpoint": bool(e.get("from_checkpoint")),
            }
            for e in run.events_named("revive")
        ],
        "resumes": [e.get("epoch") for e in run.events_named("resume")],
        "figures_dir": str(run.path / "figures"),
    }


def _chain_task(spec: RunSpec) -> str:
    data = "mnist" if spec.chain_block == "ff" else "seqmnist-lstm"
    return f"{data}-chain-K{spec.chain_areas}"


class ResumeError(RuntimeError):
    """The run directory cannot be resumed; the text names the file and what is wrong."""


@dataclass(frozen=True)
class ResumePlan:
    """What a resume continues from, every part checked before anything is written."""

    run: RunDirectory
    spec: RunSpec
    epoch: int  # epochs the area completed: the next one to run
    lesioned: tuple[str, ...]  # lesioned at the end of the recorded run: they stay lesioned
    checkpoints: tuple[str, ...]  # regions restored from their verified checkpoint
    missing_metrics: tuple[dict[str, Any], ...]  # saved with a checkpoint, never recorded


def read_records(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of ``path`` (none if it does not exist); ResumeError naming the first
    damaged line."""
    if not path.exists():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ResumeError(f"{path}: cannot be read ({exc})") from None
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ResumeError(f"{path}: line {number} is damaged ({exc.msg})") from None
        if not isinstance(record, dict):
            raise ResumeError(f"{path}: line {number} is not a JSON object")
        records.append(record)
    return records


def lesioned_at_end(events: list[dict[str, Any]]) -> list[str]:
    """The regions lesioned when the recorded run ended (and not revived since)."""
    lesioned: dict[str, None] = {}
    for event in events:
        name, region = event.get("event"), event.get("region")
        if not isinstance(region, str):
            continue
        if name in ("lesion", "lesioned_on_resume"):
            lesioned[region] = None
        elif (name == "revive" and event.get("reinstated")) or (
            name == "ready" and event.get("generation", 0) > 0
        ):
            lesioned.pop(region, None)
    return list(lesioned)


def plan_resume(run_path: str | Path) -> ResumePlan:
    """Check that ``run_path`` can be resumed without losing or rewriting a recorded epoch;
    reads only. ResumeError names the file and what is wrong:

    - the area's checkpoint must exist, verify (checksum, region, spec) and hold exactly the
      epochs metrics.jsonl recorded for it — or more, if the kill (or the orchestrator's death)
      came between a checkpoint and the write of its metric: the checkpoint carries the records
      of its last epochs, and each missing one must be among them;
    - the cerebellum's and olive's checkpoints, where they exist, must verify and not be from a
      later point than the area's (nor, for a cerebellum that was never lesioned, more than two
      epochs earlier); a region that was alive at the end and recorded epochs must have one;
    - metrics.jsonl and events.jsonl must be whole, the area's epochs 0, 1, … once each.
    """
    from ccdni.base.checkpoint import CheckpointError, load_checkpoint
    from ccdni.base.spec import LESIONABLE, SpecError, load_spec
    from orchestrator.client import ControlError, orchestrator_alive

    run = RunDirectory(run_path)
    if not run.path.is_dir():
        raise ResumeError(f"{run.path}: no such run directory")
    if not run.spec_path.exists():
        raise ResumeError(f"{run.spec_path}: missing (not a run directory)")
    try:
        spec = load_spec(run.spec_path)
    except SpecError as exc:
        raise ResumeError(f"{run.spec_path}: {exc}") from None
    try:  # no regions.json: the orchestrator died before it started a region
        if run.regions_path.exists() and orchestrator_alive(run.path):
            raise ResumeError(f"the run in {run.path} is still running")
    except ControlError as exc:
        raise ResumeError(str(exc)) from None
    if spec.inprocess:
        raise ResumeError("in-process runs keep no per-epoch checkpoints; run them again")
    if spec.topology == "chain":
        raise ResumeError("chain runs keep only their final checkpoints; run them again")
    metrics = read_records(run.metrics_path)
    events = read_records(run.events_path)

    def epochs_of(region: str) -> list[int]:
        return [
            r["epoch"]
            for r in metrics
            if r.get("region") == region and isinstance(r.get("epoch"), int)
        ]

    def verified(path: Path, region: str) -> Any:
        try:
            return load_checkpoint(path, region, spec)
        except CheckpointError as exc:
            raise ResumeError(str(exc)) from None

    (area,) = spec.area_names
    recorded = epochs_of(area)
    m = len(recorded)
    if recorded != list(range(m)):
        raise ResumeError(
            f"{run.metrics_path}: {area}'s epochs are not recorded once each in order "
            f"(0, 1, …); it was altered, and resuming could rewrite them"
        )
    path = run.checkpoint_path(area)
    if not path.exists():
        if m:
            raise ResumeError(
                f"{path}: checkpoint does not exist; the run recorded {m} epochs of {area} "
                f"(0–{m - 1}) and cannot continue them without it"
            )
        raise ResumeError(f"{path}: checkpoint does not exist; the run never finished an epoch")
    saved = verified(path, area)
    k = saved.epoch
    if int(saved.state.get("epoch", k)) != k:
        raise ResumeError(f"{path}: damaged (it says epoch {k}, its state another)")
    # the records of epochs the checkpoint holds but metrics.jsonl lacks (the kill, or the
    # orchestrator's death, came between a checkpoint and the write of its metric)
    saved_records = {
        r["epoch"]: r
        for r in [*saved.state.get("recent_metrics", []), saved.state.get("last_metric") or {}]
        if isinstance(r, dict) and isinstance(r.get("epoch"), int)
    }
    gap = list(range(m, k))
    if k < m or any(e not in saved_records for e in gap):
        effect = f"rewrite epochs {k}–{m - 1}" if k < m else f"skip epochs {m}–{k - 1}"
        raise ResumeError(
            f"{path}: holds {k} epochs of {area} but {run.metrics_path.name} records {m}: "
            f"the checkpoint is from another point of the run (or another run); resuming from "
            f"it would {effect}"
        )
    missing = [{"region": area, **saved_records[e]} for e in gap]
    if k >= spec.epochs and not gap:  # (with a gap: the records are restored, the run ends)
        raise ResumeError(f"the run in {run.path} already completed its {spec.epochs} epochs")
    ended = lesioned_at_end(events)
    stays = set(ended) | {r for r, e in spec.ablation_schedule if e < k}
    restored = [area]
    for name in LESIONABLE if spec.uses_cerebellum else ():
        path = run.checkpoint_path(name)
        if path.exists():
            e = verified(path, name).epoch
            if e > k:
                raise ResumeError(
                    f"{path}: after epoch {e}, later than {area}'s checkpoint ({k} epochs, "
                    f"0–{k - 1}): the two come from different points of the run"
                )
            if name == "cerebellum" and name not in stays and e < k - 2:
                raise ResumeError(
                    f"{path}: after epoch {e}, {k - 1 - e} epochs behind {area}'s checkpoint "
                    f"though the cerebellum was never lesioned: it is from an earlier point of "
                    f"the run (or another run)"
                )
            if name not in stays:
                restored.append(name)
        elif name not in stays and epochs_of(name):
            raise ResumeError(
                f"{path}: checkpoint does not exist, but {name} recorded epochs up to "
                f"{max(epochs_of(name))} and was alive at the end: its state would be lost"
            )
    return ResumePlan(
        run,
        spec,
        k,
        tuple(r for r in ended if r in LESIONABLE),
        tuple(restored),
        tuple(missing),
    )


def resume_run(run_path: str | Path, console: bool = True) -> RunOutcome:
    """Continue a run from its last complete checkpoint, in the same run directory.

    Everything is checked first (:func:`plan_resume`, the task's data, the placement): a run
    that cannot be resumed is refused with ResumeError and its directory is left exactly as
    it was. Metrics are only ever appended: the recorded epochs stay as they are, the resumed
    ones follow them (after the ``resume`` event). Regions lesioned when the run ended stay
    lesioned (``revive`` brings them back)."""
    plan = plan_resume(run_path)
    spec, run = plan.spec, plan.run
    check_task_data(spec)
    plan_placement(spec, list(region_names(spec)))
    for record in plan.missing_metrics:  # killed after the checkpoint, before the metric
        run.append_metric(record)
    run.append_event(
        "resume",
        epoch=plan.epoch,
        lesioned=list(plan.lesioned),
        restored=list(plan.checkpoints),
        metrics_restored=len(plan.missing_metrics),
    )
    return execute_run(
        spec,
        console,
        run=run,
        resume_epoch=plan.epoch,
        resume_lesioned=plan.lesioned,
        resume_checkpoints=plan.checkpoints,
    )
