"""Generative adversarial networks (Goodfellow et al. 2014), DCGAN (Radford, Metz & Chintala 2016) and
their class-conditional forms (Mirza & Osindero 2014; projection discriminator, Miyato & Koyama 2018).

A generator ``G`` maps noise ``z ~ N(0, I)`` (and a class ``y``) to an image in [-1, 1] (tanh
output); a discriminator ``D`` maps an image (and ``y``) to a logit ``l`` whose sigmoid
``D(x) = s(l)`` is the probability that ``x`` is real. ``GAN`` holds both, plus an exponential
moving average of the generator's weights (``generator_ema``, updated by the adversarial task)
that ``sample`` uses by default.

- ``gan_mlp``: G = z -> hidden (BN, ReLU) ... -> C*H*W (tanh); D = x -> hidden (LeakyReLU 0.2) ... -> 1.
- ``dcgan``: G = z -> FC -> (2b, H/4, W/4) -> BN ReLU -> ConvT 4x4/2 (b) BN ReLU -> ConvT 4x4/2 (C) tanh;
  D = Conv 4x4/2 (b) LeakyReLU -> Conv 4x4/2 (2b) BN LeakyReLU -> FC -> 1, ``b = base_channels``.

Conditioning: G reads ``[z, onehot(y)]``; D adds a projection term ``<embed(y), h>`` to its logit,
``l = w . h + b + embed(y) . h`` over its last features ``h``. ``spectral_norm=True`` divides every
weight of D by its largest singular value (Miyato et al. 2018) and drops D's batch norm.

>>> gan = dcgan(input_size=(28, 28))
>>> gan.sample(4).shape
torch.Size([4, 1, 28, 28])
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

from ..errors import DeepfoundryError
from ..nn.activations import image_size, positive_int
from ..registry import MODELS


class Generator(nn.Module):
    """``G(z[, y])``: ``body`` maps ``(B, latent_dim [+ num_classes])`` to images ``(B, C, H, W)`` in [-1, 1]."""

    def __init__(self, body: nn.Module, latent_dim: int, num_classes: int, conditional: bool) -> None:
        super().__init__()
        self.body, self.latent_dim, self.num_classes, self.conditional = body, latent_dim, num_classes, conditional

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.conditional:
            z = torch.cat([z, F.one_hot(y.long(), self.num_classes).to(z.dtype)], dim=1)
        return self.body(z)


class Discriminator(nn.Module):
    """``D(x[, y])`` as a logit ``(B,)``: ``features`` -> ``h (B, F)``; ``l = out(h) [+ <embed(y), h>]``."""

    def __init__(self, features: nn.Module, feature_size: int, num_classes: int, conditional: bool,
                 spectral_norm: bool) -> None:
        super().__init__()
        wrap = _sn if spectral_norm else (lambda m: m)
        self.features = features
        self.out = wrap(nn.Linear(feature_size, 1))
        self.conditional = conditional
        if conditional:
            embed = nn.Embedding(num_classes, feature_size)
            nn.init.normal_(embed.weight, std=0.02)
            self.embed = wrap(embed)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(x)  # (B, F)
        logit = self.out(h).squeeze(1)  # (B,)
        if self.conditional:
            logit = logit + (self.embed(y.long()) * h).sum(dim=1)  # projection term
        return logit

    def probability(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``D(x) = sigmoid(logit)``: the probability that ``x`` is a real image."""
        return torch.sigmoid(self(x, y))


class GAN(nn.Module):
    """Generator, discriminator and (optionally) the generator's moving average, as one module.

    ``forward(z, y)`` is the generator (the EMA copy when present, in eval mode).
    """

    def __init__(self, generator: Generator, discriminator: Discriminator, image_shape: tuple[int, int, int],
                 ema: bool = True) -> None:
        super().__init__()
        self.generator, self.discriminator = generator, discriminator
        self.image_shape = tuple(image_shape)
        self.latent_dim, self.num_classes = generator.latent_dim, generator.num_classes
        self.conditional = generator.conditional
        self.generator_ema = copy.deepcopy(generator).requires_grad_(False).eval() if ema else None

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.sampling_generator()(z, y)

    def sampling_generator(self) -> Generator:
        return self.generator_ema if self.generator_ema is not None else self.generator

    @torch.no_grad()
    def update_ema(self, decay: float) -> None:
        """``theta_ema = decay * theta_ema + (1 - decay) * theta``; buffers (BN statistics) are copied."""
        if self.generator_ema is None:
            return
        for e, p in zip(self.generator_ema.parameters(), self.generator.parameters()):
            e.lerp_(p.detach(), 1.0 - decay)
        for e, b in zip(self.generator_ema.buffers(), self.generator.buffers()):
            e.copy_(b)

    @torch.no_grad()
    def recalibrate_ema_bn(self, batches: int = 16, batch_size: int = 256, seed: int = 0) -> None:
        """Re-estimate the EMA generator's batch-norm statistics from its own activations.

        ``update_ema`` averages weights but copies the live generator's running statistics, which
        describe the live network's activations, not the averaged one's. Here every batch-norm layer
        of ``generator_ema`` gets the plain average (momentum ``None``) of the batch statistics of
        ``batches`` noise batches (random classes for a conditional model) pushed through it in
        training mode ("standing statistics", Brock et al. 2019), then returns to eval mode.
        """
        g = self.generator_ema
        norms = [m for m in g.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] if g is not None else []
        if not norms:
            return
        device = next(g.parameters()).device
        gen = torch.Generator(device=device).manual_seed(seed)
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        g.train()
        for _ in range(batches):
            z = torch.randn(batch_size, self.latent_dim, device=device, generator=gen)
            y = (torch.randint(self.num_classes, (batch_size,), device=device, generator=gen)
                 if self.conditional else None)
            g(z, y)
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        g.eval()

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        device = next(self.parameters()).device
        return torch.randn(n, self.latent_dim, device=device, generator=generator)

    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None, generator: torch.Generator | None = None,
               z: torch.Tensor | None = None) -> torch.Tensor:
        """``n`` images in [0, 1], ``(n, C, H, W)``, from ``z ~ N(0, I)`` (or the given ``z``)."""
        g = self.sampling_generator()
        was_training = g.training
        g.eval()
        z = self.noise(n, generator) if z is None else z
        if self.conditional and labels is None:
            raise DeepfoundryError("this GAN is conditional: sampling needs class labels")
        out = g(z, labels.to(z.device) if labels is not None else None)
        g.train(was_training)
        return (out + 1) / 2


def _dcgan_init(module: nn.Module) -> None:
    """DCGAN initialisation: conv weights ~ N(0, 0.02), batch-norm scales ~ N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) and not hasattr(m, "parametrizations"):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _check_size(name: str, size: tuple[int, int]) -> None:
    if size[0] % 4 or size[1] % 4 or min(size) < 4:
        raise DeepfoundryError(
            f"{name}'s generator upsamples (H/4, W/4) twice by 2, so it makes images whose height and width are "
            f"multiples of 4; received {size[0]}x{size[1]} images (use 8x8, 28x28, 32x32, ... or gan_mlp)")


@MODELS.register("dcgan")
def dcgan(*, in_channels: int = 1, input_size: Sequence[int] = (28, 28), num_classes: int = 10,
          latent_dim: int = 64, base_channels: int = 32, conditional: bool = False, spectral_norm: bool = False,
          ema: bool = True, extra_layers: int = 0) -> GAN:
    """DCGAN (Radford et al. 2016): transposed-conv generator, strided-conv discriminator, BN, LeakyReLU.

    ``conditional=True`` gives the class-conditional form (one-hot in G, projection in D);
    ``spectral_norm=True`` normalises D's weights; ``ema`` keeps a moving average of G;
    ``extra_layers`` adds that many 3x3 stride-1 conv blocks at (2b, H/4, W/4) to G (after its first
    block) and to D (before its output), for capacity without changing the resolution path.

    >>> dcgan(input_size=(8, 8), conditional=True).sample(3, labels=torch.tensor([0, 1, 2])).shape
    torch.Size([3, 1, 8, 8])
    """
    h, w = image_size(input_size)
    _check_size("dcgan", (h, w))
    c, b = positive_int("in_channels", in_channels), positive_int("base_channels", base_channels)
    z = positive_int("latent_dim", latent_dim)
    extra = int(extra_layers)
    if extra < 0:
        raise DeepfoundryError(f"model.extra_layers must be >= 0; received {extra_layers}")
    hh, ww = h // 4, w // 4
    g_body = nn.Sequential(
        nn.Linear(z + (num_classes if conditional else 0), 2 * b * hh * ww, bias=False), nn.Unflatten(1, (2 * b, hh, ww)),  # (B, 2b, H/4, W/4)
        nn.BatchNorm2d(2 * b), nn.ReLU(True),
        *[m for _ in range(extra) for m in (nn.Conv2d(2 * b, 2 * b, 3, 1, 1, bias=False), nn.BatchNorm2d(2 * b),
                                            nn.ReLU(True))],  # (B, 2b, H/4, W/4)
        nn.ConvTranspose2d(2 * b, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(True),  # (B, b, H/2, W/2)
        nn.ConvTranspose2d(b, c, 4, 2, 1), nn.Tanh())  # (B, C, H, W)
    wrap = _sn if spectral_norm else (lambda m: m)
    d_layers: list[nn.Module] = [wrap(nn.Conv2d(c, b, 4, 2, 1)), nn.LeakyReLU(0.2, True),  # (B, b, H/2, W/2)
                                 wrap(nn.Conv2d(b, 2 * b, 4, 2, 1, bias=spectral_norm))]  # (B, 2b, H/4, W/4)
    if not spectral_norm:
        d_layers.append(nn.BatchNorm2d(2 * b))
    d_layers.append(nn.LeakyReLU(0.2, True))
    for _ in range(extra):  # (B, 2b, H/4, W/4)
        d_layers.append(wrap(nn.Conv2d(2 * b, 2 * b, 3, 1, 1, bias=spectral_norm)))
        if not spectral_norm:
            d_layers.append(nn.BatchNorm2d(2 * b))
        d_layers.append(nn.LeakyReLU(0.2, True))
    d_layers.append(nn.Flatten())
    generator = Generator(g_body, z, num_classes, bool(conditional))
    discriminator = Discriminator(nn.Sequential(*d_layers), 2 * b * hh * ww, num_classes, bool(conditional),
                                  bool(spectral_norm))
    _dcgan_init(generator)
    _dcgan_init(discriminator)
    return GAN(generator, discriminator, (c, h, w), ema=bool(ema))


@MODELS.register("gan_mlp")
def gan_mlp(*, in_channels: int = 1, input_size: Sequence[int] = (28, 28), num_classes: int = 10,
            latent_dim: int = 64, hidden_sizes: Sequence[int] = (256, 512), conditional: bool = False,
            spectral_norm: bool = False, ema: bool = True) -> GAN:
    """MLP GAN (Goodfellow et al. 2014): fully connected G (BN, ReLU, tanh) and D (LeakyReLU 0.2).

    G's layers are ``hidden_sizes``; D's are the same sizes in reverse.

    >>> gan_mlp(input_size=(8, 8)).sample(2).shape
    torch.Size([2, 1, 8, 8])
    """
    h, w = image_size(input_size)
    c, z = positive_int("in_channels", in_channels), positive_int("latent_dim", latent_dim)
    hidden = [positive_int("hidden_sizes", s) for s in hidden_sizes]
    if not hidden:
        raise DeepfoundryError("gan_mlp needs at least one hidden layer; received hidden_sizes=[]")
    extra = num_classes if conditional else 0
    g_layers: list[nn.Module] = []
    for a, b in zip([z + extra, *hidden[:-1]], hidden):
        g_layers += [nn.Linear(a, b, bias=False), nn.BatchNorm1d(b), nn.ReLU(True)]
    g_layers += [nn.Linear(hidden[-1], c * h * w), nn.Tanh(), nn.Unflatten(1, (c, h, w))]
    wrap = _sn if spectral_norm else (lambda m: m)
    d_layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip([c * h * w, *hidden[::-1][:-1]], hidden[::-1]):
        d_layers += [wrap(nn.Linear(a, b)), nn.LeakyReLU(0.2, True)]
    generator = Generator(nn.Sequential(*g_layers), z, num_classes, bool(conditional))
    discriminator = Discriminator(nn.Sequential(*d_layers), hidden[0], num_classes, bool(conditional),
                                  bool(spectral_norm))
    return GAN(generator, discriminator, (c, h, w), ema=bool(ema))
