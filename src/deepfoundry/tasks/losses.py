"""Loss functions by name.

For predictions ``p`` (logits ``z`` for classification) and targets ``y``, averaged over the batch:

- ``mse``:            ``(p - y)^2``
- ``mae``:            ``|p - y|``
- ``huber``:          ``0.5 (p - y)^2`` if ``|p - y| < delta`` else ``delta (|p - y| - 0.5 delta)``
- ``cross_entropy``:  ``-sum_c q_c log softmax(z)_c`` with ``q = (1 - eps) onehot(y) + eps / C``
  (``eps`` = label smoothing)
- ``bce``:            ``-[y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))]`` (on logits, numerically stable)
"""
from __future__ import annotations

import difflib
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DeepfoundryError

LOSSES = ("mse", "mae", "huber", "cross_entropy", "bce")


def make_loss(name: str, *, label_smoothing: float = 0.0, huber_delta: float = 1.0) -> Callable[..., torch.Tensor]:
    """A loss function ``loss(prediction, target) -> scalar`` by name."""
    if name == "mse":
        return nn.MSELoss()
    if name == "mae":
        return nn.L1Loss()
    if name == "huber":
        return nn.HuberLoss(delta=huber_delta)
    if name == "cross_entropy":
        return nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    if name == "bce":
        def bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return F.binary_cross_entropy_with_logits(logits.squeeze(-1), target.float())
        return bce
    close = difflib.get_close_matches(name, LOSSES, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f"; available: {', '.join(LOSSES)}"
    raise DeepfoundryError(f"loss {name!r} is not known{hint}")
