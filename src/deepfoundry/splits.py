"""Every train / validation / test split of the project, and k-fold assignments (scikit-learn's
splitters underneath). The data modules call these; none splits rows its own way.

Four strategies (``data.split``), each returning sorted index arrays ``(train, val, test)`` (the loaders shuffle):

- ``random``: a seeded random ``test_fraction`` of the rows is test, then ``val_fraction`` of the rest val;
- ``stratified``: the same, with every class keeping its share in each split (sklearn's ``stratify``);
- ``group``: whole groups go to one split, so no group (a patient, a user, a site) is in two splits;
  the fractions are shares of the *groups* (sklearn's ``GroupShuffleSplit``);
- ``time``: rows ordered by time (ties keep their order); the earliest train, the next val, the last
  ``test_fraction`` test, so the model never trains on the future of what it is tested on.

Row counts: ``round(n * test_fraction)`` test rows, then ``round(rest * val_fraction)`` val rows.
The same draw holds out one part of some rows (:func:`holdout_split`: a validation share of a fixed
training set). ``stratified_split(..., strict=False)`` stratifies each hold-out where it can and draws
it plainly at random where it cannot (the data sets' default, so tiny or odd label sets still split).

Two older splits keep their own meaning, because runs and recipes depend on their exact rows:

- :func:`stratified_split_of_all` (graph classification sets): both fractions are shares of *all*
  rows, rounded up (scikit-learn's float ``test_size``), the validation part drawn from the unsorted rest;
- :func:`permutation_split` (parallel text): one seeded numpy permutation cut into test, val, train,
  both fractions shares of all rows, each part in permutation order.

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


def holdout_count(n: int, fraction: float, part: str = "val") -> int:
    """How many of ``n`` rows a hold-out of ``fraction`` takes: ``round(n * fraction)`` (``part``: ``val`` or
    ``test``, naming the config key ``data.<part>_fraction`` in the error for a fraction outside [0, 1))."""
    return int(round(n * _check_fraction(f"{part}_fraction", fraction)))


def holdout_split(indices: Sequence[int] | np.ndarray, fraction: float, seed: int,
                  labels: Sequence[object] | np.ndarray | None = None, *, strict: bool = True,
                  part: str = "val") -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out) of ``indices``, both sorted: ``round(len * fraction)`` held out at random, seeded.

    With ``labels`` (the label of every row, indexed by ``indices``) the hold-out is stratified: each
    class keeps its share in both parts. When that is impossible (a class with one row, or a part too
    small for one row of each class) ``strict`` makes it an error naming the class, else the hold-out
    is plain random. ``part`` (``val`` or ``test``) names the fraction's config key in errors.

    >>> holdout_split(np.arange(10), 0.2, seed=0)
    (array([0, 1, 3, 4, 5, 6, 7, 9]), array([2, 8]))
    """
    from sklearn.model_selection import train_test_split

    indices = np.asarray(indices)
    what = "validation" if part == "val" else part
    n_out = holdout_count(len(indices), fraction, part)
    if n_out == 0:
        return np.sort(indices), indices[:0]
    if n_out >= len(indices):
        raise DeepfoundryError(f"a {what} hold-out of {fraction} of {len(indices)} rows leaves none to train on")
    stratify = None
    if labels is not None:
        y = np.asarray(labels)[indices]
        classes, counts = np.unique(y, return_counts=True)
        if counts.min() >= 2 and len(classes) <= n_out <= len(indices) - len(classes):
            stratify = y
        elif strict:
            rare = classes[counts.argmin()].item()  # a Python value: no numpy repr in the message
            raise DeepfoundryError(
                f"cannot stratify a {what} split of {n_out} of {len(indices)} rows over {len(classes)} classes "
                f"(class {rare!r} has {counts.min()} row(s)); every class needs 2+ rows and each part room for one "
                f"of each class: use data.split=random or larger fractions")
    keep, out = train_test_split(indices, test_size=n_out, stratify=stratify, random_state=seed, shuffle=True)
    return np.sort(keep), np.sort(out)


def check_limit(limit: int | None) -> int | None:
    """``limit`` (``data.limit``: keep only the first N rows) if it is ``None`` or a positive integer."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DeepfoundryError(f"config key 'data.limit': expected a positive integer, received {limit!r}")
    return limit


def random_split(n: int, val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0, *,
                 limit: int | None = None) -> SplitIndices:
    """Seeded random split of ``n`` rows. ``limit`` keeps only the first ``limit`` rows (in row order)
    left after the test hold-out, before the validation hold-out: a smaller run with the same test rows."""
    limit = check_limit(limit)
    rest, test = holdout_split(np.arange(n), test_fraction, seed, part="test")
    train, val = holdout_split(rest[:limit], val_fraction, seed, part="val")
    return SplitIndices(train, val, test)


def stratified_split(labels: Sequence[object] | np.ndarray, val_fraction: float = 0.1, test_fraction: float = 0.2,
                     seed: int = 0, *, strict: bool = True, limit: int | None = None) -> SplitIndices:
    """Seeded random split keeping each class's share of ``labels`` in train, val and test.

    ``strict=False``: a hold-out that cannot be stratified is drawn plainly at random instead of
    being an error (see :func:`holdout_split`). ``limit`` as for :func:`random_split`."""
    y = np.asarray(labels)
    limit = check_limit(limit)
    rest, test = holdout_split(np.arange(len(y)), test_fraction, seed, y, strict=strict, part="test")
    train, val = holdout_split(rest[:limit], val_fraction, seed, y, strict=strict, part="val")
    return SplitIndices(train, val, test)


def stratified_split_of_all(labels: Sequence[object] | np.ndarray, val_fraction: float = 0.1,
                            test_fraction: float = 0.2, seed: int = 0) -> SplitIndices:
    """Seeded stratified split where both fractions are shares of **all** rows (graph classification sets).

    ``ceil(n * test_fraction)`` rows are test (scikit-learn's float ``test_size``), then
    ``ceil(rest * val_fraction / (1 - test_fraction))`` of the rest (about ``val_fraction`` of all rows)
    val, drawn from the rest in the order the first draw left it. A class too small for the fractions
    is a one-line error. Unlike :func:`stratified_split`, whose ``val_fraction`` is a share of the rows
    left after the test hold-out, rounded to the nearest."""
    from sklearn.model_selection import train_test_split

    y = np.asarray(labels)
    idx = np.arange(len(y))
    try:
        rest, test = train_test_split(idx, test_size=test_fraction, stratify=y, random_state=seed) \
            if test_fraction > 0 else (idx, idx[:0])
        if val_fraction <= 0:
            return SplitIndices(np.sort(rest), idx[:0], np.sort(test))
        train, val = train_test_split(rest, test_size=val_fraction / (1 - test_fraction), stratify=y[rest],
                                      random_state=seed)
    except ValueError as exc:  # a class too small for the fractions
        raise DeepfoundryError(f"cannot split {len(y)} samples of {len(np.unique(y))} classes stratified by class "
                               f"(val_fraction={val_fraction}, test_fraction={test_fraction}): {exc}") from None
    return SplitIndices(np.sort(train), np.sort(val), np.sort(test))


def permutation_split(n: int, val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0) -> SplitIndices:
    """One seeded permutation of ``n`` rows (``numpy.random.default_rng(seed)``) cut into test (the first
    ``round(n * test_fraction)``), val (the next ``round(n * val_fraction)``: a share of all rows) and
    train (the rest); each part stays in permutation order, not sorted (parallel text).

    >>> permutation_split(10, 0.2, 0.2, seed=0).test
    array([4, 6])
    """
    perm = np.random.default_rng(seed).permutation(n)
    n_test, n_val = int(round(n * test_fraction)), int(round(n * val_fraction))
    return SplitIndices(perm[n_test + n_val:], perm[n_test:n_test + n_val], perm[:n_test])


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


def time_split_sizes(n: int, val_fraction: float, test_fraction: float, minimum: int = 0) -> tuple[int, int, int]:
    """(train, val, test) sizes of a split in time order: test = ``round(n * test_fraction)``, val =
    ``round(rest * val_fraction)`` of the rows before it, train = the rest. ``minimum`` (time series: 1)
    is the least a span with a non-zero fraction gets.

    >>> time_split_sizes(309, 0.1, 0.1, minimum=1)
    (250, 28, 31)
    """
    n_test = int(round(n * _check_fraction("test_fraction", test_fraction)))
    n_test = max(minimum, n_test) if test_fraction > 0 else n_test
    n_val = int(round((n - n_test) * _check_fraction("val_fraction", val_fraction)))
    n_val = max(minimum, n_val) if val_fraction > 0 else n_val
    return n - n_test - n_val, n_val, n_test


def time_split(times: Sequence[object] | np.ndarray, val_fraction: float = 0.1,
               test_fraction: float = 0.2) -> SplitIndices:
    """Rows ordered by ``times`` (any sortable values; ties keep their order): the first rows train, then val,
    the last ``round(n * test_fraction)`` test. No randomness."""
    order = np.argsort(np.asarray(times), kind="stable")
    n = len(order)
    n_train, n_val, n_test = time_split_sizes(n, val_fraction, test_fraction)
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
