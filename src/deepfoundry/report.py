"""A self-contained HTML report of a finished run: ``run_dir/report.html`` plus ``run_dir/plots/*.png``.

Sections: summary (metrics table and resolved config), learning curves, the test confusion matrix with
per-class precision / recall / F1, ROC and precision-recall curves, the reliability diagram and the
worst-predicted examples (classification) or predicted-vs-true (regression), per-layer gradient
norms (when the run logged them with ``trainer.grad_norms``) and, on request, the first convolution's
filters and feature maps. Every plot is embedded as a base64 PNG, so the HTML file stands alone.

>>> from deepfoundry import load_run
>>> from deepfoundry.report import write_report
>>> write_report(load_run("runs/lenet5-digits"), feature_maps=True)
PosixPath('runs/lenet5-digits/report.html')
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from .config import dump_config  # noqa: E402
from .errors import DeepfoundryError  # noqa: E402

if TYPE_CHECKING:
    from .api import Run

NO_DATA = "<p class='no-data'>no data</p>"
CSS = ("body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}"
       "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
       "th:first-child,td:first-child{text-align:left}pre{background:#f5f5f5;padding:1em;overflow:auto}"
       "img{max-width:100%}.no-data{color:#888;font-style:italic}")


def _embed(fig: plt.Figure, plots_dir: Path, name: str) -> str:
    """Save ``fig`` as ``plots_dir/name.png``, close it, and return an ``<img>`` tag with the PNG inline."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    png = buf.getvalue()
    (plots_dir / f"{name}.png").write_bytes(png)
    return f"<img alt='{html.escape(name)}' src='data:image/png;base64,{base64.b64encode(png).decode('ascii')}'>"


def _records(run: "Run", kind: str) -> list[dict[str, Any]]:
    """All records of one ``kind`` (epoch, step, grad_norms) from ``metrics.jsonl``; [] when it is missing."""
    path = run.path / "metrics.jsonl"
    if not path.exists():
        return []
    rows = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return [r for r in rows if r.get("kind") == kind]


def _table(header: list[str], rows: list[list[Any]], css_class: str = "", footer: list[Any] | None = None) -> str:
    def cell(v: Any, tag: str = "td") -> str:
        text = f"{v:.4f}" if isinstance(v, float) else str(v)
        return f"<{tag}>{html.escape(text)}</{tag}>"

    head = "<thead><tr>" + "".join(cell(h, "th") for h in header) + "</tr></thead>" if any(header) else ""
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    foot = "<tfoot><tr>" + "".join(cell(v) for v in footer) + "</tr></tfoot>" if footer else ""
    return f"<table class='{css_class}'>{head}<tbody>{body}</tbody>{foot}</table>"


def _duration(seconds: float | None) -> str:
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
             ("wall time", _duration(res.get("seconds"))),
             ("stop reason", res.get("stop_reason") or ("finished all epochs" if res else "unknown"))]
    out = _table([], [list(f) for f in facts], "facts")
    splits = [s for s in ("val", "test") if res.get(s)]
    names = [k for s in splits for k, v in res[s].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    names = list(dict.fromkeys(names))
    rows = [[k] + [float(res[s][k]) if k in res[s] else "" for s in splits] for k in names]
    out += "<h3>Final metrics</h3>" + (_table(["metric"] + splits, rows, "metrics") if rows else NO_DATA)
    return out + f"<h3>Config</h3><pre>{html.escape(dump_config(cfg))}</pre>"


def learning_curves_section(run: "Run", plots: Path) -> str:
    """Losses per epoch, the other validation metrics per epoch, and the learning rate (log scale)."""
    epochs, steps = run.history, _records(run, "step")
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
    out = _embed(fig, plots, "loss")

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
        out += _embed(fig, plots, "val_metrics")

    lr_steps, lr_epochs = ([(r["step"], r["lr"]) for r in rows if r.get("lr", 0) > 0] for rows in (steps, epochs))
    if not lr_epochs:  # e.g. tasks that step their own optimizers log no learning rate
        return out + "<p class='no-data'>no data (learning rate)</p>"
    fig, ax = plt.subplots(figsize=(7, 3.5), layout="constrained")
    if lr_steps:
        ax.plot(*zip(*lr_steps), label="per step")
    ax.plot(*zip(*lr_epochs), "o", label="end of epoch")
    ax.set(xlabel="step", ylabel="learning rate", yscale="log", title="Learning rate")
    ax.legend()
    return out + _embed(fig, plots, "lr")


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


def confusion_section(run: "Run", plots: Path) -> str:
    """The test confusion matrix (counts annotated up to 20 classes) and a per-class score table."""
    cm = run.results.get("test", {}).get("confusion_matrix")
    if not cm:
        return NO_DATA
    cm = np.asarray(cm, dtype=np.int64)  # (C, C)
    n = len(cm)
    names = [str(c) for c in run.info.get("class_names") or range(n)][:n]
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
    out = _embed(fig, plots, "confusion_matrix")
    scores = per_class_metrics(cm)
    rows = [[name, *(float(scores[k][i]) for k in ("precision", "recall", "f1")), int(scores["support"][i])]
            for i, name in enumerate(names)]
    macro = ["macro average", *(float(scores[k].mean()) for k in ("precision", "recall", "f1")),
             int(scores["support"].sum())]
    return out + _table(["class", "precision", "recall", "F1", "support"], rows, "per-class", macro)


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
    return _embed(fig, plots, "pred_vs_true")


def gradient_section(records: list[dict[str, Any]], plots: Path) -> str:
    """Per-layer gradient L2 norm over steps (log scale), legend ordered from input to output layer."""
    layers = list(dict.fromkeys(k for r in records for k in r["grad_norms"]))  # named_parameters order
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(layers)))
    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    for layer, colour in zip(layers, colours):
        pts = [(r["step"], r["grad_norms"][layer]) for r in records if layer in r["grad_norms"]]
        ax.plot(*zip(*pts), label=layer, color=colour)
    ax.set(xlabel="step", ylabel="gradient L2 norm", yscale="log", title="Per-layer gradient norms")
    fig.legend(title="input → output", fontsize="small", loc="outside right center")
    return ("<p>Each line is the L2 norm of one layer's gradient, ||dL/dW||₂, colour-coded from the input "
            "layer (dark) to the output layer (bright). Norms that shrink layer by layer towards the input "
            "mean vanishing gradients (early layers barely learn); norms that grow towards the input mean "
            "exploding gradients.</p>" + _embed(fig, plots, "grad_norms"))


def first_conv(model: nn.Module) -> nn.Conv2d | None:
    """The first ``nn.Conv2d`` in ``model.modules()`` order, or None."""
    return next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)


def _as_image(t: torch.Tensor) -> np.ndarray:
    """(C, H, W) -> an array for imshow, scaled to [0, 1]: RGB (H, W, 3) when C == 3, else the channel mean."""
    img = t.permute(1, 2, 0) if t.shape[0] == 3 else t.mean(dim=0)
    img = img - img.min()
    return (img / img.max().clamp_min(1e-12)).numpy()


def _grid(panels: list[tuple[str, np.ndarray, str]], title: str) -> plt.Figure:
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


@torch.no_grad()
def feature_maps_section(run: "Run", conv: nn.Conv2d, plots: Path, data_root: str | None,
                         limit: int = 64) -> str:
    """The first convolution's filters and its output channels for the first test image (up to ``limit``)."""
    weight = conv.weight.detach().float().cpu()  # (out_channels, in_channels, kh, kw)
    filters = [(f"filter {i}", _as_image(w), "gray") for i, w in enumerate(weight[:limit])]
    out = _embed(_grid(filters, f"First convolution filters {tuple(weight.shape)}"), plots, "filters")
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
    panels = [("input", _as_image(split.x[0].float()), "gray")]
    panels += [(f"channel {i}", _as_image(m[None]), "viridis") for i, m in enumerate(maps[:limit - 1])]
    fig = _grid(panels, f"Feature maps of the first convolution {tuple(maps.shape)}")
    return out + _embed(fig, plots, "feature_maps")


# ----------------------------------------------------------------------------- classification evaluation

WORST_EXAMPLES = 16


def classification_outputs(run: "Run", data_root: str | None = None, split: str = "test") -> dict[str, Any] | None:
    """Class probabilities ``proba`` (N, C) and targets ``target`` (N,) of the run's model on ``split`` (loader
    order), with the ``loader`` they came from; None for tasks that keep no probabilities (graph tasks)."""
    from .engine.trainer import Trainer

    task = run.task
    if not callable(getattr(task, "outputs", None)):
        return None
    loader = run.data(data_root).loader(split)
    if loader.num_samples == 0:
        return None
    trainer = Trainer(run.config.trainer.model_copy(update={"device": "cpu", "compile": False, "progress": False}))
    trainer.evaluate(loader, task.to("cpu"))
    return {**task.outputs(), "loader": loader}


def _class_names(run: "Run", n: int) -> list[str]:
    return [str(c) for c in (run.info.get("class_names") or range(n))][:n]


def roc_pr_section(proba: np.ndarray, target: np.ndarray, names: list[str], plots: Path) -> str:
    """ROC and precision-recall curves (binary: the positive class; else one-vs-rest per class, up to 20
    drawn) with the areas, and a per-class table of ROC-AUC, PR-AUC and prevalence."""
    from .metrics import ranking_metrics, roc_pr_curves

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
    return (_embed(fig, plots, "roc_pr") + _table(["class", "ROC-AUC", "PR-AUC (AP)", "prevalence"], rows,
                                                   "ranking", ["macro average", overall["roc_auc"],
                                                               overall["pr_auc"], ""]))


def calibration_section(proba: np.ndarray, target: np.ndarray, plots: Path) -> str:
    """Reliability diagram: accuracy against mean confidence in 15 equal-width confidence bins, and how
    many predictions fall in each bin; the title carries the expected calibration error."""
    from .metrics import ECE_BINS, calibration_bins, expected_calibration_error

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
            "|accuracy - mean confidence|.</p>" + _embed(fig, plots, "reliability"))


def _raw_inputs(x: torch.Tensor, preprocess: dict[str, Any] | None) -> torch.Tensor:
    """Undo a fitted standardisation (``x * std + mean``) so examples show in the data's own units."""
    if not preprocess or preprocess.get("kind") != "standardize":
        return x.float()
    shape = (1, x.shape[1], 1, 1) if x.dim() == 4 else (1, *x.shape[1:])
    mean = torch.tensor(preprocess["mean"], dtype=torch.float32).reshape(shape)
    std = torch.tensor(preprocess["std"], dtype=torch.float32).reshape(shape)
    return x.float() * std + mean


def worst_examples_section(run: "Run", outputs: dict[str, Any], names: list[str], plots: Path,
                           k: int = WORST_EXAMPLES) -> str:
    """The ``k`` test examples with the highest loss ``-log P[n, y_n]``: image thumbnails (image data), the
    raw feature values (tables) or the text (text data), with true class, prediction and probabilities."""
    proba, target, loader = outputs["proba"], outputs["target"], outputs["loader"]
    loss = -np.log(np.clip(proba[np.arange(len(target)), target], 1e-12, None))  # (N,) cross-entropy per sample
    worst = np.argsort(-loss, kind="stable")[:k]
    pred = proba.argmax(axis=1)
    kind = run.info.get("input_kind")
    header = ["test index", "true", "predicted", "P(true)", "P(predicted)", "loss"]
    rows = [[int(i), names[target[i]], names[pred[i]], float(proba[i, target[i]]), float(proba[i, pred[i]]),
             float(loss[i])] for i in worst]
    out = ""
    if kind == "image" and hasattr(loader, "x"):
        images = _raw_inputs(loader.x[torch.from_numpy(worst)], run.info.get("preprocess"))  # (k, C, H, W)
        panels = [(f"#{i}: {names[target[i]]} -> {names[pred[i]]}\np={proba[i, pred[i]]:.2f}", _as_image(img), "gray")
                  for i, img in zip(worst, images)]
        out += _embed(_grid(panels, "Highest-loss test images (true -> predicted)"), plots, "worst_examples")
    elif kind in ("table", "tabular") and hasattr(loader, "x"):
        values = _raw_inputs(loader.x[torch.from_numpy(worst)], run.info.get("preprocess")).numpy()
        values = values.reshape(len(worst), -1)
        features = [str(f) for f in run.info.get("feature_names") or []]
        if len(features) != values.shape[1]:
            features = [f"x{j}" for j in range(values.shape[1])]
        header += features
        rows = [row + [float(v) for v in vals] for row, vals in zip(rows, values)]
        if kind == "tabular":  # CSV tables: the model's inputs after the run's saved preprocessing
            out += "<p>Feature values after the run's preprocessing (scaling, imputation, encoding).</p>"
    elif kind == "text" and hasattr(loader, "seqs") and run.info.get("tokenizer"):
        from .data.text import tokenizer_from_json

        tok = tokenizer_from_json(run.info["tokenizer"])
        header.append("text")
        rows = [row + [tok.decode(loader.seqs[i].tolist())] for row, i in zip(rows, worst)]
    return out + _table(header, rows, "worst")


def classification_sections(run: "Run", plots: Path, data_root: str | None) -> list[tuple[str, str]]:
    """ROC and PR curves, reliability diagram and worst-predicted examples of a classification run's test split."""
    outputs = classification_outputs(run, data_root)
    if outputs is None:
        return []
    names = _class_names(run, outputs["proba"].shape[1])
    return [("ROC and precision-recall curves", roc_pr_section(outputs["proba"], outputs["target"], names, plots)),
            ("Calibration", calibration_section(outputs["proba"], outputs["target"], plots)),
            ("Worst-predicted examples", worst_examples_section(run, outputs, names, plots))]


def write_report(run: "Run", feature_maps: bool = False, data_root: str | None = None) -> Path:
    """Write ``run.path / "report.html"`` (plots also under ``run.path / "plots"``) and return its path.

    ``feature_maps`` adds the first convolution's filters and feature maps (raises
    :class:`DeepfoundryError` for models without one); ``data_root`` overrides ``data.root`` where the
    report needs data (regression scatter, feature maps).
    """
    conv = first_conv(run.model) if feature_maps else None
    if feature_maps and conv is None:
        raise DeepfoundryError(f"model {run.config.model.name!r} has no convolution layer; "
                               "--feature-maps needs a CNN")
    plots = run.path / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    sections = [("Summary", summary_section(run)), ("Learning curves", learning_curves_section(run, plots))]
    kind = run.info.get("task_type")
    if kind == "regression":
        sections.append(("Predicted vs true", regression_section(run, plots, data_root)))
    elif kind == "classification":
        sections.append(("Confusion matrix", confusion_section(run, plots)))
        sections.extend(classification_sections(run, plots, data_root))
    elif kind == "rl":  # reinforcement learning has no Task object: curves over environment steps
        from .rl.report import report_sections as rl_sections

        sections = [sections[0], *rl_sections(run, plots)]
    extra = getattr(run.task, "report_sections", None) if kind != "rl" else None  # task-specific sections
    if callable(extra):
        sections.extend(extra(run, plots, data_root))
    grad_records = _records(run, "grad_norms")
    if grad_records:
        sections.append(("Gradient norms", gradient_section(grad_records, plots)))
    if conv is not None:
        sections.append(("Filters and feature maps", feature_maps_section(run, conv, plots, data_root)))
    title = html.escape(f"deepfoundry report: {run.config.name} ({run.path.name})")
    body = "".join(f"<section><h2>{html.escape(name)}</h2>{content}</section>" for name, content in sections)
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title><style>{CSS}</style>"
            f"</head><body><h1>{title}</h1>{body}</body></html>\n")
    path = run.path / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


# Public names for task-specific report sections (``Task.report_sections(run, plots, data_root)``
# returns ``[(title, html), ...]``; build the html with these).
embed_figure = _embed
html_table = _table

