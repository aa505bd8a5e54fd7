"""Metrics against scikit-learn and hand computation, on real data (breast cancer, digits)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler, label_binarize

from deepfoundry.errors import DeepfoundryError
from deepfoundry.metrics import (calibration_bins, classification_metrics, expected_calibration_error,
                                 ranking_metrics, regression_metrics, roc_pr_curves)


def _fitted_probabilities(loader, max_iter: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Test-split probabilities of a logistic regression on a real scikit-learn data set."""
    x, y = loader(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, stratify=y, random_state=0)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=max_iter)).fit(xtr, ytr)
    return model.predict_proba(xte), yte


@pytest.fixture(scope="module")
def binary() -> tuple[np.ndarray, np.ndarray]:
    return _fitted_probabilities(load_breast_cancer)


@pytest.fixture(scope="module")
def multiclass() -> tuple[np.ndarray, np.ndarray]:
    return _fitted_probabilities(load_digits)


def test_binary_metrics_match_sklearn(binary) -> None:
    proba, y = binary
    pred = proba.argmax(1)
    m = classification_metrics(pred, y, 2, proba=proba)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    for avg in ("macro", "weighted"):
        assert m[f"precision_{avg}"] == pytest.approx(skm.precision_score(y, pred, average=avg))
        assert m[f"recall_{avg}"] == pytest.approx(skm.recall_score(y, pred, average=avg))
        assert m[f"f1_{avg}"] == pytest.approx(skm.f1_score(y, pred, average=avg))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, proba[:, 1]))
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(y, proba[:, 1]))
    assert m["per_class"]["f1"] == pytest.approx(skm.f1_score(y, pred, average=None).tolist())
    assert m["per_class"]["support"] == np.bincount(y).tolist()
    assert m["confusion_matrix"] == skm.confusion_matrix(y, pred).tolist()
    assert 0.9 < m["roc_auc"] <= 1.0 and 0.0 <= m["ece"] < 0.2


def test_multiclass_one_vs_rest_macro_matches_sklearn(multiclass) -> None:
    proba, y = multiclass
    pred = proba.argmax(1)
    m = classification_metrics(pred, y, 10, proba=proba)
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, proba, multi_class="ovr", average="macro"))
    onehot = label_binarize(y, classes=range(10))
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(onehot, proba, average="macro"))
    assert m["recall_macro"] == pytest.approx(skm.recall_score(y, pred, average="macro"))
    assert m["per_class"]["precision"] == pytest.approx(skm.precision_score(y, pred, average=None).tolist())
    curves = roc_pr_curves(proba, y)
    assert [c["class"] for c in curves] == list(range(10))
    assert np.mean([c["roc_auc"] for c in curves]) == pytest.approx(m["roc_auc"])


def test_class_missing_from_targets_is_left_out_of_the_macro_average(multiclass) -> None:
    proba, y = multiclass
    keep = y != 3  # class 3 has no positive left: its one-vs-rest curve is undefined
    scores = ranking_metrics(proba[keep], y[keep])
    expected = np.mean([skm.roc_auc_score(y[keep] == k, proba[keep, k]) for k in range(10) if k != 3])
    assert scores["roc_auc"] == pytest.approx(expected)
    assert math.isnan(ranking_metrics(proba[y == 3], y[y == 3])["roc_auc"])


def test_ece_on_a_constructed_case() -> None:
    # confidence 0.95 (bin 15): right, wrong      -> acc 0.5, conf 0.95, gap 0.45, weight 2/5
    # confidence 0.60 (bin 9, (0.533, 0.6]): right, right, wrong -> acc 2/3, conf 0.6, gap 1/15, weight 3/5
    proba = np.array([[0.95, 0.05], [0.05, 0.95], [0.6, 0.4], [0.4, 0.6], [0.6, 0.4]])
    target = np.array([0, 0, 0, 1, 1])
    expected = 2 / 5 * 0.45 + 3 / 5 * (2 / 3 - 0.6)
    assert expected_calibration_error(proba, target) == pytest.approx(expected)
    bins = calibration_bins(proba, target)
    assert bins["count"].tolist() == [0] * 8 + [3] + [0] * 5 + [2]
    assert bins["accuracy"][8] == pytest.approx(2 / 3) and bins["confidence"][14] == pytest.approx(0.95)
    # a confidence on a bin edge belongs to the lower bin: 0.6 = 9/15 is in bin 9, not 10
    assert calibration_bins(np.array([[9 / 15, 6 / 15]]), np.array([0]))["count"][8] == 1
    # right at the stated confidence in every bin: calibrated
    assert expected_calibration_error(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 1])) == 0.0


def test_ece_matches_a_direct_loop(multiclass) -> None:
    proba, y = multiclass
    conf, right = proba.max(1), proba.argmax(1) == y
    total = 0.0
    for b in range(15):
        inside = (conf > b / 15) & (conf <= (b + 1) / 15)
        if inside.any():
            total += inside.mean() * abs(right[inside].mean() - conf[inside].mean())
    assert expected_calibration_error(proba, y) == pytest.approx(total)
    assert calibration_bins(proba, y)["count"].sum() == len(y)


def test_regression_metrics_by_hand() -> None:
    from sklearn.datasets import load_diabetes

    y = load_diabetes().target[:100]
    pred = y + np.linspace(-30, 30, 100)
    m = regression_metrics(pred, y)
    assert m["mse"] == pytest.approx(np.mean((pred - y) ** 2))
    assert m["rmse"] == pytest.approx(math.sqrt(m["mse"]))
    assert m["mae"] == pytest.approx(np.mean(np.abs(pred - y)))
    assert m["r2"] == pytest.approx(1 - np.sum((pred - y) ** 2) / np.sum((y - y.mean()) ** 2))


def test_bad_probabilities_are_clear_errors(binary) -> None:
    proba, y = binary
    with pytest.raises(DeepfoundryError, match=r"probabilities must have shape \(N, C\) with N = 10 targets"):
        expected_calibration_error(proba, y[:10])
    with pytest.raises(DeepfoundryError, match=r"targets must be class indices in \[0, 2\)"):
        ranking_metrics(proba, y + 1)
    with pytest.raises(DeepfoundryError, match="n_bins must be a positive integer"):
        calibration_bins(proba, y, n_bins=0)
