"""``class-subset``: some classes of another registered image/table data set, optionally only a few
labelled examples per class (the setting of transfer learning: pretrain on classes 0-4, fine-tune
on 100 images each of classes 5-9).

Labels are renumbered ``0 .. k-1`` in the order ``classes`` lists them; the training split keeps a
seeded random ``per_class`` examples of each class, validation ``val_per_class``; test keeps every
test example of the chosen classes.

>>> splits = DATASETS.build("class-subset", {"of": "digits", "classes": [5, 6], "per_class": 10})
>>> len(splits.train[0]), splits.info["class_names"]
(20, ['5', '6'])
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ..errors import DeepfoundryError
from ..registry import DATASETS
from .core import DataBundle, Splits


def _pick(x: torch.Tensor, y: torch.Tensor, classes: list[int], per_class: int | None,
          rng: np.random.Generator, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    keep, new_labels = [], []
    y_np = y.numpy()
    for new, old in enumerate(classes):
        idx = np.flatnonzero(y_np == old)
        if per_class is not None:
            if len(idx) < per_class:
                raise DeepfoundryError(f"dataset 'class-subset': the {split} split has {len(idx)} examples of class "
                                       f"{old}, fewer than the {per_class} asked for")
            idx = np.sort(rng.permutation(idx)[:per_class])
        keep.append(idx)
        new_labels.append(np.full(len(idx), new, dtype=np.int64))
    order = np.concatenate(keep)
    return x[torch.from_numpy(order)], torch.from_numpy(np.concatenate(new_labels))


@DATASETS.register("class-subset")
def class_subset(*, of: str = "cifar10", classes: Sequence[int | str] = (0, 1), per_class: int | None = None,
                 val_per_class: int | None = None, options: dict[str, Any] | None = None,
                 root: str | None = None, download: bool = False, val_fraction: float = 0.1,
                 test_fraction: float = 0.2, seed: int = 0) -> Splits:
    """Some classes of another data set (``of``), optionally ``per_class`` labelled training examples each."""
    context = {"root": root, "download": download, "val_fraction": val_fraction, "test_fraction": test_fraction,
               "seed": seed}
    inner = DATASETS.build(of, dict(options or {}), context=context, key="data.options")
    if isinstance(inner, DataBundle):
        raise DeepfoundryError(f"dataset 'class-subset' needs a tensor data set (images or tables); {of!r} is not one")
    names = list(inner.info.get("class_names") or range(int(inner.info["num_classes"])))
    names = [str(n) for n in names]
    picked = []
    for c in classes:
        if isinstance(c, str) and c in names:
            picked.append(names.index(c))
        elif isinstance(c, int) and not isinstance(c, bool) and 0 <= c < len(names):
            picked.append(c)
        else:
            raise DeepfoundryError(f"config key 'data.classes': {c!r} is not a class of {of!r}; "
                                   f"classes: {', '.join(f'{i}={n}' for i, n in enumerate(names))}")
    if len(set(picked)) != len(picked) or len(picked) < 2:
        raise DeepfoundryError(f"config key 'data.classes': expected two or more distinct classes, received {list(classes)!r}")
    for key, value in (("per_class", per_class), ("val_per_class", val_per_class)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise DeepfoundryError(f"config key 'data.{key}': expected a positive integer, received {value!r}")
    rng = np.random.default_rng(seed)
    train = _pick(*inner.train, picked, per_class, rng, "train")
    val = _pick(*inner.val, picked, val_per_class, rng, "val")
    test = _pick(*inner.test, picked, None, rng, "test")
    info = dict(inner.info)
    info.update(num_classes=len(picked), class_names=[names[i] for i in picked],
                split_note=(f"{of} classes {', '.join(names[i] for i in picked)}: {len(train[0]):,} train / "
                            f"{len(val[0]):,} val / {len(test[0]):,} test"
                            + (f" ({per_class} per class, seed {seed})" if per_class else "")))
    return Splits(train, val, test, info)
