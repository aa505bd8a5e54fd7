"""Recurrent layers written out step by step, with their gates exposed, and the BPTT diagnostic.

``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` run fused kernels that hide the gates and the per-step hidden
states. :class:`ExplicitRecurrent` computes the same functions one time step at a time from the same
weights (``from_module(nn.LSTM(...))``), so gate activations can be plotted and ``dL/dh_t`` can be
read at every step. It matches the fused layers to float32 rounding (tested at ``atol=1e-5``),
for any number of layers and both directions; inter-layer dropout is not applied (use it in
eval mode).

Equations, per layer, for input ``x_t`` and previous state ``h_{t-1}`` (PyTorch's weight layout:
``weight_ih_l{k}`` stacks the gate blocks in the order given):

Vanilla RNN (Elman)::

    h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)                 (relu with nonlinearity="relu")

LSTM (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000), blocks [i, f, g, o]::

    i_t = sigmoid(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)      input gate
    f_t = sigmoid(W_if x_t + b_if + W_hf h_{t-1} + b_hf)      forget gate
    g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)         candidate cell
    o_t = sigmoid(W_io x_t + b_io + W_ho h_{t-1} + b_ho)      output gate
    c_t = f_t * c_{t-1} + i_t * g_t                           cell state (the additive "carousel")
    h_t = o_t * tanh(c_t)

GRU (Cho et al. 2014), blocks [r, z, n]::

    r_t = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)      reset gate
    z_t = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)      update gate
    n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn)) candidate state
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}

Shapes (batch first): input ``(B, T, F)``; output ``(B, T, D * H)`` (``D = 2`` if bidirectional);
final states ``(L * D, B, H)``; each gate ``(B, T, H)``.

>>> lstm = torch.nn.LSTM(3, 8, num_layers=2, batch_first=True)
>>> x = torch.randn(4, 10, 3)
>>> out, state, gates = ExplicitRecurrent.from_module(lstm)(x)
>>> torch.allclose(out, lstm(x)[0], atol=1e-5), sorted(gates[0])
(True, ['c', 'f', 'g', 'h', 'i', 'o'])
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DeepfoundryError

GATES = {"rnn": (), "lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n")}
"""The gate blocks of each cell type, in PyTorch's weight order."""

Weights = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]


def rnn_cell(x: torch.Tensor, h: torch.Tensor, w: Weights, nonlinearity: str = "tanh") -> torch.Tensor:
    """One Elman step: ``h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``; ``x`` (B, F), ``h`` (B, H)."""
    pre = F.linear(x, w[0], w[2]) + F.linear(h, w[1], w[3])
    return torch.tanh(pre) if nonlinearity == "tanh" else torch.relu(pre)


def lstm_cell(x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor],
              w: Weights) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """One LSTM step (module docstring); returns ``h_t, c_t`` and the gates ``i, f, g, o`` (each (B, H))."""
    h, c = state
    pre = F.linear(x, w[0], w[2]) + F.linear(h, w[1], w[3])  # (B, 4H), blocks [i, f, g, o]
    i, f, g, o = pre.chunk(4, dim=-1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c = f * c + i * g
    h = o * torch.tanh(c)
    return h, c, {"i": i, "f": f, "g": g, "o": o}


def gru_cell(x: torch.Tensor, h: torch.Tensor, w: Weights) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One GRU step (module docstring); returns ``h_t`` and the gates ``r, z, n`` (each (B, H))."""
    gi = F.linear(x, w[0], w[2])  # (B, 3H), blocks [r, z, n]
    gh = F.linear(h, w[1], w[3])
    i_r, i_z, i_n = gi.chunk(3, dim=-1)
    h_r, h_z, h_n = gh.chunk(3, dim=-1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h, {"r": r, "z": z, "n": n}


def cell_type(module: nn.Module) -> str:
    """``"rnn"``, ``"lstm"`` or ``"gru"`` for ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU``."""
    if isinstance(module, nn.LSTM):
        return "lstm"
    if isinstance(module, nn.GRU):
        return "gru"
    if isinstance(module, nn.RNN):
        return "rnn"
    raise DeepfoundryError(f"expected nn.RNN, nn.LSTM or nn.GRU; received {type(module).__name__}")


class ExplicitRecurrent(nn.Module):
    """The step-by-step twin of a fused ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` (shares its parameters).

    ``forward(x, track_states=False)`` returns ``(output, final_state, gates)``: ``output``
    ``(B, T, D*H)`` (batch first) like the fused layer's, ``final_state`` ``h_n`` (or ``(h_n, c_n)``
    for the LSTM), and ``gates``: one dict per (layer, direction), in PyTorch's order
    (layer 0 forward, layer 0 backward, layer 1 forward, ...), mapping gate names (plus ``"h"``, and
    ``"c"`` for the LSTM) to ``(B, T, H)`` tensors. With ``track_states=True`` the per-step hidden
    states of the last layer's forward direction are kept as separate graph nodes in
    ``self.states`` (list of T tensors (B, H)) with ``retain_grad()``, so after ``loss.backward()``
    ``self.states[t].grad`` is the total derivative ``dL/dh_t`` (see :func:`hidden_state_gradients`).
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.kind = cell_type(module)
        if getattr(module, "proj_size", 0):
            raise DeepfoundryError("ExplicitRecurrent does not support LSTM projections (proj_size > 0)")
        self.fused = module  # parameters stay shared with the fused layer
        self.num_layers, self.hidden_size = module.num_layers, module.hidden_size
        self.directions = 2 if module.bidirectional else 1
        self.batch_first = module.batch_first
        self.nonlinearity = getattr(module, "nonlinearity", "tanh")
        self.states: list[torch.Tensor] = []

    @classmethod
    def from_module(cls, module: nn.Module) -> "ExplicitRecurrent":
        return cls(module)

    def _weights(self, layer: int, direction: int) -> Weights:
        sfx = f"_l{layer}" + ("_reverse" if direction else "")
        m = self.fused
        return (getattr(m, "weight_ih" + sfx), getattr(m, "weight_hh" + sfx),
                getattr(m, "bias_ih" + sfx, None), getattr(m, "bias_hh" + sfx, None))

    def _run_direction(self, x: torch.Tensor, w: Weights, reverse: bool, track: bool
                       ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor | None, dict[str, list[torch.Tensor]]]:
        """One direction of one layer over ``x`` (B, T, F); returns per-step h (in time order), h_T, c_T, gates."""
        B, T, _ = x.shape
        h = x.new_zeros(B, self.hidden_size)
        c = x.new_zeros(B, self.hidden_size) if self.kind == "lstm" else None
        steps = range(T - 1, -1, -1) if reverse else range(T)
        hs: list[torch.Tensor] = [x] * T  # placeholders, filled in time order
        log: dict[str, list[torch.Tensor]] = {g: [x] * T for g in (*GATES[self.kind], "h")}
        if self.kind == "lstm":
            log["c"] = [x] * T
        for t in steps:
            if self.kind == "lstm":
                h, c, gates = lstm_cell(x[:, t], (h, c), w)
                gates["c"] = c
            elif self.kind == "gru":
                h, gates = gru_cell(x[:, t], h, w)
            else:
                h, gates = rnn_cell(x[:, t], h, w, self.nonlinearity), {}
            if track and h.requires_grad:
                h.retain_grad()
            hs[t] = h
            for name, value in gates.items():
                log[name][t] = value
            log["h"][t] = h
        return hs, h, c, log

    def forward(self, x: torch.Tensor, track_states: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | tuple[torch.Tensor, torch.Tensor], list[dict[str, torch.Tensor]]]:
        if not self.batch_first:
            x = x.transpose(0, 1)
        layer_in = x  # (B, T, F)
        h_n, c_n, gates_out = [], [], []
        self.states = []
        for layer in range(self.num_layers):
            outs = []
            for d in range(self.directions):
                track = track_states and layer == self.num_layers - 1 and d == 0
                hs, h, c, log = self._run_direction(layer_in, self._weights(layer, d), bool(d), track)
                if track:
                    self.states = hs
                outs.append(torch.stack(hs, dim=1))  # (B, T, H)
                h_n.append(h)
                if c is not None:
                    c_n.append(c)
                gates_out.append({k: torch.stack(v, dim=1) for k, v in log.items()})
            layer_in = torch.cat(outs, dim=-1) if len(outs) > 1 else outs[0]  # (B, T, D*H)
        output = layer_in if self.batch_first else layer_in.transpose(0, 1)
        h_n_t = torch.stack(h_n)  # (L*D, B, H)
        state = (h_n_t, torch.stack(c_n)) if self.kind == "lstm" else h_n_t
        return output, state, gates_out


def hidden_state_gradients(rnn: nn.Module, readout: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                           y: torch.Tensor, loss: Callable[..., torch.Tensor] | None = None) -> np.ndarray:
    """Mean over the batch of ``||dL/dh_t||_2`` for every time step ``t`` (backpropagation through time).

    ``rnn`` is the model's fused ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` (batch first); ``readout``
    maps its output sequence ``(B, T, D*H)`` to predictions; ``loss(pred, y)`` defaults to the
    squared error summed over outputs. The loss is summed over the batch, so each sample's
    ``dL/dh_t`` is its own loss's gradient. ``h_t`` is the last layer's forward-direction state.

    Why it matters (vanishing gradients): by the chain rule through the recurrence,
    ``dL/dh_t = dL/dh_T * prod_{k=t+1..T} dh_k/dh_{k-1}``. For the vanilla RNN each factor is
    ``diag(1 - h_k^2) W_hh``; unless its largest singular value stays near 1 the product shrinks
    (or grows) geometrically in ``T - t``, so a loss at step T barely reaches inputs 50-100 steps
    back, and the adding problem's early marker cannot be learned. The LSTM's cell state adds
    instead of multiplies (``dc_t/dc_{t-1} = diag(f_t)``, near 1 when the forget gate is open) and
    the GRU interpolates (``h_t = (1 - z_t) n_t + z_t h_{t-1}``). At initialisation (gates near
    0.5) all three decay alike; trained gated cells learn to hold (``f_t``, ``z_t`` near 1) and the
    curve becomes flat back to t = 0, which the vanilla RNN cannot do.

    Returns a float64 array of shape ``(T,)``.
    """
    explicit = ExplicitRecurrent(rnn)
    was_training = rnn.training
    rnn.eval()
    try:
        with torch.enable_grad():
            out, _, _ = explicit(x, track_states=True)
            pred = readout(out)
            if loss is None:
                total = ((pred.reshape(y.shape) - y) ** 2).sum()
            else:
                total = loss(pred.reshape(y.shape), y)
            grads = torch.autograd.grad(total, explicit.states, allow_unused=True)
    finally:
        rnn.train(was_training)
    norms = [torch.zeros(len(x)) if g is None else g.detach().norm(dim=-1) for g in grads]  # T x (B,)
    return torch.stack(norms, dim=1).mean(dim=0).double().numpy()
