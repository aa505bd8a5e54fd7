"""Environments for DQN: any gymnasium id by name, Atari through ale-py, checks, and vectorised copies.

Pixel observations become what the Nature-DQN network expects: grey frames resized to 84x84 (area
averaging) and the last 4 stacked, ``(4, 84, 84)`` uint8. Atari ids (``ALE/Pong-v5``, ...) come from
ale-py with its own frame skip (4 frames per action, v5 default) and grey screens (``obs_type``).
"""
from __future__ import annotations

import difflib
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DeepfoundryError

FRAME = 84
STACK = 4


def _register_atari(env_id: str) -> bool:
    """Import ale-py (which registers the ``ALE/...`` ids) when ``env_id`` looks like an Atari game."""
    if not (env_id.startswith("ALE/") or "NoFrameskip" in env_id):
        return False
    try:
        import ale_py
        import gymnasium as gym
    except ImportError:
        raise DeepfoundryError(f"environment {env_id!r} needs ale-py: pip install 'deepfoundry[atari]'") from None
    gym.register_envs(ale_py)
    return True


def atari_roms_available() -> bool:
    """Whether ale-py is installed with its bundled ROMs (Pong is one of them)."""
    try:
        import ale_py.roms

        return ale_py.roms.get_rom_path("pong") is not None
    except Exception:  # not installed, or a build without ROMs
        return False


def _grey_resize(obs: np.ndarray) -> np.ndarray:
    """``(H, W)`` or ``(H, W, C)`` pixels -> ``(84, 84)`` uint8: luminance ``0.299 R + 0.587 G + 0.114 B``,
    then area averaging (each output pixel is the mean of the input pixels it covers)."""
    x = torch.as_tensor(np.asarray(obs), dtype=torch.float32)
    if x.ndim == 3:
        x = x[..., :3] @ torch.tensor([0.299, 0.587, 0.114]) if x.shape[-1] >= 3 else x[..., 0]
    if x.shape != (FRAME, FRAME):
        x = F.interpolate(x[None, None], size=(FRAME, FRAME), mode="area")[0, 0]
    return x.round().clamp(0, 255).to(torch.uint8).numpy()


def make_env(env_id: str, render_mode: str | None = None, max_episode_steps: int | None = None) -> Any:
    """``gymnasium.make(env_id)``; an unknown id suggests the closest registered ones.
    ``max_episode_steps`` overrides the id's time limit (episodes are *truncated* there).

    Image observations ``(H, W, C)`` are turned into 4 stacked 84x84 grey frames ``(4, 84, 84)``.
    """
    import gymnasium as gym

    atari = _register_atari(env_id)
    if env_id not in gym.registry:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        raise DeepfoundryError(f"unknown environment id {env_id!r}{hint}; any gymnasium id works, e.g. "
                               "'CartPole-v1', 'Acrobot-v1', 'MountainCar-v0', 'ALE/Pong-v5'")
    kwargs: dict[str, Any] = {"render_mode": render_mode} if render_mode else {}
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = max_episode_steps
    if atari:
        kwargs["obs_type"] = "grayscale"  # (210, 160) luminance straight from the emulator
    try:
        env = gym.make(env_id, **kwargs)
    except Exception as exc:  # missing optional dependency (box2d, ROMs, mujoco, ...)
        raise DeepfoundryError(f"environment {env_id!r} cannot be created: {str(exc).splitlines()[0]}") from None
    shape = getattr(env.observation_space, "shape", None) or ()
    if (len(shape) == 3 and shape[-1] in (1, 3, 4)) or (atari and len(shape) == 2):
        space = gym.spaces.Box(0, 255, (FRAME, FRAME), np.uint8)
        env = gym.wrappers.TransformObservation(env, _grey_resize, space)   # (84, 84)
        env = gym.wrappers.FrameStackObservation(env, STACK)                  # (4, 84, 84)
    return env


def make_vec_env(env_id: str, num_envs: int, max_episode_steps: int | None = None) -> Any:
    """``num_envs`` copies in a ``gymnasium.vector.SyncVectorEnv`` (next-step autoreset: the step after
    an episode ends resets that copy, so the terminal observation is returned as it is)."""
    import gymnasium as gym

    return gym.vector.SyncVectorEnv([lambda: make_env(env_id, max_episode_steps=max_episode_steps)
                                     for _ in range(num_envs)],
                                    autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)


def check_env(env: Any, env_id: str, model_name: str) -> tuple[tuple[int, ...], int]:
    """The observation shape and the number of actions, or a one-line error if DQN cannot run it."""
    import gymnasium as gym

    if not isinstance(env.action_space, gym.spaces.Discrete):
        raise DeepfoundryError(f"environment {env_id!r} has a continuous action space {env.action_space}; DQN needs "
                               "discrete actions (try 'CartPole-v1', 'Acrobot-v1' or 'MountainCar-v0')")
    shape = tuple(env.observation_space.shape or ())
    if len(shape) != 1 and model_name == "qnet_mlp":
        raise DeepfoundryError(f"environment {env_id!r} has pixel observations of shape {shape}; the MLP Q-network "
                               "needs vector states: use --set model.name=qnet_cnn")
    if len(shape) == 1 and model_name == "qnet_cnn":
        raise DeepfoundryError(f"environment {env_id!r} has vector observations of shape {shape}; the CNN "
                               "Q-network needs images: use --set model.name=qnet_mlp")
    return shape, int(env.action_space.n)
