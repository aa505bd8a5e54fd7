"""Experience replay for DQN: uniform, prioritised (Schaul et al. 2016), and n-step returns.

Every stored transition is ``(s, a, R, s', done, discount)``. For one-step returns ``R = r`` and
``discount = gamma``; an n-step transition (Sutton 1988; Hessel et al. 2018) sums the next ``k <= n``
rewards of one episode, ``R = sum_{j<k} gamma^j r_{t+j}``, bootstraps from ``s' = s_{t+k}`` with
``discount = gamma^k``, and is shorter than ``n`` only where the episode ended.

Prioritised replay samples transition ``i`` with probability ``P(i) = p_i^alpha / sum_j p_j^alpha``,
``p_i = |delta_i| + eps`` (its last TD error; new transitions get the largest priority so far), and
corrects the bias with importance-sampling weights ``w_i = (N P(i))^-beta / max_j w_j``, with beta
annealed linearly to 1 over the run.
"""
from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import torch

from ..errors import DeepfoundryError

_FIELDS = ("obs", "next_obs", "actions", "rewards", "terminated", "discounts")


class ReplayBuffer:
    """Uniform experience replay in preallocated tensors; when full, the oldest transition is overwritten."""

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], obs_dtype: torch.dtype = torch.float32,
                 gamma: float = 0.99) -> None:
        self.capacity, self.pos, self.size, self.gamma = capacity, 0, 0, gamma
        self.obs = torch.zeros((capacity, *obs_shape), dtype=obs_dtype)       # (N, *obs)
        self.next_obs = torch.zeros((capacity, *obs_shape), dtype=obs_dtype)  # (N, *obs)
        self.actions = torch.zeros(capacity, dtype=torch.long)                # (N,)
        self.rewards = torch.zeros(capacity)                                  # (N,) R, the (n-step) return
        self.terminated = torch.zeros(capacity)                               # (N,) 1.0 = no bootstrap
        self.discounts = torch.zeros(capacity)                                # (N,) gamma^k of the bootstrap

    def add(self, obs: Any, action: int, reward: float, next_obs: Any, terminated: bool,
            discount: float | None = None) -> int:
        """Store one transition; returns its slot."""
        i = self.pos
        self.obs[i] = torch.as_tensor(np.asarray(obs))
        self.next_obs[i] = torch.as_tensor(np.asarray(next_obs))
        self.actions[i], self.rewards[i], self.terminated[i] = action, float(reward), float(terminated)
        self.discounts[i] = self.gamma if discount is None else discount
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        return i

    def _batch(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        t = torch.from_numpy(idx)
        return {"obs": self.obs[t], "actions": self.actions[t], "rewards": self.rewards[t],
                "next_obs": self.next_obs[t], "terminated": self.terminated[t], "discounts": self.discounts[t],
                "indices": t}

    def sample(self, batch_size: int, rng: np.random.Generator, beta: float = 1.0) -> dict[str, torch.Tensor]:
        """``batch_size`` transitions drawn uniformly with replacement (``beta`` is unused here)."""
        return self._batch(rng.integers(0, self.size, size=batch_size))

    def update_priorities(self, indices: torch.Tensor, td_errors: torch.Tensor) -> None:
        """Uniform replay has no priorities."""

    def state_dict(self) -> dict[str, Any]:
        n = self.size
        return {"pos": self.pos, "size": n, **{k: getattr(self, k)[:n] for k in _FIELDS}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        n = state["size"]
        if n > self.capacity:
            raise DeepfoundryError(f"the checkpoint's replay buffer holds {n} transitions, more than "
                                   f"task.buffer_size={self.capacity}; keep buffer_size when resuming")
        self.size = n
        self.pos = state["pos"] if n == self.capacity else n  # a grown buffer fills its free slots first
        for key in _FIELDS:
            if key in state:
                getattr(self, key)[:n] = state[key]


class SumTree:
    """A binary tree whose leaves hold priorities and inner nodes their sums: O(log N) update and
    prefix-sum search (``find(u)``: the first leaf whose cumulative priority exceeds ``u``)."""

    def __init__(self, capacity: int) -> None:
        self.leaves = 1 << max(0, int(np.ceil(np.log2(max(capacity, 1)))))
        self.tree = np.zeros(2 * self.leaves)  # node k has children 2k, 2k+1; the root is node 1

    def total(self) -> float:
        return float(self.tree[1])

    def update(self, idx: np.ndarray, values: np.ndarray) -> None:
        nodes = np.asarray(idx) + self.leaves
        self.tree[nodes] = values
        while True:
            nodes = np.unique(nodes // 2)
            if nodes[0] == 0:  # above the root
                return
            self.tree[nodes] = self.tree[2 * nodes] + self.tree[2 * nodes + 1]

    def find(self, u: np.ndarray) -> np.ndarray:
        nodes = np.ones(len(u), dtype=np.int64)
        u = u.astype(np.float64).copy()
        while nodes[0] < self.leaves:
            left = 2 * nodes
            go_right = u >= self.tree[left]
            u -= np.where(go_right, self.tree[left], 0.0)
            nodes = left + go_right
        return nodes - self.leaves


class PrioritizedReplayBuffer(ReplayBuffer):
    """Proportional prioritised replay: ``P(i) ~ p_i^alpha`` with importance-sampling weights."""

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], obs_dtype: torch.dtype = torch.float32,
                 gamma: float = 0.99, alpha: float = 0.6, eps: float = 1e-6) -> None:
        super().__init__(capacity, obs_shape, obs_dtype, gamma)
        self.alpha, self.eps, self.max_priority = alpha, eps, 1.0
        self.tree = SumTree(capacity)

    def add(self, *args: Any, **kwargs: Any) -> int:
        i = super().add(*args, **kwargs)
        self.tree.update(np.array([i]), np.array([self.max_priority ** self.alpha]))
        return i

    def sample(self, batch_size: int, rng: np.random.Generator, beta: float = 1.0) -> dict[str, torch.Tensor]:
        """Stratified: one draw from each of ``batch_size`` equal slices of the total priority."""
        total = self.tree.total()
        u = (np.arange(batch_size) + rng.random(batch_size)) * (total / batch_size)
        idx = np.minimum(self.tree.find(np.minimum(u, total * (1 - 1e-12))), self.size - 1)
        probs = self.tree.tree[idx + self.tree.leaves] / total                    # P(i)
        weights = (self.size * np.maximum(probs, 1e-12)) ** -beta                 # (N P(i))^-beta
        batch = self._batch(idx)
        batch["weights"] = torch.as_tensor(weights / weights.max(), dtype=torch.float32)
        return batch

    def update_priorities(self, indices: torch.Tensor, td_errors: torch.Tensor) -> None:
        """``p_i = |delta_i| + eps`` for the transitions just trained on."""
        p = td_errors.detach().abs().double().numpy() + self.eps
        self.max_priority = max(self.max_priority, float(p.max()))
        self.tree.update(indices.numpy(), p ** self.alpha)

    def state_dict(self) -> dict[str, Any]:
        n = self.size
        return {**super().state_dict(), "max_priority": self.max_priority,
                "priorities": torch.from_numpy(self.tree.tree[self.tree.leaves:self.tree.leaves + n].copy())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if "priorities" in state:
            self.max_priority = float(state["max_priority"])
            self.tree.update(np.arange(self.size), state["priorities"].double().numpy())
        else:  # a checkpoint of uniform replay: every transition starts with the same priority
            self.tree.update(np.arange(self.size), np.full(self.size, self.max_priority ** self.alpha))


class NStep:
    """Turns one environment's steps into n-step transitions for the buffer (``n = 1``: unchanged)."""

    def __init__(self, n: int, gamma: float) -> None:
        self.n, self.gamma = n, gamma
        self.pending: deque[tuple[Any, int, float]] = deque()

    def push(self, obs: Any, action: int, reward: float, next_obs: Any, terminated: bool,
             truncated: bool) -> list[tuple[Any, int, float, Any, bool, float]]:
        """Add ``(s_t, a_t, r_t)``; return the transitions now complete: ``(s, a, R, s', done, gamma^k)``."""
        self.pending.append((obs, action, float(reward)))
        out = []
        if len(self.pending) == self.n:
            out.append(self._emit(next_obs, terminated))
        if terminated or truncated:  # the episode ended: every pending start gets a shorter return
            while self.pending:
                out.append(self._emit(next_obs, terminated))
        return out

    def _emit(self, next_obs: Any, terminated: bool) -> tuple[Any, int, float, Any, bool, float]:
        ret = sum(r * self.gamma ** j for j, (_, _, r) in enumerate(self.pending))
        k = len(self.pending)
        obs, action, _ = self.pending.popleft()
        return obs, action, ret, next_obs, terminated, self.gamma ** k

    def clear(self) -> None:
        self.pending.clear()
