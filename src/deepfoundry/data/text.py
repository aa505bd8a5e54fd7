"""Text: tokenisers (character, word, BPE), a vocabulary with special tokens, and three data sets.

Tokenisers map a string to integer ids and back. Every vocabulary starts with the four special
tokens ``<pad>`` = 0, ``<unk>`` = 1, ``<bos>`` = 2, ``<eos>`` = 3; a symbol never seen in the training
split becomes ``<unk>``. A tokeniser is fitted on the training split only and saved with the run
(``info["tokenizer"]``, plain JSON), so ``predict`` and ``generate`` tokenise exactly as training did.

- ``char``: one id per Unicode character; ``decode(encode(s)) == s`` for characters seen in training.
- ``word``: words and punctuation (regex ``\\w+|[^\\w\\s]``), optionally lower-cased, kept when seen
  ``min_freq`` times (at most ``max_size`` words, most frequent first); decode joins with spaces.
- ``bpe``: byte-level byte-pair encoding from the ``tokenizers`` package (``vocab_size`` merges
  learned on the training text); byte level, so ``decode(encode(s)) == s`` for any string.

Data sets (``deepfoundry list datasets``):

- ``tinyshakespeare``: character language modelling on Karpathy's 1,115,394 characters; the first
  90% trains, the held-out 10% is split into val (first half) and test (second half), contiguous.
- ``text-csv``: a user's CSV/TSV with a text column and a label column (text classification).
- ``sentiment-synthetic``: a generated (synthetic, offline) sentiment corpus where word order
  decides the label (negation, intensifiers, "but" clauses); see :func:`synthetic_sentiment`.

>>> tok = CharTokenizer.fit("hello")
>>> tok.decode(tok.encode("hole"))
'hole'
"""
from __future__ import annotations

import csv
import re
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from ..errors import DeepfoundryError
from ..registry import DATASETS
from ..splits import stratified_split
from .core import DataBundle, Shardable

SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")
PAD, UNK, BOS, EOS = range(4)
SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
_WORD_RE = re.compile(r"\w+|[^\w\s]")


# ---------------------------------------------------------------------------------------------- tokenisers
class Tokenizer:
    """Base: ``encode(text) -> list[int]``, ``decode(ids) -> str``, ``to_json()`` / :func:`tokenizer_from_json`."""

    kind = "base"

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: list[int]) -> str:
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        raise NotImplementedError


class _VocabTokenizer(Tokenizer):
    """A token list (specials first) and its inverse; unseen symbols map to ``<unk>``."""

    def __init__(self, tokens: list[str]) -> None:
        if list(tokens[:4]) != list(SPECIALS):
            raise DeepfoundryError(f"a vocabulary must start with {', '.join(SPECIALS)}; received "
                                   f"{', '.join(map(repr, tokens[:4])) or 'none'}")
        self.tokens = list(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def ids(self, symbols: list[str]) -> list[int]:
        get = self.index.get
        return [get(s, UNK) for s in symbols]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "tokens": self.tokens, **self._options()}

    def _options(self) -> dict[str, Any]:
        return {}


class CharTokenizer(_VocabTokenizer):
    """One token per character; the vocabulary is the sorted set of characters in the training text."""

    kind = "char"

    @classmethod
    def fit(cls, text: str) -> "CharTokenizer":
        return cls([*SPECIALS, *sorted(set(text))])

    def encode(self, text: str) -> list[int]:
        return self.ids(list(text))

    def decode(self, ids: list[int]) -> str:
        return "".join(self.tokens[i] for i in ids if i >= len(SPECIALS) or i == UNK)


class WordTokenizer(_VocabTokenizer):
    """Words and punctuation marks; the ``max_size`` most frequent with at least ``min_freq`` occurrences."""

    kind = "word"

    def __init__(self, tokens: list[str], lowercase: bool = True) -> None:
        super().__init__(tokens)
        self.lowercase = lowercase

    def split(self, text: str) -> list[str]:
        return _WORD_RE.findall(text.lower() if self.lowercase else text)

    @classmethod
    def fit(cls, texts: list[str], min_freq: int = 1, max_size: int = 30000, lowercase: bool = True) -> "WordTokenizer":
        counts: Counter[str] = Counter()
        splitter = cls(list(SPECIALS), lowercase)
        for t in texts:
            counts.update(splitter.split(t))
        words = [w for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_freq]
        return cls([*SPECIALS, *words[:max(0, max_size - len(SPECIALS))]], lowercase)

    def encode(self, text: str) -> list[int]:
        return self.ids(self.split(text))

    def decode(self, ids: list[int]) -> str:
        return " ".join(self.tokens[i] for i in ids if i >= len(SPECIALS) or i == UNK)

    def _options(self) -> dict[str, Any]:
        return {"lowercase": self.lowercase}


class BPETokenizer(Tokenizer):
    """Byte-level BPE (``tokenizers``): merges learned on the training text only."""

    kind = "bpe"

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        # text that spells a special token ("<pad>") is text: encoded byte by byte, not as the special id, so
        # decode(encode(s)) == s for every string and a user cannot inject padding or an end of sentence
        if hasattr(backend, "encode_special_tokens"):  # a property of recent tokenizers releases
            backend.encode_special_tokens = True

    @classmethod
    def fit(cls, texts: list[str], vocab_size: int = 4000, min_freq: int = 2) -> "BPETokenizer":
        from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers

        tok = HFTokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_freq, special_tokens=list(SPECIALS),
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text).ids

    def decode(self, ids: list[int]) -> str:
        return self.backend.decode([i for i in ids if i >= len(SPECIALS)])

    def to_json(self) -> dict[str, Any]:
        return {"kind": "bpe", "backend": self.backend.to_str()}


def tokenizer_from_json(obj: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokeniser saved by ``to_json`` (``info["tokenizer"]`` of a run); a malformed one is a one-line
    :class:`DeepfoundryError` naming what is wrong."""
    where = "the saved tokenizer (info.tokenizer in the run's model.json)"
    if not isinstance(obj, dict):
        raise DeepfoundryError(f"{where} must be an object with a 'kind', received {type(obj).__name__}")
    kind = obj.get("kind")
    if kind in ("char", "word"):
        tokens = obj.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            received = (type(tokens).__name__ if not isinstance(tokens, list) else
                        f"a list holding {next(t for t in tokens if not isinstance(t, str))!r}")
            raise DeepfoundryError(f"{where}: 'tokens' of a {kind} tokenizer must be a list of strings, received "
                                   f"{received}"[:300])
        if kind == "char":
            return CharTokenizer(tokens)
        lowercase = obj.get("lowercase", True)
        if not isinstance(lowercase, bool):
            raise DeepfoundryError(f"{where}: 'lowercase' must be true or false, received {lowercase!r}")
        return WordTokenizer(tokens, lowercase)
    if kind == "bpe":
        from tokenizers import Tokenizer as HFTokenizer

        backend = obj.get("backend")
        if not isinstance(backend, str):
            raise DeepfoundryError(f"{where}: 'backend' of a bpe tokenizer must be the tokenizers JSON string, "
                                   f"received {type(backend).__name__}")
        try:
            return BPETokenizer(HFTokenizer.from_str(backend))
        except Exception as exc:  # tokenizers raises a plain Exception for JSON it cannot read
            raise DeepfoundryError(f"{where}: the bpe tokenizer cannot be rebuilt: "
                                   f"{' '.join(str(exc).split())[:200]}") from None
    raise DeepfoundryError(f"unknown tokenizer kind {kind!r} in {where}; expected char, word or bpe")


def fit_tokenizer(kind: str, texts: list[str], vocab_size: int = 4000, min_freq: int = 1,
                  lowercase: bool = True) -> Tokenizer:
    """Fit a ``char``, ``word`` or ``bpe`` tokeniser on training texts."""
    if kind == "char":
        return CharTokenizer.fit("".join(texts))
    if kind == "word":
        return WordTokenizer.fit(texts, min_freq=min_freq, max_size=vocab_size, lowercase=lowercase)
    if kind == "bpe":
        return BPETokenizer.fit(texts, vocab_size=vocab_size, min_freq=max(2, min_freq))
    raise DeepfoundryError(f"tokenizer {kind!r} is not one of char, word, bpe")


# ---------------------------------------------------------------------------------------------- reading files
def read_text_file(path: str | Path) -> str:
    """A UTF-8 text file; empty or undecodable files are one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise DeepfoundryError(f"text file '{path}' does not exist")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DeepfoundryError(f"text file '{path}' is not UTF-8 (byte {exc.start}: {raw[exc.start:exc.start + 1]!r}); "
                               f"convert it, e.g. iconv -f latin1 -t utf-8") from None
    if not text.strip():
        raise DeepfoundryError(f"text file '{path}' is empty")
    return text


# ---------------------------------------------------------------------------------------------- loaders
class LMWindowLoader(Shardable):
    """Windows of a token stream for next-token prediction: batches ``(x, y)`` of shape (B, T), ``y = x`` shifted by one.

    Training (``shuffle=True``): each epoch starts the windows at a random offset in ``[0, T)`` and visits
    the non-overlapping windows in a random order, so every token is predicted once per epoch and the
    window boundaries move between epochs. Epoch ``e`` draws from a generator seeded with ``(seed, e)``,
    so ``epoch_batches(e, skip=k)`` replays an interrupted epoch exactly. Evaluation (``shuffle=False``):
    contiguous windows from offset 0 (the last partial window is kept, shorter).
    """

    def __init__(self, ids: torch.Tensor, seq_len: int, batch_size: int, shuffle: bool = False, seed: int = 0) -> None:
        if len(ids) < 2:
            raise DeepfoundryError(f"a token stream of {len(ids)} tokens is too short to predict the next token")
        self.ids, self.seq_len, self.batch_size, self.shuffle, self.seed = ids, seq_len, batch_size, shuffle, seed
        self.epoch = 0

    def _starts(self, epoch: int) -> torch.Tensor:
        t = self.seq_len
        if not self.shuffle:
            return torch.arange(0, len(self.ids) - 1, t)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        offset = int(torch.randint(0, t, (1,), generator=gen))
        starts = torch.arange(offset, len(self.ids) - t, t)
        return starts[torch.randperm(len(starts), generator=gen)]

    @property
    def num_samples(self) -> int:
        return len(self._starts(self.epoch))

    def __len__(self) -> int:
        return -(-self.num_samples // self.batch_size)

    def epoch_batches(self, epoch: int, skip: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        starts, t, bs = self._starts(epoch), self.seq_len, self.batch_size
        if self.shuffle:  # full windows: one gather per batch
            steps = torch.arange(t + 1)
            for i in range(skip, len(self)):
                a, b = (i * bs, (i + 1) * bs) if self.world == 1 else self._part(i * bs, min((i + 1) * bs, len(starts)))
                w = self.ids[starts[a:b, None] + steps]  # (B, T+1): every window has T targets
                yield w[:, :-1], w[:, 1:]
            return
        for i in range(skip, len(self)):
            chunk = [self.ids[s:s + t + 1] for s in starts[i * bs:(i + 1) * bs].tolist()]
            w = pad_sequence(chunk, batch_first=True, padding_value=PAD)  # last window may be shorter
            y = w[:, 1:].clone()
            for j, c in enumerate(chunk):
                y[j, len(c) - 1:] = -100  # ignored by the loss
            yield w[:, :-1], y

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch_batches(self.epoch)


class PaddedTextLoader(Shardable):
    """Variable-length token sequences with labels: batches ``((tokens (B, L), lengths (B,)), labels (B,))``.

    Each batch is padded with ``<pad>`` to its longest sequence; the recurrent models pack it with
    ``pack_padded_sequence(tokens, lengths)`` so padding never enters the recurrence. Shuffling follows
    :class:`~deepfoundry.data.core.ArrayLoader` (permutation seeded with ``(seed, epoch)``).
    """

    def __init__(self, sequences: list[list[int]], labels: torch.Tensor, batch_size: int, shuffle: bool = False,
                 seed: int = 0, texts: list[str] | None = None, tokenizer: Tokenizer | None = None,
                 max_length: int | None = None) -> None:
        self.seqs = [torch.tensor(s if s else [UNK], dtype=torch.long) for s in sequences]
        self.labels, self.batch_size, self.shuffle, self.seed = labels, batch_size, shuffle, seed
        self.epoch = 0
        self.texts, self.tokenizer, self.max_length = texts, tokenizer, max_length  # raw texts: for augmentation
        self.augment: Any = None  # a data.text_augment.TextAugment, applied to raw texts each epoch (training only)

    def set_augment(self, augment: Any) -> None:
        """Augment the raw texts (``augment.for_sample(text, epoch, i)``) before tokenising every batch."""
        if self.texts is None or self.tokenizer is None:
            raise DeepfoundryError("this text loader keeps no raw texts, so it cannot augment them")
        self.augment = augment

    def _sequence(self, j: int, epoch: int) -> torch.Tensor:
        if self.augment is None:
            return self.seqs[j]
        ids = self.tokenizer.encode(self.augment.for_sample(self.texts[j], epoch, j))[:self.max_length] or [UNK]
        return torch.tensor(ids, dtype=torch.long)

    @property
    def num_samples(self) -> int:
        return len(self.seqs)

    def __len__(self) -> int:
        return -(-len(self.seqs) // self.batch_size)

    def epoch_batches(self, epoch: int, skip: int = 0) -> Iterator[tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]]:
        order = torch.arange(len(self.seqs))
        if self.shuffle:
            order = torch.randperm(len(self.seqs), generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
        bs = self.batch_size
        for i in range(skip, len(self)):
            a, b = (i * bs, (i + 1) * bs) if self.world == 1 else self._part(i * bs, min((i + 1) * bs, len(order)))
            idx = order[a:b].tolist()
            yield collate([self._sequence(j, epoch) for j in idx]), self.labels[idx]

    def __iter__(self) -> Iterator[tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]]:
        return self.epoch_batches(self.epoch)


def collate(seqs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad 1-D token tensors to ``(B, L)`` with ``<pad>``; return them with their lengths ``(B,)``."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    return pad_sequence(seqs, batch_first=True, padding_value=PAD), lengths


def encode_texts(tokenizer: Tokenizer, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenise raw strings for a classifier: ``(tokens (B, L), lengths (B,))``; longer than ``max_length`` is an error."""
    if isinstance(texts, str):
        texts = [texts]
    seqs = []
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise DeepfoundryError(f"text input {i} is a {type(t).__name__}, expected a string")
        ids = tokenizer.encode(t) or [UNK]
        if len(ids) > max_length:
            raise DeepfoundryError(f"text input {i} has {len(ids)} tokens, longer than the model's maximum of "
                                   f"{max_length} (set data.max_length when training, or shorten the text)")
        seqs.append(torch.tensor(ids, dtype=torch.long))
    return collate(seqs)


# ---------------------------------------------------------------------------------------------- data sets
@DATASETS.register("tinyshakespeare")
def tinyshakespeare(*, root: str | None = None, download: bool = False, batch_size: int = 64,
                    eval_batch_size: int = 1024, seq_len: int = 128, eval_seq_len: int = 512,
                    tokenizer: str = "char", vocab_size: int = 4000, val_fraction: float = 0.1,
                    limit: int | None = None, seed: int = 0) -> DataBundle:
    """Tiny Shakespeare (1.1M characters) for language modelling; first 90% train, last 10% val + test.

    ``root`` is a folder holding ``input.txt`` or the file itself; ``download`` fetches Karpathy's copy
    into ``root`` (default ``data/tinyshakespeare``). ``seq_len`` is the training window (truncated
    backprop through time), ``eval_seq_len`` the evaluation window. ``limit`` keeps the first N characters.
    """
    path = Path(root) if root else Path("data") / "tinyshakespeare"
    if path.is_dir() or not path.suffix:
        path = path / "input.txt"
    if not path.is_file():
        if not download:
            raise DeepfoundryError(f"tiny Shakespeare not found at '{path}'; pass --data-root FOLDER_OR_FILE or "
                                   f"--set data.download=true (fetches {SHAKESPEARE_URL})")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            urllib.request.urlretrieve(SHAKESPEARE_URL, path)
        except OSError as exc:
            raise DeepfoundryError(f"could not download {SHAKESPEARE_URL}: {exc}") from None
    text = read_text_file(path)
    if limit:
        text = text[:limit]
    return language_model_bundle(text, str(path), tokenizer, vocab_size, val_fraction, seq_len, eval_seq_len,
                                 batch_size, eval_batch_size, seed)


def language_model_bundle(text: str, source: str, tokenizer: str, vocab_size: int, val_fraction: float,
                          seq_len: int, eval_seq_len: int, batch_size: int, eval_batch_size: int,
                          seed: int) -> DataBundle:
    """Contiguous split of one text: train ``[0, 1-f)``, val and test the two halves of the last ``f``."""
    n = len(text)
    cut = int(round(n * (1 - val_fraction)))
    mid = cut + (n - cut) // 2
    parts = text[:cut], text[cut:mid], text[mid:]
    tok = fit_tokenizer(tokenizer, [parts[0]], vocab_size=vocab_size)
    ids = [torch.tensor(tok.encode(p), dtype=torch.long) for p in parts]
    if min(len(i) for i in ids) < 2:
        raise DeepfoundryError(f"'{source}' ({n} characters) is too short to split into train/val/test")
    info = {
        "task_type": "language_model", "input_kind": "text", "tokenizer": tok.to_json(),
        "model_context": {"vocab_size": tok.vocab_size}, "seq_len": seq_len, "source": source,
        "num_train_tokens": len(ids[0]), "num_val_tokens": len(ids[1]), "num_test_tokens": len(ids[2]),
        "split_note": (f"{len(parts[0]):,} train / {len(parts[1]):,} val / {len(parts[2]):,} test characters of "
                       f"'{source}' (contiguous: first {1 - val_fraction:.0%} train, then val, then test); "
                       f"{tok.kind} tokenizer, {tok.vocab_size} tokens"),
    }
    return DataBundle(train=LMWindowLoader(ids[0], seq_len, batch_size, shuffle=True, seed=seed),
                      val=LMWindowLoader(ids[1], eval_seq_len, max(1, eval_batch_size // 16)),
                      test=LMWindowLoader(ids[2], eval_seq_len, max(1, eval_batch_size // 16)), info=info)


def classification_bundle(texts: list[str], labels: list[str], source: str, tokenizer: str, vocab_size: int,
                          min_freq: int, max_length: int, val_fraction: float, test_fraction: float,
                          batch_size: int, eval_batch_size: int, seed: int, note: str = "") -> DataBundle:
    """Stratified random split of labelled texts; the tokeniser is fitted on the training texts only."""
    class_names = sorted(set(labels))
    if len(class_names) < 2:
        raise DeepfoundryError(f"'{source}' has {len(class_names)} distinct label(s); classification needs at least 2")
    y = np.array([class_names.index(lab) for lab in labels], dtype=np.int64)
    parts = stratified_split(y, val_fraction, test_fraction, seed, strict=False)
    tok = fit_tokenizer(tokenizer, [texts[i] for i in parts[0]], vocab_size=vocab_size, min_freq=min_freq)
    encoded = [tok.encode(t) for t in texts]
    truncated = sum(len(e) > max_length for e in encoded)
    encoded = [e[:max_length] for e in encoded]
    loaders = [PaddedTextLoader([encoded[i] for i in idx], torch.from_numpy(y[idx]),
                                batch_size if k == 0 else eval_batch_size, shuffle=k == 0, seed=seed,
                                **({"texts": [texts[i] for i in idx], "tokenizer": tok, "max_length": max_length}
                                   if k == 0 else {}))  # raw training texts, for data.augment
               for k, idx in enumerate(parts)]
    info = {
        "task_type": "classification", "input_kind": "text", "tokenizer": tok.to_json(), "max_length": max_length,
        "num_classes": len(class_names), "class_names": class_names, "source": source,
        "model_context": {"vocab_size": tok.vocab_size, "max_length": max_length},
        "num_train": len(parts[0]), "num_val": len(parts[1]), "num_test": len(parts[2]),
        "split_note": (f"{len(parts[0]):,} train / {len(parts[1]):,} val / {len(parts[2]):,} test texts of "
                       f"'{source}' (stratified, seed {seed}); {tok.kind} tokenizer, {tok.vocab_size} tokens"
                       + (f"; {truncated} texts truncated to {max_length} tokens" if truncated else "") + note),
    }
    return DataBundle(*loaders, info=info)


def read_labelled_table(path: str | Path, text_column: str, label_column: str, delimiter: str | None) -> tuple[list[str], list[str]]:
    """Rows of a CSV/TSV file as (texts, labels); a missing column names the columns present."""
    path = Path(path)
    text = read_text_file(path)
    if delimiter is None:
        delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
    columns = reader.fieldnames or []
    for col, key in ((text_column, "text_column"), (label_column, "label_column")):
        if col not in columns:
            raise DeepfoundryError(f"column {col!r} not in '{path}'; columns present: {', '.join(columns) or 'none'} "
                                   f"(set data.{key})")
    texts, labels = [], []
    for row in reader:
        if row.get(text_column) is None or row.get(label_column) in (None, ""):
            continue
        texts.append(row[text_column])
        labels.append(row[label_column].strip())
    if not texts:
        raise DeepfoundryError(f"'{path}' has a header but no rows with both {text_column!r} and {label_column!r}")
    return texts, labels


@DATASETS.register("text-csv")
def text_csv(*, root: str | None = None, text_column: str = "text", label_column: str = "label",
             delimiter: str | None = None, tokenizer: str = "word", vocab_size: int = 20000, min_freq: int = 1,
             max_length: int = 256, val_fraction: float = 0.1, test_fraction: float = 0.2, batch_size: int = 64,
             eval_batch_size: int = 1024, seed: int = 0) -> DataBundle:
    """Text classification on your CSV/TSV file (columns text,label by default; ``root`` is the file)."""
    if not root:
        raise DeepfoundryError("text-csv needs the file: --data-root reviews.csv (columns text,label, or set "
                               "data.text_column / data.label_column)")
    texts, labels = read_labelled_table(root, text_column, label_column, delimiter)
    return classification_bundle(texts, labels, str(root), tokenizer, vocab_size, min_freq, max_length,
                                 val_fraction, test_fraction, batch_size, eval_batch_size, seed)


# ---------------------------------------------------------------------------------------------- synthetic sentiment
LEXICON = {
    "positive": ["good", "great", "excellent", "wonderful", "brilliant", "charming", "superb", "enjoyable",
                 "moving", "delightful", "clever", "beautiful"],
    "negative": ["bad", "awful", "terrible", "boring", "dull", "weak", "clumsy", "tedious", "poor", "bland",
                 "painful", "forgettable"],
    "nouns": ["film", "movie", "plot", "acting", "script", "ending", "soundtrack", "cast", "dialogue", "pacing",
              "direction", "story"],
    "intensifiers": ["very", "really", "truly", "quite", "extremely", "remarkably"],
    "negators": ["not", "never", "hardly"],
}


def _clause(rng: np.random.Generator) -> tuple[str, int]:
    """``the NOUN was [NEGATOR] [INTENSIFIER] ADJ``: polarity of ADJ, flipped by a negator."""
    polarity = int(rng.integers(2))
    adj = rng.choice(LEXICON["positive"] if polarity else LEXICON["negative"])
    words = ["the", rng.choice(LEXICON["nouns"]), rng.choice(["was", "is", "felt", "seemed"])]
    negated = rng.random() < 0.4
    if negated:
        words.append(rng.choice(LEXICON["negators"]))
    if rng.random() < 0.5:
        words.append(rng.choice(LEXICON["intensifiers"]))
    words.append(adj)
    return " ".join(words), polarity ^ int(negated)


def synthetic_sentiment(n: int = 6000, seed: int = 0) -> tuple[list[str], list[str]]:
    """A synthetic (generated, not collected) sentiment corpus in which word order decides the label.

    Each review is one clause ``the NOUN was [not|never|hardly] [very|...] ADJ`` or two joined by
    ``but``. The lexicon (:data:`LEXICON`) has 12 positive and 12 negative adjectives. A clause's
    polarity is its adjective's, flipped by a negator; a review's label is its only clause's polarity,
    or, with ``but``, the polarity of the clause *after* ``but``. So "the plot was good but the acting
    was bad" is negative while "the plot was bad but the acting was good" is positive: the same bag
    of words with opposite labels, which an order-blind model cannot separate.
    """
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(n):
        first, pol = _clause(rng)
        if rng.random() < 0.5:
            second, pol = _clause(rng)
            first = f"{first} but {second}"
        texts.append(first)
        labels.append("positive" if pol else "negative")
    return texts, labels


@DATASETS.register("sentiment-synthetic")
def sentiment_synthetic(*, size: int = 6000, tokenizer: str = "word", max_length: int = 32,
                        val_fraction: float = 0.1, test_fraction: float = 0.2, batch_size: int = 64,
                        eval_batch_size: int = 1024, seed: int = 0) -> DataBundle:
    """Synthetic sentiment reviews (offline, generated) where negation and 'but' make word order matter."""
    texts, labels = synthetic_sentiment(size, seed=seed)
    return classification_bundle(texts, labels, "synthetic sentiment corpus", tokenizer, 1000, 1, max_length,
                                 val_fraction, test_fraction, batch_size, eval_batch_size, seed,
                                 note=" (generated by deepfoundry.data.text.synthetic_sentiment)")


def bag_of_words_baseline(texts: list[str], labels: list[str], val_fraction: float = 0.1,
                          test_fraction: float = 0.2, seed: int = 0) -> dict[str, float]:
    """Order-blind contrast: logistic regression on word counts, same split as :func:`classification_bundle`."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    class_names = sorted(set(labels))
    y = np.array([class_names.index(lab) for lab in labels])
    train, _, test = stratified_split(y, val_fraction, test_fraction, seed, strict=False)
    vec = CountVectorizer(token_pattern=r"\w+|[^\w\s]")
    xtr = vec.fit_transform([texts[i] for i in train])
    clf = LogisticRegression(max_iter=2000).fit(xtr, y[train])
    pred = clf.predict(vec.transform([texts[i] for i in test]))
    return {"accuracy": float(accuracy_score(y[test], pred)), "f1_macro": float(f1_score(y[test], pred, average="macro"))}
