"""Metrics for classification and regression (scikit-learn underneath).

Classification, from predicted classes ``p`` and true classes ``y`` over ``N`` samples:
accuracy ``mean(p == y)``; per class ``precision = TP / (TP + FP)``, ``recall = TP / (TP + FN)``,
``F1 = 2 PR / (P + R)``, averaged ``macro`` (unweighted over classes) or ``weighted`` (by support);
top-k accuracy: the true class is among the k highest scores.
Regression: ``MSE = mean((p - y)^2)``, ``RMSE = sqrt(MSE)``, ``MAE = mean|p - y|``,
``R2 = 1 - sum (p - y)^2 / sum (y - mean y)^2``.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np


def classification_metrics(pred: np.ndarray, target: np.ndarray, num_classes: int,
                           topk_hits: dict[int, int] | None = None) -> dict[str, Any]:
    """Scalar metrics plus ``confusion_matrix`` (rows: true class, columns: predicted class)."""
    from sklearn import metrics as skm  # imported on first use: it costs a second at start-up

    labels = list(range(num_classes))
    out: dict[str, Any] = {
        "accuracy": float(skm.accuracy_score(target, pred)),
        "precision_macro": float(skm.precision_score(target, pred, labels=labels, average="macro", zero_division=0)),
        "recall_macro": float(skm.recall_score(target, pred, labels=labels, average="macro", zero_division=0)),
        "f1_macro": float(skm.f1_score(target, pred, labels=labels, average="macro", zero_division=0)),
        "f1_weighted": float(skm.f1_score(target, pred, labels=labels, average="weighted", zero_division=0)),
    }
    for k, hits in (topk_hits or {}).items():
        out[f"top{k}_accuracy"] = hits / max(1, len(target))
    out["confusion_matrix"] = skm.confusion_matrix(target, pred, labels=labels).tolist()
    return out


def regression_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    from sklearn import metrics as skm

    mse = float(skm.mean_squared_error(target, pred))
    return {
        "mse": mse,
        "rmse": math.sqrt(mse),
        "mae": float(skm.mean_absolute_error(target, pred)),
        "r2": float(skm.r2_score(target, pred)) if len(target) > 1 else float("nan"),
    }
