"""Explanations of a classifier's decisions with captum: which parts of an input raised the target class's logit.

Methods (``z_c(x)`` the logit of the target class ``c``, ``x'`` a baseline input):

- ``saliency``: ``|dz_c/dx|`` (Simonyan et al. 2014).
- ``integrated-gradients`` (Sundararajan et al. 2017): ``IG_i = (x_i - x'_i) * int_0^1 dz_c(x' + a (x - x'))/dx_i da``
  (Gauss-Legendre quadrature). Completeness: ``sum_i IG_i = z_c(x) - z_c(x')``; the relative error
  ``|sum_i IG_i - (z_c(x) - z_c(x'))| / |z_c(x) - z_c(x')|`` of the worst input is reported
  (``completeness_error``) and the number of steps doubles (64 to 1024) until it is below 1%.
- ``gradcam`` (Selvaraju et al. 2017) on the last ``nn.Conv2d``: ``ReLU(sum_k a_k A^k)``,
  ``a_k = mean_{ij} dz_c/dA^k_ij``, upsampled to the image.
- ``shapley``: Shapley value sampling (Castro et al. 2009), features grouped into raw table columns
  (or 4x4 image patches), absent features at the baseline; 25 permutations.
- ``attention``: Transformer self-attention (last layer, mean over heads) or a seq2seq decoder's attention.

Where attributions are taken is the model's choice (its ``explain_layers()``: the embedding output of
text models, ``h_0`` of ``mlp_tabular`` whose categorical inputs are integer codes); without one, the
input itself. Layer attributions are summed back to tokens (over the embedding dimension) or raw table
columns (over each column's encoded features and embedding dimensions). Baselines: the all-zero encoded
input (a standardised table row at the training means with unseen categories, the padding token) and,
for images, a black image (through the run's standardisation).

``--sanity`` (Adebayo et al. 2018): the layers' weights are re-initialised from the output down, one more
layer each step (cascading), and the Spearman rank correlation between the attributions of the trained and
of the randomised model is reported per step; attributions that stay correlated do not depend on what
the model learned.
"""
from __future__ import annotations

import copy
import html
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..engine.rundir import write_json
from ..errors import DeepfoundryError

if TYPE_CHECKING:
    from ..api import Run

METHODS = ("saliency", "integrated-gradients", "gradcam", "shapley", "attention")
MAX_INPUTS = 64


def _captum() -> Any:
    try:
        import captum.attr as attr
    except ImportError:
        raise DeepfoundryError("explain needs captum: pip install 'deepfoundry[responsible]'") from None
    return attr


class Explainee:
    """The model as the attribution methods see it: ``forward(inputs, *extra) -> logits``, the inputs to
    attribute (a float tensor, or integer tokens/codes when attributions are taken at ``layer``),
    extra forward arguments (token lengths), and the baseline."""

    def __init__(self, model: nn.Module, batch: Any, raw: Any, encode: Callable[[Any], Any]) -> None:
        self.model = model
        spec = model.explain_layers() if callable(getattr(model, "explain_layers", None)) else {}
        self.layer: nn.Module | None = spec.get("layer")
        self.columns: torch.Tensor | None = spec.get("columns")  # input column of each layer dimension
        if isinstance(batch, (tuple, list)):  # (tokens (B, L), lengths (B,))
            self.inputs, self.extra = batch[0], tuple(batch[1:])
        else:
            self.inputs, self.extra = batch, ()
        if not isinstance(self.inputs, torch.Tensor):
            raise DeepfoundryError("this run's inputs are not tensors; explain it with --method attention")
        self.tokens = self.inputs.dtype in (torch.int64, torch.int32)
        if self.tokens and self.layer is None:
            raise DeepfoundryError(f"{type(model).__name__} takes token ids and names no embedding layer to attribute "
                                   f"to (explain_layers); try --method attention")
        if self.layer is not None or self.tokens:
            self.baseline = torch.zeros_like(self.inputs)  # padding tokens / the all-zero encoded row
        elif isinstance(raw, np.ndarray) and raw.dtype != object:
            self.baseline = encode(np.zeros_like(raw, dtype=np.float32))  # black image, through the standardisation
        else:
            self.baseline = torch.zeros_like(self.inputs)

    def forward(self, x: torch.Tensor, *extra: Any) -> torch.Tensor:
        return self.model((x, *extra) if extra else x)

    def logits(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.forward(x, *self.extra).gather(1, target[:, None]).squeeze(1)

    def reduce(self, attr: torch.Tensor) -> torch.Tensor:
        """Layer attributions -> per token (B, L) or per input column (B, F); input attributions unchanged."""
        if self.layer is None:
            return attr
        if self.columns is not None:  # (B, D) -> (B, F)
            out = torch.zeros(attr.shape[0], self.inputs.shape[1], dtype=attr.dtype)
            return out.index_add_(1, self.columns.to(attr.device), attr)
        return attr.sum(dim=-1)  # (B, L, E) -> (B, L)


def _integrated_gradients(e: Explainee, target: torch.Tensor, steps: int | None) -> tuple[torch.Tensor, float, int]:
    """IG attributions, the worst input's relative completeness error, and the steps used."""
    attr_mod = _captum()
    ig = (attr_mod.LayerIntegratedGradients(e.forward, e.layer) if e.layer is not None
          else attr_mod.IntegratedGradients(e.forward))
    gap = (e.logits(e.inputs, target) - e.logits(e.baseline, target)).double()
    n = steps or 64
    while True:
        attr, delta = ig.attribute(e.inputs, baselines=e.baseline, target=target,
                                   additional_forward_args=e.extra or None, n_steps=n, method="gausslegendre",
                                   return_convergence_delta=True)
        error = float((delta.double().abs() / gap.abs().clamp_min(1e-8)).max())
        if steps is not None or error < 0.01 or n >= 1024:
            return e.reduce(attr.detach()), error, n
        n *= 2


def _saliency(e: Explainee, target: torch.Tensor) -> torch.Tensor:
    attr_mod = _captum()
    if e.layer is None:
        return attr_mod.Saliency(e.forward).attribute(e.inputs, target=target, additional_forward_args=e.extra or None,
                                                      abs=True).detach()
    grad = attr_mod.LayerGradientXActivation(e.forward, e.layer, multiply_by_inputs=False).attribute(
        e.inputs, target=target, additional_forward_args=e.extra or None)
    return e.reduce(grad.detach().abs())


def last_conv(model: nn.Module) -> nn.Conv2d | None:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1] if convs else None


def _gradcam(e: Explainee, target: torch.Tensor, run: "Run") -> torch.Tensor:
    attr_mod = _captum()
    conv = last_conv(e.model)
    if conv is None or e.inputs.dim() != 4:
        raise DeepfoundryError(f"--method gradcam needs a convolutional image model; '{run.path}' "
                               f"({run.config.model.name}) has no Conv2d layer (try --method integrated-gradients)")
    cam = attr_mod.LayerGradCam(e.forward, conv).attribute(e.inputs, target=target,
                                                           additional_forward_args=e.extra or None,
                                                           relu_attributions=True)
    return attr_mod.LayerAttribution.interpolate(cam.detach(), tuple(e.inputs.shape[-2:]), "bilinear")  # (B, 1, H, W)


def _feature_mask(e: Explainee, groups: np.ndarray | None) -> torch.Tensor:
    if groups is not None:  # table: raw column of each encoded feature
        return torch.as_tensor(groups, dtype=torch.long)[None]
    if e.inputs.dim() == 4:  # image: 4x4 patches shared across channels
        _, c, h, w = e.inputs.shape
        ids = (torch.arange(h)[:, None] // 4) * ((w + 3) // 4) + torch.arange(w)[None, :] // 4
        return ids.expand(c, h, w)[None].long()
    return torch.arange(e.inputs.shape[1])[None]


def _shapley(e: Explainee, target: torch.Tensor, groups: np.ndarray | None, seed: int) -> torch.Tensor:
    attr_mod = _captum()
    if e.tokens and e.columns is None and groups is None:
        raise DeepfoundryError("--method shapley explains table and image runs; for text use integrated-gradients")
    torch.manual_seed(seed)
    return attr_mod.ShapleyValueSampling(e.forward).attribute(
        e.inputs, baselines=e.baseline, target=target, additional_forward_args=e.extra or None,
        feature_mask=_feature_mask(e, groups), n_samples=25).detach()


# ----------------------------------------------------------------------------- raw columns and tokens

def raw_columns(info: dict[str, Any]) -> tuple[list[str], np.ndarray] | None:
    """Table runs: the raw column names and, per encoded feature, the index of its raw column
    (``age_missing`` -> ``age``, ``city=a`` -> ``city``); None for other runs."""
    state = info.get("tabular")
    if not state:
        return None
    columns = list(info.get("numeric_columns") or []) + list(info.get("categorical_columns") or [])
    groups = []
    for name in info["feature_names"]:
        match = [c for c in columns if name == c or name.startswith(f"{c}_missing") or name.startswith(f"{c}=")]
        groups.append(columns.index(max(match, key=len)) if match else len(columns))
    if len(columns) in groups:
        columns.append("(other)")
    return columns, np.asarray(groups)


def _fold(values: np.ndarray, groups: np.ndarray, n: int, shapley: bool) -> np.ndarray:
    """(B, F) encoded-feature attributions -> (B, n) raw columns: summed, or (Shapley: one value per group) taken once."""
    out = np.zeros((values.shape[0], n))
    for j in range(n):
        idx = np.nonzero(groups == j)[0]
        if len(idx):
            out[:, j] = values[:, idx[0]] if shapley else values[:, idx].sum(axis=1)
    return out


def _token_pieces(info: dict[str, Any], ids: Sequence[int]) -> list[str]:
    from ..data.text import tokenizer_from_json

    tok = tokenizer_from_json(info["tokenizer"])
    return [tok.decode([int(i)]) for i in ids]


# ----------------------------------------------------------------------------- rendering

def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _image_panels(raw: np.ndarray, attr: np.ndarray, names: list[str], labels: list[str], method: str,
                  out: Path) -> list[str]:
    """One PNG per input: the image and the attribution heat map laid over it."""
    plt = _plt()
    files = []
    for i in range(len(attr)):
        img = np.asarray(raw[i], dtype=np.float32)
        img = img.transpose(1, 2, 0) if img.ndim == 3 else img
        img = img[..., 0] if img.ndim == 3 and img.shape[-1] == 1 else img
        heat = np.abs(attr[i]).sum(axis=0)
        heat = heat / (heat.max() or 1.0)
        fig, axes = plt.subplots(1, 2, figsize=(5, 2.7))
        axes[0].imshow(np.clip(img, 0, 1), cmap="gray" if img.ndim == 2 else None)
        axes[0].set_title(names[i][-28:], fontsize=7)
        axes[1].imshow(np.clip(img, 0, 1), cmap="gray" if img.ndim == 2 else None)
        axes[1].imshow(heat, cmap="jet", alpha=0.5)
        axes[1].set_title(f"{method}: {labels[i]}", fontsize=7)
        for ax in axes:
            ax.axis("off")
        fig.tight_layout()
        name = f"{i:02d}-{method}.png"
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        files.append(name)
    return files


def _bar_panels(values: np.ndarray, features: list[str], names: list[str], labels: list[str], method: str,
                out: Path) -> list[str]:
    """One PNG: per input, the signed attribution of each raw column (or feature), largest first."""
    plt = _plt()
    rows = len(values)
    top = min(len(features), 15)
    fig, axes = plt.subplots(rows, 1, figsize=(6, 0.35 * top * rows + 0.6 * rows), squeeze=False)
    for i, ax in enumerate(axes[:, 0]):
        order = np.argsort(-np.abs(values[i]))[:top][::-1]
        ax.barh([features[j] for j in order], values[i][order],
                color=["tab:red" if values[i][j] > 0 else "tab:blue" for j in order])
        ax.set_title(f"{names[i][-40:]}: {method} for {labels[i]}", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    name = f"{method}-columns.png"
    fig.savefig(out / name, dpi=100)
    plt.close(fig)
    return [name]


def token_html(pieces: list[list[str]], values: list[np.ndarray], labels: list[str], method: str) -> str:
    """Tokens as coloured spans: red raises the target class's logit, blue lowers it (opacity ~ |attribution|)."""
    lines = [f"<h3>{html.escape(method)}</h3>"]
    for toks, vals, label in zip(pieces, values, labels):
        scale = float(np.abs(vals).max()) or 1.0
        spans = []
        for t, v in zip(toks, vals):
            rgb = "220,40,40" if v > 0 else "40,90,220"
            spans.append(f"<span title='{v:+.4f}' style='background:rgba({rgb},{abs(v) / scale:.2f});"
                         f"padding:1px 2px;margin:1px'>{html.escape(t)}</span>")
        lines.append(f"<p><b>{html.escape(label)}</b>: {''.join(spans)}</p>")
    return "\n".join(lines)


def _heatmap(matrix: np.ndarray, rows: list[str], cols: list[str], title: str, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(3.0, 0.3 * len(cols) + 1.5), max(2.5, 0.3 * len(rows) + 1.2)))
    ax.imshow(matrix, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- the verb

def _targets(task: Any, batch: Any, target: str | None, n: int, names: list[str]) -> torch.Tensor:
    if target is None:
        with torch.no_grad():
            return task.probabilities(batch).argmax(dim=1).long()
    if target in names:
        k = names.index(target)
    else:
        try:
            k = int(target)
        except ValueError:
            raise DeepfoundryError(f"--target {target!r} is neither a class index nor a label; labels: "
                                   f"{', '.join(names)}") from None
    if not 0 <= k < len(names):
        raise DeepfoundryError(f"--target {k} is out of range: the model has {len(names)} classes")
    return torch.full((n,), k, dtype=torch.long)


def _attention(run: "Run", task: Any, raw: Any, batch: Any, names: list[str], out: Path) -> tuple[list[str], dict]:
    maps_fn = getattr(task, "attention_map", None)
    files = []
    if callable(maps_fn):  # seq2seq translation: the decoder's attention over the source
        for i, text in enumerate(task.encode_inputs(raw)):
            src, tgt, weights = maps_fn(text)
            if weights is None:
                raise DeepfoundryError(f"--method attention: '{run.path}' ({run.config.model.name}) has no attention")
            name = f"{i:02d}-attention.png"
            _heatmap(weights.cpu().numpy(), tgt[:weights.shape[0]], src[:weights.shape[1]], f"attention: {text[:40]}",
                     out / name)
            files.append(name)
        return files, {}
    model_maps = getattr(task.model, "attention_maps", None)
    if not callable(model_maps):
        raise DeepfoundryError(f"--method attention needs a Transformer classifier or a seq2seq model with "
                               f"attention; '{run.path}' is {run.config.model.name!r}")
    maps = model_maps(batch)[-1].mean(dim=1)  # last layer, mean over heads: (B, T, T)
    tokens, lengths = batch
    offset = maps.shape[-1] - tokens.shape[1]  # 1 with a [CLS] position
    for i in range(len(tokens)):
        n = int(lengths[i])
        pieces = (["[CLS]"] if offset else []) + _token_pieces(run.info, tokens[i, :n].tolist())
        m = maps[i, :n + offset, :n + offset].numpy()
        name = f"{i:02d}-attention.png"
        _heatmap(m, pieces, pieces, f"self-attention (last layer): {names[i][:40]}", out / name)
        files.append(name)
    return files, {}


def _sanity(e: Explainee, compute: Callable[[Explainee], torch.Tensor], original: torch.Tensor,
            seed: int) -> list[dict[str, Any]]:
    """Cascading randomisation: Spearman correlation of |attributions| after each further layer is re-initialised."""
    from scipy.stats import spearmanr

    torch.manual_seed(seed)
    model = copy.deepcopy(e.model)
    layers = [(name, m) for name, m in model.named_modules()
              if any(True for _ in m.parameters(recurse=False)) and name]
    rows = []
    base = np.abs(original.reshape(len(original), -1).numpy())
    mutated = copy.copy(e)
    mutated.model = model
    spec = model.explain_layers() if callable(getattr(model, "explain_layers", None)) else {}
    mutated.layer = spec.get("layer")
    for name, module in reversed(layers):
        for p in module.parameters(recurse=False):
            with torch.no_grad():
                if p.dim() > 1:
                    nn.init.kaiming_uniform_(p)
                else:
                    p.uniform_(-0.1, 0.1)
        attr = np.abs(compute(mutated).reshape(len(original), -1).numpy())
        rs = [spearmanr(a, b).statistic for a, b in zip(base, attr)]
        rs = [float(r) for r in rs if np.isfinite(r)]
        rows.append({"layer": name, "spearman": float(np.mean(rs)) if rs else None})
    return rows


def explain(run: "Run", arguments: Sequence[str], method: str = "integrated-gradients", target: str | None = None,
            sanity: bool = False, out: str | Path | None = None, steps: int | None = None,
            seed: int = 0) -> dict[str, Any]:
    """Explain the run's decisions on command-line inputs (as for ``predict``); write images/HTML and
    ``summary.json`` into ``out`` (default ``RUN/explanations``) and return the summary."""
    _captum()
    if method not in METHODS:
        raise DeepfoundryError(f"--method must be one of {', '.join(METHODS)}, received {method!r}")
    if not callable(getattr(run.task, "probabilities", None)) or run.info.get("task_type") == "regression":
        raise DeepfoundryError(f"explain needs a classification run; '{run.path}' is a {run.task.family} run")
    task = run.task.to("cpu").eval()
    read = task.read_inputs(list(arguments))
    if len(read.names) > MAX_INPUTS:
        raise DeepfoundryError(f"explain takes at most {MAX_INPUTS} inputs at a time, received {len(read.names)}")
    out = Path(out) if out is not None else run.path / "explanations"
    out.mkdir(parents=True, exist_ok=True)
    names = task.class_names(int(run.info.get("num_classes", 0))) if hasattr(task, "class_names") else []
    summary: dict[str, Any] = {"run": str(run.path), "method": method, "inputs": read.names, "out": str(out),
                               "completeness_error": None, "steps": None, "sanity": None}
    if method == "attention":
        batch = task.encode_inputs(read.raw) if not callable(getattr(task, "attention_map", None)) else None
        files, _ = _attention(run, task, read.raw, batch, read.names, out)
        summary.update(targets=None, files=files)
        write_json(out / f"{method}.json", summary)
        write_json(out / "summary.json", summary)
        from .model_card import write_model_card

        write_model_card(run)
        return summary
    batch = task.encode_inputs(read.raw)
    e = Explainee(task.model, batch, read.raw, task.encode_inputs)
    targets = _targets(task, batch, target, len(e.inputs), names)
    labels = [names[int(k)] if int(k) < len(names) else str(int(k)) for k in targets]
    table = raw_columns(run.info)
    groups = table[1] if table is not None else None

    def compute(ex: Explainee) -> torch.Tensor:
        if method == "integrated-gradients":
            return _integrated_gradients(ex, targets, summary["steps"])[0]
        if method == "saliency":
            return _saliency(ex, targets)
        if method == "gradcam":
            return _gradcam(ex, targets, run)
        return _shapley(ex, targets, groups, seed)

    if method == "integrated-gradients":
        attr, error, n = _integrated_gradients(e, targets, steps)
        summary.update(completeness_error=error, steps=n)
    else:
        attr = compute(e)
    values = attr.double().numpy()
    summary["targets"] = labels
    if table is not None:  # raw table columns
        columns = table[0]
        per_column = _fold(values, groups, len(columns), shapley=method == "shapley")
        files = _bar_panels(per_column, columns, read.names, labels, method, out)
        summary["attributions"] = [dict(zip(columns, map(float, row))) for row in per_column]
    elif e.tokens:  # token attributions as coloured HTML
        lengths = e.extra[0] if e.extra else torch.full((len(e.inputs),), e.inputs.shape[1])
        pieces = [_token_pieces(run.info, e.inputs[i, :int(lengths[i])].tolist()) for i in range(len(e.inputs))]
        vals = [values[i, :int(lengths[i])] for i in range(len(values))]
        (out / f"{method}.html").write_text(token_html(pieces, vals, labels, method), encoding="utf-8")
        files = [f"{method}.html"]
        summary["attributions"] = [[[t, float(v)] for t, v in zip(p, vs)] for p, vs in zip(pieces, vals)]
    elif values.ndim == 4:  # images
        raw = np.asarray(read.raw, dtype=np.float32)
        raw = raw.reshape(values.shape[0], *run.info.get("input_shape", raw.shape[1:]))
        files = _image_panels(raw, values, read.names, labels, method, out)
    else:
        features = list(run.info.get("feature_names") or [str(j) for j in range(values.shape[1])])
        flat = values.reshape(len(values), -1)
        features = features if len(features) == flat.shape[1] else [str(j) for j in range(flat.shape[1])]
        files = _bar_panels(flat, features, read.names, labels, method, out)
        summary["attributions"] = [dict(zip(features, map(float, row))) for row in flat]
    if sanity:
        rows = _sanity(e, compute, attr, seed)
        summary["sanity"] = rows
        plt = _plt()
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.plot(range(len(rows)), [r["spearman"] if r["spearman"] is not None else np.nan for r in rows], "o-")
        ax.set_xticks(range(len(rows)), [r["layer"] for r in rows], rotation=60, fontsize=7, ha="right")
        ax.set_ylabel("Spearman rank correlation")
        ax.set_title(f"cascading randomisation ({method}), output layer first", fontsize=8)
        ax.axhline(0, color="gray", lw=0.5)
        fig.tight_layout()
        fig.savefig(out / "sanity.png", dpi=100)
        plt.close(fig)
        files.append("sanity.png")
    summary["files"] = files
    write_json(out / f"{method}.json", summary)  # one per method (the report shows each), and the latest
    write_json(out / "summary.json", summary)
    from .model_card import write_model_card

    write_model_card(run)  # the card's Explanations section
    return summary


def explanation_summary(run: "Run | str | Path") -> dict[str, Any] | None:
    """What ``explain`` last wrote into ``RUN/explanations/summary.json`` (method, inputs, targets, files as
    absolute paths, IG's completeness error, the sanity check; ``methods``: every method with its own
    ``RUN/explanations/<method>.json``), for a model card; None if never explained."""
    folder = Path(getattr(run, "path", run)) / "explanations"
    path = folder / "summary.json"
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    files = [str(folder / f) for f in summary.get("files") or [] if (folder / f).is_file()]
    return {k: summary.get(k) for k in ("method", "inputs", "targets", "completeness_error", "steps", "sanity")} | {
        "files": files, "methods": [m for m in METHODS if (folder / f"{m}.json").is_file()]}


def format_explanation(summary: dict[str, Any]) -> str:
    lines = [f"{summary['method']}: {len(summary['inputs'])} input(s) -> {summary['out']}"]
    if summary.get("completeness_error") is not None:
        lines.append(f"integrated gradients: completeness error {summary['completeness_error']:.2e} (relative, worst "
                     f"input), {summary['steps']} steps")
    for row in summary.get("sanity") or []:
        r = row["spearman"]
        lines.append(f"  sanity: randomised down to {row['layer']:28s} spearman {r:.3f}" if r is not None else
                     f"  sanity: randomised down to {row['layer']:28s} spearman -")
    for f in summary.get("files") or []:
        lines.append(f"  {Path(summary['out']) / f}")
    return "\n".join(lines)
