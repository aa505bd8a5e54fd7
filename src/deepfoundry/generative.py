"""Generative models in use: sampling, latent interpolation, the importance-weighted log-likelihood of a
VAE, and an offline quality / diversity score with a classifier the project trained on the same data.

- :func:`sample_images` / :func:`interpolate`: images in [0, 1] from a finished GAN or VAE run
  (``deepfoundry sample RUN`` / ``deepfoundry interpolate RUN``).
- :func:`importance_weighted_nll`: ``-log p(x) ~= -log (1/k) sum_j p(x|z_j) p(z_j) / q(z_j|x)``,
  ``z_j ~ q(z|x)`` (Burda et al. 2016); a tighter bound than the ELBO (k = 1), reached as k grows.
- :func:`quality_score`: with a classifier run (e.g. ``lenet5-mnist``): the share of samples it
  labels with confidence >= 0.9, the share of each predicted class (coverage, mode collapse),
  and the Frechet distance ``||m1 - m2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))`` between Gaussians
  fitted to the classifier's penultimate features of the samples and of held-out real images
  (FID's formula, in a feature space that needs no download). :func:`inception_fid` computes
  torchmetrics' Inception FID where its weights are available.
- :class:`GenerativeMonitor`: the callback the GAN and VAE tasks bring to the Trainer: a sample
  grid per epoch (``RUN/samples/epoch_NNN.png``), G/D losses every ``log_every_steps`` steps
  (``kind: "gan"`` records in ``metrics.jsonl``) and the discriminator-collapse warning.

Its report sections (losses, samples per epoch, reconstructions, latent space) are in
:mod:`deepfoundry.report.generative`.

>>> from deepfoundry import load_run
>>> from deepfoundry.generative import sample_images, quality_score
>>> images = sample_images(load_run("runs/dcgan-mnist"), 1000)          # (1000, 1, 28, 28) in [0, 1]
>>> quality_score(images, load_run("runs/lenet5-mnist"))["confident_share"]
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .engine.callbacks import Callback
from .errors import DeepfoundryError

if TYPE_CHECKING:
    from .api import Run
    from .engine.trainer import Trainer

CONFIDENCE = 0.9


# ----------------------------------------------------------------------------- pixels and grids

def to_pixels(x: torch.Tensor, preprocess: dict[str, Any] | None) -> torch.Tensor:
    """Undo a fitted standardisation (``x * std + mean``) so images are back in [0, 1]; identity without one."""
    if not preprocess:
        return x
    shape = (1, -1, 1, 1) if x.dim() == 4 else (1, -1)
    mean = torch.tensor(preprocess["mean"], dtype=x.dtype, device=x.device).reshape(shape)
    std = torch.tensor(preprocess["std"], dtype=x.dtype, device=x.device).reshape(shape)
    return x * std + mean


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8) -> Path:
    """Write images ``(N, C, H, W)`` in [0, 1] as one PNG grid (``nrow`` images per row)."""
    from torchvision.utils import save_image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images.detach().float().cpu().clamp(0, 1), str(path), nrow=nrow, padding=2, pad_value=0.5)
    return path


def fixed_labels(num_classes: int, per_class: int) -> torch.Tensor:
    """``[0]*per_class + [1]*per_class + ...``: one grid row per class."""
    return torch.arange(num_classes).repeat_interleave(per_class)


# ----------------------------------------------------------------------------- runs

def generative_model(run: "Run") -> torch.nn.Module:
    """The run's model if it can ``sample``; a clear error for other runs."""
    model = run.model
    if not callable(getattr(model, "sample", None)):
        raise DeepfoundryError(
            f"'{run.path}' is a {run.task.family} run (model "
            f"{run.config.model.name!r}); sample and interpolate need a GAN or VAE run (e.g. dcgan-digits, vae-digits)")
    return model


def check_class(model: torch.nn.Module, cls: int | None, n: int) -> torch.Tensor | None:
    """Labels for ``n`` samples of class ``cls``; errors when the class is out of range or the model is
    unconditional; for a conditional model without ``cls``, the classes in turn."""
    conditional, k = bool(getattr(model, "conditional", False)), int(getattr(model, "num_classes", 0))
    if cls is None:
        return torch.arange(n) % k if conditional else None
    if not conditional:
        raise DeepfoundryError(f"--class {cls}: this model is not conditional (train a conditional one, e.g. "
                               f"cgan-mnist or --set model.conditional=true) or drop --class")
    if not 0 <= cls < k:
        raise DeepfoundryError(f"--class {cls} is out of range: this model has {k} classes (0 to {k - 1})")
    return torch.full((n,), cls, dtype=torch.long)


def sample_images(run: "Run", n: int = 64, cls: int | None = None, seed: int = 0) -> torch.Tensor:
    """``n`` generated images ``(n, C, H, W)`` in [0, 1] (of class ``cls`` for a conditional model)."""
    if n < 1:
        raise DeepfoundryError(f"--n must be at least 1; received {n}")
    model = generative_model(run).cpu().eval()
    labels = check_class(model, cls, n)
    gen = torch.Generator().manual_seed(seed)
    return torch.cat([model.sample(len(chunk), labels=None if labels is None else labels[chunk], generator=gen)
                      for chunk in torch.arange(n).split(1000)])


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between latents ``a`` and ``b`` (B, D) at fractions ``t`` (T,) -> (B, T, D).

    ``sin((1 - t) w) / sin w * a + sin(t w) / sin w * b`` with ``cos w = <a, b> / |a||b|`` (White 2016):
    it stays at the typical radius of a Gaussian, where linear interpolation passes near its centre.
    """
    cos = (a * b).sum(1, keepdim=True) / (a.norm(dim=1, keepdim=True) * b.norm(dim=1, keepdim=True))
    omega = torch.arccos(cos.clamp(-1 + 1e-6, 1 - 1e-6))[:, None]  # (B, 1, 1)
    t = t[None, :, None]
    return (torch.sin((1 - t) * omega) * a[:, None] + torch.sin(t * omega) * b[:, None]) / torch.sin(omega)


@torch.no_grad()
def interpolate(run: "Run", rows: int = 8, steps: int = 10, cls: int | None = None, seed: int = 0) -> torch.Tensor:
    """``rows`` interpolations of ``steps`` images each between pairs of prior draws: ``(rows * steps, C, H, W)``."""
    if rows < 1 or steps < 2:
        raise DeepfoundryError(f"interpolate needs --rows >= 1 and --steps >= 2; received {rows} and {steps}")
    model = generative_model(run).cpu().eval()
    labels = check_class(model, cls, rows)
    gen = torch.Generator().manual_seed(seed)
    a, b = (torch.randn(rows, model.latent_dim, generator=gen) for _ in range(2))
    z = slerp(a, b, torch.linspace(0, 1, steps)).reshape(rows * steps, -1)  # (rows * steps, D)
    y = None if labels is None else labels.repeat_interleave(steps)
    if hasattr(model, "generator"):  # GAN
        return model.sample(len(z), labels=y, z=z)
    return model.mean_image(model.decode(z, y))


# ----------------------------------------------------------------------------- VAE likelihood

@torch.no_grad()
def importance_weighted_nll(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, k: int = 100,
                            batch_size: int = 100, seed: int = 0) -> torch.Tensor:
    """Per-image ``-log p(x)`` estimates in nats, ``(N,)``, from ``k`` importance samples each.

    ``log w_j = log p(x|z_j) + log N(z_j; 0, I) - log q(z_j|x)``, ``z_j ~ q(z|x)`` (``log q`` from
    ``model.posterior_sample``: the Gaussian density, minus the IAF log-determinants if any);
    ``log p(x) ~= logsumexp_j(log w_j) - log k``. With ``k = 1`` this is a one-sample ELBO.
    """
    if k < 1:
        raise DeepfoundryError(f"importance samples k must be >= 1; received {k}")
    gen = torch.Generator(device=x.device).manual_seed(seed)
    log2pi = math.log(2 * math.pi)
    out = []
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size]
        yb = None if y is None else y[start:start + batch_size]
        z, log_qz = model.posterior_sample(xb, yb, k, gen)  # (B, k, D), (B, k); exact with an IAF too
        flat_y = None if yb is None else yb.repeat_interleave(k)
        decoded = model.decode(z.reshape(-1, z.shape[2]), flat_y)  # (B * k, C, H, W)
        log_px = model.log_likelihood(xb.repeat_interleave(k, dim=0), decoded).reshape(len(xb), k)
        log_pz = -0.5 * (z.pow(2) + log2pi).sum(2)
        log_w = log_px + log_pz - log_qz  # (B, k)
        out.append(-(torch.logsumexp(log_w, dim=1) - math.log(k)))
    return torch.cat(out)


# ----------------------------------------------------------------------------- offline quality score

def _check_classifier(classifier: "Run", shape: tuple[int, ...]) -> None:
    model = classifier.model
    if classifier.info.get("input_kind") != "image" or not all(hasattr(model, a) for a in ("features", "head")):
        raise DeepfoundryError(f"'{classifier.path}' is not an image classification run; the quality score needs "
                               f"one trained on the same data (e.g. deepfoundry train lenet5-mnist)")
    expected = tuple(classifier.info.get("input_shape", ()))
    if expected != tuple(shape):
        raise DeepfoundryError(f"the classifier '{classifier.path}' takes images of shape {expected}, the samples are "
                               f"{tuple(shape)}; train the classifier on the generator's data")


@torch.no_grad()
def classifier_outputs(classifier: "Run", images: torch.Tensor, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """``(probabilities (N, K), penultimate features (N, F))`` of ``classifier`` for images in [0, 1]."""
    from .data import apply_preprocess

    _check_classifier(classifier, tuple(images.shape[1:]))
    model = classifier.model.cpu().eval()
    head = model.head
    body = head[:-1] if isinstance(head, torch.nn.Sequential) and len(head) > 1 else torch.nn.Flatten()
    last = head[-1] if isinstance(head, torch.nn.Sequential) and len(head) > 1 else head
    probs, feats = [], []
    for chunk in images.split(batch_size):
        h = body(model.features(apply_preprocess(chunk.cpu(), classifier.info.get("preprocess"))))
        feats.append(h.flatten(1).double())
        probs.append(torch.softmax(last(h).float(), dim=1))
    return torch.cat(probs), torch.cat(feats)


def frechet_distance(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """``||m_a - m_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` between Gaussians fitted to features (N, F)."""
    from scipy import linalg

    a, b = (np.asarray(t, dtype=np.float64) for t in (a, b))
    if len(a) < 2 or len(b) < 2:
        raise DeepfoundryError("the Frechet distance needs at least 2 feature vectors on each side")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # dead ReLU features make the covariances singular; handled below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(cov_a @ cov_b)
        if not np.isfinite(covmean).all():  # regularise, as the FID reference code does
            offset = np.eye(len(cov_a)) * 1e-6
            covmean = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean.real))


def quality_score(images: torch.Tensor, classifier: "Run", real: torch.Tensor | None = None,
                  target_class: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Confidence, class coverage and Frechet distances of ``images`` (N, C, H, W) in [0, 1].

    Returns ``confident_share`` (max probability >= 0.9), ``class_shares`` (share of each predicted
    class), ``classes_present``, ``max_class_share``, ``mean_confidence``; with ``target_class``,
    ``label_match`` (share labelled that class); with ``real`` images, ``frechet_distance`` (samples vs
    real) and ``frechet_noise`` (uniform noise of the same shape vs real, the baseline to beat).
    """
    probs, feats = classifier_outputs(classifier, images)
    conf, pred = probs.max(dim=1)
    k = probs.shape[1]
    shares = torch.bincount(pred, minlength=k).double() / len(pred)
    out: dict[str, Any] = {
        "n": len(images), "confident_share": float((conf >= CONFIDENCE).double().mean()),
        "mean_confidence": float(conf.mean()), "class_shares": [round(float(s), 4) for s in shares],
        "classes_present": int((shares > 0).sum()), "max_class_share": float(shares.max())}
    if target_class is not None:
        out["label_match"] = float((pred == target_class).double().mean())
    if real is not None:
        _, real_feats = classifier_outputs(classifier, real)
        noise = torch.rand(images.shape, generator=torch.Generator().manual_seed(seed))
        _, noise_feats = classifier_outputs(classifier, noise)
        out["frechet_distance"] = frechet_distance(feats, real_feats)
        out["frechet_noise"] = frechet_distance(noise_feats, real_feats)
    return out


def inception_fid(fake: torch.Tensor, real: torch.Tensor) -> float:
    """torchmetrics' FID (Inception-v3 pool features) of images in [0, 1]; needs its weights (torch-fidelity)."""
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance

        fid = FrechetInceptionDistance(feature=2048, normalize=True)
    except Exception as exc:  # missing torch-fidelity, or no network to fetch the weights
        raise DeepfoundryError(f"torchmetrics' Inception FID is not available here ({' '.join(str(exc).split())}); "
                               f"use quality_score's Frechet distance in the classifier's feature space") from None
    rgb = (lambda t: t.expand(-1, 3, -1, -1) if t.shape[1] == 1 else t)
    fid.update(rgb(real.float()), real=True)
    fid.update(rgb(fake.float()), real=False)
    return float(fid.compute())


# ----------------------------------------------------------------------------- the training callback

class GenerativeMonitor(Callback):
    """Sample grids per epoch, G/D loss records and the discriminator-collapse check (see the module doc).

    Collapse: when the discriminator's loss stays below ``collapse_threshold`` for ``collapse_steps``
    consecutive steps (D separates real from fake perfectly, so G's gradients vanish), it prints a
    warning and logs ``{"kind": "warning", ...}`` once per episode.
    """

    def __init__(self, per_epoch: int = 64, collapse_threshold: float = 0.01, collapse_steps: int = 200) -> None:
        self.per_epoch, self.collapse_threshold, self.collapse_steps = per_epoch, collapse_threshold, collapse_steps
        self._sums: dict[str, float] = {}
        self._count = 0
        self._low = 0
        self.warnings: list[str] = []

    def on_epoch_start(self, trainer: "Trainer", epoch: int) -> None:
        trainer.task.global_step = trainer.global_step  # the KL warm-up reads both
        trainer.task.batches_per_epoch = trainer.steps_per_epoch_batches

    def on_train_batch_end(self, trainer: "Trainer", loss: torch.Tensor) -> None:
        losses = getattr(trainer.task, "last_losses", None)
        if not losses:
            return
        for key, value in losses.items():
            self._sums[key] = self._sums.get(key, 0.0) + value
        self._count += 1
        d_loss = losses.get("d_loss")
        if d_loss is not None:
            self._low = self._low + 1 if d_loss < self.collapse_threshold else 0
            if self._low == self.collapse_steps:
                message = (f"discriminator collapse: D's loss stayed below {self.collapse_threshold} for "
                           f"{self.collapse_steps} steps (step {trainer.global_step}); G receives almost no "
                           f"gradient. Try task.loss=hinge, task.label_smoothing=0.1, model.spectral_norm=true "
                           f"or a lower task.lr_d")
                self.warnings.append(message)
                trainer.callbacks[0].console.print(f"warning: {message}", highlight=False)
                trainer.log({"kind": "warning", "epoch": trainer.epoch + 1, "step": trainer.global_step,
                             "message": message})
        if trainer.global_step % trainer.config.log_every_steps == 0:
            record = {"kind": "gan", "epoch": trainer.epoch + 1, "step": trainer.global_step}
            record.update({k: v / self._count for k, v in self._sums.items()})
            trainer.log(record)
            self._sums, self._count = {}, 0

    @torch.no_grad()
    def on_epoch_end(self, trainer: "Trainer", record: dict[str, Any]) -> None:
        if trainer.run_dir is None or self.per_epoch <= 0:
            return
        model = trainer.unwrapped_model
        labels, nrow = None, 8
        if getattr(model, "conditional", False):
            nrow = max(1, self.per_epoch // model.num_classes)
            labels = fixed_labels(model.num_classes, nrow).to(trainer.device)
        gen = torch.Generator(device=trainer.device).manual_seed(1234)  # same noise every epoch, global RNG untouched
        was_training = model.training
        model.eval()
        images = model.sample(len(labels) if labels is not None else self.per_epoch, labels=labels, generator=gen)
        model.train(was_training)
        save_grid(images, trainer.run_dir / "samples" / f"epoch_{record['epoch']:03d}.png", nrow=nrow)

    def state_dict(self) -> dict[str, Any]:
        return {"low": self._low}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._low = int(state.get("low", 0))
