"""TensorBoard scalars of a run (``--tensorboard``; needs the ``tensorboard`` extra).

Every metric record written to ``metrics.jsonl`` is also written, per region and namespaced,
as scalars of ``RUN/tensorboard/`` (``area0/train_loss``, ``area0/val_mse``,
``olive/cerebellar_loss``, ``cerebellum/errors_applied`` …) at step = the record's epoch.
``tensorboard --logdir RUN/tensorboard`` shows one run; ``tensorboard --logdir SWEEP/runs``
shows a sweep's runs side by side (one event-file folder per run).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


class TensorBoardError(RuntimeError):
    """TensorBoard was asked for but cannot be used; the text says how to get it."""


class TensorBoardSink:
    """Writes the numeric fields of each epoch record as ``REGION/FIELD`` scalars."""

    def __init__(self, folder: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise TensorBoardError(
                "--tensorboard needs the tensorboard package: pip install -e '.[tensorboard]'"
            ) from None
        self.writer = SummaryWriter(log_dir=str(folder))

    def __call__(self, record: dict[str, Any]) -> None:
        epoch = record.get("epoch")
        region = record.get("region")
        if not isinstance(epoch, int) or not isinstance(region, str):
            return  # end-of-run totals have no step
        for key, value in record.items():
            if key in ("epoch", "region") or isinstance(value, bool):
                continue
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(f"{region}/{key}", value, global_step=epoch)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
