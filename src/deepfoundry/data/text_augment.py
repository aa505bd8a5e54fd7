"""Text augmentation: EDA (Wei & Zou 2019, "Easy Data Augmentation Techniques for Boosting
Performance on Text Classification Tasks").

Four operations on the whitespace-separated words of a sentence of ``n`` words, each with a
strength ``alpha`` (``k = max(1, int(alpha n))`` words changed) and a probability ``p`` of acting
on a given text:

- ``SynonymReplacement``: replace ``k`` distinct non-stop words that have synonyms by a random synonym.
- ``RandomInsertion``: ``k`` times, insert a random synonym of a random word at a random position.
- ``RandomSwap``: ``k`` times, swap two random words.
- ``RandomDeletion``: delete each word with probability ``alpha`` (one word always survives).

Synonyms come from a file you supply (``synonyms: path``; one group of mutually synonymous words
or phrases per line, comma-separated; ``#`` starts a comment) and, with ``wordnet: true``, from
WordNet through nltk (needs ``nltk`` and its ``wordnet`` data installed). The preset ``eda`` is all
four at ``alpha = 0.1``, ``p = 0.5``; without a synonym source it keeps only swap and deletion.

Configured as ``data.augment`` on text classification data sets (``text-csv``,
``sentiment-synthetic``); applied to the raw training texts every epoch before tokenising, with a
generator seeded by ``(seed, epoch, sample)``: reproducible, and never applied to val/test/predict.

>>> aug = build_text_augment([{"name": "RandomSwap", "alpha": 0.2, "p": 1.0}], seed=0)
>>> aug("the plot was good but the acting was bad", np.random.default_rng(0)) != "the plot was good but the acting was bad"
True
"""
from __future__ import annotations

import difflib
import inspect
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import DeepfoundryError

STOP_WORDS = frozenset("""a an the and or but if of at by for with about against between into through during before
after above below to from up down in out on off over under again further then once here there when where why how
all any both each few more most other some such no nor not only own same so than too very s t can will just don
should now i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers
herself it its itself they them their theirs themselves what which who whom this that these those am is are was
were be been being have has had having do does did doing""".split())


class Synonyms:
    """A word -> synonyms lookup from a user file and/or WordNet."""

    def __init__(self, path: str | Path | None = None, wordnet: bool = False) -> None:
        self.table: dict[str, list[str]] = {}
        self.path = str(path) if path else None
        if path is not None:
            self._read(Path(path))
        self.wordnet = None
        if wordnet:
            try:
                from nltk.corpus import wordnet as wn

                wn.synsets("good")  # raises LookupError when the data is not installed
            except (ImportError, LookupError):
                raise DeepfoundryError("text augmentation: wordnet: true needs nltk and its WordNet data "
                                       "(pip install nltk; python -m nltk.downloader wordnet), or pass a "
                                       "synonym file with synonyms: PATH") from None
            self.wordnet = wn

    def _read(self, path: Path) -> None:
        if not path.is_file():
            raise DeepfoundryError(f"synonym file '{path}' does not exist (one comma-separated group of synonyms a line)")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            group = [w.strip().lower() for w in line.split(",") if w.strip()]
            if len(group) < 2:
                raise DeepfoundryError(f"synonym file '{path}', line {number}: a group needs 2+ comma-separated "
                                       f"words, received {line!r}")
            for w in group:
                self.table.setdefault(w, [])
                self.table[w].extend(s for s in group if s != w and s not in self.table[w])
        if not self.table:
            raise DeepfoundryError(f"synonym file '{path}' holds no synonym groups")

    def __bool__(self) -> bool:
        return bool(self.table) or self.wordnet is not None

    def of(self, word: str) -> list[str]:
        key = word.lower()
        out = list(self.table.get(key, []))
        if self.wordnet is not None:
            for syn in self.wordnet.synsets(key):
                for lemma in syn.lemma_names():
                    name = lemma.replace("_", " ").lower()
                    if name != key and name not in out:
                        out.append(name)
        return out


def _count(alpha: float, n: int) -> int:
    return max(1, int(alpha * n))


class TextOp:
    """One EDA operation: ``apply(words, rng) -> words``, acting on a text with probability ``p``."""

    needs_synonyms = False

    def __init__(self, alpha: float = 0.1, p: float = 0.5) -> None:
        name = type(self).__name__
        for key, v in (("alpha", alpha), ("p", p)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise DeepfoundryError(f"augment {name}: {key} must be in [0, 1], received {v!r}")
        self.alpha, self.p = float(alpha), float(p)
        self.synonyms: Synonyms | None = None

    def apply(self, words: list[str], rng: np.random.Generator) -> list[str]:
        raise NotImplementedError


class _SynonymOp(TextOp):
    needs_synonyms = True

    def __init__(self, alpha: float = 0.1, p: float = 0.5, synonyms: str | None = None, wordnet: bool = False) -> None:
        super().__init__(alpha, p)
        self.synonyms = Synonyms(synonyms, bool(wordnet))
        if not self.synonyms:
            raise DeepfoundryError(f"augment {type(self).__name__} needs a synonym source: synonyms: PATH "
                                   f"(comma-separated groups, one a line) or wordnet: true")

    def _candidates(self, words: list[str]) -> list[int]:
        return [i for i, w in enumerate(words) if w.lower() not in STOP_WORDS and self.synonyms.of(w)]


class SynonymReplacement(_SynonymOp):
    """Replace ``k`` distinct non-stop words that have synonyms by a random synonym each."""

    def apply(self, words: list[str], rng: np.random.Generator) -> list[str]:
        cand = self._candidates(words)
        out = list(words)
        for i in rng.permutation(cand)[:_count(self.alpha, len(words))]:
            options = self.synonyms.of(words[i])
            out[i] = options[int(rng.integers(len(options)))]
        return out


class RandomInsertion(_SynonymOp):
    """``k`` times: insert a random synonym of a random word (that has one) at a random position."""

    def apply(self, words: list[str], rng: np.random.Generator) -> list[str]:
        out = list(words)
        cand = [words[i] for i in self._candidates(words)]
        if not cand:
            return out
        for _ in range(_count(self.alpha, len(words))):
            options = self.synonyms.of(cand[int(rng.integers(len(cand)))])
            out.insert(int(rng.integers(len(out) + 1)), options[int(rng.integers(len(options)))])
        return out


class RandomSwap(TextOp):
    """``k`` times: swap the words at two random positions."""

    def apply(self, words: list[str], rng: np.random.Generator) -> list[str]:
        out = list(words)
        if len(out) < 2:
            return out
        for _ in range(_count(self.alpha, len(words))):
            i, j = rng.choice(len(out), size=2, replace=False)
            out[i], out[j] = out[j], out[i]
        return out


class RandomDeletion(TextOp):
    """Delete each word with probability ``alpha``; when every word would go, keep one at random."""

    def apply(self, words: list[str], rng: np.random.Generator) -> list[str]:
        if len(words) <= 1:
            return list(words)
        keep = rng.random(len(words)) >= self.alpha
        if not keep.any():
            return [words[int(rng.integers(len(words)))]]
        return [w for w, k in zip(words, keep) if k]


OPS = {cls.__name__: cls for cls in (SynonymReplacement, RandomInsertion, RandomSwap, RandomDeletion)}


class TextAugment:
    """Apply the configured operations in order to one text: ``text -> text``."""

    def __init__(self, ops: Sequence[TextOp], entries: list[dict[str, Any]], seed: int = 0) -> None:
        self.ops, self.entries, self.seed = list(ops), entries, seed

    def __call__(self, text: str, rng: np.random.Generator) -> str:
        words = text.split()
        if not words:
            return text
        for op in self.ops:
            if rng.random() < op.p:
                words = op.apply(words, rng)
        return " ".join(words)

    def for_sample(self, text: str, epoch: int, sample: int) -> str:
        """The augmented ``text`` of training sample ``sample`` in ``epoch`` (seeded, reproducible)."""
        return self(text, np.random.default_rng([self.seed, epoch, sample]))


def _expand(spec: Any) -> list[dict[str, Any]]:
    items = spec if isinstance(spec, list) else [spec]
    out: list[dict[str, Any]] = []
    for item in items:
        entry = {"name": item} if isinstance(item, str) else dict(item) if isinstance(item, dict) else None
        if entry is None or not isinstance(entry.get("name"), str):
            raise DeepfoundryError(f"data.augment: each text entry must be 'eda', an operation name or a mapping with "
                                   f"'name', received {item!r}")
        if entry["name"] == "eda":
            params = {k: v for k, v in entry.items() if k != "name"}
            source = {k: params.pop(k) for k in ("synonyms", "wordnet") if k in params}
            with_synonyms = bool(source.get("synonyms")) or (bool(source.get("wordnet")) and _wordnet_available())
            for name in ("SynonymReplacement", "RandomInsertion", "RandomSwap", "RandomDeletion"):
                if OPS[name].needs_synonyms and not with_synonyms:
                    continue  # no synonym source: the preset keeps the two operations that need none
                out.append({"name": name, **params, **(source if OPS[name].needs_synonyms else {})})
        else:
            out.append(entry)
    return out


def _wordnet_available() -> bool:
    try:
        from nltk.corpus import wordnet as wn

        wn.synsets("good")
        return True
    except (ImportError, LookupError):
        return False


def build_text_augment(spec: Any, seed: int = 0) -> TextAugment | None:
    """``data.augment`` of a text data set -> :class:`TextAugment` (``None`` for no augmentation)."""
    if spec is None or spec == "none" or spec == [] or spec is False:
        return None
    entries = _expand(spec)
    ops = []
    for entry in entries:
        name, params = entry["name"], {k: v for k, v in entry.items() if k != "name"}
        cls = OPS.get(name)
        if cls is None:
            names = ["eda", *OPS]
            close = difflib.get_close_matches(name, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(names)}"
            raise DeepfoundryError(f"text augmentation {name!r} is not known{hint}")
        accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        for key in params:
            if key not in accepted:
                raise DeepfoundryError(f"augment {name}: unknown parameter {key!r}; accepted: {', '.join(accepted)}")
        ops.append(cls(**params))
    return TextAugment(ops, entries, seed) if ops else None
