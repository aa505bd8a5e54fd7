"""GAN and VAE sections (``"gan"``, ``"vae"``) and image grids.

``save_grid`` (a PNG file of images in [0, 1]) lives in :mod:`deepfoundry.generative`, whose training
callback writes one per epoch; it is re-exported here. ``grid_array`` is the same grid as an array for
``imshow``.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..generative import fixed_labels, save_grid, slerp, to_pixels
from .html import NO_DATA, embed_figure, html_table
from .sections import SECTIONS, records

if TYPE_CHECKING:
    from ..api import Run

__all__ = ["grid_array", "save_grid"]


def grid_array(images: torch.Tensor, nrow: int = 8) -> np.ndarray:
    """Images ``(N, C, H, W)`` in [0, 1] as one grid, an (H, W) or (H, W, 3) array for ``imshow``."""
    from torchvision.utils import make_grid

    grid = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=2, pad_value=0.5)
    return grid[0].numpy() if images.shape[1] == 1 else grid.permute(1, 2, 0).numpy()


def epoch_grids_section(run: "Run", plots: Path, most: int = 6) -> str:
    """The per-epoch sample grids (up to ``most``, evenly spaced, always the first and the last)."""
    from PIL import Image

    files = sorted((run.path / "samples").glob("epoch_*.png"))
    if not files:
        return NO_DATA
    picks = sorted({round(i) for i in np.linspace(0, len(files) - 1, min(most, len(files)))})
    fig, axes = plt.subplots(1, len(picks), figsize=(2.6 * len(picks), 2.9), squeeze=False, layout="constrained")
    for ax, i in zip(axes[0], picks):
        ax.imshow(np.asarray(Image.open(files[i])), cmap="gray")
        ax.set_title(f"epoch {int(files[i].stem.split('_')[1])}", fontsize=9)
        ax.axis("off")
    fig.suptitle("Samples from the same noise after each epoch")
    return embed_figure(fig, plots, "samples_per_epoch")


def grid_figure_html(images: torch.Tensor, plots: Path, name: str, title: str, nrow: int = 8) -> str:
    """Images ``(N, C, H, W)`` in [0, 1] as one titled grid figure, embedded."""
    arr = grid_array(images, nrow)
    fig, ax = plt.subplots(figsize=(min(9, max(6.5, 0.55 * nrow + 1)),
                                    min(9, 0.55 * math.ceil(len(images) / nrow) + 0.8)), layout="constrained")
    ax.imshow(arr, cmap="gray", vmin=0, vmax=1)
    ax.axis("off")
    ax.set_title(title, fontsize=10)
    return embed_figure(fig, plots, name)


def _final_samples_html(model: torch.nn.Module, plots: Path) -> str:
    gen = torch.Generator().manual_seed(0)
    if getattr(model, "conditional", False):
        labels = fixed_labels(model.num_classes, 8)
        return grid_figure_html(model.sample(len(labels), labels=labels, generator=gen), plots, "samples",
                                "Samples of the final model, one row per class", nrow=8)
    return grid_figure_html(model.sample(64, generator=gen), plots, "samples", "Samples of the final model")


@SECTIONS.register("gan")
def gan(run: "Run", plots: Path, data_root: str | None) -> list[tuple[str, str]]:
    """G/D losses and D's outputs over training, samples per epoch, final samples, collapse warnings."""
    task = run.task
    steps = records(run, "gan")
    if steps:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
        x = [r["step"] for r in steps]
        ax1.plot(x, [r["d_loss"] for r in steps], label="D loss")
        ax1.plot(x, [r["g_loss"] for r in steps], label="G loss")
        ax1.set(xlabel="step", ylabel="loss", title=f"Losses ({task.loss}), training batches")
        ax1.legend()
        ax2.plot(x, [r["d_real"] for r in steps], label="D(x), real")
        ax2.plot(x, [r["d_fake"] for r in steps], label="D(G(z)), generated")
        ax2.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax2.set(xlabel="step", ylabel="probability of real", ylim=(0, 1), title="Discriminator outputs")
        ax2.legend()
        curves = embed_figure(fig, plots, "gan_losses")
    else:
        curves = NO_DATA
    warnings = [[r["step"], r["message"]] for r in records(run, "warning")]
    return [("Generator and discriminator", curves + (html_table(["step", "warning"], warnings) if warnings else "")),
            ("Samples per epoch", epoch_grids_section(run, plots)),
            ("Samples", _final_samples_html(run.model.cpu().eval(), plots))]


@SECTIONS.register("vae")
@torch.no_grad()
def vae(run: "Run", plots: Path, data_root: str | None) -> list[tuple[str, str]]:
    """Reconstructions of test images, samples per epoch and of the final model, interpolations, and the
    2-D latent space coloured by class (2-D VAEs)."""
    model = run.model.cpu().eval()
    data = run.data(data_root)
    split = next((s for s in (data.test, data.val, data.train) if s.num_samples), None)
    sections = [("Samples per epoch", epoch_grids_section(run, plots)),
                ("Samples", _final_samples_html(model, plots))]
    if split is None:
        return sections + [("Reconstructions", NO_DATA)]
    x = to_pixels(split.x[:2000].float(), run.info.get("preprocess"))
    y = split.y[:2000] if model.conditional else None
    mu, _ = model.encode(x, y)
    recon = model.mean_image(model.decode(mu, y))
    rows = torch.cat([x[:8], recon[:8], x[8:16], recon[8:16]])  # each original above its reconstruction
    html = grid_figure_html(rows, plots, "reconstructions",
                            "Test images (rows 1, 3) and their reconstructions from mu (rows 2, 4)")
    sections.append(("Reconstructions", html))
    labels = None if not model.conditional else torch.arange(8) % model.num_classes
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(8, model.latent_dim, generator=gen) for _ in range(2))
    z = slerp(a, b, torch.linspace(0, 1, 10)).reshape(80, -1)
    inter = model.mean_image(model.decode(z, None if labels is None else labels.repeat_interleave(10)))
    sections.append(("Latent interpolations", grid_figure_html(inter, plots, "interpolations",
                                                                "Spherical interpolations between prior draws", nrow=10)))
    if model.latent_dim == 2:
        fig, ax = plt.subplots(figsize=(6, 5), layout="constrained")
        pts = ax.scatter(mu[:, 0].numpy(), mu[:, 1].numpy(), c=split.y[:2000].numpy(), cmap="tab10", s=4)
        fig.colorbar(pts, ax=ax, label="class")
        ax.set(xlabel="z1", ylabel="z2", title=f"Posterior means of {len(mu)} test images")
        sections.append(("Latent space", embed_figure(fig, plots, "latent_space")))
    else:
        sections.append(("Latent space", f"<p class='no-data'>the latent space has {model.latent_dim} dimensions; "
                                         f"train with --set model.latent_dim=2 for the scatter plot</p>"))
    return sections
