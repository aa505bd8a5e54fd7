"""Report sections of the responsible-AI verbs, for any run: ``fairness`` (what ``deepfoundry audit`` wrote in
``RUN/fairness/``: the before/after table and the per-group plot) and ``explanations`` (what ``deepfoundry
explain`` wrote in ``RUN/explanations/``: its images and token HTML, embedded). Each is empty until its verb ran.
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .html import html_table
from .sections import SECTIONS

if TYPE_CHECKING:
    from ..api import Run

EXPLAIN_METHODS = ("saliency", "integrated-gradients", "gradcam", "shapley", "attention")
FAIRNESS_ROWS = (("accuracy", "accuracy"), ("demographic parity difference", "demographic_parity_difference"),
                 ("demographic parity ratio", "demographic_parity_ratio"),
                 ("equalized odds difference", "equalized_odds_difference"))


def _read(path: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def embed_png(path: Path, alt: str) -> str:
    """An existing PNG file inlined as an ``<img>`` (the page stands alone)."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"


def _cell(res: dict[str, Any] | None, key: str) -> str:
    if not res or res.get(key) is None:
        return "-"
    ci = (res.get("ci") or {}).get(key)
    interval = f" [{ci[0]:.4f}, {ci[1]:.4f}]" if isinstance(ci, list) and None not in ci else ""
    return f"{res[key]:.4f}{interval}"


@SECTIONS.register("fairness")
def fairness(run: "Run", plots: Path, data_root: str | None) -> list[tuple[str, str]]:
    folder = run.path / "fairness"
    result = _read(folder / "audit.json")
    if result is None:
        return []
    mitigated = result.get("mitigated")
    header = ["", "unmitigated"] + ([f"mitigated ({mitigated.get('method')}, {mitigated.get('constraint')})"]
                                   if mitigated else [])
    rows = [[label] + [_cell(r, key) for r in ([result, mitigated] if mitigated else [result])]
            for label, key in FAIRNESS_ROWS]
    ci = result.get("ci") or {}
    parts = [f"<p>Sensitive columns: {html.escape(', '.join(result.get('sensitive') or []))}; split "
             f"{html.escape(str(ci.get('split', 'test')))}; 95% intervals from {ci.get('resamples', 0)} bootstrap "
             f"resamples (seed {ci.get('seed', 0)}).</p>", html_table(header, rows, "fairness")]
    group_rows = []
    for name, res in (("unmitigated", result), ("mitigated", mitigated)):
        for g in (res or {}).get("groups") or []:
            group_rows.append([name, ", ".join(g["group"].values()), g["count"]]
                              + [g[k] if g[k] is not None else "-" for k in ("selection_rate", "accuracy", "tpr", "fpr")])
    parts.append(html_table(["", "group", "count", "selection rate", "accuracy", "TPR", "FPR"], group_rows, "groups"))
    if (folder / "groups.png").is_file():
        parts.append(embed_png(folder / "groups.png", "fairness per group"))
    return [("Fairness", "\n".join(parts))]


@SECTIONS.register("explanations")
def explanations(run: "Run", plots: Path, data_root: str | None) -> list[tuple[str, str]]:
    folder = run.path / "explanations"
    parts = []
    for method in EXPLAIN_METHODS:
        summary = _read(folder / f"{method}.json")
        if summary is None:
            continue
        note = ""
        if summary.get("completeness_error") is not None:
            note = (f" Completeness error {summary['completeness_error']:.2e} (relative, worst input) with "
                    f"{summary.get('steps')} steps.")
        parts.append(f"<h3>{html.escape(method)}</h3><p>{len(summary.get('inputs') or [])} input(s); targets: "
                     f"{html.escape(', '.join(map(str, summary.get('targets') or [])) or 'attention weights')}.{note}</p>")
        for name in summary.get("files") or []:
            path = Path(summary.get("out") or folder) / name
            if not path.is_file():
                continue
            if path.suffix == ".png":
                parts.append(embed_png(path, f"{method} {name}"))
            elif path.suffix == ".html":
                parts.append(path.read_text(encoding="utf-8"))
    return [("Explanations", "\n".join(parts))] if parts else []
