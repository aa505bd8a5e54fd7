"""Classification: logits ``z = f(x)`` of shape (B, C), loss cross-entropy (optionally label-smoothed).

Evaluation keeps the class probabilities ``softmax(z)`` of every sample, so the metrics include ROC-AUC,
PR-AUC and the calibration error (see :mod:`deepfoundry.metrics`), and :meth:`ClassificationTask.outputs`
hands them to reports (curves, reliability diagram, worst-predicted examples).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..metrics import classification_metrics
from ..registry import TASKS
from .base import ClassifierOutputs, Task
from .losses import make_loss


class ClassificationTask(ClassifierOutputs, Task):
    """Trains ``model`` to output class logits; reports accuracy, precision/recall/F1, top-k, confusion matrix."""

    report_sections = ("curves", "confusion", "classification")
    exportable = True

    def __init__(self, model: nn.Module, info: dict[str, Any], loss: str = "cross_entropy",
                 label_smoothing: float = 0.0, top_k: int = 5) -> None:
        super().__init__(model, info)
        self.num_classes = int(info["num_classes"])
        self.loss_fn = make_loss(loss, label_smoothing=label_smoothing)
        self.top_k = top_k if self.num_classes > top_k else 0
        self.reset_metrics()

    def training_step(self, batch: Any) -> torch.Tensor:
        """Cross-entropy on class indices ``y`` (B,), or on soft targets ``q`` (B, C) from MixUp/CutMix
        (``data.augment``): ``-sum_c q_c log softmax(z)_c``, label smoothing applied on top."""
        x, y = batch
        return self.loss_fn(self.model(x), y)

    def reset_metrics(self) -> None:
        self._loss_sum, self._count, self._topk = 0.0, 0, 0
        self._preds: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []
        self._probs: list[torch.Tensor] = []

    def evaluation_step(self, batch: Any) -> None:
        x, y = batch
        logits = self.model(x).float()
        self._loss_sum += float(self.loss_fn(logits, y)) * len(y)
        self._count += len(y)
        self._preds.append(logits.argmax(dim=1).cpu())
        self._targets.append(y.cpu())
        self._probs.append(torch.softmax(logits, dim=1).cpu())  # (B, C)
        if self.top_k:
            top = logits.topk(self.top_k, dim=1).indices  # (B, k)
            self._topk += int((top == y[:, None]).any(dim=1).sum())

    def compute_metrics(self) -> dict[str, Any]:
        pred = torch.cat(self._preds).numpy() if self._preds else np.zeros(0, dtype=np.int64)
        target = torch.cat(self._targets).numpy() if self._targets else np.zeros(0, dtype=np.int64)
        proba = self.outputs()["proba"]
        out = {"loss": self._loss_sum / max(1, self._count)}
        out.update(classification_metrics(pred, target, self.num_classes,
                                          {self.top_k: self._topk} if self.top_k else None,
                                          proba=proba if len(proba) else None))
        return out

    def outputs(self) -> dict[str, np.ndarray]:
        """What the last evaluation pass saw, in loader order: ``proba`` (N, C) and ``target`` (N,)."""
        proba = torch.cat(self._probs).double().numpy() if self._probs else np.zeros((0, self.num_classes))
        target = torch.cat(self._targets).numpy() if self._targets else np.zeros(0, dtype=np.int64)
        return {"proba": proba, "target": target}

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``softmax(z)`` of shape (B, C)."""
        return torch.softmax(self.model(x).float(), dim=1)


@TASKS.register("classification")
def classification(*, model: nn.Module, info: dict[str, Any], loss: str = "cross_entropy",
                   label_smoothing: float = 0.0, top_k: int = 5) -> ClassificationTask:
    """Single-label classification with cross-entropy (label smoothing optional)."""
    return ClassificationTask(model, info, loss=loss, label_smoothing=label_smoothing, top_k=top_k)
