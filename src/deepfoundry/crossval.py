"""k-fold cross-validation of a recipe: ``deepfoundry cv RECIPE --folds 5`` / :func:`cross_validate`.

The recipe's train and validation rows are pooled and cut into ``k`` folds (stratified for
classification; the data set's test split is left alone). For each fold ``i`` the recipe trains from
scratch on the other folds (minus a ``data.val_fraction`` validation share for monitoring) and is scored
on fold ``i``. Each fold is an ordinary run directory (data set ``cv-fold``, see
:mod:`deepfoundry.data.folds`), so ``evaluate``, ``report`` and ``compare`` work on it.

The summary gives, per test metric ``m`` over the ``k`` folds, ``mean = (1/k) sum_i m_i`` and the sample
standard deviation ``std = sqrt(sum_i (m_i - mean)^2 / (k - 1))``.

>>> import deepfoundry
>>> cv = deepfoundry.cross_validate("mlp-digits", folds=5, overrides={"trainer.epochs": 5})
>>> cv["metrics"]["accuracy"]["mean"], cv["metrics"]["accuracy"]["std"]
"""
from __future__ import annotations

import json
import math
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from .config import DataConfig, RunConfig, apply_overrides, dump_config, load_config, validate
from .errors import DeepfoundryError
from .registry import TASKS

SUMMARY_FILE = "cv_summary.json"


def fold_config(cfg: RunConfig, folds: int, fold: int) -> RunConfig:
    """``cfg`` with its data replaced by fold ``fold`` (1-based) of ``folds`` of the same data set."""
    data = cfg.data
    fixed = {k: getattr(data, k) for k in DataConfig.model_fields}
    fixed["name"] = "cv-fold"
    fold_data = DataConfig(**fixed, base=data.name, base_kwargs=data.builder_kwargs(), folds=folds, fold=fold)
    return cfg.model_copy(update={"name": f"{cfg.name}-fold{fold}", "data": fold_data})


def summarize(per_fold: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean and sample standard deviation (ddof 1) of every scalar metric present in all folds."""
    names = [k for k, v in per_fold[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    out = {}
    for name in names:
        values = [float(m[name]) for m in per_fold if isinstance(m.get(name), (int, float))]
        if len(values) != len(per_fold):
            continue
        arr = np.array(values)
        std = float(arr.std(ddof=1)) if len(arr) > 1 else float("nan")
        out[name] = {"mean": float(arr.mean()), "std": std, "per_fold": values}
    return out


def _json_safe(obj: Any) -> Any:
    """NaN/inf as null, so the summary is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


def cross_validate(recipe: str | Path | RunConfig, folds: int = 5,
                   overrides: dict[str, Any] | list[str] | None = None, out: str | Path | None = None,
                   callbacks: list[Any] | None = None) -> dict[str, Any]:
    """Train ``recipe`` once per fold and return the summary (also written to ``OUT/cv_summary.json``).

    ``OUT`` (default ``runs/<recipe>-cv-<timestamp>``) holds one run directory per fold, ``fold-1`` ...
    ``fold-k``. The summary has ``metrics`` (``{name: {mean, std, per_fold}}`` over the folds' held-out
    scores), ``folds``, ``runs``, ``seconds`` and ``stratified``.
    """
    from .api import train

    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise DeepfoundryError(f"cross-validation needs --folds >= 2, received {folds!r}")
    if isinstance(recipe, RunConfig):
        cfg = validate(apply_overrides(recipe.model_dump(mode="json"), overrides)) if overrides else recipe
    else:
        cfg = load_config(recipe, overrides)
    if getattr(TASKS.get(cfg.task.name), "own_loop", None) is not None:  # e.g. DQN: no data set to fold
        raise DeepfoundryError(f"cross-validation needs a supervised recipe; task {cfg.task.name!r} trains in its "
                               "own loop on no data set, so it has no folds")
    if cfg.data.name == "cv-fold":
        raise DeepfoundryError("this config is already one cross-validation fold; pass the original recipe")
    out_dir = Path(out) if out is not None else Path("runs") / f"{cfg.name}-cv-{datetime.now():%Y%m%d-%H%M%S}"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")
    started = time.perf_counter()
    runs, per_fold, stratified = [], [], False
    for fold in range(1, folds + 1):
        run = train(fold_config(cfg, folds, fold), out=out_dir / f"fold-{fold}", callbacks=callbacks)
        stratified = bool(run.info.get("cv", {}).get("stratified"))
        runs.append(str(run.path))
        per_fold.append(run.results.get("test", {}))
    summary = {
        "recipe": cfg.name, "folds": folds, "stratified": stratified, "seed": cfg.seed,
        "metrics": summarize(per_fold), "runs": runs, "seconds": time.perf_counter() - started,
        "per_fold_seconds": [json.loads((Path(r) / "results.json").read_text())["seconds"] for r in runs],
    }
    (out_dir / SUMMARY_FILE).write_text(json.dumps(_json_safe(summary), indent=2) + "\n", encoding="utf-8")
    summary["path"] = str(out_dir)
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """The ``mean +- std`` table ``deepfoundry cv`` prints."""
    lines = [f"{summary['recipe']}: {summary['folds']}-fold cross-validation"
             f"{' (stratified)' if summary['stratified'] else ''}, {summary['seconds']:.1f}s"]
    width = max((len(k) for k in summary["metrics"]), default=6)
    for name, m in summary["metrics"].items():
        folds = " ".join(f"{v:.4f}" for v in m["per_fold"])
        lines.append(f"  {name:<{width}}  {m['mean']:.4f} +- {m['std']:.4f}   folds: {folds}")
    return "\n".join(lines)
