"""AlexNet (Krizhevsky, Sutskever & Hinton, "ImageNet classification with deep convolutional
neural networks", 2012), in the single-tower form torchvision uses.

Five convolutions and three fully connected layers, ReLU after each but the last. For inputs of
128 px and up (shapes for 3x224x224, ``width=1``):

======  =============================================  ==================
conv1   conv 11x11 stride 4 pad 2, 64 maps [+ LRN]     (B, 64, 55, 55)
pool1   max 3x3 stride 2 (overlapping)                 (B, 64, 27, 27)
conv2   conv 5x5 pad 2, 192 maps [+ LRN]               (B, 192, 27, 27)
pool2   max 3x3 stride 2                               (B, 192, 13, 13)
conv3   conv 3x3 pad 1, 384 maps                       (B, 384, 13, 13)
conv4   conv 3x3 pad 1, 256 maps                       (B, 256, 13, 13)
conv5   conv 3x3 pad 1, 256 maps                       (B, 256, 13, 13)
pool5   max 3x3 stride 2                               (B, 256, 6, 6)
head    adaptive avg 6x6, dropout, FC 9216 -> 4096, dropout, FC 4096 -> 4096, FC -> classes
======  =============================================  ==================

``lrn=True`` adds the paper's local response normalisation after the first two ReLUs,
``b_i = a_i / (k + alpha / n * sum_{j near i} a_j^2) ** beta`` with ``n=5, alpha=1e-4,
beta=0.75, k=2``. (The paper's two-GPU model has 96-256-384-384-256 maps; torchvision's
64-192-384-256-256 is used here.)

Small images (8x8 digits, 28x28 MNIST, 32x32 CIFAR) get the same five-conv / three-FC structure
with 3x3 stride-1 convolutions, 2x2 pools (skipped once the map is 1x1), an adaptive average
pool to at most 2x2 and a classifier of hidden width ``1024 * width``.
``width`` multiplies every channel count and hidden width.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn

from ..nn.activations import image_size, make_pool, positive_float, positive_int, probability, scaled
from ..registry import MODELS

LARGE_INPUT = 128
"""Inputs whose shorter side is at least this many pixels get the ImageNet layout."""


class AlexNet(nn.Module):
    """AlexNet: ``features`` = the five convolutions and their pools (a feature map),
    ``head`` = adaptive average pool, flatten and the three fully connected layers.

    Shapes: input ``(B, in_channels, H, W)``; ``features`` -> ``(B, 256 * width, H', W')``;
    output ``(B, num_classes)``.
    """

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, input_size: tuple[int, int] = (224, 224),
                 dropout: float = 0.5, lrn: bool = False, pool: str = "max", width: float = 1.0) -> None:
        super().__init__()
        large = min(input_size) >= LARGE_INPUT
        c1, c2, c3, c4, c5 = (scaled(c, width) for c in (64, 192, 384, 256, 256))
        # (name, in, out, kernel, stride, padding, lrn and pool after it)
        if large:
            convs = [("1", in_channels, c1, 11, 4, 2, True), ("2", c1, c2, 5, 1, 2, True),
                     ("3", c2, c3, 3, 1, 1, False), ("4", c3, c4, 3, 1, 1, False), ("5", c4, c5, 3, 1, 1, False)]
            pool_kernel, pool_stride, pool_after = 3, 2, {"1", "2", "5"}
        else:
            convs = [("1", in_channels, c1, 3, 1, 1, True), ("2", c1, c2, 3, 1, 1, True),
                     ("3", c2, c3, 3, 1, 1, False), ("4", c3, c4, 3, 1, 1, False), ("5", c4, c5, 3, 1, 1, False)]
            pool_kernel, pool_stride, pool_after = 2, 2, {"1", "2", "5"}
        h, w = input_size
        body: list[tuple[str, nn.Module]] = []
        for name, cin, cout, k, s, p, norm in convs:
            body += [(f"conv{name}", nn.Conv2d(cin, cout, k, stride=s, padding=p)), (f"relu{name}", nn.ReLU())]
            h, w = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
            if lrn and norm:
                body.append((f"lrn{name}", nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)))
            if name in pool_after and min(h, w) >= pool_kernel:  # never pool a map smaller than the window
                body.append((f"pool{name}", make_pool(pool, pool_kernel, pool_stride)))
                h, w = (h - pool_kernel) // pool_stride + 1, (w - pool_kernel) // pool_stride + 1
        self.features = nn.Sequential(OrderedDict(body))  # (B, C, H, W) -> (B, c5, h, w)

        pooled = (6, 6) if large else (min(2, h), min(2, w))
        hidden = scaled(4096 if large else 1024, width)
        self.head = nn.Sequential(OrderedDict([
            ("avgpool", nn.AdaptiveAvgPool2d(pooled)),
            ("flatten", nn.Flatten()),  # (B, c5 * ph * pw)
            ("drop6", nn.Dropout(dropout)),
            ("fc6", nn.Linear(c5 * pooled[0] * pooled[1], hidden)),
            ("relu6", nn.ReLU()),
            ("drop7", nn.Dropout(dropout)),
            ("fc7", nn.Linear(hidden, hidden)),
            ("relu7", nn.ReLU()),
            ("fc8", nn.Linear(hidden, num_classes)),  # (B, num_classes)
        ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@MODELS.register("alexnet")
def alexnet(*, num_classes: int = 1000, in_channels: int = 3, input_size: Sequence[int] = (224, 224),
            dropout: float = 0.5, lrn: bool = False, pool: str = "max", width: float = 1.0) -> AlexNet:
    """AlexNet (Krizhevsky et al. 2012): five convolutions, three FC layers; small-image variant under 128 px.

    >>> alexnet(num_classes=10, in_channels=1, input_size=(28, 28), width=0.25)(torch.randn(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """
    return AlexNet(positive_int("num_classes", num_classes), positive_int("in_channels", in_channels),
                   image_size(input_size), dropout=probability("dropout", dropout), lrn=bool(lrn), pool=pool,
                   width=positive_float("width", width))
