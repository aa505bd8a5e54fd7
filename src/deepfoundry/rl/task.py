"""The DQN family behind the task contract: a trained Q-network as a :class:`~deepfoundry.tasks.base.Task`.

DQN does not train through the Trainer: it runs its own environment loop (:func:`.dqn.train_rl`),
named by the class attribute ``own_loop``, which the API calls as
``own_loop(cfg, run_dir: RunDirectory, resume_state) -> run directory path``. A finished run
rebuilds the task from ``model.json`` like any other (``Run.task``), and then::

    observations --encode_inputs--> (N, *obs_shape) --predict--> Q-values (N, A)
                 --decode_outputs--> [{"action": argmax_a Q(s, a), "q_values": [Q(s, a) for a]}, ...]

``play(episodes, seed, record)`` runs the greedy policy in the run's environment.

>>> import deepfoundry
>>> task = deepfoundry.load_run("runs/dqn-cartpole").task
>>> task.predict_rows([0.0, 0.1, 0.0, -0.1])      # [{'action': 1, 'q_values': [..., ...]}]
>>> task.play(episodes=5, seed=0)["mean_return"]
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import DeepfoundryError
from ..registry import TASKS
from ..tasks.base import Task
from .dqn import greedy_returns, parse_dqn_config, record_gif, train_rl

TRAINS_ALONE = ("DQN trains in its own loop (deepfoundry.rl.dqn.train_rl, run by 'deepfoundry train'), "
                "not in the Trainer")


@TASKS.register("dqn")
class DQNTask(Task):
    """Deep Q-learning on gymnasium environments (Double DQN, dueling, n-step, prioritised replay)."""

    own_loop = staticmethod(train_rl)  # own_loop(cfg, run_dir, resume_state) -> run directory path
    report_sections = ("rl",)

    def __init__(self, model: nn.Module, info: dict[str, Any], **kwargs: Any) -> None:
        self.config = parse_dqn_config(kwargs)  # the task.* keys; an unknown one is one line naming it
        self.obs_shape = tuple(int(d) for d in info["obs_shape"])
        # input_shape: what the generic input codecs (.npy files on the command line) check against
        super().__init__(model, {**info, "input_shape": list(self.obs_shape)})
        self.env_id: str = info.get("env_id", self.config.env_id)
        self.num_actions = int(info["num_actions"])
        self.max_episode_steps: int | None = info.get("max_episode_steps", self.config.max_episode_steps)

    # ------------------------------------------------------------------ the input/output contract
    def encode_inputs(self, raw: Any) -> torch.Tensor:
        """Observations -> a batch ``(N, *obs_shape)``: one observation gets a batch dimension.

        Pixel observations stay ``uint8`` (the Q-network scales them); anything else becomes float32.
        """
        try:
            x = raw if isinstance(raw, torch.Tensor) else torch.as_tensor(np.asarray(raw))
        except (TypeError, ValueError) as exc:
            raise DeepfoundryError(f"observations must be a numeric array shaped {self.obs_shape}: {exc}") from None
        if tuple(x.shape) == self.obs_shape:
            x = x.unsqueeze(0)
        if tuple(x.shape[1:]) != self.obs_shape:
            raise DeepfoundryError(f"observations of shape {tuple(x.shape)} do not fit the Q-network of "
                                   f"{self.env_id!r}, which expects {self.obs_shape} or a batch "
                                   f"(N, {', '.join(map(str, self.obs_shape))})")
        return x if x.dtype == torch.uint8 else x.float()

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """``Q(s, a)`` for a batch of observations ``(N, *obs_shape)`` -> ``(N, num_actions)``."""
        return self.model(x)

    def decode_outputs(self, outputs: torch.Tensor) -> list[dict[str, Any]]:
        """Q-values ``(N, A)`` -> ``[{"action": argmax_a Q(s, a), "q_values": [...]}, ...]``."""
        q_values = torch.as_tensor(outputs).double().cpu()
        return [{"action": int(row.argmax()), "q_values": [float(v) for v in row]} for row in q_values]

    def predictions(self, outputs: torch.Tensor) -> np.ndarray:
        """Q-values ``(N, A)`` -> the greedy actions ``(N,)``."""
        return torch.as_tensor(outputs).argmax(dim=1).cpu().numpy()

    # ------------------------------------------------------------------ playing
    def play(self, episodes: int = 10, seed: int = 0, record: str | Path | None = None) -> dict[str, Any]:
        """The greedy policy ``argmax_a Q(s, a)`` for ``episodes`` episodes (seeds ``seed``, ``seed + 1``, ...):
        ``{"env_id", "episodes", "mean_return", "std_return"}``, plus ``"record"`` (the path of an animated GIF
        of the episode with seed ``seed``) when ``record`` is given."""
        if episodes < 1:
            raise DeepfoundryError(f"play needs at least one episode; received episodes={episodes}")
        q_network = self.model.eval()
        mean, std = greedy_returns(q_network, self.env_id, episodes, seed, self.max_episode_steps)
        result: dict[str, Any] = {"env_id": self.env_id, "episodes": episodes, "mean_return": mean, "std_return": std}
        if record is not None:
            result["record"] = str(record_gif(q_network, self.env_id, record, seed))
        return result

    # ------------------------------------------------------------------ not trained by the Trainer
    def training_step(self, batch: Any) -> torch.Tensor:
        raise DeepfoundryError(TRAINS_ALONE)

    def reset_metrics(self) -> None:
        raise DeepfoundryError(TRAINS_ALONE)

    def evaluation_step(self, batch: Any) -> None:
        raise DeepfoundryError(f"{TRAINS_ALONE}; evaluate a DQN run with Run.task.play or 'deepfoundry play RUN'")

    def compute_metrics(self) -> dict[str, Any]:
        raise DeepfoundryError(f"{TRAINS_ALONE}; evaluate a DQN run with Run.task.play or 'deepfoundry play RUN'")
