"""A self-contained HTML report of a finished run: ``run_dir/report.html`` plus ``run_dir/plots/*.png``,
and its model card, ``run_dir/model_card.md``.

The page is the summary (metrics table and resolved config), then the sections the run's task
declares in ``Task.report_sections``, in order, each built by the function registered under that name
in :data:`SECTIONS` (``"curves"``, ``"confusion"``, ``"classification"``, ``"regression"``, ``"forecasting"``,
``"bptt"``, ``"text_samples"``, ``"translation"``, ``"node_embeddings"``, ``"graph_embeddings"``, ``"gan"``,
``"vae"``, ``"rl"``), then the fairness audit and the explanations when ``deepfoundry audit`` / ``explain``
wrote them (``"fairness"``, ``"explanations"``, any family), then per-layer gradient norms (when the run logged them with
``trainer.grad_norms``) and, on request, the first convolution's filters and feature maps. Every plot is
embedded as a base64 PNG, so the HTML file stands alone.

A new family registers its builder ``fn(run, plots, data_root) -> [(title, html), ...]`` with
``@SECTIONS.register("name")`` in a module here and names it in its task's ``report_sections``.

>>> from deepfoundry import load_run
>>> from deepfoundry.report import write_report
>>> write_report(load_run("runs/lenet5-digits"), feature_maps=True)
PosixPath('runs/lenet5-digits/report.html')
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # files only, no display; before any module here imports pyplot

from ..errors import DeepfoundryError  # noqa: E402
# each module registers its sections in SECTIONS
from . import classification, curves, forecasting, generative, graphs, regression, rl, text  # noqa: E402,F401
from . import responsible  # noqa: E402,F401  (fairness and explanations sections, any run)
from .classification import (classification_outputs, per_class_metrics, roc_pr_section,  # noqa: E402
                             worst_examples_section)
from .curves import feature_maps_section, first_conv, gradient_section, summary_section  # noqa: E402
from .generative import grid_array, save_grid  # noqa: E402
from .html import NO_DATA, embed_figure, html_table, render_page  # noqa: E402
from .rounds import rounds_section  # noqa: E402,F401  (registers the federated "rounds" section)
from .sections import SECTIONS, records  # noqa: E402

if TYPE_CHECKING:
    from ..api import Run

__all__ = ["NO_DATA", "SECTIONS", "classification_outputs", "embed_figure", "grid_array", "html_table",
           "per_class_metrics", "records", "roc_pr_section", "save_grid", "worst_examples_section",
           "write_report"]


RUN_SECTIONS = ("fairness", "explanations")  # sections of any run, empty until 'audit' / 'explain' wrote their files


def write_report(run: "Run", feature_maps: bool = False, data_root: str | None = None) -> Path:
    """Write ``run.path / "report.html"`` (plots also under ``run.path / "plots"``) and return its path.

    ``feature_maps`` adds the first convolution's filters and feature maps (raises
    :class:`DeepfoundryError` for models without one); ``data_root`` overrides ``data.root`` where the
    report needs data (regression scatter, feature maps, ...).
    """
    conv = first_conv(run.model) if feature_maps else None
    if feature_maps and conv is None:
        raise DeepfoundryError(f"model {run.config.model.name!r} has no convolution layer; "
                               "--feature-maps needs a CNN")
    plots = run.path / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    sections = [("Summary", summary_section(run))]
    for name in run.task.report_sections:
        sections.extend(SECTIONS.get(name)(run, plots, data_root))
    if records(run, "round"):  # a federated run (deepfoundry federate): its rounds before anything per epoch
        sections.extend(SECTIONS.get("rounds")(run, plots, data_root))
    for name in RUN_SECTIONS:  # what audit / explain wrote into the run, whatever its family
        sections.extend(SECTIONS.get(name)(run, plots, data_root))
    grad_records = records(run, "grad_norms")
    if grad_records:
        sections.append(("Gradient norms", gradient_section(grad_records, plots)))
    if conv is not None:
        sections.append(("Filters and feature maps", feature_maps_section(run, conv, plots, data_root)))
    path = run.path / "report.html"
    path.write_text(render_page(f"deepfoundry report: {run.config.name} ({run.path.name})", sections),
                    encoding="utf-8")
    return path
