"""Multilayer perceptron: a stack of fully connected layers on flattened inputs.

Each hidden layer computes ``h_{l+1} = dropout(act(BN(W_l h_l + b_l)))`` (BN only with
``batch_norm=True``); the head is one affine map ``logits = W_out h_L + b_out``. With no hidden
layers the model is multinomial logistic (or linear) regression.

Shapes: input ``(B, *)`` with ``prod(*) == in_features`` (tables ``(B, F)``, images
``(B, C, H, W)``); ``features`` -> ``(B, hidden_sizes[-1])``; output ``(B, num_classes)``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..errors import DeepfoundryError
from ..nn.activations import make_activation, positive_int, probability
from ..registry import MODELS


def dense_stack(width: int, hidden_sizes: Sequence[int], activation: str, dropout: float,
                batch_norm: bool) -> tuple[list[nn.Module], int]:
    """``Linear -> [BatchNorm1d] -> activation -> [Dropout]`` per hidden size; returns the layers and the last width."""
    layers: list[nn.Module] = []
    for size in hidden_sizes:
        layers.append(nn.Linear(width, size, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm1d(size))
        layers.append(make_activation(activation))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = size
    return layers, width


class MLP(nn.Module):
    """Flatten, then ``len(hidden_sizes)`` hidden layers, then a linear head.

    Args:
        in_features: size of one flattened input.
        num_classes: output size (classes for classification, 1 for scalar regression).
        hidden_sizes: width of each hidden layer, input side first; empty for a linear model.
        activation: name from :data:`deepfoundry.nn.ACTIVATIONS`.
        dropout: dropout rate after each hidden activation.
        batch_norm: BatchNorm1d between each hidden affine map and its activation.
    """

    def __init__(self, in_features: int, num_classes: int, hidden_sizes: Sequence[int] = (256, 128),
                 activation: str = "relu", dropout: float = 0.0, batch_norm: bool = False) -> None:
        super().__init__()
        layers, width = dense_stack(in_features, hidden_sizes, activation, dropout, batch_norm)
        self.features = nn.Sequential(nn.Flatten(), *layers)  # (B, *) -> (B, width)
        self.head = nn.Linear(width, num_classes)  # (B, width) -> (B, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@MODELS.register("mlp")
def mlp(*, in_features: int | None = None, num_classes: int | None = None,
        hidden_sizes: Sequence[int] = (256, 128), activation: str = "relu", dropout: float = 0.0,
        batch_norm: bool = False, depth: int | None = None, width: int | None = None,
        in_channels: int | None = None, input_size: Sequence[int] | None = None) -> MLP:
    """Multilayer perceptron on flattened inputs (tables or images), ReLU 256-128 by default.

    ``depth`` / ``width`` are a shorthand for ``hidden_sizes = (width,) * depth`` (``depth`` alone
    uses width 256; ``width`` alone depth 2). ``in_features`` defaults to
    ``in_channels * H * W`` when the data gives images.

    >>> mlp(in_features=4, num_classes=3)(torch.randn(2, 4)).shape
    torch.Size([2, 3])
    >>> mlp(in_features=784, num_classes=10, depth=3, width=64)(torch.randn(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """
    if in_features is None:
        if in_channels is None or input_size is None:
            raise DeepfoundryError("mlp needs in_features (the size of one flattened input); received none "
                                   "and no in_channels/input_size to derive it from; set model.in_features")
        h, w = input_size
        in_features = in_channels * h * w
    positive_int("in_features", in_features)
    if num_classes is None:
        raise DeepfoundryError("mlp needs num_classes (the output size; 1 for scalar regression); "
                               "set model.num_classes")
    positive_int("num_classes", num_classes)
    if depth is not None or width is not None:
        depth = 2 if depth is None else depth
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise DeepfoundryError(f"depth must be an integer >= 0; received depth={depth!r}")
        hidden_sizes = (positive_int("width", 256 if width is None else width),) * depth
    if isinstance(hidden_sizes, int):
        hidden_sizes = (hidden_sizes,)
    hidden_sizes = tuple(positive_int(f"hidden_sizes[{i}]", s) for i, s in enumerate(hidden_sizes))
    return MLP(in_features, num_classes, hidden_sizes, activation=activation,
               dropout=probability("dropout", dropout), batch_norm=bool(batch_norm))
