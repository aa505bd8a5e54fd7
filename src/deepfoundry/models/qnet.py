"""Q-networks for deep Q-learning: ``Q(s, .) -> (B, num_actions)``, one value per discrete action.

``qnet_mlp`` takes vector states ``(B, in_features)``; ``qnet_cnn`` is the Nature-DQN network
(Mnih et al. 2015) for stacked 84x84 frames ``(B, in_channels, 84, 84)`` with pixel values in
[0, 255] (scaled to [0, 1] inside). With ``dueling=True`` the head is split into a state value and
action advantages (Wang et al. 2016)::

    Q(s, a) = V(s) + A(s, a) - mean_a' A(s, a')

>>> MODELS.build("qnet_mlp", in_features=4, num_actions=2)(torch.randn(3, 4)).shape
torch.Size([3, 2])
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..nn.activations import make_activation
from ..registry import MODELS


class QHead(nn.Module):
    """Features ``(B, width)`` -> Q-values ``(B, num_actions)``; plain linear or dueling."""

    def __init__(self, width: int, num_actions: int, dueling: bool = False) -> None:
        super().__init__()
        self.dueling = dueling
        self.advantage = nn.Linear(width, num_actions)
        self.value = nn.Linear(width, 1) if dueling else None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        advantage = self.advantage(h)  # (B, A)
        if self.value is None:
            return advantage
        return self.value(h) + advantage - advantage.mean(dim=1, keepdim=True)  # (B, 1) + (B, A)


class QNetwork(nn.Module):
    """``forward(s) == head(features(s))``: the shared classifier interface, with Q-values as logits."""

    def __init__(self, features: nn.Module, width: int, num_actions: int, dueling: bool, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale
        self.features = features
        self.head = QHead(width, num_actions, dueling)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(obs.float() * self.scale))


@MODELS.register("qnet_mlp")
def qnet_mlp(*, in_features: int, num_actions: int, hidden_sizes: Sequence[int] = (256, 256),
             activation: str = "relu", dueling: bool = False) -> QNetwork:
    """Q-network MLP for vector states: hidden layers, then one Q-value per action (dueling optional)."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for size in hidden_sizes:
        layers += [nn.Linear(width, size), make_activation(activation)]
        width = size
    return QNetwork(nn.Sequential(*layers), width, num_actions, dueling)


@MODELS.register("qnet_cnn")
def qnet_cnn(*, num_actions: int, in_channels: int = 4, dueling: bool = False) -> QNetwork:
    """Nature-DQN CNN for 84x84 stacked frames: conv 32x8/4, 64x4/2, 64x3/1, fc 512 (pixels / 255)."""
    features = nn.Sequential(
        nn.Conv2d(in_channels, 32, 8, stride=4), nn.ReLU(),  # (B, 32, 20, 20)
        nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),           # (B, 64, 9, 9)
        nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),           # (B, 64, 7, 7)
        nn.Flatten(), nn.Linear(64 * 7 * 7, 512), nn.ReLU(),  # (B, 512)
    )
    return QNetwork(features, 512, num_actions, dueling, scale=1.0 / 255.0)
