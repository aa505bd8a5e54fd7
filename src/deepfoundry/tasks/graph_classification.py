"""Graph classification: one class per graph, on mini-batches of many small graphs.

A batch is the dict :meth:`deepfoundry.data.graph_sets.GraphSet.batch` returns (``x``, ``edge_index``,
``batch``, ``y``, ``num_graphs``). The model reads the whole disjoint union and pools one vector per
graph, ``Z = f(X, A, batch)`` of shape (B, C); the loss is the cross-entropy over the graphs::

    loss = -1/B sum_g log softmax(Z_g)[y_g]
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DeepfoundryError
from ..registry import TASKS
from .base import ClassifierOutputs, Task
from .node_classification import NodeClassificationTask


class GraphClassificationTask(ClassifierOutputs, Task):
    """Cross-entropy on pooled graph logits; accuracy, macro precision/recall/F1, confusion matrix."""

    report_sections = ("curves", "confusion", "graph_embeddings")

    def __init__(self, model: nn.Module, info: dict[str, Any], label_smoothing: float = 0.0) -> None:
        super().__init__(model, info)
        if info.get("input_kind") != "graph_set":
            raise DeepfoundryError(f"task 'graph_classification' needs a set of graphs (synthetic-graphs, tu), "
                                   f"received input_kind={info.get('input_kind')!r}"
                                   + ("; use task.name=node_classification" if info.get("input_kind") == "graph" else ""))
        if not hasattr(model, "features") or not hasattr(model, "head"):
            raise DeepfoundryError(f"task 'graph_classification' needs a graph-level model (gin_graph, gcn_graph, "
                                   f"sage_graph, mlp_graph), received {type(model).__name__}")
        self.num_classes = int(info["num_classes"])
        self.label_smoothing = label_smoothing
        self.reset_metrics()

    def logits(self, batch: dict[str, Any]) -> torch.Tensor:
        """Class logits of every graph of the batch (B, C)."""
        return self.model(batch["x"], batch["edge_index"], batch["batch"], int(batch["num_graphs"]))

    def training_step(self, batch: dict[str, Any]) -> torch.Tensor:
        return F.cross_entropy(self.logits(batch), batch["y"], label_smoothing=self.label_smoothing)

    def reset_metrics(self) -> None:
        self._loss_sum, self._count = 0.0, 0
        self._confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)

    def evaluation_step(self, batch: dict[str, Any]) -> None:
        self.accumulate(self.logits(batch).float(), batch["y"])

    accumulate = NodeClassificationTask.accumulate  # the same loss sum and confusion counts
    compute_metrics = NodeClassificationTask.compute_metrics

    @torch.no_grad()
    def predict(self, batch: dict[str, Any]) -> torch.Tensor:
        """Class probabilities ``softmax(Z)`` (B, C) of the graphs of ``batch``."""
        return torch.softmax(self.logits(batch).float(), dim=1)


@TASKS.register("graph_classification")
def graph_classification(*, model: nn.Module, info: dict[str, Any],
                         label_smoothing: float = 0.0) -> GraphClassificationTask:
    """Graph classification: cross-entropy on one pooled prediction per graph (mini-batches of graphs)."""
    return GraphClassificationTask(model, info, label_smoothing=label_smoothing)
