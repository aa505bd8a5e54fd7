"""Translation: train an encoder-decoder on parallel text, decode greedily or with beam search, score BLEU.

Loss: token cross-entropy over the real target tokens (``<pad>`` ignored), with label smoothing
``eps``: ``L = -1/N sum_t sum_v q_tv log p(v | y_<t, x)``, ``q_t = (1 - eps) onehot(y_t) + eps / V``.
Metrics of an evaluation pass: ``loss`` (plain cross-entropy, nats per target token), ``perplexity =
exp(loss)``, ``bleu`` (sacreBLEU, corpus level, on detokenised hypotheses, ends stripped of whitespace,
against the raw reference strings; default 13a tokenisation, case-sensitive; ``bleu_signature`` is stored
beside it), and ``exact_match`` (share of hypotheses equal to their reference). BLEU uses greedy
decoding, so it is cheap enough to be the validation metric of every epoch (``task.val_bleu=false``
turns it off).

Decoding works with any model that follows the translation protocol (``encode``, ``decode_step``,
``reorder_state``: :mod:`deepfoundry.models.seq2seq` and ``transformer_translator``):

- greedy: ``y_t = argmax_v p(v | y_<t, x)`` until ``<eos>`` or the length limit;
- beam search (:func:`beam_search`): keep the ``beam`` best prefixes by ``sum_t log p``; a hypothesis
  ends at ``<eos>`` and is ranked by ``log p(Y | x) / lp(Y)``, ``lp(Y) = ((5 + |Y|) / 6) ^ alpha`` (Wu et al.
  2016, GNMT), so ``alpha > 0`` offsets the bias of raw log-probabilities toward short outputs. Each
  source stops once ``beam`` hypotheses have ended. ``beam = 1`` is greedy decoding.

The length limit is ``min(max_tgt_len, 1.5 x source length + 10)`` target tokens.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.text import SPECIALS
from ..data.translation import encode_sources, tokenizer_of
from ..errors import DeepfoundryError
from ..registry import TASKS
from .base import Task


def length_penalty(length: int | torch.Tensor, alpha: float) -> float | torch.Tensor:
    """GNMT length normalisation ``lp(Y) = ((5 + |Y|) / 6) ^ alpha`` (1 for ``alpha = 0``)."""
    return ((5 + length) / 6) ** alpha


def max_decode_length(src_mask: torch.Tensor, model: nn.Module) -> int:
    """``min(max_tgt_len, 1.5 x longest source + 10)`` target tokens."""
    limit = getattr(model, "max_tgt_len", 0) or max(1, getattr(model, "max_len", 128) - 2)
    return int(min(limit, math.ceil(1.5 * int(src_mask.sum(1).max())) + 10))


def _banned(logits: torch.Tensor, pad_id: int, bos_id: int) -> torch.Tensor:
    logits = logits.float().clone()
    logits[:, pad_id] = -math.inf  # never emit <pad> or <bos>
    logits[:, bos_id] = -math.inf
    return logits


@torch.no_grad()
def greedy_decode(model: nn.Module, src: torch.Tensor, src_mask: torch.Tensor, max_len: int | None = None,
                  return_attention: bool = False) -> tuple[list[list[int]], list[torch.Tensor | None]]:
    """Token ids of ``argmax`` decoding per source row (``<eos>`` excluded) and, when asked, the
    attention weights ``(T_out, S)`` per row (None for models without attention)."""
    b = src.shape[0]
    max_len = max_len or max_decode_length(src_mask, model)
    state = model.encode(src, src_mask)
    prev = torch.full((b,), model.bos_id, dtype=torch.long, device=src.device)
    done = torch.zeros(b, dtype=torch.bool, device=src.device)
    out, attn = [], []
    for t in range(max_len):
        logits, state, w = model.decode_step(prev, state, t)
        nxt = _banned(logits, model.pad_id, model.bos_id).argmax(-1)
        nxt = nxt.masked_fill(done, model.pad_id)
        out.append(nxt)
        if return_attention and w is not None:
            attn.append(w.float())
        done |= nxt == model.eos_id
        if bool(done.all()):
            break
        prev = nxt
    tokens = torch.stack(out, 1).tolist()  # (B, T)
    seqs, maps = [], []
    for i, row in enumerate(tokens):
        n = row.index(model.eos_id) if model.eos_id in row else len(row)
        seqs.append(row[:n])
        if return_attention:
            s = int(src_mask[i].sum())
            maps.append(torch.stack([a[i, :s] for a in attn[:n + 1]]).cpu() if attn else None)
    return seqs, maps


@torch.no_grad()
def beam_search(model: nn.Module, src: torch.Tensor, src_mask: torch.Tensor, beam: int = 5,
                alpha: float = 0.6, max_len: int | None = None) -> list[list[int]]:
    """Batched beam search (see the module docstring); returns the best token ids per source row."""
    if beam < 1:
        raise DeepfoundryError(f"beam size must be >= 1, received {beam}")
    b, k, dev = src.shape[0], beam, src.device
    max_len = max_len or max_decode_length(src_mask, model)
    state = model.reorder_state(model.encode(src, src_mask), torch.arange(b, device=dev).repeat_interleave(k))
    scores = torch.zeros(b, k, device=dev)
    scores[:, 1:] = -math.inf  # all beams start identical: keep one
    history = torch.zeros(b * k, 0, dtype=torch.long, device=dev)
    prev = torch.full((b * k,), model.bos_id, dtype=torch.long, device=dev)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(b)]
    for t in range(max_len):
        logits, state, _ = model.decode_step(prev, state, t)
        logp = torch.log_softmax(_banned(logits, model.pad_id, model.bos_id), -1)  # (B*K, V)
        v = logp.shape[-1]
        cand = (scores.view(-1, 1) + logp).view(b, k * v)
        top_s, top_i = cand.topk(min(2 * k, k * v), dim=1)  # (B, 2K): at most K of them end in <eos>
        beam_of, tok = top_i // v, top_i % v
        is_eos = tok == model.eos_id
        lp = length_penalty(t + 1, alpha)
        for i in range(b):  # hypotheses ending here, among the K best candidates
            if len(finished[i]) >= k:
                continue
            for r in range(k):
                if is_eos[i, r] and math.isfinite(float(top_s[i, r])):
                    row = history[i * k + int(beam_of[i, r])].tolist()
                    finished[i].append((float(top_s[i, r]) / lp, row))
        if all(len(f) >= k for f in finished):
            break
        alive_s = top_s.masked_fill(is_eos, -math.inf)
        keep_s, keep_r = alive_s.topk(k, dim=1)  # (B, K) best continuing prefixes
        src_beam = (torch.arange(b, device=dev)[:, None] * k + beam_of.gather(1, keep_r)).view(-1)
        prev = tok.gather(1, keep_r).view(-1)
        history = torch.cat([history.index_select(0, src_beam), prev[:, None]], 1)
        state = model.reorder_state(state, src_beam)
        scores = keep_s
    lp = length_penalty(history.shape[1], alpha)
    out = []
    for i in range(b):
        if not finished[i]:  # the length limit came first: rank the open beams
            finished[i] = [(float(scores[i, r]) / lp, history[i * k + r].tolist()) for r in range(k)
                           if math.isfinite(float(scores[i, r]))]
        out.append(max(finished[i], key=lambda h: h[0])[1])
    return out


def corpus_bleu(hypotheses: list[str], references: list[str], tokenize: str = "13a") -> tuple[float, str]:
    """sacreBLEU corpus score of detokenised hypotheses against one reference each, and its signature."""
    from sacrebleu.metrics import BLEU

    bleu = BLEU(tokenize=tokenize)
    score = bleu.corpus_score(hypotheses, [references])
    return float(score.score), str(bleu.get_signature())


class TranslationTask(Task):
    """Label-smoothed cross-entropy on target tokens; greedy/beam decoding; BLEU, perplexity, exact match.

    Its input/output contract: raw source sentences in, ``{"translation": text}`` rows out (greedy;
    ``Run.translate`` for beam search)."""

    report_sections = ("curves", "translation")

    def decode_outputs(self, outputs: list[str]) -> list[dict[str, Any]]:
        return [{"translation": text} for text in outputs]

    def predictions(self, outputs: list[str]) -> np.ndarray:
        return np.asarray(outputs, dtype=object)

    def __init__(self, model: nn.Module, info: dict[str, Any], label_smoothing: float = 0.1,
                 teacher_forcing: float = 1.0, val_bleu: bool = True, length_penalty: float = 0.6,
                 bleu_tokenize: str = "13a", heatmaps: int = 4) -> None:
        super().__init__(model, info)
        if not 0.0 <= label_smoothing < 1.0:
            raise DeepfoundryError(f"task.label_smoothing must be in [0, 1), received {label_smoothing}")
        if not 0.0 <= teacher_forcing <= 1.0:
            raise DeepfoundryError(f"task.teacher_forcing must be in [0, 1], received {teacher_forcing}")
        self.tokenizer = tokenizer_of(info)
        self.label_smoothing, self.teacher_forcing, self.val_bleu = label_smoothing, teacher_forcing, val_bleu
        self.alpha, self.bleu_tokenize, self.heatmaps = length_penalty, bleu_tokenize, heatmaps
        self.max_src_len = int(info["max_src_len"])
        self.reset_metrics()

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, Any]) -> torch.Tensor:
        logits = self.model(batch["src"], batch["src_mask"], batch["tgt_in"], self.teacher_forcing)  # (B, T, V)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["tgt_out"].reshape(-1),
                               ignore_index=self.model.pad_id, label_smoothing=self.label_smoothing)

    # ------------------------------------------------------------------ evaluation
    def reset_metrics(self) -> None:
        self._nats, self._tokens = 0.0, 0
        self._hyps: dict[int, str] = {}
        self._refs: dict[int, str] = {}

    def evaluation_step(self, batch: dict[str, Any]) -> None:
        logits = self.model(batch["src"], batch["src_mask"], batch["tgt_in"])
        tgt = batch["tgt_out"]
        self._nats += float(F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                            ignore_index=self.model.pad_id, reduction="sum"))
        self._tokens += int((tgt != self.model.pad_id).sum())
        if self.val_bleu:
            seqs, _ = greedy_decode(self.model, batch["src"], batch["src_mask"])
            for i, ids, ref in zip(batch["index"].tolist(), seqs, batch["references"]):
                self._hyps[i] = self.tokenizer.decode(ids).strip()
                self._refs[i] = ref

    def compute_metrics(self) -> dict[str, Any]:
        loss = self._nats / max(1, self._tokens)
        out: dict[str, Any] = {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": self._tokens}
        if self._hyps:
            order = sorted(self._hyps)
            hyps, refs = [self._hyps[i] for i in order], [self._refs[i] for i in order]
            out["bleu"], out["bleu_signature"] = corpus_bleu(hyps, refs, self.bleu_tokenize)
            out["exact_match"] = float(np.mean([h == r for h, r in zip(hyps, refs)]))
        return out

    # ------------------------------------------------------------------ inference
    def decode(self, src: torch.Tensor, src_mask: torch.Tensor, beam: int = 1,
               length_penalty: float | None = None) -> list[list[int]]:
        """Token ids per source row: greedy for ``beam = 1``, beam search otherwise."""
        if beam == 1:
            return greedy_decode(self.model, src, src_mask)[0]
        return beam_search(self.model, src, src_mask, beam, self.alpha if length_penalty is None else length_penalty)

    @torch.no_grad()
    def translate(self, texts: list[str] | str, beam: int | None = None, length_penalty: float | None = None,
                  batch_size: int = 64) -> list[str]:
        """Raw source sentences -> detokenised translations (``beam`` defaults to 1, greedy)."""
        beam = 1 if beam is None else beam
        if beam < 1:
            raise DeepfoundryError(f"beam size must be >= 1, received {beam}")
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise DeepfoundryError("nothing to translate: give at least one sentence")
        was_training = self.training
        self.eval()
        device = next(self.model.parameters()).device
        out = []
        for i in range(0, len(texts), batch_size):
            src, mask = encode_sources(self.tokenizer, texts[i:i + batch_size], self.max_src_len)
            for ids in self.decode(src.to(device), mask.to(device), beam, length_penalty):
                out.append(self.tokenizer.decode(ids).strip())
        self.train(was_training)
        return out

    def predict(self, x: Any) -> list[str]:
        """Translations of raw source strings (greedy)."""
        return self.translate(x)

    @torch.no_grad()
    def attention_map(self, text: str) -> tuple[list[str], list[str], torch.Tensor | None]:
        """Source tokens, output tokens and the greedy decoder's attention weights ``(T_out, S)``."""
        self.eval()
        src, mask = encode_sources(self.tokenizer, [text], self.max_src_len)
        device = next(self.model.parameters()).device
        seqs, maps = greedy_decode(self.model, src.to(device), mask.to(device), return_attention=True)
        pieces = lambda ids: [self._piece(i) for i in ids]  # noqa: E731
        return pieces(src[0].tolist()), pieces(seqs[0] + [self.model.eos_id]), maps[0]

    def _piece(self, i: int) -> str:
        if i < len(SPECIALS):
            return SPECIALS[i]
        backend = getattr(self.tokenizer, "backend", None)
        if backend is not None:  # byte-level BPE: show the token with its space marker
            return backend.id_to_token(i).replace("\u0120", "\u2581")
        return self.tokenizer.decode([i])


def bleu_by_length(task: TranslationTask, sources: list[str], references: list[str], tokenize: str = "13a",
                   buckets: int = 5) -> list[dict[str, Any]]:
    """Greedy BLEU of the sources grouped into ``buckets`` quantile buckets of source length (tokens)."""
    lengths = np.array([len(task.tokenizer.encode(s)) + 1 for s in sources])
    hyps = task.translate(sources)
    edges = np.unique(np.quantile(lengths, np.linspace(0, 1, buckets + 1)).round().astype(int))
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        idx = np.nonzero((lengths >= lo) & ((lengths < hi) if hi != edges[-1] else (lengths <= hi)))[0]
        if len(idx) == 0:
            continue
        score, _ = corpus_bleu([hyps[i] for i in idx], [references[i] for i in idx], tokenize)
        rows.append({"bucket": f"{lo}-{hi if hi == edges[-1] else hi - 1}", "n": int(len(idx)), "bleu": score})
    return rows


@TASKS.register("translation")
def translation(*, model: nn.Module, info: dict[str, Any], label_smoothing: float = 0.1, teacher_forcing: float = 1.0,
                val_bleu: bool = True, length_penalty: float = 0.6, bleu_tokenize: str = "13a",
                heatmaps: int = 4) -> TranslationTask:
    """Sequence-to-sequence translation: label-smoothed cross-entropy, greedy/beam decoding, sacreBLEU.

    ``label_smoothing`` eps; ``teacher_forcing`` ratio (RNN models); ``val_bleu`` decodes every evaluation
    greedily for BLEU; ``length_penalty`` the GNMT alpha of beam search (``translate --beam K``);
    ``bleu_tokenize`` sacreBLEU's tokeniser (13a; ``intl``, ``char``, ...); ``heatmaps`` sentences in the report.
    """
    if info.get("task_type") != "translation":
        raise DeepfoundryError(f"task 'translation' needs a translation data set (multi30k, parallel-text, "
                               f"dates-synthetic); dataset {info.get('dataset')!r} is {info.get('task_type')!r}")
    for attr in ("encode", "decode_step", "reorder_state"):
        if not callable(getattr(model, attr, None)):
            raise DeepfoundryError(f"model {type(model).__name__} does not follow the translation protocol "
                                   f"(no {attr}); use gru_seq2seq, lstm_seq2seq or transformer_translator")
    return TranslationTask(model, info, label_smoothing, teacher_forcing, val_bleu, length_penalty, bleu_tokenize,
                           heatmaps)
