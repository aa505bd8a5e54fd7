"""Image augmentation per batch, on the training device, with per-sample randomness.

``data.augment`` names a preset (``light``, ``standard``, ``strong``, ``cifar``, ``mnist``) or lists
transforms by their ``torchvision.transforms.v2`` names and parameters::

    data:
      augment:
        - {name: RandomRotation, degrees: 10}
        - {name: RandomHorizontalFlip, p: 0.5}
        - {name: RandomAffine, degrees: 0, translate: [0.1, 0.1], scale: [0.9, 1.1]}
        - {name: ColorJitter, brightness: 0.2, contrast: 0.2}
        - {name: RandomErasing, p: 0.25}
        - {name: MixUp, alpha: 0.2}

The Trainer calls :class:`BatchAugment` on every *training* batch after moving it to the device
(validation, test and predict never see it). torchvision v2 draws one set of random parameters
per call, so a batch tensor would get the same rotation for every image; here every image of the
batch gets its own parameters, drawn from a generator seeded with ``(seed, epoch, batch index)``
(reproducible, and a resumed run replays the same augmentations):

- geometric transforms (flips, RandomRotation, RandomAffine, RandomCrop, RandomResizedCrop) build
  one 3x3 matrix per image; consecutive ones are multiplied into a single matrix and applied with
  one ``grid_sample`` (one resampling, bilinear by default). With output pixel ``p`` and the
  forward map ``A = T(t) R(theta) Sh(s) S(z)`` (about the image centre), the image is sampled at
  ``A^{-1} p``; pixels from outside the image get ``fill``.
- ColorJitter: per-image factors ``b, c, s`` and hue shift ``h``, applied in the order brightness,
  contrast, saturation, hue: ``x <- clamp(b x)``, ``x <- clamp(c x + (1 - c) mean(gray(x)))``,
  ``x <- clamp(s x + (1 - s) gray(x))``, hue rotated by ``h`` in HSV.
- RandomErasing: per image with probability ``p`` a rectangle of area ``a ~ U(scale) H W`` and
  aspect ``r ~ logU(ratio)`` is set to ``value``.
- MixUp / CutMix (Zhang et al. 2018 / Yun et al. 2019): one ``lam ~ Beta(alpha, alpha)`` per batch,
  each image mixed with its neighbour in the batch (``roll(1)``, as torchvision does); the targets
  become soft: ``y = lam onehot(y_i) + (1 - lam) onehot(y_j)``. They always run last; with both
  listed, each batch uses one of them, chosen at random.
- any other ``torchvision.transforms.v2`` class by name (``GaussianBlur``, ``RandomGrayscale``,
  ...) runs once per image (a Python loop: correct per-sample randomness, slower).

All transforms act on pixels in [0, 1]: the batch is un-standardised with the training split's
mean/std first and standardised again afterwards.

>>> aug = build_batch_augment("standard", {"input_kind": "image", "num_classes": 10}, seed=0)
>>> x, y = aug((torch.rand(8, 3, 32, 32), torch.arange(8)), epoch=0, index=0)
>>> x.shape, y.shape
(torch.Size([8, 3, 32, 32]), torch.Size([8]))
"""
from __future__ import annotations

import difflib
import inspect
import math
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DeepfoundryError

PRESETS: dict[str, list[dict[str, Any]]] = {
    "light": [{"name": "RandomHorizontalFlip"},
              {"name": "RandomAffine", "degrees": 0, "translate": [0.05, 0.05]}],
    "standard": [{"name": "RandomHorizontalFlip"},
                 {"name": "RandomAffine", "degrees": 10, "translate": [0.1, 0.1], "scale": [0.9, 1.1]},
                 {"name": "ColorJitter", "brightness": 0.2, "contrast": 0.2, "saturation": 0.2}],
    "strong": [{"name": "RandomResizedCrop", "scale": [0.35, 1.0]},
               {"name": "RandomHorizontalFlip"},
               {"name": "RandomRotation", "degrees": 15},
               {"name": "ColorJitter", "brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1},
               {"name": "RandomErasing", "p": 0.25}],
    "cifar": [{"name": "RandomCrop", "padding": 4}, {"name": "RandomHorizontalFlip"}],
    "mnist": [{"name": "RandomAffine", "degrees": 10, "translate": [0.1, 0.1], "scale": [0.9, 1.1]}],
}


def _pair(name: str, key: str, value: Any, centred: bool = False) -> tuple[float, float]:
    """A number ``v`` -> ``(-v, v)`` (``centred``) or ``(v, v)``; a pair stays a pair."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if centred and value < 0:
            raise DeepfoundryError(f"augment {name}: {key} must be >= 0 when it is a single number, received {value}")
        return (-float(value), float(value)) if centred else (float(value), float(value))
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        lo, hi = float(value[0]), float(value[1])
        if lo > hi:
            raise DeepfoundryError(f"augment {name}: {key} must be [low, high] with low <= high, received {list(value)}")
        return lo, hi
    raise DeepfoundryError(f"augment {name}: {key} must be a number or a [low, high] pair, received {value!r}")


def _probability(name: str, p: Any) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise DeepfoundryError(f"augment {name}: p must be a probability in [0, 1], received {p!r}")
    return float(p)


# ----------------------------------------------------------------------------------------------- geometric
class Geometric:
    """A transform given by one forward 3x3 matrix per image, in pixel units about the image centre."""

    fill: float = 0.0
    interpolation: str = "bilinear"

    def _common(self, fill: float, interpolation: str) -> None:
        if interpolation not in ("bilinear", "nearest"):
            raise DeepfoundryError(f"augment {type(self).__name__}: interpolation must be bilinear or nearest, "
                                   f"received {interpolation!r}")
        self.fill, self.interpolation = float(fill), interpolation

    def matrices(self, n: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
        """Forward maps ``(n, 3, 3)``: input pixel (centred) -> output pixel (centred)."""
        raise NotImplementedError


def _identity(n: int) -> np.ndarray:
    return np.repeat(np.eye(3)[None], n, axis=0)


class RandomHorizontalFlip(Geometric):
    """Mirror left-right with probability ``p``: ``x' = -x``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = _probability("RandomHorizontalFlip", p)

    def matrices(self, n: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
        m = _identity(n)
        m[:, 0, 0] = np.where(rng.random(n) < self.p, -1.0, 1.0)
        return m


class RandomVerticalFlip(Geometric):
    """Mirror top-bottom with probability ``p``: ``y' = -y``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = _probability("RandomVerticalFlip", p)

    def matrices(self, n: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
        m = _identity(n)
        m[:, 1, 1] = np.where(rng.random(n) < self.p, -1.0, 1.0)
        return m


class RandomAffine(Geometric):
    """Rotation ``theta ~ U(degrees)``, translation ``t ~ U(+-translate * size)``, zoom ``z ~ U(scale)``,
    shear ``s ~ U(shear)`` (degrees, along x): ``A = T(t) R(theta) Sh(s) S(z)``."""

    def __init__(self, degrees: float | Sequence[float] = 0, translate: Sequence[float] | None = None,
                 scale: Sequence[float] | None = None, shear: float | Sequence[float] | None = None,
                 fill: float = 0.0, interpolation: str = "bilinear") -> None:
        name = type(self).__name__
        self.degrees = _pair(name, "degrees", degrees, centred=True)
        if translate is not None:
            tx, ty = _pair(name, "translate", translate)
            if not (0 <= tx <= 1 and 0 <= ty <= 1):
                raise DeepfoundryError(f"augment {name}: translate fractions must be in [0, 1], received {translate}")
        self.translate = None if translate is None else (tx, ty)
        self.scale = None if scale is None else _pair(name, "scale", scale)
        if self.scale is not None and self.scale[0] <= 0:
            raise DeepfoundryError(f"augment {name}: scale must be positive, received {scale}")
        self.shear = None if shear is None else _pair(name, "shear", shear, centred=True)
        self._common(fill, interpolation)

    def matrices(self, n: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
        theta = -np.deg2rad(rng.uniform(*self.degrees, n))  # positive degrees turn counter-clockwise, as torchvision
        zoom = rng.uniform(*self.scale, n) if self.scale else np.ones(n)
        shear = np.deg2rad(rng.uniform(*self.shear, n)) if self.shear else np.zeros(n)
        tx = rng.uniform(-1, 1, n) * self.translate[0] * w if self.translate else np.zeros(n)
        ty = rng.uniform(-1, 1, n) * self.translate[1] * h if self.translate else np.zeros(n)
        cos, sin, k = np.cos(theta), np.sin(theta), np.tan(shear)
        m = _identity(n)
        # R(theta) @ Sh(k) @ S(z) = [[cos, cos k - sin], [sin, sin k + cos]] * z   (y axis points down)
        m[:, 0, 0], m[:, 0, 1] = cos * zoom, (cos * k - sin) * zoom
        m[:, 1, 0], m[:, 1, 1] = sin * zoom, (sin * k + cos) * zoom
        m[:, 0, 2], m[:, 1, 2] = tx, ty
        return m


class RandomRotation(RandomAffine):
    """Rotation by ``theta ~ U(-degrees, degrees)`` (or ``U(low, high)``) about the centre."""

    def __init__(self, degrees: float | Sequence[float], fill: float = 0.0, interpolation: str = "bilinear") -> None:
        super().__init__(degrees=degrees, fill=fill, interpolation=interpolation)


class RandomCrop(Geometric):
    """Pad by ``padding`` then crop back to the input size at a random place: an integer shift
    ``(dx, dy) ~ U{-padding..padding}^2`` (exact pixels), ``fill`` where the padding shows."""

    def __init__(self, size: int | Sequence[int] | None = None, padding: int = 4, fill: float = 0.0) -> None:
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise DeepfoundryError(f"augment RandomCrop: padding must be a non-negative integer, received {padding!r}")
        self.size, self.padding = size, padding
        self._common(fill, "bilinear")

    def matrices(self, n: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
        if self.size is not None and tuple(np.broadcast_to(self.size, 2)) != (h, w):
            raise DeepfoundryError(f"augment RandomCrop: size {self.size} differs from the images' {h}x{w}; "
                                   f"use RandomResizedCrop to change the size")
        m = _identity(n)
        m[:, 0, 2] = rng.integers(-self.padding, self.padding + 1, n)
        m[:, 1, 2] = rng.integers(-self.padding, self.padding + 1, n)
        return m


class RandomResizedCrop(Geometric):
    """Crop a random area ``a ~ U(scale)`` of the image with aspect ``r ~ logU(ratio)`` and resize it
    to the full image (the zoom of Inception-style training); the output keeps the input size."""

    def __init__(self, size: int | Sequence[int] | None = None, scale: Sequence[float] = (0.08, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3), interpolation: str = "bilinear") -> None:
        self.size = size
        self.scale = _pair("RandomResizedCrop", "scale", scale)
        self.ratio = _pair("RandomResizedCrop", "ratio", ratio)
        if not (0 < self.scale[0] and self.scale[1] <= 1 and self.ratio[0] > 0):
            raise DeepfoundryError(f"augment RandomResizedCrop: scale must be within (0, 1] and ratio positive, "
                                   f"received scale={list(scale)}, ratio={list(ratio)}")
        self._common(0.0, interpolation)

    def matrices(self, n: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
        if self.size is not None and tuple(np.broadcast_to(self.size, 2)) != (h, w):
            raise DeepfoundryError(f"augment RandomResizedCrop: size {self.size} differs from the images' {h}x{w}; "
                                   f"the model's input size is fixed, leave size out")
        area = rng.uniform(*self.scale, n)
        r = np.exp(rng.uniform(math.log(self.ratio[0]), math.log(self.ratio[1]), n))
        cw = np.minimum(np.sqrt(area * r), 1.0)  # crop width / image width
        ch = np.minimum(np.sqrt(area / r), 1.0)
        cx = rng.uniform(-1, 1, n) * (1 - cw) * w / 2  # crop centre, pixels from the image centre
        cy = rng.uniform(-1, 1, n) * (1 - ch) * h / 2
        m = _identity(n)  # forward: input -> output magnifies the crop by 1/cw, 1/ch
        m[:, 0, 0], m[:, 1, 1] = 1 / cw, 1 / ch
        m[:, 0, 2], m[:, 1, 2] = -cx / cw, -cy / ch
        return m


def _shift_and_flip(x: torch.Tensor, forward: np.ndarray, fill: float) -> torch.Tensor:
    """Exact fast path of :func:`_warp` when every map is a flip and/or an integer shift: one gather.

    Along x, output column ``j`` reads input column ``j - t`` (no flip) or ``W - 1 - j + t`` (flip)."""
    b, c, h, w = x.shape
    dev = x.device
    flip_x, flip_y = forward[:, 0, 0] < 0, forward[:, 1, 1] < 0
    tx, ty = np.round(forward[:, 0, 2]).astype(np.int64), np.round(forward[:, 1, 2]).astype(np.int64)
    j, i = np.arange(w)[None], np.arange(h)[None]
    cols = np.where(flip_x[:, None], w - 1 - j + tx[:, None], j - tx[:, None])  # (B, W)
    rows = np.where(flip_y[:, None], h - 1 - i + ty[:, None], i - ty[:, None])  # (B, H)
    valid = ((cols >= 0) & (cols < w))[:, None, :] & ((rows >= 0) & (rows < h))[:, :, None]  # (B, H, W)
    flat = np.clip(rows, 0, h - 1)[:, :, None] * w + np.clip(cols, 0, w - 1)[:, None, :]
    index = torch.as_tensor(flat.reshape(b, 1, h * w), device=dev).expand(b, c, h * w)
    out = x.reshape(b, c, h * w).gather(2, index).view(b, c, h, w)
    if valid.all():
        return out
    return torch.where(torch.as_tensor(valid[:, None], device=dev), out, torch.full((), fill, dtype=x.dtype, device=dev))


def _warp(x: torch.Tensor, forward: np.ndarray, fill: float, mode: str) -> torch.Tensor:
    """Resample ``x`` (B, C, H, W) at ``forward^{-1} p`` for every output pixel ``p``."""
    b, _, h, w = x.shape
    linear, shift = forward[:, :2, :2], forward[:, :2, 2]
    if (np.all(np.abs(linear) == np.eye(2)) and np.all(shift == np.round(shift))):
        return _shift_and_flip(x, forward, fill)  # flips and pixel shifts (RandomCrop) need no interpolation
    to_pix = np.diag([w / 2, h / 2, 1.0])  # normalised [-1, 1] (align_corners=False) -> centred pixels
    inverse = np.linalg.inv(to_pix) @ np.linalg.inv(forward) @ to_pix  # (B, 3, 3), output -> input
    theta = torch.as_tensor(inverse[:, :2], dtype=x.dtype, device=x.device)  # (B, 2, 3)
    grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)  # (B, H, W, 2)
    if fill:
        return F.grid_sample(x - fill, grid, mode=mode, padding_mode="zeros", align_corners=False) + fill
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)


# ----------------------------------------------------------------------------------------------- photometric
def _gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma ``0.299 R + 0.587 G + 0.114 B`` (B, 1, H, W); grayscale images pass through."""
    if x.shape[1] == 1:
        return x
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device)
    return torch.einsum("bchw,c->bhw", x, weights).unsqueeze(1)


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    maxc, minc = x.max(dim=1).values, x.min(dim=1).values
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    hr = ((g - b) / safe) % 6
    hg = (b - r) / safe + 2
    hb = (r - g) / safe + 4
    hue = torch.where(maxc == r, hr, torch.where(maxc == g, hg, hb)) / 6
    hue = torch.where(delta > 0, hue, torch.zeros_like(hue))
    sat = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    return torch.stack([hue % 1.0, sat, maxc], dim=1)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(1)
    k = torch.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6], dim=1)  # (B, 3, H, W)
    return v[:, None] - v[:, None] * s[:, None] * (torch.minimum(k, 4 - k).clamp(0, 1))


class ColorJitter:
    """Per image: brightness ``b ~ U(1-B, 1+B)``, contrast ``c``, saturation ``s``, hue shift ``h ~ U(-H, H)``."""

    def __init__(self, brightness: float | Sequence[float] = 0, contrast: float | Sequence[float] = 0,
                 saturation: float | Sequence[float] = 0, hue: float | Sequence[float] = 0) -> None:
        def factor(key: str, v: Any) -> tuple[float, float] | None:
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                if v < 0:
                    raise DeepfoundryError(f"augment ColorJitter: {key} must be >= 0, received {v}")
                lo, hi = max(0.0, 1 - float(v)), 1 + float(v)
            else:
                lo, hi = _pair("ColorJitter", key, v)
            return None if (lo, hi) == (1.0, 1.0) else (lo, hi)

        self.brightness, self.contrast = factor("brightness", brightness), factor("contrast", contrast)
        self.saturation = factor("saturation", saturation)
        lo, hi = _pair("ColorJitter", "hue", hue, centred=True)
        if not -0.5 <= lo <= hi <= 0.5:
            raise DeepfoundryError(f"augment ColorJitter: hue must be within [-0.5, 0.5], received {hue!r}")
        self.hue = None if (lo, hi) == (0.0, 0.0) else (lo, hi)

    def __call__(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        n = len(x)

        def per_image(bounds: tuple[float, float]) -> torch.Tensor:
            return torch.as_tensor(rng.uniform(*bounds, n), dtype=x.dtype, device=x.device).view(n, 1, 1, 1)

        if self.brightness:
            x = (x * per_image(self.brightness)).clamp_(0, 1)
        if self.contrast:
            c = per_image(self.contrast)
            channel_means = x.mean(dim=(2, 3))  # (B, C); the mean of gray(x) is gray of the channel means
            gray_mean = channel_means if x.shape[1] == 1 else channel_means @ x.new_tensor([0.299, 0.587, 0.114])[:, None]
            x = (x * c).add_((1 - c) * gray_mean.view(n, 1, 1, 1)).clamp_(0, 1)
        if self.saturation and x.shape[1] == 3:
            s = per_image(self.saturation)
            x = (x * s).add_(_gray(x) * (1 - s)).clamp_(0, 1)
        if self.hue and x.shape[1] == 3:
            hsv = _rgb_to_hsv(x)
            hue = (hsv[:, 0] + per_image(self.hue)[:, 0]) % 1.0
            x = _hsv_to_rgb(torch.stack([hue, hsv[:, 1], hsv[:, 2]], dim=1))
        return x


class RandomErasing:
    """Per image with probability ``p``: a rectangle of area ``a ~ U(scale) H W``, aspect
    ``r ~ logU(ratio)``, at a uniform place, set to ``value`` (a number, or ``random`` for N(0, 1) noise)."""

    def __init__(self, p: float = 0.5, scale: Sequence[float] = (0.02, 0.33), ratio: Sequence[float] = (0.3, 3.3),
                 value: float | str = 0.0) -> None:
        self.p = _probability("RandomErasing", p)
        self.scale, self.ratio = _pair("RandomErasing", "scale", scale), _pair("RandomErasing", "ratio", ratio)
        if not (0 <= self.scale[0] and self.scale[1] <= 1 and self.ratio[0] > 0):
            raise DeepfoundryError(f"augment RandomErasing: scale must be within [0, 1] and ratio positive, "
                                   f"received scale={list(scale)}, ratio={list(ratio)}")
        if not (value == "random" or (isinstance(value, (int, float)) and not isinstance(value, bool))):
            raise DeepfoundryError(f"augment RandomErasing: value must be a number or 'random', received {value!r}")
        self.value = value

    def __call__(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        area = rng.uniform(*self.scale, n) * h * w
        r = np.exp(rng.uniform(math.log(self.ratio[0]), math.log(self.ratio[1]), n))
        eh = np.clip(np.round(np.sqrt(area * r)), 1, h).astype(np.int64)
        ew = np.clip(np.round(np.sqrt(area / r)), 1, w).astype(np.int64)
        top = (rng.random(n) * (h - eh + 1)).astype(np.int64)
        left = (rng.random(n) * (w - ew + 1)).astype(np.int64)
        on = rng.random(n) < self.p
        dev = x.device
        as_t = lambda a: torch.as_tensor(a, device=dev).view(n, 1, 1)  # noqa: E731
        rows = torch.arange(h, device=dev).view(1, h, 1)
        cols = torch.arange(w, device=dev).view(1, 1, w)
        mask = (rows >= as_t(top)) & (rows < as_t(top + eh)) & (cols >= as_t(left)) & (cols < as_t(left + ew))
        mask = (mask & as_t(on)).unsqueeze(1)  # (B, 1, H, W)
        if self.value == "random":
            gen = torch.Generator(device="cpu").manual_seed(int(rng.integers(2**62)))
            fill = torch.randn(x.shape, generator=gen, dtype=x.dtype).to(dev)
        else:
            fill = torch.full_like(x, float(self.value))
        return torch.where(mask, fill, x)


# ----------------------------------------------------------------------------------------------- mixing
class MixUp:
    """``x = lam x_i + (1 - lam) x_j``, ``y = lam onehot(y_i) + (1 - lam) onehot(y_j)``, ``lam ~ Beta(alpha, alpha)``."""

    def __init__(self, alpha: float = 1.0) -> None:
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
            raise DeepfoundryError(f"augment {type(self).__name__}: alpha must be > 0, received {alpha!r}")
        self.alpha = float(alpha)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, num_classes: int,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        lam = float(rng.beta(self.alpha, self.alpha))
        return lam * x + (1 - lam) * x.roll(1, 0), _mix_targets(y, num_classes, lam)


class CutMix(MixUp):
    """Paste a box of area ``(1 - lam) H W`` from ``x_j`` into ``x_i``; ``lam`` becomes the kept share of pixels."""

    def __call__(self, x: torch.Tensor, y: torch.Tensor, num_classes: int,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        lam = float(rng.beta(self.alpha, self.alpha))
        _, _, h, w = x.shape
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        half_h, half_w = int(h * math.sqrt(1 - lam) / 2), int(w * math.sqrt(1 - lam) / 2)
        y0, y1, x0, x1 = max(cy - half_h, 0), min(cy + half_h, h), max(cx - half_w, 0), min(cx + half_w, w)
        out = x.clone()
        out[:, :, y0:y1, x0:x1] = x.roll(1, 0)[:, :, y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
        return out, _mix_targets(y, num_classes, lam)


def _mix_targets(y: torch.Tensor, num_classes: int, lam: float) -> torch.Tensor:
    soft = y.float() if y.dim() == 2 else F.one_hot(y.long(), num_classes).float()  # (B, C)
    return lam * soft + (1 - lam) * soft.roll(1, 0)


class TorchvisionPerSample:
    """Any other ``torchvision.transforms.v2`` transform, called once per image (own randomness each)."""

    def __init__(self, transform: Any) -> None:
        self.transform = transform

    def __call__(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        state = torch.get_rng_state()
        torch.manual_seed(int(rng.integers(2**62)))  # torchvision draws from the global generator
        try:
            return torch.stack([self.transform(img) for img in x])
        finally:
            torch.set_rng_state(state)


OWN = {cls.__name__: cls for cls in (RandomHorizontalFlip, RandomVerticalFlip, RandomAffine, RandomRotation,
                                     RandomCrop, RandomResizedCrop, ColorJitter, RandomErasing, MixUp, CutMix)}


# ----------------------------------------------------------------------------------------------- the pipeline
def parse_spec(spec: Any) -> list[dict[str, Any]]:
    """``data.augment`` -> a list of ``{name, **params}``: a preset name, a list of preset names,
    transform names or ``{name: ..., param: ...}`` mappings. ``None``, ``none`` or ``[]``: nothing."""
    if spec is None or spec == "none" or spec == [] or spec is False:
        return []
    items = spec if isinstance(spec, list) else [spec]
    out: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, str) and item in PRESETS:
            out.extend(dict(d) for d in PRESETS[item])
        elif isinstance(item, str):
            out.append({"name": item})
        elif isinstance(item, dict) and isinstance(item.get("name"), str):
            out.append(dict(item))
        else:
            raise DeepfoundryError(f"data.augment: each entry must be a preset ({', '.join(PRESETS)}), a transform "
                                   f"name or a mapping with 'name', received {item!r}")
    return out


def _build_one(entry: dict[str, Any]) -> Any:
    name, params = entry["name"], {k: v for k, v in entry.items() if k != "name"}
    cls = OWN.get(name)
    if cls is not None:
        accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        for key in params:
            if key not in accepted:
                close = difflib.get_close_matches(key, accepted, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise DeepfoundryError(f"augment {name}: unknown parameter {key!r}{hint}; accepted: {', '.join(accepted)}")
        try:
            return cls(**params)
        except TypeError as exc:  # a required parameter left out
            raise DeepfoundryError(f"augment {name}: {exc}") from None
    from torchvision.transforms import v2

    tv_cls = getattr(v2, name, None)
    if not (isinstance(tv_cls, type) and issubclass(tv_cls, v2.Transform)):
        names = sorted(set(OWN) | set(PRESETS))
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(names)} or any torchvision.transforms.v2 transform"
        raise DeepfoundryError(f"augment transform {name!r} is not known{hint}")
    try:
        return TorchvisionPerSample(tv_cls(**params))
    except (TypeError, ValueError) as exc:
        raise DeepfoundryError(f"augment {name}: {' '.join(str(exc).split())}") from None


class BatchAugment:
    """The training-batch transform: ``(x, y) -> (x', y')`` on whatever device the batch is on.

    ``mean``/``std`` (per channel) undo the data's standardisation so transforms see pixels in [0, 1].
    """

    def __init__(self, entries: list[dict[str, Any]], num_classes: int | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None, seed: int = 0) -> None:
        self.entries = entries
        self.ops = [_build_one(e) for e in entries]
        self.mixers = [op for op in self.ops if isinstance(op, MixUp)]
        self.ops = [op for op in self.ops if not isinstance(op, MixUp)]
        if self.mixers and not num_classes:
            raise DeepfoundryError("augment MixUp/CutMix need a classification data set (num_classes)")
        self.num_classes = num_classes
        self.mean, self.std, self.seed = mean, std, seed
        self._stats: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __repr__(self) -> str:
        return f"BatchAugment({[e['name'] for e in self.entries]})"

    def _norm_stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.mean is None:
            return None
        if x.device not in self._stats:
            shape = (1, -1, 1, 1)
            self._stats[x.device] = (torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape),
                                     torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape))
        return self._stats[x.device]

    def augment_images(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """The per-image transforms on pixels in [0, 1] (B, C, H, W); geometric runs share one resampling."""
        n, _, h, w = x.shape
        pending: np.ndarray | None = None
        fill, mode = 0.0, "bilinear"
        for op in self.ops:
            if isinstance(op, Geometric):
                if pending is not None and (op.fill, op.interpolation) != (fill, mode):
                    x, pending = _warp(x, pending, fill, mode), None
                m = op.matrices(n, h, w, rng)
                pending = m if pending is None else m @ pending  # later maps act on earlier outputs
                fill, mode = op.fill, op.interpolation
                continue
            if pending is not None:
                x, pending = _warp(x, pending, fill, mode), None
            x = op(x, rng)
        if pending is not None:
            x = _warp(x, pending, fill, mode)
        return x

    def __call__(self, batch: tuple[torch.Tensor, torch.Tensor], epoch: int = 0,
                 index: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        if x.dim() != 4:
            raise DeepfoundryError(f"image augmentation needs batches of images (B, C, H, W), received shape {tuple(x.shape)}")
        rng = np.random.default_rng([self.seed, epoch, index])
        stats = self._norm_stats(x)
        if stats is not None:
            x = x * stats[1] + stats[0]
        x = self.augment_images(x, rng)
        if self.mixers:
            mixer = self.mixers[int(rng.integers(len(self.mixers)))]
            x, y = mixer(x, y, self.num_classes, rng)
        if stats is not None:
            x = (x - stats[0]) / stats[1]
        return x, y


def build_batch_augment(spec: Any, info: dict[str, Any], seed: int = 0) -> BatchAugment | None:
    """The :class:`BatchAugment` for ``data.augment`` on an image data set described by ``info``."""
    entries = parse_spec(spec)
    if not entries:
        return None
    if info.get("input_kind") != "image":
        raise DeepfoundryError(f"data.augment with image transforms needs image data; this data set's inputs are "
                               f"{info.get('input_kind') or 'tables'}")
    pre = info.get("preprocess") or {}
    return BatchAugment(entries, info.get("num_classes") if info.get("task_type", "classification") == "classification"
                        else None, pre.get("mean"), pre.get("std"), seed)


def attach_augment(bundle: Any, spec: Any, seed: int = 0) -> None:
    """Give ``bundle.train`` its training-only augmentation (images: a batch transform the Trainer
    applies on the device; text: EDA applied to raw texts before tokenising)."""
    if not parse_spec(spec):
        return
    info = bundle.info
    if info.get("input_kind") == "text":
        from .text_augment import build_text_augment

        augment = build_text_augment(spec, seed)
        if augment is None:
            return
        set_text = getattr(bundle.train, "set_augment", None)
        if set_text is None:
            raise DeepfoundryError("text augmentation applies to text classification data sets (text-csv, "
                                   "sentiment-synthetic), not to language modelling")
        set_text(augment)
        info["augment"] = augment.entries
        return
    augment = build_batch_augment(spec, info, seed)
    if augment is not None:
        bundle.train.batch_transform = augment
        info["augment"] = augment.entries


# ----------------------------------------------------------------------------------------------- preview
def preview(cfg: Any, out: str | Any, n: int = 16, seed: int = 0, *,
            save_grid: Callable[..., Any]) -> dict[str, Any]:
    """Augment the first ``n`` training samples of a run config (``cfg``: a RunConfig) as training would.

    Images: writes ``out`` with ``save_grid(images (N, C, H, W) in [0, 1], path, nrow=...) -> path``
    (:func:`deepfoundry.report.save_grid`) as a PNG grid, the originals in the top rows and their
    augmented versions below. Text: returns ``(original, augmented)`` pairs and writes no image.
    """
    from pathlib import Path

    from .core import build_data

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DeepfoundryError(f"augment-preview: --n must be a positive integer, received {n!r}")
    if not parse_spec(cfg.data.augment):
        raise DeepfoundryError(f"recipe {cfg.name!r} has no data.augment; add one, e.g. --set data.augment=standard")
    data = build_data(cfg.data, seed=cfg.seed)
    train = data.train
    if data.info.get("input_kind") == "text":
        texts = train.texts[:n]
        pairs = [(t, train.augment.for_sample(t, seed, i)) for i, t in enumerate(texts)]
        return {"kind": "text", "examples": [{"original": a, "augmented": b} for a, b in pairs]}
    x, y = train.x[:n], train.y[:n]
    augment: BatchAugment = train.batch_transform
    xa, _ = augment((x, y), epoch=seed, index=0)
    mean, std = augment._norm_stats(x) or (torch.zeros(1), torch.ones(1))
    images = torch.cat([x * std + mean, xa * std + mean])  # back to pixels in [0, 1]
    ncol = min(len(x), 8)
    rows_per_half = -(-len(x) // ncol)
    if len(x) % ncol:  # pad each half to full rows so the augmented block starts on a new row
        pad = torch.full((rows_per_half * ncol - len(x), *x.shape[1:]), 0.5)
        images = torch.cat([x * std + mean, pad, xa * std + mean, pad])
    path = save_grid(images, Path(out), nrow=ncol)
    return {"kind": "image", "out": str(path), "n": len(x), "transforms": [e["name"] for e in augment.entries]}
