"""Recurrent networks over token ids: sequence classifiers and language models (``torch.nn`` RNN/LSTM/GRU).

The recurrences (per layer, input ``x_t``, previous hidden state ``h_{t-1}``; ``sigma`` the logistic
function, ``*`` the elementwise product):

- Elman RNN: ``h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``
- LSTM: ``i_t = sigma(W_ii x_t + W_hi h_{t-1} + b_i)``, ``f_t = sigma(W_if x_t + W_hf h_{t-1} + b_f)``,
  ``g_t = tanh(W_ig x_t + W_hg h_{t-1} + b_g)``, ``o_t = sigma(W_io x_t + W_ho h_{t-1} + b_o)``,
  ``c_t = f_t * c_{t-1} + i_t * g_t``, ``h_t = o_t * tanh(c_t)``. The additive cell path is what lets
  gradients flow over long spans (``dc_t/dc_{t-1} = f_t``).
- GRU: ``r_t = sigma(W_ir x_t + W_hr h_{t-1} + b_r)``, ``z_t = sigma(W_iz x_t + W_hz h_{t-1} + b_z)``,
  ``n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))``, ``h_t = (1 - z_t) * n_t + z_t * h_{t-1}``.

Classifiers (``rnn``, ``lstm``, ``gru``) embed tokens, run the recurrence over the *packed* batch
(``pack_padded_sequence``: padding never enters the state), and classify the final hidden state of the
last layer (both directions concatenated when bidirectional): ``logits = W [h_T^fwd; h_1^bwd] + b``.
Inputs are ``(tokens (B, L), lengths (B,))`` as :class:`~deepfoundry.data.text.PaddedTextLoader` yields,
or a plain ``(B, L)`` tensor of unpadded sequences.

Packed sequences do not export (ONNX, ``torch.export``), so an exported classifier (``prepare_export()``)
runs the recurrence over the padded batch and reads each row's state where its sequence ends: the
forward direction's output at ``t = len - 1`` (padding comes after it, so it never entered that state);
the backward direction's output at ``t = L - len`` of the same batch shifted right so that padding comes
first (the backward pass then ends on the real tokens). Training and ``predict`` keep the packed path.

Language models (``rnn_lm``, ``lstm_lm``, ``gru_lm``) predict the next token at every position:
``p(x_{t+1} | x_{<=t}) = softmax(W_out h_t)``; with weight tying (Press & Wolf 2017) the output matrix is
the embedding matrix, ``W_out = E`` (a linear projection maps ``h_t`` to the embedding size when they differ).
All models clip gradients to norm 1.0 by default (``default_grad_clip``): recurrent gradients can explode.

>>> m = lstm(vocab_size=50, num_classes=3, hidden_size=16, embedding_dim=8)
>>> m((torch.tensor([[5, 6, 7], [8, 9, 0]]), torch.tensor([3, 2]))).shape
torch.Size([2, 3])
>>> lstm_lm(vocab_size=50, hidden_size=16, embedding_dim=8)(torch.tensor([[5, 6, 7]]))[0].shape
torch.Size([1, 3, 50])
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from ..errors import DeepfoundryError
from ..registry import MODELS

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
State = Any  # h (layers*dirs, B, H), or (h, c) for the LSTM


def load_embedding_matrix(path: str | Path) -> torch.Tensor:
    """A pretrained embedding matrix ``(vocab_size, embedding_dim)`` from ``.npy`` or ``.safetensors``
    (the tensor named ``embeddings``, or the only tensor). Rows follow the run's vocabulary order."""
    path = Path(path)
    if not path.is_file():
        raise DeepfoundryError(f"embedding file '{path}' does not exist")
    if path.suffix == ".npy":
        try:
            matrix = torch.from_numpy(np.load(path, allow_pickle=False)).float()
        except ValueError as exc:
            raise DeepfoundryError(f"'{path}' is not a readable .npy array: {exc}") from None
    elif path.suffix == ".safetensors":
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        if "embeddings" not in tensors and len(tensors) != 1:
            raise DeepfoundryError(f"'{path}' holds {', '.join(tensors)}; name the matrix 'embeddings'")
        matrix = tensors.get("embeddings", next(iter(tensors.values()))).float()
    else:
        raise DeepfoundryError(f"embedding file '{path}' must be .npy or .safetensors")
    if matrix.dim() != 2:
        raise DeepfoundryError(f"embedding matrix in '{path}' has shape {tuple(matrix.shape)}; expected (vocab_size, dim)")
    return matrix


def _embedding(vocab_size: int, embedding_dim: int, embeddings: str | None, freeze: bool) -> nn.Embedding:
    if embeddings is None:
        return nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
    matrix = load_embedding_matrix(embeddings)
    if matrix.shape[0] != vocab_size:
        raise DeepfoundryError(f"embedding matrix '{embeddings}' has {matrix.shape[0]} rows but the vocabulary has "
                               f"{vocab_size} tokens (rows must follow the run's vocabulary)")
    return nn.Embedding.from_pretrained(matrix, freeze=freeze, padding_idx=0)


def _check(cell: str, hidden_size: int, num_layers: int, dropout: float) -> None:
    if cell not in CELLS:
        raise DeepfoundryError(f"cell {cell!r} is not one of {', '.join(CELLS)}")
    if hidden_size < 1 or num_layers < 1:
        raise DeepfoundryError(f"hidden_size and num_layers must be >= 1, received {hidden_size} and {num_layers}")
    if not 0.0 <= dropout < 1.0:
        raise DeepfoundryError(f"dropout must be in [0, 1), received {dropout}")


class RecurrentClassifier(nn.Module):
    """Embedding -> RNN/LSTM/GRU over the packed batch -> linear head on the final hidden state."""

    default_grad_clip = 1.0

    def __init__(self, cell: str, vocab_size: int, num_classes: int, embedding_dim: int = 128, hidden_size: int = 128,
                 num_layers: int = 1, bidirectional: bool = False, dropout: float = 0.0,
                 embeddings: str | None = None, freeze_embeddings: bool = False, max_length: int = 256) -> None:
        super().__init__()
        _check(cell, hidden_size, num_layers, dropout)
        self.cell, self.max_length = cell, max_length
        self.embedding = _embedding(vocab_size, embedding_dim, embeddings, freeze_embeddings)
        self.rnn = CELLS[cell](self.embedding.embedding_dim, hidden_size, num_layers, batch_first=True,
                               dropout=dropout if num_layers > 1 else 0.0, bidirectional=bidirectional)
        self.directions = 2 if bidirectional else 1
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size * self.directions, num_classes)
        self.padded = False  # export mode: no packing (see the module docstring)

    def prepare_export(self) -> None:
        """Switch to the padded path that ONNX and ``torch.export`` can trace (same outputs as packing)."""
        if self.directions == 2 and self.rnn.num_layers > 1:
            raise DeepfoundryError("a bidirectional recurrent classifier with several layers cannot be exported: "
                                   "its inner layers need packed sequences (export one layer, or a unidirectional model)")
        self.padded = True

    def features(self, x: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Final hidden state of the last layer, ``(B, directions * hidden_size)``."""
        tokens, lengths = x if isinstance(x, (tuple, list)) else (x, None)
        emb = self.dropout(self.embedding(tokens))  # (B, L, E)
        if lengths is not None and self.padded:
            return self._padded_features(emb, lengths)
        if lengths is not None:
            emb = pack_padded_sequence(emb, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, state = self.rnn(emb)
        h = state[0] if self.cell == "lstm" else state  # (layers * dirs, B, H)
        return torch.cat(list(h[-self.directions:]), dim=1)  # (B, dirs * H)

    def _padded_features(self, emb: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The packed path's final states from the padded batch ``emb`` (B, L, E), row ``i`` ending at ``lengths[i]``."""
        B, L, _ = emb.shape
        last = (lengths.to(emb.device).long() - 1).clamp_min(0)  # (B,) index of each row's last token
        out, _ = self.rnn(emb)  # (B, L, dirs * H)
        H = out.shape[-1] // self.directions
        fwd = out[:, :, :H].gather(1, last.view(B, 1, 1).expand(B, 1, H)).squeeze(1)  # (B, H): h at t = len - 1
        if self.directions == 1:
            return fwd
        # backward direction: shift each row right by L - len so it ends at L - 1; its output at L - len is h_1^bwd
        steps = torch.arange(L, device=emb.device).unsqueeze(0)  # (1, L)
        shift = (L - 1 - last).unsqueeze(1)  # (B, 1) = L - len
        source = (steps - shift).clamp_min(0)  # (B, L): where each shifted position reads from
        shifted = emb.gather(1, source.unsqueeze(-1).expand_as(emb)) * (steps >= shift).unsqueeze(-1).to(emb.dtype)
        back, _ = self.rnn(shifted)
        bwd = back[:, :, H:].gather(1, shift.view(B, 1, 1).expand(B, 1, H)).squeeze(1)  # (B, H)
        return torch.cat([fwd, bwd], dim=1)

    def forward(self, x: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


class RecurrentLM(nn.Module):
    """Embedding -> RNN/LSTM/GRU -> (projection) -> tied output layer; ``forward(x, state) -> (logits, state)``."""

    default_grad_clip = 1.0

    def __init__(self, cell: str, vocab_size: int, embedding_dim: int = 128, hidden_size: int = 512,
                 num_layers: int = 2, dropout: float = 0.2, tie_weights: bool = True,
                 embeddings: str | None = None, freeze_embeddings: bool = False, max_length: int = 4096) -> None:
        super().__init__()
        _check(cell, hidden_size, num_layers, dropout)
        self.cell, self.vocab_size, self.max_length = cell, vocab_size, max_length
        self.embedding = _embedding(vocab_size, embedding_dim, embeddings, freeze_embeddings)
        emb = self.embedding.embedding_dim
        self.rnn = CELLS[cell](emb, hidden_size, num_layers, batch_first=True,
                               dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        out_dim = emb if tie_weights else hidden_size
        self.proj = nn.Linear(hidden_size, emb) if tie_weights and hidden_size != emb else nn.Identity()
        self.decoder = nn.Linear(out_dim, vocab_size)
        if tie_weights:
            self.decoder.weight = self.embedding.weight  # W_out = E

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """``x`` (B, T) token ids -> logits (B, T, V) and the final state (to continue the sequence)."""
        h, state = self.rnn(self.dropout(self.embedding(x)), state)  # (B, T, H)
        return self.decoder(self.proj(self.dropout(h))), state


@MODELS.register("rnn")
def rnn(*, vocab_size: int, num_classes: int, embedding_dim: int = 128, hidden_size: int = 128, num_layers: int = 1,
        bidirectional: bool = False, dropout: float = 0.0, embeddings: str | None = None,
        freeze_embeddings: bool = False, max_length: int = 256) -> RecurrentClassifier:
    """Elman RNN text classifier: h_t = tanh(W_ih x_t + W_hh h_{t-1} + b), logits from the last h."""
    return RecurrentClassifier("rnn", vocab_size, num_classes, embedding_dim, hidden_size, num_layers, bidirectional,
                               dropout, embeddings, freeze_embeddings, max_length)


@MODELS.register("lstm")
def lstm(*, vocab_size: int, num_classes: int, embedding_dim: int = 128, hidden_size: int = 128, num_layers: int = 1,
         bidirectional: bool = False, dropout: float = 0.0, embeddings: str | None = None,
         freeze_embeddings: bool = False, max_length: int = 256) -> RecurrentClassifier:
    """LSTM text classifier (gated cell state c_t = f*c_{t-1} + i*g), logits from the last hidden state."""
    return RecurrentClassifier("lstm", vocab_size, num_classes, embedding_dim, hidden_size, num_layers, bidirectional,
                               dropout, embeddings, freeze_embeddings, max_length)


@MODELS.register("gru")
def gru(*, vocab_size: int, num_classes: int, embedding_dim: int = 128, hidden_size: int = 128, num_layers: int = 1,
        bidirectional: bool = False, dropout: float = 0.0, embeddings: str | None = None,
        freeze_embeddings: bool = False, max_length: int = 256) -> RecurrentClassifier:
    """GRU text classifier (update/reset gates, h_t = (1-z)*n + z*h_{t-1}), logits from the last hidden state."""
    return RecurrentClassifier("gru", vocab_size, num_classes, embedding_dim, hidden_size, num_layers, bidirectional,
                               dropout, embeddings, freeze_embeddings, max_length)


@MODELS.register("rnn_lm")
def rnn_lm(*, vocab_size: int, embedding_dim: int = 128, hidden_size: int = 512, num_layers: int = 2,
           dropout: float = 0.2, tie_weights: bool = True, embeddings: str | None = None,
           freeze_embeddings: bool = False, max_length: int = 4096) -> RecurrentLM:
    """Elman RNN language model: next-token logits W_out h_t, output weights tied to the embedding."""
    return RecurrentLM("rnn", vocab_size, embedding_dim, hidden_size, num_layers, dropout, tie_weights, embeddings,
                       freeze_embeddings, max_length)


@MODELS.register("lstm_lm")
def lstm_lm(*, vocab_size: int, embedding_dim: int = 128, hidden_size: int = 512, num_layers: int = 2,
            dropout: float = 0.2, tie_weights: bool = True, embeddings: str | None = None,
            freeze_embeddings: bool = False, max_length: int = 4096) -> RecurrentLM:
    """LSTM language model: next-token logits W_out h_t, output weights tied to the embedding."""
    return RecurrentLM("lstm", vocab_size, embedding_dim, hidden_size, num_layers, dropout, tie_weights, embeddings,
                       freeze_embeddings, max_length)


@MODELS.register("gru_lm")
def gru_lm(*, vocab_size: int, embedding_dim: int = 128, hidden_size: int = 512, num_layers: int = 2,
           dropout: float = 0.2, tie_weights: bool = True, embeddings: str | None = None,
           freeze_embeddings: bool = False, max_length: int = 4096) -> RecurrentLM:
    """GRU language model: next-token logits W_out h_t, output weights tied to the embedding."""
    return RecurrentLM("gru", vocab_size, embedding_dim, hidden_size, num_layers, dropout, tie_weights, embeddings,
                       freeze_embeddings, max_length)
