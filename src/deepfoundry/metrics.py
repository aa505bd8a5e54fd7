"""Metrics for classification and regression (scikit-learn underneath).

Classification, from predicted classes ``p`` and true classes ``y`` over ``N`` samples:
accuracy ``mean(p == y)``; per class ``precision = TP / (TP + FP)``, ``recall = TP / (TP + FN)``,
``F1 = 2 PR / (P + R)``, averaged ``macro`` (unweighted over classes) or ``weighted`` (by support);
top-k accuracy: the true class is among the k highest scores.

From class probabilities ``P`` (N, C): ROC-AUC (area under TPR against FPR as the threshold moves) and
PR-AUC (average precision ``sum_n (R_n - R_{n-1}) P_n``), for two classes on the positive class 1,
otherwise one-vs-rest per class and their unweighted (macro) mean over the classes present in ``y``
with at least one negative; the expected calibration error :func:`expected_calibration_error`.

Regression: ``MSE = mean((p - y)^2)``, ``RMSE = sqrt(MSE)``, ``MAE = mean|p - y|``,
``R2 = 1 - sum (p - y)^2 / sum (y - mean y)^2``.

>>> import numpy as np
>>> m = classification_metrics(np.array([0, 1, 1]), np.array([0, 1, 0]), 2,
...                            proba=np.array([[.9, .1], [.2, .8], [.4, .6]]))
>>> round(m["accuracy"], 3), m["roc_auc"]
(0.667, 1.0)
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import DeepfoundryError

ECE_BINS = 15


def _check_proba(proba: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    proba = np.asarray(proba, dtype=np.float64)
    target = np.asarray(target).astype(np.int64).ravel()
    if proba.ndim != 2 or len(proba) != len(target):
        raise DeepfoundryError(f"probabilities must have shape (N, C) with N = {len(target)} targets; "
                               f"received shape {proba.shape}")
    if len(target) and (target.min() < 0 or target.max() >= proba.shape[1]):
        raise DeepfoundryError(f"targets must be class indices in [0, {proba.shape[1]}); "
                               f"received values from {target.min()} to {target.max()}")
    return proba, target


def calibration_bins(proba: np.ndarray, target: np.ndarray, n_bins: int = ECE_BINS) -> dict[str, np.ndarray]:
    """Reliability-diagram data: the confidence ``c_n = max_k P[n, k]`` of each prediction falls into one of
    ``n_bins`` equal-width bins ``B_b = ((b-1)/M, b/M]`` (the first bin includes 0).

    Returns per bin ``count |B_b|``, ``accuracy`` (share of the bin's predictions that are right),
    ``confidence`` (mean ``c_n`` in the bin; both NaN for an empty bin) and the bin ``edges`` (M + 1).
    """
    proba, target = _check_proba(proba, target)
    if n_bins < 1:
        raise DeepfoundryError(f"n_bins must be a positive integer, received {n_bins}")
    conf = proba.max(axis=1) if len(proba) else np.zeros(0)
    correct = (proba.argmax(axis=1) == target) if len(proba) else np.zeros(0, dtype=bool)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)  # (N,) bin index
    count = np.bincount(which, minlength=n_bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(which, weights=correct.astype(np.float64), minlength=n_bins) / count
        confidence = np.bincount(which, weights=conf, minlength=n_bins) / count
    return {"count": count, "accuracy": accuracy, "confidence": confidence, "edges": edges}


def expected_calibration_error(proba: np.ndarray, target: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error with ``M = n_bins`` (default 15) equal-width confidence bins:

    ``ECE = sum_b (|B_b| / N) * |acc(B_b) - conf(B_b)|``

    where ``B_b`` holds the predictions whose confidence ``max_k P[n, k]`` lies in ``((b-1)/M, b/M]``,
    ``acc(B_b)`` is the share of them predicted right and ``conf(B_b)`` their mean confidence
    (Guo et al. 2017). 0 for a perfectly calibrated model; NaN with no samples.

    >>> expected_calibration_error(np.array([[0.9, 0.1], [0.9, 0.1]]), np.array([0, 1]))
    0.4
    """
    bins = calibration_bins(proba, target, n_bins)
    n = int(bins["count"].sum())
    if n == 0:
        return float("nan")
    full = bins["count"] > 0
    gap = np.abs(bins["accuracy"][full] - bins["confidence"][full])
    return float(round(np.sum(bins["count"][full] / n * gap), 12))


def _one_vs_rest(proba: np.ndarray, target: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(class, binary truth, score) for each class scored one-vs-rest: class 1 only when C == 2; classes
    absent from ``target`` (or covering all of it) are left out, since their curves are undefined."""
    classes = [1] if proba.shape[1] == 2 else range(proba.shape[1])
    out = []
    for k in classes:
        truth = (target == k).astype(np.int64)
        if 0 < truth.sum() < len(truth):
            out.append((k, truth, proba[:, k]))
    return out


def ranking_metrics(proba: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """``roc_auc`` and ``pr_auc`` (average precision): binary on class 1, else one-vs-rest macro; NaN when
    no class has both positives and negatives in ``target``."""
    from sklearn import metrics as skm

    proba, target = _check_proba(proba, target)
    parts = _one_vs_rest(proba, target)
    if not parts:
        return {"roc_auc": float("nan"), "pr_auc": float("nan")}
    return {"roc_auc": float(np.mean([skm.roc_auc_score(t, s) for _, t, s in parts])),
            "pr_auc": float(np.mean([skm.average_precision_score(t, s) for _, t, s in parts]))}


def roc_pr_curves(proba: np.ndarray, target: np.ndarray) -> list[dict[str, Any]]:
    """Per scored class (see :func:`ranking_metrics`): ``{"class", "fpr", "tpr", "roc_auc", "precision",
    "recall", "pr_auc", "prevalence"}`` for plotting ROC and precision-recall curves."""
    from sklearn import metrics as skm

    proba, target = _check_proba(proba, target)
    curves = []
    for k, truth, score in _one_vs_rest(proba, target):
        fpr, tpr, _ = skm.roc_curve(truth, score)
        precision, recall, _ = skm.precision_recall_curve(truth, score)
        curves.append({"class": k, "fpr": fpr, "tpr": tpr, "roc_auc": float(skm.auc(fpr, tpr)),
                       "precision": precision, "recall": recall,
                       "pr_auc": float(skm.average_precision_score(truth, score)),
                       "prevalence": float(truth.mean())})
    return curves


def classification_metrics(pred: np.ndarray, target: np.ndarray, num_classes: int,
                           topk_hits: dict[int, int] | None = None,
                           proba: np.ndarray | None = None) -> dict[str, Any]:
    """Scalar metrics, ``per_class`` lists (precision, recall, f1, support) and ``confusion_matrix``
    (rows: true class, columns: predicted class). With ``proba`` (N, C) also ``roc_auc``, ``pr_auc``
    and ``ece`` (15 bins)."""
    from sklearn import metrics as skm  # imported on first use: it costs a second at start-up

    labels = list(range(num_classes))
    out: dict[str, Any] = {"accuracy": float(skm.accuracy_score(target, pred)) if len(target) else float("nan")}
    for average in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(target, pred, labels=labels, average=average,
                                                         zero_division=0)
        out.update({f"precision_{average}": float(p), f"recall_{average}": float(r), f"f1_{average}": float(f)})
    for k, hits in (topk_hits or {}).items():
        out[f"top{k}_accuracy"] = hits / max(1, len(target))
    if proba is not None:
        out.update(ranking_metrics(proba, target))
        out["ece"] = expected_calibration_error(proba, target)
    p, r, f, s = skm.precision_recall_fscore_support(target, pred, labels=labels, average=None, zero_division=0)
    out["per_class"] = {"precision": p.tolist(), "recall": r.tolist(), "f1": f.tolist(), "support": s.tolist()}
    out["confusion_matrix"] = skm.confusion_matrix(target, pred, labels=labels).tolist()
    return out


def regression_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """MSE, RMSE, MAE and R2 (NaN for fewer than two targets) in the units of ``target``."""
    from sklearn import metrics as skm

    mse = float(skm.mean_squared_error(target, pred))
    return {
        "mse": mse,
        "rmse": math.sqrt(mse),
        "mae": float(skm.mean_absolute_error(target, pred)),
        "r2": float(skm.r2_score(target, pred)) if len(target) > 1 else float("nan"),
    }
