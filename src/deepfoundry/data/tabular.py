"""Tabular data sets bundled with scikit-learn (offline): iris, wine, breast-cancer, diabetes.

Inputs are float32 ``(N, F)`` raw feature values; :func:`~deepfoundry.data.core.build_data`
standardises each feature with statistics of the training split. Classification sets split with
stratification; the regression set (diabetes) standardises its target with training-split
statistics and records them as ``info['target_mean']`` / ``info['target_std']``, so predictions map
back to original units as ``y * target_std + target_mean``.

>>> from deepfoundry.registry import DATASETS
>>> splits = DATASETS.build("iris")
>>> splits.train[0].shape, splits.info["class_names"]
(torch.Size([108, 4]), ['setosa', 'versicolor', 'virginica'])
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from sklearn import datasets as sk_datasets
from sklearn.preprocessing import StandardScaler

from ..registry import DATASETS
from .core import Splits
from .images import three_way_split


def _table_info(feature_names: list[str], split_note: str) -> dict[str, Any]:
    return {"input_kind": "table", "in_features": len(feature_names), "input_shape": [len(feature_names)],
            "feature_names": feature_names, "split_note": split_note}


def _note(title: str, n: int, parts: tuple[np.ndarray, ...], val_fraction: float, test_fraction: float,
          seed: int, stratified: bool) -> str:
    train, val, test = (len(p) for p in parts)
    kind = "a stratified random" if stratified else "a random"
    return (f"{train:,} train / {val:,} val / {test:,} test rows: {kind} split (seed {seed}) of the {n:,} rows of "
            f"scikit-learn's {title}, {test_fraction:.0%} test, then {val_fraction:.0%} of the rest val")


def _classification(title: str, loader: Callable[..., Any], val_fraction: float, test_fraction: float,
                    seed: int) -> Splits:
    bunch = loader()
    x = np.asarray(bunch.data, dtype=np.float32)
    y = np.asarray(bunch.target, dtype=np.int64)
    parts = three_way_split(y, len(y), val_fraction, test_fraction, seed)
    train, val, test = ((torch.from_numpy(x[idx]), torch.from_numpy(y[idx])) for idx in parts)
    info = _table_info([str(f) for f in bunch.feature_names],
                       _note(title, len(y), parts, val_fraction, test_fraction, seed, stratified=True))
    class_names = [str(c) for c in bunch.target_names]
    info.update(task_type="classification", num_classes=len(class_names), class_names=class_names)
    return Splits(train, val, test, info)


@DATASETS.register("iris")
def iris(*, val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0) -> Splits:
    """Fisher's iris flowers: 150 rows, 4 measurements, 3 species (offline)."""
    return _classification("iris", sk_datasets.load_iris, val_fraction, test_fraction, seed)


@DATASETS.register("wine")
def wine(*, val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0) -> Splits:
    """Wine recognition: 178 rows, 13 chemical measurements, 3 cultivars (offline)."""
    return _classification("wine", sk_datasets.load_wine, val_fraction, test_fraction, seed)


@DATASETS.register("breast-cancer")
def breast_cancer(*, val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0) -> Splits:
    """Wisconsin breast cancer: 569 rows, 30 cell-nucleus features, malignant or benign (offline)."""
    return _classification("breast cancer", sk_datasets.load_breast_cancer, val_fraction, test_fraction, seed)


@DATASETS.register("diabetes")
def diabetes(*, val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0) -> Splits:
    """Diabetes progression (regression): 442 rows, 10 raw baseline features, one target (offline).

    Targets come back as float32 ``(N, 1)``, standardised with the training split's mean and
    (population) standard deviation, which ``info`` records as ``target_mean`` / ``target_std``.
    """
    bunch = sk_datasets.load_diabetes(scaled=False)  # raw features (age in years, bmi, ...), not pre-scaled
    x = np.asarray(bunch.data, dtype=np.float32)
    y = np.asarray(bunch.target, dtype=np.float64).reshape(-1, 1)
    parts = three_way_split(None, len(y), val_fraction, test_fraction, seed)
    scaler = StandardScaler().fit(y[parts[0]])
    y_std = scaler.transform(y).astype(np.float32)
    train, val, test = ((torch.from_numpy(x[idx]), torch.from_numpy(y_std[idx])) for idx in parts)
    info = _table_info([str(f) for f in bunch.feature_names],
                       _note("diabetes", len(y), parts, val_fraction, test_fraction, seed, stratified=False)
                       + "; targets standardised with the training split's mean and std")
    info.update(task_type="regression", num_classes=1, class_names=["disease progression"],
                target_mean=float(scaler.mean_[0]), target_std=float(scaler.scale_[0]))
    return Splits(train, val, test, info)
