"""The report's sections keyed by family (``Task.report_sections`` -> ``report.SECTIONS``), the model card,
and plotting kept out of the task, generative and RL code."""
from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import pytest
import torch

import deepfoundry
import deepfoundry.rl.task  # noqa: F401  (registers the DQN task)
from deepfoundry.errors import DeepfoundryError
from deepfoundry.report import SECTIONS, write_report
from deepfoundry.responsible.model_card import write_model_card
from deepfoundry.report.classification import WORST_INPUTS
from deepfoundry.tasks.base import Task

SRC = Path(__file__).resolve().parents[1] / "src" / "deepfoundry"
QUIET = {"trainer.progress": False, "trainer.tensorboard": False, "trainer.epochs": 1}


def _task_classes() -> list[type[Task]]:
    found, todo = [], [Task]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return [c for c in found if c.__module__.startswith("deepfoundry.")]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> deepfoundry.Run:
    return deepfoundry.train("lenet5-digits", overrides=QUIET, out=tmp_path_factory.mktemp("sections") / "r")


def _headings(page: str) -> list[str]:
    return re.findall(r"<h2>(.*?)</h2>", page)


@pytest.mark.parametrize("cls", _task_classes(), ids=lambda c: c.__name__)
def test_every_task_declares_registered_sections(cls: type[Task]) -> None:
    sections = cls.report_sections
    assert isinstance(sections, tuple) and sections and all(isinstance(s, str) for s in sections)
    assert [s for s in sections if s not in SECTIONS] == []


def test_families_name_their_sections() -> None:
    from deepfoundry.rl.task import DQNTask
    from deepfoundry.tasks.classification import ClassificationTask
    from deepfoundry.tasks.regression import RegressionTask

    assert Task.report_sections == ("curves",)
    assert ClassificationTask.report_sections == ("curves", "confusion", "classification")
    assert RegressionTask.report_sections == ("curves", "regression")
    assert DQNTask.report_sections == ("rl",)
    assert set(WORST_INPUTS) == {"image", "table", "tabular", "text"}


def test_a_task_gets_exactly_the_sections_it_declares(run: deepfoundry.Run, monkeypatch) -> None:
    calls = []

    def first(r, plots, data_root):
        calls.append((r, plots, data_root))
        return [("First", "<p>one</p>")]

    monkeypatch.setitem(SECTIONS._builders, "test-first", first)
    monkeypatch.setitem(SECTIONS._builders, "test-second", lambda r, plots, data_root: [("Second", ""), ("Third", "")])
    monkeypatch.setattr(run.task, "report_sections", ("test-second", "test-first"))
    page = write_report(run, data_root="somewhere").read_text(encoding="utf-8")
    assert _headings(page) == ["Summary", "Second", "Third", "First"]
    assert calls == [(run, run.path / "plots", "somewhere")] and "<p>one</p>" in page


def test_a_classification_run_shows_its_family_sections(run: deepfoundry.Run) -> None:
    page = write_report(run).read_text(encoding="utf-8")
    assert _headings(page) == ["Summary", "Learning curves", "Confusion matrix", "ROC and precision-recall curves",
                               "Calibration", "Worst-predicted examples"]


def test_an_unknown_section_suggests_the_closest_name(run: deepfoundry.Run, monkeypatch) -> None:
    monkeypatch.setattr(run.task, "report_sections", ("curves", "confusoin"))
    with pytest.raises(DeepfoundryError, match=r"report section 'confusoin' is not registered \(did you mean 'con"):
        write_report(run)


def test_model_card_holds_the_facts_of_the_run(run: deepfoundry.Run) -> None:
    path = write_model_card(run)
    assert path == run.path / "model_card.md"
    card = path.read_text(encoding="utf-8")
    assert card.startswith("# Model card: lenet5-digits\n\n" + run.config.description + "\n")
    titles = re.findall(r"^## (.*)$", card, re.M)
    assert titles == ["Intended use", "Model", "Data", "Metrics", "Training compute", "Limitations", "Software"]
    assert "- outputs: 10 classes: `0`, `1`" in card and "- input: image, shape (1, 8, 8)" in card
    params = sum(p.numel() for p in run.model.parameters())
    assert "- architecture: `lenet5`" in card and f"- parameters: {params:,}" in card
    assert "- dataset: `digits`" in card
    for split in ("train", "val", "test"):
        assert f"- {split} examples: {run.info[f'num_{split}']}" in card
    accuracy = re.search(r"^\| accuracy \| ([\d.]+) \| ([\d.]+) \|$", card, re.M)
    assert accuracy and accuracy.groups() == (f"{run.results['val']['accuracy']:.4f}",
                                              f"{run.results['test']['accuracy']:.4f}")
    assert "confusion_matrix" not in card  # scalars only
    assert "- epochs run: 1 of 1" in card and f"- device: {run.results['device']}" in card
    assert f"- torch: {torch.__version__}" in card and f"- deepfoundry: {deepfoundry.__version__}" in card
    compute = run.results["compute"]  # one training step counted by FlopCounterMode x the batches run
    assert compute["flops_per_batch"] > 0 and compute["batches"] == 1 * math.ceil(run.info["num_train"] / run.config.data.batch_size)
    assert f"{compute['batches']:,} batches" in card
    from deepfoundry.responsible.model_card import wilson_interval

    lo, hi = wilson_interval(run.results["test"]["accuracy"], run.info["num_test"])
    assert f"its 95% interval is [{lo:.4f}, {hi:.4f}]" in card and lo < run.results["test"]["accuracy"] < hi
    assert "Not audited for fairness" in card and "Trained without differential privacy" in card
    assert not re.search(r"TODO|TBD|placeholder|fill in", card, re.I)


def _imports_matplotlib(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    lines = []
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        if any(n == "matplotlib" or n.startswith("matplotlib.") for n in names):
            lines.append(node.lineno)
    return lines


def test_plots_live_in_report_only() -> None:
    files = [*sorted((SRC / "tasks").rglob("*.py")), *sorted((SRC / "rl").rglob("*.py")), SRC / "generative.py"]
    offenders = {str(f.relative_to(SRC)): lines for f in files if (lines := _imports_matplotlib(f))}
    assert offenders == {}
    assert _imports_matplotlib(SRC / "report" / "html.py")  # the checker does see an import
