"""Fairness of a binary tabular classifier: a per-group audit, reweighing, and post-processing thresholds.

**Audit** (:func:`audit`). For decisions ``d`` (1 = the positive class, the run's second class name),
labels ``y`` and groups ``g`` (the intersection of the sensitive columns, e.g. ``sex, race``), fairlearn's
``MetricFrame`` gives per group: count, selection rate ``P(d=1|g)``, accuracy, ``TPR = P(d=1|y=1,g)``,
``FPR = P(d=1|y=0,g)``; and over groups

    demographic parity difference  DPD = max_g P(d=1|g) - min_g P(d=1|g)
    demographic parity ratio       DPR = min_g P(d=1|g) / max_g P(d=1|g)
    equalized odds difference      EOD = max(max_g TPR - min_g TPR, max_g FPR - min_g FPR)

with 95% percentile intervals from a seeded bootstrap (rows resampled with replacement; the vectorised
estimate here is checked against fairlearn's functions in tests/test_fairness.py).

**Reweighing** (Kamiran & Calders 2012, :func:`reweighing_weights`): training sample ``i`` of group ``g``
and label ``y`` gets the loss weight ``w(g, y) = P(g) P(y) / P(g, y)`` (probabilities counted on the
training rows), so that under the weights ``g`` and ``y`` are independent. Set in the config:
``--set fairness.sensitive=[sex] --set fairness.reweigh=true``; the classification task then minimises
``(1/B) sum_i w_i CE(z_i, y_i)``.

**Thresholds** (Hardt et al. 2016, :func:`fit_thresholds`): fairlearn's ``ThresholdOptimizer`` (prefit) on
the validation split's probabilities picks per group a randomised threshold rule: with probability
``p0`` decide ``[s > t0]``, else ``[s > t1]`` (``s`` = P(positive)), optionally replaced with probability
``p_ignore`` by a constant. The fitted rules are stored as JSON (``RUN/fairness/threshold.json``, no
pickle) and :func:`decision_probability` applies them again; ``predict`` adds the mitigated decision to
rows that carry the sensitive columns. Decisions are drawn as fairlearn draws them:
``d = [P(d=1) >= u]``, ``u ~ U(0, 1)`` from ``numpy.random.RandomState(seed)``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

from ..engine.rundir import write_json
from ..errors import DeepfoundryError

if TYPE_CHECKING:
    from ..api import Run

CONSTRAINTS = ("demographic_parity", "equalized_odds")
SUMMARY_KEYS = ("demographic_parity_difference", "demographic_parity_ratio", "equalized_odds_difference")


def _fairlearn() -> Any:
    try:
        import fairlearn.metrics  # noqa: F401
        import fairlearn.postprocessing  # noqa: F401
    except ImportError:
        raise DeepfoundryError("fairness needs fairlearn: pip install 'deepfoundry[responsible]'") from None
    import fairlearn

    return fairlearn


def parse_sensitive(text: str | Sequence[str]) -> list[str]:
    """``"sex,race"`` (or a list) -> ``["sex", "race"]``; an empty list is an error."""
    names = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if str(s).strip()]
    if not names:
        raise DeepfoundryError("--sensitive needs at least one column name, e.g. --sensitive sex or sex,race")
    return names


def group_keys(frame: pd.DataFrame, sensitive: Sequence[str], source: str = "the data") -> np.ndarray:
    """One string per row naming its group: the sensitive columns' values joined with ``", "`` (missing: ``?``)."""
    missing = [c for c in sensitive if c not in frame.columns]
    if missing:
        raise DeepfoundryError(f"sensitive column {missing[0]!r} is not in {source}; its columns: "
                               f"{', '.join(map(str, frame.columns))}")
    parts = [frame[c].astype(object).where(frame[c].notna(), "?").astype(str).to_numpy() for c in sensitive]
    keys = parts[0]
    for p in parts[1:]:
        keys = np.char.add(np.char.add(keys.astype(str), ", "), p.astype(str))
    return np.asarray(keys, dtype=object)


# ----------------------------------------------------------------------------- reweighing

def reweighing_weights(groups: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Kamiran-Calders weights ``w_i = P(g_i) P(y_i) / P(g_i, y_i)`` (float32, mean 1 over the rows).

    >>> reweighing_weights(np.array(["a", "a", "a", "b"]), np.array([1, 1, 0, 0])).round(3).tolist()
    [0.75, 0.75, 1.5, 0.5]
    """
    groups, labels = np.asarray(groups, dtype=object), np.asarray(labels)
    n = len(labels)
    _, g = np.unique(groups.astype(str), return_inverse=True)
    _, y = np.unique(labels, return_inverse=True)
    p_g = np.bincount(g) / n
    p_y = np.bincount(y) / n
    joint = np.zeros((len(p_g), len(p_y)))
    np.add.at(joint, (g, y), 1.0 / n)
    return (p_g[g] * p_y[y] / joint[g, y]).astype(np.float32)


def attach_reweighing(data: Any, sensitive: Sequence[str]) -> dict[str, Any]:
    """Give ``data.train`` per-sample loss weights from the training rows' groups and labels
    (``fairness.reweigh``); returns ``{"sensitive", "weights": {group: {label: w}}}`` for the log."""
    frames = getattr(data, "frames", None)
    if not frames or "train" not in frames:
        raise DeepfoundryError("fairness.reweigh needs a table with raw rows (data.name table-csv or adult); this "
                               "data set has none")
    import torch

    keys = group_keys(frames["train"], sensitive, "the training rows")
    labels = data.train.y.numpy()
    w = reweighing_weights(keys, labels)
    data.train.weights = torch.from_numpy(w)
    table: dict[str, dict[str, float]] = {}
    names = data.info.get("class_names") or []
    for k, label, wi in zip(keys, labels, w):
        table.setdefault(str(k), {})[str(names[label]) if label < len(names) else str(label)] = round(float(wi), 6)
    return {"sensitive": list(sensitive), "weights": table}


# ----------------------------------------------------------------------------- metrics

def _summary(sel: np.ndarray, tpr: np.ndarray, fpr: np.ndarray) -> dict[str, np.ndarray]:
    def spread(a: np.ndarray) -> np.ndarray:
        return np.nanmax(a, axis=-1) - np.nanmin(a, axis=-1)

    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.nanmin(sel, axis=-1) / np.nanmax(sel, axis=-1)
    return {"demographic_parity_difference": spread(sel), "demographic_parity_ratio": np.nan_to_num(ratio, nan=1.0),
            "equalized_odds_difference": np.maximum(spread(tpr), spread(fpr))}


def fairness_metrics(y: np.ndarray, d: np.ndarray, keys: np.ndarray, frame: pd.DataFrame, sensitive: Sequence[str],
                     bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Accuracy, DPD, DPR, EOD (fairlearn), their bootstrap 95% intervals, and per-group rows (MetricFrame)."""
    _fairlearn()
    from fairlearn.metrics import (MetricFrame, count, demographic_parity_difference, demographic_parity_ratio,
                                   equalized_odds_difference, false_positive_rate, selection_rate,
                                   true_positive_rate)
    from sklearn.metrics import accuracy_score

    y, d = np.asarray(y, dtype=np.int64), np.asarray(d, dtype=np.int64)
    features = frame[list(sensitive)].astype(object).where(frame[list(sensitive)].notna(), "?").astype(str)
    mf = MetricFrame(metrics={"count": count, "selection_rate": selection_rate, "accuracy": accuracy_score,
                              "tpr": true_positive_rate, "fpr": false_positive_rate},
                     y_true=y, y_pred=d, sensitive_features=features)
    groups = []
    for index, row in mf.by_group.iterrows():
        if pd.isna(row["count"]) or not row["count"]:  # an intersection no row belongs to
            continue
        values = index if isinstance(index, tuple) else (index,)
        groups.append({"group": dict(zip(sensitive, map(str, values))), "count": int(row["count"]),
                       **{k: (None if pd.isna(row[k]) else float(row[k]))
                          for k in ("selection_rate", "accuracy", "tpr", "fpr")}})
    out: dict[str, Any] = {
        "accuracy": float(accuracy_score(y, d)),
        "demographic_parity_difference": float(demographic_parity_difference(y, d, sensitive_features=features)),
        "demographic_parity_ratio": float(demographic_parity_ratio(y, d, sensitive_features=features)),
        "equalized_odds_difference": float(equalized_odds_difference(y, d, sensitive_features=features)),
    }
    _, g = np.unique(keys.astype(str), return_inverse=True)
    n_groups = int(g.max()) + 1
    ci: dict[str, Any] = {"level": 0.95, "resamples": int(bootstrap), "seed": int(seed)}
    if bootstrap > 0:
        rng = np.random.default_rng(seed)
        acc, stats = [], {k: [] for k in SUMMARY_KEYS}
        for start in range(0, bootstrap, 100):  # 100 resamples at a time: (100, N) index arrays
            idx = rng.integers(0, len(y), size=(min(100, bootstrap - start), len(y)))
            db, yb, gb = d[idx], y[idx], g[idx]
            s = _summary(*_group_rates_2d(db, yb, gb, n_groups))
            acc.append((db == yb).mean(axis=1))
            for k in SUMMARY_KEYS:
                stats[k].append(s[k])
        ci["accuracy"] = _interval(np.concatenate(acc))
        for k in SUMMARY_KEYS:
            ci[k] = _interval(np.concatenate(stats[k]))
    out["ci"] = ci
    out["groups"] = groups
    return out


def _group_rates_2d(d: np.ndarray, y: np.ndarray, g: np.ndarray, n_groups: int) -> tuple[np.ndarray, ...]:
    """``_group_rates`` for (R, N) resampled arrays, each row a bootstrap draw (groups may vary per row)."""
    r = d.shape[0]
    offset = (np.arange(r)[:, None] * n_groups + g).ravel()  # (R*N,) flat bin of (draw, group)

    def count(v: np.ndarray) -> np.ndarray:
        return np.bincount(offset, weights=v.ravel().astype(float), minlength=r * n_groups).reshape(r, n_groups)

    n = count(np.ones_like(d))
    present = n > 0  # a group a draw left out has no rates (NaN, ignored); one without positives (negatives) has
    with np.errstate(invalid="ignore", divide="ignore"):  # TPR (FPR) 0, as fairlearn's confusion matrix gives
        sel = count(d) / n
        tpr = np.where(present, np.nan_to_num(count(d * y) / count(y)), np.nan)
        fpr = np.where(present, np.nan_to_num(count(d * (1 - y)) / count(1 - y)), np.nan)
    return sel, tpr, fpr


def _interval(values: np.ndarray) -> list[float]:
    values = values[np.isfinite(values)]
    if not len(values):
        return [float("nan"), float("nan")]
    lo, hi = np.percentile(values, [2.5, 97.5])
    return [float(lo), float(hi)]


# ----------------------------------------------------------------------------- thresholds as JSON

def _scores_estimator() -> Any:
    """A prefit scikit-learn 'estimator' whose prediction is its input's first column (the model's P(positive))."""
    from sklearn.base import BaseEstimator

    class Scores(BaseEstimator):
        def fit(self, x: Any, y: Any) -> "Scores":
            return self

        def predict(self, x: Any) -> np.ndarray:
            return np.asarray(x, dtype=np.float64)[:, 0]

        def __sklearn_is_fitted__(self) -> bool:
            return True

    return Scores()


def _threshold_value(t: float) -> float | str:
    return t if math.isfinite(t) else ("inf" if t > 0 else "-inf")


def fit_thresholds(scores: np.ndarray, labels: np.ndarray, keys: np.ndarray, constraint: str = "demographic_parity",
                   tolerance: float | None = None) -> tuple[dict[str, Any], Any]:
    """Fit fairlearn's ``ThresholdOptimizer`` (prefit, objective accuracy) on validation scores ``P(positive)``;
    return its per-group rules as JSON-ready ``{"groups": {key: rule}}`` and the fitted optimizer."""
    _fairlearn()
    from fairlearn.postprocessing import ThresholdOptimizer

    if constraint not in CONSTRAINTS:
        raise DeepfoundryError(f"--constraint must be one of {', '.join(CONSTRAINTS)}, received {constraint!r}")
    if tolerance is not None and constraint != "demographic_parity":
        tolerance = None  # fairlearn relaxes only demographic parity
    opt = ThresholdOptimizer(estimator=_scores_estimator(), constraints=constraint, objective="accuracy_score", prefit=True,
                             predict_method="predict", tol=tolerance)
    try:
        opt.fit(np.asarray(scores, dtype=np.float64)[:, None], np.asarray(labels), sensitive_features=pd.Series(keys))
    except ValueError as exc:
        raise DeepfoundryError(f"ThresholdOptimizer could not fit the validation split: {exc} (each group needs "
                               f"both labels among the val rows: audit fewer or coarser sensitive columns)") from None
    rules = {}
    for key, b in opt.interpolated_thresholder_.interpolation_dict.items():
        rule: dict[str, Any] = {"p0": float(b.p0), "operator0": b.operation0.operator,
                                "threshold0": _threshold_value(float(b.operation0.threshold)),
                                "p1": float(b.p1), "operator1": b.operation1.operator,
                                "threshold1": _threshold_value(float(b.operation1.threshold))}
        if "p_ignore" in b:
            rule.update(p_ignore=float(b.p_ignore), prediction_constant=float(b.prediction_constant))
        rules[str(key)] = rule
    return {"constraint": constraint, "tolerance": tolerance, "groups": rules}, opt


def _apply_op(op: str, threshold: float | str, s: np.ndarray) -> np.ndarray:
    t = float(threshold)
    return (s > t) if op == ">" else (s < t)


def decision_probability(state: dict[str, Any], scores: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """``P(d = 1)`` per row under the stored rules: ``p0 [s op0 t0] + p1 [s op1 t1]``, then
    ``p_ignore * c + (1 - p_ignore) * that``. Rows of a group the rules do not know get NaN."""
    s = np.asarray(scores, dtype=np.float64)
    out = np.full(len(s), np.nan)
    for key, r in state["groups"].items():
        mask = keys == key
        p = r["p0"] * _apply_op(r["operator0"], r["threshold0"], s) + r["p1"] * _apply_op(r["operator1"],
                                                                                      r["threshold1"], s)
        if "p_ignore" in r:
            p = r["p_ignore"] * r["prediction_constant"] + (1 - r["p_ignore"]) * p
        out[mask] = p[mask]
    return out


def draw_decisions(prob: np.ndarray, seed: int) -> np.ndarray:
    """fairlearn's draw: ``d = [P(d=1) >= u]``, ``u`` from ``RandomState(seed).rand(N)``."""
    u = np.random.RandomState(seed).rand(len(prob))
    return (prob >= u).astype(np.int64)


def read_thresholds(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        for key in ("sensitive", "positive_label", "class_names", "seed", "groups"):
            state[key]
        for rule in state["groups"].values():
            for key in ("p0", "operator0", "threshold0", "p1", "operator1", "threshold1"):
                rule[key]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DeepfoundryError(f"'{path}' is not a readable threshold file ({type(exc).__name__}: {exc}); "
                               f"rerun 'deepfoundry audit RUN --mitigate threshold'") from None
    return state


def apply_thresholds(path: str | Path, raw: Any, answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``predict``'s answers plus the mitigated decision (``fair_class``, ``fair_label``, ``fair_probability``
    = P(positive decision)) for raw rows that carry the sensitive columns; others are returned unchanged.
    A group the thresholds never saw keeps the model's decision (``fair_probability`` null)."""
    from ..data.tabular import rows_frame

    state = read_thresholds(path)
    try:
        frame = rows_frame(raw)
    except DeepfoundryError:
        return answers
    if not all(c in frame.columns for c in state["sensitive"]) or len(frame) != len(answers):
        return answers
    keys = group_keys(frame, state["sensitive"])
    names = state["class_names"]
    scores = np.array([a["probabilities"][state["positive_label"]] for a in answers])
    prob = decision_probability(state, scores, keys)
    drawn = draw_decisions(np.nan_to_num(prob), state["seed"])
    out = []
    for a, p, d in zip(answers, prob, drawn):
        k = int(d) if np.isfinite(p) else int(a["class"])
        out.append({**a, "fair_class": k, "fair_label": names[k], "fair_probability": None if np.isnan(p) else
                    float(p)})
    return out


# ----------------------------------------------------------------------------- the audit

def _check_run(run: "Run") -> None:
    info = run.info
    kind = info.get("task_type")
    if kind != "classification":
        raise DeepfoundryError(f"audit needs a classification run; '{run.path}' is a {kind or run.task.family} run")
    if not info.get("tabular"):
        raise DeepfoundryError(f"audit needs a tabular run on raw rows (data.name table-csv or adult); '{run.path}' "
                               f"is a {info.get('input_kind', 'non-tabular')} run on {info.get('dataset', '?')!r}")
    if int(info.get("num_classes", 0)) != 2:
        raise DeepfoundryError(f"audit needs a binary classifier (selection rates of one positive class); "
                               f"'{run.path}' has {info.get('num_classes')} classes")


def _scores(run: "Run", frame: pd.DataFrame) -> np.ndarray:
    """P(positive) (the second class) of raw rows, with the run's saved preprocessing."""
    import torch

    with torch.no_grad():
        return run.predict_proba(frame)[:, 1].astype(np.float64)


def audit(run: "Run", sensitive: str | Sequence[str], split: str = "test", mitigate: str | None = None,
          constraint: str = "demographic_parity", bootstrap: int = 1000, tolerance: float | str | None = "auto",
          seed: int = 0, data_root: str | None = None) -> dict[str, Any]:
    """Audit the run's decisions (argmax) on ``split`` per group of ``sensitive``; write ``RUN/fairness/``.

    ``mitigate="threshold"`` fits thresholds on the validation split (``constraint``; ``tolerance`` "auto"
    relaxes demographic parity to a third of the unmitigated validation DPD, a number sets fairlearn's
    ``tol``, None enforces it exactly), saves ``threshold.json`` and audits the mitigated decisions too
    (``mitigated``). Returns the dict written to ``audit.json``.
    """
    _fairlearn()
    _check_run(run)
    sensitive = parse_sensitive(sensitive)
    if mitigate not in (None, "threshold"):
        raise DeepfoundryError(f"--mitigate must be 'threshold', received {mitigate!r}")
    if constraint not in CONSTRAINTS:
        raise DeepfoundryError(f"--constraint must be one of {', '.join(CONSTRAINTS)}, received {constraint!r}")
    if bootstrap < 0:
        raise DeepfoundryError(f"--bootstrap must be 0 or more resamples, received {bootstrap}")
    if split not in ("train", "val", "test"):
        raise DeepfoundryError(f"--split must be train, val or test, received {split!r}")
    data = run.data(data_root)
    frame = data.frames[split]
    keys = group_keys(frame, sensitive, f"the {split} rows of '{run.path}'")
    y = data.loader(split).y.numpy()
    scores = _scores(run, frame)
    decisions = (scores > 0.5).astype(np.int64)  # argmax of two classes
    result: dict[str, Any] = {"run": str(run.path), "sensitive": sensitive}
    result.update(fairness_metrics(y, decisions, keys, frame, sensitive, bootstrap, seed))
    result["ci"]["split"] = split
    result["mitigated"] = None
    out = run.path / "fairness"
    out.mkdir(parents=True, exist_ok=True)
    if mitigate == "threshold":
        vframe = data.frames["val"]
        if not len(vframe):
            raise DeepfoundryError("--mitigate threshold fits on the validation split, which is empty "
                                   "(data.val_fraction 0)")
        vkeys = group_keys(vframe, sensitive, f"the val rows of '{run.path}'")
        vy, vscores = data.val.y.numpy(), _scores(run, vframe)
        tol = None if isinstance(tolerance, str) and tolerance.lower() == "none" else tolerance
        if tolerance == "auto":
            vmetrics = fairness_metrics(vy, (vscores > 0.5).astype(np.int64), vkeys, vframe, sensitive, 0)
            tol = vmetrics["demographic_parity_difference"] / 3.0
        elif isinstance(tol, str):
            raise DeepfoundryError(f"--tolerance must be 'auto', 'none' or a number, received {tolerance!r}")
        state, _ = fit_thresholds(vscores, vy, vkeys, constraint, None if tol is None else float(tol))
        names = [str(c) for c in run.info["class_names"]]
        state.update(sensitive=sensitive, positive_label=names[1], class_names=names, seed=seed,
                     fitted_on="val", tolerance_setting=tolerance)
        write_json(out / "threshold.json", state)
        prob = decision_probability(state, scores, keys)
        unseen = np.isnan(prob)
        fair = draw_decisions(np.nan_to_num(prob), seed)
        fair[unseen] = decisions[unseen]  # a group val never saw keeps the model's decision
        mitigated = fairness_metrics(y, fair, keys, frame, sensitive, bootstrap, seed)
        mitigated["ci"]["split"] = split
        result["mitigated"] = {"method": "threshold", "constraint": constraint, "tolerance": state["tolerance"],
                               **mitigated}
    result = _finite(result)  # strict JSON: an undefined rate (a group without positives) is null
    write_json(out / "audit.json", result)
    plot_groups(result, out / "groups.png")
    from .model_card import write_model_card

    write_model_card(run)  # the card's Fairness section and limitations now hold what was measured
    return result


def _finite(obj: Any) -> Any:
    """NaN and infinities as null (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def group_label(row: dict[str, Any]) -> str:
    return ", ".join(row["group"].values())


def plot_groups(result: dict[str, Any], path: Path) -> Path:
    """Bars per group: selection rate, TPR, FPR, accuracy; before (left) and after mitigation (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("unmitigated", result)] + ([("mitigated", result["mitigated"])] if result.get("mitigated") else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 3.6), squeeze=False, sharey=True)
    metrics = ("selection_rate", "tpr", "fpr", "accuracy")
    for ax, (title, res) in zip(axes[0], panels):
        labels = [group_label(r) for r in res["groups"]]
        x = np.arange(len(labels))
        width = 0.8 / len(metrics)
        for j, m in enumerate(metrics):
            ax.bar(x + (j - 1.5) * width, [r[m] if r[m] is not None else 0 for r in res["groups"]], width, label=m)
        ax.set_xticks(x, labels, rotation=30 if len(labels) > 3 else 0, ha="right" if len(labels) > 3 else "center",
                      fontsize=8)
        ax.set_ylim(0, 1)
        gaps = ", ".join(f"{name} {res[k]:.3f}" for name, k in (("DPD", "demographic_parity_difference"),
                                                                  ("EOD", "equalized_odds_difference"))
                         if res[k] is not None)
        ax.set_title(f"{title}: {gaps}", fontsize=9)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def format_audit(result: dict[str, Any]) -> str:
    """The audit as printed by ``deepfoundry audit``: a summary line per variant, then the groups."""
    lines = []
    for name, res in (("unmitigated", result), ("mitigated", result.get("mitigated"))):
        if not res:
            continue
        ci = res["ci"]
        def shown(k: str) -> str:
            if res[k] is None:
                return f"{k} -"
            interval = ci.get(k)
            ok = isinstance(interval, list) and None not in interval
            return f"{k} {res[k]:.4f}" + (f" [{interval[0]:.4f}, {interval[1]:.4f}]" if ok else "")

        parts = [shown(k) for k in ("accuracy", *SUMMARY_KEYS)]
        lines.append(f"{name}: " + "  ".join(parts))
        for r in res["groups"]:
            vals = "  ".join(f"{k} {r[k]:.4f}" if r[k] is not None else f"{k} -"
                             for k in ("selection_rate", "accuracy", "tpr", "fpr"))
            lines.append(f"  {group_label(r):24s} n {r['count']:6d}  {vals}")
    return "\n".join(lines)


def fairness_summary(run: "Run | str | Path") -> dict[str, Any] | None:
    """What ``audit`` wrote (``RUN/fairness/audit.json``), for a model card: the sensitive columns, split,
    accuracy, DPD, DPR, EOD before and (if mitigated) after, the per-group rows and the plot's path; None
    when the run was never audited."""
    folder = Path(getattr(run, "path", run)) / "fairness"
    path = folder / "audit.json"
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None

    def pick(res: dict[str, Any] | None) -> dict[str, Any] | None:
        if not res:
            return None
        return {k: res.get(k) for k in ("accuracy", *SUMMARY_KEYS, "ci", "groups")}

    mitigated = pick(result.get("mitigated"))
    if mitigated is not None:
        mitigated.update({k: result["mitigated"].get(k) for k in ("method", "constraint", "tolerance")})
    plot = folder / "groups.png"
    return {"sensitive": result.get("sensitive"), "split": (result.get("ci") or {}).get("split"),
            "unmitigated": pick(result), "mitigated": mitigated, "plot": str(plot) if plot.is_file() else None}
