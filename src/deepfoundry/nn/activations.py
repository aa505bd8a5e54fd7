"""Activations and pooling layers by name, so configs can say ``activation: tanh`` or ``pool: avg``.

Activations (elementwise, any shape ``(*)`` -> ``(*)``):

============  =====================================================================
name          formula
============  =====================================================================
relu          ``max(0, x)``
leaky_relu    ``x if x > 0 else 0.01 * x``
elu           ``x if x > 0 else exp(x) - 1``  (alpha = 1)
gelu          ``x * Phi(x)``, Phi the standard normal CDF (exact, erf form)
silu          ``x * sigmoid(x)``  (also called swish)
tanh          ``(exp(x) - exp(-x)) / (exp(x) + exp(-x))``  (LeNet-5, 1998)
sigmoid       ``1 / (1 + exp(-x))``
identity      ``x``
============  =====================================================================

Pooling (``(B, C, H, W)`` -> ``(B, C, floor((H - k) / s) + 1, floor((W - k) / s) + 1)``):
``max`` takes the window maximum, ``avg`` its mean (LeNet's "subsampling"). The classifiers put an
:class:`torch.nn.AdaptiveAvgPool2d` before their heads so the head's size does not depend on the
input size; that one is built directly, not by name.

>>> make_activation("tanh")(torch.zeros(3))
tensor([0., 0., 0.])
>>> make_pool("avg")(torch.ones(1, 1, 4, 4)).shape
torch.Size([1, 1, 2, 2])
"""
from __future__ import annotations

import difflib
from typing import Callable, Sequence

import torch  # noqa: F401  (used by the doctest examples)
from torch import nn

from ..errors import DeepfoundryError

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.01),
    "elu": lambda: nn.ELU(1.0),
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}
"""Activation name -> factory returning a fresh module (formulas in the module docstring)."""

POOLS: dict[str, Callable[..., nn.Module]] = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}
"""Pooling name -> 2-D pooling class taking ``(kernel_size, stride)``."""


def _unknown(what: str, received: object, choices: Sequence[str]) -> DeepfoundryError:
    close = difflib.get_close_matches(str(received).lower(), choices, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return DeepfoundryError(f"unknown {what} {received!r}; expected one of: {', '.join(choices)}{hint}")


def make_activation(name: str) -> nn.Module:
    """A fresh activation module for ``name`` (one of :data:`ACTIVATIONS`, case-insensitive).

    >>> make_activation("relu")
    ReLU()
    >>> make_activation("rleu")
    Traceback (most recent call last):
    ...
    deepfoundry.errors.DeepfoundryError: unknown activation 'rleu'; expected one of: relu, leaky_relu, elu, gelu, silu, tanh, sigmoid, identity; did you mean 'relu'?
    """
    factory = ACTIVATIONS.get(name.lower()) if isinstance(name, str) else None
    if factory is None:
        raise _unknown("activation", name, list(ACTIVATIONS))
    return factory()


def make_pool(kind: str, kernel_size: int = 2, stride: int | None = None) -> nn.Module:
    """A 2-D pooling layer: ``kind`` is ``"max"`` or ``"avg"``; ``stride`` defaults to ``kernel_size``.

    ``make_pool("max", 3, 2)`` is AlexNet's overlapping pool; ``make_pool("avg")`` LeNet's subsampling.
    """
    cls = POOLS.get(kind.lower()) if isinstance(kind, str) else None
    if cls is None:
        raise _unknown("pool", kind, list(POOLS))
    return cls(kernel_size, stride if stride is not None else kernel_size)


# ---- argument checks shared by the model builders -------------------------------------------

def positive_int(name: str, value: object) -> int:
    """``value`` as an int >= 1, or a DeepfoundryError naming ``name`` and what was received."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DeepfoundryError(f"{name} must be a positive integer; received {name}={value!r}")
    return value


def probability(name: str, value: object) -> float:
    """``value`` as a float in [0, 1) (a dropout rate), or a DeepfoundryError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise DeepfoundryError(f"{name} must be a number in [0, 1); received {name}={value!r}")
    return float(value)


def image_size(value: object, name: str = "input_size") -> tuple[int, int]:
    """``(H, W)`` from an int, a tuple or a list (configs deliver lists), checked positive."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise DeepfoundryError(f"{name} must be (height, width) or one int; received {name}={value!r}")
    return positive_int(f"{name}[0]", value[0]), positive_int(f"{name}[1]", value[1])


def scaled(channels: int, width: float) -> int:
    """``channels * width`` rounded, at least 1: how ``width`` multipliers shrink or grow a net."""
    return max(1, int(round(channels * width)))


def positive_float(name: str, value: object) -> float:
    """``value`` as a float > 0 (a width multiplier), or a DeepfoundryError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise DeepfoundryError(f"{name} must be a number > 0; received {name}={value!r}")
    return float(value)
