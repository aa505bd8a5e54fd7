"""LeNet-5 (LeCun, Bottou, Bengio & Haffner, "Gradient-based learning applied to document
recognition", 1998).

Layers, named as in the paper (shapes for a 1x32x32 input):

====  ==========================================  ===================
C1    conv 5x5, 6 maps, then activation           (B, 6, 28, 28)
S2    2x2 pool, stride 2 (subsampling)            (B, 6, 14, 14)
C3    conv 5x5, 16 maps, then activation          (B, 16, 10, 10)
S4    2x2 pool, stride 2                          (B, 16, 5, 5)
C5    fully connected 400 -> 120, activation      (B, 120)
F6    fully connected 120 -> 84, activation       (B, 84)
out   fully connected 84 -> num_classes           (B, num_classes)
====  ==========================================  ===================

The paper's C5 is a 5x5 convolution over a 5x5 map, i.e. a fully connected layer; its
output is a layer of RBF units and its S-layers have trainable coefficients; like the common
modern form (pytorch/examples) this uses a linear output, cross-entropy, and plain pools.
``activation="tanh", pool="avg"`` is the closest to 1998; ReLU and max pooling train faster.

Other input sizes keep the same layers: 28x28 (MNIST) pads C1 by 2 so S4 is still 16x5x5;
inputs under 12 px (8x8 sklearn digits) use 3x3 kernels padded by 1 in C1 and C3. The size
entering C5 is measured with a dummy forward pass at construction.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn

from ..nn.activations import image_size, make_activation, make_pool, positive_int, probability
from ..registry import MODELS


def _conv_geometry(height: int, width: int) -> tuple[int, int, int, int]:
    """``(C1 kernel, C1 padding, C3 kernel, C3 padding)`` for an input of this size."""
    side = min(height, width)
    if side >= 32:
        return 5, 0, 5, 0  # the 1998 layout
    if side >= 12:
        return 5, 2, 5, 0  # 28x28 MNIST: 28 -> 28 -> 14 -> 10 -> 5, as pytorch/examples
    return 3, 1, 3, 1  # 8x8 digits: 8 -> 8 -> 4 -> 4 -> 2


class LeNet5(nn.Module):
    """LeNet-5: ``features`` = C1 S2 C3 S4 (a feature map), ``head`` = C5 F6 output.

    Shapes: input ``(B, in_channels, H, W)``; ``features`` -> ``(B, 16, H', W')``;
    output ``(B, num_classes)``.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: tuple[int, int] = (32, 32),
                 activation: str = "relu", pool: str = "max", dropout: float = 0.0,
                 batch_norm: bool = False) -> None:
        super().__init__()
        k1, p1, k3, p3 = _conv_geometry(*input_size)
        h, w = input_size
        body: list[tuple[str, nn.Module]] = []
        for name, (cin, cout, k, p) in (("1", (in_channels, 6, k1, p1)), ("3", (6, 16, k3, p3))):
            body.append((f"c{name}", nn.Conv2d(cin, cout, k, padding=p, bias=not batch_norm)))
            if batch_norm:
                body.append((f"bn{name}", nn.BatchNorm2d(cout)))
            body.append((f"act{name}", make_activation(activation)))
            h, w = h + 2 * p - k + 1, w + 2 * p - k + 1
            if min(h, w) >= 2:  # S2 / S4, skipped on a map too small to pool (tiny inputs)
                body.append((f"s{int(name) + 1}", make_pool(pool, 2)))
                h, w = h // 2, w // 2
        self.features = nn.Sequential(OrderedDict(body))
        self.features.eval()  # measure without touching BatchNorm's running statistics
        with torch.no_grad():
            flat = self.features(torch.zeros(1, in_channels, *input_size)).numel()  # 16 * H' * W'
        self.features.train()

        head: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
        for name, (cin, cout) in (("c5", (flat, 120)), ("f6", (120, 84))):
            head.append((name, nn.Linear(cin, cout, bias=not batch_norm)))
            if batch_norm:
                head.append((f"bn{name[1]}", nn.BatchNorm1d(cout)))
            head.append((f"act{name[1]}", make_activation(activation)))
            if dropout > 0:
                head.append((f"drop{name[1]}", nn.Dropout(dropout)))
        head.append(("output", nn.Linear(84, num_classes)))
        self.head = nn.Sequential(OrderedDict(head))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@MODELS.register("lenet5")
def lenet5(*, num_classes: int = 10, in_channels: int = 1, input_size: Sequence[int] = (32, 32),
           activation: str = "relu", pool: str = "max", dropout: float = 0.0, batch_norm: bool = False) -> LeNet5:
    """LeNet-5 (LeCun et al. 1998): conv 6 - pool - conv 16 - pool - FC 120 - FC 84 - output.

    ``activation="tanh", pool="avg"`` for the 1998 form. Adapts to 32x32, 28x28 and small inputs.

    >>> lenet5(input_size=(28, 28))(torch.randn(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """
    return LeNet5(positive_int("num_classes", num_classes), positive_int("in_channels", in_channels),
                  image_size(input_size), activation=activation, pool=pool,
                  dropout=probability("dropout", dropout), batch_norm=bool(batch_norm))
