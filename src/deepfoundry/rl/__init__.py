"""Reinforcement learning: deep Q-learning (:mod:`deepfoundry.rl.dqn`) on gymnasium environments."""
from .dqn import DQNAgent, DQNConfig, ReplayBuffer, evaluate, linear_schedule, td_target, train_rl

__all__ = ["DQNAgent", "DQNConfig", "ReplayBuffer", "evaluate", "linear_schedule", "td_target", "train_rl"]
