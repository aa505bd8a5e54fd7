"""What one training step means, per family: classification, regression, ..."""
from typing import Any

from torch import nn

from ..registry import TASKS
from .base import Task

# the modules here register their tasks in TASKS; registry.py lists them and imports them on first use


def build_task(cfg: Any, model: nn.Module, info: dict[str, Any]) -> Task:
    """``cfg`` is a :class:`~deepfoundry.config.TaskConfig`."""
    return TASKS.build(cfg.name, cfg.builder_kwargs(), context={"model": model, "info": info}, key="task")


__all__ = ["Task", "build_task"]
