"""Transfer learning: pretrained torchvision backbones, a new head, freezing, discriminative
learning rates and gradual unfreezing (docs/transfer.md).

The parts live where their layer says:

- the network, :class:`~deepfoundry.models.backbones.TransferNet` (``head(features(x))`` on a torchvision
  backbone), and its builder from an already-loaded state dict: :mod:`deepfoundry.models.backbones`;
- layer groups, freezing and per-group learning rates (:class:`~deepfoundry.models.layer_groups.GroupedModel`,
  :func:`~deepfoundry.models.layer_groups.configure_groups`): :mod:`deepfoundry.models.layer_groups`;
- gradual unfreezing, a Trainer callback: :class:`deepfoundry.engine.unfreeze.GradualUnfreezing`;
- here: the **weight sources** and the registered ``transfer`` model that reads them.

Weights: ``weights`` names a member of torchvision's weights enum (``IMAGENET1K_V1``, ``DEFAULT``;
torchvision downloads it for users), ``weights_file`` is a local ``.safetensors`` or ``.pth`` file
(``.pth`` read with ``torch.load(weights_only=True)``, never a full pickle), ``weights_run`` a
deepfoundry run of the same backbone (its head is dropped).

>>> net = build_transfer_model("resnet18", num_classes=5, input_size=(32, 32), freeze="all_but_head")
>>> net(torch.randn(2, 3, 32, 32)).shape, net.group_names[-2:]
(torch.Size([2, 5]), ['layer4', 'head'])
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch

from .engine.checkpoint import load_weights
from .engine.unfreeze import GradualUnfreezing
from .errors import DeepfoundryError
from .models.backbones import (BACKBONES, BackboneSpec, TransferNet, build_transfer_net, check_backbone,
                               load_backbone_state)
from .models.layer_groups import FREEZE_CHOICES, GroupedModel, configure_groups
from .registry import MODELS


# -------------------------------------------------------------------------------------------- weight sources
def read_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or ``.pth``/``.pt`` (``torch.load(weights_only=True)``: tensors only)."""
    path = Path(path)
    if not path.is_file():
        raise DeepfoundryError(f"config key 'model.weights_file': weights file '{path}' does not exist")
    if path.suffix == ".safetensors":
        return load_weights(path)
    if path.suffix not in (".pth", ".pt"):
        raise DeepfoundryError(f"config key 'model.weights_file': '{path}' is neither .safetensors nor .pth/.pt")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors name many types; the safe loader refuses arbitrary objects
        raise DeepfoundryError(f"weights file '{path}' cannot be read as a tensors-only state dict "
                               f"(torch.load weights_only=True): {str(exc).splitlines()[0]}") from None
    for key in ("state_dict", "model"):  # common checkpoint nestings
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DeepfoundryError(f"weights file '{path}' does not hold a state dict of tensors")
    return state


def read_run_weights(run_dir: str | Path, backbone: str) -> dict[str, torch.Tensor]:
    """The final weights of a deepfoundry run whose model is ``transfer`` with the same backbone."""
    run_dir = Path(run_dir)
    meta_path = run_dir / "model.json"
    if not meta_path.is_file():
        raise DeepfoundryError(f"config key 'model.weights_run': '{run_dir}' is not a finished run directory "
                               f"(no model.json)")
    model = json.loads(meta_path.read_text(encoding="utf-8"))["model"]
    got = model.get("kwargs", {}).get("backbone", "resnet18") if model["name"] == "transfer" else None
    if got != backbone:
        what = f"model {model['name']!r}" + (f" with backbone {got!r}" if got else "")
        raise DeepfoundryError(f"config key 'model.weights_run': run '{run_dir}' trained {what}; "
                               f"expected model 'transfer' with backbone {backbone!r}")
    return load_weights(run_dir / "model.safetensors")


# -------------------------------------------------------------------------------------------- the builder
def build_transfer_model(backbone: str = "resnet18", *, num_classes: int = 1000, in_channels: int = 3,
                         input_size: Sequence[int] = (224, 224), weights: str | None = None,
                         weights_file: str | None = None, weights_run: str | None = None,
                         freeze: str = "none", freeze_blocks: int | None = None,
                         layer_lr_decay: float | None = None, group_lrs: Sequence[float] | None = None,
                         unfreeze_every: int | None = None, resize: int | None = None,
                         dropout: float = 0.0, bn_momentum: float | None = None) -> TransferNet:
    """A :class:`TransferNet`: torchvision ``backbone`` (weights from its enum, a file or a run), a new
    head for ``num_classes``, the freeze strategy, per-group learning rates and gradual unfreezing."""
    check_backbone(backbone)
    given = [k for k, v in (("weights", weights), ("weights_file", weights_file), ("weights_run", weights_run)) if v]
    if len(given) > 1:
        raise DeepfoundryError(f"set only one of model.weights, model.weights_file, model.weights_run; "
                               f"received {', '.join(given)}")
    state, source = None, "a state dict"
    if weights_file:
        state, source = read_state_file(weights_file), f"'{weights_file}'"
    elif weights_run:
        state, source = read_run_weights(weights_run, backbone), f"run '{weights_run}'"
    return build_transfer_net(backbone, num_classes=num_classes, in_channels=in_channels, input_size=input_size,
                              weights=weights, backbone_state=state, state_source=source, freeze=freeze,
                              freeze_blocks=freeze_blocks, layer_lr_decay=layer_lr_decay, group_lrs=group_lrs,
                              unfreeze_every=unfreeze_every, resize=resize, dropout=dropout, bn_momentum=bn_momentum)


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

    >>> MODELS.build("transfer", {"backbone": "mobilenet_v3_small"}, {"num_classes": 5, "input_size": (32, 32)})(
    ...     torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 5])
    """
    return build_transfer_model(backbone, num_classes=num_classes, in_channels=in_channels,
                                input_size=tuple(input_size), weights=weights, weights_file=weights_file,
                                weights_run=weights_run, freeze=freeze, freeze_blocks=freeze_blocks,
                                layer_lr_decay=layer_lr_decay, group_lrs=group_lrs, unfreeze_every=unfreeze_every,
                                resize=resize, dropout=dropout, bn_momentum=bn_momentum)


__all__ = ["BACKBONES", "FREEZE_CHOICES", "BackboneSpec", "GradualUnfreezing", "GroupedModel", "TransferNet",
           "build_transfer_model", "configure_groups", "load_backbone_state", "read_run_weights", "read_state_file",
           "transfer"]
