"""Federated runs (``deepfoundry federate``): the global model's validation curves per round, and the
clients' weighted training loss (and, with client DP-SGD, the largest client epsilon) per round."""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from .html import NO_DATA, embed_figure, html_table
from .sections import SECTIONS, records

if TYPE_CHECKING:
    from ..api import Run


@SECTIONS.register("rounds")
def rounds_section(run: "Run", plots: Path, data_root: str | None) -> list[tuple[str, str]]:
    """Federated rounds: val loss / accuracy of the global model and the clients' train loss per round."""
    rows = records(run, "round")
    if not rows:
        return [("Federated rounds", NO_DATA)]
    x = [r["round"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    for key in ("train_loss", "val_loss"):
        left.plot(x, [r.get(key, math.nan) for r in rows], marker="o", label=key)
    left.set(xlabel="round", ylabel="loss", title="Loss per round")
    left.legend()
    scores = [k for k in ("val_accuracy", "val_r2", "val_f1_macro") if any(k in r for r in rows)]
    for key in scores:
        right.plot(x, [r.get(key, math.nan) for r in rows], marker="o", label=key)
    right.set(xlabel="round", title="Global model on val")
    if scores:
        right.legend()
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fed = run.results.get("federated") or {}
    facts = [[k, str(fed[k])] for k in ("clients", "rounds", "strategy", "proximal_mu", "partition", "local_epochs",
                                         "client_samples", "framework") if fed.get(k) is not None]
    table = html_table(["round", *[k for k in ("train_loss", "val_loss", *scores, "epsilon") if any(k in r for r in rows)]],
                       [[r["round"], *[r.get(k, "") for k in ("train_loss", "val_loss", *scores, "epsilon")
                                       if any(k in q for q in rows)]] for r in rows], "rounds")
    return [("Federated rounds", html_table([], facts, "facts") + embed_figure(fig, plots, "rounds") + table)]
