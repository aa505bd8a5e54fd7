"""Sequence sections: forecasts against the truth with the naive baselines (``"forecasting"``), the gradient
``||dL/dh_t||`` per time step of the adding problem (``"bptt"``), and the gates of LSTM / GRU layers.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from ..engine.seeding import seed_everything
from ..models import build_model
from ..nn.recurrent import ExplicitRecurrent, cell_type
from ..tasks.forecasting import gradient_profile, naive_forecast, seasonal_naive_forecast
from .html import NO_DATA, embed_figure, html_table
from .sections import SECTIONS

if TYPE_CHECKING:
    from ..api import Run

GATE_NAMES = {"lstm": (("i", "input gate i_t"), ("f", "forget gate f_t"), ("o", "output gate o_t")),
              "gru": (("z", "update gate z_t"), ("r", "reset gate r_t"))}


def _times_axis(labels: list[Any]) -> list[Any]:
    """Plot positions for time labels: numbers as they are, ISO strings as datetimes."""
    if all(isinstance(t, (int, float)) for t in labels):
        return labels
    import pandas as pd

    parsed = pd.to_datetime(pd.Series(labels), errors="coerce")
    return list(parsed) if parsed.notna().all() else list(range(len(labels)))


def gate_section(model: nn.Module, x: torch.Tensor, plots: Path, name: str = "gates") -> str:
    """Heat maps (unit x time) and means of the gates of the first recurrent layer for one input ``x`` (1, T[, F])."""
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


@SECTIONS.register("forecasting")
def forecasting(run: "Run", plots: Path, data_root: str | None) -> list[tuple[str, str]]:
    """Forecasts 1 and H steps ahead over the test span beside the naive baselines, their test RMSE, and the
    gates of the most recent test window."""
    task = run.task
    test = run.data(data_root).test
    if test.num_samples == 0:
        return [("Forecast vs truth (test span)", NO_DATA)]
    task.to("cpu").eval()
    with torch.no_grad():
        pred = (task.model(test.x.float()) * task.scale + task.loc).numpy()  # (N, H)
    raw = test.x.float() * task.scale + task.loc
    true = (test.y.float() * task.scale + task.loc).numpy()
    base = {"naive (last value)": naive_forecast(raw, task.horizon).numpy()}
    if task.season:
        base[f"seasonal naive (s={task.season})"] = seasonal_naive_forecast(raw, task.horizon, int(task.season)).numpy()
    labels = list(task.info.get("test_times") or range(len(true) + task.horizon - 1))
    steps = sorted({0, task.horizon - 1})
    fig, axes = plt.subplots(len(steps), 1, figsize=(9, 3.6 * len(steps)), squeeze=False, layout="constrained")
    for ax, h in zip(axes[:, 0], steps):
        t = _times_axis(labels[h:h + len(true)])
        ax.plot(t, true[:, h], "k-", lw=2, label="truth")
        ax.plot(t, pred[:, h], "-o", ms=3, label=f"{run.config.model.name}")
        for (name, b), style in zip(base.items(), ("--", ":")):
            ax.plot(t, b[:, h], style, label=name)
        ax.set(title=f"{h + 1} step{'s' if h else ''} ahead, test span", ylabel=task.info.get("series_name", "value"))
        ax.legend(fontsize="small")
    out = embed_figure(fig, plots, "forecast_test")
    rmse = lambda a: float(np.sqrt(np.mean((a - true) ** 2)))  # noqa: E731
    rows = [[run.config.model.name, rmse(pred)]] + [[k, rmse(v)] for k, v in base.items()]
    out += html_table(["forecast", "test RMSE (all steps)"], rows)
    x_one = test.x[-1:]  # the most recent test window
    return [("Forecast vs truth (test span)", out),
            ("Gate activations (last test window)", gate_section(task.model, x_one, plots))]


def bptt_section(run: "Run", trained: nn.Module, x: torch.Tensor, y: torch.Tensor, plots: Path) -> str:
    """Two panels: the three cell types at initialisation, and this run's model before and after training."""
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


@SECTIONS.register("bptt")
def bptt(run: "Run", plots: Path, data_root: str | None) -> list[tuple[str, str]]:
    """``||dL/dh_t||`` per time step for the vanilla RNN, LSTM and GRU (adding problem), and the gates of one
    test sequence for gated cells."""
    model = run.task.model
    test = run.data(data_root).test
    x, y = test.x[:256].float(), test.y[:256].float()
    sections = [("Gradient norm per time step (BPTT)", bptt_section(run, model, x, y, plots))]
    if cell_type(model.rnn) in GATE_NAMES:
        sections.append(("Gate activations (one test sequence)", gate_section(model, x[:1], plots)))
    return sections
