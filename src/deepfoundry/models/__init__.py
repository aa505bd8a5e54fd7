"""Plain ``nn.Module`` models, each made by a small builder registered in :data:`MODELS`.

Every classifier shares one interface: ``features(x) -> h`` (the convolutional feature map for
conv nets, the last hidden layer for MLPs) and ``head(h) -> logits``, with
``forward(x) == head(features(x))``. Both are plain submodules (``nn.Sequential`` / ``nn.Linear``),
so ``torch.compile``, ``channels_last`` and a safetensors round trip of ``state_dict()`` just work.

>>> build_model("lenet5", {"dropout": None}, {"num_classes": 10, "input_size": [28, 28]})(torch.randn(2, 1, 28, 28)).shape
torch.Size([2, 10])
"""
from __future__ import annotations

from typing import Any

import torch  # noqa: F401  (used by the doctest example)
from torch import nn

from ..registry import MODELS
# the modules here register their builders in MODELS; registry.py lists them and imports them on first use


def build_model(name: str, kwargs: dict[str, Any] | None = None, context: dict[str, Any] | None = None) -> nn.Module:
    """Build the registered model ``name`` from the user's ``kwargs`` (config key ``model.*``) and the
    data's ``context`` (``num_classes``, ``in_channels``, ``input_size``, ``in_features``; passed only
    to builders that accept them). ``None`` kwargs keep the builder's defaults."""
    return MODELS.build(name, kwargs, context=context, key="model")


__all__ = ["MODELS", "build_model"]
