"""Attention layers: additive (Bahdanau), multiplicative (Luong), scaled dot-product and multi-head.

Mask convention everywhere in this module: a boolean mask is ``True`` where a key is *real* (may be
attended to) and ``False`` where it is padding. (``torch.nn.MultiheadAttention`` uses the opposite
convention for ``key_padding_mask``.) A masked key gets weight exactly 0; a row whose keys are all
masked gets all-zero weights and a zero context vector, never NaN.

>>> attn = AdditiveAttention(query_dim=8, key_dim=6, attn_dim=5)
>>> ctx, w = attn(torch.randn(2, 8), torch.randn(2, 4, 6), torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]]).bool())
>>> ctx.shape, w.shape
(torch.Size([2, 6]), torch.Size([2, 4]))
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DeepfoundryError


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``softmax`` over the last axis restricted to ``mask`` (True = keep); all-masked rows give zeros.

    ``w_i = exp(s_i) [m_i] / sum_j exp(s_j) [m_j]`` (0 when no ``m_j`` is set).
    """
    if mask is None:
        return torch.softmax(scores, dim=-1)
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1) * mask  # the product zeroes fully masked rows (uniform otherwise)


def _check_pair(query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor | None, query_dim: int,
                key_dim: int) -> None:
    if query.dim() != 2 or keys.dim() != 3 or query.shape[0] != keys.shape[0]:
        raise DeepfoundryError(f"attention expects query (B, {query_dim}) and keys (B, S, {key_dim}); received "
                               f"{tuple(query.shape)} and {tuple(keys.shape)}")
    if query.shape[1] != query_dim or keys.shape[2] != key_dim:
        raise DeepfoundryError(f"attention was built for query_dim={query_dim}, key_dim={key_dim}; received "
                               f"query {tuple(query.shape)} and keys {tuple(keys.shape)}")
    if mask is not None and (mask.shape != keys.shape[:2] or mask.dtype != torch.bool):
        raise DeepfoundryError(f"attention mask must be a bool tensor of shape {tuple(keys.shape[:2])} (True = real "
                               f"token); received {mask.dtype} {tuple(mask.shape)}")


class AdditiveAttention(nn.Module):
    """Additive attention (Bahdanau et al. 2015).

    ``e_s = v^T tanh(W_q q + W_k k_s + b)``, ``a = masked_softmax(e)``, ``context = sum_s a_s k_s``.

    Shapes: query ``(B, Hq)``, keys ``(B, S, Hk)``, mask ``Bool(B, S)`` (True = real) ->
    context ``(B, Hk)``, weights ``(B, S)``. ``project_keys(keys)`` precomputes ``W_k k_s + b`` once per
    source sentence; pass it back as ``projected_keys`` to save that work at every decoder step.
    """

    def __init__(self, query_dim: int, key_dim: int, attn_dim: int) -> None:
        super().__init__()
        self.query_dim, self.key_dim = query_dim, key_dim
        self.w_q = nn.Linear(query_dim, attn_dim, bias=False)
        self.w_k = nn.Linear(key_dim, attn_dim, bias=True)
        self.v = nn.Linear(attn_dim, 1, bias=False)

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """``W_k k_s + b`` for every source position: ``(B, S, attn_dim)``."""
        return self.w_k(keys)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor | None = None,
                projected_keys: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        _check_pair(query, keys, mask, self.query_dim, self.key_dim)
        pk = self.project_keys(keys) if projected_keys is None else projected_keys  # (B, S, A)
        scores = self.v(torch.tanh(self.w_q(query).unsqueeze(1) + pk)).squeeze(-1)  # (B, S)
        weights = masked_softmax(scores, mask)  # (B, S)
        return torch.bmm(weights.unsqueeze(1), keys).squeeze(1), weights  # (B, Hk), (B, S)


class MultiplicativeAttention(nn.Module):
    """Multiplicative attention (Luong et al. 2015).

    ``mode="dot"``: ``e_s = q^T k_s`` (needs ``query_dim == key_dim``);
    ``mode="general"``: ``e_s = q^T W k_s``. Then ``a = masked_softmax(e)``, ``context = sum_s a_s k_s``.

    Shapes: query ``(B, Hq)``, keys ``(B, S, Hk)``, mask ``Bool(B, S)`` (True = real) ->
    context ``(B, Hk)``, weights ``(B, S)``.
    """

    def __init__(self, query_dim: int, key_dim: int, mode: str = "dot") -> None:
        super().__init__()
        if mode not in ("dot", "general"):
            raise DeepfoundryError(f"multiplicative attention mode must be 'dot' or 'general', received {mode!r}")
        if mode == "dot" and query_dim != key_dim:
            raise DeepfoundryError(f"dot attention needs query_dim == key_dim, received {query_dim} and {key_dim}; "
                                   f"use mode='general'")
        self.query_dim, self.key_dim, self.mode = query_dim, key_dim, mode
        # q^T W k = (W^T q)^T k: project the query to key space once per step
        self.w = nn.Linear(query_dim, key_dim, bias=False) if mode == "general" else None

    def forward(self, query: torch.Tensor, keys: torch.Tensor,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        _check_pair(query, keys, mask, self.query_dim, self.key_dim)
        q = self.w(query) if self.w is not None else query  # (B, Hk)
        scores = torch.bmm(keys, q.unsqueeze(-1)).squeeze(-1)  # (B, S)
        weights = masked_softmax(scores, mask)
        return torch.bmm(weights.unsqueeze(1), keys).squeeze(1), weights  # (B, Hk), (B, S)


def causal_mask(t: int, s: int, device: torch.device | None = None) -> torch.Tensor:
    """``Bool(T, S)``: query ``i`` (the last ``T`` of ``S`` positions) may see keys ``j <= S - T + i``."""
    return torch.ones(t, s, dtype=torch.bool, device=device).tril(diagonal=s - t)


def scaled_dot_product(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
                       causal: bool = False, dropout_p: float = 0.0,
                       need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scaled dot-product attention (Vaswani et al. 2017): ``softmax(Q K^T / sqrt(d) + M) V``.

    ``q`` ``(B, H, T, d)``, ``k`` and ``v`` ``(B, H, S, d)``; ``mask`` a bool tensor broadcastable to
    ``(B, H, T, S)`` (True = may attend); ``causal`` lets query ``i`` (the last ``T`` of ``S`` positions,
    so it also works with a KV cache) see keys ``j <= S - T + i``. ``M`` is 0 where allowed, ``-inf`` elsewhere.

    ``need_weights=False`` takes the fast path, ``F.scaled_dot_product_attention`` (fused kernels);
    ``need_weights=True`` computes the same explicitly and also returns the weights ``(B, H, T, S)``.
    Returns ``(output (B, H, T, d), weights or None)``.
    """
    t, s = q.shape[-2], k.shape[-2]
    explicit = need_weights or _explicit_is_faster(q, s)
    if causal and mask is None and t == s and not explicit:
        # SDPA's own causal flag (top-left aligned, right when T == S) keeps the fused kernels, which skip the
        # masked blocks; an explicit mask would send the CPU through the slower masked path.
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True), None
    padded = mask is not None
    if causal:
        c = causal_mask(t, s, q.device)
        mask = c if mask is None else mask & c
    if not explicit:
        if mask is None:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p), None
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p), None
    scale = 1.0 / math.sqrt(q.shape[-1])
    if causal and not padded:  # every query sees a key: the mask becomes a -inf bias added inside the product
        b, h, _, d = q.shape
        bias = torch.zeros(t, s, dtype=q.dtype, device=q.device).masked_fill_(~mask, float("-inf"))
        scores = torch.baddbmm(bias, q.reshape(b * h, t, d), k.reshape(b * h, s, d).mT, alpha=scale)
        weights = torch.softmax(scores, dim=-1).view(b, h, t, s)
    else:
        weights = masked_softmax(q @ k.transpose(-2, -1) * scale, mask)  # (B, H, T, S)
    attn = F.dropout(weights, dropout_p) if dropout_p > 0 else weights
    return attn @ v, (weights if need_weights else None)  # (B, H, T, d)


def _explicit_is_faster(q: torch.Tensor, s: int) -> bool:
    """Whether explicit matmuls beat ``F.scaled_dot_product_attention`` for ``s`` keys on ``q``'s device/dtype.

    Measured on a 2-core AVX512-BF16 CPU (docs/benchmarks.md, goal 7): in bfloat16 the CPU flash kernel's
    backward is the slow part, and for up to 256 keys softmax(QK^T)V through oneDNN's bf16 matmuls trains
    1.9x (128 keys) to 3.9x (64 keys) faster; from 512 keys the fused kernel wins (it never stores T x S).
    In float32 and on GPUs the fused kernels win, so they keep it.
    """
    if q.device.type != "cpu" or s > 256:
        return False
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else q.dtype
    return dtype in (torch.bfloat16, torch.float16)


@dataclass
class KVCache:
    """Keys and values ``(B, H, L, d_head)`` kept between decoding steps (``None`` before the first)."""

    k: torch.Tensor | None = None
    v: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.shape[2]

    def reorder(self, index: torch.Tensor) -> "KVCache":
        """The cache with its batch rows picked by ``index`` (beam search)."""
        if self.k is None:
            return KVCache()
        return KVCache(self.k.index_select(0, index), self.v.index_select(0, index))


class MultiHeadAttention(nn.Module):
    """Multi-head attention: ``MHA(X, Y) = concat_h(head_h) W_O``,
    ``head_h = softmax(Q_h K_h^T / sqrt(d_head) + M) V_h``, ``Q_h = X W_Q^h``, ``K_h = Y W_K^h``, ``V_h = Y W_V^h``.

    Self-attention when ``memory`` is None (``Y = X``), cross-attention otherwise. ``key_padding_mask``
    ``Bool(B, S)`` is True at real keys. ``causal`` masks the future. ``need_weights`` returns the
    per-head weights ``(B, H, T, S)`` (explicit path) instead of ``None`` (fused SDPA path).

    KV cache (incremental decoding): pass a :class:`KVCache`. For self-attention the new keys/values are
    appended, so step ``t`` costs ``O(t)``; for cross-attention the memory's keys/values are computed
    once, at the first call, and reused. The projection weights use ``torch.nn.MultiheadAttention``'s
    layout (``in_proj`` = ``[W_Q; W_K; W_V]``), so weights copy across. ``rotary`` (a
    :class:`~deepfoundry.nn.positional.RotaryEmbedding` of the head size) rotates self-attention's queries
    and keys by their positions (offset by the cache length while decoding); cross-attention ignores it.
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 rotary: nn.Module | None = None) -> None:
        super().__init__()
        if d_model % num_heads:
            raise DeepfoundryError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        self.d_model, self.num_heads, self.dropout = d_model, num_heads, dropout
        self.rotary = rotary  # RotaryEmbedding(d_model // num_heads): rotates self-attention's q and k
        self.in_proj = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, -1).transpose(1, 2)  # (B, H, T, d_head)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None,
                key_padding_mask: torch.Tensor | None = None, causal: bool = False, need_weights: bool = False,
                cache: KVCache | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x`` (B, T, D), ``memory`` (B, S, D) or None -> ``(out (B, T, D), weights (B, H, T, S) or None)``."""
        d = self.d_model
        w, b = self.in_proj.weight, self.in_proj.bias
        if memory is None:  # self-attention: one fused projection
            q, k, v = self._heads_split(self.in_proj(x))
            if self.rotary is not None:  # new tokens sit after the cached ones
                offset = cache.length if cache is not None else 0
                q, k = self.rotary(q, offset), self.rotary(k, offset)
            if cache is not None:
                if cache.k is not None:
                    k, v = torch.cat([cache.k, k], dim=2), torch.cat([cache.v, v], dim=2)
                cache.k, cache.v = k, v
        else:
            q = self._heads(F.linear(x, w[:d], None if b is None else b[:d]))
            if cache is not None and cache.k is not None:
                k, v = cache.k, cache.v
            else:
                kv = F.linear(memory, w[d:], None if b is None else b[d:])  # (B, S, 2D)
                k, v = (self._heads(t) for t in kv.chunk(2, dim=-1))
                if cache is not None:
                    cache.k, cache.v = k, v
        mask = None
        if key_padding_mask is not None:
            if key_padding_mask.shape != (k.shape[0], k.shape[2]):
                raise DeepfoundryError(f"key_padding_mask must have shape {(k.shape[0], k.shape[2])} (batch, keys); "
                                       f"received {tuple(key_padding_mask.shape)}")
            mask = key_padding_mask[:, None, None, :]  # (B, 1, 1, S)
        causal = causal and q.shape[2] > 1  # a single new query may see every cached key
        out, weights = scaled_dot_product(q, k, v, mask, causal, self.dropout if self.training else 0.0, need_weights)
        out = out.transpose(1, 2).reshape(x.shape[0], x.shape[1], d)  # (B, T, D)
        return self.out_proj(out), weights

    def _heads_split(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = qkv.chunk(3, dim=-1)
        return self._heads(q), self._heads(k), self._heads(v)
