"""Tabular data: a user's CSV (``table-csv``), UCI Adult (``adult``), and scikit-learn's bundled tables
(offline): iris, wine, breast-cancer, diabetes.

``table-csv`` and ``adult`` take raw rows (numbers, strings, missing values): :func:`table_bundle` fits a
:class:`~deepfoundry.data.preprocess.TabularPreprocessor` on the training rows only and saves it in
``info['tabular']`` (JSON), which :func:`predict_table` applies again to raw rows (docs/tabular.md).

For the scikit-learn tables, inputs are float32 ``(N, F)`` raw feature values; :func:`~deepfoundry.data.core.build_data`
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

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from sklearn import datasets as sk_datasets
from sklearn.preprocessing import StandardScaler

from ..errors import DeepfoundryError
from ..registry import DATASETS
from ..splits import check_limit, holdout_count, holdout_split, random_split, stratified_split
from .core import ArrayLoader, DataBundle, Splits
from .preprocess import (DEFAULT_NA, TabularPreprocessor, encode_target, fit_target, infer_columns, infer_task_type,
                         read_table)

TREE_LEAVES, TREE_MIN_LEAF = 64, 64  # numeric_tree_edges: the per-column trees' size limits
QUANTILE_LEVELS = 128  # numeric_quantiles: the training quantiles at levels 0, 1/128, ..., 1 of each column


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
    parts = stratified_split(y, val_fraction, test_fraction, seed, strict=False)
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
    parts = random_split(len(y), val_fraction, test_fraction, seed)
    scaler = StandardScaler().fit(y[parts[0]])
    y_std = scaler.transform(y).astype(np.float32)
    train, val, test = ((torch.from_numpy(x[idx]), torch.from_numpy(y_std[idx])) for idx in parts)
    info = _table_info([str(f) for f in bunch.feature_names],
                       _note("diabetes", len(y), parts, val_fraction, test_fraction, seed, stratified=False)
                       + "; targets standardised with the training split's mean and std")
    info.update(task_type="regression", num_classes=1, class_names=["disease progression"],
                target_mean=float(scaler.mean_[0]), target_std=float(scaler.scale_[0]))
    return Splits(train, val, test, info)


# ----------------------------------------------------------------------------- a user's CSV, and UCI Adult

def _prep_kwargs(numeric: Sequence[str] | None, categorical: Sequence[str] | None, drop: Sequence[str] | None,
                 task_type: str, scaling: str, imputation: str, categorical_missing: str, missing_indicators: bool,
                 encoding: str) -> dict[str, Any]:
    return dict(numeric=numeric, categorical=categorical, drop=drop, task_type=task_type, scaling=scaling,
                imputation=imputation, categorical_missing=categorical_missing,
                missing_indicators=missing_indicators, encoding=encoding)


def _split_sizes(n: int, val_fraction: float, test_fraction: float, own_test: bool) -> tuple[int, int, int]:
    """(train, val, test) rows a split of ``n`` rows gives (:mod:`deepfoundry.splits`: test first, then val)."""
    test = 0 if own_test else holdout_count(n, test_fraction, "test")
    val = holdout_count(n - test, val_fraction, "val")
    return n - test - val, val, test


def check_table_size(n: int, val_fraction: float, test_fraction: float, source: str, own_test: bool = False) -> None:
    """Refuse, before anything is fitted, a table whose split leaves a part it asks for (a fraction above 0)
    without rows, naming the rows it needs: with the default fractions 6 rows split 5 / 0 / 1, 7 rows 5 / 1 / 1.

    >>> _split_sizes(6, 0.1, 0.2, own_test=False), _split_sizes(7, 0.1, 0.2, own_test=False)
    ((5, 0, 1), (5, 1, 1))
    """
    def enough(m: int) -> bool:
        train, val, test = _split_sizes(m, val_fraction, test_fraction, own_test)
        return train >= 1 and (val >= 1 or not val_fraction) and (test >= 1 or not test_fraction or own_test)

    if enough(n):
        return
    start = max([1] + [int(0.5 / f) for f in (val_fraction, test_fraction) if f])  # round(m * f) >= 1 needs m * f > 0.5
    need = next((m for m in range(start, start + 10**6) if enough(m)), None)
    train, val, test = _split_sizes(n, val_fraction, test_fraction, own_test)
    split = f"{train:,} train / {val:,} val" + ("" if own_test else f" / {test:,} test")
    fractions = f"data.val_fraction {val_fraction}" + ("" if own_test else f" and data.test_fraction {test_fraction}")
    raise DeepfoundryError(f"{source} has {n:,} row{'s' if n != 1 else ''} with a target: too few for {fractions}, "
                           f"which split them {split} rows; it needs at least {need or 'more'} rows "
                           f"(or set the fraction of the empty part to 0)")


def tree_edges(x: np.ndarray, y: np.ndarray, task_type: str, max_leaves: int = TREE_LEAVES,
               min_leaf: int = TREE_MIN_LEAF) -> list[list[float]]:
    """Target-aware bin edges of each column of ``x`` (training rows): the split thresholds of a decision
    tree fitted on that column alone to ``y`` (classifier or regressor, at most ``max_leaves`` leaves of
    at least ``min_leaf`` rows), with the column's minimum and maximum as the outer edges (Gorishniy et
    al. 2022's "T" bins). A column no split helps gets the two outer edges only."""
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    out = []
    for j in range(x.shape[1]):
        col = x[:, j:j + 1]
        tree = (DecisionTreeClassifier if task_type == "classification" else DecisionTreeRegressor)(
            max_leaf_nodes=max_leaves, min_samples_leaf=min(min_leaf, max(1, len(col) // 2)), random_state=0)
        tree.fit(col, y)
        cuts = tree.tree_.threshold[tree.tree_.feature >= 0]  # internal nodes only
        edges = sorted({float(col.min()), float(col.max()), *map(float, cuts)})
        out.append([round(e, 6) for e in edges])
    return out


def table_bundle(frame: pd.DataFrame, target: str | None, *, source: str, numeric: Sequence[str] | None = None,
                 categorical: Sequence[str] | None = None, drop: Sequence[str] | None = None,
                 task_type: str = "auto", scaling: str = "standard", imputation: str = "median",
                 categorical_missing: str = "category", missing_indicators: bool = True,
                 encoding: str = "embedding", na_values: Sequence[str] = DEFAULT_NA, val_fraction: float = 0.1,
                 test_fraction: float = 0.2, seed: int = 0, batch_size: int = 64, eval_batch_size: int = 1024,
                 test_frame: pd.DataFrame | None = None, limit: int | None = None) -> DataBundle:
    """Split raw rows, fit :class:`TabularPreprocessor` on the training rows only, and return loaders.

    Without ``test_frame`` the rows are split into test (``test_fraction``), then val (``val_fraction``
    of the rest), stratified by class for classification, with ``seed``. Rows whose target is missing
    are dropped. ``info['tabular']`` is the fitted preprocessing (JSON), applied again by ``predict``.
    ``limit`` (``data.limit``) keeps only the first ``limit`` rows of ``frame`` (and of ``test_frame``)
    before anything is split or fitted: a small run for tests. The bundle's ``frames`` hold each split's
    raw rows (every column, dropped ones included) in loader order.
    """
    columns = ", ".join(map(str, frame.columns))
    if not target:
        raise DeepfoundryError(f"set the target column with --set data.target=NAME; {source} has columns: {columns}")
    if target not in frame.columns:
        raise DeepfoundryError(f"{source} has no target column {target!r}; its columns: {columns}")
    frames = [frame] if test_frame is None else [frame, test_frame]
    if check_limit(limit) is not None:
        frames = [f.iloc[:limit] for f in frames]
    frames = [f.replace(list(na_values), np.nan) for f in frames]
    unlabeled = sum(int(f[target].isna().sum()) for f in frames)
    frames = [f[f[target].notna()].reset_index(drop=True) for f in frames]
    frame = frames[0]
    if len(frame) == 0:
        raise DeepfoundryError(f"{source}: every row's target {target!r} is missing")
    check_table_size(len(frame), val_fraction, test_fraction, source, own_test=test_frame is not None)
    kind = infer_task_type(frame[target], task_type)
    num_cols, cat_cols = infer_columns(frame, target, numeric, categorical, drop)
    labels = None
    if kind == "classification":
        labels = np.array([str(v) for v in frame[target].to_numpy(dtype=object)])
        classes = np.unique(labels)
        if len(classes) < 2:
            raise DeepfoundryError(f"target {target!r} of {source} has one class ({str(classes[0])!r}) in {len(frame):,} "
                                   f"rows; classification needs two or more (or set data.task_type=regression)")
    if test_frame is None:
        parts = (stratified_split(labels, val_fraction, test_fraction, seed, strict=False) if labels is not None
                 else random_split(len(frame), val_fraction, test_fraction, seed))
        how = (f"a {'stratified ' if labels is not None else ''}random split (seed {seed}) of the {len(frame):,} rows of "
               f"{source}: {test_fraction:.0%} test, then {val_fraction:.0%} of the rest val")
        rows = [frame.iloc[p] for p in parts]
    else:
        train_idx, val_idx = holdout_split(np.arange(len(frame)), val_fraction, seed, labels, strict=False)
        rows = [frame.iloc[train_idx], frame.iloc[val_idx], frames[1]]
        how = (f"{source}: its own test file; {val_fraction:.0%} of the training file held out for val "
               f"({'stratified, ' if labels is not None else ''}seed {seed})")
    pre = TabularPreprocessor.fit(rows[0], num_cols, cat_cols, scaling=scaling, imputation=imputation,
                                  categorical_missing=categorical_missing, missing_indicators=missing_indicators,
                                  encoding=encoding, na_values=na_values)
    target_state = fit_target(rows[0][target], kind)
    tensors = []
    for part in rows:
        x = torch.from_numpy(pre.transform(part))
        y = torch.from_numpy(encode_target(part[target], target_state))
        tensors.append((x, y))
    n_train, n_val, n_test = (len(p) for p in rows)
    note = (f"{n_train:,} train / {n_val:,} val / {n_test:,} test rows: {how}"
            + (f"; {unlabeled:,} rows without a target dropped" if unlabeled else "")
            + f"; {len(num_cols)} numeric + {len(cat_cols)} categorical columns ({encoding}), "
              f"preprocessing fitted on the training rows")
    ctx = pre.model_context()
    train_numeric = tensors[0][0][:, :len(num_cols)].numpy().astype(np.float64)  # (n_train, n_num), scaled
    if len(train_numeric) and len(num_cols):  # training quantiles, for piecewise-linear encodings (model mlp_ple)
        levels = np.linspace(0.0, 1.0, QUANTILE_LEVELS + 1)
        ctx["numeric_quantiles"] = np.quantile(train_numeric, levels, axis=0).T.round(6).tolist()  # (n_num, Q + 1)
        ctx["numeric_tree_edges"] = tree_edges(train_numeric, tensors[0][1].numpy(), kind)
    info: dict[str, Any] = {
        "input_kind": "tabular", "task_type": kind, "target": target, "tabular": pre.state,
        "target_encoding": target_state, "feature_names": pre.feature_names, "in_features": ctx["in_features"],
        "input_shape": [ctx["in_features"]], "model_context": ctx, "preprocess": None, "split_note": note,
        "num_train": n_train, "num_val": n_val, "num_test": n_test,
        "numeric_columns": num_cols, "categorical_columns": cat_cols}
    if kind == "classification":
        info.update(num_classes=len(target_state["classes"]), class_names=target_state["classes"])
    else:
        info.update(num_classes=1, class_names=[target], target_mean=target_state["mean"],
                    target_std=target_state["std"])
    (xtr, ytr), (xva, yva), (xte, yte) = tensors
    return DataBundle(train=ArrayLoader(xtr, ytr, batch_size, shuffle=True, seed=seed),
                      val=ArrayLoader(xva, yva, eval_batch_size), test=ArrayLoader(xte, yte, eval_batch_size),
                      info=info, frames={name: part.reset_index(drop=True)
                                         for name, part in zip(("train", "val", "test"), rows)})


@DATASETS.register("table-csv")
def csv_table(*, path: str | None = None, target: str | None = None, root: str | None = None,
              numeric: Sequence[str] | None = None, categorical: Sequence[str] | None = None,
              drop: Sequence[str] | None = None, task_type: str = "auto", scaling: str = "standard",
              imputation: str = "median", categorical_missing: str = "category", missing_indicators: bool = True,
              encoding: str = "embedding", sep: str = ",", header: bool = True, names: Sequence[str] | None = None,
              na_values: Sequence[str] | None = None, val_fraction: float = 0.1, test_fraction: float = 0.2,
              seed: int = 0, batch_size: int = 64, eval_batch_size: int = 1024, limit: int | None = None) -> DataBundle:
    """A user's CSV file (data.path, data.target): column types, task, scaling, imputation, encoding.

    Column types are inferred (numeric dtypes numeric, the rest categorical) unless ``numeric`` /
    ``categorical`` list them; ``drop`` removes columns. ``task_type`` auto: classification for string
    or boolean targets and integer targets with at most 20 values, else regression. A relative ``path``
    is looked up under ``root`` when one is given. See docs/tabular.md.
    """
    if not path:
        raise DeepfoundryError("data 'table-csv' needs a file: --set data.path=FILE.csv --set data.target=COLUMN")
    file = Path(path)
    if root and not file.is_absolute() and not file.exists():
        file = Path(root) / file
    na = tuple(na_values) if na_values is not None else DEFAULT_NA
    frame = read_table(file, sep=sep, header=header, names=names, na_values=na)
    return table_bundle(frame, target, source=f"CSV file '{file}'", na_values=na, val_fraction=val_fraction,
                        test_fraction=test_fraction, seed=seed, batch_size=batch_size, eval_batch_size=eval_batch_size,
                        limit=limit,
                        **_prep_kwargs(numeric, categorical, drop, task_type, scaling, imputation,
                                       categorical_missing, missing_indicators, encoding))


ADULT_URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/adult/"
ADULT_COLUMNS = ["age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
                 "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country",
                 "income"]


def read_adult(file: Path) -> pd.DataFrame:
    """One UCI Adult file (``adult.data`` or ``adult.test``; with or without a header line) with
    :data:`ADULT_COLUMNS`; ``?`` is missing; ``adult.test``'s labels lose their trailing dot."""
    with open(file, encoding="utf-8", errors="replace") as fh:
        first = fh.readline()
    skip = 1 if first.lower().lstrip().startswith(("age", "|")) else 0  # a header line, or adult.test's '|1x3 ...'
    try:
        frame = pd.read_csv(file, header=None, names=ADULT_COLUMNS, skiprows=skip, na_values=["?"],
                            keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DeepfoundryError(f"'{file}' is not a readable Adult file: {str(exc).splitlines()[0]}") from None
    if len(frame) == 0 or frame["income"].isna().all():
        raise DeepfoundryError(f"'{file}' does not look like UCI Adult (15 comma-separated columns)")
    frame["income"] = frame["income"].astype(str).str.strip().str.rstrip(".")
    return frame


@DATASETS.register("adult")
def adult(*, root: str | None = None, download: bool = False, numeric: Sequence[str] | None = None,
          categorical: Sequence[str] | None = None, drop: Sequence[str] | None = None, scaling: str = "standard",
          imputation: str = "median", categorical_missing: str = "category", missing_indicators: bool = True,
          encoding: str = "embedding", val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0,
          batch_size: int = 64, eval_batch_size: int = 1024, limit: int | None = None) -> DataBundle:
    """UCI Adult census income (>50K or not): 14 columns, 8 categorical, '?' missing (root: adult.data[, adult.test]).

    With ``adult.test`` in ``root`` (the official 16,281 test rows) it is the test split and
    ``val_fraction`` of ``adult.data`` validates; with ``adult.data`` alone (32,561 rows) the rows are
    split stratified with ``seed``: ``test_fraction`` test, then ``val_fraction`` of the rest val.
    ``download=True`` fetches both files from the UCI repository (:data:`ADULT_URL`). ``limit`` keeps the
    first N rows of each file (small runs for tests).
    """
    folder = Path(root).expanduser() if root else Path.home() / ".cache" / "deepfoundry" / "datasets" / "adult"
    data_file, test_file = folder / "adult.data", folder / "adult.test"
    if not data_file.is_file() and download:
        import urllib.request

        folder.mkdir(parents=True, exist_ok=True)
        for name in ("adult.data", "adult.test"):
            try:
                urllib.request.urlretrieve(ADULT_URL + name, folder / name)
            except OSError as exc:
                raise DeepfoundryError(f"could not download {ADULT_URL + name}: {exc}") from None
    if not data_file.is_file():
        raise DeepfoundryError(f"'{data_file}' is missing: point --data-root at a folder with adult.data (and "
                               f"optionally adult.test) from {ADULT_URL}, or --set data.download=true")
    test_frame = read_adult(test_file) if test_file.is_file() else None
    return table_bundle(read_adult(data_file), "income", source=f"UCI Adult ('{folder}')", na_values=("?",),
                        val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, batch_size=batch_size,
                        eval_batch_size=eval_batch_size, test_frame=test_frame, limit=limit,
                        **_prep_kwargs(numeric, categorical, drop, "classification", scaling, imputation,
                                       categorical_missing, missing_indicators, encoding))


# ----------------------------------------------------------------------------- raw rows at predict time

def rows_frame(rows: Any, na_values: Sequence[str] = DEFAULT_NA) -> pd.DataFrame:
    """Raw rows as a DataFrame: a DataFrame, a CSV path, a dict (one row of scalars, or columns of lists)
    or a list of dicts (one per row)."""
    if isinstance(rows, pd.DataFrame):
        return rows
    if isinstance(rows, (str, Path)):
        return read_table(rows, na_values=na_values)
    if isinstance(rows, dict):
        scalar = all(np.ndim(v) == 0 for v in rows.values())
        return pd.DataFrame([rows] if scalar else rows)
    if isinstance(rows, (list, tuple)) and rows and all(isinstance(r, dict) for r in rows):
        return pd.DataFrame(list(rows))
    raise DeepfoundryError(f"table rows must be a DataFrame, a CSV path, a dict or a list of dicts; "
                           f"received {type(rows).__name__}")


def table_inputs(info: dict[str, Any], rows: Any) -> torch.Tensor:
    """Raw rows -> the model's float32 inputs, with the run's saved preprocessing (``info['tabular']``)."""
    pre = TabularPreprocessor(info["tabular"])
    return torch.from_numpy(pre.transform(rows_frame(rows, pre.state["na_values"])))
