"""Transfer learning: pretrained torchvision backbones, a new head, freezing, discriminative
learning rates and gradual unfreezing.

A :class:`TransferNet` is ``head(features(x))`` where ``features`` is a torchvision backbone with
its ImageNet classifier layer removed (a feature vector ``(B, D)``) and ``head`` a new
``Linear(D, num_classes)`` for the user's classes. Its parameters are split into **layer groups**,
from the input to the head (resnet: ``stem, layer1 .. layer4, head``; vgg16/alexnet: one group per
pooling stage, then the fully connected body; mobilenet_v3/efficientnet: one group per block of
``features``, then the classifier body), which drive three techniques:

- **Freezing** (``freeze``): ``all_but_head`` trains the head only (a linear probe on frozen
  features), ``first_n`` freezes the first ``freeze_blocks`` groups, ``none`` fine-tunes everything.
  Frozen parameters get ``requires_grad = False``, and the batch-norm layers of frozen groups stay in
  eval mode while the model trains, so their running mean/variance keep the pretrained statistics
  (``BN(x) = gamma * (x - mu_pretrained) / sqrt(var_pretrained + eps) + beta``).
- **Discriminative learning rates** (Howard & Ruder 2018, ULMFiT): group ``g`` at distance ``d``
  from the head learns at ``lr_g = lr * layer_lr_decay ** d`` (the head at ``lr``), or at the
  explicit ``group_lrs`` (one per group, input first). The optimizer gets one parameter group per
  layer group (the head first, so the logged ``lr`` is the head's).
- **Gradual unfreezing** (ULMFiT): with ``unfreeze_every = k`` the model starts frozen as ``freeze``
  says and unfreezes one more group, from the head towards the input, every ``k`` epochs
  (:class:`GradualUnfreezing`, a Trainer callback; it depends only on the epoch, so resume is exact).

Weights: ``weights`` names a member of torchvision's weights enum (``IMAGENET1K_V1``, ``DEFAULT``;
torchvision downloads it for users), ``weights_file`` is a local ``.safetensors`` or ``.pth`` file
(``.pth`` read with ``torch.load(weights_only=True)``, never a full pickle), ``weights_run`` a
deepfoundry run of the same backbone (its head is dropped). Inputs: 1-channel images are repeated
to the 3 channels the pretrained filters expect, other channel counts go through a learned 1x1
convolution; images smaller than a backbone can take (alexnet below 63 px, vgg16 below 32) are resized.

>>> net = build_transfer_model("resnet18", num_classes=5, input_size=(32, 32), freeze="all_but_head")
>>> net(torch.randn(2, 3, 32, 32)).shape, net.group_names[-2:]
(torch.Size([2, 5]), ['layer4', 'head'])
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .engine.callbacks import Callback
from .errors import DeepfoundryError

FREEZE_CHOICES = ("none", "all_but_head", "first_n")


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


class GroupedModel(nn.Module):
    """A model whose parameters form ordered layer groups (input first, the head last): freezing,
    per-group learning rates (``param_groups``) and gradual unfreezing (``callbacks``).
    Subclasses fill ``group_names`` and ``groups`` (lists of modules) in ``__init__``."""

    def __init__(self) -> None:
        super().__init__()
        self.group_names: list[str] = []
        self.groups: list[list[nn.Module]] = []
        self.trainable_from = 0
        self.freeze_at = 0                    # the group index the freeze strategy starts from
        self.layer_lr_decay: float | None = None
        self.group_lrs: list[float] | None = None
        self.unfreeze_every: int | None = None

    # ---------------------------------------------------------------- freezing
    def group_parameters(self, index: int) -> list[nn.Parameter]:
        seen: dict[int, nn.Parameter] = {}
        for module in self.groups[index]:
            for p in module.parameters():
                seen.setdefault(id(p), p)
        return list(seen.values())

    def set_trainable_from(self, index: int) -> None:
        """Freeze groups ``0 .. index-1`` (``requires_grad = False``, batch norm in eval mode); train the rest."""
        index = max(0, min(index, len(self.groups) - 1))
        self.trainable_from = index
        for i in range(len(self.groups)):
            for p in self.group_parameters(i):
                p.requires_grad_(i >= index)
        self.train(self.training)

    def train(self, mode: bool = True) -> "GroupedModel":
        super().train(mode)
        if mode:  # frozen groups keep their batch-norm statistics: eval mode while the rest trains
            for i in range(self.trainable_from):
                for module in self.groups[i]:
                    for m in module.modules():
                        if isinstance(m, nn.modules.batchnorm._BatchNorm):
                            m.eval()
        return self

    # ---------------------------------------------------------------- optimizer groups and callbacks
    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """One optimizer parameter group per layer group, the head first: ``lr * layer_lr_decay ** d``
        at distance ``d`` from the head, or the explicit ``group_lrs`` (input first)."""
        out = []
        n = len(self.groups)
        for i in reversed(range(n)):
            if self.group_lrs is not None:
                group_lr = self.group_lrs[i]
            elif self.layer_lr_decay is not None:
                group_lr = lr * self.layer_lr_decay ** (n - 1 - i)
            else:
                group_lr = lr
            out.append({"params": self.group_parameters(i), "lr": group_lr, "name": self.group_names[i]})
        return out

    def callbacks(self) -> list[Callback]:
        return [GradualUnfreezing(self.unfreeze_every)] if self.unfreeze_every else []


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


class GradualUnfreezing(Callback):
    """ULMFiT's gradual unfreezing: at the start of epoch ``e`` the trainable groups are those from
    ``max(0, freeze_at - e // every)`` on, i.e. one more group (from the head towards the input)
    every ``every`` epochs. Stateless (a function of the epoch), so resume is exact."""

    def __init__(self, every: int) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise DeepfoundryError(f"config key 'model.unfreeze_every': expected a positive integer, received {every!r}")
        self.every = every

    @staticmethod
    def trainable_from(freeze_at: int, epoch: int, every: int) -> int:
        return max(0, freeze_at - epoch // every)

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        model = trainer.unwrapped_model
        model.set_trainable_from(self.trainable_from(model.freeze_at, epoch, self.every))


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


def read_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or ``.pth``/``.pt`` (``torch.load(weights_only=True)``: tensors only)."""
    path = Path(path)
    if not path.is_file():
        raise DeepfoundryError(f"config key 'model.weights_file': weights file '{path}' does not exist")
    if path.suffix == ".safetensors":
        from .engine.checkpoint import load_weights

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


def read_run_weights(run_dir: str | Path, backbone: str) -> dict[str, torch.Tensor]:
    """The final weights of a deepfoundry run whose model is ``transfer`` with the same backbone."""
    from .engine.checkpoint import load_weights

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
    if backbone not in BACKBONES:
        import difflib

        close = difflib.get_close_matches(str(backbone), BACKBONES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DeepfoundryError(f"config key 'model.backbone': unknown backbone {backbone!r}{hint}; "
                               f"available: {', '.join(BACKBONES)}")
    given = [k for k, v in (("weights", weights), ("weights_file", weights_file), ("weights_run", weights_run)) if v]
    if len(given) > 1:
        raise DeepfoundryError(f"set only one of model.weights, model.weights_file, model.weights_run; "
                               f"received {', '.join(given)}")
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
    if weights_file:
        load_backbone_state(net, read_state_file(weights_file), f"'{weights_file}'")
    elif weights_run:
        load_backbone_state(net, read_run_weights(weights_run, backbone), f"run '{weights_run}'")

    configure_groups(net, freeze, freeze_blocks, layer_lr_decay, group_lrs, unfreeze_every)
    return net


def configure_groups(net: GroupedModel, freeze: str = "none", freeze_blocks: int | None = None,
                     layer_lr_decay: float | None = None, group_lrs: Sequence[float] | None = None,
                     unfreeze_every: int | None = None) -> GroupedModel:
    """Apply a freeze strategy, discriminative learning rates and gradual unfreezing to ``net``."""
    if freeze not in FREEZE_CHOICES:
        raise DeepfoundryError(f"config key 'model.freeze': expected one of {', '.join(FREEZE_CHOICES)}, "
                               f"received {freeze!r}")
    n = len(net.groups)
    if freeze == "all_but_head":
        net.freeze_at = n - 1
    elif freeze == "first_n":
        if isinstance(freeze_blocks, bool) or not isinstance(freeze_blocks, int) or not 0 <= freeze_blocks < n:
            raise DeepfoundryError(f"config key 'model.freeze_blocks': freeze=first_n needs an integer in "
                                   f"[0, {n - 1}] (groups: {', '.join(net.group_names)}), "
                                   f"received {freeze_blocks!r}")
        net.freeze_at = freeze_blocks
    if layer_lr_decay is not None and not (isinstance(layer_lr_decay, (int, float)) and 0 < layer_lr_decay <= 1):
        raise DeepfoundryError(f"config key 'model.layer_lr_decay': expected a number in (0, 1], "
                               f"received {layer_lr_decay!r}")
    if group_lrs is not None:
        if len(group_lrs) != n or not all(isinstance(v, (int, float)) and v >= 0 for v in group_lrs):
            raise DeepfoundryError(f"config key 'model.group_lrs': expected {n} non-negative learning rates, one "
                                   f"per group ({', '.join(net.group_names)}), received {list(group_lrs)!r}")
        net.group_lrs = [float(v) for v in group_lrs]
    net.layer_lr_decay = float(layer_lr_decay) if layer_lr_decay is not None else None
    if unfreeze_every is not None:
        GradualUnfreezing(unfreeze_every)  # validates
        net.unfreeze_every = unfreeze_every
    net.set_trainable_from(net.freeze_at)
    return net
