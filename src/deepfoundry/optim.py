"""Optimizers and learning-rate schedules by name.

Optimizers (``optim.name``): ``sgd`` (``momentum``, ``nesterov``), ``adam``, ``adamw``, ``rmsprop``,
``adagrad``, ``muon``. The update rules, for gradient ``g`` and learning rate ``lr``:

- sgd:      ``v = mu * v + g;  w -= lr * (g + mu * v if nesterov else v)``
- adam:     ``m = b1 m + (1-b1) g;  s = b2 s + (1-b2) g^2;  w -= lr * m_hat / (sqrt(s_hat) + eps)``
- adamw:    adam with decoupled weight decay ``w -= lr * wd * w``
- rmsprop:  ``s = a s + (1-a) g^2;  w -= lr * g / (sqrt(s) + eps)``
- adagrad:  ``s += g^2;  w -= lr * g / (sqrt(s) + eps)``
- muon:     on hidden weight matrices ``W`` (m x n): ``M = mu M + G;  U = G + mu M`` (Nesterov),
            ``O = NS5(U) ~ U' V'^T`` (the orthogonal factor of ``U = U' S V'^T``, 5 Newton-Schulz steps),
            ``W -= muon_lr * (sqrt(max(1, m / n)) * O + wd * W)`` (Jordan et al. 2024); adamw at ``lr`` on
            everything else (embeddings, the output layer, biases, norms). See :class:`Muon`.

Schedules (``optim.scheduler.name``), all with an optional linear warm-up:
``none``, ``step`` (lr * gamma^(epoch // step_size)), ``cosine`` (to ``min_lr``), ``wsd``
(warm-up, stable, decay: ``lr`` held until the last ``decay_fraction`` of the steps, then a linear decay
to ``min_lr``; Hu et al. 2024, Hagele et al. 2024: a run whose length is not known far ahead, or that is
cut short, keeps the full rate for longer than under a cosine), ``onecycle`` (Smith & Topin 2019: warm up to ``lr`` then anneal) and ``plateau`` (decay by
``gamma`` when the monitored metric stalls for ``patience`` epochs).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import nn

from .config import OptimConfig
from .errors import DeepfoundryError

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # Jordan et al. 2024: the quintic's slope at 0 is 3.4445


@functools.lru_cache(maxsize=None)  # asked per step; the answer never changes for a device type
def native_bf16(device_type: str) -> bool:
    """Whether this machine's ``device_type`` multiplies bfloat16 natively: CUDA GPUs that support it (Ampere
    and later), CPUs with AVX512-BF16 or AMX (through oneDNN). Elsewhere bfloat16 is emulated and slower
    than float32."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device_type == "cpu":
        return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def _ns_dtype(device_type: str) -> torch.dtype:
    """bfloat16 where matmuls run natively in it (CUDA as torch's own ``Muon``; CPUs with AVX512-BF16 / AMX:
    2-3x faster than float32 there, and the iteration does not need more precision), float32 elsewhere."""
    return torch.bfloat16 if device_type == "cuda" or native_bf16(device_type) else torch.float32


def newton_schulz(g: torch.Tensor, steps: int = 5, eps: float = 1e-7, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The orthogonal factor ``U V^T`` of ``g = U S V^T``, approximately, in ``steps`` matmul-only iterations.

    On ``X = g / ||g||_F`` (singular values in [0, 1]), ``X <- a X + b (X X^T) X + c (X X^T)^2 X`` with
    ``(a, b, c) = (3.4445, -4.7750, 2.0315)`` maps every singular value towards ~1 (into about [0.7, 1.2]
    after 5 steps: not exactly 1, which does not hurt the update and converges far faster than the cubic).
    A tensor of more than 2 dims (a convolution kernel) is taken as ``(out, in * k * k)``. It iterates in
    ``dtype``: by default bfloat16 where the hardware multiplies in it natively (as torch's own ``Muon``), else
    float32.

    >>> o = newton_schulz(torch.randn(64, 32))
    >>> bool(((torch.linalg.svdvals(o) - 1).abs() < 0.35).all())
    True
    """
    a, b, c = NS_COEFFICIENTS
    x = g.reshape(g.shape[0], -1).to(dtype or _ns_dtype(g.device.type))
    tall = x.shape[0] > x.shape[1]
    if tall:  # iterate on the wide side: X X^T is the smaller Gram matrix
        x = x.T
    x = x / (x.norm() + eps)
    for _ in range(steps):  # addmm fuses the scalings and sums into the products (18% faster on a CPU)
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return (x.T if tall else x).reshape(g.shape).to(g.dtype)


class Muon(torch.optim.Optimizer):
    """Muon (MomentUm Orthogonalized by Newton-Schulz; Jordan et al. 2024) on the groups with ``use_muon``,
    AdamW on the others, in one optimizer (one state, one schedule, one checkpoint).

    A Muon group's update of a weight matrix ``W`` (m x n) with gradient ``G``:
    ``M = mu M + G``, ``U = G + mu M`` (Nesterov), ``W -= lr * (sqrt(max(1, m / n)) * NS5(U) + wd * W)``,
    where :func:`newton_schulz` replaces ``U`` by its orthogonal factor: every direction of the update gets
    the same size, so the rare directions that plain momentum under-weights move as fast as the common ones.
    That is why it wants a higher ``lr`` (0.02) than Adam. The other groups (``use_muon=False``) take the
    AdamW step with ``betas``, ``eps`` and decoupled ``weight_decay``. Build it with :func:`build_optimizer`
    (``optim.name=muon``), which puts the hidden weight matrices (:func:`hidden_matrices`) in Muon groups at
    ``optim.muon_lr`` and the rest in AdamW groups at ``optim.lr``.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0.95,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 ns_steps: int = 5) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, betas=betas, eps=eps, weight_decay=weight_decay,
                                      ns_steps=ns_steps, use_muon=False))
        for group in self.param_groups:
            if group["use_muon"] and any(p.dim() < 2 for p in group["params"]):
                raise DeepfoundryError("Muon groups take weight matrices (2 or more dims); biases and norms go in "
                                       "an AdamW group (use_muon=False)")

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if group["use_muon"]:
                    mu = group["momentum"]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(p)
                    buf = state["momentum_buffer"]
                    buf.mul_(mu).add_(p.grad)
                    update = newton_schulz(p.grad.add(buf, alpha=mu), group["ns_steps"])
                    p.mul_(1 - lr * wd).add_(update, alpha=-lr * max(1.0, p.shape[0] / p[0].numel()) ** 0.5)
                    continue
                b1, b2 = group["betas"]
                if not state:
                    state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                state["step"] += 1
                t = state["step"]
                state["exp_avg"].lerp_(p.grad, 1 - b1)
                state["exp_avg_sq"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                denom = (state["exp_avg_sq"] / (1 - b2 ** t)).sqrt_().add_(group["eps"])
                p.mul_(1 - lr * wd).addcdiv_(state["exp_avg"], denom, value=-lr / (1 - b1 ** t))
        return loss


def hidden_matrices(module: nn.Module) -> set[int]:
    """The ids of ``module``'s hidden weight matrices, the parameters :class:`Muon` orthogonalises: every
    trainable parameter of 2 or more dims except embedding tables (``nn.Embedding``, learned positions: a row
    per token is not a linear map) and the output layer (the last ``nn.Linear`` or convolution registered,
    whose rows are the per-class scores; tied to the embedding in most language models)."""
    layers = [m for m in module.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
    excluded = {id(p) for p in (layers[-1].parameters() if layers else [])}
    for name, m in module.named_modules():
        if isinstance(m, nn.Embedding) or "positional" in name.rsplit(".", 1)[-1]:
            excluded |= {id(p) for p in m.parameters()}
    return {id(p) for p in module.parameters() if p.requires_grad and p.dim() >= 2 and id(p) not in excluded}


def _muon_groups(groups: list[Any], module: nn.Module, cfg: OptimConfig) -> list[dict[str, Any]]:
    """Each group split in two: its hidden matrices (Muon at ``muon_lr``) and the rest (AdamW at ``lr``)."""
    matrices = hidden_matrices(module)
    if not groups or not isinstance(groups[0], dict):
        groups = [{"params": groups}]
    out = []
    for g in groups:
        params = list(g["params"])
        scale = g.get("lr", cfg.lr) / cfg.lr  # discriminative rates (transfer learning) apply to both parts
        for use_muon in (True, False):
            part = [p for p in params if (id(p) in matrices) == use_muon]
            if part:
                out.append({**g, "params": part, "use_muon": use_muon,
                            "lr": (cfg.muon_lr if use_muon else cfg.lr) * scale})
    return out


def build_optimizer(cfg: OptimConfig, params: Iterable[Any], module: nn.Module | None = None) -> torch.optim.Optimizer:
    """The optimizer named by ``cfg.name`` over ``params`` (tensors or param groups). ``muon`` also needs the
    ``module`` they belong to, to tell its hidden weight matrices from embeddings and the output layer."""
    params = list(params)
    if cfg.name == "muon":
        if module is None:
            raise DeepfoundryError("optim.name=muon needs the model (build_optimizer(..., module=model)) to find "
                                   "its hidden weight matrices")
        return Muon(_muon_groups(params, module, cfg), lr=cfg.lr, momentum=cfg.muon_momentum, betas=cfg.betas,
                    eps=cfg.eps, weight_decay=cfg.weight_decay)
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
