"""Models whose parameters form ordered **layer groups** (input first, the head last), the unit of
transfer learning's freezing, discriminative learning rates and gradual unfreezing.

- **Freezing** (``freeze``): ``all_but_head`` trains the head only (a linear probe on frozen
  features), ``first_n`` freezes the first ``freeze_blocks`` groups, ``none`` fine-tunes everything.
  Frozen parameters get ``requires_grad = False``, and the batch-norm layers of frozen groups stay in
  eval mode while the model trains, so their running mean/variance keep the pretrained statistics
  (``BN(x) = gamma * (x - mu_pretrained) / sqrt(var_pretrained + eps) + beta``).
- **Discriminative learning rates** (Howard & Ruder 2018, ULMFiT): group ``g`` at distance ``d``
  from the head learns at ``lr_g = lr * layer_lr_decay ** d`` (the head at ``lr``), or at the
  explicit ``group_lrs`` (one per group, input first). :meth:`GroupedModel.param_groups` gives the
  optimizer one parameter group per layer group, the head first (read by
  :func:`deepfoundry.optim.parameter_groups`).
- **Gradual unfreezing** (ULMFiT): ``unfreeze_every = k`` is read by the Trainer's
  :class:`~deepfoundry.engine.callbacks.GradualUnfreezing`, which calls :meth:`GroupedModel.set_trainable_from`
  at the start of every epoch (this module imports nothing of the engine).

>>> class Two(GroupedModel):
...     def __init__(self):
...         super().__init__()
...         self.body, self.head = nn.Linear(3, 4), nn.Linear(4, 2)
...         self.group_names, self.groups = ["body", "head"], [[self.body], [self.head]]
>>> net = configure_groups(Two(), freeze="all_but_head", layer_lr_decay=0.5)
>>> net.body.weight.requires_grad, [(g["name"], g["lr"]) for g in net.param_groups(0.1)]
(False, [('head', 0.1), ('body', 0.05)])
"""
from __future__ import annotations

from typing import Any, Sequence

from torch import nn

from ..errors import DeepfoundryError

FREEZE_CHOICES = ("none", "all_but_head", "first_n")


class GroupedModel(nn.Module):
    """A model whose parameters form ordered layer groups (input first, the head last): freezing,
    per-group learning rates (``param_groups``) and gradual unfreezing (``unfreeze_every``).
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

    # ---------------------------------------------------------------- optimizer groups
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


def check_unfreeze_every(every: Any) -> int:
    """``every`` if it is a positive integer (``model.unfreeze_every``), else a one-line error."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise DeepfoundryError(f"config key 'model.unfreeze_every': expected a positive integer, received {every!r}")
    return every


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
        net.unfreeze_every = check_unfreeze_every(unfreeze_every)
    net.set_trainable_from(net.freeze_at)
    return net


__all__ = ["FREEZE_CHOICES", "GroupedModel", "check_unfreeze_every", "configure_groups"]
