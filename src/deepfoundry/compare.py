"""Side-by-side table of finished runs: ``deepfoundry compare RUN1 RUN2 ...`` / :func:`compare_runs`.

Each row: the recipe, model and data set, the config values that differ between the runs (``params``),
the number of values stored in ``model.safetensors``, the test metrics and the wall time.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .errors import DeepfoundryError


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _stored_values(path: Path) -> int:
    """How many numbers ``model.safetensors`` holds (parameters and buffers), read from its header."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())


def compare_runs(paths: list[str | Path], metrics: list[str] | None = None) -> dict[str, Any]:
    """One row per finished run: recipe, model, data set, the config values that differ between the runs
    (``params``), the number of stored weights, the test metrics (``metrics`` picks some; default every
    scalar) and the wall time. A path that is not a finished run directory is a :class:`DeepfoundryError`.

    >>> table = compare_runs(["runs/mlp-digits-a", "runs/mlp-digits-b"], metrics=["accuracy"])
    >>> table["params"], [row["test"]["accuracy"] for row in table["rows"]]
    """
    from .api import load_run

    if not paths:
        raise DeepfoundryError("compare needs at least one run directory")
    for p in map(Path, paths):
        if (p / "cv_summary.json").is_file() and not (p / "model.json").is_file():
            raise DeepfoundryError(f"'{p}' is a cross-validation folder, not a run directory; compare its fold "
                                   f"runs: {p}/fold-*")
    runs = [load_run(p) for p in paths]
    flats = [_flat(r.config.model_dump(mode="json")) for r in runs]
    keys = list(dict.fromkeys(k for f in flats for k in f if k not in ("name", "description")))
    differ = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flats}) > 1]
    results = [r.results for r in runs]
    tests = [{k: v for k, v in (res.get("test") or res.get("eval") or {}).items()  # RL: greedy evaluation
              if isinstance(v, (int, float)) and not isinstance(v, bool)} for res in results]
    available = list(dict.fromkeys(k for t in tests for k in t))
    unknown = [m for m in metrics or [] if m not in available]
    if unknown:
        raise DeepfoundryError(f"metric {unknown[0]!r} is in none of the runs' test results; available: "
                               f"{', '.join(available) or 'none'}")
    names = list(metrics or available)
    rows = [{"run": str(run.path), "recipe": run.config.name, "model": run.config.model.name,
             "dataset": run.config.data.name, "params": {k: flat.get(k) for k in differ},
             "weights": _stored_values(run.path / "model.safetensors"),
             "test": {k: t[k] for k in names if k in t}, "seconds": res.get("seconds")}
            for run, flat, t, res in zip(runs, flats, tests, results)]
    return {"params": differ, "metrics": names, "rows": rows}


def format_comparison(table: dict[str, Any]) -> str:
    """``compare_runs``'s result as an aligned text table (one line per run)."""
    def show(v: Any) -> str:
        if v is None:
            return "-"
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    header = ["run", "recipe", "model", "data", *table["params"], "weights", *table["metrics"], "seconds"]
    lines = [[Path(r["run"]).name, r["recipe"], r["model"], r["dataset"],
              *(show(r["params"][k]) for k in table["params"]), f"{r['weights']:,}",
              *(show(r["test"].get(m)) for m in table["metrics"]),
              f"{r['seconds']:.1f}" if r["seconds"] is not None else "-"] for r in table["rows"]]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *lines)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *lines])
