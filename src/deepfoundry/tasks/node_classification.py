"""Node classification on one graph (transductive, full batch).

The model sees the whole graph every step, ``Z = f(X, A)`` of shape (N, C); the loss is the
cross-entropy over the nodes of the batch's split only::

    loss = -1/|M| sum_{i in M} log softmax(Z_i)[y_i]        # M: the split's node mask

A batch is the dict :class:`~deepfoundry.data.graphs.GraphLoader` yields
(``x``, ``edge_index``, ``adjacency``, ``y``, ``mask``).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DeepfoundryError
from ..registry import TASKS
from .base import ClassifierOutputs, Task


def confusion_metrics(confusion: np.ndarray) -> dict[str, Any]:
    """The metrics of :func:`deepfoundry.metrics.classification_metrics` (accuracy, macro and weighted
    precision / recall / F1, per class, ``zero_division=0``) from a confusion matrix (rows: true
    class, columns: predicted class), in microseconds instead of scikit-learn's ~12 ms per call,
    which would be a third of a Cora epoch. ``tests/test_gnn.py`` checks that both agree."""
    cm = confusion.astype(np.float64)
    tp, support, predicted = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    total = cm.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "f1_macro": float(f1.mean()),
        "f1_weighted": float((f1 * support).sum() / total) if total else 0.0,
        "precision_weighted": float((precision * support).sum() / total) if total else 0.0,
        "recall_weighted": float((recall * support).sum() / total) if total else 0.0,
        "per_class": {"precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
                      "support": support.astype(int).tolist()},
        "confusion_matrix": confusion.astype(int).tolist(),
    }


class NodeClassificationTask(ClassifierOutputs, Task):
    """Cross-entropy on the masked nodes of a graph; accuracy, macro precision/recall/F1, confusion matrix."""

    report_sections = ("curves", "confusion", "node_embeddings")

    def __init__(self, model: nn.Module, info: dict[str, Any], label_smoothing: float = 0.0) -> None:
        super().__init__(model, info)
        if info.get("input_kind") != "graph":
            raise DeepfoundryError(f"task 'node_classification' needs a graph data set (karate, cora, ...), received "
                                   f"input_kind={info.get('input_kind')!r}; use task.name=classification")
        self.num_classes = int(info["num_classes"])
        self.label_smoothing = label_smoothing
        self.reset_metrics()

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Class logits of every node (N, C)."""
        return self.model(batch["x"], batch["edge_index"], batch.get("adjacency"))

    def training_step(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = batch["mask"]
        logits = self.logits(batch)[mask]  # (|M|, C)
        return F.cross_entropy(logits, batch["y"][mask], label_smoothing=self.label_smoothing)

    def reset_metrics(self) -> None:
        self._loss_sum, self._count = 0.0, 0
        self._confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)

    def evaluation_step(self, batch: dict[str, torch.Tensor]) -> None:
        mask = batch["mask"]
        logits = self.logits(batch)[mask].float()  # (|M|, C)
        self.accumulate(logits, batch["y"][mask])

    def accumulate(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        """Add a batch's summed cross-entropy and its confusion counts (rows: true, columns: predicted)."""
        self._loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        self._count += len(y)
        pairs = (y * self.num_classes + logits.argmax(dim=1)).cpu()
        self._confusion += torch.bincount(pairs, minlength=self.num_classes ** 2).view(self.num_classes, -1)

    def compute_metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {"loss": self._loss_sum / max(1, self._count)}
        out.update(confusion_metrics(self._confusion.numpy()))
        return out

    @torch.no_grad()
    def predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Class probabilities ``softmax(Z)`` (N, C) of every node of the graph ``batch``."""
        return torch.softmax(self.logits(batch).float(), dim=1)


@TASKS.register("node_classification")
def node_classification(*, model: nn.Module, info: dict[str, Any], label_smoothing: float = 0.0) -> NodeClassificationTask:
    """Node classification on one graph: cross-entropy on the split's labelled nodes (full batch)."""
    return NodeClassificationTask(model, info, label_smoothing=label_smoothing)
