"""VGG (Simonyan & Zisserman, "Very deep convolutional networks for large-scale image
recognition", 2015), configurations A, B, D, E = VGG-11, -13, -16, -19, as in torchvision.

Stacks of 3x3 convolutions (padding 1, so each keeps H x W) with ReLU, each stack closed by a
2x2 stride-2 pool that halves H and W; channels 64 -> 128 -> 256 -> 512 -> 512. The ``_bn``
variants put BatchNorm between each convolution and its ReLU (Ioffe & Szegedy 2015).

For inputs of 128 px and up the head is torchvision's: adaptive average pool to 7x7, then
``FC 512*7*7 -> 4096, ReLU, dropout, FC 4096 -> 4096, ReLU, dropout, FC -> num_classes``
(3x224x224 -> features (B, 512, 7, 7) -> logits (B, num_classes)).
For small inputs (8x8, 28x28, 32x32) pools are skipped once the map is 1x1 and the head is
adaptive average pool to 1x1, ``FC 512 -> classifier_width -> classifier_width -> num_classes``.
``width`` multiplies every channel count (and the default classifier width).
Weights: Kaiming-normal (fan-out, ReLU) convolutions, N(0, 0.01) linear layers, zero biases.
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

CFGS: dict[str, list[int | str]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
"""Channels of each 3x3 convolution, ``"M"`` for a pool (torchvision's naming of the paper's columns)."""


class VGG(nn.Module):
    """VGG: ``features`` = the convolution stacks and pools (a feature map), ``head`` = adaptive
    average pool, flatten and the three fully connected layers.

    Shapes: input ``(B, in_channels, H, W)``; ``features`` -> ``(B, 512 * width, H', W')``;
    output ``(B, num_classes)``.
    """

    def __init__(self, cfg: Sequence[int | str], num_classes: int = 1000, in_channels: int = 3,
                 input_size: tuple[int, int] = (224, 224), batch_norm: bool = False, dropout: float = 0.5,
                 pool: str = "max", width: float = 1.0, classifier_width: int | None = None) -> None:
        super().__init__()
        large = min(input_size) >= LARGE_INPUT
        h, w = input_size
        layers: list[nn.Module] = []
        channels = in_channels
        for v in cfg:
            if v == "M":
                if min(h, w) >= 2:  # pool skipped once the map is 1x1
                    layers.append(make_pool(pool, 2))
                    h, w = h // 2, w // 2
                continue
            out = scaled(int(v), width)
            layers.append(nn.Conv2d(channels, out, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU())
            channels = out
        self.features = nn.Sequential(*layers)  # (B, C, H, W) -> (B, channels, h, w)

        pooled = 7 if large else 1
        hidden = classifier_width or scaled(4096 if large else 512, width)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(pooled),
            nn.Flatten(),  # (B, channels * pooled**2)
            nn.Linear(channels * pooled * pooled, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),  # (B, num_classes)
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _vgg(cfg: str, batch_norm: bool, *, num_classes: int, in_channels: int, input_size: Sequence[int],
         dropout: float, pool: str, width: float, classifier_width: int | None) -> VGG:
    if classifier_width is not None:
        positive_int("classifier_width", classifier_width)
    return VGG(CFGS[cfg], positive_int("num_classes", num_classes), positive_int("in_channels", in_channels),
               image_size(input_size), batch_norm=batch_norm, dropout=probability("dropout", dropout), pool=pool,
               width=positive_float("width", width), classifier_width=classifier_width)


@MODELS.register("vgg11")
def vgg11(*, num_classes: int = 1000, in_channels: int = 3, input_size: Sequence[int] = (224, 224),
          dropout: float = 0.5, pool: str = "max", width: float = 1.0, classifier_width: int | None = None) -> VGG:
    """VGG-11 (configuration A, 8 convolutions + 3 FC), no batch norm.

    >>> vgg11(num_classes=10, input_size=(32, 32), width=0.25)(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """
    return _vgg("A", False, num_classes=num_classes, in_channels=in_channels, input_size=input_size,
                dropout=dropout, pool=pool, width=width, classifier_width=classifier_width)


@MODELS.register("vgg11_bn")
def vgg11_bn(*, num_classes: int = 1000, in_channels: int = 3, input_size: Sequence[int] = (224, 224),
             dropout: float = 0.5, pool: str = "max", width: float = 1.0, classifier_width: int | None = None) -> VGG:
    """VGG-11 (configuration A) with batch norm after each convolution."""
    return _vgg("A", True, num_classes=num_classes, in_channels=in_channels, input_size=input_size,
                dropout=dropout, pool=pool, width=width, classifier_width=classifier_width)


@MODELS.register("vgg13")
def vgg13(*, num_classes: int = 1000, in_channels: int = 3, input_size: Sequence[int] = (224, 224),
          dropout: float = 0.5, pool: str = "max", width: float = 1.0, classifier_width: int | None = None) -> VGG:
    """VGG-13 (configuration B, 10 convolutions + 3 FC), no batch norm."""
    return _vgg("B", False, num_classes=num_classes, in_channels=in_channels, input_size=input_size,
                dropout=dropout, pool=pool, width=width, classifier_width=classifier_width)


@MODELS.register("vgg13_bn")
def vgg13_bn(*, num_classes: int = 1000, in_channels: int = 3, input_size: Sequence[int] = (224, 224),
             dropout: float = 0.5, pool: str = "max", width: float = 1.0, classifier_width: int | None = None) -> VGG:
    """VGG-13 (configuration B) with batch norm after each convolution."""
    return _vgg("B", True, num_classes=num_classes, in_channels=in_channels, input_size=input_size,
                dropout=dropout, pool=pool, width=width, classifier_width=classifier_width)


@MODELS.register("vgg16")
def vgg16(*, num_classes: int = 1000, in_channels: int = 3, input_size: Sequence[int] = (224, 224),
          dropout: float = 0.5, pool: str = "max", width: float = 1.0, classifier_width: int | None = None) -> VGG:
    """VGG-16 (configuration D, 13 convolutions + 3 FC), no batch norm."""
    return _vgg("D", False, num_classes=num_classes, in_channels=in_channels, input_size=input_size,
                dropout=dropout, pool=pool, width=width, classifier_width=classifier_width)


@MODELS.register("vgg16_bn")
def vgg16_bn(*, num_classes: int = 1000, in_channels: int = 3, input_size: Sequence[int] = (224, 224),
             dropout: float = 0.5, pool: str = "max", width: float = 1.0, classifier_width: int | None = None) -> VGG:
    """VGG-16 (configuration D) with batch norm after each convolution."""
    return _vgg("D", True, num_classes=num_classes, in_channels=in_channels, input_size=input_size,
                dropout=dropout, pool=pool, width=width, classifier_width=classifier_width)


@MODELS.register("vgg19")
def vgg19(*, num_classes: int = 1000, in_channels: int = 3, input_size: Sequence[int] = (224, 224),
          dropout: float = 0.5, pool: str = "max", width: float = 1.0, classifier_width: int | None = None) -> VGG:
    """VGG-19 (configuration E, 16 convolutions + 3 FC), no batch norm."""
    return _vgg("E", False, num_classes=num_classes, in_channels=in_channels, input_size=input_size,
                dropout=dropout, pool=pool, width=width, classifier_width=classifier_width)


@MODELS.register("vgg19_bn")
def vgg19_bn(*, num_classes: int = 1000, in_channels: int = 3, input_size: Sequence[int] = (224, 224),
             dropout: float = 0.5, pool: str = "max", width: float = 1.0, classifier_width: int | None = None) -> VGG:
    """VGG-19 (configuration E) with batch norm after each convolution."""
    return _vgg("E", True, num_classes=num_classes, in_channels=in_channels, input_size=input_size,
                dropout=dropout, pool=pool, width=width, classifier_width=classifier_width)
