"""``write_report`` on real (tiny) training runs: LeNet-5 with gradient norms, an MLP, a regression MLP."""
from __future__ import annotations

import base64
import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import deepfoundry
from deepfoundry.errors import DeepfoundryError
from deepfoundry.report import per_class_metrics, write_report

QUIET = {"trainer.progress": False, "trainer.tensorboard": False, "data.batch_size": 64}
PNG_URI = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")


def _assert_png(path: Path) -> None:
    assert path.is_file(), path
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width > 50 and img.height > 50


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory: pytest.TempPathFactory) -> deepfoundry.Run:
    return deepfoundry.train("lenet5-digits", out=tmp_path_factory.mktemp("report") / "lenet", overrides={
        **QUIET, "trainer.epochs": 2, "trainer.grad_norms": True, "trainer.log_every_steps": 5})


@pytest.fixture(scope="module")
def lenet_html(lenet_run: deepfoundry.Run) -> str:
    path = write_report(lenet_run)
    assert path == lenet_run.path / "report.html"
    return path.read_text(encoding="utf-8")


def test_report_has_every_section(lenet_html: str) -> None:
    for heading in ("Summary", "Learning curves", "Confusion matrix", "Gradient norms"):
        assert f"<h2>{heading}</h2>" in lenet_html
    assert "Filters and feature maps" not in lenet_html  # only with feature_maps=True
    assert "Predicted vs true" not in lenet_html
    assert "lenet5-digits" in lenet_html and "lenet5" in lenet_html and "digits" in lenet_html
    assert "vanishing gradients" in lenet_html and "exploding gradients" in lenet_html
    assert "<pre>" in lenet_html and "monitor: val_accuracy" in lenet_html  # the resolved config


def test_plots_are_embedded_and_saved(lenet_run: deepfoundry.Run, lenet_html: str) -> None:
    uris = PNG_URI.findall(lenet_html)
    assert len(uris) >= 3
    for data in uris:
        Image.open(io.BytesIO(base64.b64decode(data))).verify()
    for name in ("loss", "val_metrics", "lr", "confusion_matrix", "grad_norms"):
        _assert_png(lenet_run.path / "plots" / f"{name}.png")
    assert len(uris) == len(list((lenet_run.path / "plots").glob("*.png")))


def test_per_class_table_matches_results(lenet_run: deepfoundry.Run, lenet_html: str) -> None:
    body = re.search(r"<table class='per-class'>.*?<tbody>(.*?)</tbody>", lenet_html, re.S).group(1)
    rows = re.findall(r"<tr>(.*?)</tr>", body)
    assert len(rows) == 10
    assert [re.search(r"<td>(.*?)</td>", r).group(1) for r in rows] == lenet_run.info["class_names"]
    test = lenet_run.results["test"]
    scores = per_class_metrics(np.array(test["confusion_matrix"]))
    assert scores["f1"].mean() == pytest.approx(test["f1_macro"])
    assert scores["precision"].mean() == pytest.approx(test["precision_macro"])
    assert scores["support"].sum() == lenet_run.info["num_test"]


def test_metrics_table_holds_scalars_only(lenet_run: deepfoundry.Run, lenet_html: str) -> None:
    table = re.search(r"<table class='metrics'>(.*?)</table>", lenet_html, re.S).group(1)
    assert "<td>accuracy</td>" in table and "<td>f1_macro</td>" in table
    assert "confusion_matrix" not in table
    assert f"{lenet_run.results['test']['accuracy']:.4f}" in table


def test_feature_maps(lenet_run: deepfoundry.Run) -> None:
    html_text = write_report(lenet_run, feature_maps=True).read_text(encoding="utf-8")
    assert "<h2>Filters and feature maps</h2>" in html_text
    for name in ("filters", "feature_maps"):
        _assert_png(lenet_run.path / "plots" / f"{name}.png")
    assert len(PNG_URI.findall(html_text)) == len(list((lenet_run.path / "plots").glob("*.png")))


def test_missing_files_say_no_data(lenet_run: deepfoundry.Run, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(lenet_run.path, copy, ignore=shutil.ignore_patterns("plots", "report.html"))
    (copy / "metrics.jsonl").unlink()
    (copy / "results.json").unlink()
    html_text = write_report(deepfoundry.load_run(copy)).read_text(encoding="utf-8")
    assert html_text.count("no data") >= 3  # metrics table, learning curves, confusion matrix
    assert "Gradient norms" not in html_text


def test_feature_maps_need_a_cnn(tmp_path: Path) -> None:
    run = deepfoundry.train("lenet5-digits", out=tmp_path / "mlp",
                            overrides={**QUIET, "trainer.epochs": 1, "model.name": "mlp"})
    with pytest.raises(DeepfoundryError, match="model 'mlp' has no convolution layer; --feature-maps needs a CNN"):
        write_report(run, feature_maps=True)
    assert "<h2>Confusion matrix</h2>" in write_report(run).read_text(encoding="utf-8")


def test_regression_report(tmp_path: Path) -> None:
    run = deepfoundry.train("lenet5-digits", out=tmp_path / "diabetes", overrides={
        **QUIET, "trainer.epochs": 3, "data.name": "diabetes", "model.name": "mlp", "task.name": "regression",
        "trainer.monitor": "val_loss", "trainer.mode": "min", "optim.scheduler.name": "none"})
    html_text = write_report(run).read_text(encoding="utf-8")
    assert "<h2>Predicted vs true</h2>" in html_text
    assert "Confusion matrix" not in html_text and "per-class" not in html_text
    assert "<td>r2</td>" in html_text
    _assert_png(run.path / "plots" / "pred_vs_true.png")
    assert len(PNG_URI.findall(html_text)) >= 4  # loss, val metrics, lr, scatter
