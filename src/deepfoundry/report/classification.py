"""Classification sections: the test confusion matrix with per-class scores (``"confusion"``), and ROC /
precision-recall curves, the reliability diagram and the worst-predicted examples (``"classification"``).

The worst examples show each input in its own form, looked up by ``info["input_kind"]`` in
:data:`WORST_INPUTS` (image thumbnails, raw table rows, decoded text); kinds not listed get the table of
classes and probabilities alone.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..data.text import tokenizer_from_json
from ..engine.trainer import Trainer
from ..metrics import ECE_BINS, calibration_bins, expected_calibration_error, ranking_metrics, roc_pr_curves
from .curves import as_image, image_grid
from .html import NO_DATA, embed_figure, html_table
from .sections import SECTIONS

if TYPE_CHECKING:
    from ..api import Run

WORST_EXAMPLES = 16


def per_class_metrics(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class scores from a confusion matrix ``cm`` (rows: true class, columns: predicted), shape (C, C).

    ``precision = TP / (TP + FP)`` (column sum), ``recall = TP / (TP + FN)`` (row sum),
    ``F1 = 2 P R / (P + R)``; 0 where the denominator is 0. ``support`` is the row sum.

    >>> per_class_metrics(np.array([[3, 1], [0, 4]]))["recall"]
    array([0.75, 1.  ])
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp, predicted, support = np.diag(cm), cm.sum(axis=0), cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(tp), where=total > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64)}


def class_names(run: "Run", n: int) -> list[str]:
    """The run's first ``n`` class names (``info["class_names"]``), or ``"0" .. "n-1"``."""
    return [str(c) for c in (run.info.get("class_names") or range(n))][:n]


def confusion_section(run: "Run", plots: Path) -> str:
    """The test confusion matrix (counts annotated up to 20 classes) and a per-class score table."""
    cm = run.results.get("test", {}).get("confusion_matrix")
    if not cm:
        return NO_DATA
    cm = np.asarray(cm, dtype=np.int64)  # (C, C)
    n = len(cm)
    names = class_names(run, n)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * n + 2), max(3.5, 0.45 * n + 1.5)), layout="constrained")
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046)
    if n <= 40:
        ax.set_xticks(range(n), names, rotation=90 if max(map(len, names)) > 3 else 0)
        ax.set_yticks(range(n), names)
    if n <= 20:
        for i, j in np.ndindex(cm.shape):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set(xlabel="predicted class", ylabel="true class", title="Confusion matrix (test)")
    out = embed_figure(fig, plots, "confusion_matrix")
    scores = per_class_metrics(cm)
    rows = [[name, *(float(scores[k][i]) for k in ("precision", "recall", "f1")), int(scores["support"][i])]
            for i, name in enumerate(names)]
    macro = ["macro average", *(float(scores[k].mean()) for k in ("precision", "recall", "f1")),
             int(scores["support"].sum())]
    return out + html_table(["class", "precision", "recall", "F1", "support"], rows, "per-class", macro)


@SECTIONS.register("confusion")
def confusion(run: "Run", plots: Path, data_root: str | None) -> list[tuple[str, str]]:
    """The test confusion matrix and per-class precision / recall / F1 (from ``results.json``)."""
    return [("Confusion matrix", confusion_section(run, plots))]


# ----------------------------------------------------------------------------- probabilities

def classification_outputs(run: "Run", data_root: str | None = None, split: str = "test") -> dict[str, Any] | None:
    """Class probabilities ``proba`` (N, C) and targets ``target`` (N,) of the run's model on ``split`` (loader
    order, from the task's ``outputs()`` after an evaluation pass), with the ``loader`` they came from; None
    for an empty split."""
    task = run.task
    loader = run.data(data_root).loader(split)
    if loader.num_samples == 0:
        return None
    trainer = Trainer(run.config.trainer.model_copy(update={"device": "cpu", "compile": False, "progress": False}))
    trainer.evaluate(loader, task.to("cpu"))
    return {**task.outputs(), "loader": loader}


def roc_pr_section(proba: np.ndarray, target: np.ndarray, names: list[str], plots: Path) -> str:
    """ROC and precision-recall curves (binary: the positive class; else one-vs-rest per class, up to 20
    drawn) with the areas, and a per-class table of ROC-AUC, PR-AUC and prevalence."""
    curves = roc_pr_curves(proba, target)
    if not curves:
        return NO_DATA
    overall = ranking_metrics(proba, target)
    fig, (roc, pr) = plt.subplots(1, 2, figsize=(11, 4.8), layout="constrained")
    colours = plt.cm.tab20(np.linspace(0, 1, max(20, len(curves))))
    for c, colour in zip(curves[:20], colours):
        roc.plot(c["fpr"], c["tpr"], color=colour, lw=1.2, label=f"{names[c['class']]} ({c['roc_auc']:.3f})")
        pr.plot(c["recall"], c["precision"], color=colour, lw=1.2, label=f"{names[c['class']]} ({c['pr_auc']:.3f})")
    roc.plot([0, 1], [0, 1], "k--", lw=0.8, label="chance")
    scope = "positive class" if proba.shape[1] == 2 else "one-vs-rest, macro"
    roc.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01),
            title=f"ROC (test), AUC {overall['roc_auc']:.3f} ({scope})")
    pr.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01),
           title=f"Precision-recall (test), AP {overall['pr_auc']:.3f}")
    for ax in (roc, pr):
        ax.legend(fontsize="x-small", ncol=2 if len(curves) > 10 else 1,
                  loc="lower right" if ax is roc else "lower left")
    rows = [[names[c["class"]], c["roc_auc"], c["pr_auc"], c["prevalence"]] for c in curves]
    return (embed_figure(fig, plots, "roc_pr") + html_table(["class", "ROC-AUC", "PR-AUC (AP)", "prevalence"], rows,
                                                            "ranking", ["macro average", overall["roc_auc"],
                                                                        overall["pr_auc"], ""]))


def calibration_section(proba: np.ndarray, target: np.ndarray, plots: Path) -> str:
    """Reliability diagram: accuracy against mean confidence in 15 equal-width confidence bins, and how
    many predictions fall in each bin; the title carries the expected calibration error."""
    bins = calibration_bins(proba, target, ECE_BINS)
    ece = expected_calibration_error(proba, target, ECE_BINS)
    edges, width = bins["edges"], 1.0 / ECE_BINS
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5.5, 6), height_ratios=(3, 1), sharex=True, layout="constrained")
    full = bins["count"] > 0
    ax.bar(edges[:-1][full], bins["accuracy"][full], width=width, align="edge", edgecolor="k", label="accuracy")
    ax.bar(edges[:-1][full], bins["confidence"][full] - bins["accuracy"][full], bottom=bins["accuracy"][full],
           width=width, align="edge", fill=False, hatch="//", edgecolor="tab:red", lw=0.8,
           label="gap to mean confidence")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set(ylabel="accuracy", ylim=(0, 1), title=f"Reliability diagram (test), ECE {ece:.4f} ({ECE_BINS} bins)")
    ax.legend(fontsize="small", loc="upper left")
    hist.bar(edges[:-1], bins["count"], width=width, align="edge", edgecolor="k", color="tab:gray")
    hist.set(xlabel="confidence (highest class probability)", ylabel="predictions", xlim=(0, 1))
    return ("<p>Each bar is the accuracy of the test predictions whose confidence falls in that bin; a "
            "calibrated model's bars reach the diagonal. ECE = sum over bins of (share of predictions) x "
            "|accuracy - mean confidence|.</p>" + embed_figure(fig, plots, "reliability"))


# ----------------------------------------------------------------------------- worst-predicted examples

def raw_inputs(x: torch.Tensor, preprocess: dict[str, Any] | None) -> torch.Tensor:
    """Undo a fitted standardisation (``x * std + mean``) so examples show in the data's own units."""
    if not preprocess or preprocess.get("kind") != "standardize":
        return x.float()
    shape = (1, x.shape[1], 1, 1) if x.dim() == 4 else (1, *x.shape[1:])
    mean = torch.tensor(preprocess["mean"], dtype=torch.float32).reshape(shape)
    std = torch.tensor(preprocess["std"], dtype=torch.float32).reshape(shape)
    return x.float() * std + mean


class Worst:
    """The worst examples being rendered: the table so far (``header``, ``rows``) and any HTML above it."""

    def __init__(self, run: "Run", loader: Any, worst: np.ndarray, proba: np.ndarray, target: np.ndarray,
                 names: list[str], header: list[str], rows: list[list[Any]]) -> None:
        self.run, self.loader, self.worst = run, loader, worst
        self.proba, self.target, self.names = proba, target, names
        self.header, self.rows, self.above = header, rows, ""


def _worst_images(w: Worst, plots: Path) -> None:
    """Thumbnails of the images in pixel units, titled ``#index: true -> predicted``."""
    if not hasattr(w.loader, "x"):
        return
    images = raw_inputs(w.loader.x[torch.from_numpy(w.worst)], w.run.info.get("preprocess"))  # (k, C, H, W)
    pred = w.proba.argmax(axis=1)
    panels = [(f"#{i}: {w.names[w.target[i]]} -> {w.names[pred[i]]}\np={w.proba[i, pred[i]]:.2f}", as_image(img),
               "gray") for i, img in zip(w.worst, images)]
    w.above += embed_figure(image_grid(panels, "Highest-loss test images (true -> predicted)"), plots,
                            "worst_examples")


def _worst_rows(w: Worst, plots: Path) -> None:
    """One column per feature, in the data's own units (the fitted standardisation undone)."""
    if not hasattr(w.loader, "x"):
        return
    values = raw_inputs(w.loader.x[torch.from_numpy(w.worst)], w.run.info.get("preprocess")).numpy()
    values = values.reshape(len(w.worst), -1)
    features = [str(f) for f in w.run.info.get("feature_names") or []]
    if len(features) != values.shape[1]:
        features = [f"x{j}" for j in range(values.shape[1])]
    w.header += features
    w.rows = [row + [float(v) for v in vals] for row, vals in zip(w.rows, values)]


def _worst_csv_rows(w: Worst, plots: Path) -> None:
    """CSV tables: the model's inputs after the run's saved preprocessing."""
    if not hasattr(w.loader, "x"):
        return
    _worst_rows(w, plots)
    w.above += "<p>Feature values after the run's preprocessing (scaling, imputation, encoding).</p>"


def _worst_text(w: Worst, plots: Path) -> None:
    """The decoded text of each example."""
    if not hasattr(w.loader, "seqs") or not w.run.info.get("tokenizer"):
        return
    tok = tokenizer_from_json(w.run.info["tokenizer"])
    w.header.append("text")
    w.rows = [row + [tok.decode(w.loader.seqs[i].tolist())] for row, i in zip(w.rows, w.worst)]


# info["input_kind"] -> how the worst examples' inputs are shown
WORST_INPUTS: dict[str, Callable[[Worst, Path], None]] = {
    "image": _worst_images, "table": _worst_rows, "tabular": _worst_csv_rows, "text": _worst_text}


def worst_examples_section(run: "Run", outputs: dict[str, Any], names: list[str], plots: Path,
                           k: int = WORST_EXAMPLES) -> str:
    """The ``k`` test examples with the highest loss ``-log P[n, y_n]``, with true class, prediction and
    probabilities, and their inputs as :data:`WORST_INPUTS` shows the run's ``input_kind``."""
    proba, target, loader = outputs["proba"], outputs["target"], outputs["loader"]
    loss = -np.log(np.clip(proba[np.arange(len(target)), target], 1e-12, None))  # (N,) cross-entropy per sample
    worst = np.argsort(-loss, kind="stable")[:k]
    pred = proba.argmax(axis=1)
    header = ["test index", "true", "predicted", "P(true)", "P(predicted)", "loss"]
    rows = [[int(i), names[target[i]], names[pred[i]], float(proba[i, target[i]]), float(proba[i, pred[i]]),
             float(loss[i])] for i in worst]
    shown = Worst(run, loader, worst, proba, target, names, header, rows)
    show = WORST_INPUTS.get(run.info.get("input_kind"))
    if show is not None:
        show(shown, plots)
    return shown.above + html_table(shown.header, shown.rows, "worst")


@SECTIONS.register("classification")
def classification(run: "Run", plots: Path, data_root: str | None) -> list[tuple[str, str]]:
    """ROC and PR curves, reliability diagram and worst-predicted examples of the test split (needs a task
    with ``outputs()``: probabilities and targets of its last evaluation pass)."""
    outputs = classification_outputs(run, data_root)
    if outputs is None:
        return []
    names = class_names(run, outputs["proba"].shape[1])
    return [("ROC and precision-recall curves", roc_pr_section(outputs["proba"], outputs["target"], names, plots)),
            ("Calibration", calibration_section(outputs["proba"], outputs["target"], plots)),
            ("Worst-predicted examples", worst_examples_section(run, outputs, names, plots))]
