"""Split helpers, k-fold cross-validation, the classification report sections and ``compare``, on real data."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from sklearn.datasets import load_digits

import deepfoundry
from deepfoundry.compare import compare_runs
from deepfoundry.crossval import cross_validate
from deepfoundry.errors import DeepfoundryError
from deepfoundry.registry import DATASETS
from deepfoundry.report import write_report
from deepfoundry.splits import group_split, kfold_indices, random_split, split_indices, stratified_split, time_split

QUIET = {"trainer.progress": False, "trainer.tensorboard": False}
LABELS = load_digits().target


def _partition(parts, n: int) -> None:
    """The splits are disjoint, sorted and cover every row."""
    joined = np.concatenate(parts)
    assert len(joined) == n and len(np.unique(joined)) == n
    assert all(np.all(np.diff(p) > 0) for p in parts if len(p) > 1)


# ----------------------------------------------------------------------------- split helpers

def test_stratified_split_keeps_class_shares() -> None:
    parts = stratified_split(LABELS, val_fraction=0.1, test_fraction=0.2, seed=3)
    _partition(parts, len(LABELS))
    assert len(parts.test) == round(0.2 * len(LABELS)) and len(parts.val) == round(0.1 * len(parts.train) / 0.9)
    share = np.bincount(LABELS) / len(LABELS)
    for idx in parts:
        counts = np.bincount(LABELS[idx], minlength=10)
        assert np.all(np.abs(counts - share * len(idx)) <= 1.0), counts  # within one row of the exact share


def test_random_split_is_seeded_and_covers() -> None:
    a, b = random_split(500, 0.1, 0.2, seed=0), random_split(500, 0.1, 0.2, seed=1)
    _partition(a, 500)
    assert np.array_equal(a.test, random_split(500, 0.1, 0.2, seed=0).test) and not np.array_equal(a.test, b.test)
    assert (len(a.train), len(a.val), len(a.test)) == (360, 40, 100)


def test_group_split_never_shares_a_group() -> None:
    groups = np.arange(len(LABELS)) // 7  # e.g. 7 scans per patient
    parts = group_split(groups, val_fraction=0.1, test_fraction=0.2, seed=0)
    _partition(parts, len(LABELS))
    seen = [set(groups[p]) for p in parts]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    assert len(seen[2]) == int(np.ceil(0.2 * len(set(groups))))
    with pytest.raises(DeepfoundryError, match="needs at least 3 groups; received 2"):
        group_split(np.array([0, 0, 1, 1]))


def test_time_split_trains_on_the_past() -> None:
    times = np.random.default_rng(0).permutation(1000) * 3600.0  # shuffled timestamps
    parts = time_split(times, val_fraction=0.1, test_fraction=0.2)
    _partition(parts, 1000)
    assert times[parts.train].max() < times[parts.val].min() <= times[parts.val].max() < times[parts.test].min()
    assert (len(parts.train), len(parts.val), len(parts.test)) == (720, 80, 200)


def test_split_indices_dispatch_and_errors() -> None:
    assert np.array_equal(split_indices("stratified", len(LABELS), labels=LABELS).test, stratified_split(LABELS).test)
    with pytest.raises(DeepfoundryError, match="config key 'data.split': expected one of random, stratified, group, "
                                               "time, received 'chrono'"):
        split_indices("chrono", 10)
    with pytest.raises(DeepfoundryError, match="data.split=group needs groups for every row"):
        split_indices("group", 10)
    with pytest.raises(DeepfoundryError, match=r"cannot stratify a test split of 2 of 10 rows over 2 classes \(class 1 has 1 row"):
        stratified_split(np.array([0] * 9 + [1]), test_fraction=0.2)
    with pytest.raises(DeepfoundryError, match=r"test_fraction must be a number in \[0, 1\), received 1.5"):
        random_split(10, test_fraction=1.5)


def test_kfold_indices() -> None:
    folds = kfold_indices(len(LABELS), 5, labels=LABELS, seed=0)
    held = np.concatenate([h for _, h in folds])
    assert np.array_equal(np.sort(held), np.arange(len(LABELS)))  # every row held out exactly once
    for train, h in folds:
        assert not set(train) & set(h) and len(train) + len(h) == len(LABELS)
        assert np.all(np.abs(np.bincount(LABELS[h], minlength=10) - np.bincount(LABELS) / 5) <= 1)
    groups = np.arange(len(LABELS)) // 10
    for train, h in kfold_indices(len(LABELS), 4, groups=groups):
        assert not set(groups[train]) & set(groups[h])
    with pytest.raises(DeepfoundryError, match="needs --folds >= 2, received 1"):
        kfold_indices(10, 1)
    with pytest.raises(DeepfoundryError, match="needs at least 3 rows of every class; the smallest class has 2"):
        kfold_indices(6, 3, labels=np.array([0, 0, 0, 0, 1, 1]))


def test_digits_offers_data_split() -> None:
    strat, rand = DATASETS.build("digits"), DATASETS.build("digits", {"split": "random"})
    assert "a stratified random split" in strat.info["split_note"] and "a random split" in rand.info["split_note"]
    assert len(strat.test[1]) == len(rand.test[1]) and not np.array_equal(strat.test[1], rand.test[1])
    with pytest.raises(DeepfoundryError, match="expected one of stratified, random, received 'group'"):
        DATASETS.build("digits", {"split": "group"})


def test_image_folder_offers_data_split(tmp_path: Path) -> None:
    from PIL import Image

    digits = load_digits()
    for k in (0, 1):  # real digit images, 10 per class
        (tmp_path / str(k)).mkdir()
        for j, img in enumerate(digits.images[digits.target == k][:10]):
            Image.fromarray((img * 15).astype(np.uint8)).save(tmp_path / str(k) / f"{j}.png")
    kwargs = {"root": str(tmp_path), "image_size": 8, "grayscale": True, "test_fraction": 0.2, "val_fraction": 0.25}
    strat = DATASETS.build("image-folder", kwargs)
    assert np.bincount(strat.test[1].numpy()).tolist() == [2, 2]  # stratified: 2 of each class in test
    rand = DATASETS.build("image-folder", {**kwargs, "split": "random"})
    assert len(rand.test[1]) == 4 and "a random split" in rand.info["split_note"]
    with pytest.raises(DeepfoundryError, match="config key 'data.split': expected one of stratified, random"):
        DATASETS.build("image-folder", {**kwargs, "split": "time"})


# ----------------------------------------------------------------------------- cross-validation

@pytest.fixture(scope="module")
def cv(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return cross_validate("mlp-digits", folds=2, overrides={**QUIET, "trainer.epochs": 2, "data.limit": 600},
                          out=tmp_path_factory.mktemp("cv") / "mlp-digits-cv")


def test_cross_validation_trains_every_fold(cv: dict) -> None:
    out = Path(cv["path"])
    saved = json.loads((out / "cv_summary.json").read_text())
    assert saved["folds"] == 2 and saved["stratified"] is True and len(saved["runs"]) == 2
    runs = [deepfoundry.load_run(r) for r in saved["runs"]]
    assert [r.path.name for r in runs] == ["fold-1", "fold-2"]
    assert sum(r.info["num_test"] for r in runs) == 600  # the pooled train+val rows; digits' test split is unused
    accs = [r.results["test"]["accuracy"] for r in runs]
    m = saved["metrics"]["accuracy"]
    assert m["per_fold"] == pytest.approx(accs)
    assert m["mean"] == pytest.approx(np.mean(accs)) and m["std"] == pytest.approx(np.std(accs, ddof=1))
    assert 0.5 < m["mean"] <= 1.0 and {"roc_auc", "pr_auc", "ece", "f1_macro"} <= set(saved["metrics"])
    # a fold run rebuilds its own held-out fold: evaluating it again gives the same score
    assert runs[0].evaluate("test")["accuracy"] == pytest.approx(accs[0])


def test_folds_hold_out_disjoint_rows() -> None:
    base = DATASETS.build("wine")
    pool = {tuple(r) for part in (base.train, base.val) for r in part[0].tolist()}
    held = []
    for fold in (1, 2, 3):
        s = DATASETS.build("cv-fold", {"base": "wine", "folds": 3, "fold": fold})
        test = [tuple(r) for r in s.test[0].tolist()]
        fitted = {tuple(r) for part in (s.train, s.val) for r in part[0].tolist()}
        assert not fitted & set(test) and fitted | set(test) == pool
        held += test
    assert len(held) == len(set(held)) == len(pool) == 142  # every pooled row held out exactly once
    with pytest.raises(DeepfoundryError, match="config key 'data.fold': expected an integer from 1 to 3, received 0"):
        DATASETS.build("cv-fold", {"base": "wine", "folds": 3, "fold": 0})


def test_cv_command_prints_mean_and_std(cv: dict, capsys) -> None:
    code, out, err = run_cli(["cv", "mlp-digits", "--folds", "1"], capsys)
    assert code == 2 and err.strip() == "error: cross-validation needs --folds >= 2, received 1"
    with pytest.raises(DeepfoundryError, match="cross-validation needs --folds >= 2, received 0"):
        cross_validate("mlp-digits", folds=0)
    with pytest.raises(DeepfoundryError, match="cross-validation needs a supervised recipe"):
        cross_validate("dqn-cartpole", folds=2)
    from deepfoundry.crossval import format_summary

    text = format_summary(cv)
    acc = cv["metrics"]["accuracy"]
    assert "accuracy" in text and f"{acc['mean']:.4f} +- {acc['std']:.4f}" in text and "(stratified)" in text


# ----------------------------------------------------------------------------- report

def test_classification_report_sections(cv: dict) -> None:
    run = deepfoundry.load_run(cv["runs"][0])
    page = write_report(run).read_text(encoding="utf-8")
    for heading in ("Learning curves", "Confusion matrix", "ROC and precision-recall curves", "Calibration",
                    "Worst-predicted examples"):
        assert f"<h2>{heading}</h2>" in page
    for name in ("loss", "confusion_matrix", "roc_pr", "reliability", "worst_examples"):
        assert (run.path / "plots" / f"{name}.png").is_file()
    per_class = re.search(r"<table class='per-class'>.*?<tbody>(.*?)</tbody>", page, re.S).group(1)
    assert per_class.count("<tr>") == 10
    # the macro ROC-AUC in the ranking table is the one results.json holds for the same model and split
    foot = re.search(r"<table class='ranking'>.*?<tfoot>(.*?)</tfoot>", page, re.S).group(1)
    assert f"{run.results['test']['roc_auc']:.4f}" in foot
    losses = [float(v) for v in re.findall(r"<tr><td>\d+</td>(?:<td>.*?</td>){4}<td>([\d.]+)</td></tr>",
              re.search(r"<table class='worst'>(.*?)</table>", page, re.S).group(1))]
    assert len(losses) == 16 and losses == sorted(losses, reverse=True)


def test_tabular_worst_examples_show_raw_rows(tmp_path: Path) -> None:
    from deepfoundry.report import classification_outputs, roc_pr_section, worst_examples_section

    run = deepfoundry.train("mlp-wine", out=tmp_path / "bc", overrides={
        **QUIET, "trainer.epochs": 2, "data.name": "breast-cancer"})
    outputs = classification_outputs(run)
    names = run.info["class_names"]
    worst = worst_examples_section(run, outputs, names, tmp_path)
    assert "<th>mean radius</th>" in worst and "<th>worst fractal dimension</th>" in worst
    radius = [float(v) for v in re.findall(r"<tr>(?:<td>.*?</td>){6}<td>([\d.]+)</td>", worst)]
    assert len(radius) == 16 and all(5.0 < r < 30.0 for r in radius)  # raw units (mm), not standardised values
    ranking = roc_pr_section(outputs["proba"], outputs["target"], names, tmp_path)
    body = re.search(r"<table class='ranking'>.*?<tbody>(.*?)</tbody>", ranking, re.S).group(1)
    assert body.count("<tr>") == 1 and "<td>benign</td>" in body  # binary: the positive class only
    assert f"{run.results['test']['pr_auc']:.4f}" in ranking


# ----------------------------------------------------------------------------- compare

def test_compare_runs(cv: dict, capsys) -> None:
    table = compare_runs(cv["runs"], metrics=["accuracy", "roc_auc"])
    assert table["params"] == ["data.fold"] and table["metrics"] == ["accuracy", "roc_auc"]
    assert [r["params"]["data.fold"] for r in table["rows"]] == [1, 2]
    first = deepfoundry.load_run(cv["runs"][0])
    assert table["rows"][0]["test"]["accuracy"] == first.results["test"]["accuracy"]
    assert table["rows"][0]["weights"] == sum(p.numel() for p in first.model.state_dict().values())
    code, out, _ = run_cli(["compare", *cv["runs"], "--json"], capsys)
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split()[:6] == ["run", "recipe", "model", "data", "data.fold", "weights"]
    assert lines[1].startswith("fold-1") and "mlp-digits-fold1" in lines[1]
    parsed = json.loads(lines[-1])
    assert len(parsed["rows"]) == 2 and "f1_macro" in parsed["metrics"]


def test_compare_bad_input(cv: dict, tmp_path: Path, capsys) -> None:
    (tmp_path / "notes").mkdir()
    code, _, err = run_cli(["compare", str(tmp_path / "notes"), cv["runs"][0]], capsys)
    assert code == 2 and "is not a finished run directory (no model.json)" in err
    code, _, err = run_cli(["compare", cv["path"]], capsys)
    assert code == 2 and "is a cross-validation folder, not a run directory" in err
    with pytest.raises(DeepfoundryError, match="metric 'acc' is in none of the runs' test results; available: loss"):
        compare_runs(cv["runs"], metrics=["acc"])
