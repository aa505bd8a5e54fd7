"""Variational autoencoders: maximise the evidence lower bound (ELBO), loss = its negative.

``loss = -E_q(z|x)[log p(x|z)] + beta * KL(q(z|x) || N(0, I))`` per image, with one reparameterised
draw of ``z`` (Kingma & Welling 2014) and the closed-form Gaussian KL
``KL = -1/2 sum_j (1 + logvar_j - mu_j^2 - exp(logvar_j))``. ``beta`` > 1 trades reconstruction for a
more factorised latent (Higgins et al. 2017). KL warm-up (Bowman et al. 2016; Sonderby et al.
2016) ramps the KL weight linearly from 0 to ``beta`` over ``kl_warmup_epochs``.

With an inverse autoregressive flow in the posterior (``model.flow_steps > 0``) the KL has no closed
form; it is estimated with the same draw, ``KL ~= log q(z_T|x) - log N(z_T; 0, I)``, where
``log q`` includes the flow's log-determinants (:meth:`~deepfoundry.models.vae.VAE.posterior_sample`):
an unbiased one-sample estimate of the same ELBO.

Evaluation reports the true negative ELBO (beta = 1, no warm-up), in nats per image summed over
the pixels: ``loss`` (= ``neg_elbo``), ``recon`` (``-log p(x|z)``) and ``kl``; with the same noise
every pass, so numbers are reproducible. Inputs are images in [0, 1] (recipes set
``data.normalize: false``; a fitted standardisation is undone first).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import DeepfoundryError
from ..models.vae import LOG_2PI
from ..registry import TASKS
from .base import Task


class VariationalTask(Task):
    """Trains a :class:`~deepfoundry.models.vae.VAE`; ``predict(x)`` returns the posterior means ``mu``."""

    report_sections = ("curves", "vae")

    family = "VAE"

    def decode_outputs(self, outputs: torch.Tensor) -> list[dict[str, Any]]:
        """One row per image: ``{"latent": mu}``, the posterior mean of ``q(z|x)``."""
        return [{"latent": [float(v) for v in row]} for row in outputs.double().cpu().numpy()]

    def __init__(self, model: nn.Module, info: dict[str, Any], beta: float = 1.0, kl_warmup_epochs: float = 0.0,
                 samples_per_epoch: int = 64) -> None:
        super().__init__(model, info)
        for attr in ("encode", "decode", "log_likelihood"):
            if not callable(getattr(model, attr, None)):
                raise DeepfoundryError(f"task 'variational' needs a VAE model (vae_mlp, vae_conv); the model has no "
                                       f"{attr}()")
        if beta < 0 or kl_warmup_epochs < 0:
            raise DeepfoundryError(f"task.beta and task.kl_warmup_epochs must be >= 0; received {beta} and "
                                   f"{kl_warmup_epochs}")
        expected = tuple(int(s) for s in info.get("input_shape", model.image_shape))
        if expected != tuple(model.image_shape):
            raise DeepfoundryError(f"the VAE is built for images {tuple(model.image_shape)} but the data has "
                                   f"{expected}")
        self.beta, self.kl_warmup_epochs, self.samples_per_epoch = float(beta), float(kl_warmup_epochs), samples_per_epoch
        self.preprocess = info.get("preprocess")
        self.global_step, self.batches_per_epoch = 0, 1  # set by GenerativeMonitor at each epoch start
        info["task_type"] = "generation"
        info["generative"] = "vae"
        self.reset_metrics()

    def callbacks(self) -> list[Any]:
        from ..generative import GenerativeMonitor

        return [GenerativeMonitor(per_epoch=self.samples_per_epoch)]

    def _pixels(self, x: torch.Tensor) -> torch.Tensor:
        from ..generative import to_pixels

        return to_pixels(x, self.preprocess) if self.preprocess else x

    def kl_weight(self) -> float:
        """``beta * min(1, step / warm-up steps)``."""
        if self.kl_warmup_epochs <= 0:
            return self.beta
        return self.beta * min(1.0, self.global_step / (self.kl_warmup_epochs * self.batches_per_epoch))

    def terms(self, x: torch.Tensor, y: torch.Tensor | None,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image ``(-log p(x|z), KL)``, each ``(B,)``, for one draw ``z ~ q(z|x)``."""
        if getattr(self.model, "has_flow", False):
            z, log_q = self.model.posterior_sample(x, y, 1, generator)
            z, log_q = z[:, 0], log_q[:, 0]
            recon = -self.model.log_likelihood(x, self.model.decode(z, y))
            log_p = -0.5 * (z.pow(2) + LOG_2PI).sum(dim=1)
            return recon, log_q - log_p
        mu, logvar = self.model.encode(x, y)
        z = self.model.reparameterize(mu, logvar, generator)
        recon = -self.model.log_likelihood(x, self.model.decode(z, y))
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)
        return recon, kl

    def training_step(self, batch: Any) -> torch.Tensor:
        x, y = batch
        recon, kl = self.terms(self._pixels(x), y if self.model.conditional else None)
        self.global_step += 1
        return (recon + self.kl_weight() * kl).mean()

    def reset_metrics(self) -> None:
        self._recon, self._kl, self._count = 0.0, 0.0, 0
        self._gen: torch.Generator | None = None

    def evaluation_step(self, batch: Any) -> None:
        x, y = batch
        if self._gen is None:
            self._gen = torch.Generator(device=x.device).manual_seed(1)
        recon, kl = self.terms(self._pixels(x), y if self.model.conditional else None, self._gen)
        self._recon += float(recon.double().sum())
        self._kl += float(kl.double().sum())
        self._count += len(x)

    def compute_metrics(self) -> dict[str, Any]:
        n = max(1, self._count)
        return {"loss": (self._recon + self._kl) / n, "neg_elbo": (self._recon + self._kl) / n,
                "recon": self._recon / n, "kl": self._kl / n}

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior means ``mu`` of ``q(z|x)``, ``(B, latent_dim)`` (unconditional VAEs)."""
        if self.model.conditional:
            raise DeepfoundryError("predict on a conditional VAE needs labels; use run.model.encode(x, y)")
        return self.model.encode(self._pixels(x))[0]


@TASKS.register("variational")
def variational(*, model: nn.Module, info: dict[str, Any], beta: float = 1.0, kl_warmup_epochs: float = 0.0,
                samples_per_epoch: int = 64) -> VariationalTask:
    """VAE training: loss = -log p(x|z) + beta * KL(q(z|x) || N(0, I)), optional KL warm-up (epochs)."""
    return VariationalTask(model, info, beta=beta, kl_warmup_epochs=kl_warmup_epochs,
                           samples_per_epoch=samples_per_epoch)
