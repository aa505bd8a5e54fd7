"""Reinforcement learning: deep Q-learning (:mod:`deepfoundry.rl.dqn`) on gymnasium environments, behind the
task contract as the task ``dqn`` (:mod:`deepfoundry.rl.task`)."""
from .dqn import DQNAgent, DQNConfig, greedy_returns, linear_schedule, td_target, train_rl
from .envs import make_env, make_vec_env
from .replay import NStep, PrioritizedReplayBuffer, ReplayBuffer
from .task import DQNTask  # registers the task "dqn"

__all__ = ["DQNAgent", "DQNConfig", "DQNTask", "NStep", "PrioritizedReplayBuffer", "ReplayBuffer",
           "greedy_returns", "linear_schedule", "make_env", "make_vec_env", "td_target", "train_rl"]
