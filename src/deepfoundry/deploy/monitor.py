"""Drift monitoring: how far the inputs and predictions a served model sees have moved from training.

**Reference** (``reference.json``, :func:`build_reference`): for each input feature the codec of the run's
input kind extracts per example (:meth:`deepfoundry.data.codecs.Codec.monitor_features`: table columns;
images: per-channel mean and standard deviation of each example; text: token count and unknown-token rate),
decile bin edges and bin proportions from the **training split**, plus 200 quantiles for the KS test; and
the distribution of the model's predictions on the **validation split** (label frequencies for classifiers,
decile bins of the value otherwise).

**Drift** over the last ``window`` served examples (:class:`DriftWindow`, all of a shorter stream):

* Population stability index per feature, over the reference bins ``b`` with proportions ``p_b``
  (reference) and ``q_b`` (live), both floored at ``eps = 1e-4``::

      PSI = sum_b (q_b - p_b) * ln(q_b / p_b)

  (< 0.1 stable, 0.1-0.2 a moderate shift, > 0.2 a shift worth acting on: the default threshold).
* Two-sample Kolmogorov-Smirnov statistic ``D = sup_x |F_live(x) - F_ref(x)|`` per feature and its
  p-value (:func:`scipy.stats.ks_2samp`, the reference represented by its 200 quantiles).
* PSI of the predictions against their validation distribution.

``drift_score`` is the largest PSI (features and predictions); ``drifted`` is ``drift_score > threshold``.
"""
from __future__ import annotations

import html
import json
from collections import deque
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from ..api import Run, load_run
from ..data.codecs import ExampleError, codec_for
from ..engine.checkpoint import atomic_write
from ..engine.rundir import read_jsonl, write_json
from ..errors import DeepfoundryError

EPS = 1e-4
DECILES = np.linspace(0.1, 0.9, 9)
KS_QUANTILES = np.linspace(0.0, 1.0, 200)
REFERENCE = "reference.json"


# ---------------------------------------------------------------------------------------------- the reference
def _numeric_reference(values: np.ndarray) -> dict[str, Any]:
    """Decile edges (unique), the training proportion of each bin ``(-inf, e1], (e1, e2], ..., (ek, inf)``,
    and quantiles for the KS test."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise DeepfoundryError("cannot build a drift reference from no values")
    edges = np.unique(np.quantile(values, DECILES))
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
    return {"kind": "numeric", "edges": edges.tolist(), "p": (counts / counts.sum()).tolist(),
            "quantiles": np.quantile(values, KS_QUANTILES).tolist(), "n": int(values.size)}


def _categorical_reference(values: Iterable[Any], labels: list[str]) -> dict[str, Any]:
    values = [str(v) for v in values]
    counts = np.array([values.count(label) for label in labels], dtype=np.float64)
    return {"kind": "categorical", "labels": labels, "p": (counts / max(1.0, counts.sum())).tolist(),
            "n": len(values)}


def _loader_inputs(task: Any, loader: Any, split: str) -> Iterable[Any]:
    """Each batch's inputs as ``encode_inputs`` gives them (``Task.loader_inputs``): the loaders of served
    families yield ``(inputs, targets)``."""
    for batch in loader:
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise DeepfoundryError(f"the {split} loader of this run does not yield (inputs, targets) batches; drift "
                                   f"monitoring covers runs that 'deepfoundry serve' serves")
        yield task.loader_inputs(batch[0])


def build_reference(run: Run | str | Path, data_root: str | None = None) -> dict[str, Any]:
    """The drift reference of a run: per-feature bins from its training split, predictions on its val split.

    >>> ref = build_reference("runs/lenet5-digits")
    >>> sorted(ref["features"]), ref["predictions"]["kind"]
    (['c0_mean', 'c0_std'], 'categorical')
    """
    run = run if isinstance(run, Run) else load_run(run)
    task = run.task.to("cpu")
    if not task.serves():
        raise DeepfoundryError(f"a {task.family} run does not predict inputs, so it has no drift reference")
    codec = codec_for(run.info)
    data = run.data(data_root)
    feats: dict[str, list[np.ndarray]] = {}
    with torch.no_grad():
        for x in _loader_inputs(task, data.train, "training"):
            for name, v in codec.monitor_features(x).items():
                feats.setdefault(name, []).append(np.asarray(v, dtype=np.float64))
        answers: list[Any] = []
        for x in _loader_inputs(task, data.val if data.val.num_samples else data.test, "validation"):
            answers += [task.monitored_prediction(r) for r in task.decode_outputs(task.predict(x))]
    labels = task.prediction_labels
    preds = _categorical_reference(answers, labels) if labels else _numeric_reference(np.array(answers, float))
    features = {name: _numeric_reference(np.concatenate(v)) for name, v in feats.items()}
    return {"version": 1, "input_kind": codec.kind, "features": features, "predictions": preds}


def write_reference(run: Run | str | Path, directory: str | Path | None = None, data_root: str | None = None) -> Path:
    """Build the reference and write it atomically as ``directory/reference.json`` (default: the run's folder)."""
    run = run if isinstance(run, Run) else load_run(run)
    path = Path(directory if directory is not None else run.path) / REFERENCE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, build_reference(run, data_root))
    return path


def load_reference(run: Run, build: bool = True) -> dict[str, Any]:
    """``RUN/reference.json``; built and written when missing (``build``)."""
    path = run.path / REFERENCE
    if not path.is_file():
        if not build:
            raise DeepfoundryError(f"'{run.path}' has no {REFERENCE}")
        write_reference(run)
    try:
        ref = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DeepfoundryError(f"'{path}' is corrupt: {exc}") from None
    if not isinstance(ref, dict) or not isinstance(ref.get("features"), dict) or "predictions" not in ref:
        raise DeepfoundryError(f"'{path}' is not a drift reference (it needs 'features' and 'predictions'); delete it "
                               f"to rebuild it")
    return ref


# ---------------------------------------------------------------------------------------------- the statistics
def psi(reference: dict[str, Any], values: Iterable[Any]) -> float:
    """Population stability index of live ``values`` against a reference (bins, proportions ``p``):
    ``sum_b (q_b - p_b) ln(q_b / p_b)`` with proportions floored at 1e-4."""
    p = np.maximum(np.asarray(reference["p"], dtype=np.float64), EPS)
    if reference["kind"] == "categorical":
        index = {label: k for k, label in enumerate(reference["labels"])}
        codes = np.array([index.get(str(v), -1) for v in values], dtype=np.int64)  # int64 also when empty
        codes = codes[codes >= 0]
        counts = np.bincount(codes, minlength=len(p)).astype(np.float64)
    else:
        x = np.asarray(list(values), dtype=np.float64)
        x = x[np.isfinite(x)]
        counts = np.bincount(np.searchsorted(np.asarray(reference["edges"]), x, side="left"),
                             minlength=len(p)).astype(np.float64)
    if counts.sum() == 0:
        return 0.0
    q = np.maximum(counts / counts.sum(), EPS)
    return float(np.sum((q - p) * np.log(q / p)))


def ks(reference: dict[str, Any], values: Iterable[Any]) -> tuple[float, float]:
    """Two-sample KS statistic and p-value of live ``values`` against the reference's quantiles."""
    from scipy.stats import ks_2samp

    x = np.asarray(list(values), dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return 0.0, 1.0
    result = ks_2samp(x, np.asarray(reference["quantiles"], dtype=np.float64))
    return float(result.statistic), float(result.pvalue)


def drift_report(reference: dict[str, Any], features: dict[str, Iterable[float]], predictions: Iterable[Any],
                 threshold: float = 0.2) -> dict[str, Any]:
    """``{"drift_score", "threshold", "drifted", "examples", "features": {name: {"psi", "ks", "ks_pvalue"}},
    "predictions": {"psi"}}``; the score is the largest PSI."""
    rows: dict[str, Any] = {}
    for name, ref in reference["features"].items():
        values = list(features.get(name, []))
        d, pvalue = ks(ref, values)
        rows[name] = {"psi": psi(ref, values), "ks": d, "ks_pvalue": pvalue}
    predictions = list(predictions)
    pred_psi = psi(reference["predictions"], predictions)
    scores = [r["psi"] for r in rows.values()] + [pred_psi]
    score = max(scores) if predictions else 0.0
    return {"drift_score": score, "threshold": threshold, "drifted": bool(score > threshold),
            "examples": len(predictions), "features": rows, "predictions": {"psi": pred_psi}}


class DriftWindow:
    """The last ``window`` examples' features and predictions, scored against a reference on demand."""

    def __init__(self, reference: dict[str, Any], window: int = 500) -> None:
        if window < 1:
            raise DeepfoundryError(f"the drift window must be at least 1 example, received {window}")
        self.reference, self.window = reference, window
        self.features: dict[str, deque[float]] = {name: deque(maxlen=window) for name in reference["features"]}
        self.predictions: deque[Any] = deque(maxlen=window)

    def add(self, features: dict[str, np.ndarray], predictions: list[Any]) -> None:
        for name, values in features.items():
            if name in self.features:
                self.features[name].extend(np.asarray(values, dtype=np.float64).tolist())
        self.predictions.extend(predictions)

    def report(self, threshold: float = 0.2) -> dict[str, Any]:
        return drift_report(self.reference, self.features, self.predictions, threshold)


# ---------------------------------------------------------------------------------------------- the monitor verb
def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The request records of a ``serve --log`` file (one JSON object per line)."""
    path = Path(path)
    if not path.is_file():
        raise DeepfoundryError(f"request log '{path}' does not exist")
    records = read_jsonl(path)  # a line torn by a server still writing is skipped; others are named file:line
    for i, rec in enumerate(records, 1):
        if not isinstance(rec.get("inputs"), list) or not isinstance(rec.get("predictions"), list) \
                or len(rec["inputs"]) != len(rec["predictions"]):
            raise DeepfoundryError(f"request log '{path}' record {i} is not a request record (it needs lists 'inputs' "
                                   f"and 'predictions' of equal length, as 'deepfoundry serve --log' writes)")
    return records


def monitor(path: str | Path, log: str | Path, threshold: float = 0.2, window: int | None = None,
            out: str | Path | None = None) -> dict[str, Any]:
    """Drift of the last ``window`` logged examples (all when ``None``) of a run or bundle: writes
    ``RUN/monitor/drift.json`` and ``drift.html`` (or into ``out``) and returns the JSON.

    The logged inputs are checked and encoded as the server did; the logged predictions are compared with
    the validation distribution. The run's reference is built (and written) if missing."""
    if not threshold > 0:
        raise DeepfoundryError(f"--threshold must be a positive PSI, received {threshold}")
    if window is not None and window < 1:
        raise DeepfoundryError(f"--drift-window must be at least 1, received {window}")
    run = load_run(path)
    task = run.task.to("cpu")
    reference = load_reference(run)
    codec = codec_for(run.info)
    inputs, answers = [], []
    for rec in read_log(log):
        inputs += rec["inputs"]
        answers += rec["predictions"]
    if window is not None:
        inputs, answers = inputs[-window:], answers[-window:]
    if not inputs:
        raise DeepfoundryError(f"request log '{log}' holds no requests")
    examples = []
    for i, value in enumerate(inputs):
        try:
            examples.append(codec.example_from_json(value))
        except ExampleError as exc:
            raise DeepfoundryError(f"request log '{log}': logged example {i} is not an input of this run: {exc}") from None
    features: dict[str, list[float]] = {}
    for start in range(0, len(examples), 256):
        batch = task.encode_inputs(codec.batch_from_examples(examples[start:start + 256]))
        for name, v in codec.monitor_features(batch).items():
            features.setdefault(name, []).extend(np.asarray(v, dtype=np.float64).tolist())
    try:
        predictions = [task.monitored_prediction(a) for a in answers]
    except (KeyError, TypeError, IndexError, ValueError):
        raise DeepfoundryError(f"request log '{log}': its predictions are not answers of this run") from None
    result = drift_report(reference, features, predictions, threshold)
    folder = Path(out) if out is not None else run.path / "monitor"
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "drift.json", result)
    atomic_write(folder / "drift.html", lambda tmp: Path(tmp).write_text(drift_html(result, run.path),
                                                                           encoding="utf-8"))
    return {**result, "out": str(folder)}


def drift_html(result: dict[str, Any], source: Path) -> str:
    """A small self-contained page: the score, the verdict and one row per feature."""
    verdict = "DRIFTED" if result["drifted"] else "stable"
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{r['psi']:.4f}</td><td>{r['ks']:.4f}</td><td>{r['ks_pvalue']:.3g}</td>"
        f"<td>{'&#9888;' if r['psi'] > result['threshold'] else ''}</td></tr>" for name, r in result["features"].items())
    pred = result["predictions"]["psi"]
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>drift: {html.escape(str(source))}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}.bad{{color:#b00}}</style></head><body>
<h1>Drift of {html.escape(str(source))}</h1>
<p class="{'bad' if result['drifted'] else ''}">drift score (largest PSI) <b>{result['drift_score']:.4f}</b>,
threshold {result['threshold']}: <b>{verdict}</b>, over {result['examples']} examples.</p>
<p>Predictions: PSI {pred:.4f} against the validation distribution.</p>
<table><tr><th>feature</th><th>PSI</th><th>KS D</th><th>KS p</th><th></th></tr>{rows}</table>
<p>PSI = sum over reference bins of (q - p) ln(q / p); KS D = sup |F_live - F_ref|.</p></body></html>
"""
