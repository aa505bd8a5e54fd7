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
adding problem, on the same samples). Its report plots ``||dL/dh_t||`` against ``t`` for the vanilla
RNN, LSTM and GRU (:func:`deepfoundry.nn.recurrent.hidden_state_gradients`).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..nn.recurrent import ExplicitRecurrent, cell_type, hidden_state_gradients
from ..data import timeseries as _timeseries  # noqa: F401  (registers the datasets these tasks read, for `list`)
from ..registry import TASKS
from .base import Task, ValueOutputs

if TYPE_CHECKING:
    from pathlib import Path

    from ..api import Run

GATE_NAMES = {"lstm": (("i", "input gate i_t"), ("f", "forget gate f_t"), ("o", "output gate o_t")),
              "gru": (("z", "update gate z_t"), ("r", "reset gate r_t"))}


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


def _times_axis(labels: list[Any]) -> list[Any]:
    """Plot positions for time labels: numbers as they are, ISO strings as datetimes."""
    if all(isinstance(t, (int, float)) for t in labels):
        return labels
    import pandas as pd

    parsed = pd.to_datetime(pd.Series(labels), errors="coerce")
    return list(parsed) if parsed.notna().all() else list(range(len(labels)))


def gate_section(model: nn.Module, x: torch.Tensor, plots: "Path", name: str = "gates") -> str:
    """Heat maps (unit x time) and means of the gates of the first recurrent layer for one input ``x`` (1, T[, F])."""
    from ..report import NO_DATA, embed_figure
    import matplotlib.pyplot as plt

    rnn = getattr(model, "rnn", None)
    kind = cell_type(rnn) if isinstance(rnn, nn.RNNBase) else None
    if kind not in GATE_NAMES:
        return "<p>The vanilla RNN has no gates: its state is overwritten by tanh(W x_t + U h_{t-1} + b) at every step.</p>" \
            if kind == "rnn" else NO_DATA
    with torch.no_grad():
        _, _, gates = ExplicitRecurrent(rnn)(model.encoder_input(x.float()))
    layer0 = gates[0]  # layer 0, forward direction: name -> (1, T, H)
    names = GATE_NAMES[kind]
    steps = np.arange(x.shape[1])
    fig, axes = plt.subplots(len(names) + 2, 1, figsize=(9, 1.9 * (len(names) + 2)), sharex=True,
                             layout="constrained")
    series = x[0].float().numpy()
    axes[0].plot(steps, series if series.ndim == 1 else series, lw=1)
    axes[0].set(title="input (model scale)", ylabel="x_t")
    for ax, (key, label) in zip(axes[1:], names):
        im = ax.imshow(layer0[key][0].T.numpy(), aspect="auto", cmap="viridis", vmin=0, vmax=1,
                       extent=(-0.5, len(steps) - 0.5, layer0[key].shape[-1] - 0.5, -0.5), interpolation="nearest")
        ax.set(ylabel="unit", title=label)
    fig.colorbar(im, ax=axes[1:len(names) + 1], fraction=0.02, label="activation")
    for key, label in names:
        axes[-1].plot(steps, layer0[key][0].mean(dim=-1).numpy(), label=label)
    axes[-1].set(xlabel="time step t", ylabel="mean over units", ylim=(0, 1), title="gate means")
    axes[-1].legend(fontsize="small", ncol=len(names))
    text = ("<p>Gate activations of the first recurrent layer for one input, computed by the explicit cell "
            "(<code>deepfoundry.nn.recurrent</code>, numerically equal to the fused layer). "
            + ("An input gate near 1 writes the candidate into the cell, a forget gate near 1 keeps the cell, "
               "an output gate near 1 exposes it." if kind == "lstm" else
               "An update gate z_t near 1 keeps the previous state; near 0 it is replaced by the candidate. "
               "The reset gate r_t decides how much of the previous state the candidate sees.") + "</p>")
    return text + embed_figure(fig, plots, name)


class ForecastingTask(ValueOutputs, Task):
    """MSE on scaled windows; RMSE / MAE / MAPE and the naive baselines in original units."""

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

    def report_sections(self, run: "Run", plots: "Path", data_root: str | None) -> list[tuple[str, str]]:
        from ..report import NO_DATA, embed_figure, html_table
        import matplotlib.pyplot as plt

        test = run.data(data_root).test
        if test.num_samples == 0:
            return [("Forecast vs truth (test span)", NO_DATA)]
        self.to("cpu").eval()
        with torch.no_grad():
            pred = (self.model(test.x.float()) * self.scale + self.loc).numpy()  # (N, H)
        raw = test.x.float() * self.scale + self.loc
        true = (test.y.float() * self.scale + self.loc).numpy()
        base = {"naive (last value)": naive_forecast(raw, self.horizon).numpy()}
        if self.season:
            base[f"seasonal naive (s={self.season})"] = seasonal_naive_forecast(raw, self.horizon, int(self.season)).numpy()
        labels = list(self.info.get("test_times") or range(len(true) + self.horizon - 1))
        steps = sorted({0, self.horizon - 1})
        fig, axes = plt.subplots(len(steps), 1, figsize=(9, 3.6 * len(steps)), squeeze=False, layout="constrained")
        for ax, h in zip(axes[:, 0], steps):
            t = _times_axis(labels[h:h + len(true)])
            ax.plot(t, true[:, h], "k-", lw=2, label="truth")
            ax.plot(t, pred[:, h], "-o", ms=3, label=f"{run.config.model.name}")
            for (name, b), style in zip(base.items(), ("--", ":")):
                ax.plot(t, b[:, h], style, label=name)
            ax.set(title=f"{h + 1} step{'s' if h else ''} ahead, test span", ylabel=self.info.get("series_name", "value"))
            ax.legend(fontsize="small")
        out = embed_figure(fig, plots, "forecast_test")
        rmse = lambda a: float(np.sqrt(np.mean((a - true) ** 2)))  # noqa: E731
        rows = [[run.config.model.name, rmse(pred)]] + [[k, rmse(v)] for k, v in base.items()]
        out += html_table(["forecast", "test RMSE (all steps)"], rows)
        x_one = test.x[-1:]  # the most recent test window
        return [("Forecast vs truth (test span)", out),
                ("Gate activations (last test window)", gate_section(self.model, x_one, plots))]


class SequenceRegressionTask(ValueOutputs, Task):
    """One real value per sequence, MSE loss; ``trivial_mse`` of the constant baseline beside it."""

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

    def report_sections(self, run: "Run", plots: "Path", data_root: str | None) -> list[tuple[str, str]]:
        test = run.data(data_root).test
        x, y = test.x[:256].float(), test.y[:256].float()
        sections = [("Gradient norm per time step (BPTT)", bptt_section(run, self.model, x, y, plots))]
        if cell_type(self.model.rnn) in GATE_NAMES:
            sections.append(("Gate activations (one test sequence)", gate_section(self.model, x[:1], plots)))
        return sections


def gradient_profile(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """``||dL/dh_t||`` per step for a :class:`~deepfoundry.models.forecaster.RecurrentForecaster` (squared error)."""
    return hidden_state_gradients(model.rnn, lambda out: model.readout(out, x), model.encoder_input(x), y)


def bptt_section(run: "Run", trained: nn.Module, x: torch.Tensor, y: torch.Tensor, plots: "Path") -> str:
    """Two panels: the three cell types at initialisation, and this run's model before and after training."""
    from ..engine.seeding import seed_everything
    from ..models import build_model
    from ..report import embed_figure, html_table
    import matplotlib.pyplot as plt

    m = run.meta["model"]
    name = m["name"]
    fresh: dict[str, np.ndarray] = {}
    for cell in ("rnn", "lstm", "gru"):
        seed_everything(run.config.seed)  # the run built its model right after seeding: same initial weights
        model = build_model(f"{cell}_forecaster", m["kwargs"], m["context"]).eval()
        fresh[cell] = gradient_profile(model, x, y)
    own = name.split("_")[0]
    after = gradient_profile(trained.to("cpu").eval(), x, y)
    t = np.arange(x.shape[1])
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained", sharey=True)
    for cell, prof in fresh.items():
        a.plot(t, prof, label=cell.upper() if cell != "rnn" else "vanilla RNN")
    a.set(title="at initialisation (same seed, same size)", xlabel="time step t", ylabel="mean ||dL/dh_t||",
          yscale="log")
    a.legend()
    b.plot(t, fresh.get(own, after), "--", label=f"{own} at initialisation")
    b.plot(t, after, label=f"{own} after training")
    b.set(title=f"this run ({name})", xlabel="time step t", yscale="log")
    b.legend()
    half = x.shape[1] // 2
    rows = [[k, float(v[-1]), float(v[:half].mean()), float(v[:half].mean() / max(v[-1], 1e-30))]
            for k, v in [*((f"{c} (init)", p) for c, p in fresh.items()), (f"{own} (trained)", after)]]
    return ("<p>Mean over 256 test sequences of ||dL/dh_t||, the gradient of the squared error with respect to "
            "the last layer's hidden state at step t, through the whole recurrence (backpropagation through time). "
            "The first marker of the adding problem lies in the first half of the sequence: a model can only "
            "learn to use it if the gradient still reaches those steps. In the vanilla RNN the product of "
            "Jacobians diag(1 - h_k^2) W_hh shrinks it geometrically; the LSTM's additive cell state and the "
            "GRU's interpolation keep a path open once their gates learn to hold.</p>"
            + embed_figure(fig, plots, "bptt_gradients")
            + html_table(["model", "||dL/dh_T||", "mean over first half", "ratio first half / last"], rows))


@TASKS.register("forecasting")
def forecasting(*, model: nn.Module, info: dict[str, Any]) -> ForecastingTask:
    """Windowed forecasting: MSE on scaled values; RMSE/MAE/MAPE beside naive and seasonal-naive RMSE."""
    return ForecastingTask(model, info)


@TASKS.register("sequence_regression")
def sequence_regression(*, model: nn.Module, info: dict[str, Any]) -> SequenceRegressionTask:
    """One value per sequence (the adding problem): MSE loss; reports the constant baseline's MSE beside it."""
    return SequenceRegressionTask(model, info)
