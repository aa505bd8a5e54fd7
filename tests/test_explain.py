"""Explanations (issue 22, item 2): captum attributions of image, table and text classifiers.

Tiny real runs: LeNet-5 and an MLP on 400 of sklearn's digits, mlp-adult on 2,000 rows of UCI Adult, the
Transformer sentiment classifier on 600 synthetic sentences (one epoch each).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("captum")

from deepfoundry import load_run  # noqa: E402
from deepfoundry.cli import main  # noqa: E402
from deepfoundry.responsible.explain import explanation_summary  # noqa: E402
from conftest import last_json, one_line_error, require_shared_dataset, run_cli  # noqa: E402

FAST = ["--set", "trainer.progress=false", "--set", "trainer.tensorboard=false", "--set", "trainer.threads=1",
        "--epochs", "1", "--no-report"]


def train(args: list[str], out: Path) -> Path:
    with pytest.raises(SystemExit) as exc:
        main(["train", *args, "--out", str(out), *FAST])
    assert (exc.value.code or 0) == 0
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("explain")
    return {"lenet": train(["lenet5-digits", "--set", "data.limit=400"], base / "lenet"),
            "mlp": train(["mlp-digits", "--set", "data.limit=300"], base / "mlp"),
            "text": train(["transformer-sentiment", "--set", "data.size=600"], base / "text")}


@pytest.fixture(scope="module")
def adult_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = require_shared_dataset("adult")
    return train(["mlp-adult", "--data-root", str(root), "--set", "data.limit=2000", "--set", "model.hidden_sizes=[16]"],
                 tmp_path_factory.mktemp("explain") / "adult")


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sklearn.datasets import load_digits

    path = tmp_path_factory.mktemp("inputs") / "digits.npy"
    np.save(path, (load_digits().images[-3:] / 16.0).astype(np.float32)[:, None])  # (3, 1, 8, 8) in [0, 1]
    return path


@pytest.fixture(scope="module")
def adult_rows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from deepfoundry.data.tabular import read_adult

    path = tmp_path_factory.mktemp("inputs") / "rows.csv"
    rows = read_adult(require_shared_dataset("adult") / "adult.data").iloc[-4:].drop(columns=["income"])
    rows.to_csv(path, index=False)
    return path


def test_integrated_gradients_completeness_and_gradcam_in_the_report(runs, digit_files, capsys) -> None:
    run = runs["lenet"]
    code, out, err = run_cli(["explain", str(run), str(digit_files), "--json"], capsys)
    assert code == 0, err
    summary = last_json(out)
    assert summary["method"] == "integrated-gradients" and len(summary["inputs"]) == 3
    assert summary["completeness_error"] < 0.01
    code, out, err = run_cli(["explain", str(run), str(digit_files), "--method", "gradcam", "--target", "3",
                              "--json"], capsys)
    assert code == 0, err
    summary = last_json(out)
    assert summary["targets"] == ["3", "3", "3"]
    pngs = [run / "explanations" / f for f in summary["files"]]
    assert len(pngs) == 3 and all(p.stat().st_size > 1000 for p in pngs)
    from deepfoundry.report import write_report

    page = write_report(load_run(run)).read_text()
    assert "<h2>Explanations</h2>" in page
    assert "alt='gradcam 00-gradcam.png' src='data:image/png;base64," in page
    card = explanation_summary(run)
    assert card["method"] == "gradcam" and set(card["methods"]) == {"integrated-gradients", "gradcam"}
    text = (run / "model_card.md").read_text()  # explain rewrites the card
    assert "## Explanations" in text and "(explanations/00-gradcam.png)" in text


def test_ig_completeness_against_the_logits(runs, digit_files) -> None:
    """The reported error is what it says: sum of attributions vs z_c(x) - z_c(x') recomputed here."""
    from deepfoundry.responsible.explain import Explainee, _integrated_gradients

    run = load_run(runs["lenet"])
    task = run.task
    raw = np.load(digit_files)
    batch = task.encode_inputs(raw)
    e = Explainee(task.model, batch, raw, task.encode_inputs)
    with torch.no_grad():
        target = task.model(batch).argmax(dim=1)  # the predicted classes, explain's default
    attr, error, steps = _integrated_gradients(e, target, None)
    with torch.no_grad():
        gap = (task.model(batch) - task.model(e.baseline)).gather(1, target[:, None]).squeeze(1).double()
    rel = ((attr.double().flatten(1).sum(1) - gap).abs() / gap.abs()).max().item()
    assert rel == pytest.approx(error, abs=1e-4) and rel < 0.01


def test_sanity_check_randomises_each_layer(runs, digit_files, capsys) -> None:
    code, out, err = run_cli(["explain", str(runs["lenet"]), str(digit_files), "--method", "saliency", "--sanity",
                              "--out", str(runs["lenet"] / "sanity-check"), "--json"], capsys)
    assert code == 0, err
    rows = last_json(out)["sanity"]
    model = load_run(runs["lenet"]).model
    with_params = [n for n, m in model.named_modules() if n and any(True for _ in m.parameters(recurse=False))]
    assert [r["layer"] for r in rows] == with_params[::-1]  # output layer first, cascading down
    assert all(-1 <= r["spearman"] <= 1 for r in rows)
    assert (runs["lenet"] / "sanity-check" / "sanity.png").is_file()


def test_table_attributions_by_raw_column(adult_run, adult_rows, capsys) -> None:
    code, out, err = run_cli(["explain", str(adult_run), str(adult_rows), "--json"], capsys)
    assert code == 0, err
    summary = last_json(out)
    assert summary["completeness_error"] < 0.01  # LayerIntegratedGradients on h_0 (embeddings of the codes)
    info = json.loads((adult_run / "model.json").read_text())["info"]
    columns = info["numeric_columns"] + info["categorical_columns"]
    assert list(summary["attributions"][0]) == columns
    # Shapley sampling: the columns' values add up to z_c(x) - z_c(baseline) (efficiency), per row
    code, out, err = run_cli(["explain", str(adult_run), str(adult_rows), "--method", "shapley", "--target", ">50K",
                              "--json"], capsys)
    assert code == 0, err
    summary = last_json(out)
    run = load_run(adult_run)
    import pandas as pd

    x = run.task.encode_inputs(pd.read_csv(adult_rows))
    with torch.no_grad():
        gap = run.model(x)[:, 1] - run.model(torch.zeros_like(x))[:, 1]
    sums = [sum(row.values()) for row in summary["attributions"]]
    np.testing.assert_allclose(sums, gap.numpy(), atol=1e-4)
    assert (adult_run / "explanations" / "shapley-columns.png").is_file()


def test_text_tokens_and_attention(runs, capsys) -> None:
    run = runs["text"]
    code, out, err = run_cli(["explain", str(run), "the film was not good", "a truly great story", "--json"], capsys)
    assert code == 0, err
    summary = last_json(out)
    assert summary["completeness_error"] < 0.01
    assert [t for t, _ in summary["attributions"][0]][-1] == "good"
    page = (run / "explanations" / "integrated-gradients.html").read_text()
    assert page.count("<span") == sum(len(a) for a in summary["attributions"])
    code, out, err = run_cli(["explain", str(run), "the film was not good", "--method", "attention", "--json"], capsys)
    assert code == 0, err
    assert (run / "explanations" / "00-attention.png").stat().st_size > 1000


def test_refusals(runs, digit_files, capsys, tmp_path) -> None:
    code, _, err = run_cli(["explain", str(runs["mlp"]), str(digit_files), "--method", "gradcam"], capsys)
    one_line_error(code, err, r"--method gradcam needs a convolutional image model; .* has no Conv2d")
    np.save(tmp_path / "wrong.npy", np.zeros((5, 5), dtype=np.float32))
    code, _, err = run_cli(["explain", str(runs["lenet"]), str(tmp_path / "wrong.npy")], capsys)
    one_line_error(code, err, r"input of shape .* does not fit the model")
    code, _, err = run_cli(["explain", str(runs["lenet"]), str(digit_files), "--method", "lime"], capsys)
    one_line_error(code, err, r"--method must be one of")
    code, _, err = run_cli(["explain", str(runs["lenet"]), str(digit_files), "--method", "attention"], capsys)
    one_line_error(code, err, r"--method attention needs a Transformer")
    code, _, err = run_cli(["explain", str(runs["lenet"]), str(digit_files), "--target", "eleven"], capsys)
    one_line_error(code, err, r"--target 'eleven' is neither a class index nor a label")


@pytest.mark.slow
def test_seq2seq_attention_map(tmp_path, capsys) -> None:
    run = train(["seq2seq-dates", "--set", "data.size=1500"], tmp_path / "dates")
    code, out, err = run_cli(["explain", str(run), "12 March 2021", "--method", "attention", "--json"], capsys)
    assert code == 0, err
    assert (run / "explanations" / "00-attention.png").stat().st_size > 1000
