"""Pretrained torchvision backbones with a new head: :class:`TransferNet` (``model.name: transfer``).

A :class:`TransferNet` is ``head(features(x))`` where ``features`` is a torchvision backbone with
its ImageNet classifier layer removed (a feature vector ``(B, D)``) and ``head`` a new
``Linear(D, num_classes)`` for the user's classes. Its parameters are split into layer groups
(:class:`~.layer_groups.GroupedModel`), from the input to the head (resnet: ``stem, layer1 .. layer4,
head``; vgg16/alexnet: one group per pooling stage, then the fully connected body;
mobilenet_v3/efficientnet: one group per block of ``features``, then the classifier body), which
drive freezing, discriminative learning rates and gradual unfreezing.

Inputs: 1-channel images are repeated to the 3 channels the pretrained filters expect, other channel
counts go through a learned 1x1 convolution; images smaller than a backbone can take (alexnet below
63 px, vgg16 below 32) are resized. Weights: ``weights`` names a member of torchvision's weights enum
(torchvision downloads it for users); an already-loaded ``backbone_state`` (a torchvision or
TransferNet state dict) replaces them. Reading weights from files and runs is
:mod:`deepfoundry.transfer`'s job, which also registers the ``transfer`` model.

>>> net = build_transfer_net("resnet18", num_classes=5, input_size=(32, 32), freeze="all_but_head")
>>> net(torch.randn(2, 3, 32, 32)).shape, net.group_names[-2:]
(torch.Size([2, 5]), ['layer4', 'head'])
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DeepfoundryError
from .layer_groups import GroupedModel, configure_groups


@dataclass(frozen=True)
class BackboneSpec:
    """How to cut a torchvision model: where its classifier layer is and how to group its layers."""

    classifier: str                                          # dotted path of the final Linear to replace
    groups: Callable[[nn.Module], list[tuple[str, list[nn.Module]]]]  # input-first (name, modules), no head
    min_size: int = 1                                        # smallest input side the backbone accepts
    resize_to: int = 64                                      # the side smaller inputs are resized to


def _split_at_pools(features: nn.Sequential, prefix: str = "block") -> list[tuple[str, list[nn.Module]]]:
    """vgg/alexnet ``features``: one group per stage, a stage ending at each max-pool."""
    groups, current = [], []
    for layer in features:
        current.append(layer)
        if isinstance(layer, nn.MaxPool2d):
            groups.append((f"{prefix}{len(groups) + 1}", current))
            current = []
    if current:
        groups.append((f"{prefix}{len(groups) + 1}", current))
    return groups


def _resnet_groups(m: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    return [("stem", [m.conv1, m.bn1]), *((f"layer{i}", [getattr(m, f"layer{i}")]) for i in range(1, 5))]


def _conv_fc_groups(m: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    return [*_split_at_pools(m.features), ("fc", [m.classifier])]


def _block_groups(m: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    groups = [(f"features.{i}", [block]) for i, block in enumerate(m.features)]
    body = [layer for layer in m.classifier if any(p.requires_grad for p in layer.parameters())]
    return groups + ([("classifier", [m.classifier])] if body else [])


BACKBONES: dict[str, BackboneSpec] = {
    "resnet18": BackboneSpec("fc", _resnet_groups),
    "resnet50": BackboneSpec("fc", _resnet_groups),
    "vgg16": BackboneSpec("classifier.6", _conv_fc_groups, min_size=32, resize_to=32),
    "alexnet": BackboneSpec("classifier.6", _conv_fc_groups, min_size=63),
    "mobilenet_v3_small": BackboneSpec("classifier.3", _block_groups),
    "mobilenet_v3_large": BackboneSpec("classifier.3", _block_groups),
    "efficientnet_b0": BackboneSpec("classifier.1", _block_groups),
}
"""The torchvision backbones ``model.backbone`` accepts."""


class TransferNet(GroupedModel):
    """A pretrained backbone with a new head: ``forward(x) = head(features(x))``.

    Shapes: input ``(B, in_channels, H, W)``; ``features`` -> ``(B, feature_dim)``; output ``(B, num_classes)``.
    ``group_names`` / ``groups`` list the layer groups input first, the head last.
    """

    def __init__(self, backbone_name: str, backbone: nn.Module, feature_dim: int, num_classes: int,
                 in_channels: int = 3, resize: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        self.backbone_name, self.in_channels, self.resize = backbone_name, in_channels, resize
        # 1 channel: repeat to RGB (keeps the pretrained filters meaningful); 3: as is; other: learned 1x1 conv
        self.adapter = nn.Conv2d(in_channels, 3, 1) if in_channels not in (1, 3) else None
        self.backbone = backbone
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, num_classes)) if dropout \
            else nn.Linear(feature_dim, num_classes)
        groups = BACKBONES[backbone_name].groups(backbone)
        if self.adapter is not None:
            groups[0] = (groups[0][0], [self.adapter, *groups[0][1]])
        self.group_names = [name for name, _ in groups] + ["head"]
        self.groups = [mods for _, mods in groups] + [[self.head]]

    # ---------------------------------------------------------------- forward (the shared interface)
    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_channels == 1:
            x = x.expand(-1, 3, -1, -1)                          # (B, 1, H, W) -> (B, 3, H, W)
        elif self.adapter is not None:
            x = self.adapter(x)                                  # (B, C, H, W) -> (B, 3, H, W)
        if self.resize is not None and min(x.shape[-2:]) != self.resize:
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", align_corners=False)
        return self.backbone(x)                                  # (B, feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))                       # (B, num_classes)


# -------------------------------------------------------------------------------------------- weights
def _get_submodule_parent(model: nn.Module, dotted: str) -> tuple[nn.Module, str]:
    parent_path, _, leaf = dotted.rpartition(".")
    return (model.get_submodule(parent_path) if parent_path else model), leaf


def _torchvision_backbone(name: str, weights: str | None) -> tuple[nn.Module, int]:
    """The torchvision model ``name`` (with ``weights`` from its enum) and its classifier layer
    replaced by ``Identity``; returns (backbone, feature dimension)."""
    import torchvision

    weight_enum = None
    if weights is not None:
        enum = torchvision.models.get_model_weights(name)
        members = [m.name for m in enum] + ["DEFAULT"]
        if weights not in members:
            raise DeepfoundryError(f"config key 'model.weights': {name} has no weights {weights!r}; "
                                   f"available: {', '.join(members)}")
        weight_enum = enum[weights] if weights != "DEFAULT" else enum.DEFAULT
    try:
        model = torchvision.models.get_model(name, weights=weight_enum)
    except Exception as exc:  # download/network errors come in many types
        raise DeepfoundryError(f"could not load torchvision {name} weights {weights}: "
                               f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    parent, leaf = _get_submodule_parent(model, BACKBONES[name].classifier)
    layer = getattr(parent, leaf)
    setattr(parent, leaf, nn.Identity())
    return model, layer.in_features


def load_backbone_state(net: TransferNet, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a backbone's weights into ``net`` from a torchvision state dict (its classifier layer is
    dropped) or a :class:`TransferNet` / deepfoundry run state dict (its ``head.*`` is dropped)."""
    if any(k.startswith("backbone.") for k in state):
        adapter = {k[len("adapter."):]: v for k, v in state.items() if k.startswith("adapter.")}
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
        if net.adapter is not None and adapter and all(
                adapter.get(k) is not None and adapter[k].shape == v.shape for k, v in net.adapter.state_dict().items()):
            net.adapter.load_state_dict(adapter)
    else:
        dropped = BACKBONES[net.backbone_name].classifier + "."
        state = {k: v for k, v in state.items() if not k.startswith(dropped)}
    own = net.backbone.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("of another shape", wrong)):
            if keys:
                parts.append(f"{len(keys)} {label} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})")
        raise DeepfoundryError(f"weights from {source} do not fit backbone {net.backbone_name!r}: "
                               f"{'; '.join(parts)} keys; were they saved from another architecture?")
    net.backbone.load_state_dict(state)


# -------------------------------------------------------------------------------------------- the builder
def check_backbone(backbone: str) -> str:
    """``backbone`` if it is one of :data:`BACKBONES`, else a one-line error suggesting the closest."""
    if backbone not in BACKBONES:
        import difflib

        close = difflib.get_close_matches(str(backbone), BACKBONES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DeepfoundryError(f"config key 'model.backbone': unknown backbone {backbone!r}{hint}; "
                               f"available: {', '.join(BACKBONES)}")
    return backbone


def build_transfer_net(backbone: str = "resnet18", *, num_classes: int = 1000, in_channels: int = 3,
                       input_size: Sequence[int] = (224, 224), weights: str | None = None,
                       backbone_state: dict[str, torch.Tensor] | None = None, state_source: str = "a state dict",
                       freeze: str = "none", freeze_blocks: int | None = None,
                       layer_lr_decay: float | None = None, group_lrs: Sequence[float] | None = None,
                       unfreeze_every: int | None = None, resize: int | None = None,
                       dropout: float = 0.0, bn_momentum: float | None = None) -> TransferNet:
    """A :class:`TransferNet`: torchvision ``backbone`` (``weights`` from its enum, or the already-loaded
    ``backbone_state``, named ``state_source`` in errors), a new head for ``num_classes``, the freeze
    strategy, per-group learning rates and gradual unfreezing."""
    check_backbone(backbone)
    if weights and backbone_state is not None:
        raise DeepfoundryError("set only one of model.weights and a backbone state dict")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise DeepfoundryError(f"model 'transfer' needs a positive num_classes, received {num_classes!r}")
    spec = BACKBONES[backbone]
    if resize is None and min(input_size) < spec.min_size:
        resize = spec.resize_to  # alexnet's 11x11/4 stem and 3x3/2 pools need 63 px, vgg16's five pools 32
    body, feature_dim = _torchvision_backbone(backbone, weights)
    if bn_momentum is not None:  # torchvision's mobilenet_v3/efficientnet use 0.01, slow for short fine-tuning runs
        if not (isinstance(bn_momentum, (int, float)) and 0 < bn_momentum <= 1):
            raise DeepfoundryError(f"config key 'model.bn_momentum': expected a number in (0, 1], received {bn_momentum!r}")
        for m in body.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = float(bn_momentum)
    net = TransferNet(backbone, body, feature_dim, num_classes, in_channels, resize, dropout)
    if backbone_state is not None:
        load_backbone_state(net, backbone_state, state_source)
    configure_groups(net, freeze, freeze_blocks, layer_lr_decay, group_lrs, unfreeze_every)
    return net


__all__ = ["BACKBONES", "BackboneSpec", "TransferNet", "build_transfer_net", "check_backbone", "load_backbone_state"]
