"""Tabular preprocessing: fitted on the training split with scikit-learn, saved with the run as JSON.

:meth:`TabularPreprocessor.fit` fits a scikit-learn ``ColumnTransformer`` on the training rows and
keeps only the fitted numbers (means, scales, fill values, categories) in :attr:`~TabularPreprocessor.state`,
a JSON-able dict that the run saves in ``model.json`` (never a pickle). :meth:`~TabularPreprocessor.transform`
applies that state with numpy, so a loaded run transforms raw rows exactly as training did:

* numeric column ``j``: ``x' = (impute_j(x) - center_j) / scale_j`` where ``impute_j`` replaces a
  missing value by the training mean, median or most frequent value, and
  ``standard``: center = mean, scale = standard deviation; ``minmax``: center = min, scale = max - min
  (training rows land in [0, 1]); ``robust``: center = median, scale = q75 - q25; ``none``: 0 and 1.
  A zero scale becomes 1 (as in scikit-learn).
* missing indicators: one 0/1 column per numeric column that had missing values in training.
* categorical column with training categories ``c_1 < ... < c_K`` (missing is its own category
  ``<missing>`` by default, or imputed with the most frequent one):
  ``onehot``: K columns, ``1[x == c_k]``; an unseen category gives all zeros;
  ``ordinal``: the code ``k`` (unseen: -1), then scaled like a numeric column;
  ``embedding``: the code ``k + 1`` (unseen: 0) as the last columns, looked up by the model's
  per-column embedding tables (see ``models/tabular.py``).

Output layout (float32): ``[numeric | indicators | one-hot or ordinal | embedding codes]``.

>>> import pandas as pd
>>> frame = pd.DataFrame({"age": [20.0, 30.0, None], "city": ["a", "b", "a"]})
>>> pre = TabularPreprocessor.fit(frame, numeric=["age"], categorical=["city"], encoding="onehot")
>>> pre.feature_names
['age', 'age_missing', 'city=a', 'city=b']
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import MissingIndicator, SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, OrdinalEncoder, RobustScaler, StandardScaler

from ..errors import DeepfoundryError

SCALINGS = ("standard", "minmax", "robust", "none")
IMPUTATIONS = ("mean", "median", "most_frequent")
CATEGORICAL_MISSING = ("category", "most_frequent")
ENCODINGS = ("onehot", "ordinal", "embedding")
MISSING = "<missing>"
DEFAULT_NA = ("", "?", "NA", "N/A", "NaN", "nan", "null", "None")


def _choice(key: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise DeepfoundryError(f"config key 'data.{key}': expected one of {', '.join(allowed)}, received {value!r}")
    return value


def read_table(path: str | Path, *, sep: str = ",", header: bool = True, names: Sequence[str] | None = None,
               na_values: Sequence[str] = DEFAULT_NA) -> pd.DataFrame:
    """A CSV file as a DataFrame; ``na_values`` (and empty cells) become missing; spaces after ``sep`` are
    dropped. Unreadable or empty files raise :class:`DeepfoundryError`."""
    path = Path(path)
    if path.is_dir():
        raise DeepfoundryError(f"CSV file '{path}' is a directory; pass a file of rows")
    if not path.is_file():
        raise DeepfoundryError(f"CSV file '{path}' does not exist")
    try:
        frame = pd.read_csv(path, sep=sep, header=0 if header else None, names=list(names) if names else None,
                            na_values=[*na_values, ""], keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DeepfoundryError(f"CSV file '{path}' is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise DeepfoundryError(f"CSV file '{path}' is not readable as CSV: {detail}") from None
    if len(frame) == 0:
        raise DeepfoundryError(f"CSV file '{path}' has a header but no rows")
    frame.columns = [str(c).strip() for c in frame.columns]
    twice = sorted({c for c in frame.columns if list(frame.columns).count(c) > 1})
    if twice:
        raise DeepfoundryError(f"CSV file '{path}' names column(s) {', '.join(map(repr, twice))} more than once; "
                               f"each column needs its own name")
    return frame


def infer_columns(frame: pd.DataFrame, target: str, numeric: Sequence[str] | None = None,
                  categorical: Sequence[str] | None = None, drop: Sequence[str] | None = None
                  ) -> tuple[list[str], list[str]]:
    """Feature columns as (numeric, categorical): numeric dtypes are numeric, everything else
    (strings, booleans) categorical; ``numeric`` / ``categorical`` force a type, ``drop`` removes columns."""
    forced_num, forced_cat, dropped = ([v] if isinstance(v, str) else list(v or []) for v in (numeric, categorical, drop))
    for key, names in (("numeric", forced_num), ("categorical", forced_cat), ("drop", dropped)):
        unknown = [c for c in names if c not in frame.columns]
        if unknown:
            raise DeepfoundryError(f"config key 'data.{key}': column(s) {', '.join(map(repr, unknown))} not in the "
                                   f"CSV; its columns: {', '.join(frame.columns)}")
    both = sorted(set(forced_num) & set(forced_cat))
    if both:
        raise DeepfoundryError(f"column(s) {', '.join(both)} listed in both data.numeric and data.categorical")
    num, cat = [], []
    for col in frame.columns:
        if col == target or col in dropped:
            continue
        if col in forced_num:
            num.append(col)
        elif col in forced_cat:
            cat.append(col)
        elif pd.api.types.is_numeric_dtype(frame[col]) and not pd.api.types.is_bool_dtype(frame[col]):
            num.append(col)
        else:
            cat.append(col)
    if not num and not cat:
        raise DeepfoundryError(f"no feature columns left besides the target {target!r}; columns: {', '.join(frame.columns)}")
    return num, cat


def infer_task_type(y: pd.Series, override: str = "auto", max_int_classes: int = 20) -> str:
    """``classification`` for string/boolean targets and integer targets with at most ``max_int_classes``
    distinct values; ``regression`` otherwise. ``override`` (classification / regression) wins."""
    _choice("task_type", override, ("auto", "classification", "regression"))
    if override != "auto":
        return override
    if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
        return "classification"
    values = y.dropna().to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):  # inf % 1 is NaN: not an integer (the value itself is refused later)
        integers = bool(np.all(np.mod(values, 1) == 0))
    if integers and len(np.unique(values)) <= max_int_classes:
        return "classification"
    return "regression"


def _label(value: Any) -> Any:
    """Category value as a string: 3.0 (an int column with missing values) and 3 both become '3'."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return np.nan
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)
    return str(value).strip()


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds (``inf``, not ``np.float64(inf)``, in messages)."""
    return value.item() if isinstance(value, np.generic) else value


def numeric_frame(frame: pd.DataFrame, columns: Sequence[str], target: bool = False) -> np.ndarray:
    """The columns as float64 ``(N, len(columns))``, missing as NaN; a non-numeric value, or one beyond float32's
    range (infinite, 1e300), raises. ``target``: the columns are the target (the messages say so)."""
    out = np.empty((len(frame), len(columns)), dtype=np.float64)
    what = "target column" if target else "numeric column"
    for j, col in enumerate(columns):
        raw = frame[col]
        values = pd.to_numeric(raw, errors="coerce")
        bad = values.isna() & raw.notna()
        if bad.any():
            hint = ("set data.task_type=classification" if target else
                    "list it in data.categorical or mark such values missing (data.na_values)")
            raise DeepfoundryError(f"{what} {col!r} has a non-numeric value {_plain(raw[bad].iloc[0])!r}; {hint}")
        out[:, j] = values.to_numpy(dtype=np.float64, na_value=np.nan)
        huge = np.abs(out[:, j]) > np.finfo(np.float32).max  # NaN compares False: missing stays missing
        if huge.any():
            kind = "an infinite" if np.isinf(out[huge, j]).any() else "a too large"
            raise DeepfoundryError(f"{what} {col!r} has {kind} value ({_plain(raw[huge].iloc[0])!r}; the model's "
                                   f"float32 numbers hold up to 3.4e38); mark such values missing (data.na_values)"
                                   + ("" if target else " or drop the column (data.drop)"))
    return out


def categorical_frame(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """The columns as an object array of stripped strings, missing as NaN."""
    out = np.empty((len(frame), len(columns)), dtype=object)
    for j, col in enumerate(columns):
        out[:, j] = [_label(v) for v in frame[col].to_numpy(dtype=object)]
    return out


def _scaler(scaling: str) -> Any:
    return {"standard": StandardScaler(), "minmax": MinMaxScaler(), "robust": RobustScaler(),
            "none": "passthrough"}[scaling]


def _center_scale(step: Any, width: int) -> tuple[list[float], list[float]]:
    """(center, scale) of a fitted scikit-learn scaler, so that ``(x - center) / scale`` reproduces it."""
    if isinstance(step, StandardScaler):
        return step.mean_.tolist(), step.scale_.tolist()
    if isinstance(step, MinMaxScaler):
        return step.data_min_.tolist(), (1.0 / step.scale_).tolist()  # scale_ = 1 / range (1 where range is 0)
    if isinstance(step, RobustScaler):
        return step.center_.tolist(), step.scale_.tolist()
    return [0.0] * width, [1.0] * width


class TabularPreprocessor:
    """Fitted preprocessing of table rows; :attr:`state` is all of it, as JSON-able numbers and strings."""

    def __init__(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("kind") != "tabular":
            raise DeepfoundryError("not a saved tabular preprocessing (expected a dict with kind 'tabular')")
        self.state = state

    @classmethod
    def fit(cls, frame: pd.DataFrame, numeric: Sequence[str], categorical: Sequence[str], *,
            scaling: str = "standard", imputation: str = "median", categorical_missing: str = "category",
            missing_indicators: bool = True, encoding: str = "onehot",
            na_values: Sequence[str] = DEFAULT_NA) -> "TabularPreprocessor":
        """Fit on the training rows ``frame`` with a scikit-learn ``ColumnTransformer`` and keep its numbers."""
        _choice("scaling", scaling, SCALINGS)
        _choice("imputation", imputation, IMPUTATIONS)
        _choice("categorical_missing", categorical_missing, CATEGORICAL_MISSING)
        _choice("encoding", encoding, ENCODINGS)
        numeric, categorical = list(numeric), list(categorical)
        n_num, n_cat = len(numeric), len(categorical)
        x = pd.concat([pd.DataFrame(numeric_frame(frame, numeric)),
                       pd.DataFrame(categorical_frame(frame, categorical), dtype=object)], axis=1, ignore_index=True)
        num_idx, cat_idx = list(range(n_num)), list(range(n_num, n_num + n_cat))
        cat_impute = (SimpleImputer(strategy="constant", fill_value=MISSING, keep_empty_features=True)
                      if categorical_missing == "category"  # keep: a column missing in every training row stays
                      else SimpleImputer(strategy="most_frequent", keep_empty_features=True))
        encoder = (OneHotEncoder(handle_unknown="ignore", sparse_output=False) if encoding == "onehot" else
                   OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1))
        cat_steps = [("impute", cat_impute), ("encode", encoder)]
        if encoding == "ordinal":
            cat_steps.append(("scale", _scaler(scaling)))
        parts = [("numeric", Pipeline([("impute", SimpleImputer(strategy=imputation, keep_empty_features=True)),
                                       ("scale", _scaler(scaling))]), num_idx),
                 ("missing", MissingIndicator(features="missing-only", error_on_new=False), num_idx),
                 ("categorical", Pipeline(cat_steps), cat_idx)]
        if not missing_indicators:
            parts.pop(1)
        transformer = ColumnTransformer([p for p in parts if p[2]], sparse_threshold=0.0)
        transformer.fit(x)
        fitted = transformer.named_transformers_
        state: dict[str, Any] = {"kind": "tabular", "version": 1, "scaling": scaling, "imputation": imputation,
                                 "categorical_missing": categorical_missing, "encoding": encoding,
                                 "na_values": list(na_values), "numeric": [], "categorical": []}
        if n_num:
            pipe = fitted["numeric"]
            center, scale = _center_scale(pipe.named_steps["scale"], n_num)
            fill = pipe.named_steps["impute"].statistics_.astype(np.float64)
            flagged = set(fitted["missing"].features_.tolist()) if missing_indicators else set()
            for j, col in enumerate(numeric):
                state["numeric"].append({"name": col, "fill": float(fill[j]), "center": center[j], "scale": scale[j],
                                         "indicator": j in flagged})
        if n_cat:
            pipe = fitted["categorical"]
            fills = pipe.named_steps["impute"].statistics_
            cats = pipe.named_steps["encode"].categories_
            center, scale = (_center_scale(pipe.named_steps["scale"], n_cat) if encoding == "ordinal"
                             else ([0.0] * n_cat, [1.0] * n_cat))
            for j, col in enumerate(categorical):
                state["categorical"].append({"name": col, "fill": str(fills[j]), "categories": [str(c) for c in cats[j]],
                                             "center": center[j], "scale": scale[j]})
        out = cls(state)
        out.sklearn_transformer = transformer  # kept in memory only, for checks against scikit-learn
        return out

    # ------------------------------------------------------------------ the saved state, applied with numpy
    @property
    def columns(self) -> list[str]:
        """The raw columns a row must have."""
        return [c["name"] for c in self.state["numeric"]] + [c["name"] for c in self.state["categorical"]]

    @property
    def feature_names(self) -> list[str]:
        """Names of the output columns, in order."""
        num = self.state["numeric"]
        names = [c["name"] for c in num] + [f"{c['name']}_missing" for c in num if c["indicator"]]
        for c in self.state["categorical"]:
            if self.state["encoding"] == "onehot":
                names += [f"{c['name']}={v}" for v in c["categories"]]
            else:
                names.append(c["name"])
        return names

    def model_context(self) -> dict[str, Any]:
        """What ``mlp_tabular`` needs: ``num_numeric`` leading float columns, then one code column per
        categorical column with ``cardinalities[k]`` = categories + 1 (code 0 = unseen)."""
        cards = ([len(c["categories"]) + 1 for c in self.state["categorical"]]
                 if self.state["encoding"] == "embedding" else [])
        return {"num_numeric": len(self.feature_names) - len(cards), "cardinalities": cards,
                "in_features": len(self.feature_names)}

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Raw rows (a DataFrame with at least :attr:`columns`) -> float32 ``(N, len(feature_names))``."""
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise DeepfoundryError(f"rows lack the feature column(s) {', '.join(map(repr, missing))}; the model "
                                   f"needs: {', '.join(self.columns)}")
        frame = frame.replace([*self.state["na_values"], ""], np.nan) if len(frame) else frame
        num, cat = self.state["numeric"], self.state["categorical"]
        blocks: list[np.ndarray] = []
        x = numeric_frame(frame, [c["name"] for c in num])
        absent = np.isnan(x)  # (N, n_num)
        fill = np.array([c["fill"] for c in num])
        x = np.where(absent, fill, x)
        scaled = (x - np.array([c["center"] for c in num])) / np.array([c["scale"] for c in num])  # (N, n_num)
        beyond = np.argwhere(np.abs(scaled) > np.finfo(np.float32).max)
        if len(beyond):
            i, j = beyond[0]
            raise DeepfoundryError(f"numeric column {num[j]['name']!r}: value {float(x[i, j])!r} is {scaled[i, j]:.3g} "
                                   f"after scaling (training center {num[j]['center']:.3g}, scale "
                                   f"{num[j]['scale']:.3g}), beyond what the model's float32 inputs hold")
        blocks.append(scaled)
        blocks.append(absent[:, [c["indicator"] for c in num]].astype(np.float64))
        values = categorical_frame(frame, [c["name"] for c in cat])
        codes_out = []
        for j, c in enumerate(cat):
            column = np.array([c["fill"] if v is np.nan or v != v else v for v in values[:, j]], dtype=object)
            index = {v: k for k, v in enumerate(c["categories"])}
            codes = np.array([index.get(v, -1) for v in column], dtype=np.int64)  # -1: unseen in training
            if self.state["encoding"] == "onehot":
                onehot = np.zeros((len(codes), len(c["categories"])))
                seen = codes >= 0
                onehot[np.flatnonzero(seen), codes[seen]] = 1.0
                blocks.append(onehot)
            elif self.state["encoding"] == "ordinal":
                blocks.append(((codes - c["center"]) / c["scale"])[:, None])
            else:
                codes_out.append((codes + 1)[:, None])  # 0: unseen
        blocks += codes_out
        return np.concatenate(blocks, axis=1).astype(np.float32)  # every block is (N, k), also for N = 0


def fit_target(y: pd.Series, task_type: str) -> dict[str, Any]:
    """Classification: the sorted class labels; regression: the training mean and standard deviation."""
    if task_type == "classification":
        labels = [_label(v) for v in y.to_numpy(dtype=object)]
        try:
            classes = sorted(set(labels), key=lambda s: (0, float(s), s))
        except ValueError:
            classes = sorted(set(labels))
        return {"task_type": task_type, "classes": classes}
    values = numeric_frame(y.to_frame(), [y.name], target=True)[:, 0]
    return {"task_type": task_type, "mean": float(values.mean()), "std": float(values.std()) or 1.0}


def encode_target(y: pd.Series, target: dict[str, Any]) -> np.ndarray:
    """Class indices (int64) or standardised values (float32, ``(N, 1)``)."""
    if target["task_type"] == "classification":
        index = {c: k for k, c in enumerate(target["classes"])}
        labels = [_label(v) for v in y.to_numpy(dtype=object)]
        unknown = sorted({v for v in labels if v not in index})
        if unknown:
            raise DeepfoundryError(f"target {y.name!r} has class(es) {', '.join(map(repr, unknown[:5]))} absent from "
                                   f"the training split; classes: {', '.join(target['classes'])}")
        return np.array([index[v] for v in labels], dtype=np.int64)
    values = numeric_frame(y.to_frame(), [y.name], target=True)
    return ((values - target["mean"]) / target["std"]).astype(np.float32)
