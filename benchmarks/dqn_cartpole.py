"""DQN on CartPole-v1: deepfoundry's `dqn-cartpole` recipe beside Stable-Baselines3 DQN with the rl-zoo
hyperparameters of ../shared/anchors/dqn_cartpole_sb3.py, same seeds, one run, one torch thread each.

SB3 (the anchor's settings): 50k steps, lr 2.3e-3, batch 64, buffer 100k, learning starts 1k, target
update every 10 steps, train freq 256 with 128 gradient steps, epsilon 1 -> 0.04 over 16% of the run,
MLP [256, 256]. Both sides are probed the same way: every 2,500 environment steps a 10-episode greedy
evaluation (episode seeds 10000+seed, +1, ...; its time is excluded from the training clock), recording
the first step and training seconds at which its mean reaches 475; training continues to 50k steps (the
anchor script stops at the first hit; here both run to the end so the final weights can be judged).
Then a 20-episode greedy evaluation of the weights each run returns, on held-out episodes (seeds
20000+seed, ...). For SB3 those are its weights
after 50k steps; for deepfoundry they are what `deepfoundry.train` saves in RUN/model.safetensors, and
the table says whether they are the last weights or the best periodically evaluated ones (reported
separately as "last-weights mean").

All runs go at the same time, each in its own single-threaded process (``--workers``, default 10 =
5 seeds x 2 sides), so both sides see the same machine load; on a busy machine the training
seconds are inflated alike for both, and the ratios are what to compare.

``--quick``: 1 seed, 10k environment steps each side (``task.total_steps=10000`` for ours), 2 workers:
smoke figures; 475 is seldom reached that early, so the times to it may be missing.

usage: python benchmarks/dqn_cartpole.py [--seeds 5] [--only ours|sb3] [--workers 10] [--set key=value ...] [--quick]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch
import yaml

from _common import print_table, summary_row, write_result
import deepfoundry

STEPS, EVAL_EVERY, TARGET = 50_000, 2_500, 475.0


def greedy_mean(predict, episodes: int, seed: int) -> float:
    """Mean undiscounted return of ``predict(obs) -> action`` over seeded CartPole episodes."""
    import gymnasium as gym

    env, returns = gym.make("CartPole-v1"), []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        total, done = 0.0, False
        while not done:
            obs, r, term, trunc, _ = env.step(predict(obs))
            total, done = total + float(r), term or trunc
        returns.append(total)
    return float(np.mean(returns))


def sb3(seed: int, steps: int = STEPS) -> dict:
    torch.set_num_threads(1)
    import gymnasium as gym
    from stable_baselines3 import DQN
    from stable_baselines3.common.callbacks import BaseCallback

    model = DQN("MlpPolicy", gym.make("CartPole-v1"), learning_rate=2.3e-3, batch_size=64, buffer_size=100_000,
                learning_starts=1000, gamma=0.99, target_update_interval=10, train_freq=256, gradient_steps=128,
                exploration_fraction=0.16, exploration_final_eps=0.04, policy_kwargs=dict(net_arch=[256, 256]),
                seed=seed, verbose=0, device="cpu")

    def predict(obs):
        return int(model.predict(obs, deterministic=True)[0])

    class Probe(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.hit, self.eval_s, self.curve = None, 0.0, []
            self.t0 = time.perf_counter()

        def _on_step(self) -> bool:
            if self.num_timesteps % EVAL_EVERY == 0:
                t = time.perf_counter()
                mean = greedy_mean(predict, 10, 10_000 + seed)
                self.eval_s += time.perf_counter() - t
                self.curve.append(mean)
                if mean >= TARGET and self.hit is None:
                    self.hit = (self.num_timesteps, time.perf_counter() - self.t0 - self.eval_s)
            return True

    probe = Probe()
    model.learn(steps, callback=probe)
    train_s = time.perf_counter() - probe.t0 - probe.eval_s
    return {"seed": seed, "first_steps": probe.hit[0] if probe.hit else None,
            "first_seconds": round(probe.hit[1], 2) if probe.hit else None,
            "train_seconds": round(train_s, 2), "final_mean": greedy_mean(predict, 20, 20_000 + seed),
            "last_weights_mean": None, "returned": f"last ({steps // 1000}k)", "curve": probe.curve}


def ours(seed: int, overrides: dict) -> dict:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        run = deepfoundry.train("dqn-cartpole", overrides={"seed": seed, "trainer.progress": False,
                                                           "trainer.report": False,
                                                           "trainer.threads": 1, **overrides}, out=f"{tmp}/run")
        r = run.results
        records = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
        curve = [e["mean_return"] for e in records if e["kind"] == "eval" and not e.get("final")]
    hit = r["first_reach"]
    best = r.get("restored_best_step")
    return {"seed": seed, "first_steps": hit["env_steps"] if hit else None,
            "first_seconds": hit["train_seconds"] if hit else None, "train_seconds": round(r["train_seconds"], 2),
            "final_mean": r["eval"]["mean_return"], "last_weights_mean": r["last_weights_eval"]["mean_return"],
            "returned": f"best evaluated ({best})" if best is not None else "last (50k)", "curve": curve}


def median(values: list) -> float | None:
    """Median with a run that never reached the target counted as infinitely slow."""
    vals = [float("inf") if v is None else v for v in values]
    m = statistics.median(vals)
    return None if m == float("inf") else m


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--only", choices=["ours", "sb3"], default=None)
    parser.add_argument("--workers", type=int, default=10, help="runs at a time (each one torch thread)")
    parser.add_argument("--set", action="append", default=[], help="override of our recipe, key=value (YAML)")
    parser.add_argument("--quick", action="store_true", help="1 seed, 10k steps each side, 2 workers (smoke)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    steps = STEPS
    if args.quick:
        steps, args.seeds, args.workers = 10_000, 1, 2
        overrides["task.total_steps"] = steps
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    names = {"sb3": "Stable-Baselines3 DQN (rl-zoo)", "ours": "deepfoundry dqn-cartpole"}
    jobs = [(side, seed) for seed in seeds for side in ("sb3", "ours") if args.only in (None, side)]
    # SB3 and ours side by side in single-threaded processes (the same machine load for both)
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = [pool.submit(sb3, seed, steps) if side == "sb3" else pool.submit(ours, seed, overrides)
                   for side, seed in jobs]
        done = [f.result() for f in futures]
    sides: dict[str, list[dict]] = {}
    for (side, _), result in zip(jobs, done):
        sides.setdefault(names[side], []).append(result)
    rows, per_seed = [], []
    for name, results in sides.items():
        for r in results:
            print(f"{name} seed {r['seed']}: first >= {TARGET:g} at {r['first_steps']} steps, "
                  f"{r['first_seconds']} s; final mean {r['final_mean']:.1f} ({r['returned']}; last weights "
                  f"{r['last_weights_mean']}); {r['train_seconds']} s training; evals {r['curve']}")
            per_seed.append({"side": name, **{k: v for k, v in r.items() if k != "curve"}})
        rows.append({"agent": name, "seeds": len(results),
                     "median steps to 475": median([r["first_steps"] for r in results]),
                     "median s to 475": median([r["first_seconds"] for r in results]),
                     "reached": sum(r["first_steps"] is not None for r in results),
                     "final mean min": min(r["final_mean"] for r in results),
                     "final mean median": statistics.median(r["final_mean"] for r in results),
                     f"median s ({steps // 1000}k)": statistics.median(r["train_seconds"] for r in results)})
    print_table(rows)
    print_table([{k: ("-" if v is None else v) for k, v in r.items()} for r in per_seed])
    ratios = {}
    if len(rows) == 2 and all(rows[i][k] for i in (0, 1) for k in ("median steps to 475", "median s to 475")):
        ratios = {k: rows[1][k] / rows[0][k] for k in ("median steps to 475", "median s to 475")}
        print("deepfoundry / SB3: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()) + " (target < 1)")
    if args.only is None and args.first_seed == 0:
        by = {("sb3" if "Stable" in r["agent"] else "ours"): r for r in rows}
        summary = [summary_row(f"{key} (lower is better)", by["ours"][key], by["sb3"][key],
                               "Stable-Baselines3 DQN", "ratio < 1",
                               None if not (by["ours"][key] and by["sb3"][key]) else by["ours"][key] < by["sb3"][key])
                   for key in ("median steps to 475", "median s to 475")]
        summary.append(summary_row(f"median final greedy mean return, {steps // 1000}k steps, 20 held-out episodes "
                                   "(higher is better)", by["ours"]["final mean median"],
                                   by["sb3"]["final mean median"], "Stable-Baselines3 DQN"))
        path = write_result("dqn_cartpole", {"steps": steps, "eval_every": EVAL_EVERY, "target": TARGET,
                                             "overrides": overrides, "table": rows, "ratios": ratios,
                                             "per_seed": per_seed,
                                             "curves": {n: [r["curve"] for r in res] for n, res in sides.items()}},
                            quick=args.quick, summary=summary)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
