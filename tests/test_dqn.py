"""Deep Q-learning: replay buffer, epsilon schedule, TD target, a real CartPole run, resume, the task contract,
play, progress on stderr only, bad input."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from conftest import run_cli
import torch

import deepfoundry
import deepfoundry.rl.dqn as dqn
from deepfoundry import DeepfoundryError
from deepfoundry.config import apply_overrides, load_config, read_yaml, validate
from deepfoundry.engine.checkpoint import load_state, load_weights
from deepfoundry.engine.logging import JsonlWriter, StepProgress
from deepfoundry.engine.rundir import RunDirectory
from deepfoundry.registry import TASKS
from deepfoundry.rl.dqn import ReplayBuffer, greedy_returns, linear_schedule, td_target
from deepfoundry.rl.envs import atari_roms_available, make_env
from deepfoundry.rl.replay import NStep, PrioritizedReplayBuffer, SumTree
from deepfoundry.rl.task import DQNTask

QUIET = {"trainer.progress": False}
SMALL = {**QUIET, "model.hidden_sizes": [32, 32], "task.eval_every": 0, "task.final_eval_episodes": 3,
         "task.learning_starts": 100, "task.train_freq": 4, "task.gradient_steps": 1, "task.batch_size": 32,
         "task.n_step": 1}


def train(out: Path, overrides: dict[str, Any], recipe: str = "dqn-cartpole") -> deepfoundry.Run:
    """The DQN family's own loop, called as the API calls it: ``own_loop(cfg, RunDirectory, None) -> path``."""
    cfg = load_config(recipe, overrides)
    threads = torch.get_num_threads()
    path = TASKS.get(cfg.task.name).own_loop(cfg, RunDirectory(out), None)
    assert path == Path(out)
    assert torch.get_num_threads() == threads  # trainer.threads (1 in the recipe) applied to the run only
    return deepfoundry.load_run(path)


def resume(run_dir: Path, overrides: dict[str, Any] | None = None) -> deepfoundry.Run:
    """Continue ``run_dir`` from its checkpoint with its saved config (as ``deepfoundry train --resume``)."""
    cfg = validate(apply_overrides(read_yaml(run_dir / "config.yaml"), overrides))
    state = load_state(run_dir / "checkpoints" / "last.safetensors")
    return deepfoundry.load_run(DQNTask.own_loop(cfg, RunDirectory(run_dir), state))


def records(path: Path) -> list[dict[str, Any]]:
    """The records of a run directory's metrics.jsonl (or of a JSONL file)."""
    path = path / "metrics.jsonl" if path.is_dir() else path
    return [json.loads(line) for line in path.read_text().splitlines()]


class ToyEnv(gym.Env):
    """Vector states, 2 actions, reward 1 per step; ends by termination after ``terminate_at`` steps (or never)."""

    def __init__(self, terminate_at: int | None = None, pixels: bool = False) -> None:
        self.terminate_at, self.t = terminate_at, 0
        self.observation_space = (gym.spaces.Box(0, 255, (84, 84, 3), np.uint8) if pixels
                                  else gym.spaces.Box(-1.0, 1.0, (3,), np.float32))
        self.action_space = gym.spaces.Discrete(2)

    def _obs(self):
        if self.observation_space.dtype == np.uint8:
            return np.full((84, 84, 3), self.t % 255, np.uint8)
        return np.array([self.t / 10, 0.0, 1.0], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), 1.0, self.terminate_at is not None and self.t >= self.terminate_at, False, {}


for env_id, kwargs in {"DeepfoundryTruncated-v0": {}, "DeepfoundryTerminated-v0": {"terminate_at": 5},
                       "DeepfoundryPixels-v0": {"pixels": True}}.items():
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=ToyEnv, kwargs=kwargs, max_episode_steps=5)


def test_replay_buffer_wraps_around_and_samples_uniformly() -> None:
    buffer = ReplayBuffer(3, (2,))
    for i in range(5):  # 0, 1 are overwritten by 3, 4
        buffer.add(np.array([i, i]), i % 2, float(i), np.array([i + 1, i + 1]), i == 4)
    assert buffer.size == 3 and buffer.pos == 2
    assert buffer.obs[:, 0].tolist() == [3.0, 4.0, 2.0] and buffer.rewards.tolist() == [3.0, 4.0, 2.0]
    assert buffer.terminated.tolist() == [0.0, 1.0, 0.0] and buffer.actions.tolist() == [1, 0, 0]
    batch = buffer.sample(3000, np.random.default_rng(0))
    assert batch["obs"].shape == (3000, 2) and torch.equal(batch["next_obs"], batch["obs"] + 1)
    counts = torch.bincount(batch["rewards"].long(), minlength=5)[2:]
    assert counts.min() > 900  # each of the 3 stored transitions about 1000 times
    again = buffer.sample(3000, np.random.default_rng(0))
    assert torch.equal(again["obs"], batch["obs"])  # seeded


def test_sum_tree_prefix_search() -> None:
    tree = SumTree(5)  # 8 leaves
    tree.update(np.arange(5), np.array([1.0, 2.0, 3.0, 0.0, 4.0]))
    assert tree.total() == 10.0
    # cumulative: [0,1) -> 0, [1,3) -> 1, [3,6) -> 2, [6,10) -> 4 (leaf 3 has priority 0)
    assert tree.find(np.array([0.0, 0.99, 1.0, 2.99, 3.0, 5.99, 6.0, 9.99])).tolist() == [0, 0, 1, 1, 2, 2, 4, 4]
    tree.update(np.array([0]), np.array([5.0]))
    assert tree.total() == 14.0 and tree.find(np.array([4.5]))[0] == 0


def test_prioritized_replay_samples_by_priority_with_is_weights() -> None:
    buffer = PrioritizedReplayBuffer(4, (1,), alpha=1.0, eps=0.0)
    for i in range(4):
        buffer.add(np.array([i]), 0, float(i), np.array([i]), False)
    buffer.update_priorities(torch.arange(4), torch.tensor([1.0, 1.0, 2.0, 4.0]))  # P = 1/8, 1/8, 2/8, 4/8
    batch = buffer.sample(8000, np.random.default_rng(0), beta=1.0)
    freq = torch.bincount(batch["indices"], minlength=4).float() / 8000
    assert freq.tolist() == pytest.approx([0.125, 0.125, 0.25, 0.5], abs=0.02)
    # w_i = (N P(i))^-1 / max_j w_j: [2, 2, 1, 0.5] / 2
    weights = {int(i): float(w) for i, w in zip(batch["indices"], batch["weights"])}
    assert [weights[i] for i in range(4)] == pytest.approx([1.0, 1.0, 0.5, 0.25])
    assert torch.equal(batch["obs"][:, 0].long(), batch["indices"])  # rows match their slots
    state = buffer.state_dict()
    again = PrioritizedReplayBuffer(4, (1,), alpha=1.0, eps=0.0)
    again.load_state_dict(state)
    assert again.tree.total() == buffer.tree.total() == 8.0


def test_n_step_returns_by_hand() -> None:
    nstep = NStep(3, 0.5)
    assert nstep.push("s0", 0, 1.0, "s1", False, False) == []
    assert nstep.push("s1", 1, 2.0, "s2", False, False) == []
    # full window: R = 1 + 0.5 * 2 + 0.25 * 4 = 3, bootstrap from s3 with 0.5^3
    assert nstep.push("s2", 0, 4.0, "s3", False, False) == [("s0", 0, 3.0, "s3", False, 0.125)]
    # termination flushes every pending start with a shorter return and no bootstrap
    out = nstep.push("s3", 1, 8.0, "s4", True, False)
    assert out == [("s1", 1, 2.0 + 2.0 + 2.0, "s4", True, 0.125), ("s2", 0, 4.0 + 4.0, "s4", True, 0.25),
                   ("s3", 1, 8.0, "s4", True, 0.5)]
    assert NStep(1, 0.9).push("a", 0, 1.0, "b", False, True) == [("a", 0, 1.0, "b", False, 0.9)]


def test_options_train_together(tmp_path: Path) -> None:
    """Prioritised replay, 3-step returns, dueling head, soft updates and 4 vectorised copies on CartPole."""
    run = train(tmp_path / "options", {
        **SMALL, "task.total_steps": 800, "task.prioritized": True, "task.n_step": 3, "task.dueling": True,
        "task.tau": 0.05, "task.target_update": 1, "task.num_envs": 4, "task.checkpoint_every": 500,
        "task.final_lr_fraction": 0.1, "task.log_every": 100})
    r = run.results
    assert r["env_steps"] == 800 and r["updates"] == (800 - 100) // 4 and r["episodes"] > 4 * 3
    state = load_state(run.path / "checkpoints" / "last.safetensors")
    assert len(state["env_rng"]) == 4 and "priorities" in state["buffer"]
    discounts = state["buffer"]["discounts"]
    k = torch.log(discounts.double()) / np.log(0.99)  # gamma^k: k steps until the bootstrap
    assert torch.allclose(k, k.round(), atol=1e-4) and set(k.round().long().tolist()) == {1, 2, 3}
    assert (k.round() == 3).double().mean() > 0.5  # most transitions are full 3-step ones
    lrs = [t["lr"] for t in records(run.path) if t["kind"] == "train" and t["updates"] > 0]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 0.0023 * 0.4  # linear decay towards 10%
    resumed = resume(run.path, {"task.total_steps": 900})
    assert resumed.results["env_steps"] == 900


def test_report_of_an_rl_run(cartpole_run: deepfoundry.Run, capsys) -> None:
    code, out, err = run_cli(["report", str(cartpole_run.path)], capsys)
    assert code == 0, err
    page = (cartpole_run.path / "report.html").read_text()
    for title in ("Agent", "Episode return", "Q-values and loss"):
        assert f"<h2>{title}</h2>" in page
    assert page.count("data:image/png;base64") >= 2
    assert (cartpole_run.path / "plots" / "episode_return.png").stat().st_size > 5000
    assert (cartpole_run.path / "plots" / "q_values_loss.png").stat().st_size > 5000


@pytest.mark.skipif(not atari_roms_available(), reason="ale-py with its bundled ROMs is not installed")
def test_atari_pong_with_the_nature_cnn(tmp_path: Path) -> None:
    env = make_env("ALE/Pong-v5")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8 and 50 < obs.mean() < 200  # grey, not black
    env.close()
    run = train(tmp_path / "pong", {**QUIET, "task.total_steps": 64, "task.learning_starts": 32,
                                    "task.train_freq": 16, "task.batch_size": 8,
                                    "task.final_eval_episodes": 1, "task.eval_every": 0,
                                    "task.buffer_size": 64, "task.max_episode_steps": 20,
                                    "task.final_epsilon": 1.0},  # random play: few CNN passes
                recipe="dqn-pong")
    assert run.results["env_steps"] == 64 and run.results["updates"] == 2
    batch = run.task.encode_inputs(obs)
    assert batch.shape == (1, 4, 84, 84) and batch.dtype == torch.uint8
    assert run.task.predict(batch).shape == (1, 6)


def test_epsilon_schedule() -> None:
    assert linear_schedule(1.0, 0.05, 1000, 0) == 1.0
    assert linear_schedule(1.0, 0.05, 1000, 500) == pytest.approx(0.525)
    assert linear_schedule(1.0, 0.05, 1000, 1000) == pytest.approx(0.05)
    assert linear_schedule(1.0, 0.05, 1000, 10_000) == pytest.approx(0.05)


def test_td_target_by_hand() -> None:
    rewards, terminated = torch.tensor([1.0, 1.0, 0.5]), torch.tensor([0.0, 1.0, 0.0])
    next_q_target = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 0.0]])
    next_q_online = torch.tensor([[3.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    # DQN: r + 0.9 * max_a' Q_target(s', a'); the terminated row does not bootstrap
    assert td_target(rewards, terminated, next_q_target, 0.9).tolist() == pytest.approx([2.8, 1.0, 5.0])
    # Double DQN: the online net picks a' = [0, 1, 1], the target net rates it: [1, 4, 0]
    assert td_target(rewards, terminated, next_q_target, 0.9, next_q_online).tolist() == pytest.approx([1.9, 1.0, 0.5])


@pytest.mark.parametrize("env_id, expected", [("DeepfoundryTruncated-v0", [0.0] * 5),
                                              ("DeepfoundryTerminated-v0", [0.0] * 4 + [1.0])])
def test_truncation_bootstraps_termination_does_not(tmp_path: Path, env_id: str, expected: list[float]) -> None:
    train(tmp_path / "run", {**SMALL, "task.env_id": env_id, "task.total_steps": 20})
    buffer = load_state(tmp_path / "run" / "checkpoints" / "last.safetensors")["buffer"]
    assert buffer["size"] == 20 and buffer["terminated"].tolist() == expected * 4
    assert buffer["next_obs"][4, 0].item() == pytest.approx(0.5)  # the real last state, not the reset one


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory: pytest.TempPathFactory) -> deepfoundry.Run:
    """A real 3,000-step CartPole run with the recipe's hyperparameters (one-step returns, constant lr)."""
    return train(tmp_path_factory.mktemp("runs") / "cartpole", {
        **QUIET, "task.total_steps": 3000, "task.eval_every": 0, "task.final_eval_episodes": 10, "task.n_step": 1,
        "task.final_lr_fraction": 1.0})


def test_short_cartpole_run_beats_random(cartpole_run: deepfoundry.Run) -> None:
    env = gym.make("CartPole-v1")
    random_returns = []
    for i in range(10):
        env.reset(seed=10_000 + i)
        env.action_space.seed(i)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total, done = total + reward, terminated or truncated
        random_returns.append(total)
    results = cartpole_run.results
    assert results["env_steps"] == 3000 and results["eval"]["episodes"] == 10
    assert results["eval"]["mean_return"] > max(100.0, 3 * np.mean(random_returns))
    for name in ("config.yaml", "metrics.jsonl", "model.safetensors", "model.json", "results.json",
                 "checkpoints/last.safetensors"):
        assert (cartpole_run.path / name).exists(), name
    kinds = {json.loads(line)["kind"] for line in (cartpole_run.path / "metrics.jsonl").read_text().splitlines()}
    assert {"episode", "eval", "train"} <= kinds
    run = deepfoundry.load_run(cartpole_run.path)  # a finished run opens like any other
    assert run.info["task_type"] == "rl" and run.info["env_id"] == "CartPole-v1"
    mean, _ = greedy_returns(run.task.model, "CartPole-v1", 10, 20_000)  # held-out final episodes
    assert mean == pytest.approx(results["eval"]["mean_return"])  # the saved weights are the evaluated ones
    assert results["device"] == str(next(run.task.model.parameters()).device) == "cpu"  # where it trained


def test_task_contract_of_a_trained_run(cartpole_run: deepfoundry.Run, tmp_path: Path) -> None:
    task = cartpole_run.task
    assert isinstance(task, DQNTask) and task.report_sections == ("rl",) and task.own_loop is dqn.train_rl
    env = make_env("CartPole-v1")
    observations = [env.reset(seed=s)[0] for s in range(5)]
    one = task.encode_inputs(observations[0])  # a single observation gets a batch dimension
    batch = task.encode_inputs(observations)   # a list of observations
    assert one.shape == (1, 4) and batch.shape == (5, 4) and batch.dtype == torch.float32
    q_values = task.predict(batch)
    assert q_values.shape == (5, 2) and torch.equal(q_values, task.model(batch))
    rows = task.decode_outputs(q_values)
    assert len(rows) == 5 and set(rows[0]) == {"action", "q_values"} and len(rows[0]["q_values"]) == 2
    assert [r["action"] for r in rows] == q_values.argmax(dim=1).tolist() == task.predictions(q_values).tolist()
    assert json.loads(json.dumps(rows)) == rows  # JSON-ready
    for bad in ([1.0, 2.0], np.zeros((3, 5)), [[0.0] * 4, [0.0] * 3], "left"):
        with pytest.raises(DeepfoundryError) as exc:
            task.encode_inputs(bad)
        assert "\n" not in str(exc.value) and "(4,)" in str(exc.value), str(exc.value)
    with pytest.raises(DeepfoundryError, match="own loop"):
        task.training_step(None)
    mean, std = greedy_returns(task.model, "CartPole-v1", 3, 5)
    assert task.play(episodes=3, seed=5) == {"env_id": "CartPole-v1", "episodes": 3, "mean_return": mean,
                                             "std_return": std}
    with pytest.raises(DeepfoundryError, match="--record writes a GIF"):
        task.play(episodes=1, record=tmp_path / "episode.mp4")


def test_cli_play_json(cartpole_run: deepfoundry.Run, capsys, tmp_path: Path) -> None:
    code, out, err = run_cli(["play", str(cartpole_run.path), "--episodes", "3", "--seed", "5", "--json"], capsys)
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["episodes"] == 3 and result["mean_return"] > 50 and result["std_return"] >= 0
    assert result["mean_return"] == pytest.approx(cartpole_run.task.play(3, 5)["mean_return"])
    pytest.importorskip("pygame", reason="--record renders CartPole with pygame (gymnasium[classic-control])")
    code, out, err = run_cli(["play", str(cartpole_run.path), "--episodes", "1", "--record",
                              str(tmp_path / "episode.gif")], capsys)
    assert code == 0, err
    assert (tmp_path / "episode.gif").stat().st_size > 1000


def test_resume_is_exact(tmp_path: Path, monkeypatch) -> None:
    overrides = {**SMALL, "task.total_steps": 1500, "task.checkpoint_every": 500, "task.eval_every": 250,
                 "task.eval_episodes": 2}  # the best evaluated weights travel in the checkpoint too
    saved: list[Path] = []
    original = dqn.save_state

    def keep_copies(path, state):  # keep every intermediate checkpoint, as if the run had been killed there
        original(path, state)
        saved.append(Path(shutil.copy(path, tmp_path / f"ckpt{len(saved)}.safetensors")))

    monkeypatch.setattr(dqn, "save_state", keep_copies)
    full = train(tmp_path / "full", overrides)
    monkeypatch.setattr(dqn, "save_state", original)
    assert len(saved) >= 3  # two mid-run (at episode ends) and the final one
    interrupted = tmp_path / "interrupted"
    (interrupted / "checkpoints").mkdir(parents=True)
    shutil.copy(full.path / "config.yaml", interrupted / "config.yaml")
    shutil.copy(saved[0], interrupted / "checkpoints" / "last.safetensors")
    # killed after the checkpoint: metrics.jsonl already holds records past it, which the resume drops
    shutil.copy(full.path / "metrics.jsonl", interrupted / "metrics.jsonl")
    ckpt_step = load_state(saved[0])["step"]
    assert 500 <= ckpt_step < 1500 and max(r["step"] for r in records(interrupted)) > ckpt_step
    resumed = resume(interrupted)
    a, b = load_weights(full.path / "model.safetensors"), load_weights(resumed.path / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.results["eval"] == full.results["eval"]

    def timeless(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k != "train_seconds"} for r in rows]

    assert timeless(records(resumed.path)) == timeless(records(full.path))  # each record once, in order


def test_metrics_through_the_engine_writer_and_no_stdout(tmp_path: Path, capsys) -> None:
    """Records go to metrics.jsonl; progress goes to stderr through rich, and only when trainer.progress is on."""
    tiny = {**SMALL, "task.total_steps": 200, "task.eval_every": 100, "task.eval_episodes": 1,
            "task.final_eval_episodes": 1, "task.log_every": 50}
    quiet = train(tmp_path / "quiet", tiny)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    kinds = [r["kind"] for r in records(quiet.path)]
    assert kinds.count("train") == 4 and kinds.count("eval") == 3 and records(quiet.path)[-1]["final"] is True
    train(tmp_path / "shown", {**tiny, "trainer.progress": True, "trainer.device": "cuda:0"})
    out = capsys.readouterr()
    assert out.out == ""
    lines = out.err.strip().splitlines()
    assert lines[0] == "note: DQN trains on the CPU; trainer.device=cuda:0 is not used"
    assert [line.split()[:4] for line in lines[1:]] == [["step", "100", "eval", "mean"],
                                                        ["step", "200", "eval", "mean"]]
    assert json.loads((tmp_path / "shown" / "results.json").read_text())["device"] == "cpu"


def test_jsonl_writer_and_step_progress(tmp_path: Path, capsys) -> None:
    with JsonlWriter(tmp_path / "sub" / "m.jsonl") as log:
        log.write({"step": 1, "loss": 0.5})
        log.write({"step": 2, "loss": float("nan")})
    with JsonlWriter(tmp_path / "sub" / "m.jsonl") as log:  # appends
        log.write({"step": 3})
    assert [r["step"] for r in records(tmp_path / "sub" / "m.jsonl")] == [1, 2, 3]
    with pytest.raises(ValueError, match="closed"):
        log.write({"step": 4})
    with StepProgress(10, enabled=False) as bar:
        bar.update(5)
        bar.print("hidden")
    with StepProgress(10, enabled=True) as bar:  # not a terminal: no bar, the messages only
        assert not bar.active
        bar.update(5)
        bar.print("shown")
    out = capsys.readouterr()
    assert out.out == "" and out.err == "shown\n"


def test_unknown_task_key_names_it(tmp_path: Path) -> None:
    with pytest.raises(DeepfoundryError, match=r"^unknown config key 'task.gama' for task 'dqn'"):
        train(tmp_path / "a", {"task.gama": 0.9})
    with pytest.raises(DeepfoundryError, match=r"config key 'task.total_steps'"):
        train(tmp_path / "b", {"task.total_steps": -1})
    info = {"obs_shape": [4], "num_actions": 2, "env_id": "CartPole-v1"}  # the task checks them too
    with pytest.raises(DeepfoundryError, match=r"^unknown config key 'task.gama' for task 'dqn'"):
        TASKS.build("dqn", {"gama": 0.9}, context={"model": torch.nn.Linear(4, 2), "info": info}, key="task")


@pytest.mark.parametrize("overrides, pattern", [
    ({"task.env_id": "CartPol-v1"}, r"unknown environment id 'CartPol-v1' \(did you mean 'CartPole-v1'"),
    ({"task.env_id": "Pendulum-v1"}, r"'Pendulum-v1' has a continuous action space .* DQN needs discrete actions"),
    ({"task.env_id": "DeepfoundryPixels-v0"}, r"pixel observations of shape \(4, 84, 84\); the MLP Q-network "
                                              r"needs vector states: use --set model.name=qnet_cnn"),
])
def test_bad_input_is_one_line_error(overrides: dict, pattern: str, capsys, tmp_path: Path) -> None:
    args = ["train", "dqn-cartpole", "--out", str(tmp_path / "r")]
    for k, v in overrides.items():
        args += ["--set", f"{k}={v}"]
    code, _, err = run_cli(args, capsys)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    import re

    assert re.search(pattern, lines[0]), lines[0]


def test_pixel_environment_with_the_nature_cnn(tmp_path: Path) -> None:
    run = train(tmp_path / "pixels", {**SMALL, "model.name": "qnet_cnn", "model.hidden_sizes": None,
                                      "task.env_id": "DeepfoundryPixels-v0", "task.total_steps": 120,
                                      "task.final_eval_episodes": 1, "task.dueling": True})
    assert run.results["eval"]["mean_return"] == 5.0
    rows = run.task.predict_rows(np.zeros((2, 4, 84, 84), np.uint8))
    assert len(rows) == 2 and len(rows[0]["q_values"]) == 2


@pytest.mark.slow
def test_cartpole_recipe_reaches_475(tmp_path: Path) -> None:
    run = train(tmp_path / "cartpole", QUIET)
    assert run.results["first_reach"] is not None
    assert run.results["eval"]["mean_return"] >= 475
