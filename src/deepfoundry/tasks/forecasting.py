"""Forecasting and sequence regression with recurrent models, their baselines and diagnostics.

``forecasting``: the model maps a scaled window ``z_{t-L}..z_{t-1}`` to ``z_t..z_{t+H-1}``; the loss
is the MSE on scaled values. Metrics are in the series' own units (``y = z * scale + loc``) over every
(window, step) pair of the evaluated split:

- ``rmse = sqrt(mean (y_hat - y)^2)``, ``mae = mean |y_hat - y|``,
  ``mape = 100 * mean(|y_hat - y| / |y|)`` over targets with ``y != 0`` (percent);
- ``naive_rmse``: the last observed value repeated, ``y_hat_{t+h} = y_{t-1}``;
- ``seasonal_naive_rmse``: the value one season earlier, ``y_hat_{t+h} = y_{t+h-s*k}`` with ``k`` the
  smallest integer that puts the index before ``t`` (``s`` = ``info['season']``);
- ``rmse_by_step`` (list, one per step ahead).

Both baselines are computed from the same input windows as the model, so all three RMSEs are
on exactly the same test targets.

``sequence_regression``: one value per sequence (the adding problem), MSE loss; metrics ``mse``,
``rmse``, ``mae`` and ``trivial_mse`` (always predicting ``info['baseline_prediction']``, 1.0 for the
adding problem, on the same samples). Its report (:mod:`deepfoundry.report.forecasting`) plots
``||dL/dh_t||`` against ``t`` for the vanilla RNN, LSTM and GRU
(:func:`deepfoundry.nn.recurrent.hidden_state_gradients`).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..nn.recurrent import hidden_state_gradients
from ..data import timeseries as _timeseries  # noqa: F401  (registers the datasets these tasks read, for `list`)
from ..registry import TASKS
from .base import Task, ValueOutputs


def naive_forecast(x: torch.Tensor, horizon: int) -> torch.Tensor:
    """The last value of each window repeated: ``(B, L)`` -> ``(B, horizon)``.

    >>> naive_forecast(torch.tensor([[1., 2., 3.]]), 2)
    tensor([[3., 3.]])
    """
    return x[:, -1:].expand(-1, horizon)


def seasonal_naive_forecast(x: torch.Tensor, horizon: int, season: int) -> torch.Tensor:
    """The value one season before each target: step ``h`` (0-based) takes ``x[:, L - s + (h mod s)]``.

    >>> seasonal_naive_forecast(torch.tensor([[1., 2., 3., 4., 5.]]), 3, 2)
    tensor([[4., 5., 4.]])
    """
    L = x.shape[1]
    idx = torch.tensor([L - season + (h % season) for h in range(horizon)], device=x.device)
    return x[:, idx]


class ForecastingTask(ValueOutputs, Task):
    """MSE on scaled windows; RMSE / MAE / MAPE and the naive baselines in original units."""

    report_sections = ("curves", "forecasting")
    exportable = True

    def __init__(self, model: nn.Module, info: dict[str, Any]) -> None:
        super().__init__(model, info)
        scaler = info.get("scaler") or {"loc": 0.0, "scale": 1.0}
        self.loc, self.scale = float(scaler["loc"]), float(scaler["scale"])
        self.horizon = int(info.get("horizon", 1))
        self.season = info.get("season")
        self.reset_metrics()

    def training_step(self, batch: Any) -> torch.Tensor:
        x, y = batch
        return F.mse_loss(self.model(x), y)

    def reset_metrics(self) -> None:
        self._loss_sum, self._count = 0.0, 0
        self._parts: dict[str, list[torch.Tensor]] = {"pred": [], "true": [], "naive": [], "seasonal": []}

    def evaluation_step(self, batch: Any) -> None:
        x, y = batch
        pred = self.model(x).float()
        self._loss_sum += float(F.mse_loss(pred, y, reduction="sum"))
        self._count += y.numel()
        raw = x.float() * self.scale + self.loc  # (B, L) in original units
        self._parts["pred"].append((pred * self.scale + self.loc).cpu())
        self._parts["true"].append((y.float() * self.scale + self.loc).cpu())
        self._parts["naive"].append(naive_forecast(raw, self.horizon).cpu())
        if self.season:
            self._parts["seasonal"].append(seasonal_naive_forecast(raw, self.horizon, int(self.season)).cpu())

    def compute_metrics(self) -> dict[str, Any]:
        if not self._parts["true"]:
            return {"loss": math.nan}
        p = {k: torch.cat(v).double().numpy() for k, v in self._parts.items() if v}
        true = p["true"]  # (N, H)
        err = p["pred"] - true
        nonzero = np.abs(true) > 0
        out: dict[str, Any] = {
            "loss": self._loss_sum / max(1, self._count),
            "rmse": float(np.sqrt(np.mean(err ** 2))),
            "mae": float(np.mean(np.abs(err))),
            "mape": float(100 * np.mean(np.abs(err[nonzero]) / np.abs(true[nonzero]))) if nonzero.any() else math.nan,
            "naive_rmse": float(np.sqrt(np.mean((p["naive"] - true) ** 2))),
            "naive_mae": float(np.mean(np.abs(p["naive"] - true))),
        }
        if "seasonal" in p:
            out["seasonal_naive_rmse"] = float(np.sqrt(np.mean((p["seasonal"] - true) ** 2)))
            out["seasonal_naive_mae"] = float(np.mean(np.abs(p["seasonal"] - true)))
        out["rmse_by_step"] = np.sqrt(np.mean(err ** 2, axis=0)).tolist()
        return out

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Raw windows ``(B, L)`` in the series' units -> forecasts ``(B, horizon)`` in the same units."""
        z = (x.float() - self.loc) / self.scale
        return self.model(z).float() * self.scale + self.loc

    def loader_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Loaders hold scaled windows ``z``; :meth:`predict` takes the series' units ``z * scale + loc``."""
        return x.float() * self.scale + self.loc

    def score(self, outputs: torch.Tensor, target: torch.Tensor) -> tuple[str, float]:
        """``rmse`` in the series' units over every (window, step): targets unscaled, ``z * scale + loc``."""
        y = target.double() * self.scale + self.loc
        return "rmse", float(((outputs.double().reshape(y.shape) - y) ** 2).mean().sqrt())


class SequenceRegressionTask(ValueOutputs, Task):
    """One real value per sequence, MSE loss; ``trivial_mse`` of the constant baseline beside it."""

    report_sections = ("curves", "regression", "bptt")
    exportable = True

    def __init__(self, model: nn.Module, info: dict[str, Any]) -> None:
        super().__init__(model, info)
        self.baseline = float(info.get("baseline_prediction", 1.0))
        self.reset_metrics()

    def training_step(self, batch: Any) -> torch.Tensor:
        x, y = batch
        return F.mse_loss(self.model(x), y)

    def reset_metrics(self) -> None:
        self._sq, self._abs, self._trivial, self._count = 0.0, 0.0, 0.0, 0

    def evaluation_step(self, batch: Any) -> None:
        x, y = batch
        err = self.model(x).float() - y
        self._sq += float((err ** 2).sum())
        self._abs += float(err.abs().sum())
        self._trivial += float(((y - self.baseline) ** 2).sum())
        self._count += y.numel()

    def compute_metrics(self) -> dict[str, Any]:
        n = max(1, self._count)
        mse = self._sq / n
        return {"loss": mse, "mse": mse, "rmse": math.sqrt(mse), "mae": self._abs / n, "trivial_mse": self._trivial / n}

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.float()).float()

    def score(self, outputs: torch.Tensor, target: torch.Tensor) -> tuple[str, float]:
        """``rmse`` of the predicted values."""
        y = target.double()
        return "rmse", float(((outputs.double().reshape(y.shape) - y) ** 2).mean().sqrt())


def gradient_profile(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """``||dL/dh_t||`` per step for a :class:`~deepfoundry.models.forecaster.RecurrentForecaster` (squared error)."""
    return hidden_state_gradients(model.rnn, lambda out: model.readout(out, x), model.encoder_input(x), y)


@TASKS.register("forecasting")
def forecasting(*, model: nn.Module, info: dict[str, Any]) -> ForecastingTask:
    """Windowed forecasting: MSE on scaled values; RMSE/MAE/MAPE beside naive and seasonal-naive RMSE."""
    return ForecastingTask(model, info)


@TASKS.register("sequence_regression")
def sequence_regression(*, model: nn.Module, info: dict[str, Any]) -> SequenceRegressionTask:
    """One value per sequence (the adding problem): MSE loss; reports the constant baseline's MSE beside it."""
    return SequenceRegressionTask(model, info)
