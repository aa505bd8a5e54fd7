"""The registry of report sections, keyed by family, and the reader of ``metrics.jsonl`` they share.

A section builder is ``fn(run, plots, data_root) -> [(title, html), ...]``: ``plots`` is the folder its
figures go to, ``data_root`` overrides ``data.root`` where it rebuilds data. A Task names the sections
its family shows, in order, in its class attribute ``report_sections``
(``ClassificationTask.report_sections == ("curves", "confusion", "classification")``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..engine.rundir import read_jsonl
from ..registry import Registry

if TYPE_CHECKING:
    from ..api import Run

SECTIONS = Registry("report section")


def records(run: "Run", kind: str) -> list[dict[str, Any]]:
    """All records of one ``kind`` (epoch, step, grad_norms, gan, ...) from ``metrics.jsonl``; [] when it is missing."""
    path = run.path / "metrics.jsonl"
    if not path.exists():
        return []
    return [r for r in read_jsonl(path) if r.get("kind") == kind]
