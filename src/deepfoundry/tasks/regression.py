"""Regression: ``p = f(x)`` of shape (B, 1) or (B, T) against standardised targets.

The data layer standardises targets with training statistics (``info['target_mean']``,
``info['target_std']``); the loss is computed in that scale and metrics/predictions are reported in
the original units ``p * std + mean``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..metrics import regression_metrics
from ..registry import TASKS
from .base import Task, ValueOutputs
from .losses import make_loss


class RegressionTask(ValueOutputs, Task):
    """Trains ``model`` to predict real values; reports MSE, RMSE, MAE and R2 in the original units."""

    report_sections = ("curves", "regression")
    exportable = True

    def __init__(self, model: nn.Module, info: dict[str, Any], loss: str = "mse", huber_delta: float = 1.0) -> None:
        super().__init__(model, info)
        self.loss_fn = make_loss(loss, huber_delta=huber_delta)
        self.mean = float(info.get("target_mean", 0.0))
        self.std = float(info.get("target_std", 1.0))
        self.reset_metrics()

    def _output(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return self.model(x).reshape(like.shape)

    def training_step(self, batch: Any) -> torch.Tensor:
        x, y = batch
        return self.loss_fn(self._output(x, y), y)

    def reset_metrics(self) -> None:
        self._loss_sum, self._count = 0.0, 0
        self._preds: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []

    def evaluation_step(self, batch: Any) -> None:
        x, y = batch
        pred = self._output(x, y).float()
        self._loss_sum += float(self.loss_fn(pred, y)) * len(y)
        self._count += len(y)
        self._preds.append(pred.cpu() * self.std + self.mean)
        self._targets.append(y.cpu() * self.std + self.mean)

    def compute_metrics(self) -> dict[str, Any]:
        pred = torch.cat(self._preds).numpy().ravel() if self._preds else np.zeros(0)
        target = torch.cat(self._targets).numpy().ravel() if self._targets else np.zeros(0)
        return {"loss": self._loss_sum / max(1, self._count), **regression_metrics(pred, target)}

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Predictions in the original target units."""
        return self.model(x).float() * self.std + self.mean

    def score(self, outputs: torch.Tensor, target: torch.Tensor) -> tuple[str, float]:
        """``rmse`` in the target's units: targets unscaled, ``y * std + mean``."""
        y = target.double().reshape(len(target), -1) * self.std + self.mean
        return "rmse", float(((outputs.double().reshape(y.shape) - y) ** 2).mean().sqrt())


@TASKS.register("regression")
def regression(*, model: nn.Module, info: dict[str, Any], loss: str = "mse", huber_delta: float = 1.0) -> RegressionTask:
    """Real-valued targets with MSE (or MAE / Huber) loss; metrics in the original units."""
    return RegressionTask(model, info, loss=loss, huber_delta=huber_delta)
