"""Optimizers and learning-rate schedules by name.

Optimizers (``optim.name``): ``sgd`` (``momentum``, ``nesterov``), ``adam``, ``adamw``, ``rmsprop``,
``adagrad``. The update rules, for gradient ``g`` and learning rate ``lr``:

- sgd:      ``v = mu * v + g;  w -= lr * (g + mu * v if nesterov else v)``
- adam:     ``m = b1 m + (1-b1) g;  s = b2 s + (1-b2) g^2;  w -= lr * m_hat / (sqrt(s_hat) + eps)``
- adamw:    adam with decoupled weight decay ``w -= lr * wd * w``
- rmsprop:  ``s = a s + (1-a) g^2;  w -= lr * g / (sqrt(s) + eps)``
- adagrad:  ``s += g^2;  w -= lr * g / (sqrt(s) + eps)``

Schedules (``optim.scheduler.name``), all with an optional linear warm-up:
``none``, ``step`` (lr * gamma^(epoch // step_size)), ``cosine`` (to ``min_lr``), ``wsd``
(warm-up, stable, decay: ``lr`` held until the last ``decay_fraction`` of the steps, then a linear decay
to ``min_lr``; Hu et al. 2024, Hagele et al. 2024: a run whose length is not known far ahead, or that is
cut short, keeps the full rate for longer than under a cosine), ``onecycle`` (Smith & Topin 2019: warm up to ``lr`` then anneal) and ``plateau`` (decay by
``gamma`` when the monitored metric stalls for ``patience`` epochs).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import torch

from .config import OptimConfig
from .errors import DeepfoundryError


def build_optimizer(cfg: OptimConfig, params: Iterable[Any]) -> torch.optim.Optimizer:
    """The optimizer named by ``cfg.name`` over ``params`` (tensors or param groups)."""
    params = list(params)
    if cfg.fused and cfg.name not in ("adam", "adamw"):
        raise DeepfoundryError(f"optim.fused applies to adam and adamw; received optim.name={cfg.name!r}")
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               weight_decay=cfg.weight_decay)
    fused = {"fused": True} if cfg.fused else {}  # None (default) lets torch pick foreach/for-loop
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay, **fused)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay,
                                 **fused)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum, eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.name == "adagrad":
        return torch.optim.Adagrad(params, lr=cfg.lr, eps=cfg.eps, weight_decay=cfg.weight_decay)
    raise AssertionError(cfg.name)  # the config's Literal type has rejected anything else


def parameter_groups(task: torch.nn.Module, lr: float) -> list[dict[str, Any]]:
    """Optimizer parameter groups of ``task``: when its model has ``param_groups(lr)`` (transfer
    learning's discriminative learning rates, one group per layer group with its own ``lr``), those
    groups plus one group of the task's other parameters at ``lr``; otherwise one group of all
    parameters. Frozen parameters stay in their group (no gradient, so no update) so that gradual
    unfreezing can train them later without rebuilding the optimizer."""
    model = getattr(task, "model", task)
    groups_of = getattr(model, "param_groups", None)
    if not callable(groups_of):
        return [{"params": list(task.parameters())}]
    groups = [g for g in groups_of(lr) if g["params"]]
    grouped = {id(p) for g in groups for p in g["params"]}
    rest = [p for p in task.parameters() if id(p) not in grouped]
    return groups + ([{"params": rest, "lr": lr, "name": "rest"}] if rest else [])


@dataclass
class Schedule:
    """A scheduler and when to step it: after every optimizer step, or after every epoch."""

    scheduler: Any | None
    interval: str  # "step" or "epoch"
    needs_metric: bool = False

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict() if self.scheduler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scheduler is not None and state:
            self.scheduler.load_state_dict(state)


def build_scheduler(cfg: OptimConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int) -> Schedule:
    """The schedule of ``cfg.scheduler`` for ``epochs`` epochs of ``steps_per_epoch`` optimizer steps."""
    s = cfg.scheduler
    total = max(1, steps_per_epoch * epochs)
    warmup = int(round(s.warmup_epochs * steps_per_epoch))
    if s.name == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=total, pct_start=s.pct_start, div_factor=s.div_factor,
            final_div_factor=s.final_div_factor, cycle_momentum=cfg.name == "sgd" and cfg.momentum > 0)
        return Schedule(sched, "step")
    if s.name == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=s.gamma, patience=s.patience,
                                                           min_lr=s.min_lr)
        return Schedule(sched, "epoch", needs_metric=True)
    if s.name == "none" and warmup == 0:
        return Schedule(None, "step")
    min_ratio = s.min_lr / cfg.lr

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if s.name == "step":
            return s.gamma ** (step // (s.step_size * steps_per_epoch))
        if s.name == "cosine":
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        if s.name == "wsd":  # 1 until the decay starts, then linear to min_ratio at the last step
            decay = max(1, round(s.decay_fraction * (total - warmup)))
            progress = min(1.0, max(0, step - (total - decay) + 1) / decay)
            return 1 - (1 - min_ratio) * progress
        return 1.0

    return Schedule(torch.optim.lr_scheduler.LambdaLR(optimizer, factor), "step")
