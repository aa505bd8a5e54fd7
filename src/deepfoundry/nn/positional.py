"""Positional encodings: added to token embeddings (sinusoidal, Vaswani et al. 2017; learned) or rotating
each attention head's queries and keys (rotary, Su et al. 2021).

The additive ones take ``x`` ``(B, T, D)`` and an ``offset`` (the position of ``x[:, 0]``; with a KV cache it is the
number of tokens already decoded) and return ``x + P[offset : offset + T]``. A sequence that runs past
``max_len`` raises a one-line :class:`~deepfoundry.errors.DeepfoundryError`.

>>> SinusoidalPositionalEncoding(16, max_len=32)(torch.zeros(2, 5, 16), offset=3).shape
torch.Size([2, 5, 16])
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import DeepfoundryError


def _check_length(t: int, offset: int, max_len: int) -> None:
    if offset < 0 or offset + t > max_len:
        raise DeepfoundryError(f"sequence of {t} tokens at offset {offset} runs past the model's maximum length "
                               f"{max_len}; shorten the input or train with a larger max_len")


class SinusoidalPositionalEncoding(nn.Module):
    """Fixed encodings ``P[p, 2i] = sin(p / 10000^(2i/D))``, ``P[p, 2i+1] = cos(p / 10000^(2i/D))``.

    Relative offsets are linear maps of these (``P[p+k]`` is a rotation of ``P[p]``), and nothing is learned.
    """

    def __init__(self, d_model: int, max_len: int = 4096) -> None:
        super().__init__()
        self.max_len = max_len
        position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)  # (L, 1)
        inv_freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(position * inv_freq)
        pe[:, 1::2] = torch.cos(position * inv_freq[: d_model // 2])
        self.register_buffer("pe", pe, persistent=False)  # (L, D): rebuilt, never saved

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        _check_length(x.shape[1], offset, self.max_len)
        return x + self.pe[offset: offset + x.shape[1]].to(x.dtype)


class LearnedPositionalEncoding(nn.Module):
    """A trained table ``P`` ``(max_len, D)`` (GPT-style), initialised ``N(0, 0.02^2)``: ``x + P[offset + t]``."""

    def __init__(self, d_model: int, max_len: int = 1024) -> None:
        super().__init__()
        self.max_len = max_len
        self.weight = nn.Parameter(torch.randn(max_len, d_model) * 0.02)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        _check_length(x.shape[1], offset, self.max_len)
        return x + self.weight[offset: offset + x.shape[1]]


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE, Su et al. 2021) of one attention head of size ``d``.

    The pair ``(x_i, x_{i + d/2})`` of a query or key at position ``p`` is rotated by the angle
    ``p * theta_i``, ``theta_i = base^(-2i/d)``:
    ``(x_i cos p theta_i - x_{i+d/2} sin p theta_i,  x_i sin p theta_i + x_{i+d/2} cos p theta_i)``.
    A rotation is orthogonal, so ``<R_m q, R_n k> = <q, R_{n-m} k>``: attention scores depend on the
    queries' and keys' *relative* offset only, and nothing is learned (the half-split pairing of GPT-NeoX
    and LLaMA's reference code). ``forward(x (..., T, d), offset)`` rotates positions ``offset .. offset+T-1``.
    """

    def __init__(self, head_dim: int, max_len: int = 1024, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise DeepfoundryError(f"rotary positions need an even head size (d_model / num_heads); "
                                   f"received {head_dim}")
        self.max_len = max_len
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # (d/2,)
        angles = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)  # (L, d/2)
        self.register_buffer("cos", angles.cos(), persistent=False)  # rebuilt, never saved
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        t = x.shape[-2]
        _check_length(t, offset, self.max_len)
        cos, sin = self.cos[offset: offset + t].to(x.dtype), self.sin[offset: offset + t].to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class RotaryPositions(nn.Module):
    """The embedding-side half of ``positional: rotary``: positions enter through the attention layers'
    :class:`RotaryEmbedding`, so the token embeddings pass unchanged (the length is still checked)."""

    def __init__(self, d_model: int, max_len: int = 1024) -> None:
        super().__init__()
        self.max_len = max_len

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        _check_length(x.shape[1], offset, self.max_len)
        return x


POSITIONAL = {"sinusoidal": SinusoidalPositionalEncoding, "learned": LearnedPositionalEncoding,
              "rotary": RotaryPositions}


def make_positional(kind: str, d_model: int, max_len: int) -> nn.Module:
    """A positional encoding by name: ``sinusoidal``, ``learned`` or ``rotary`` (the embeddings pass unchanged;
    the caller gives its self-attention layers a :class:`RotaryEmbedding`)."""
    if kind not in POSITIONAL:
        raise DeepfoundryError(f"positional encoding {kind!r} is not one of {', '.join(POSITIONAL)}")
    return POSITIONAL[kind](d_model, max_len)
