"""Reinforcement learning: deep Q-learning (:mod:`deepfoundry.rl.dqn`) on gymnasium environments."""
from .dqn import DQNAgent, DQNConfig, evaluate, linear_schedule, td_target, train_rl
from .envs import make_env, make_vec_env
from .replay import NStep, PrioritizedReplayBuffer, ReplayBuffer

__all__ = ["DQNAgent", "DQNConfig", "NStep", "PrioritizedReplayBuffer", "ReplayBuffer", "evaluate",
           "linear_schedule", "make_env", "make_vec_env", "td_target", "train_rl"]
