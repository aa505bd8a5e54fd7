"""The sections every run can show: the summary, learning curves, per-layer gradient norms and, on
request, the first convolution's filters and feature maps; and the image-grid figure they share.
"""
from __future__ import annotations

import html
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.ticker import MaxNLocator
from torch import nn

from ..config import dump_config
from .html import NO_DATA, embed_figure, html_table
from .sections import SECTIONS, records

if TYPE_CHECKING:
    from ..api import Run


def duration(seconds: float | None) -> str:
    """``75.2`` -> ``'1 min 15 s'``; ``'unknown'`` for None."""
    if seconds is None:
        return "unknown"
    minutes, sec = divmod(float(seconds), 60)
    return f"{int(minutes)} min {sec:.0f} s" if minutes else f"{sec:.1f} s"


def summary_section(run: "Run") -> str:
    """Recipe, model, data, device, duration and stop reason; final val/test scalars; the resolved config."""
    cfg, res = run.config, run.results
    epochs = res.get("epochs_run")
    facts = [("recipe", cfg.name), ("model", cfg.model.name), ("dataset", cfg.data.name),
             ("task", cfg.task.name), ("device", res.get("device", "unknown")),
             ("epochs run", f"{epochs if epochs is not None else 'unknown'} of {cfg.trainer.epochs}"),
             ("wall time", duration(res.get("seconds"))),
             ("stop reason", res.get("stop_reason") or ("finished all epochs" if res else "unknown"))]
    out = html_table([], [list(f) for f in facts], "facts")
    splits = [s for s in ("val", "test") if res.get(s)]
    names = [k for s in splits for k, v in res[s].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    names = list(dict.fromkeys(names))
    rows = [[k] + [float(res[s][k]) if k in res[s] else "" for s in splits] for k in names]
    out += "<h3>Final metrics</h3>" + (html_table(["metric"] + splits, rows, "metrics") if rows else NO_DATA)
    return out + f"<h3>Config</h3><pre>{html.escape(dump_config(cfg))}</pre>"


def learning_curves_section(run: "Run", plots: Path) -> str:
    """Losses per epoch, the other validation metrics per epoch, and the learning rate (log scale)."""
    epochs, steps = run.history, records(run, "step")
    if not epochs:
        return NO_DATA
    x = [r["epoch"] for r in epochs]
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    for key in ("train_loss", "val_loss"):
        if any(key in r for r in epochs):
            ax.plot(x, [r.get(key, math.nan) for r in epochs], marker="o", label=key)
    ax.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    out = embed_figure(fig, plots, "loss")

    secondary = ("val_precision_", "val_recall_", "val_f1_weighted", "val_top")  # in metrics.jsonl, not plotted
    metrics = [k for k in dict.fromkeys(k for r in epochs for k in r)
               if k.startswith("val_") and k != "val_loss" and not k.startswith(secondary)]
    values = {k: [r.get(k, math.nan) for r in epochs] for k in metrics}
    scores = [k for k in metrics if np.nanmax(np.abs(values[k])) <= 1.0]  # accuracy, F1, R2... share one panel
    panels = ([scores] if scores else []) + [[k] for k in metrics if k not in scores]
    if panels:
        fig, axes = plt.subplots(1, len(panels), figsize=(min(4.5 * len(panels), 14), 4), squeeze=False,
                                 layout="constrained")
        for ax, keys in zip(axes[0], panels):
            for k in keys:
                ax.plot(x, values[k], marker="o", label=k)
            ax.set(xlabel="epoch", title=keys[0] if len(keys) == 1 else "Validation scores")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if len(keys) > 1:
                ax.legend(fontsize="small")
        out += embed_figure(fig, plots, "val_metrics")

    lr_steps, lr_epochs = ([(r["step"], r["lr"]) for r in rows if r.get("lr", 0) > 0] for rows in (steps, epochs))
    if not lr_epochs:  # e.g. tasks that step their own optimizers log no learning rate
        return out + "<p class='no-data'>no data (learning rate)</p>"
    fig, ax = plt.subplots(figsize=(7, 3.5), layout="constrained")
    if lr_steps:
        ax.plot(*zip(*lr_steps), label="per step")
    ax.plot(*zip(*lr_epochs), "o", label="end of epoch")
    ax.set(xlabel="step", ylabel="learning rate", yscale="log", title="Learning rate")
    ax.legend()
    return out + embed_figure(fig, plots, "lr")


@SECTIONS.register("curves")
def curves(run: "Run", plots: Path, data_root: str | None) -> list[tuple[str, str]]:
    """Learning curves: losses, validation metrics and the learning rate per epoch."""
    return [("Learning curves", learning_curves_section(run, plots))]


def gradient_section(grad_records: list[dict[str, Any]], plots: Path) -> str:
    """Per-layer gradient L2 norm over steps (log scale), legend ordered from input to output layer."""
    layers = list(dict.fromkeys(k for r in grad_records for k in r["grad_norms"]))  # named_parameters order
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(layers)))
    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    for layer, colour in zip(layers, colours):
        pts = [(r["step"], r["grad_norms"][layer]) for r in grad_records if layer in r["grad_norms"]]
        ax.plot(*zip(*pts), label=layer, color=colour)
    ax.set(xlabel="step", ylabel="gradient L2 norm", yscale="log", title="Per-layer gradient norms")
    fig.legend(title="input → output", fontsize="small", loc="outside right center")
    return ("<p>Each line is the L2 norm of one layer's gradient, ||dL/dW||₂, colour-coded from the input "
            "layer (dark) to the output layer (bright). Norms that shrink layer by layer towards the input "
            "mean vanishing gradients (early layers barely learn); norms that grow towards the input mean "
            "exploding gradients.</p>" + embed_figure(fig, plots, "grad_norms"))


# ----------------------------------------------------------------------------- images

def as_image(t: torch.Tensor) -> np.ndarray:
    """(C, H, W) -> an array for imshow, scaled to [0, 1]: RGB (H, W, 3) when C == 3, else the channel mean."""
    img = t.permute(1, 2, 0) if t.shape[0] == 3 else t.mean(dim=0)
    img = img - img.min()
    return (img / img.max().clamp_min(1e-12)).numpy()


def image_grid(panels: list[tuple[str, np.ndarray, str]], title: str) -> plt.Figure:
    """Images in a near-square grid; each panel is ``(label, image, colour map)``."""
    cols = math.ceil(math.sqrt(len(panels)))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.5 * rows + 0.4), squeeze=False,
                             layout="constrained")
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (label, img, cmap) in zip(axes.ravel(), panels):
        ax.imshow(img, cmap=None if img.ndim == 3 else cmap)
        ax.set_title(label, fontsize=7)
    fig.suptitle(title)
    return fig


def first_conv(model: nn.Module) -> nn.Conv2d | None:
    """The first ``nn.Conv2d`` in ``model.modules()`` order, or None."""
    return next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)


@torch.no_grad()
def feature_maps_section(run: "Run", conv: nn.Conv2d, plots: Path, data_root: str | None,
                         limit: int = 64) -> str:
    """The first convolution's filters and its output channels for the first test image (up to ``limit``)."""
    weight = conv.weight.detach().float().cpu()  # (out_channels, in_channels, kh, kw)
    filters = [(f"filter {i}", as_image(w), "gray") for i, w in enumerate(weight[:limit])]
    out = embed_figure(image_grid(filters, f"First convolution filters {tuple(weight.shape)}"), plots, "filters")
    data = run.data(data_root)
    split = next((s for s in (data.test, data.val, data.train) if s.num_samples), None)
    if split is None:
        return out + NO_DATA
    captured: list[torch.Tensor] = []
    handle = conv.register_forward_hook(lambda module, inputs, output: captured.append(output.detach()))
    try:
        run.model.cpu().eval()(split.x[:1].float())
    finally:
        handle.remove()
    maps = captured[0][0].float()  # (out_channels, H', W')
    panels = [("input", as_image(split.x[0].float()), "gray")]
    panels += [(f"channel {i}", as_image(m[None]), "viridis") for i, m in enumerate(maps[:limit - 1])]
    fig = image_grid(panels, f"Feature maps of the first convolution {tuple(maps.shape)}")
    return out + embed_figure(fig, plots, "feature_maps")
