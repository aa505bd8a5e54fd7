"""Recurrent sequence-to-one regressors: forecasters (multi-step direct head) and the adding problem.

A stacked recurrent encoder (``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU``, batch first) reads the window
``x_1..x_T`` (each ``x_t`` has ``in_features`` values); a linear head maps the final state to all
``horizon`` future values at once (the *direct* multi-step strategy: one output per step ahead, no
feeding predictions back in)::

    h_t = cell(x_t, h_{t-1})                     (nn/recurrent.py writes each cell's equations out)
    s   = h_T                                    (unidirectional; last layer)
    s   = [h_T^fwd ; h_1^bwd]                    (bidirectional: both directions' final states)
    y_hat_{T+1..T+H} = W s + b                   (B, horizon)

With ``relative=True`` the model is translation-invariant (for trending series such as CO2): it
reads the window minus its last value of feature 0 and predicts the change from that value,
``y_hat_{T+h} = x_T + W s + b`` with ``s`` the state after reading ``x_t - x_T``. Its zero output is
the naive forecast, so the network learns the correction to it.

Shapes: input ``(B, T, in_features)`` or ``(B, T)`` for a univariate series; output ``(B, horizon)``.
Recurrent models clip the global gradient norm at ``default_grad_clip = 1.0`` unless the user
sets ``trainer.grad_clip`` (exploding gradients, Pascanu et al. 2013).

>>> lstm_forecaster(in_features=1, horizon=3)(torch.randn(2, 24)).shape
torch.Size([2, 3])
"""
from __future__ import annotations

import torch
from torch import nn

from ..nn.activations import positive_int, probability
from ..registry import MODELS

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RecurrentForecaster(nn.Module):
    """Recurrent encoder + linear head producing ``horizon`` values (see the module docstring).

    Args:
        cell: ``"rnn"`` (tanh Elman), ``"lstm"`` or ``"gru"``.
        in_features: values per time step.
        horizon: how many future values one forward pass predicts.
        hidden_size: width of the recurrent state.
        num_layers: stacked recurrent layers.
        dropout: dropout between recurrent layers (``num_layers > 1``) and before the head.
        bidirectional: read the window both ways (an encoder of a finished window; no leakage,
            since the window holds only the past).
        relative: predict changes from the window's last value (translation invariance).
    """

    default_grad_clip = 1.0

    def __init__(self, cell: str, in_features: int = 1, horizon: int = 1, hidden_size: int = 64,
                 num_layers: int = 1, dropout: float = 0.0, bidirectional: bool = False,
                 relative: bool = False) -> None:
        super().__init__()
        self.cell, self.in_features, self.horizon, self.relative = cell, in_features, horizon, relative
        self.rnn = CELLS[cell](in_features, hidden_size, num_layers=num_layers, batch_first=True,
                               dropout=dropout if num_layers > 1 else 0.0, bidirectional=bidirectional)
        self.bidirectional = bidirectional
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(hidden_size * (2 if bidirectional else 1), horizon)

    def encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` -> ``(B, T, 1)``; in relative mode subtract the last value of feature 0."""
        if x.dim() == 2:
            x = x.unsqueeze(-1)
        if self.relative:
            x = x - x[:, -1:, :1]
        return x

    def readout(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The encoder's output sequence ``(B, T, D*H)`` -> predictions ``(B, horizon)``."""
        if self.bidirectional:
            h = out.shape[-1] // 2
            state = torch.cat([out[:, -1, :h], out[:, 0, h:]], dim=-1)  # forward h_T, backward h_1
        else:
            state = out[:, -1]
        pred = self.head(self.drop(state))
        if self.relative:
            last = x[:, -1] if x.dim() == 2 else x[:, -1, 0]
            pred = pred + last.unsqueeze(-1)
        return pred

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.encoder_input(x))  # (B, T, D*H)
        return self.readout(out, x)


def _build(cell: str, in_features: int, horizon: int, hidden_size: int, num_layers: int, dropout: float,
           bidirectional: bool, relative: bool) -> RecurrentForecaster:
    return RecurrentForecaster(cell, positive_int("in_features", in_features), positive_int("horizon", horizon),
                               positive_int("hidden_size", hidden_size), positive_int("num_layers", num_layers),
                               probability("dropout", dropout), bool(bidirectional), bool(relative))


@MODELS.register("rnn_forecaster")
def rnn_forecaster(*, in_features: int = 1, horizon: int = 1, hidden_size: int = 64, num_layers: int = 1,
                   dropout: float = 0.0, bidirectional: bool = False, relative: bool = False) -> RecurrentForecaster:
    """Vanilla (tanh) RNN encoder + linear head for ``horizon`` values: ``h_t = tanh(W x_t + U h_{t-1} + b)``.

    >>> rnn_forecaster(in_features=2)(torch.rand(4, 100, 2)).shape
    torch.Size([4, 1])
    """
    return _build("rnn", in_features, horizon, hidden_size, num_layers, dropout, bidirectional, relative)


@MODELS.register("lstm_forecaster")
def lstm_forecaster(*, in_features: int = 1, horizon: int = 1, hidden_size: int = 64, num_layers: int = 1,
                    dropout: float = 0.0, bidirectional: bool = False, relative: bool = False) -> RecurrentForecaster:
    """LSTM encoder + linear head for ``horizon`` values: ``c_t = f*c_{t-1} + i*g``, ``h_t = o*tanh(c_t)``.

    >>> lstm_forecaster(horizon=12, num_layers=2, dropout=0.1)(torch.randn(3, 36)).shape
    torch.Size([3, 12])
    """
    return _build("lstm", in_features, horizon, hidden_size, num_layers, dropout, bidirectional, relative)


@MODELS.register("gru_forecaster")
def gru_forecaster(*, in_features: int = 1, horizon: int = 1, hidden_size: int = 64, num_layers: int = 1,
                   dropout: float = 0.0, bidirectional: bool = False, relative: bool = False) -> RecurrentForecaster:
    """GRU encoder + linear head for ``horizon`` values: ``h_t = (1 - z) * n + z * h_{t-1}``.

    >>> gru_forecaster(bidirectional=True)(torch.randn(3, 20, 1)).shape
    torch.Size([3, 1])
    """
    return _build("gru", in_features, horizon, hidden_size, num_layers, dropout, bidirectional, relative)
