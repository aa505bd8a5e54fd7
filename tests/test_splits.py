"""One set of split functions (deepfoundry.splits) gives exactly the rows the data modules' own
splitters gave before they were merged into it: the old formulas are copied here (their error
branches left out) and compared on many label sets, fractions and seeds (a changed split would
change every recipe's metrics)."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from deepfoundry.errors import DeepfoundryError
from deepfoundry.splits import (holdout_count, holdout_split, permutation_split, random_split, stratified_split,
                                stratified_split_of_all)

SEEDS = (0, 1, 7, 42)
FRACTIONS = ((0.1, 0.2), (0.15, 0.15), (0.0, 0.2), (0.1, 0.0), (0.25, 0.1), (0.2, 0.3))


# ------------------------------------------------------------------ the old formulas, copied verbatim
def old_images_holdout_split(indices, labels, fraction, seed):
    """data/images.py holdout_split before the merge: stratified where possible, else plain random."""
    indices = np.asarray(indices)
    n_out = int(round(len(indices) * fraction))
    if n_out == 0:
        return np.sort(indices), indices[:0]
    stratify = None
    if labels is not None:
        y = np.asarray(labels)[indices]
        classes, counts = np.unique(y, return_counts=True)
        if counts.min() >= 2 and len(classes) <= n_out <= len(indices) - len(classes):
            stratify = y
    keep, out = train_test_split(indices, test_size=n_out, stratify=stratify, random_state=seed, shuffle=True)
    return np.sort(keep), np.sort(out)


def old_images_three_way_split(labels, n, val_fraction, test_fraction, seed, limit=None):
    """data/images.py three_way_split before the merge (used by images, tabular and text data sets)."""
    rest, test = old_images_holdout_split(np.arange(n), labels, test_fraction, seed)
    if limit is not None:
        rest = rest[:limit]
    train, val = old_images_holdout_split(rest, labels, val_fraction, seed)
    return train, val, test


def old_graph_sets_stratified_split(y, val_fraction, test_fraction, seed):
    """data/graph_sets.py stratified_split before the merge (graph sets and graph-csv)."""
    idx = np.arange(len(y))
    rest, test = train_test_split(idx, test_size=test_fraction, stratify=y, random_state=seed) \
        if test_fraction > 0 else (idx, idx[:0])
    if val_fraction <= 0:
        return np.sort(rest), idx[:0], np.sort(test)
    train, val = train_test_split(rest, test_size=val_fraction / (1 - test_fraction), stratify=y[rest],
                                  random_state=seed)
    return np.sort(train), np.sort(val), np.sort(test)


def old_translation_random_split(n, val_fraction, test_fraction, seed):
    """data/translation.py _random_split before the merge (indices in permutation order)."""
    perm = np.random.default_rng(seed).permutation(n)
    n_test, n_val = int(round(n * test_fraction)), int(round(n * val_fraction))
    return perm[n_test + n_val:], perm[n_test:n_test + n_val], perm[:n_test]


def _same(new, old) -> None:
    assert len(new) == len(old)
    for a, b in zip(new, old):
        assert a.dtype.kind == b.dtype.kind and np.array_equal(a, b)


LABEL_SETS = {
    "balanced": np.arange(300) % 3,
    "skewed": np.array([0] * 240 + [1] * 50 + [2] * 10),
    "digits-like": np.random.default_rng(5).integers(0, 10, 1797),
    "one-row class": np.array([0] * 60 + [1] * 39 + [2]),             # stratification impossible: random
    "tiny": np.array([0, 1, 0, 1, 0, 1, 1, 0, 2, 2, 2, 0]),            # some hold-outs too small to stratify
    "strings": np.array(["neg", "pos", "pos", "neu"] * 25),
}


# ------------------------------------------------------------------ images / tabular / text: stratified where possible
@pytest.mark.parametrize("name", list(LABEL_SETS))
def test_stratified_split_where_possible_gives_the_old_three_way_rows(name):
    labels = LABEL_SETS[name]
    for seed in SEEDS:
        for val_fraction, test_fraction in FRACTIONS:
            old = old_images_three_way_split(labels, len(labels), val_fraction, test_fraction, seed)
            new = stratified_split(labels, val_fraction, test_fraction, seed, strict=False)
            _same(new, old)


def test_random_split_gives_the_old_unlabelled_three_way_rows():
    for n in (10, 97, 442, 1797):
        for seed in SEEDS:
            for val_fraction, test_fraction in FRACTIONS:
                _same(random_split(n, val_fraction, test_fraction, seed),
                      old_images_three_way_split(None, n, val_fraction, test_fraction, seed))


def test_limit_keeps_the_first_rows_after_the_test_hold_out_as_before():
    labels = LABEL_SETS["digits-like"]
    for limit in (80, 300, 5000):
        for seed in SEEDS:
            _same(stratified_split(labels, 0.1, 0.2, seed, strict=False, limit=limit),
                  old_images_three_way_split(labels, len(labels), 0.1, 0.2, seed, limit))
            _same(random_split(len(labels), 0.1, 0.2, seed, limit=limit),
                  old_images_three_way_split(None, len(labels), 0.1, 0.2, seed, limit))
    with pytest.raises(DeepfoundryError, match="data.limit"):
        random_split(10, limit=0)


@pytest.mark.parametrize("name", list(LABEL_SETS))
def test_holdout_split_gives_the_old_rows(name):
    labels = LABEL_SETS[name]
    pools = (np.arange(len(labels)), np.arange(len(labels))[::2], np.sort(np.random.default_rng(1).choice(
        len(labels), len(labels) // 2, replace=False)))
    for pool in pools:
        for seed in SEEDS:
            for fraction in (0.0, 0.1, 0.25):
                _same(holdout_split(pool, fraction, seed, labels, strict=False),
                      old_images_holdout_split(pool, labels, fraction, seed))
                _same(holdout_split(pool, fraction, seed), old_images_holdout_split(pool, None, fraction, seed))


def test_strict_stratification_names_the_class_that_cannot_be_stratified():
    labels = LABEL_SETS["one-row class"]
    with pytest.raises(DeepfoundryError, match=r"cannot stratify a test split .*class 2 has 1 row"):
        stratified_split(labels, 0.1, 0.2, 0)
    with pytest.raises(DeepfoundryError, match=r"val_fraction must be a number in \[0, 1\)"):
        holdout_split(np.arange(10), 1.5, 0)
    with pytest.raises(DeepfoundryError, match="leaves none to train on"):
        holdout_split(np.arange(3), 0.9, 0)
    assert holdout_count(442, 0.1) == 44


# ------------------------------------------------------------------ graph sets: fractions of all rows
@pytest.mark.parametrize("name", ["balanced", "skewed", "digits-like", "strings"])
def test_stratified_split_of_all_gives_the_old_graph_set_rows(name):
    labels = LABEL_SETS[name]
    for seed in SEEDS:
        for val_fraction, test_fraction in FRACTIONS:
            _same(stratified_split_of_all(labels, val_fraction, test_fraction, seed),
                  old_graph_sets_stratified_split(labels, val_fraction, test_fraction, seed))


def test_stratified_split_of_all_recorded_rows_and_errors():
    # recorded from data/graph_sets.py stratified_split before the merge
    train, val, test = stratified_split_of_all(np.arange(20) % 2, 0.2, 0.2, seed=0)
    assert test.tolist() == [0, 9, 10, 15] and val.tolist() == [2, 3, 11, 12]
    assert train.tolist() == [1, 4, 5, 6, 7, 8, 13, 14, 16, 17, 18, 19]
    # its val share is of all rows (ceil), not of the rest as in stratified_split
    assert [len(p) for p in stratified_split_of_all(np.arange(100) % 2, 0.1, 0.2, 0)] == [70, 10, 20]
    assert [len(p) for p in stratified_split(np.arange(100) % 2, 0.1, 0.2, 0)] == [72, 8, 20]
    with pytest.raises(DeepfoundryError, match="cannot split 10 samples of 2 classes stratified by class"):
        stratified_split_of_all(np.array([0] * 9 + [1]), 0.1, 0.2, 0)


# ------------------------------------------------------------------ parallel text: one permutation
def test_permutation_split_gives_the_old_translation_rows_in_permutation_order():
    for n in (7, 100, 12000):
        for seed in SEEDS:
            for val_fraction, test_fraction in ((0.1, 0.1), (0.05, 0.05), (0.0, 0.2), (0.2, 0.0)):
                _same(permutation_split(n, val_fraction, test_fraction, seed),
                      old_translation_random_split(n, val_fraction, test_fraction, seed))
    parts = permutation_split(10, 0.2, 0.2, seed=0)
    assert parts.test.tolist() == [4, 6] and parts.val.tolist() == [2, 7]  # recorded before the merge
    assert parts.train.tolist() == [3, 5, 9, 0, 8, 1]                       # not sorted: permutation order


def test_time_split_sizes_keep_both_old_formulas() -> None:
    """time_split's rounding (spans may be empty) and the time-series rule (a span with a non-zero fraction
    gets at least one point), as the two separate implementations computed them before."""
    from deepfoundry.splits import time_split_sizes

    def series_rule(n: int, v: float, t: float) -> tuple[int, int, int]:
        n_test = max(1, int(round(t * n))) if t > 0 else 0
        n_val = max(1, int(round(v * (n - n_test)))) if v > 0 else 0
        return n - n_test - n_val, n_val, n_test

    def table_rule(n: int, v: float, t: float) -> tuple[int, int, int]:
        n_test = int(round(n * t))
        n_val = int(round((n - n_test) * v))
        return n - n_test - n_val, n_val, n_test

    for n in range(1, 300):
        for v in (0.0, 0.05, 0.1, 0.25):
            for t in (0.0, 0.02, 0.1, 0.2):
                assert time_split_sizes(n, v, t, minimum=1) == series_rule(n, v, t)
                assert time_split_sizes(n, v, t) == table_rule(n, v, t)
