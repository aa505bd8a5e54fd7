"""Variational autoencoders (Kingma & Welling, "Auto-Encoding Variational Bayes", 2014).

An encoder maps an image ``x`` (and, for the conditional VAE of Sohn et al. 2015, its class ``y``)
to the mean and log-variance of a diagonal Gaussian posterior ``q(z|x) = N(mu, diag(exp(logvar)))``;
a decoder maps a latent ``z`` (and ``y``) to the parameters of ``p(x|z)``:

- ``bernoulli``: per-pixel logits ``l``; ``log p(x|z) = sum_i x_i log s(l_i) + (1 - x_i) log(1 - s(l_i))``
  (on the continuous pixels in [0, 1], as pytorch/examples does); the image mean is ``s(l)``.
- ``gaussian``: per-pixel means ``m`` and one learned ``log_sigma``;
  ``log p(x|z) = -sum_i [(x_i - m_i)^2 / (2 sigma^2) + log sigma + log(2 pi) / 2]``.

The reparameterisation trick draws ``z = mu + exp(logvar / 2) * eps, eps ~ N(0, I)``, so the
sample is differentiable in ``mu`` and ``logvar``. The prior is ``p(z) = N(0, I)``; ``sample(n)``
decodes draws from it.

``flow_steps > 0`` makes the posterior richer with inverse autoregressive flow (Kingma et al.,
"Improved Variational Inference with Inverse Autoregressive Flow", 2016): starting from
``z_0 = mu + sigma * eps``, each step ``t`` computes ``(m, s) = MADE_t(z_{t-1}, h)`` (output ``i`` sees
only inputs ``< i`` in the step's order, plus the encoder features ``h``) and
``z_t = sigmoid(s) * z_{t-1} + (1 - sigmoid(s)) * m``. The Jacobian is triangular, so
``log q(z_T|x) = log N(z_0; mu, sigma^2) - sum_t sum_i log sigmoid(s_t,i)``, exactly;
:meth:`VAE.posterior_sample` returns ``z_T`` with that log-density. Successive steps alternate the
variable order. Shapes: images ``(B, C, H, W)``, latents ``(B, latent_dim)``.

>>> vae = vae_conv(input_size=(28, 28))
>>> logits, mu, logvar = vae(torch.rand(2, 1, 28, 28))
>>> logits.shape, mu.shape
(torch.Size([2, 1, 28, 28]), torch.Size([2, 20]))
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DeepfoundryError
from ..nn.activations import image_size, make_activation, positive_int
from ..registry import MODELS

LIKELIHOODS = ("bernoulli", "gaussian")
LOG_2PI = math.log(2 * math.pi)


class MaskedLinear(nn.Linear):
    """``y = (W * M) x + b`` with a fixed 0/1 mask ``M`` (MADE, Germain et al. 2015)."""

    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor) -> None:
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask.to(self.weight.dtype), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class IAFStep(nn.Module):
    """One inverse autoregressive flow step on ``z`` ``(N, D)`` with context ``h`` ``(N, C)``.

    ``(m, s) = MADE(z, h)`` with ``m_i, s_i`` depending on ``z_{order < order(i)}`` only;
    ``z' = sigmoid(s) * z + (1 - sigmoid(s)) * m``; ``log |det dz'/dz| = sum_i log sigmoid(s_i)``.
    ``s`` starts near +2 (``sigmoid ~ 0.88``), so a fresh step is close to the identity.
    """

    def __init__(self, dim: int, context: int, hidden: int, reverse: bool, activation: str) -> None:
        super().__init__()
        order = torch.arange(dim - 1, -1, -1) if reverse else torch.arange(dim)  # order(i) in 0..D-1
        hid = torch.arange(hidden) % max(1, dim - 1)  # hidden degrees in 0..D-2
        self.inp = MaskedLinear(dim, hidden, (hid[:, None] >= order[None, :]))
        self.ctx = nn.Linear(context, hidden)
        self.hid = MaskedLinear(hidden, hidden, (hid[:, None] >= hid[None, :]))
        out_mask = (order[:, None] > hid[None, :])
        self.out = MaskedLinear(hidden, 2 * dim, torch.cat([out_mask, out_mask]))
        self.act1, self.act2 = make_activation(activation), make_activation(activation)
        nn.init.zeros_(self.out.weight)  # start as z' = sigmoid(2) z + (1 - sigmoid(2)) * 0
        with torch.no_grad():
            self.out.bias.zero_()
            self.out.bias[dim:] = 2.0
        self.dim = dim

    def forward(self, z: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z', log |det dz'/dz|)``, shapes ``(N, D)`` and ``(N,)``."""
        a = self.act2(self.hid(self.act1(self.inp(z) + self.ctx(h))))
        m, s = self.out(a).split(self.dim, dim=1)
        gate = torch.sigmoid(s)
        return gate * z + (1 - gate) * m, F.logsigmoid(s).sum(1)


class VAE(nn.Module):
    """Encoder ``x -> (mu, logvar)``, decoder ``z -> p(x|z)`` parameters, optional class conditioning.

    Subclasses build ``encoder_body`` (image -> flat features ``(B, F)``) and ``decoder_body``
    (``(B, latent_dim [+ num_classes])`` -> ``(B, C, H, W)``); this class adds the Gaussian heads,
    the one-hot conditioning and the likelihood.
    """

    def __init__(self, encoder_body: nn.Module, feature_size: int, decoder_body: nn.Module, latent_dim: int,
                 image_shape: tuple[int, int, int], likelihood: str, conditional: bool, num_classes: int,
                 flow_steps: int = 0, flow_hidden: int = 256, flow_activation: str = "elu") -> None:
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise DeepfoundryError(f"likelihood must be one of {', '.join(LIKELIHOODS)}; received {likelihood!r}")
        self.latent_dim, self.image_shape, self.likelihood = latent_dim, tuple(image_shape), likelihood
        self.conditional, self.num_classes = bool(conditional), int(num_classes)
        extra = self.num_classes if self.conditional else 0
        self.encoder_body = encoder_body
        self.mu = nn.Linear(feature_size + extra, latent_dim)
        self.logvar = nn.Linear(feature_size + extra, latent_dim)
        self.decoder_body = decoder_body
        if likelihood == "gaussian":
            self.log_sigma = nn.Parameter(torch.zeros(()))  # one learned noise scale for all pixels
        if isinstance(flow_steps, bool) or not isinstance(flow_steps, int) or flow_steps < 0:
            raise DeepfoundryError(f"flow_steps must be an integer >= 0 (0: Gaussian posterior); received {flow_steps!r}")
        hidden = positive_int("flow_hidden", flow_hidden)
        self.flows = nn.ModuleList(IAFStep(latent_dim, feature_size + extra, hidden, t % 2 == 1, flow_activation)
                                   for t in range(flow_steps))

    def _one_hot(self, y: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
        if not self.conditional:
            return None
        if y is None:
            raise DeepfoundryError("this VAE is conditional: it needs class labels y")
        return F.one_hot(y.long(), self.num_classes).to(like.dtype)

    def features(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder features ``h`` ``(B, F [+ num_classes])`` that the Gaussian heads and the flow read."""
        h = self.encoder_body(x)  # (B, F)
        onehot = self._one_hot(y, h)
        return h if onehot is None else torch.cat([h, onehot], dim=1)

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)`` of the Gaussian ``q(z_0|x[, y])``, each ``(B, latent_dim)``."""
        h = self.features(x, y)
        return self.mu(h), self.logvar(h)

    @property
    def has_flow(self) -> bool:
        return len(self.flows) > 0

    def posterior_sample(self, x: torch.Tensor, y: torch.Tensor | None = None, k: int = 1,
                         generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``k`` draws ``z ~ q(z|x[, y])`` per image and their exact ``log q(z|x)``: ``(B, k, D)``, ``(B, k)``.

        ``z_0 = mu + sigma * eps``, ``log N(z_0; mu, sigma^2) = -1/2 sum_j (eps_j^2 + log 2 pi + logvar_j)``,
        then the IAF steps (if any) each subtract their ``log |det|``.
        """
        h = self.features(x, y)
        return self._posterior(h, self.mu(h), self.logvar(h), k, generator)

    def _posterior(self, h: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, k: int,
                   generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        eps = torch.randn((len(h), k, self.latent_dim), device=mu.device, dtype=mu.dtype, generator=generator)
        z = mu[:, None] + torch.exp(0.5 * logvar)[:, None] * eps
        log_q = -0.5 * (eps.pow(2) + LOG_2PI + logvar[:, None]).sum(2)
        if self.flows:
            z, hk = z.reshape(-1, self.latent_dim), h.repeat_interleave(k, dim=0)
            log_q = log_q.reshape(-1)
            for step in self.flows:
                z, logdet = step(z, hk)
                log_q = log_q - logdet
            z, log_q = z.reshape(len(h), k, self.latent_dim), log_q.reshape(len(h), k)
        return z, log_q

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Parameters of ``p(x|z[, y])``: logits (bernoulli) or means (gaussian), ``(B, C, H, W)``."""
        onehot = self._one_hot(y, z)
        if onehot is not None:
            z = torch.cat([z, onehot], dim=1)
        return self.decoder_body(z)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``z = mu + exp(logvar / 2) * eps``, ``eps ~ N(0, I)``."""
        eps = torch.randn(mu.shape, device=mu.device, dtype=mu.dtype, generator=generator)
        return mu + torch.exp(0.5 * logvar) * eps

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(decoded, mu, logvar)`` for one reparameterised draw of ``z`` (through the flow, if any)."""
        if self.flows:
            h = self.features(x, y)
            mu, logvar = self.mu(h), self.logvar(h)
            return self.decode(self._posterior(h, mu, logvar, 1, None)[0][:, 0], y), mu, logvar
        mu, logvar = self.encode(x, y)
        return self.decode(self.reparameterize(mu, logvar), y), mu, logvar

    def log_likelihood(self, x: torch.Tensor, decoded: torch.Tensor) -> torch.Tensor:
        """``log p(x|z)`` summed over pixels, shape ``(B,)`` (see the module docstring)."""
        if self.likelihood == "bernoulli":
            return -F.binary_cross_entropy_with_logits(decoded, x, reduction="none").flatten(1).sum(1)
        sigma2 = torch.exp(2 * self.log_sigma)
        per_pixel = (x - decoded).pow(2) / (2 * sigma2) + self.log_sigma + 0.5 * math.log(2 * math.pi)
        return -per_pixel.flatten(1).sum(1)

    def mean_image(self, decoded: torch.Tensor) -> torch.Tensor:
        """The mean of ``p(x|z)`` in pixel space [0, 1]."""
        return torch.sigmoid(decoded) if self.likelihood == "bernoulli" else decoded.clamp(0, 1)

    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images in [0, 1] decoded from ``z ~ N(0, I)`` (the mean of ``p(x|z)``), ``(n, C, H, W)``."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.latent_dim, device=device, generator=generator)
        return self.mean_image(self.decode(z, labels.to(device) if labels is not None else None))


def _check_divisible(name: str, size: tuple[int, int], factor: int) -> None:
    if size[0] % factor or size[1] % factor or min(size) < factor:
        raise DeepfoundryError(
            f"{name} halves the image size {int(math.log2(factor))} times, so height and width must be multiples "
            f"of {factor}; received {size[0]}x{size[1]} images (use images of e.g. {4 * factor}x{4 * factor}, or "
            f"fewer channels entries, or an MLP model)")


def _mlp(sizes: Sequence[int], activation: str, last_activation: bool) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if last_activation or i < len(sizes) - 2:
            layers.append(make_activation(activation))
    return layers


@MODELS.register("vae_mlp")
def vae_mlp(*, in_channels: int = 1, input_size: Sequence[int] = (28, 28), num_classes: int = 10,
            hidden_sizes: Sequence[int] = (400,), latent_dim: int = 20, activation: str = "relu",
            likelihood: str = "bernoulli", conditional: bool = False, flow_steps: int = 0,
            flow_hidden: int = 256) -> VAE:
    """MLP VAE (Kingma & Welling 2014): x -> hidden -> (mu, logvar) -> z -> hidden -> p(x|z); conditional option.

    The defaults are pytorch/examples' 784-400-20. ``flow_steps`` IAF steps (MADE hidden width
    ``flow_hidden``) refine the posterior (see the module docstring).

    >>> vae_mlp()(torch.rand(2, 1, 28, 28))[0].shape
    torch.Size([2, 1, 28, 28])
    """
    h, w = image_size(input_size)
    c = positive_int("in_channels", in_channels)
    hidden = [positive_int("hidden_sizes", s) for s in hidden_sizes]
    if not hidden:
        raise DeepfoundryError("vae_mlp needs at least one hidden layer; received hidden_sizes=[]")
    z = positive_int("latent_dim", latent_dim)
    extra = num_classes if conditional else 0
    encoder = nn.Sequential(nn.Flatten(), *_mlp([c * h * w, *hidden], activation, last_activation=True))
    decoder = nn.Sequential(*_mlp([z + extra, *hidden[::-1], c * h * w], activation, last_activation=False),
                            nn.Unflatten(1, (c, h, w)))
    return VAE(encoder, hidden[-1], decoder, z, (c, h, w), likelihood, conditional, num_classes,
               flow_steps=flow_steps, flow_hidden=flow_hidden, flow_activation=activation)


@MODELS.register("vae_conv")
def vae_conv(*, in_channels: int = 1, input_size: Sequence[int] = (28, 28), num_classes: int = 10,
             channels: Sequence[int] = (32, 64), hidden: int = 256, latent_dim: int = 20, activation: str = "relu",
             likelihood: str = "bernoulli", conditional: bool = False, flow_steps: int = 0,
             flow_hidden: int = 256) -> VAE:
    """Convolutional VAE: strided 4x4 convs -> FC -> (mu, logvar); FC -> transposed convs; conditional option.

    Each entry of ``channels`` is one stride-2 convolution (28 -> 14 -> 7 for the default two); the
    decoder mirrors it with stride-2 transposed convolutions. Height and width must be multiples
    of ``2 ** len(channels)``. ``flow_steps`` IAF steps (MADE hidden width ``flow_hidden``, context:
    the ``hidden`` encoder features) refine the Gaussian posterior (see the module docstring).

    >>> vae_conv(input_size=(8, 8))(torch.rand(2, 1, 8, 8))[0].shape
    torch.Size([2, 1, 8, 8])
    """
    h, w = image_size(input_size)
    c = positive_int("in_channels", in_channels)
    chans = [positive_int("channels", s) for s in channels]
    if not chans:
        raise DeepfoundryError("vae_conv needs at least one conv layer; received channels=[]")
    factor = 2 ** len(chans)
    _check_divisible("vae_conv", (h, w), factor)
    hh, ww = h // factor, w // factor
    hidden = positive_int("hidden", hidden)
    z = positive_int("latent_dim", latent_dim)
    enc: list[nn.Module] = []
    for cin, cout in zip([c, *chans[:-1]], chans):
        enc += [nn.Conv2d(cin, cout, 4, 2, 1), make_activation(activation)]  # (B, cout, H/2, W/2)
    flat = chans[-1] * hh * ww
    encoder = nn.Sequential(*enc, nn.Flatten(), nn.Linear(flat, hidden), make_activation(activation))
    dec: list[nn.Module] = [nn.Linear(z + (num_classes if conditional else 0), hidden), make_activation(activation),
                            nn.Linear(hidden, flat), make_activation(activation), nn.Unflatten(1, (chans[-1], hh, ww))]
    rev = chans[::-1]
    for i, (cin, cout) in enumerate(zip(rev, [*rev[1:], c])):
        dec.append(nn.ConvTranspose2d(cin, cout, 4, 2, 1))  # (B, cout, 2H, 2W)
        if i < len(rev) - 1:  # no activation on the output: logits or means
            dec.append(make_activation(activation))
    return VAE(encoder, hidden, nn.Sequential(*dec), z, (c, h, w), likelihood, conditional, num_classes,
               flow_steps=flow_steps, flow_hidden=flow_hidden, flow_activation=activation)
