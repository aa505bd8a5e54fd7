"""What every dataset builder returns, and the fast in-memory loader the Trainer iterates.

A dataset builder (registered in :data:`deepfoundry.registry.DATASETS`) returns :class:`Splits`:
tensors for train / val / test and an ``info`` dict of facts the model builder and the saved
run need (``num_classes``, ``class_names``, ``input_shape``, ``task_type``, ...).
:func:`build_data` fits the input standardisation on the training split only, applies it to all
three splits and wraps them in :class:`ArrayLoader` objects.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

from ..errors import DeepfoundryError


@dataclass
class Splits:
    """Raw tensors of one data set: inputs as float in [0, 1] for images, raw values for tables."""

    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    info: dict[str, Any] = field(default_factory=dict)


class Shardable:
    """Per-process shares of every batch for a torchrun job (``torch.utils.data.DistributedSampler``
    semantics, one batch at a time): after ``shard(rank, world)``, batch ``i`` of the global order (the same
    seeded permutation on every rank) is cut into ``world`` contiguous parts whose sizes differ by at most one
    and this loader yields part ``rank``. ``share`` is ``(n_r, n)`` for the batch just yielded: this rank's
    count of loss terms and the batch's, from which the Trainer weights the rank's loss so that the averaged
    gradient is the single-process one (engine/distributed.py). A part that would be empty (a last batch
    smaller than ``world``) is one sample of the batch with ``n_r = 0``: it takes part in the step and adds
    nothing. ``len(loader)`` stays the number of global batches, the same on every rank."""

    rank, world = 0, 1
    share: tuple[int, int] = (1, 1)

    def shard(self, rank: int, world: int) -> None:
        if not 0 <= rank < world:
            raise DeepfoundryError(f"rank {rank} is outside 0..{world - 1}")
        self.rank, self.world = rank, world

    def _part(self, lo: int, hi: int) -> tuple[int, int]:
        """This rank's positions ``[a, b)`` of the batch at positions ``[lo, hi)``; sets ``share``."""
        n = hi - lo
        q, r = divmod(n, self.world)
        a = lo + self.rank * q + min(self.rank, r)
        b = a + q + (1 if self.rank < r else 0)
        self.share = (b - a, n)
        return (a, b) if b > a else (lo, lo + 1)


class ArrayLoader(Shardable):
    """Batches of in-memory tensors, without per-sample collation.

    Each epoch permutes the whole data set once (one gather) and yields contiguous slices, which is
    cheaper than indexing every batch. The permutation of epoch ``e`` comes from a generator seeded
    with ``(seed, e)``, so an interrupted epoch can be replayed exactly: ``epoch_batches(e, skip=k)``
    yields the same batches as the uninterrupted epoch from batch ``k`` on.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool = False,
                 seed: int = 0, drop_last: bool = False) -> None:
        if len(x) != len(y):
            raise DeepfoundryError(f"inputs and targets differ in length: {len(x)} vs {len(y)}")
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.epoch = 0
        # data.augment: ``(batch, epoch=, index=) -> batch``, applied by the Trainer to training batches on the device
        self.batch_transform: Any = None
        # per-sample loss weights (N,) (fairness.reweigh): batches become ``(x, y, w)``, permuted alike
        self.weights: torch.Tensor | None = None
        self.sampling = "shuffle"  # or "poisson" (see use_poisson_sampling)
        self.on_empty_draw: Any = None  # poisson: called for each draw that took no sample (and was not yielded)

    def use_poisson_sampling(self) -> float:
        """Switch training batches to Poisson sampling and return the sampling rate ``q = batch_size / N``.

        Each of the ``ceil(N / batch_size)`` draws of an epoch takes every sample independently with
        probability ``q``, so batch sizes vary around ``batch_size``. This is the sampling that the
        privacy amplification of DP-SGD's accountant assumes (Abadi et al. 2016; Mironov et al. 2019):
        fixed shuffled batches do not earn the epsilon the accountant reports. A draw that takes no
        sample (probability ``(1 - q)^N``) is not yielded; ``on_empty_draw()`` is called for it instead,
        so an accountant still counts it.
        """
        self.sampling = "poisson"
        return min(1.0, self.batch_size / max(1, len(self.x)))

    def __len__(self) -> int:
        n = len(self.x)
        if self.sampling == "poisson":
            return -(-n // self.batch_size)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self.x)

    def epoch_batches(self, epoch: int, skip: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.sampling == "poisson":
            yield from self._poisson_batches(epoch, skip)
            return
        x, y, w = self.x, self.y, self.weights
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(len(x), generator=gen)
            x, y = x[perm], y[perm]
            w = w[perm] if w is not None else None
        bs = self.batch_size
        if self.world > 1:  # torchrun: this rank's part of every batch (Shardable)
            for i in range(skip, len(self)):
                a, b = self._part(i * bs, min((i + 1) * bs, len(x)))
                yield (x[a:b], y[a:b]) if w is None else (x[a:b], y[a:b], w[a:b])
            return
        for i in range(skip, len(self)):
            if w is None:
                yield x[i * bs:(i + 1) * bs], y[i * bs:(i + 1) * bs]
            else:
                yield x[i * bs:(i + 1) * bs], y[i * bs:(i + 1) * bs], w[i * bs:(i + 1) * bs]

    def _poisson_batches(self, epoch: int, skip: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Draw ``len(self)`` Poisson batches from a generator seeded with ``(seed, epoch)``; the first ``skip``
        non-empty ones are drawn again but not yielded (an exact resume), nor their empty draws reported."""
        n = len(self.x)
        q = self.use_poisson_sampling()
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        taken = 0
        for _ in range(len(self)):
            index = (torch.rand(n, generator=gen) < q).nonzero().squeeze(1)  # each sample with probability q
            if len(index) == 0:
                if taken >= skip and self.on_empty_draw is not None:
                    self.on_empty_draw()
                continue
            taken += 1
            if taken > skip:
                if self.weights is None:
                    yield self.x[index], self.y[index]
                else:  # reweighing under DP-SGD: the weights follow their samples
                    yield self.x[index], self.y[index], self.weights[index]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch_batches(self.epoch)


@dataclass
class DataBundle:
    """Train / val / test loaders plus ``info`` (shapes, classes, fitted preprocessing).

    ``frames`` (tabular data only): each split's raw rows (a pandas DataFrame per split name, in loader
    order), columns dropped from the features (``data.drop``) included, so that a fairness audit can
    group by a column the model never saw."""

    train: ArrayLoader
    val: ArrayLoader
    test: ArrayLoader
    info: dict[str, Any]
    frames: dict[str, Any] | None = None

    def loader(self, split: str) -> ArrayLoader:
        if split not in ("train", "val", "test"):
            raise DeepfoundryError(f"split {split!r} is not one of train, val, test")
        return getattr(self, split)


def _stat_shape(x: torch.Tensor) -> tuple[int, ...]:
    """Images (N, C, H, W) are standardised per channel, tables (N, F) per feature."""
    return (1, x.shape[1], 1, 1) if x.dim() == 4 else (1, *x.shape[1:])


def fit_standardize(x: torch.Tensor) -> dict[str, Any]:
    """Mean and standard deviation per channel (images) or per feature (tables) of ``x``."""
    dims = [0, 2, 3] if x.dim() == 4 else [0]
    mean = x.double().mean(dim=dims)
    std = x.double().std(dim=dims).clamp_min(1e-8)
    return {"kind": "standardize", "mean": mean.tolist(), "std": std.tolist()}


def apply_preprocess(x: torch.Tensor, preprocess: dict[str, Any] | None) -> torch.Tensor:
    """Apply a fitted preprocessing (``info['preprocess']``) to raw inputs."""
    x = x.float()
    if not preprocess:
        return x
    if preprocess.get("kind") != "standardize":
        raise DeepfoundryError(f"unknown preprocessing kind {preprocess.get('kind')!r}")
    shape = _stat_shape(x)
    try:  # a run's saved statistics (model.json): a damaged entry is one line, not a reshape error
        mean = torch.tensor(preprocess["mean"], dtype=torch.float32).reshape(shape)
        std = torch.tensor(preprocess["std"], dtype=torch.float32).reshape(shape)
    except (KeyError, TypeError, ValueError, RuntimeError):
        raise DeepfoundryError(f"the saved standardisation (info.preprocess) does not fit inputs of shape "
                               f"{tuple(x.shape[1:])}: it needs 'mean' and 'std', {math.prod(shape)} numbers each"
                               ) from None
    if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
        raise DeepfoundryError("the saved standardisation (info.preprocess) holds a non-finite mean or a standard "
                               "deviation that is not positive")
    return (x - mean) / std


CONTEXT_KEYS = ("num_classes", "in_channels", "input_size", "in_features",
                "tokenizer")  # tokenizer: text runs' fitted tokeniser (the pretrained text encoder maps its words)


def model_context(info: dict[str, Any]) -> dict[str, Any]:
    """The facts about the data that model builders may take (only those they accept are passed):
    the common ``CONTEXT_KEYS`` plus whatever a dataset puts in ``info["model_context"]``."""
    ctx = {k: info[k] for k in CONTEXT_KEYS if info.get(k) is not None}
    ctx.update(info.get("model_context") or {})  # modality-specific facts (vocab_size, horizon, ...)
    if "input_size" in ctx:
        ctx["input_size"] = tuple(ctx["input_size"])
    return ctx


def build_data(cfg: Any, seed: int = 0) -> DataBundle:
    """``cfg`` is a :class:`~deepfoundry.config.DataConfig`: build the registered dataset, fit the
    standardisation on its training split, and return loaders.

    A builder returns :class:`Splits` (tensors; this function standardises and wraps them in
    :class:`ArrayLoader`) or a ready :class:`DataBundle` whose loaders follow ArrayLoader's protocol
    (``__len__``, ``epoch_batches(epoch, skip)``, ``__iter__``, ``num_samples``)."""
    from ..registry import DATASETS
    from .augment import attach_augment

    context = {"root": cfg.root, "download": cfg.download, "val_fraction": cfg.val_fraction,
               "test_fraction": cfg.test_fraction, "seed": seed, "batch_size": cfg.batch_size,
               "eval_batch_size": cfg.eval_batch_size}
    splits = DATASETS.build(cfg.name, cfg.builder_kwargs(), context=context, key="data")
    if isinstance(splits, DataBundle):  # modalities with their own loaders (graphs, ...) build the bundle
        splits.info.setdefault("dataset", cfg.name)
        attach_augment(splits, cfg.augment, seed)
        return splits
    info = dict(splits.info)
    info["dataset"] = cfg.name
    (xtr, ytr), (xva, yva), (xte, yte) = splits.train, splits.val, splits.test
    if len(xtr) == 0:
        raise DeepfoundryError(f"dataset {cfg.name!r} has an empty training split")
    if cfg.normalize and "preprocess" not in info:
        info["preprocess"] = fit_standardize(xtr)
    pre = info.get("preprocess") if cfg.normalize else None
    info["preprocess"] = pre
    xtr, xva, xte = (apply_preprocess(x, pre) for x in (xtr, xva, xte))
    info.setdefault("input_shape", list(xtr.shape[1:]))
    info["num_train"], info["num_val"], info["num_test"] = len(xtr), len(xva), len(xte)
    bundle = DataBundle(
        train=ArrayLoader(xtr, ytr, cfg.batch_size, shuffle=True, seed=seed),
        val=ArrayLoader(xva, yva, cfg.eval_batch_size),
        test=ArrayLoader(xte, yte, cfg.eval_batch_size),
        info=info,
    )
    attach_augment(bundle, cfg.augment, seed)  # training-only augmentation (data/augment.py)
    return bundle
