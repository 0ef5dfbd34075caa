"""What an area saves for the figures at the end of a run (in-process or as a process)."""

from __future__ import annotations

import torch

from areas.cortex import AreaCore
from ccdni.base.rundir import RunDirectory


def save_results(area: AreaCore, run: RunDirectory, examples_per_digit: int = 4) -> None:
    """Arrays for the figures, from the trained area at the end of the run.

    Target reaching: the reach trajectories (``AREA-trajectories.pt``). seqMNIST family: the
    outputs on the first ``examples_per_digit`` validation examples of every digit
    (``AREA-examples.pt``: ``outputs`` (E, N, O), ``targets`` (E, N, O) or (E, N), ``labels``
    (E,), ``loss_steps`` (N,), ``task``, and ``paths`` (10, N, 2) for the drawing tasks).
    """
    task = area.task
    if hasattr(task, "trajectory_batch"):
        batch = task.trajectory_batch().to(area.device)
        outputs = area.learner.run(batch).cpu()  # (C, N, 2)
        torch.save(
            {"outputs": outputs, "targets": task.targets, "labels": batch.labels.cpu()},
            run.results_path(f"{area.interface}-trajectories.pt"),
        )
    if hasattr(task, "write_results"):  # captions: test BPW and greedy test captions
        task.write_results(area, run)
    if hasattr(task, "examples_batch"):
        batch = task.examples_batch(examples_per_digit)
        outputs = area.learner.run(batch.to(area.device)).cpu()  # (E, N, O)
        paths = getattr(task, "paths", None)  # (10, N, 2) for c-, dd-, ld-seqMNIST
        torch.save(
            {
                "task": task.name,
                "outputs": outputs,
                "targets": batch.targets,
                "labels": batch.labels,
                "loss_steps": batch.loss_steps,
                "paths": None if paths is None else paths.clone(),
            },
            run.results_path(f"{area.interface}-examples.pt"),
        )
