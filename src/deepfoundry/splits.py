"""Train / validation / test split helpers and k-fold assignments (scikit-learn's splitters underneath).

Four strategies, each returning sorted index arrays ``(train, val, test)`` (the loaders shuffle):

- ``random``: a seeded random ``test_fraction`` of the rows is test, then ``val_fraction`` of the rest val;
- ``stratified``: the same, with every class keeping its share in each split (sklearn's ``stratify``);
- ``group``: whole groups go to one split, so no group (a patient, a user, a site) is in two splits;
  the fractions are shares of the *groups* (sklearn's ``GroupShuffleSplit``);
- ``time``: rows ordered by time (ties keep their order); the earliest train, the next val, the last
  ``test_fraction`` test, so the model never trains on the future of what it is tested on.

Row counts: ``round(n * test_fraction)`` test rows, then ``round(rest * val_fraction)`` val rows.

>>> import numpy as np
>>> labels = np.array([0] * 80 + [1] * 20)
>>> train, val, test = split_indices("stratified", 100, labels=labels, val_fraction=0.1, test_fraction=0.2)
>>> len(train), len(val), len(test), int(labels[test].sum())
(72, 8, 20, 4)
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from .errors import DeepfoundryError

STRATEGIES = ("random", "stratified", "group", "time")


class SplitIndices(NamedTuple):
    """Sorted row indices of each split."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def _check_fraction(name: str, fraction: float) -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction < 1.0:
        raise DeepfoundryError(f"{name} must be a number in [0, 1), received {fraction!r}")
    return float(fraction)


def check_strategy(strategy: str, allowed: Sequence[str] = STRATEGIES) -> str:
    """``strategy`` if it is one of ``allowed``, else a one-line error naming the choices."""
    if strategy not in allowed:
        raise DeepfoundryError(f"config key 'data.split': expected one of {', '.join(allowed)}, received {strategy!r}")
    return strategy


def _holdout(indices: np.ndarray, fraction: float, seed: int, stratify: np.ndarray | None,
             what: str) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out) of ``indices``: ``round(len * fraction)`` held out at random (stratified if asked)."""
    from sklearn.model_selection import train_test_split

    n_out = int(round(len(indices) * fraction))
    if n_out == 0:
        return np.sort(indices), indices[:0]
    if n_out >= len(indices):
        raise DeepfoundryError(f"a {what} hold-out of {fraction} of {len(indices)} rows leaves none to train on")
    if stratify is not None:
        classes, counts = np.unique(stratify, return_counts=True)
        if counts.min() < 2 or not len(classes) <= n_out <= len(indices) - len(classes):
            rare = classes[counts.argmin()].item()  # a Python value: no numpy repr in the message
            raise DeepfoundryError(
                f"cannot stratify a {what} split of {n_out} of {len(indices)} rows over {len(classes)} classes "
                f"(class {rare!r} has {counts.min()} row(s)); every class needs 2+ rows and each part room for one "
                f"of each class: use data.split=random or larger fractions")
    keep, out = train_test_split(indices, test_size=n_out, stratify=stratify, random_state=seed, shuffle=True)
    return np.sort(keep), np.sort(out)


def random_split(n: int, val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0) -> SplitIndices:
    """Seeded random split of ``n`` rows."""
    rest, test = _holdout(np.arange(n), _check_fraction("test_fraction", test_fraction), seed, None, "test")
    train, val = _holdout(rest, _check_fraction("val_fraction", val_fraction), seed, None, "validation")
    return SplitIndices(train, val, test)


def stratified_split(labels: Sequence[int] | np.ndarray, val_fraction: float = 0.1, test_fraction: float = 0.2,
                     seed: int = 0) -> SplitIndices:
    """Seeded random split keeping each class's share of ``labels`` in train, val and test."""
    y = np.asarray(labels)
    rest, test = _holdout(np.arange(len(y)), _check_fraction("test_fraction", test_fraction), seed, y, "test")
    train, val = _holdout(rest, _check_fraction("val_fraction", val_fraction), seed, y[rest], "validation")
    return SplitIndices(train, val, test)


def group_split(groups: Sequence[object] | np.ndarray, val_fraction: float = 0.1, test_fraction: float = 0.2,
                seed: int = 0) -> SplitIndices:
    """Seeded split of whole groups: ``test_fraction`` of the groups (rounded up) test, then ``val_fraction``
    of the remaining groups val; every row of a group lands in the same split."""
    from sklearn.model_selection import GroupShuffleSplit

    g = np.asarray(groups)
    fractions = (_check_fraction("test_fraction", test_fraction), _check_fraction("val_fraction", val_fraction))
    n_groups = len(np.unique(g))
    needed = 1 + sum(f > 0 for f in fractions)
    if n_groups < needed:
        raise DeepfoundryError(f"a group split into {needed} parts needs at least {needed} groups; "
                               f"received {n_groups}")

    def cut(rows: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
        if fraction == 0:
            return rows, rows[:0]
        k = len(np.unique(g[rows]))
        n_out = min(max(1, int(np.ceil(k * fraction))), k - 1)  # at least one group out, one kept
        keep, out = next(GroupShuffleSplit(n_splits=1, test_size=n_out, random_state=seed)
                         .split(rows, groups=g[rows]))
        return np.sort(rows[keep]), np.sort(rows[out])

    rest, test = cut(np.arange(len(g)), fractions[0])
    train, val = cut(rest, fractions[1])
    return SplitIndices(train, val, test)


def time_split(times: Sequence[object] | np.ndarray, val_fraction: float = 0.1,
               test_fraction: float = 0.2) -> SplitIndices:
    """Rows ordered by ``times`` (any sortable values; ties keep their order): the first rows train, then val,
    the last ``round(n * test_fraction)`` test. No randomness."""
    order = np.argsort(np.asarray(times), kind="stable")
    n = len(order)
    n_test = int(round(n * _check_fraction("test_fraction", test_fraction)))
    n_val = int(round((n - n_test) * _check_fraction("val_fraction", val_fraction)))
    n_train = n - n_test - n_val
    if n_train <= 0:
        raise DeepfoundryError(f"a time split of {n} rows with val_fraction {val_fraction} and test_fraction "
                               f"{test_fraction} leaves none to train on")
    return SplitIndices(np.sort(order[:n_train]), np.sort(order[n_train:n_train + n_val]),
                        np.sort(order[n_train + n_val:]))


def split_indices(strategy: str, n: int, *, labels: np.ndarray | None = None, groups: np.ndarray | None = None,
                  times: np.ndarray | None = None, val_fraction: float = 0.1, test_fraction: float = 0.2,
                  seed: int = 0) -> SplitIndices:
    """Dispatch on ``strategy`` (random, stratified, group, time); the strategy's column must be given."""
    check_strategy(strategy)
    need = {"stratified": ("labels", labels), "group": ("groups", groups), "time": ("times", times)}
    if strategy in need:
        name, column = need[strategy]
        if column is None:
            raise DeepfoundryError(f"data.split={strategy} needs {name} for every row, and this data set has none")
        if len(column) != n:
            raise DeepfoundryError(f"data.split={strategy}: {len(column)} {name} for {n} rows")
    if strategy == "random":
        return random_split(n, val_fraction, test_fraction, seed)
    if strategy == "stratified":
        return stratified_split(labels, val_fraction, test_fraction, seed)
    if strategy == "group":
        return group_split(groups, val_fraction, test_fraction, seed)
    return time_split(times, val_fraction, test_fraction)


def kfold_indices(n: int, folds: int, *, labels: np.ndarray | None = None, groups: np.ndarray | None = None,
                  seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``folds`` pairs ``(train rows, held-out rows)``; every row is held out exactly once.

    Stratified by ``labels`` when given (each fold keeps the class shares), by whole groups when ``groups``
    are given (no group in two folds), else a seeded random k-fold.
    """
    from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold

    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise DeepfoundryError(f"k-fold cross-validation needs --folds >= 2, received {folds!r}")
    if folds > n:
        raise DeepfoundryError(f"cannot make {folds} folds of {n} rows; use at most {n} folds")
    rows = np.arange(n)
    if groups is not None:
        n_groups = len(np.unique(groups))
        if folds > n_groups:
            raise DeepfoundryError(f"cannot make {folds} group folds of {n_groups} groups")
        splits = GroupKFold(n_splits=folds).split(rows, groups=groups)
    elif labels is not None:
        _, counts = np.unique(labels, return_counts=True)
        if counts.min() < folds:
            raise DeepfoundryError(f"stratified {folds}-fold cross-validation needs at least {folds} rows of every "
                                   f"class; the smallest class has {counts.min()} (use fewer folds)")
        splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(rows, labels)
    else:
        splits = KFold(n_splits=folds, shuffle=True, random_state=seed).split(rows)
    return [(np.sort(train), np.sort(held)) for train, held in splits]
