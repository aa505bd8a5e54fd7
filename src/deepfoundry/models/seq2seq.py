"""Recurrent encoder-decoders for translation (Sutskever et al. 2014; Cho et al. 2014; Bahdanau et al. 2015;
Luong et al. 2015), following the translation protocol (``forward``, ``encode``, ``decode_step``,
``reorder_state``) that :mod:`deepfoundry.tasks.translation` decodes with.

Encoder: embedding -> GRU/LSTM (``bidirectional``: each direction has ``hidden_size / 2`` units, so the
annotations ``k_s = [h_s^fwd; h_s^bwd]`` have ``hidden_size`` dimensions) over the packed source.
The decoder's initial state is ``s_0 = tanh(W_b [h_m^fwd; h_1^bwd])`` per layer (a *bridge*).

Decoder, for target embedding ``e_t = E y_{t-1}`` and ``attention``:

- ``none`` (the fixed context vector of Sutskever/Cho): ``c = k_m`` (the encoder's final top-layer
  state), the same for every step; ``s_t = RNN([e_t; c], s_{t-1})``. Everything the decoder knows about
  the source passes through one vector of ``hidden_size`` numbers, which is the bottleneck on long sentences.
- ``bahdanau`` (additive): ``c_t = sum_s a_ts k_s``, ``a_t = softmax_s(v^T tanh(W_q s_{t-1} + W_k k_s))``,
  computed from the *previous* state and fed into the recurrence: ``s_t = RNN([e_t; c_t], s_{t-1})``.
- ``luong_dot`` / ``luong_general`` (multiplicative): ``s_t = RNN(e_t, s_{t-1})`` first, then
  ``a_t = softmax_s(s_t^T k_s)`` or ``softmax_s(s_t^T W k_s)`` and ``c_t = sum_s a_ts k_s`` (no input
  feeding, so teacher-forced training runs the recurrence over all target positions in one fused call).

Readout for every variant: ``o_t = tanh(W_o [s_t; c_t; e_t])`` (``embedding_dim`` units, dropout) and
``p(y_t | y_<t, x) = softmax(W_out o_t + b)``; ``tie_embeddings`` sets ``W_out = E`` (Press & Wolf 2017).
The attention layers are :class:`~deepfoundry.nn.attention.AdditiveAttention` and
:class:`~deepfoundry.nn.attention.MultiplicativeAttention`.

>>> m = gru_seq2seq(src_vocab_size=20, tgt_vocab_size=20, hidden_size=16, embedding_dim=8)
>>> src = torch.tensor([[5, 6, 3], [7, 3, 0]]); tgt = torch.tensor([[2, 9, 9], [2, 8, 0]])
>>> m(src, src != 0, tgt).shape
torch.Size([2, 3, 20])
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..errors import DeepfoundryError
from ..nn.attention import AdditiveAttention, MultiplicativeAttention, masked_softmax
from ..registry import MODELS

CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}
ATTENTIONS = ("none", "bahdanau", "luong_dot", "luong_general")
State = dict[str, Any]  # h (layers, B, H) [or (h, c)], keys (B, S, H), mask (B, S), projected keys / context


class Seq2Seq(nn.Module):
    """GRU/LSTM encoder-decoder with no attention (fixed context vector) or Bahdanau / Luong attention."""

    default_grad_clip = 1.0

    def __init__(self, cell: str, src_vocab_size: int, tgt_vocab_size: int, pad_id: int = 0, bos_id: int = 2,
                 eos_id: int = 3, max_src_len: int = 128, max_tgt_len: int = 128, embedding_dim: int = 256,
                 hidden_size: int = 512, num_layers: int = 1, bidirectional: bool = True,
                 attention: str = "bahdanau", attention_dim: int = 256, dropout: float = 0.2,
                 tie_embeddings: bool = False) -> None:
        super().__init__()
        if cell not in CELLS:
            raise DeepfoundryError(f"cell {cell!r} is not one of {', '.join(CELLS)}")
        if attention not in ATTENTIONS:
            raise DeepfoundryError(f"attention {attention!r} is not one of {', '.join(ATTENTIONS)}")
        if bidirectional and hidden_size % 2:
            raise DeepfoundryError(f"a bidirectional encoder splits hidden_size in two; received odd {hidden_size}")
        if not 0.0 <= dropout < 1.0:
            raise DeepfoundryError(f"dropout must be in [0, 1), received {dropout}")
        self.cell, self.attention, self.num_layers, self.hidden_size = cell, attention, num_layers, hidden_size
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.max_src_len, self.max_tgt_len = max_src_len, max_tgt_len
        self.uses_attention = attention != "none"
        self.directions = 2 if bidirectional else 1
        rnn = CELLS[cell]
        inner = dropout if num_layers > 1 else 0.0
        self.src_embedding = nn.Embedding(src_vocab_size, embedding_dim, padding_idx=pad_id)
        self.encoder = rnn(embedding_dim, hidden_size // self.directions, num_layers, batch_first=True,
                           dropout=inner, bidirectional=bidirectional)
        self.bridge = nn.Linear(hidden_size, hidden_size)
        self.tgt_embedding = nn.Embedding(tgt_vocab_size, embedding_dim, padding_idx=pad_id)
        feeds_context = attention in ("none", "bahdanau")  # c_t enters the recurrence
        self.decoder = rnn(embedding_dim + (hidden_size if feeds_context else 0), hidden_size, num_layers,
                           batch_first=True, dropout=inner)
        if attention == "bahdanau":
            self.attn: nn.Module | None = AdditiveAttention(hidden_size, hidden_size, attention_dim)
        elif attention.startswith("luong"):
            self.attn = MultiplicativeAttention(hidden_size, hidden_size, mode=attention.split("_")[1])
        else:
            self.attn = None
        self.readout = nn.Linear(2 * hidden_size + embedding_dim, embedding_dim)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(embedding_dim, tgt_vocab_size)
        if tie_embeddings:
            self.out.weight = self.tgt_embedding.weight  # W_out = E
            nn.init.normal_(self.tgt_embedding.weight, std=embedding_dim ** -0.5)  # keep the first logits O(1)
            with torch.no_grad():
                self.tgt_embedding.weight[pad_id].zero_()

    # ------------------------------------------------------------------ encoder
    def encode(self, src: torch.Tensor, src_mask: torch.Tensor) -> State:
        """Annotations ``k_s`` (B, S, H) and the bridged initial decoder state."""
        lengths = src_mask.sum(1).clamp_min(1).cpu()
        emb = self.dropout(self.src_embedding(src))  # (B, S, E)
        packed = pack_padded_sequence(emb, lengths, batch_first=True, enforce_sorted=False)
        out, final = self.encoder(packed)
        keys, _ = pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])  # (B, S, H)

        def bridge(h: torch.Tensor) -> torch.Tensor:  # (layers * dirs, B, H / dirs) -> (layers, B, H)
            h = h.view(self.num_layers, self.directions, h.shape[1], -1).transpose(1, 2)
            return torch.tanh(self.bridge(h.reshape(self.num_layers, h.shape[1], -1)))

        h0: Any = (bridge(final[0]), bridge(final[1])) if self.cell == "lstm" else bridge(final)
        state: State = {"h": h0, "keys": keys, "mask": src_mask}
        if self.attention == "none":
            last = final[0] if self.cell == "lstm" else final  # encoder's own final state, top layer
            last = last.view(self.num_layers, self.directions, last.shape[1], -1)[-1]  # (dirs, B, H / dirs)
            state["context"] = torch.cat(list(last), dim=-1)  # (B, H): the fixed context vector c
        elif self.attention == "bahdanau":
            state["projected"] = self.attn.project_keys(keys)  # W_k k_s once per sentence (B, S, A)
        return state

    # ------------------------------------------------------------------ decoder
    def _top(self, h: Any) -> torch.Tensor:
        return (h[0] if self.cell == "lstm" else h)[-1]  # (B, H)

    def _attend(self, query: torch.Tensor, state: State) -> tuple[torch.Tensor, torch.Tensor]:
        if self.attention == "bahdanau":
            return self.attn(query, state["keys"], state["mask"], projected_keys=state["projected"])
        return self.attn(query, state["keys"], state["mask"])

    def _logits(self, s: torch.Tensor, c: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        o = self.dropout(torch.tanh(self.readout(torch.cat([s, c, e], dim=-1))))
        return self.out(o)

    def decode_step(self, prev: torch.Tensor, state: State, step: int
                    ) -> tuple[torch.Tensor, State, torch.Tensor | None]:
        """One target position: ``prev`` (B,) -> logits (B, V), new state, attention weights (B, S) or None."""
        e = self.dropout(self.tgt_embedding(prev))  # (B, E)
        weights = None
        if self.attention == "none":
            c = state["context"]
            s, h = self.decoder(torch.cat([e, c], -1).unsqueeze(1), state["h"])
        elif self.attention == "bahdanau":
            c, weights = self._attend(self._top(state["h"]), state)  # from s_{t-1}
            s, h = self.decoder(torch.cat([e, c], -1).unsqueeze(1), state["h"])
        else:
            s, h = self.decoder(e.unsqueeze(1), state["h"])
            c, weights = self._attend(s[:, 0], state)  # from s_t
        new = dict(state)
        new["h"] = h
        return self._logits(s[:, 0], c, e), new, weights

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor, tgt_in: torch.Tensor,
                teacher_forcing: float = 1.0) -> torch.Tensor:
        """Logits (B, T, V) for ``tgt_in = <bos> y_1 .. y_{T-1}``; with ``teacher_forcing < 1`` each row
        feeds its own previous argmax instead of the true token with probability ``1 - teacher_forcing``."""
        state = self.encode(src, src_mask)
        if teacher_forcing >= 1.0 and self.attention != "bahdanau":
            return self._forward_parallel(state, tgt_in)
        logits, prev = [], tgt_in[:, 0]
        for t in range(tgt_in.shape[1]):
            z, state, _ = self.decode_step(prev, state, t)
            logits.append(z)
            if t + 1 < tgt_in.shape[1]:
                prev = tgt_in[:, t + 1]
                if teacher_forcing < 1.0:
                    own = torch.rand(prev.shape, device=prev.device) >= teacher_forcing
                    prev = torch.where(own, z.detach().argmax(-1), prev)
        return torch.stack(logits, dim=1)

    def _forward_parallel(self, state: State, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher forcing without a step loop (no attention, or Luong attention after the recurrence)."""
        e = self.dropout(self.tgt_embedding(tgt_in))  # (B, T, E)
        if self.attention == "none":
            c = state["context"].unsqueeze(1).expand(-1, e.shape[1], -1)  # (B, T, H)
            s, _ = self.decoder(torch.cat([e, c], -1), state["h"])
        else:
            s, _ = self.decoder(e, state["h"])  # (B, T, H)
            q = self.attn.w(s) if self.attn.w is not None else s  # general: (W^T s_t)
            scores = q @ state["keys"].transpose(1, 2)  # (B, T, S)
            weights = masked_softmax(scores, state["mask"].unsqueeze(1))
            c = weights @ state["keys"]  # (B, T, H)
        return self._logits(s, c, e)

    def reorder_state(self, state: State, index: torch.Tensor) -> State:
        """The state's batch rows picked by ``index`` (beam search)."""
        out = {k: v.index_select(0, index) for k, v in state.items() if k != "h"}
        h = state["h"]
        out["h"] = tuple(x.index_select(1, index) for x in h) if self.cell == "lstm" else h.index_select(1, index)
        return out


_DOC_ARGS = """``embedding_dim`` E, ``hidden_size`` H (decoder state; encoder annotations), ``num_layers``,
    ``bidirectional`` encoder, ``attention`` none|bahdanau|luong_dot|luong_general, ``attention_dim`` (additive
    only), ``dropout``, ``tie_embeddings`` (output layer = target embedding). The vocabulary sizes, special ids
    and maximum lengths come from the translation data set (``info["model_context"]``)."""


@MODELS.register("gru_seq2seq")
def gru_seq2seq(*, src_vocab_size: int, tgt_vocab_size: int, pad_id: int = 0, bos_id: int = 2, eos_id: int = 3,
                max_src_len: int = 128, max_tgt_len: int = 128, embedding_dim: int = 256, hidden_size: int = 512,
                num_layers: int = 1, bidirectional: bool = True, attention: str = "bahdanau",
                attention_dim: int = 256, dropout: float = 0.2, tie_embeddings: bool = False) -> Seq2Seq:
    """GRU encoder-decoder for translation; attention none (fixed context) | bahdanau | luong_dot | luong_general."""
    return Seq2Seq("gru", src_vocab_size, tgt_vocab_size, pad_id, bos_id, eos_id, max_src_len, max_tgt_len,
                   embedding_dim, hidden_size, num_layers, bidirectional, attention, attention_dim, dropout,
                   tie_embeddings)


@MODELS.register("lstm_seq2seq")
def lstm_seq2seq(*, src_vocab_size: int, tgt_vocab_size: int, pad_id: int = 0, bos_id: int = 2, eos_id: int = 3,
                 max_src_len: int = 128, max_tgt_len: int = 128, embedding_dim: int = 256, hidden_size: int = 512,
                 num_layers: int = 1, bidirectional: bool = True, attention: str = "bahdanau",
                 attention_dim: int = 256, dropout: float = 0.2, tie_embeddings: bool = False) -> Seq2Seq:
    """LSTM encoder-decoder for translation; attention none (fixed context) | bahdanau | luong_dot | luong_general."""
    return Seq2Seq("lstm", src_vocab_size, tgt_vocab_size, pad_id, bos_id, eos_id, max_src_len, max_tgt_len,
                   embedding_dim, hidden_size, num_layers, bidirectional, attention, attention_dim, dropout,
                   tie_embeddings)


gru_seq2seq.__doc__ += "\n\n    " + _DOC_ARGS
lstm_seq2seq.__doc__ += "\n\n    " + _DOC_ARGS
