"""Pretrained torchvision backbones with a new head (``model.name: transfer``); the freezing,
learning-rate and unfreezing logic lives in :mod:`deepfoundry.transfer` (see docs/transfer.md).

>>> net = MODELS.build("transfer", {"backbone": "mobilenet_v3_small"}, {"num_classes": 5, "input_size": (32, 32)})
>>> net(torch.randn(2, 3, 32, 32)).shape
torch.Size([2, 5])
"""
from __future__ import annotations

from typing import Sequence

import torch  # noqa: F401  (used by the doctest example)

from ..registry import MODELS
from ..transfer import TransferNet, build_transfer_model


@MODELS.register("transfer")
def transfer(*, backbone: str = "resnet18", num_classes: int = 1000, in_channels: int = 3,
             input_size: Sequence[int] = (224, 224), weights: str | None = None, weights_file: str | None = None,
             weights_run: str | None = None, freeze: str = "none", freeze_blocks: int | None = None,
             layer_lr_decay: float | None = None, group_lrs: Sequence[float] | None = None,
             unfreeze_every: int | None = None, resize: int | None = None, dropout: float = 0.0,
             bn_momentum: float | None = None) -> TransferNet:
    """Transfer learning: a torchvision backbone (resnet18/50, vgg16, alexnet, mobilenet_v3, efficientnet_b0) with a new head.

    ``weights``: a torchvision weights-enum member (``IMAGENET1K_V1``, ``DEFAULT``; downloaded by
    torchvision); ``weights_file``: a local ``.safetensors``/``.pth``; ``weights_run``: a deepfoundry run
    of the same backbone. ``freeze``: ``none``, ``all_but_head`` or ``first_n`` (``freeze_blocks`` groups);
    ``layer_lr_decay`` or ``group_lrs``: discriminative learning rates; ``unfreeze_every``: gradual
    unfreezing every N epochs; ``resize``: resize inputs to this side inside the model;
    ``bn_momentum``: batch-norm running-statistics momentum (torchvision's mobilenet_v3/efficientnet: 0.01).
    """
    return build_transfer_model(backbone, num_classes=num_classes, in_channels=in_channels,
                                input_size=tuple(input_size), weights=weights, weights_file=weights_file,
                                weights_run=weights_run, freeze=freeze, freeze_blocks=freeze_blocks,
                                layer_lr_decay=layer_lr_decay, group_lrs=group_lrs, unfreeze_every=unfreeze_every,
                                resize=resize, dropout=dropout, bn_momentum=bn_momentum)
