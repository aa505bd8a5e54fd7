"""Reinforcement-learning section (``"rl"``, declared by the DQN task).

From ``metrics.jsonl``: the return of every training episode (and its moving average over 20
episodes) with the periodic greedy evaluations (mean +- std), the mean Q-value estimate
``mean_B Q(s, a)`` of the latest minibatch, and the TD loss, all over environment steps.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np

from .html import NO_DATA, embed_figure, html_table
from .sections import SECTIONS, records

if TYPE_CHECKING:
    from ..api import Run


def moving_average(x: np.ndarray, window: int) -> np.ndarray:
    """``m_t = mean(x_{t-w+1..t})`` over the available values (a shorter window at the start).

    >>> moving_average(np.array([1., 3., 5.]), 2)
    array([1., 2., 4.])
    """
    c = np.cumsum(np.insert(np.asarray(x, dtype=float), 0, 0.0))
    idx = np.arange(1, len(x) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


@SECTIONS.register("rl")
def rl(run: "Run", plots: Path, data_root: str | None) -> list[tuple[str, str]]:
    """Agent summary, episode returns (with greedy evaluations), Q-value estimates and TD loss over steps."""
    res = run.results
    reach = res.get("first_reach") or {}
    ev = res.get("eval", {})
    facts = [["environment", run.info.get("env_id")], ["environment steps", res.get("env_steps")],
             ["episodes", res.get("episodes")], ["gradient updates", res.get("updates")],
             ["training seconds (evaluation excluded)", res.get("train_seconds")],
             [f"final greedy mean return ({ev.get('episodes')} episodes)",
              f"{ev.get('mean_return', math.nan):.2f} +- {ev.get('std_return', math.nan):.2f}"],
             ["returned weights", "best evaluated, step " + str(res["restored_best_step"])
              if res.get("restored_best_step") is not None else "last"],
             ["first evaluation >= target", f"{reach['env_steps']} steps, {reach['train_seconds']} s"
              if reach else "not reached"]]
    sections = [("Agent", html_table([], facts, "facts"))]

    episodes, evals = records(run, "episode"), [r for r in records(run, "eval") if not r.get("final")]
    if episodes or evals:
        fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
        if episodes:
            x, y = [r["step"] for r in episodes], [r["return"] for r in episodes]
            ax.plot(x, y, ".", alpha=0.3, label="training episode")
            ax.plot(x, moving_average(np.array(y), 20), label="moving average (20 episodes)")
        if evals:
            x, m, s = (np.array([r[k] for r in evals]) for k in ("step", "mean_return", "std_return"))
            ax.errorbar(x, m, yerr=s, fmt="o-", capsize=3, label="greedy evaluation")
        ax.set(xlabel="environment step", ylabel="return", title="Episode return")
        ax.legend(fontsize="small")
        sections.append(("Episode return", embed_figure(fig, plots, "episode_return")))
    else:
        sections.append(("Episode return", NO_DATA))

    train = [r for r in records(run, "train") if r.get("loss") is not None and not math.isnan(r["loss"])]
    if train:
        fig, (ax_q, ax_l) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
        x = [r["step"] for r in train]
        ax_q.plot(x, [r["q_mean"] for r in train])
        ax_q.set(xlabel="environment step", ylabel="mean Q(s, a)", title="Q-value estimate (minibatch)")
        ax_l.plot(x, [r["loss"] for r in train])
        ax_l.set(xlabel="environment step", ylabel="TD loss", yscale="log", title="Loss")
        sections.append(("Q-values and loss", embed_figure(fig, plots, "q_values_loss")))
    else:
        sections.append(("Q-values and loss", NO_DATA))
    return sections
