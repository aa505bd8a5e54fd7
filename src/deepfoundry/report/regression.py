"""Regression section (``"regression"``): predicted against true values on the test split."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt

from .html import NO_DATA, embed_figure
from .sections import SECTIONS

if TYPE_CHECKING:
    from ..api import Run


def regression_section(run: "Run", plots: Path, data_root: str | None) -> str:
    """Predicted against true values on the test split, in the target's original units."""
    split = run.data(data_root).test
    if split.num_samples == 0:
        return NO_DATA
    mean, std = float(run.info.get("target_mean", 0.0)), float(run.info.get("target_std", 1.0))
    true = (split.y.float() * std + mean).numpy().ravel()
    pred = run.task.to("cpu").predict(split.x).numpy().ravel()  # predict() already returns original units
    fig, ax = plt.subplots(figsize=(5, 5), layout="constrained")
    ax.scatter(true, pred, s=12, alpha=0.7)
    lo, hi = float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="perfect prediction")
    r2 = run.results.get("test", {}).get("r2")
    ax.set(xlabel="true value", ylabel="predicted value",
           title="Predicted vs true (test)" + (f", R² = {r2:.3f}" if r2 is not None else ""))
    ax.legend()
    return embed_figure(fig, plots, "pred_vs_true")


@SECTIONS.register("regression")
def regression(run: "Run", plots: Path, data_root: str | None) -> list[tuple[str, str]]:
    """Predicted against true values on the test split (scatter with the diagonal, R² in the title)."""
    return [("Predicted vs true", regression_section(run, plots, data_root))]
