"""Attention layers: additive/multiplicative masking, SDPA path == weights path, MHA == torch's, KV cache, positions."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from deepfoundry.errors import DeepfoundryError
from deepfoundry.nn.attention import (AdditiveAttention, KVCache, MultiHeadAttention, MultiplicativeAttention,
                                      scaled_dot_product)
from deepfoundry.nn.positional import LearnedPositionalEncoding, RotaryEmbedding, SinusoidalPositionalEncoding

ATOL = 1e-6  # float32: the fused kernel and the explicit softmax(QK^T/sqrt(d))V differ by rounding only (~2e-7)


def _mask(b: int, s: int, lengths: list[int]) -> torch.Tensor:
    return torch.arange(s)[None, :] < torch.tensor(lengths)[:, None]  # (B, S) True = real


@pytest.mark.parametrize("make", [lambda: AdditiveAttention(8, 6, 5), lambda: MultiplicativeAttention(6, 6, "dot"),
                                  lambda: MultiplicativeAttention(8, 6, "general")], ids=["additive", "dot", "general"])
def test_bahdanau_luong_masking(make):
    torch.manual_seed(0)
    attn = make()
    q = torch.randn(3, attn.query_dim, requires_grad=True)
    keys = torch.randn(3, 5, 6, requires_grad=True)
    mask = _mask(3, 5, [5, 2, 0])  # full, padded, fully masked
    ctx, w = attn(q, keys, mask)
    assert ctx.shape == (3, 6) and w.shape == (3, 5)
    assert torch.isfinite(ctx).all() and torch.isfinite(w).all()
    assert torch.all(w[~mask] == 0)  # masked positions get exactly zero weight
    assert torch.allclose(w[:2].sum(-1), torch.ones(2))
    assert torch.all(w[2] == 0) and torch.all(ctx[2] == 0)  # fully masked row: zeros, not NaN
    assert torch.allclose(ctx, torch.einsum("bs,bsh->bh", w, keys), atol=1e-6)
    # padding never changes the result: same context with the padded keys replaced by noise
    keys2 = keys.detach().clone()
    keys2[1, 2:] = torch.randn(3, 6) * 100
    assert torch.allclose(attn(q, keys2, mask)[0][1], ctx[1], atol=1e-5)
    ctx.sum().backward()
    assert torch.isfinite(q.grad).all() and torch.isfinite(keys.grad).all()


def test_additive_precomputed_keys_and_bad_input():
    attn = AdditiveAttention(4, 3, 7)
    q, keys = torch.randn(2, 4), torch.randn(2, 6, 3)
    a = attn(q, keys)
    b = attn(q, keys, projected_keys=attn.project_keys(keys))
    assert torch.equal(a[0], b[0])
    with pytest.raises(DeepfoundryError, match="query_dim=4"):
        attn(torch.randn(2, 5), keys)
    with pytest.raises(DeepfoundryError, match="bool tensor"):
        attn(q, keys, torch.ones(2, 6))
    with pytest.raises(DeepfoundryError, match="mode='general'"):
        MultiplicativeAttention(4, 3, "dot")


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("t,s", [(7, 7), (3, 9)])  # (3, 9): queries are the last 3 of 9 positions (KV cache)
def test_sdpa_path_equals_weights_path(causal, padded, t, s):
    torch.manual_seed(1)
    q, k, v = torch.randn(2, 4, t, 16), torch.randn(2, 4, s, 16), torch.randn(2, 4, s, 16)
    mask = _mask(2, s, [s, s - 2])[:, None, None, :] if padded else None
    fast, none = scaled_dot_product(q, k, v, mask, causal)
    slow, w = scaled_dot_product(q, k, v, mask, causal, need_weights=True)
    assert none is None and w.shape == (2, 4, t, s)
    torch.testing.assert_close(fast, slow, atol=ATOL, rtol=1e-5)
    assert torch.allclose(w.sum(-1), torch.ones(2, 4, t), atol=1e-6)
    if causal:  # query i (position s - t + i) never sees a later key
        assert torch.all(w.triu(diagonal=s - t + 1) == 0)


@pytest.mark.parametrize("causal,padded", [(True, False), (False, True)])
@pytest.mark.parametrize("s,fused", [(128, False), (512, True)])
def test_cpu_bf16_attention_takes_explicit_products_for_short_keys(monkeypatch, causal, padded, s, fused):
    """Under CPU bf16 autocast, up to 256 keys go through explicit products (faster than the fused kernel's
    backward there); longer ones keep the fused kernel. Both match float32 (outputs and gradients)."""
    import torch.nn.functional as F

    calls = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or sdpa(*a, **k))
    torch.manual_seed(2)
    q, k, v = (torch.randn(2, 2, s, 16, requires_grad=True) for _ in range(3))
    mask = _mask(2, s, [s, s // 2])[:, None, None, :] if padded else None
    ref, _ = scaled_dot_product(q, k, v, mask, causal)
    ref_grads = torch.autograd.grad(ref.square().sum(), (q, k, v))
    calls.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, weights = scaled_dot_product(q, k, v, mask, causal)
    grads = torch.autograd.grad(out.float().square().sum(), (q, k, v))
    assert weights is None and out.dtype == torch.bfloat16 and len(calls) == int(fused)
    torch.testing.assert_close(out.float(), ref, atol=3e-2, rtol=3e-2)
    for g, r in zip(grads, ref_grads):
        assert float((g - r).norm() / r.norm()) < 3e-2


def _copy_to_torch(ours: MultiHeadAttention) -> nn.MultiheadAttention:
    ref = nn.MultiheadAttention(ours.d_model, ours.num_heads, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(ours.in_proj.weight)
        ref.in_proj_bias.copy_(ours.in_proj.bias)
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)
    return ref.eval()


def test_multihead_matches_torch_multiheadattention():
    torch.manual_seed(2)
    ours = MultiHeadAttention(32, 4).eval()
    ref = _copy_to_torch(ours)
    x, mem = torch.randn(3, 6, 32), torch.randn(3, 9, 32)
    pad = _mask(3, 6, [6, 4, 1])
    # self-attention with a key padding mask (torch's mask is True at *padding*)
    out, w = ours(x, key_padding_mask=pad, need_weights=True)
    r_out, r_w = ref(x, x, x, key_padding_mask=~pad, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(out, r_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w, r_w, atol=1e-6, rtol=1e-5)
    assert torch.allclose(ours(x, key_padding_mask=pad)[0], out, atol=1e-5)  # fused path, same output
    # causal self-attention
    future = torch.ones(6, 6, dtype=torch.bool).triu(1)
    torch.testing.assert_close(ours(x, causal=True)[0], ref(x, x, x, attn_mask=future)[0], atol=1e-5, rtol=1e-5)
    # cross-attention with padded memory
    mpad = _mask(3, 9, [9, 5, 2])
    out, w = ours(x, mem, mpad, need_weights=True)
    r_out, r_w = ref(x, mem, mem, key_padding_mask=~mpad, average_attn_weights=False)
    torch.testing.assert_close(out, r_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w, r_w, atol=1e-6, rtol=1e-5)


def test_kv_cache_equals_full_recomputation():
    torch.manual_seed(3)
    mha = MultiHeadAttention(16, 2).eval()
    x = torch.randn(2, 8, 16)
    full, _ = mha(x, causal=True)
    cache = KVCache()
    steps = [mha(x[:, :3], causal=True, cache=cache)[0]]  # a 3-token prompt, then one token at a time
    steps += [mha(x[:, t:t + 1], causal=True, cache=cache)[0] for t in range(3, 8)]
    assert cache.length == 8
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-6, rtol=1e-5)
    assert cache.reorder(torch.tensor([1, 1, 0])).k.shape[0] == 3
    with pytest.raises(DeepfoundryError, match="divisible"):
        MultiHeadAttention(10, 3)


@pytest.mark.parametrize("cls", [SinusoidalPositionalEncoding, LearnedPositionalEncoding])
def test_positional_offset_and_max_len(cls):
    pos = cls(8, max_len=12)
    x = torch.zeros(1, 12, 8)
    full = pos(x)
    torch.testing.assert_close(pos(x[:, :4], offset=5), full[:, 5:9])
    with pytest.raises(DeepfoundryError, match="maximum length 12") as exc:
        pos(x[:, :4], offset=10)
    assert "\n" not in str(exc.value)
    if cls is SinusoidalPositionalEncoding:  # P[p, 0] = sin(p), P[p, 1] = cos(p)
        torch.testing.assert_close(full[0, :, 0], torch.sin(torch.arange(12.0)))
        torch.testing.assert_close(full[0, :, 1], torch.cos(torch.arange(12.0)))


def test_rotary_scores_depend_on_relative_offset_only():
    """RoPE: <R_m q, R_n k> == <R_{m+s} q, R_{n+s} k> for every shift s; norms are kept; position 0 is identity."""
    torch.manual_seed(0)
    rope = RotaryEmbedding(16, max_len=64)
    q, k = torch.randn(2, 3, 1, 16), torch.randn(2, 3, 1, 16)  # (B, H, T=1, d)
    score = lambda m, n: (rope(q, m) * rope(k, n)).sum(-1)  # noqa: E731
    for m, n in [(5, 2), (9, 9), (0, 30)]:
        for shift in (1, 17, 33):
            torch.testing.assert_close(score(m + shift, n + shift), score(m, n), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(score(5, 2), score(5, 3))  # the offset does matter
    torch.testing.assert_close(rope(q, 0), q)
    x = torch.randn(2, 3, 10, 16)
    torch.testing.assert_close(rope(x).norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(rope(x[:, :, 4:7], offset=4), rope(x)[:, :, 4:7])
    # pair (x_0, x_8) at position p turns by p * theta_0 = p radians
    e0 = torch.zeros(1, 1, 3, 16)
    e0[..., 0] = 1.0
    out = rope(e0)
    torch.testing.assert_close(out[0, 0, :, 0], torch.cos(torch.arange(3.0)))
    torch.testing.assert_close(out[0, 0, :, 8], torch.sin(torch.arange(3.0)))
    with pytest.raises(DeepfoundryError, match="maximum length 64"):
        rope(x, offset=60)
    with pytest.raises(DeepfoundryError, match="even head size"):
        RotaryEmbedding(7)


def test_multihead_rotary_kv_cache_equals_full_recomputation():
    torch.manual_seed(0)
    mha = MultiHeadAttention(32, 4, rotary=RotaryEmbedding(8, max_len=32)).eval()
    x = torch.randn(2, 12, 32)
    full, _ = mha(x, causal=True)
    cache = KVCache()
    steps = [mha(x[:, :4], causal=True, cache=cache)[0]] + [mha(x[:, t:t + 1], causal=True, cache=cache)[0]
                                                            for t in range(4, 12)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-6, rtol=1e-5)
    # cross-attention takes no positions: the memory's order does not change a query's output
    perm = torch.randperm(12)
    torch.testing.assert_close(mha(x[:, :3], memory=x)[0], mha(x[:, :3], memory=x[:, perm])[0], atol=1e-6, rtol=1e-5)
