"""Transformers (Vaswani et al. 2017) built from :mod:`deepfoundry.nn.attention`: encoder classifier,
decoder-only language model and encoder-decoder translator.

One block, pre-norm (``norm_first=True``, GPT-2 style, stable without warm-up tricks) or post-norm (the 2017 paper):

- pre-norm:  ``x = x + Drop(MHA(LN(x)))``;  ``x = x + Drop(FFN(LN(x)))``  (and a final ``LN`` after the stack)
- post-norm: ``x = LN(x + Drop(MHA(x)))``;  ``x = LN(x + Drop(FFN(x)))``

with ``FFN(x) = W_2 act(W_1 x + b_1) + b_2`` and decoder blocks adding cross-attention to the encoder
output between the two. Positions are added to the token embeddings (``learned``, ``sinusoidal``) or rotate
every self-attention's queries and keys (``rotary``, RoPE: scores depend on relative offsets only; the
translator's cross-attention stays position-free). Token embeddings are scaled by ``sqrt(d_model)`` when
the positional encoding is sinusoidal (as in the paper), and then start ``N(0, 1/d_model)`` so
``sqrt(d_model) E`` has unit variance (fairseq).
Other weights start ``N(0, 0.02^2)``; residual output projections ``N(0, (0.02 / sqrt(2 L))^2)`` (GPT-2), so the
residual stream's variance does not grow with depth.

Incremental decoding keeps each layer's self-attention keys/values (:class:`~deepfoundry.nn.attention.KVCache`),
so emitting token ``t`` costs ``O(t)`` instead of re-running the whole prefix (``O(t^2)``).

>>> lm = transformer_lm(vocab_size=40, d_model=32, num_heads=2, num_layers=2, context_length=16)
>>> lm(torch.randint(4, 40, (3, 10)))[0].shape
torch.Size([3, 10, 40])
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import DeepfoundryError
from ..nn.attention import KVCache, MultiHeadAttention
from ..nn.positional import RotaryEmbedding, make_positional
from ..registry import MODELS

ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU}


class TransformerBlock(nn.Module):
    """Self-attention (+ cross-attention when ``cross``) + position-wise feed-forward, with residuals and LayerNorm."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int, dropout: float = 0.1, norm_first: bool = True,
                 cross: bool = False, activation: str = "gelu", rotary: nn.Module | None = None) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout, rotary=rotary)
        self.cross_attn = MultiHeadAttention(d_model, num_heads, dropout) if cross else None
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff), ACTIVATIONS[activation](), nn.Dropout(dropout),
                                nn.Linear(d_ff, d_model))
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(3 if cross else 2))
        self.drop = nn.Dropout(dropout)

    def _sub(self, x: torch.Tensor, i: int, fn) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One residual sub-layer, pre- or post-norm; ``fn`` returns ``(y, weights)``."""
        if self.norm_first:
            y, w = fn(self.norms[i](x))
            return x + self.drop(y), w
        y, w = fn(x)
        return self.norms[i](x + self.drop(y)), w

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False,
                memory: torch.Tensor | None = None, memory_mask: torch.Tensor | None = None,
                cache: KVCache | None = None, cross_cache: KVCache | None = None,
                need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x`` (B, T, D) -> (B, T, D) and the cross-attention weights (B, H, T, S) when asked for."""
        x, _ = self._sub(x, 0, lambda h: self.self_attn(h, key_padding_mask=mask, causal=causal, cache=cache))
        weights = None
        if self.cross_attn is not None:
            x, weights = self._sub(x, 1, lambda h: self.cross_attn(h, memory, memory_mask, need_weights=need_weights,
                                                                   cache=cross_cache))
        x, _ = self._sub(x, len(self.norms) - 1, lambda h: (self.ff(h), None))
        return x, weights


class _Stack(nn.Module):
    """Embedding (+ positions) -> ``num_layers`` blocks -> final LayerNorm (pre-norm only)."""

    def __init__(self, vocab_size: int, d_model: int, num_heads: int, num_layers: int, d_ff: int, dropout: float,
                 norm_first: bool, max_len: int, positional: str, cross: bool, activation: str,
                 embedding: nn.Embedding | None = None) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise DeepfoundryError(f"activation {activation!r} is not one of {', '.join(ACTIVATIONS)}")
        self.embedding = embedding if embedding is not None else nn.Embedding(vocab_size, d_model)
        self.positional = make_positional(positional, d_model, max_len)
        self.scale = math.sqrt(d_model) if positional == "sinusoidal" else 1.0
        self.drop = nn.Dropout(dropout)
        # rotary: one table of angles, shared by every block's self-attention
        rotary = RotaryEmbedding(d_model // num_heads, max_len) if positional == "rotary" else None
        self.blocks = nn.ModuleList(TransformerBlock(d_model, num_heads, d_ff, dropout, norm_first, cross, activation,
                                                     rotary) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model) if norm_first else nn.Identity()

    def embed(self, tokens: torch.Tensor, offset: int = 0) -> torch.Tensor:
        return self.drop(self.positional(self.embedding(tokens) * self.scale, offset))  # (B, T, D)


def _init_weights(model: nn.Module, num_layers: int) -> None:
    """GPT-2 initialisation: ``N(0, 0.02^2)``, residual projections scaled by ``1/sqrt(2 L)``, zero biases;
    token embeddings scaled by ``sqrt(d)`` (sinusoidal positions) start ``N(0, 1/d)``."""
    for name, p in model.named_parameters():
        if p.dim() < 2 or "positional" in name:
            if name.endswith("bias"):
                nn.init.zeros_(p)
            continue
        std = 0.02 / math.sqrt(2 * num_layers) if name.endswith(("out_proj.weight", "ff.3.weight")) else 0.02
        nn.init.normal_(p, 0.0, std)
    seen: set[int] = set()  # a shared source/target matrix is drawn once
    for stack in model.modules():
        if isinstance(stack, _Stack) and stack.scale != 1.0 and id(stack.embedding) not in seen:
            seen.add(id(stack.embedding))
            # sinusoidal positions: token embeddings ~ N(0, 1/d), so sqrt(d) * E has unit variance, above the
            # positions' 0.71 (fairseq's rule, and the plain anchor's); GPT-2's 0.02 left the scaled tokens at
            # 0.32, below the positions. A tied output's initial logits (LayerNorm'd h) then have std 1, not 0.32.
            nn.init.normal_(stack.embedding.weight, 0.0, stack.scale ** -1)


def _check(d_model: int, num_heads: int, num_layers: int, dropout: float) -> None:
    if d_model < 1 or num_heads < 1 or num_layers < 1 or d_model % num_heads:
        raise DeepfoundryError(f"need d_model, num_heads, num_layers >= 1 and d_model divisible by num_heads; "
                               f"received d_model={d_model}, num_heads={num_heads}, num_layers={num_layers}")
    if not 0.0 <= dropout < 1.0:
        raise DeepfoundryError(f"dropout must be in [0, 1), received {dropout}")


# ------------------------------------------------------------------ encoder classifier
class TransformerClassifier(nn.Module):
    """Encoder over ``(tokens (B, L), lengths (B,))`` -> pooled vector -> linear head.

    ``pool="mean"``: ``h = sum_t m_t x_t / sum_t m_t`` over real tokens (``m`` the padding mask);
    ``pool="cls"``: a learned ``[CLS]`` vector is prepended and its final state is ``h``.
    """

    default_grad_clip = 1.0

    def __init__(self, vocab_size: int, num_classes: int, d_model: int = 128, num_heads: int = 4,
                 num_layers: int = 2, d_ff: int | None = None, dropout: float = 0.1, norm_first: bool = True,
                 max_length: int = 256, positional: str = "learned", pool: str = "mean",
                 activation: str = "gelu") -> None:
        super().__init__()
        _check(d_model, num_heads, num_layers, dropout)
        if pool not in ("mean", "cls"):
            raise DeepfoundryError(f"pool must be 'mean' or 'cls', received {pool!r}")
        self.pool, self.max_length = pool, max_length
        self.encoder = _Stack(vocab_size, d_model, num_heads, num_layers, d_ff or 4 * d_model, dropout, norm_first,
                              max_length + 1, positional, False, activation)
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model)) if pool == "cls" else None
        self.head = nn.Linear(d_model, num_classes)
        _init_weights(self, num_layers)

    def features(self, x: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Pooled encoder output ``(B, d_model)``."""
        tokens, lengths = x if isinstance(x, (tuple, list)) else (x, None)
        if tokens.shape[1] > self.max_length:
            raise DeepfoundryError(f"sequence of {tokens.shape[1]} tokens is longer than the model's max_length "
                                   f"{self.max_length}")
        b, t = tokens.shape
        lengths = torch.full((b,), t, device=tokens.device) if lengths is None else lengths.to(tokens.device)
        mask = torch.arange(t, device=tokens.device)[None, :] < lengths[:, None]  # (B, L) True = real
        e = self.encoder.embedding(tokens) * self.encoder.scale  # (B, L, D)
        if self.cls is not None:  # [CLS] takes position 0
            e = torch.cat([self.cls.expand(b, -1, -1), e], dim=1)
            mask = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)
        h = self.encoder.drop(self.encoder.positional(e))
        for block in self.encoder.blocks:
            h, _ = block(h, mask=mask)
        h = self.encoder.norm(h)  # (B, L, D)
        if self.cls is not None:
            return h[:, 0]
        m = mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp(min=1.0)

    def forward(self, x: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return self.head(self.features(x))

    def explain_layers(self) -> dict[str, object]:
        """Token attributions (``deepfoundry explain``) are taken at the token embedding's output."""
        return {"layer": self.encoder.embedding}

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> list[torch.Tensor]:
        """Self-attention weights of every layer, ``[(B, H, T, T), ...]``, from the explicit (weights) path
        of :class:`~deepfoundry.nn.attention.MultiHeadAttention` (``need_weights=True``); with ``pool="cls"``
        position 0 is ``[CLS]``."""
        maps: list[torch.Tensor] = []

        def ask(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            return args, {**kwargs, "need_weights": True}

        def keep(module: nn.Module, args: tuple, output: tuple) -> None:
            maps.append(output[1])

        handles = []
        for block in self.encoder.blocks:
            handles.append(block.self_attn.register_forward_pre_hook(ask, with_kwargs=True))
            handles.append(block.self_attn.register_forward_hook(keep))
        try:
            self.features(x)
        finally:
            for h in handles:
                h.remove()
        return maps


# ------------------------------------------------------------------ decoder-only language model
@dataclass
class LMCache:
    """Per-layer self-attention keys/values of the tokens seen so far; ``length`` = their number."""

    layers: list[KVCache] = field(default_factory=list)

    @property
    def length(self) -> int:
        return self.layers[0].length if self.layers else 0


class TransformerLM(nn.Module):
    """Causal decoder-only Transformer: ``p(x_{t+1} | x_{<=t}) = softmax(W_out LN(h_t))``, ``W_out = E`` when tied.

    ``forward(x, state=None) -> (logits (B, T, V), state)`` like the recurrent LMs; ``state`` is an
    :class:`LMCache` from :meth:`new_cache` (KV-cache decoding) or None (training: no cache is built).
    ``context_length`` is the longest sequence (prompt + cached tokens) the model attends over.
    """

    default_grad_clip = 1.0

    def __init__(self, vocab_size: int, d_model: int = 256, num_heads: int = 4, num_layers: int = 4,
                 d_ff: int | None = None, dropout: float = 0.1, context_length: int = 128, norm_first: bool = True,
                 positional: str = "learned", tie_weights: bool = True, activation: str = "gelu") -> None:
        super().__init__()
        _check(d_model, num_heads, num_layers, dropout)
        self.vocab_size, self.context_length = vocab_size, context_length
        self.decoder = _Stack(vocab_size, d_model, num_heads, num_layers, d_ff or 4 * d_model, dropout, norm_first,
                              context_length, positional, False, activation)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        _init_weights(self, num_layers)
        if tie_weights:
            self.head.weight = self.decoder.embedding.weight  # W_out = E

    def new_cache(self) -> LMCache:
        """An empty KV cache: pass it as ``state`` to decode incrementally."""
        return LMCache([KVCache() for _ in self.decoder.blocks])

    def forward(self, x: torch.Tensor, state: LMCache | None = None) -> tuple[torch.Tensor, LMCache | None]:
        offset = state.length if state is not None else 0
        if offset + x.shape[1] > self.context_length:
            raise DeepfoundryError(f"sequence of {offset + x.shape[1]} tokens is longer than the model's "
                                   f"context_length {self.context_length}; keep data.seq_len and data.eval_seq_len "
                                   f"<= model.context_length (generation slides its window itself)")
        h = self.decoder.embed(x, offset)  # (B, T, D)
        for i, block in enumerate(self.decoder.blocks):
            h, _ = block(h, causal=True, cache=state.layers[i] if state is not None else None)
        return self.head(self.decoder.norm(h)), state  # (B, T, V)


# ------------------------------------------------------------------ encoder-decoder translator
@dataclass
class TranslatorState:
    """Encoder output ``memory`` (B, S, D), its mask (B, S), and per decoder layer the self-attention
    KV cache and the cross-attention keys/values of ``memory`` (computed once)."""

    memory: torch.Tensor
    src_mask: torch.Tensor
    self_caches: list[KVCache]
    cross_caches: list[KVCache]


class TransformerTranslator(nn.Module):
    """Encoder-decoder Transformer implementing the translation protocol (helpers/PROTOCOL_TRANSLATION.md):
    ``forward(src, src_mask, tgt_in) -> logits (B, T, V_tgt)``, ``encode``, KV-cached ``decode_step``,
    ``reorder_state``. The output layer shares the target embedding (``W_out = E_tgt``) when ``tie_weights``;
    ``share_embeddings`` also uses it for the source (joint vocabularies)."""

    uses_attention = True
    default_grad_clip = 1.0

    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, pad_id: int = 0, bos_id: int = 2, eos_id: int = 3,
                 d_model: int = 256, num_heads: int = 4, num_encoder_layers: int = 3, num_decoder_layers: int = 3,
                 d_ff: int | None = None, dropout: float = 0.1, norm_first: bool = True, max_len: int = 256,
                 positional: str = "sinusoidal", tie_weights: bool = True, share_embeddings: bool = False,
                 activation: str = "relu") -> None:
        super().__init__()
        _check(d_model, num_heads, max(num_encoder_layers, num_decoder_layers), dropout)
        if share_embeddings and src_vocab_size != tgt_vocab_size:
            raise DeepfoundryError(f"share_embeddings needs one joint vocabulary; sizes are {src_vocab_size} and "
                                   f"{tgt_vocab_size}")
        self.pad_id, self.bos_id, self.eos_id, self.max_len = pad_id, bos_id, eos_id, max_len
        d_ff = d_ff or 4 * d_model
        self.encoder = _Stack(src_vocab_size, d_model, num_heads, num_encoder_layers, d_ff, dropout, norm_first,
                              max_len, positional, False, activation)
        self.decoder = _Stack(tgt_vocab_size, d_model, num_heads, num_decoder_layers, d_ff, dropout, norm_first,
                              max_len, positional, True, activation,
                              embedding=self.encoder.embedding if share_embeddings else None)
        self.head = nn.Linear(d_model, tgt_vocab_size)
        _init_weights(self, num_encoder_layers + num_decoder_layers)
        if tie_weights:
            self.head.weight = self.decoder.embedding.weight

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor) -> TranslatorState:
        """Source ids (B, S) and mask (True = real) -> the decoding state (memory + empty caches)."""
        if src.shape[1] > self.max_len:
            raise DeepfoundryError(f"source of {src.shape[1]} tokens is longer than the model's max_len {self.max_len}")
        h = self.encoder.embed(src)
        for block in self.encoder.blocks:
            h, _ = block(h, mask=src_mask)
        n = len(self.decoder.blocks)
        return TranslatorState(self.encoder.norm(h), src_mask, [KVCache() for _ in range(n)],
                               [KVCache() for _ in range(n)])

    def _decode(self, tgt: torch.Tensor, state: TranslatorState, offset: int, cached: bool,
                need_weights: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.decoder.embed(tgt, offset)
        weights = None
        for i, block in enumerate(self.decoder.blocks):
            last = i == len(self.decoder.blocks) - 1
            h, weights = block(h, causal=True, memory=state.memory, memory_mask=state.src_mask,
                               cache=state.self_caches[i] if cached else None,
                               cross_cache=state.cross_caches[i] if cached else None,
                               need_weights=need_weights and last)
        return self.head(self.decoder.norm(h)), weights  # (B, T, V), (B, H, T, S) or None

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor, tgt_in: torch.Tensor,
                teacher_forcing: float = 1.0) -> torch.Tensor:
        """Teacher-forced logits ``(B, T, V_tgt)`` for ``tgt_in = <bos> y_1 .. y_{T-1}``
        (``teacher_forcing`` is accepted for the protocol and unused)."""
        return self._decode(tgt_in, self.encode(src, src_mask), 0, cached=False, need_weights=False)[0]

    def decode_step(self, prev: torch.Tensor, state: TranslatorState,
                    step: int) -> tuple[torch.Tensor, TranslatorState, torch.Tensor]:
        """Token ``prev`` (B,) at target position ``step`` -> logits (B, V_tgt), the state (caches grown by one),
        and the last layer's cross-attention weights averaged over heads (B, S)."""
        logits, weights = self._decode(prev[:, None], state, step, cached=True, need_weights=True)
        return logits[:, -1], state, weights.mean(dim=1)[:, -1]

    def reorder_state(self, state: TranslatorState, index: torch.Tensor) -> TranslatorState:
        """Pick batch rows ``index`` of every tensor in the state (beam search)."""
        return TranslatorState(state.memory.index_select(0, index), state.src_mask.index_select(0, index),
                               [c.reorder(index) for c in state.self_caches],
                               [c.reorder(index) for c in state.cross_caches])


# ------------------------------------------------------------------ registered builders
@MODELS.register("transformer_classifier")
def transformer_classifier(*, vocab_size: int, num_classes: int, d_model: int = 128, num_heads: int = 4,
                           num_layers: int = 2, d_ff: int | None = None, dropout: float = 0.1,
                           norm_first: bool = True, max_length: int = 256, positional: str = "learned",
                           pool: str = "mean", activation: str = "gelu") -> TransformerClassifier:
    """Transformer encoder text classifier: masked mean pooling (or [CLS]) of the encoder output, linear head."""
    return TransformerClassifier(vocab_size, num_classes, d_model, num_heads, num_layers, d_ff, dropout, norm_first,
                                 max_length, positional, pool, activation)


@MODELS.register("transformer_lm")
def transformer_lm(*, vocab_size: int, d_model: int = 256, num_heads: int = 4, num_layers: int = 4,
                   d_ff: int | None = None, dropout: float = 0.1, context_length: int = 128, norm_first: bool = True,
                   positional: str = "learned", tie_weights: bool = True, activation: str = "gelu") -> TransformerLM:
    """Decoder-only causal Transformer language model (GPT-style), tied output weights, KV-cache generation."""
    return TransformerLM(vocab_size, d_model, num_heads, num_layers, d_ff, dropout, context_length, norm_first,
                         positional, tie_weights, activation)


@MODELS.register("transformer_translator")
def transformer_translator(*, src_vocab_size: int, tgt_vocab_size: int, pad_id: int = 0, bos_id: int = 2,
                           eos_id: int = 3, max_src_len: int = 0, max_tgt_len: int = 0, d_model: int = 256,
                           num_heads: int = 4, num_encoder_layers: int = 3, num_decoder_layers: int = 3,
                           d_ff: int | None = None, dropout: float = 0.1, norm_first: bool = True,
                           max_len: int = 256, positional: str = "sinusoidal", tie_weights: bool = True,
                           share_embeddings: bool = False, activation: str = "relu") -> TransformerTranslator:
    """Encoder-decoder Transformer translator (Vaswani 2017) with KV-cached decoding and attention weights."""
    max_len = max(max_len, max_src_len + 2, max_tgt_len + 2)
    return TransformerTranslator(src_vocab_size, tgt_vocab_size, pad_id, bos_id, eos_id, d_model, num_heads,
                                 num_encoder_layers, num_decoder_layers, d_ff, dropout, norm_first, max_len,
                                 positional, tie_weights, share_embeddings, activation)
