"""Deep Q-learning (DQN, Mnih et al. 2015) with experience replay and a target network.

Read top to bottom: the config, the exploration schedule, the TD target, the agent, greedy
evaluation, then the training loop. Environments are in :mod:`.envs`, the replay buffers (uniform,
prioritised) and n-step returns in :mod:`.replay`.

The Q-network is regressed (Huber loss) onto the TD target, on minibatches from the replay
buffer, with a slowly updated copy ``Q_target`` of the network (hard copies or Polyak averaging)::

    y = R + gamma^k * (1 - done) * max_a' Q_target(s', a')                      (DQN)
    y = R + gamma^k * (1 - done) * Q_target(s', argmax_a' Q(s', a'))           (Double DQN)

with ``R = r`` and ``k = 1`` for one-step returns, or ``R = sum_{j<k} gamma^j r_{t+j}`` over the
next ``k <= n`` rewards of the episode (``task.n_step = n``). Prioritised replay weights each
sample's loss by its importance-sampling weight. ``task.num_envs`` copies of the environment step
together (gymnasium ``SyncVectorEnv``); every count (``train_freq``, ``eval_every``, ...) is in
environment steps summed over the copies.

``done`` is *termination* only (the pole fell, the goal was reached). A time-limit *truncation*
does not end the MDP, so that transition still bootstraps from ``s'``, the real last observation.

>>> import deepfoundry
>>> run = deepfoundry.train("dqn-cartpole", overrides={"task.total_steps": 20000})  # calls train_rl
>>> run.results["eval"]["mean_return"]
>>> run.task.play(episodes=5, seed=0)  # the Q-network behind the task contract (deepfoundry.rl.task.DQNTask)
"""
from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from ..config import RunConfig, TaskConfig
from ..engine.checkpoint import save_state
from ..engine.logging import JsonlWriter, StepProgress
from ..engine.rundir import RunDirectory
from ..engine.seeding import seed_everything
from ..engine.signals import Stopped, graceful_stop
from ..errors import DeepfoundryError
from ..models import build_model, qnet  # noqa: F401  (registers qnet_mlp / qnet_cnn)
from ..optim import build_optimizer
from .envs import check_env, make_env, make_vec_env
from .replay import NStep, PrioritizedReplayBuffer, ReplayBuffer

STOP_GRACE_SECONDS = 10.0  # a signal mid-episode waits this long for the episode's end (well inside the 30 s
                           # that Docker and Kubernetes give between SIGTERM and SIGKILL)

class DQNConfig(BaseModel):
    """The ``task`` section of a DQN recipe (defaults: the rl-zoo CartPole hyperparameters)."""

    model_config = ConfigDict(extra="forbid")
    name: Literal["dqn"] = "dqn"
    env_id: str = Field("CartPole-v1", description="gymnasium environment id")
    total_steps: int = Field(50_000, gt=0, description="environment steps to train for")
    gamma: float = Field(0.99, ge=0.0, le=1.0, description="discount factor")
    buffer_size: int = Field(100_000, gt=0, description="replay buffer capacity (transitions)")
    learning_starts: int = Field(1_000, ge=0, description="environment steps before the first update")
    batch_size: int = Field(64, gt=0, description="transitions per gradient step")
    target_update: int = Field(10, gt=0, description="environment steps between target-network updates")
    tau: float = Field(1.0, gt=0.0, le=1.0, description="1: hard copy; <1: Polyak theta' <- tau theta + (1-tau) theta'")
    train_freq: int = Field(256, gt=0, description="environment steps between training rounds")
    gradient_steps: int = Field(128, gt=0, description="gradient steps per training round")
    exploration_fraction: float = Field(0.16, gt=0.0, le=1.0, description="share of total_steps over which epsilon decays")
    initial_epsilon: float = Field(1.0, ge=0.0, le=1.0, description="epsilon at step 0")
    final_epsilon: float = Field(0.04, ge=0.0, le=1.0, description="epsilon after the decay")
    double: bool = Field(True, description="Double DQN: the online network picks a', the target network rates it")
    dueling: bool = Field(False, description="dueling head: Q = V + A - mean(A)")
    n_step: int = Field(1, ge=1, description="n-step returns: R = sum_{j<n} gamma^j r_{t+j}, bootstrap gamma^n")
    prioritized: bool = Field(False, description="prioritised replay: P(i) ~ (|TD error| + eps)^alpha")
    priority_alpha: float = Field(0.6, ge=0.0, le=1.0, description="prioritised replay: priority exponent alpha")
    priority_beta: float = Field(0.4, ge=0.0, le=1.0, description="importance-sampling exponent at step 0 (-> 1)")
    max_episode_steps: int | None = Field(None, gt=0, description="override the environment's time limit")
    num_envs: int = Field(1, ge=1, description="environment copies stepped together (gymnasium SyncVectorEnv)")
    final_lr_fraction: float = Field(1.0, ge=0.0, le=1.0,
                                     description="lr decays linearly to optim.lr * this at total_steps (1: constant)")
    loss: Literal["huber", "mse"] = Field("huber", description="TD-error loss")
    max_grad_norm: float | None = Field(10.0, gt=0.0, description="clip the global gradient norm (None: off)")
    eval_every: int = Field(2_500, ge=0, description="environment steps between greedy evaluations (0: none)")
    eval_episodes: int = Field(10, gt=0, description="episodes per periodic greedy evaluation")
    final_eval_episodes: int = Field(20, gt=0, description="episodes of the final greedy evaluation")
    target_return: float | None = Field(None, description="record steps and seconds until an evaluation reaches it")
    checkpoint_every: int = Field(10_000, gt=0, description="environment steps between checkpoints (at episode ends)")
    save_buffer: bool = Field(True, description="store the replay buffer in checkpoints (exact resume)")
    log_every: int = Field(1_000, gt=0, description="environment steps between 'train' records in metrics.jsonl")


def parse_dqn_config(task: TaskConfig | dict[str, Any]) -> DQNConfig:
    """Validate the ``task`` section; an unknown key or bad value is one line naming ``task.<key>``."""
    raw = task.model_dump() if isinstance(task, BaseModel) else dict(task)
    try:
        return DQNConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = "task." + ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            raise DeepfoundryError(f"unknown config key '{key}' for task 'dqn'; accepted: "
                                   f"{', '.join(DQNConfig.model_fields)}") from None
        raise DeepfoundryError(f"config key '{key}': {err['msg'][0].lower()}{err['msg'][1:]}, "
                               f"received {err.get('input')!r}") from None


def network_context(shape: tuple[int, ...], num_actions: int, dueling: bool) -> dict[str, Any]:
    """What the Q-network builders may take from the environment."""
    ctx: dict[str, Any] = {"num_actions": num_actions, "dueling": dueling}
    ctx.update({"in_features": shape[0]} if len(shape) == 1 else {"in_channels": shape[0]})
    return ctx


# ---------------------------------------------------------------- ALGO LOGIC
def linear_schedule(start: float, end: float, duration: float, step: int) -> float:
    """Epsilon: ``start`` at step 0, linearly to ``end`` at ``duration``, then constant."""
    return start + min(step / max(duration, 1.0), 1.0) * (end - start)


def td_target(rewards: torch.Tensor, terminated: torch.Tensor, next_q_target: torch.Tensor,
              gamma: float | torch.Tensor, next_q_online: torch.Tensor | None = None) -> torch.Tensor:
    """``y = R + gamma * (1 - done) * Q_target(s', a*)`` with ``a* = argmax_a' Q_target(s', a')`` (DQN) or
    ``argmax_a' Q_online(s', a')`` (Double DQN, when ``next_q_online`` is given).

    Shapes: ``rewards``, ``terminated`` ``(B,)``; ``next_q_*`` ``(B, A)`` -> ``(B,)``; ``gamma`` a float
    or ``(B,)`` (``gamma^k`` for n-step transitions).
    """
    chooser = next_q_target if next_q_online is None else next_q_online
    best = chooser.argmax(dim=1, keepdim=True)                       # (B, 1)
    next_value = next_q_target.gather(1, best).squeeze(1)           # (B,)
    return rewards + gamma * (1.0 - terminated) * next_value


class DQNAgent:
    """The online Q-network, its target copy, the optimizer, and the update rule."""

    def __init__(self, q_network: nn.Module, optimizer: torch.optim.Optimizer, cfg: DQNConfig, num_actions: int) -> None:
        self.q_network, self.optimizer, self.cfg, self.num_actions = q_network, optimizer, cfg, num_actions
        self.target_network = copy.deepcopy(q_network).requires_grad_(False)

    @torch.no_grad()
    def act(self, obs: Any, epsilon: float, rng: np.random.Generator) -> np.ndarray:
        """Epsilon-greedy for a batch of states ``(N, *obs)``: per state, a uniformly random action with
        probability epsilon, else ``argmax_a Q(s, a)``. Returns ``(N,)`` actions."""
        explore = rng.random(len(obs)) < epsilon                              # (N,)
        actions = rng.integers(self.num_actions, size=len(obs))               # (N,)
        if not explore.all():
            greedy = self.q_network(torch.as_tensor(np.asarray(obs))).argmax(dim=1).numpy()
            actions = np.where(explore, actions, greedy)
        return actions

    def update(self, batch: dict[str, torch.Tensor]) -> tuple[float, float, torch.Tensor]:
        """One gradient step on the TD error; returns (loss, mean Q(s, a), TD errors ``(B,)``).

        With prioritised replay each sample's loss is scaled by its importance-sampling weight.
        """
        with torch.no_grad():
            next_q_target = self.target_network(batch["next_obs"])                       # (B, A)
            next_q_online = self.q_network(batch["next_obs"]) if self.cfg.double else None
            target = td_target(batch["rewards"], batch["terminated"], next_q_target, batch["discounts"],
                               next_q_online)
        q = self.q_network(batch["obs"]).gather(1, batch["actions"].unsqueeze(1)).squeeze(1)  # (B,)
        loss_fn = F.smooth_l1_loss if self.cfg.loss == "huber" else F.mse_loss
        losses = loss_fn(q, target, reduction="none")                                         # (B,)
        loss = (losses * batch["weights"]).mean() if "weights" in batch else losses.mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.q_network.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()
        return loss.item(), q.mean().item(), (q - target).detach()

    @torch.no_grad()
    def update_target(self) -> None:
        """Hard copy (tau = 1) or Polyak averaging ``theta' <- tau * theta + (1 - tau) * theta'``."""
        for target, online in zip(self.target_network.parameters(), self.q_network.parameters()):
            target.lerp_(online, self.cfg.tau)

    def state_dict(self) -> dict[str, Any]:
        return {"q_network": self.q_network.state_dict(), "target_network": self.target_network.state_dict(),
                "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.q_network.load_state_dict(state["q_network"])
        self.target_network.load_state_dict(state["target_network"])
        self.optimizer.load_state_dict(state["optimizer"])


@torch.no_grad()
def greedy_returns(agent: DQNAgent | nn.Module, env_id: str, episodes: int = 10, seed: int = 0,
                   max_episode_steps: int | None = None) -> tuple[float, float]:
    """Greedy policy ``argmax_a Q(s, a)`` for ``episodes`` episodes (seeds ``seed``, ``seed + 1``, ...):
    the mean and standard deviation of the undiscounted return."""
    q_network = agent.q_network if isinstance(agent, DQNAgent) else agent
    env = make_env(env_id, max_episode_steps=max_episode_steps)
    returns = []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        total, done = 0.0, False
        while not done:
            action = int(q_network(torch.as_tensor(np.asarray(obs)).unsqueeze(0)).argmax(dim=1))
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return float(np.mean(returns)), float(np.std(returns))


# ---------------------------------------------------------------- training loop
def train_rl(cfg: RunConfig, run_dir: RunDirectory | str | Path, resume_state: dict[str, Any] | None = None) -> Path:
    """Train a DQN recipe into ``run_dir`` and return its path; ``resume_state`` (the loaded
    ``checkpoints/last.safetensors``) continues an interrupted run exactly.

    Everything on disk goes through :class:`~deepfoundry.engine.rundir.RunDirectory`: config.yaml,
    metrics.jsonl (records ``train``, ``episode``, ``eval``), checkpoints/last.safetensors,
    model.safetensors + model.json and results.json. Progress (a bar over environment steps on a
    terminal, one line per periodic evaluation) goes to stderr when ``trainer.progress`` is on.
    The Q-network trains on the CPU (small networks, one environment step per forward pass).
    SIGTERM or SIGINT stops the loop with a checkpoint and raises :class:`~deepfoundry.engine.signals.Stopped`:
    with ``num_envs=1`` at the end of the open episode (the resume is exact) unless that takes more than
    ``STOP_GRACE_SECONDS``; with several copies, or past that, after the current step (the resume starts
    new episodes).

    >>> from deepfoundry.config import load_config
    >>> path = train_rl(load_config("dqn-cartpole", {"task.total_steps": 5000}), RunDirectory("runs/cartpole"))
    """
    threads = torch.get_num_threads()
    try:  # trainer.threads applies to this run only, not to the rest of the process
        return _train_rl(cfg, run_dir, resume_state)
    finally:
        torch.set_num_threads(threads)


def _train_rl(cfg: RunConfig, run_dir: RunDirectory | str | Path, resume_state: dict[str, Any] | None) -> Path:
    run = run_dir if isinstance(run_dir, RunDirectory) else RunDirectory(run_dir)
    args = parse_dqn_config(cfg.task)
    seed_everything(cfg.seed)
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    probe = make_env(args.env_id, max_episode_steps=args.max_episode_steps)
    obs_shape, num_actions = check_env(probe, args.env_id, cfg.model.name)
    probe.close()
    envs = make_vec_env(args.env_id, args.num_envs, args.max_episode_steps)  # (N copies; N = 1 resumes exactly)
    context = network_context(obs_shape, num_actions, args.dueling)
    q_network = build_model(cfg.model.name, cfg.model.builder_kwargs(), context)
    agent = DQNAgent(q_network, build_optimizer(cfg.optim, q_network.parameters(), module=q_network), args, num_actions)
    pixels = len(obs_shape) > 1
    buffer_cls = PrioritizedReplayBuffer if args.prioritized else ReplayBuffer
    buffer = buffer_cls(min(args.buffer_size, args.total_steps), obs_shape, torch.uint8 if pixels else torch.float32,
                        gamma=args.gamma, **({"alpha": args.priority_alpha} if args.prioritized else {}))
    nsteps = [NStep(args.n_step, args.gamma) for _ in range(args.num_envs)]
    rng = np.random.default_rng(cfg.seed)  # exploration and minibatch sampling
    eval_seed = cfg.seed + 10_000          # evaluation episodes never touch the training RNGs
    base_lr = cfg.optim.lr

    run.start(cfg)
    step, episode, updates, train_seconds, first_reach = 0, 0, 0, 0.0, None
    best: dict[str, Any] | None = None  # the best periodic evaluation and its weights (trainer.restore_best)
    envs.reset(seed=cfg.seed)  # copy i is seeded with seed + i
    if resume_state is not None:
        s = resume_state
        agent.load_state_dict(s["agent"])
        if s.get("buffer") is not None:
            buffer.load_state_dict(s["buffer"])
        rng.bit_generator.state = s["rng"]
        torch.set_rng_state(s["torch_rng"])
        env_rngs = s["env_rng"] if isinstance(s["env_rng"], list) else [s["env_rng"]]
        for e, state in zip(envs.envs, env_rngs):
            e.unwrapped.np_random.bit_generator.state = state
        step, episode, updates, train_seconds = s["step"], s["episode"], s["updates"], s["train_seconds"]
        first_reach, best = s.get("first_reach"), s.get("best")
    run.reset_metrics(step if resume_state is not None else None)  # a resume drops records after its checkpoint
    obs, _ = envs.reset()  # on resume: the same reset the interrupted run was about to do (N = 1)
    device = next(agent.q_network.parameters()).device

    def checkpoint() -> None:
        save_state(run.last_checkpoint, {
            "agent": agent.state_dict(), "buffer": buffer.state_dict() if args.save_buffer else None,
            "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
            "env_rng": [e.unwrapped.np_random.bit_generator.state for e in envs.envs],
            "step": step, "episode": episode, "updates": updates, "train_seconds": train_seconds,
            "first_reach": first_reach, "best": best})

    n_envs = args.num_envs
    returns, lengths = np.zeros(n_envs), np.zeros(n_envs, dtype=np.int64)
    resetting = np.zeros(n_envs, dtype=bool)  # copies whose next step is gymnasium's autoreset
    last_ckpt, loss, q_mean = step, float("nan"), float("nan")
    signalled_at: float | None = None  # when SIGTERM/SIGINT arrived (one copy: wait for the episode's end)
    started = time.perf_counter()
    tick = time.perf_counter()
    log = JsonlWriter(run.metrics_path)
    bar = StepProgress(args.total_steps, enabled=cfg.trainer.progress, label="env steps").start(step)
    if cfg.trainer.device not in ("auto", "cpu"):
        bar.console.print(f"note: DQN trains on the CPU; trainer.device={cfg.trainer.device} is not used",
                          highlight=False)
    if resume_state is not None:
        bar.print(f"resumed at step {step}, episode {episode}")
    try:
        with graceful_stop() as stop:  # SIGTERM/SIGINT: checkpoint at the next step boundary, raise Stopped
            while step < args.total_steps:
                # 1. act epsilon-greedily in every copy; store (n-step) transitions, bootstrapping unless *terminated*
                epsilon = linear_schedule(args.initial_epsilon, args.final_epsilon,
                                          args.exploration_fraction * args.total_steps, step)
                actions = agent.act(obs, epsilon, rng)
                next_obs, rewards, terminated, truncated, _ = envs.step(actions)
                ended = False
                for i in range(n_envs):
                    if resetting[i]:  # this copy was just reset: next_obs[i] is a first observation, no transition
                        continue
                    if step >= args.total_steps:
                        break
                    for transition in nsteps[i].push(obs[i], int(actions[i]), float(rewards[i]), next_obs[i],
                                                     bool(terminated[i]), bool(truncated[i])):
                        buffer.add(*transition)
                    step += 1
                    returns[i], lengths[i] = returns[i] + float(rewards[i]), lengths[i] + 1

                    # 2. every train_freq steps: gradient_steps updates on minibatches (lr decays linearly)
                    if step > args.learning_starts and step % args.train_freq == 0:
                        lr = base_lr * linear_schedule(1.0, args.final_lr_fraction, args.total_steps, step)
                        for group in agent.optimizer.param_groups:
                            group["lr"] = lr
                        beta = linear_schedule(args.priority_beta, 1.0, args.total_steps, step)
                        for _ in range(args.gradient_steps):
                            batch = buffer.sample(args.batch_size, rng, beta)
                            loss, q_mean, td_errors = agent.update(batch)
                            buffer.update_priorities(batch["indices"], td_errors)
                            updates += 1
                    # 3. the target network follows every target_update steps
                    if step % args.target_update == 0:
                        agent.update_target()
                    if step % args.log_every == 0:
                        log.write({"kind": "train", "step": step, "loss": loss, "q_mean": q_mean, "epsilon": epsilon,
                                   "updates": updates, "lr": agent.optimizer.param_groups[0]["lr"]})
                    if terminated[i] or truncated[i]:
                        episode, ended = episode + 1, True
                        log.write({"kind": "episode", "step": step, "episode": episode, "return": float(returns[i]),
                                   "length": int(lengths[i]), "epsilon": epsilon})
                        returns[i], lengths[i] = 0.0, 0

                    # 4. periodic greedy evaluation (its time is not training time)
                    if args.eval_every and step % args.eval_every == 0:
                        train_seconds += time.perf_counter() - tick
                        mean, std = greedy_returns(agent, args.env_id, args.eval_episodes, eval_seed,
                                                   args.max_episode_steps)
                        if first_reach is None and args.target_return is not None and mean >= args.target_return:
                            first_reach = {"env_steps": step, "train_seconds": round(train_seconds, 3)}
                        if best is None or mean >= best["mean_return"]:  # ties: the later, longer-trained weights
                            best = {"mean_return": mean, "step": step,
                                    "q_network": copy.deepcopy(agent.q_network.state_dict())}
                        log.write({"kind": "eval", "step": step, "mean_return": mean, "std_return": std,
                                   "train_seconds": train_seconds})
                        bar.print(f"step {step:>7d}  eval mean {mean:8.2f} +- {std:6.2f}  epsilon {epsilon:.3f}  "
                                  f"loss {loss:.4f}  ({train_seconds:.1f}s training)")
                        tick = time.perf_counter()
                if bar.active:
                    bar.update(step, f"episode {episode}  epsilon {epsilon:.3f}  loss {loss:.4f}")
                obs, resetting = next_obs, terminated | truncated
                if n_envs == 1 and resetting[0]:  # one copy: reset here, so a checkpoint resumes exactly
                    if ended and (step - last_ckpt >= args.checkpoint_every or stop.signum):
                        train_seconds += time.perf_counter() - tick
                        checkpoint()
                        last_ckpt, tick = step, time.perf_counter()
                        if stop.signum:  # a signal at an episode's end: the resume is exact
                            raise Stopped(stop.name, step=step, checkpoint=run.last_checkpoint, run_dir=run.path)
                    obs, _ = envs.reset()
                    resetting[:] = False
                elif n_envs > 1 and step - last_ckpt >= args.checkpoint_every:  # resume restarts open episodes
                    train_seconds += time.perf_counter() - tick
                    checkpoint()
                    last_ckpt, tick = step, time.perf_counter()
                # SIGTERM/SIGINT mid-episode: a gymnasium environment's own state (CartPole's pole, an emulator)
                # cannot be saved in general. With one copy the loop plays on to the episode's end (above: an
                # exact resume) for up to STOP_GRACE_SECONDS; past that, or with several copies, it stops here and
                # the resume starts a new episode: the open episode's transitions stay in the buffer, its last
                # n-1 (n-step) and its return are dropped.
                if stop.signum:
                    signalled_at = signalled_at or time.monotonic()
                    if n_envs > 1 or time.monotonic() - signalled_at > STOP_GRACE_SECONDS:
                        train_seconds += time.perf_counter() - tick
                        checkpoint()
                        raise Stopped(stop.name, step=step, checkpoint=run.last_checkpoint, run_dir=run.path,
                                      phase="mid-episode; the resume starts a new episode")
        bar.stop()
        train_seconds += time.perf_counter() - tick
        checkpoint()  # a later resume (with a larger total_steps) starts a new episode
        envs.close()

        # The weights to return: the last ones or, with trainer.restore_best, the best periodically evaluated
        # ones if they beat the last weights on the same selection episodes. The final evaluation then plays
        # other, held-out episodes (seeds seed + 20000, ...), so selecting does not inflate it.
        final_seed, restored, last = cfg.seed + 20_000, False, None
        if cfg.trainer.restore_best and best is not None:
            last_selection = greedy_returns(agent, args.env_id, args.eval_episodes, eval_seed,
                                            args.max_episode_steps)[0]
            if best["mean_return"] > last_selection:
                last = greedy_returns(agent, args.env_id, args.final_eval_episodes, final_seed,
                                      args.max_episode_steps)
                agent.q_network.load_state_dict(best["q_network"])
                restored = True
        mean, std = greedy_returns(agent, args.env_id, args.final_eval_episodes, final_seed,
                                   args.max_episode_steps)
        last = last or (mean, std)
        log.write({"kind": "eval", "step": step, "mean_return": mean, "std_return": std, "final": True})
    finally:
        bar.stop()
        log.close()
    run.save_model(agent.q_network, name=cfg.model.name, kwargs=cfg.model.builder_kwargs(), context=context,
                   task="dqn", task_kwargs=cfg.task.builder_kwargs(),
                   info={"task_type": "rl", "env_id": args.env_id, "max_episode_steps": args.max_episode_steps,
                         "obs_shape": list(obs_shape), "num_actions": num_actions})
    run.save_results({
        "eval": {"mean_return": mean, "std_return": std, "episodes": args.final_eval_episodes},
        "last_weights_eval": {"mean_return": last[0], "std_return": last[1]},
        "restored_best_step": best["step"] if restored else None,
        "seconds": time.perf_counter() - started, "train_seconds": train_seconds, "env_steps": step,
        "episodes": episode, "updates": updates, "first_reach": first_reach, "device": str(device)})
    return run.path


@torch.no_grad()
def record_gif(q_network: nn.Module, env_id: str, path: str | Path, seed: int = 0, fps: int = 30) -> Path:
    """One greedy episode rendered (``rgb_array``) into an animated GIF at ``path``."""
    from PIL import Image

    path = Path(path)
    if path.suffix.lower() != ".gif":
        raise DeepfoundryError(f"--record writes a GIF; received {str(path)!r} (use a name ending in .gif)")
    import gymnasium as gym

    env = make_env(env_id, render_mode="rgb_array")
    obs, _ = env.reset(seed=seed)
    try:
        frames, done = [Image.fromarray(env.render())], False
    except gym.error.DependencyNotInstalled as exc:
        raise DeepfoundryError(f"--record cannot render {env_id!r}: {exc}") from None
    while not done:
        action = int(q_network(torch.as_tensor(np.asarray(obs)).unsqueeze(0)).argmax(dim=1))
        obs, _, terminated, truncated, _ = env.step(action)
        frames.append(Image.fromarray(env.render()))
        done = terminated or truncated
    env.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    return path
