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
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from ..errors import DeepfoundryError

LOSSES = ("mse", "mae", "huber", "cross_entropy", "bce")


def make_loss(name: str, *, label_smoothing: float = 0.0, huber_delta: float = 1.0) -> Callable[..., torch.Tensor]:
    """A loss function ``loss(prediction, target) -> scalar`` by name."""
    # plain functions, not nn.Module losses: the module call costs a few microseconds a step
    if name == "mse":
        return F.mse_loss
    if name == "mae":
        return F.l1_loss
    if name == "huber":
        return partial(F.huber_loss, delta=huber_delta)
    if name == "cross_entropy":
        return partial(F.cross_entropy, label_smoothing=label_smoothing) if label_smoothing else F.cross_entropy
    if name == "bce":
        def bce(logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
            return F.binary_cross_entropy_with_logits(logits.squeeze(-1), target.float(), reduction=reduction)
        return bce
    close = difflib.get_close_matches(name, LOSSES, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f"; available: {', '.join(LOSSES)}"
    raise DeepfoundryError(f"loss {name!r} is not known{hint}")
