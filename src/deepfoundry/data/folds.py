"""One fold of k-fold cross-validation over another data set (``deepfoundry cv`` writes such configs).

``cv-fold`` builds the data set ``base`` as usual, pools its train and validation rows (the test split is
never touched), assigns the pool to ``folds`` folds (:func:`deepfoundry.splits.kfold_indices`: stratified
for classification, seeded by ``seed``) and returns fold ``fold`` (1-based) as the test split; the other folds are
split again into train and a ``val_fraction`` validation share (stratified where possible) for the
trainer's monitoring. A fold run's config therefore rebuilds exactly its own splits
(``load_run(fold).evaluate()`` scores the held-out fold).

>>> from deepfoundry.registry import DATASETS
>>> s = DATASETS.build("cv-fold", {"base": "iris", "folds": 5, "fold": 1})
>>> len(s.test[0]), s.info["cv"]
(24, {'base': 'iris', 'fold': 1, 'folds': 5})
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import DeepfoundryError
from ..registry import DATASETS
from ..splits import holdout_split, kfold_indices
from .core import Splits


@DATASETS.register("cv-fold")
def cv_fold(*, base: str, folds: int, fold: int, base_kwargs: dict[str, Any] | None = None,
            root: str | None = None, download: bool = False, val_fraction: float = 0.1, test_fraction: float = 0.2,
            seed: int = 0, batch_size: int = 64, eval_batch_size: int = 1024) -> Splits:
    """Fold `fold` (1..folds) of a k-fold split of another data set's train+val rows (written by 'deepfoundry cv')."""
    if base == "cv-fold":
        raise DeepfoundryError("data.base of a cv-fold data set cannot itself be 'cv-fold'")
    if isinstance(fold, bool) or not isinstance(fold, int) or not 1 <= fold <= folds:
        raise DeepfoundryError(f"config key 'data.fold': expected an integer from 1 to {folds}, received {fold!r}")
    context = {"root": root, "download": download, "val_fraction": val_fraction, "test_fraction": test_fraction,
               "seed": seed, "batch_size": batch_size, "eval_batch_size": eval_batch_size}
    splits = DATASETS.build(base, dict(base_kwargs or {}), context=context, key="data")
    if not isinstance(splits, Splits):
        raise DeepfoundryError(f"cross-validation needs a data set of in-memory tensors; {base!r} builds its own "
                               f"loaders (text, graphs), which 'deepfoundry cv' does not split yet")
    x = torch.cat([splits.train[0], splits.val[0]])
    y = torch.cat([splits.train[1], splits.val[1]])
    info = dict(splits.info)
    classification = info.get("task_type") == "classification"
    labels = y.numpy() if classification else None
    train_rows, held = kfold_indices(len(y), folds, labels=labels, seed=seed)[fold - 1]
    train, val = holdout_split(train_rows, val_fraction, seed, labels, strict=False)
    if (info.get("preprocess") or {}).get("kind") == "standardize":
        info.pop("preprocess")  # refitted by build_data on this fold's training rows
    info["cv"] = {"base": base, "fold": fold, "folds": folds, "stratified": classification}
    kind = "stratified " if classification else ""
    info["split_note"] = (f"cross-validation fold {fold} of {folds} ({kind}k-fold, seed {seed}) over the "
                          f"{len(y):,} train+val rows of {base!r}: {len(train):,} train / {len(val):,} val / "
                          f"{len(held):,} held-out test rows; the data set's own test split is not used")
    pick = lambda idx: (x[torch.from_numpy(np.asarray(idx))], y[torch.from_numpy(np.asarray(idx))])  # noqa: E731
    return Splits(pick(train), pick(val), pick(held), info)
