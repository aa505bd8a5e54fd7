"""Parallel text for translation: Multi30k English->German, your own parallel files, and synthetic dates.

One tokeniser is shared by source and target (a *joint* vocabulary, so ``<pad>`` = 0, ``<unk>`` = 1,
``<bos>`` = 2, ``<eos>`` = 3 mean the same on both sides; see :mod:`deepfoundry.data.text`). It is fitted
on the training pairs only (both sides) and saved with the run (``info["tokenizer"]``). The default for
real text is byte-level BPE (``tokenizers``, 8,000 tokens for Multi30k as the anchor uses): any
character, seen or not, is some sequence of bytes, so nothing maps to ``<unk>``; the ``char`` and ``word``
tokenisers map unseen symbols to ``<unk>``.

Each pair becomes ``src = x_1 .. x_m <eos>``, ``tgt_in = <bos> y_1 .. y_n`` and ``tgt_out = y_1 .. y_n <eos>``.
Training pairs longer than ``max_src_len`` / ``max_tgt_len`` tokens (with ``<eos>``) are dropped and
counted in the split note; at translate time a longer source is an error (see
:func:`encode_sources`): nothing is silently truncated.

Batches (:class:`TranslationLoader`) hold about ``max_tokens`` tokens: pairs are sorted by length
(source, then target) and cut greedily so that ``batch_size x max(longest source, longest target)``
stays <= ``max_tokens``; similar lengths share a batch, so little padding is computed. Each training
epoch visits the batches in an order drawn from a generator seeded with ``(seed, epoch)`` (exact
replay on resume). A batch is a dict: ``src`` (B, S), ``src_mask`` (B, S) True on real tokens,
``tgt_in`` / ``tgt_out`` (B, T) padded with ``<pad>``, ``index`` (B,) positions in the split, and
``references`` / ``sources``: the raw target and source strings (BLEU is scored on detokenised text).

Data sets (``deepfoundry list datasets``):

- ``multi30k``: Multi30k task 1 (Elliott et al. 2016), 29,000 / 1,014 / 1,000 caption pairs (train /
  val / test_2016_flickr), ``train.en.gz`` style files in ``root``; ``download=true`` fetches them.
- ``parallel-text``: your corpus, two aligned files (``src_file``, ``tgt_file``; one sentence a line,
  ``.gz`` allowed) or one TSV (``root`` = the file, source<TAB>target); val/test split off at random.
- ``dates-synthetic``: generated (synthetic, offline) date-format translation, "12 March 2021" ->
  "2021-03-12", from :func:`synthetic_dates`.
"""
from __future__ import annotations

import datetime as _dt
import gzip
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from ..errors import DeepfoundryError
from ..registry import DATASETS
from ..splits import permutation_split
from .core import DataBundle, Shardable
from .text import BOS, EOS, PAD, Tokenizer, fit_tokenizer, tokenizer_from_json

MULTI30K_URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/"
MULTI30K_SPLITS = {"train": "train", "val": "val", "test": "test_2016_flickr"}


# ---------------------------------------------------------------------------------------------- reading
def read_lines(path: str | Path) -> list[str]:
    """One sentence per line of a UTF-8 text file (``.gz`` decompressed); trailing newlines stripped."""
    path = Path(path)
    if not path.is_file():
        raise DeepfoundryError(f"parallel-text file '{path}' does not exist")
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DeepfoundryError(f"'{path}' is not a readable gzip file: {exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DeepfoundryError(f"'{path}' is not UTF-8 (byte {exc.start}); convert it, e.g. iconv -t utf-8") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def read_parallel(src_path: str | Path, tgt_path: str | Path) -> tuple[list[str], list[str]]:
    """Two aligned files; a different number of lines is an error naming both counts."""
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        raise DeepfoundryError(f"'{src_path}' has {len(src)} lines but '{tgt_path}' has {len(tgt)}; "
                               f"parallel files must be aligned line by line")
    if not src:
        raise DeepfoundryError(f"'{src_path}' is empty")
    return src, tgt


def read_tsv_pairs(path: str | Path) -> tuple[list[str], list[str]]:
    """``source<TAB>target`` per line (further columns ignored); lines without a tab are an error."""
    src, tgt = [], []
    for i, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2:
            raise DeepfoundryError(f"line {i} of '{path}' has no tab; a TSV pair is source<TAB>target")
        src.append(parts[0])
        tgt.append(parts[1])
    if not src:
        raise DeepfoundryError(f"'{path}' holds no source<TAB>target pairs")
    return src, tgt


# ---------------------------------------------------------------------------------------------- encoding
def encode_sources(tokenizer: Tokenizer, texts: list[str] | str, max_src_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw source sentences -> ``(src (B, S), src_mask (B, S))`` with ``<eos>`` appended.

    An empty sentence or one longer than ``max_src_len`` tokens (with ``<eos>``) raises a one-line
    :class:`DeepfoundryError`: the model never saw such positions, so we refuse instead of truncating.
    """
    if isinstance(texts, str):
        texts = [texts]
    seqs = []
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise DeepfoundryError(f"source {i} is a {type(t).__name__}, expected a string")
        if not t.strip():
            raise DeepfoundryError(f"source sentence {i} is empty; give at least one word to translate")
        ids = tokenizer.encode(t) + [EOS]
        if len(ids) > max_src_len:
            raise DeepfoundryError(f"source sentence {i} has {len(ids)} tokens (with <eos>), longer than the model's "
                                   f"maximum of {max_src_len}; split it into shorter sentences (or train with a "
                                   f"larger data.max_src_len)")
        seqs.append(ids)
    src = _pad(seqs)
    return src, src != PAD


def _pad(seqs: list[list[int]]) -> torch.Tensor:
    out = torch.full((len(seqs), max(map(len, seqs))), PAD, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = torch.tensor(s, dtype=torch.long)
    return out


# ---------------------------------------------------------------------------------------------- loader
class TranslationLoader(Shardable):
    """Length-bucketed batches of about ``max_tokens`` padded tokens (see the module docstring). Under torchrun
    each rank takes its part of every bucket; its ``share`` counts target tokens (the loss is their mean)."""

    def __init__(self, src_ids: list[list[int]], tgt_ids: list[list[int]], sources: list[str], references: list[str],
                 max_tokens: int, shuffle: bool = False, seed: int = 0, max_batch_size: int = 1024) -> None:
        if max_tokens < 1:
            raise DeepfoundryError(f"data.max_tokens must be >= 1, received {max_tokens}")
        self.src_ids, self.tgt_ids, self.sources, self.references = src_ids, tgt_ids, sources, references
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        order = sorted(range(len(src_ids)), key=lambda i: (len(src_ids[i]), len(tgt_ids[i])))
        self.batches: list[list[int]] = []
        current: list[int] = []
        longest = 0
        for i in order:
            size = max(len(src_ids[i]), len(tgt_ids[i]) + 1)  # tgt_in / tgt_out are one longer than y
            grown = max(longest, size)
            if current and (grown * (len(current) + 1) > max_tokens or len(current) >= max_batch_size):
                self.batches.append(current)
                current, grown = [], size
            current.append(i)
            longest = grown
        if current:
            self.batches.append(current)

    @property
    def num_samples(self) -> int:
        return len(self.src_ids)

    def __len__(self) -> int:
        return len(self.batches)

    def batch(self, idx: list[int]) -> dict[str, Any]:
        src = _pad([self.src_ids[i] for i in idx])
        tgt = _pad([[BOS, *self.tgt_ids[i], EOS] for i in idx])
        return {"src": src, "src_mask": src != PAD, "tgt_in": tgt[:, :-1], "tgt_out": tgt[:, 1:],
                "index": torch.tensor(idx, dtype=torch.long), "sources": [self.sources[i] for i in idx],
                "references": [self.references[i] for i in idx]}

    def epoch_batches(self, epoch: int, skip: int = 0) -> Iterator[dict[str, Any]]:
        order = range(len(self.batches))
        if self.shuffle:
            order = torch.randperm(len(self.batches), generator=torch.Generator().manual_seed(
                self.seed * 1_000_003 + epoch)).tolist()
        for k in list(order)[skip:]:
            idx = self.batches[k]
            if self.world > 1:  # this rank's part of the bucket, weighted by its target tokens (with EOS)
                a, b = self._part(0, len(idx))
                local = sum(len(self.tgt_ids[i]) + 1 for i in idx[a:b]) if self.share[0] else 0
                self.share = (local, sum(len(self.tgt_ids[i]) + 1 for i in idx))
                idx = idx[a:b]
            yield self.batch(idx)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.epoch_batches(self.epoch)


# ---------------------------------------------------------------------------------------------- bundle
def translation_bundle(pairs: dict[str, tuple[list[str], list[str]]], source: str, languages: tuple[str, str],
                       tokenizer: str = "bpe", vocab_size: int = 8000, min_freq: int = 1, lowercase: bool = False,
                       max_src_len: int = 128, max_tgt_len: int = 128, max_tokens: int = 6000,
                       eval_max_tokens: int = 12000, seed: int = 0, note: str = "") -> DataBundle:
    """Fit the joint tokeniser on ``pairs["train"]`` (both sides) and build the three loaders."""
    train_src, train_tgt = pairs["train"]
    tok = fit_tokenizer(tokenizer, train_src + train_tgt, vocab_size=vocab_size, min_freq=min_freq,
                        lowercase=lowercase)
    loaders, counts, dropped = [], {}, {}
    for split in ("train", "val", "test"):
        src_txt, tgt_txt = pairs[split]
        keep_s, keep_t, keep_src_txt, keep_ref = [], [], [], []
        src_enc = _encode_all(tok, src_txt)
        tgt_enc = _encode_all(tok, tgt_txt)
        n_drop = 0
        for s_raw, t_raw, s, t in zip(src_txt, tgt_txt, src_enc, tgt_enc):
            s = s + [EOS]
            if not s_raw.strip() or not t_raw.strip() or len(s) > max_src_len or len(t) + 1 > max_tgt_len:
                n_drop += 1
                continue
            keep_s.append(s)
            keep_t.append(t)
            keep_src_txt.append(s_raw)
            keep_ref.append(t_raw)
        if split == "train" and not keep_s:
            raise DeepfoundryError(f"'{source}' has no training pair within max_src_len={max_src_len} / "
                                   f"max_tgt_len={max_tgt_len} tokens")
        counts[split], dropped[split] = len(keep_s), n_drop
        loaders.append(TranslationLoader(keep_s, keep_t, keep_src_txt, keep_ref,
                                         max_tokens if split == "train" else eval_max_tokens,
                                         shuffle=split == "train", seed=seed))
    drop_note = "" if not any(dropped.values()) else (
        "; dropped (empty or longer than max_src_len/max_tgt_len): "
        + ", ".join(f"{v} {k}" for k, v in dropped.items() if v))
    info = {
        "task_type": "translation", "input_kind": "translation", "tokenizer": tok.to_json(),
        "source_language": languages[0], "target_language": languages[1], "source": source,
        "model_context": {"src_vocab_size": tok.vocab_size, "tgt_vocab_size": tok.vocab_size, "pad_id": PAD,
                          "bos_id": BOS, "eos_id": EOS, "max_src_len": max_src_len, "max_tgt_len": max_tgt_len},
        "max_src_len": max_src_len, "max_tgt_len": max_tgt_len,
        "num_train": counts["train"], "num_val": counts["val"], "num_test": counts["test"],
        "examples": [[s, r] for s, r in zip(loaders[2].sources[:4], loaders[2].references[:4])],
        "split_note": (f"{counts['train']:,} train / {counts['val']:,} val / {counts['test']:,} test pairs of "
                       f"'{source}' ({languages[0]}->{languages[1]}); joint {tok.kind} tokenizer, {tok.vocab_size} "
                       f"tokens, fitted on train; {len(loaders[0])} training batches of <= {max_tokens} tokens"
                       + drop_note + note),
    }
    return DataBundle(*loaders, info=info)


def _encode_all(tok: Tokenizer, texts: list[str]) -> list[list[int]]:
    backend = getattr(tok, "backend", None)
    if backend is not None:  # tokenizers' batch encoder runs in Rust threads
        return [e.ids for e in backend.encode_batch(texts)]
    return [tok.encode(t) for t in texts]


def tokenizer_of(info: dict[str, Any]) -> Tokenizer:
    """The run's saved joint tokeniser."""
    return tokenizer_from_json(info["tokenizer"])


def _random_split(src: list[str], tgt: list[str], val_fraction: float, test_fraction: float,
                  seed: int) -> dict[str, tuple[list[str], list[str]]]:
    """Sentence pairs of each split (:func:`deepfoundry.splits.permutation_split`)."""
    parts = permutation_split(len(src), val_fraction, test_fraction, seed)._asdict()
    return {k: ([src[i] for i in parts[k]], [tgt[i] for i in parts[k]]) for k in ("test", "val", "train")}


# ---------------------------------------------------------------------------------------------- data sets
def multi30k_files(root: str | Path, download: bool, src_lang: str = "en", tgt_lang: str = "de") -> Path:
    """The folder holding ``{train,val,test_2016_flickr}.{en,de}.gz``; ``download`` fetches missing files."""
    folder = Path(root) if root else Path("data") / "multi30k-en-de"
    names = [f"{stem}.{lang}.gz" for stem in MULTI30K_SPLITS.values() for lang in (src_lang, tgt_lang)]
    missing = [n for n in names if not (folder / n).is_file() and not (folder / n[:-3]).is_file()]
    if missing and not download:
        raise DeepfoundryError(f"Multi30k files missing in '{folder}': {', '.join(missing)}; pass --data-root FOLDER "
                               f"or --set data.download=true (fetches {MULTI30K_URL})")
    if missing:
        folder.mkdir(parents=True, exist_ok=True)
        for n in missing:
            try:
                urllib.request.urlretrieve(MULTI30K_URL + n, folder / n)
            except OSError as exc:
                raise DeepfoundryError(f"could not download {MULTI30K_URL + n}: {exc}") from None
    return folder


def _file(folder: Path, name: str) -> Path:
    return folder / name if (folder / name).is_file() else folder / name[:-3]


@DATASETS.register("multi30k")
def multi30k(*, root: str | None = None, download: bool = False, src_lang: str = "en", tgt_lang: str = "de",
             tokenizer: str = "bpe", vocab_size: int = 8000, max_src_len: int = 128, max_tgt_len: int = 128,
             max_tokens: int = 6000, eval_max_tokens: int = 12000, limit: int | None = None,
             seed: int = 0) -> DataBundle:
    """Multi30k task 1 (en->de captions): 29,000 / 1,014 / 1,000 pairs; joint BPE fitted on train.

    ``root`` holds ``train.en.gz``, ``train.de.gz``, ``val.*``, ``test_2016_flickr.*`` (or the same
    files uncompressed). ``limit`` keeps the first N training pairs (quick experiments).
    """
    folder = multi30k_files(root, download, src_lang, tgt_lang)
    pairs = {}
    for split, stem in MULTI30K_SPLITS.items():
        pairs[split] = read_parallel(_file(folder, f"{stem}.{src_lang}.gz"), _file(folder, f"{stem}.{tgt_lang}.gz"))
    if limit:
        pairs["train"] = (pairs["train"][0][:limit], pairs["train"][1][:limit])
    return translation_bundle(pairs, str(folder), (src_lang, tgt_lang), tokenizer, vocab_size, 1, False,
                              max_src_len, max_tgt_len, max_tokens, eval_max_tokens, seed,
                              note="; test is test_2016_flickr")


@DATASETS.register("parallel-text")
def parallel_text(*, root: str | None = None, src_file: str | None = None, tgt_file: str | None = None,
                  src_lang: str = "src", tgt_lang: str = "tgt", tokenizer: str = "bpe", vocab_size: int = 8000,
                  min_freq: int = 1, lowercase: bool = False, max_src_len: int = 128, max_tgt_len: int = 128,
                  max_tokens: int = 6000, eval_max_tokens: int = 12000, val_fraction: float = 0.05,
                  test_fraction: float = 0.05, seed: int = 0) -> DataBundle:
    """Your parallel corpus: two aligned files (src_file, tgt_file) or a source<TAB>target TSV (root)."""
    if src_file or tgt_file:
        if not (src_file and tgt_file):
            raise DeepfoundryError("parallel-text needs both data.src_file and data.tgt_file "
                                   "(or one TSV as --data-root)")
        src, tgt = read_parallel(src_file, tgt_file)
        source = f"{src_file} | {tgt_file}"
    elif root:
        src, tgt = read_tsv_pairs(root)
        source = str(root)
    else:
        raise DeepfoundryError("parallel-text needs --data-root PAIRS.tsv (source<TAB>target) or "
                               "--set data.src_file=A --set data.tgt_file=B")
    pairs = _random_split(src, tgt, val_fraction, test_fraction, seed)
    return translation_bundle(pairs, source, (src_lang, tgt_lang), tokenizer, vocab_size, min_freq, lowercase,
                              max_src_len, max_tgt_len, max_tokens, eval_max_tokens, seed)


# ---------------------------------------------------------------------------------------------- synthetic dates
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def format_date(d: _dt.date, style: int) -> str:
    """One of 8 human spellings of ``d`` (all unambiguous: numeric forms put the day first, European style)."""
    month, mon = MONTHS[d.month - 1], MONTHS[d.month - 1][:3]
    forms = [f"{d.day} {month} {d.year}", f"{month} {d.day}, {d.year}", f"{d.day} {mon} {d.year}",
             f"{WEEKDAYS[d.weekday()]}, {d.day} {month} {d.year}", f"{d.day:02d}.{d.month:02d}.{d.year}",
             f"{d.day} {month.lower()} {d.year}", f"{mon.upper()} {d.day} {d.year}",
             f"the {d.day}th of {month}, {d.year}" if d.day not in (1, 2, 3, 21, 22, 23, 31) else
             f"the {d.day}{'st' if d.day % 10 == 1 else 'nd' if d.day % 10 == 2 else 'rd'} of {month}, {d.year}"]
    return forms[style]


def synthetic_dates(n: int = 12000, seed: int = 0) -> tuple[list[str], list[str]]:
    """A synthetic (generated, not collected) translation corpus: human dates -> ISO 8601.

    Days are drawn uniformly from 1950-01-01 .. 2049-12-31 and spelled in one of 8 styles
    (:func:`format_date`: "12 March 2021", "March 12, 2021", "12 Mar 2021", "Friday, 12 March 2021",
    "12.03.2021", "12 march 2021", "MAR 12 2021", "the 12th of March, 2021"); the target is
    ``YYYY-MM-DD``. Reordering (month before day), a lookup (month names) and copying are all needed;
    the mapping is deterministic, so a good model reaches exact match near 1.
    """
    rng = np.random.default_rng(seed)
    start, span = _dt.date(1950, 1, 1), (_dt.date(2049, 12, 31) - _dt.date(1950, 1, 1)).days + 1
    src, tgt = [], []
    for day, style in zip(rng.integers(0, span, n).tolist(), rng.integers(0, 8, n).tolist()):
        d = start + _dt.timedelta(days=day)
        src.append(format_date(d, style))
        tgt.append(d.isoformat())
    return src, tgt


@DATASETS.register("dates-synthetic")
def dates_synthetic(*, size: int = 12000, max_tokens: int = 4096, eval_max_tokens: int = 16384,
                    val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0) -> DataBundle:
    """Synthetic date-format translation (offline, generated): '12 March 2021' -> '2021-03-12', characters."""
    src, tgt = synthetic_dates(size, seed=seed)
    pairs = _random_split(src, tgt, val_fraction, test_fraction, seed)
    return translation_bundle(pairs, "synthetic dates", ("human date", "ISO date"), "char", 1000, 1, False, 48, 16,
                              max_tokens, eval_max_tokens, seed,
                              note=" (generated by deepfoundry.data.translation.synthetic_dates)")
