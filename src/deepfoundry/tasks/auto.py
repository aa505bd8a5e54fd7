"""The task the data calls for: ``classification`` or ``regression`` after ``info['task_type']``.

Data sets that infer the task from their target (``table-csv``, whose target may hold class labels or real
values) pair with ``task.name: auto``; extra ``task.*`` keys go to the chosen task's builder.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import DeepfoundryError
from ..registry import TASKS
from .base import Task


@TASKS.register("auto")
def auto(*, model: nn.Module, info: dict[str, Any], **kwargs: Any) -> Task:
    """Classification or regression, whichever the data's task_type is (tabular CSV data)."""
    kind = info.get("task_type")
    if kind not in ("classification", "regression"):
        raise DeepfoundryError(f"task 'auto' needs data whose task_type is classification or regression; "
                               f"received task_type={kind!r}; set task.name explicitly")
    return TASKS.build(kind, kwargs, context={"model": model, "info": info}, key="task")
