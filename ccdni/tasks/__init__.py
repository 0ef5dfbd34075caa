"""Tasks: what the cortical areas are asked to learn.

Every task turns into :class:`ccdni.tasks.base.Batch` objects of shape ``(B, N, I)`` with a target
and a boolean mask of the steps that carry a loss, so that the truncated learner in
``areas.cortex`` never needs to know which task it is solving.
"""

from ccdni.tasks.base import Batch, Task, build_task

__all__ = ["Batch", "Task", "build_task"]
