"""Adversarial training (GANs): two players, two optimizers, stepped here (``manual_optimization``).

With the discriminator's logits ``l_r = D(x)`` on real images and ``l_f = D(G(z))`` on generated ones
(``D(.) = sigmoid(l)`` is the probability of "real"), each step first updates D, then G:

- ``non_saturating`` (Goodfellow et al. 2014, the practical form):
  ``L_D = -log D(x) - log(1 - D(G(z)))`` (real target ``1 - label_smoothing``, one-sided smoothing,
  Salimans et al. 2016); ``L_G = -log D(G(z))``.
- ``minimax``: the same ``L_D``; ``L_G = log(1 - D(G(z)))``, the original game, whose gradient vanishes
  when D wins (kept for teaching).
- ``hinge`` (Lim & Ye 2017; Miyato et al. 2018): ``L_D = max(0, 1 - l_r) + max(0, 1 + l_f)``;
  ``L_G = -l_f``.

G and D have their own optimizers (``optim.name`` / ``optim.betas``; learning rates ``task.lr_g`` and
``task.lr_d``, default ``optim.lr``); ``d_steps`` D updates per G update. After each G step the
moving average ``theta_ema = d * theta_ema + (1 - d) * theta`` of G's weights is updated with
``d = min(ema_decay, (1 + t) / (10 + t))`` at step ``t``; with ``ema_bn="recalibrate"`` (default) the
averaged generator's batch-norm statistics are re-estimated from its own activations after each
epoch's training steps (``GAN.recalibrate_ema_bn``), ``"copy"`` keeps the live generator's. The training loss the Trainer logs is
``L_D + L_G``; the separate terms go to ``metrics.jsonl`` as ``kind: "gan"`` records, and a
discriminator whose loss stays at its floor for ``collapse_steps`` steps triggers a warning.
Inputs are images in [0, 1] (``data.normalize: false``), mapped to [-1, 1] for the tanh generator.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import OptimConfig
from ..errors import DeepfoundryError
from ..registry import TASKS
from .base import Task

LOSSES = ("non_saturating", "minimax", "hinge")


def discriminator_loss(l_real: torch.Tensor, l_fake: torch.Tensor, loss: str, label_smoothing: float = 0.0) -> torch.Tensor:
    """``L_D`` from logits on real and generated images (see the module docstring), a scalar."""
    if loss == "hinge":
        return F.relu(1 - l_real).mean() + F.relu(1 + l_fake).mean()
    target = torch.full_like(l_real, 1.0 - label_smoothing)
    return (F.binary_cross_entropy_with_logits(l_real, target)
            + F.binary_cross_entropy_with_logits(l_fake, torch.zeros_like(l_fake)))


def generator_loss(l_fake: torch.Tensor, loss: str) -> torch.Tensor:
    """``L_G`` from D's logits on generated images: ``-log D(G(z))``, ``log(1 - D(G(z)))`` or ``-l_f``."""
    if loss == "hinge":
        return -l_fake.mean()
    if loss == "minimax":
        return -F.softplus(l_fake).mean()  # log(1 - sigmoid(l)) = -softplus(l)
    return F.softplus(-l_fake).mean()  # -log sigmoid(l) = softplus(-l)


class AdversarialTask(Task):
    """Trains a :class:`~deepfoundry.models.gan.GAN`; ``predict(x)`` returns D's probability that x is real."""

    family = "GAN"

    def decode_outputs(self, outputs: torch.Tensor) -> list[dict[str, Any]]:
        """One row per image: ``{"real_probability": D(x)}``."""
        return [{"real_probability": float(p)} for p in outputs.double().cpu().numpy().ravel()]

    manual_optimization = True
    report_sections = ("curves", "gan")

    def __init__(self, model: nn.Module, info: dict[str, Any], loss: str = "non_saturating",
                 label_smoothing: float = 0.0, lr_g: float | None = None, lr_d: float | None = None,
                 d_steps: int = 1, ema_decay: float = 0.999, collapse_threshold: float = 0.01,
                 collapse_steps: int = 200, samples_per_epoch: int = 64, ema_bn: str = "recalibrate") -> None:
        super().__init__(model, info)
        if ema_bn not in ("recalibrate", "copy"):
            raise DeepfoundryError(f"task.ema_bn must be 'recalibrate' or 'copy'; received {ema_bn!r}")
        self.ema_bn, self._trained_since_eval = ema_bn, False
        if not (hasattr(model, "generator") and hasattr(model, "discriminator")):
            raise DeepfoundryError("task 'adversarial' needs a GAN model (dcgan, gan_mlp)")
        if loss not in LOSSES:
            raise DeepfoundryError(f"task.loss must be one of {', '.join(LOSSES)}; received {loss!r}")
        if not 0.0 <= label_smoothing < 0.5:
            raise DeepfoundryError(f"task.label_smoothing must be in [0, 0.5); received {label_smoothing}")
        if loss == "hinge" and label_smoothing:
            raise DeepfoundryError("task.label_smoothing applies to the non_saturating and minimax losses, not hinge")
        if not 0.0 <= ema_decay < 1.0 or d_steps < 1:
            raise DeepfoundryError(f"task.ema_decay must be in [0, 1) and task.d_steps >= 1; received {ema_decay} "
                                   f"and {d_steps}")
        for name, lr in (("lr_g", lr_g), ("lr_d", lr_d)):
            if lr is not None and not lr > 0:
                raise DeepfoundryError(f"task.{name} must be > 0; received {lr}")
        expected = tuple(int(s) for s in info.get("input_shape", model.image_shape))
        if expected != tuple(model.image_shape):
            raise DeepfoundryError(f"the generator makes images {tuple(model.image_shape)} but the data has "
                                   f"{expected}; build the model for the data's image size")
        self.loss, self.label_smoothing = loss, float(label_smoothing)
        self.lr_g, self.lr_d, self.d_steps, self.ema_decay = lr_g, lr_d, int(d_steps), float(ema_decay)
        self.collapse_threshold, self.collapse_steps = float(collapse_threshold), int(collapse_steps)
        self.samples_per_epoch = int(samples_per_epoch)
        s = self.label_smoothing  # the smallest L_D: the entropy of the smoothed real target
        self.d_loss_floor = 0.0 if s == 0 else -(s * math.log(s) + (1 - s) * math.log(1 - s))
        self.preprocess = info.get("preprocess")
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.last_losses: dict[str, float] = {}
        self.global_step = 0  # set by GenerativeMonitor at each epoch start (exact on resume)
        info["task_type"] = "generation"
        info["generative"] = "gan"
        self.reset_metrics()

    # ------------------------------------------------------------------ optimizers and callbacks
    def configure_optimizers(self, optim_config: OptimConfig) -> dict[str, torch.optim.Optimizer]:
        """Two optimizers of ``optim.name``: ``generator`` (lr ``task.lr_g``) and ``discriminator`` (``task.lr_d``)."""
        from ..optim import build_optimizer

        self.optimizers = {
            "generator": build_optimizer(optim_config.model_copy(update={"lr": self.lr_g or optim_config.lr}),
                                         self.model.generator.parameters(), module=self.model.generator),
            "discriminator": build_optimizer(optim_config.model_copy(update={"lr": self.lr_d or optim_config.lr}),
                                             self.model.discriminator.parameters(),
                                             module=self.model.discriminator),
        }
        return self.optimizers

    def callbacks(self) -> list[Any]:
        from ..generative import GenerativeMonitor

        return [GenerativeMonitor(per_epoch=self.samples_per_epoch,
                                  collapse_threshold=self.collapse_threshold + self.d_loss_floor,
                                  collapse_steps=self.collapse_steps)]

    def _real(self, x: torch.Tensor) -> torch.Tensor:
        """Data images in [0, 1] (a fitted standardisation undone) -> [-1, 1]."""
        if self.preprocess:
            from ..generative import to_pixels

            x = to_pixels(x, self.preprocess)
        return x * 2 - 1

    # ------------------------------------------------------------------ one step: D, then G
    def training_step(self, batch: Any) -> torch.Tensor:
        if not self.optimizers:
            raise DeepfoundryError("AdversarialTask steps its own optimizers: train it with the Trainer "
                                   "(it calls configure_optimizers)")
        x, y = batch
        G, D, opt_g, opt_d = (self.model.generator, self.model.discriminator,
                              self.optimizers["generator"], self.optimizers["discriminator"])
        real = self._real(x)
        y = y if self.model.conditional else None  # fakes take the real batch's labels
        for _ in range(self.d_steps):
            fake = G(self.model.noise(len(real)), y)  # (B, C, H, W) in [-1, 1]
            l_real, l_fake = D(real, y), D(fake.detach(), y)
            d_loss = discriminator_loss(l_real, l_fake, self.loss, self.label_smoothing)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
        g_loss = generator_loss(D(fake, y), self.loss)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        self.global_step += 1
        t = self.global_step
        self.model.update_ema(min(self.ema_decay, (1 + t) / (10 + t)))
        self._trained_since_eval = True
        self.last_losses = {"d_loss": float(d_loss.detach()), "g_loss": float(g_loss.detach()),
                            "d_real": float(torch.sigmoid(l_real.detach()).mean()),
                            "d_fake": float(torch.sigmoid(l_fake.detach()).mean())}
        return d_loss.detach() + g_loss.detach()

    # ------------------------------------------------------------------ evaluation
    def reset_metrics(self) -> None:
        if self._trained_since_eval and self.ema_bn == "recalibrate":  # after training steps, before evaluating
            self.model.recalibrate_ema_bn()  # and before the checkpoint and the epoch's sample grid
        self._trained_since_eval = False
        self._sums = {"d_loss": 0.0, "g_loss": 0.0, "d_real": 0.0, "d_fake": 0.0}
        self._count = 0
        self._gen: torch.Generator | None = None

    def evaluation_step(self, batch: Any) -> None:
        """D and G losses on held-out real images and as many fakes of the (EMA) generator, same noise each pass."""
        x, y = batch
        if self._gen is None:
            self._gen = torch.Generator(device=x.device).manual_seed(1)
        real = self._real(x)
        y = y if self.model.conditional else None
        fake = self.model(self.model.noise(len(real), self._gen), y)
        l_real, l_fake = self.model.discriminator(real, y), self.model.discriminator(fake, y)
        n = len(real)
        self._sums["d_loss"] += float(discriminator_loss(l_real, l_fake, self.loss, self.label_smoothing)) * n
        self._sums["g_loss"] += float(generator_loss(l_fake, self.loss)) * n
        self._sums["d_real"] += float(torch.sigmoid(l_real).sum())
        self._sums["d_fake"] += float(torch.sigmoid(l_fake).sum())
        self._count += n

    def compute_metrics(self) -> dict[str, Any]:
        out = {k: v / max(1, self._count) for k, v in self._sums.items()}
        return {"loss": out["d_loss"] + out["g_loss"], **out}

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """``D(x)``: the discriminator's probability that each image is real, ``(B, 1)``."""
        if self.model.conditional:
            raise DeepfoundryError("predict on a conditional GAN needs labels; use "
                                   "run.model.discriminator.probability(x, y)")
        return self.model.discriminator.probability(self._real(x))[:, None]


@TASKS.register("adversarial")
def adversarial(*, model: nn.Module, info: dict[str, Any], loss: str = "non_saturating", label_smoothing: float = 0.0,
                lr_g: float | None = None, lr_d: float | None = None, d_steps: int = 1, ema_decay: float = 0.999,
                collapse_threshold: float = 0.01, collapse_steps: int = 200,
                samples_per_epoch: int = 64, ema_bn: str = "recalibrate") -> AdversarialTask:
    """GAN training: D and G stepped in turn (non-saturating, minimax or hinge loss), EMA of G, collapse check."""
    return AdversarialTask(model, info, loss=loss, label_smoothing=label_smoothing, lr_g=lr_g, lr_d=lr_d,
                           d_steps=d_steps, ema_decay=ema_decay, collapse_threshold=collapse_threshold,
                           collapse_steps=collapse_steps, samples_per_epoch=samples_per_epoch,
                           ema_bn=ema_bn)
