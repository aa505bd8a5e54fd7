"""Time series for forecasting (sunspots, CO2, a user CSV) and the adding problem.

Forecasting pipeline, for a series ``y_0..y_{N-1}`` in time order:

1. **Time-ordered split.** The test span is the last ``test_fraction`` of the points (the recipes
   use 10%), the validation span the last ``val_fraction`` of what precedes it, the training span
   the rest. Nothing is shuffled across time.
2. **Scaling fitted on the training span only** (scikit-learn's ``StandardScaler``, ``z = (y - mean) / std``,
   or ``MinMaxScaler``, ``z = (y - min) / (max - min)``), applied to the whole series; ``info['scaler']``
   keeps ``{kind, loc, scale}`` with ``z = (y - loc) / scale`` so forecasts map back as ``y = z * scale + loc``.
3. **Windows.** For a forecast origin ``t`` the input is ``z_{t-L}..z_{t-1}`` (``window = L`` values)
   and the target ``z_t..z_{t+H-1}`` (``horizon = H``, the direct multi-step target). A window
   belongs to the split whose span holds *all* its targets; windows whose targets straddle two
   spans are dropped, so no training target lies in the validation or test span. Inputs may reach
   back into earlier spans (the past is known when forecasting).

Inputs are ``(N, L)`` float32 (univariate), targets ``(N, H)`` float32, both scaled.
``info['season']`` is the seasonal period the seasonal-naive baseline uses (11 years for
sunspots, 12 months for CO2).

The **adding problem** (Hochreiter & Schmidhuber 1997; the variant of Arjovsky et al. 2016):
each sequence has ``T`` steps of ``(value, marker)`` pairs, values uniform in [0, 1], exactly two
markers set to 1 (one position uniform in the first half, one in the second half); the target is
the sum of the two marked values. Predicting the mean (1.0) scores MSE ``Var(U1 + U2) = 2/12 ~ 0.167``,
the trivial baseline; "solved" means MSE < 0.01.

>>> from deepfoundry.registry import DATASETS
>>> s = DATASETS.build("sunspots", window=33, test_fraction=0.1)
>>> s.test[0].shape, s.test[1].shape, s.info["season"]
(torch.Size([31, 33]), torch.Size([31, 1]), 11)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import DeepfoundryError
from ..nn.activations import positive_int
from ..registry import DATASETS
from ..splits import time_split_sizes
from .core import Splits

SCALINGS = ("standard", "minmax", "none")


def split_sizes(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """Points in the (train, val, test) spans of a series, in time order (:func:`deepfoundry.splits.time_split_sizes`
    with at least one point in each span whose fraction is not 0).

    >>> split_sizes(309, 0.1, 0.1)
    (250, 28, 31)
    """
    return time_split_sizes(n, val_fraction, test_fraction, minimum=1)


def fit_scaler(train_values: np.ndarray, kind: str) -> dict[str, Any]:
    """``{kind, loc, scale}`` with ``z = (y - loc) / scale``, fitted on ``train_values`` only."""
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    if kind not in SCALINGS:
        raise DeepfoundryError(f"scaling must be one of {', '.join(SCALINGS)}; received scaling={kind!r}")
    col = np.asarray(train_values, dtype=np.float64).reshape(-1, 1)
    if kind == "standard":
        s = StandardScaler().fit(col)
        loc, scale = float(s.mean_[0]), float(s.scale_[0])
    elif kind == "minmax":
        s = MinMaxScaler().fit(col)
        loc, scale = float(s.data_min_[0]), float(s.data_range_[0]) or 1.0
    else:
        loc, scale = 0.0, 1.0
    return {"kind": kind, "loc": loc, "scale": scale}


def windows(z: np.ndarray, window: int, horizon: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All windows whose targets lie in ``z[start:stop]``: inputs ``(n, window)``, targets
    ``(n, horizon)`` and the index of each window's first target (the forecast origin), ``(n,)``.

    >>> x, y, t = windows(np.arange(10.0), 3, 2, 6, 10)
    >>> x.tolist(), y.tolist(), t.tolist()
    ([[3.0, 4.0, 5.0], [4.0, 5.0, 6.0], [5.0, 6.0, 7.0]], [[6.0, 7.0], [7.0, 8.0], [8.0, 9.0]], [6, 7, 8])
    """
    origins = np.arange(max(start, window), stop - horizon + 1)
    x = np.stack([z[t - window:t] for t in origins]) if len(origins) else np.zeros((0, window))
    y = np.stack([z[t:t + horizon] for t in origins]) if len(origins) else np.zeros((0, horizon))
    return x, y, origins


def make_forecasting_splits(values: Sequence[float], times: Sequence[Any], *, title: str, window: int,
                            horizon: int, val_fraction: float, test_fraction: float, scaling: str,
                            season: int | None, note: str = "") -> Splits:
    """The pipeline of the module docstring on one series; ``times`` label each point (for plots)."""
    y = np.asarray(values, dtype=np.float64)
    window, horizon = positive_int("window", window), positive_int("horizon", horizon)
    if season is not None:
        season = positive_int("season", season)
        if window < season:
            raise DeepfoundryError(f"window ({window}) is shorter than the season ({season}); the seasonal-naive "
                                   f"baseline needs one season of history: set data.window >= {season}")
    n_train, n_val, n_test = split_sizes(len(y), val_fraction, test_fraction)
    need_train = window + horizon
    if n_train < need_train or (n_val and n_val < horizon) or (n_test and n_test < horizon):
        raise DeepfoundryError(
            f"series {title!r} is too short for window {window} and horizon {horizon}: {len(y)} points split "
            f"{n_train} train / {n_val} val / {n_test} test, but the training span needs at least "
            f"{need_train} (window + horizon) and the val/test spans at least {horizon}; "
            "use a shorter data.window / data.horizon or a longer series")
    scaler = fit_scaler(y[:n_train], scaling)  # training span only: no look into val/test values
    z = (y - scaler["loc"]) / scaler["scale"]
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, len(y))}
    parts = {k: windows(z, window, horizon, a, b) for k, (a, b) in bounds.items()}
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    labels = [t.item() if hasattr(t, "item") else t for t in times]
    labels = [str(t) if not isinstance(t, (int, float)) else t for t in labels]
    counts = {k: len(v[0]) for k, v in parts.items()}
    info: dict[str, Any] = {
        "input_kind": "series", "task_type": "forecasting", "input_shape": [window], "in_features": 1,
        "preprocess": None,  # the scaler below replaces build_data's standardisation
        "model_context": {"in_features": 1, "horizon": horizon},
        "window": window, "horizon": horizon, "season": season, "scaler": scaler, "series_name": title,
        "num_points": len(y), "spans": {k: [labels[a], labels[b - 1]] if b > a else [] for k, (a, b) in bounds.items()},
        "test_times": labels[bounds["test"][0]:],  # test window j's step-h target is test_times[j + h]
        "split_note": (f"{title}: {len(y):,} points, time-ordered split {n_train} train / {n_val} val / {n_test} test "
                       f"points (test = last {test_fraction:.0%}); windows of {window} -> {horizon}: "
                       f"{counts['train']} / {counts['val']} / {counts['test']}; {scaling} scaling fitted on the "
                       f"training span only" + (f"; {note}" if note else "")),
    }
    return Splits(*((as_t(parts[k][0]), as_t(parts[k][1])) for k in ("train", "val", "test")), info=info)


@DATASETS.register("sunspots")
def sunspots(*, window: int = 33, horizon: int = 1, season: int | None = 11, scaling: str = "standard",
             val_fraction: float = 0.1, test_fraction: float = 0.1) -> Splits:
    """Yearly sunspot numbers 1700-2008 (statsmodels, offline; 309 points); seasonal period 11 years.

    Season 11: the Schwabe cycle averages about 11 years, and the autocorrelation of the training
    span (1700-1949) peaks at lags 10 and 11 (0.55 each; 11 is the larger in the third decimal).
    """
    import statsmodels.api as sm

    frame = sm.datasets.sunspots.load_pandas().data
    return make_forecasting_splits(frame["SUNACTIVITY"].to_numpy(), frame["YEAR"].astype(int).tolist(),
                                   title="sunspots (yearly)", window=window, horizon=horizon,
                                   val_fraction=val_fraction, test_fraction=test_fraction, scaling=scaling,
                                   season=season)


@DATASETS.register("co2")
def co2(*, window: int = 36, horizon: int = 12, season: int | None = 12, scaling: str = "standard",
        val_fraction: float = 0.1, test_fraction: float = 0.1) -> Splits:
    """Mauna Loa CO2 (ppm), weekly 1958-2001 resampled to monthly means (statsmodels, offline; 526 months).

    The 2,284 weekly readings (59 missing) are averaged per calendar month; the 5 months with no
    reading at all are filled by linear interpolation in time. Seasonal period 12 months.
    """
    import statsmodels.api as sm

    weekly = sm.datasets.co2.load_pandas().data["co2"]
    monthly = weekly.resample("MS").mean()
    gaps = int(monthly.isna().sum())
    monthly = monthly.interpolate(method="time")
    times = [t.strftime("%Y-%m") for t in monthly.index]
    return make_forecasting_splits(monthly.to_numpy(), times, title="co2 (monthly mean)", window=window,
                                   horizon=horizon, val_fraction=val_fraction, test_fraction=test_fraction,
                                   scaling=scaling, season=season,
                                   note=f"weekly readings averaged per month, {gaps} empty months interpolated linearly")


def read_series_csv(path: str | Path, time_column: str, value_column: str) -> tuple[np.ndarray, list[str]]:
    """Read ``value_column`` of a CSV in the order of ``time_column`` (parsed as dates, else numbers).

    Errors (one line each): missing file, missing column (lists those present), a value that is not
    a number (names the row), duplicate times.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DeepfoundryError(f"series file '{path}' does not exist; set data.path to a CSV file")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DeepfoundryError(f"'{path}' is not a readable CSV file: {str(exc).splitlines()[0]}") from None
    for role, col in (("time_column", time_column), ("value_column", value_column)):
        if col not in frame.columns:
            raise DeepfoundryError(f"'{path}' has no column {col!r} (data.{role}); columns: "
                                   f"{', '.join(map(str, frame.columns))}")
    values = pd.to_numeric(frame[value_column], errors="coerce")
    bad = values.isna().to_numpy()
    if bad.any():
        row = int(np.argmax(bad))
        raise DeepfoundryError(f"'{path}' column {value_column!r} has a value that is not a number at data row "
                               f"{row + 1}: {frame[value_column].iloc[row]!r}; clean or fill it first")
    raw_times = frame[time_column]
    numeric = pd.to_numeric(raw_times, errors="coerce")
    if numeric.notna().all():
        keys = numeric
    else:
        keys = pd.to_datetime(raw_times, errors="coerce")
        if keys.isna().any():
            row = int(np.argmax(keys.isna().to_numpy()))
            raise DeepfoundryError(f"'{path}' column {time_column!r} has a time that is neither a date nor a number "
                                   f"at data row {row + 1}: {raw_times.iloc[row]!r}")
    if keys.duplicated().any():
        row = int(np.argmax(keys.duplicated().to_numpy()))
        raise DeepfoundryError(f"'{path}' column {time_column!r} repeats the time {raw_times.iloc[row]!r} "
                               f"(data row {row + 1}); one value per time step is needed")
    order = np.argsort(keys.to_numpy(), kind="stable")
    return values.to_numpy(dtype=np.float64)[order], [str(t) for t in raw_times.to_numpy()[order]]


@DATASETS.register("series-csv")
def series_csv(*, path: str | None = None, root: str | None = None, time_column: str = "date",
               value_column: str = "value", window: int = 24, horizon: int = 1, season: int | None = None,
               scaling: str = "standard", val_fraction: float = 0.1, test_fraction: float = 0.1) -> Splits:
    """A univariate series from a CSV file (a time column and a value column; ``data.path``).

    Rows are sorted by time (dates, or plain numbers such as years); ``season`` (in steps) enables
    the seasonal-naive baseline.
    """
    file = path or root
    if file is None:
        raise DeepfoundryError("series-csv needs data.path (a CSV with a time and a value column)")
    values, times = read_series_csv(file, time_column, value_column)
    return make_forecasting_splits(values, times, title=Path(file).name, window=window, horizon=horizon,
                                   val_fraction=val_fraction, test_fraction=test_fraction, scaling=scaling,
                                   season=season)


def adding_problem(n: int, length: int, generator: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` adding-problem sequences: inputs ``(n, length, 2)`` (value, marker), targets ``(n, 1)``.

    >>> x, y = adding_problem(4, 10, np.random.default_rng(0))
    >>> x.shape, bool(np.allclose((x[..., 0] * x[..., 1]).sum(1), y[:, 0])), x[..., 1].sum(1).tolist()
    ((4, 10, 2), True, [2.0, 2.0, 2.0, 2.0])
    """
    half = length // 2
    values = generator.random((n, length))
    markers = np.zeros((n, length))
    rows = np.arange(n)
    markers[rows, generator.integers(0, half, n)] = 1.0  # first marker: first half
    markers[rows, generator.integers(half, length, n)] = 1.0  # second marker: second half
    x = np.stack([values, markers], axis=-1)
    y = (values * markers).sum(axis=1, keepdims=True)
    return x.astype(np.float32), y.astype(np.float32)


@DATASETS.register("adding")
def adding(*, length: int = 100, num_train: int = 20000, num_val: int = 2000, num_test: int = 5000,
           seed: int = 0) -> Splits:
    """The adding problem (Hochreiter & Schmidhuber 1997): sum the two marked values of a length-T sequence.

    Generated from ``seed`` (train, val and test drawn in that order from one generator). Trivial
    baseline: predicting the mean 1.0 gives MSE 1/6 ~ 0.167; ``info['trivial_mse']`` is that
    baseline measured on the test set.
    """
    length = positive_int("length", length)
    if length < 2:
        raise DeepfoundryError(f"length must be at least 2 (two markers); received length={length}")
    gen = np.random.default_rng(seed)
    parts = [adding_problem(positive_int(name, k), length, gen)
             for name, k in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test))]
    test_y = parts[2][1]
    trivial = float(np.mean((test_y - 1.0) ** 2))
    info = {"input_kind": "sequence", "task_type": "regression", "input_shape": [length, 2], "in_features": 2,
            "preprocess": None, "model_context": {"in_features": 2, "horizon": 1}, "length": length,
            "class_names": ["sum of the marked values"], "trivial_mse": trivial,
            "baseline_prediction": 1.0,
            "split_note": (f"adding problem, T={length}: {num_train:,} / {num_val:,} / {num_test:,} sequences "
                           f"(seed {seed}); predicting the mean 1.0 scores test MSE {trivial:.4f} (theory 1/6)")}
    return Splits(*((torch.from_numpy(x), torch.from_numpy(y)) for x, y in parts), info=info)


__all__ = ["adding_problem", "fit_scaler", "make_forecasting_splits", "read_series_csv", "split_sizes", "windows"]
