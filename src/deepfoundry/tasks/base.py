"""The Task: what one training step and one evaluation step mean for a family of models.

A Task is an ``nn.Module`` that owns the model. The Trainer calls ``training_step(batch) -> loss``
in its loop, ``evaluation_step(batch)`` on validation/test batches (the task accumulates what its
metrics need) and ``compute_metrics()`` at the end of an evaluation pass. ``predict(x)`` maps
preprocessed inputs to outputs in the user's units. Tasks with several optimizers (GANs) set
``manual_optimization = True`` and step their own optimizers inside ``training_step``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Task(nn.Module):
    manual_optimization: bool = False

    def __init__(self, model: nn.Module, info: dict[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.info = info

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: Any) -> torch.Tensor:
        raise NotImplementedError

    def reset_metrics(self) -> None:
        raise NotImplementedError

    def evaluation_step(self, batch: Any) -> None:
        raise NotImplementedError

    def compute_metrics(self) -> dict[str, Any]:
        raise NotImplementedError

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
