"""Hyperparameter tuning (deepfoundry.tune): real studies on scikit-learn's digits, pruning,
resume, the best config as a recipe, and one-line errors for bad spaces and storage."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import optuna
import pytest
from conftest import run_cli
import yaml

import deepfoundry
from deepfoundry.config import load_config
from deepfoundry.errors import DeepfoundryError
from deepfoundry.tune import load_space, tune

# a small, fast MLP on the 1,797 digits: 3 epochs of a 32-unit hidden layer, one thread
FAST = {"trainer.epochs": 3, "trainer.tensorboard": False, "trainer.progress": False, "trainer.threads": 1,
        "model.hidden_sizes": [32]}
SPACE = {"optim.lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
         "model.dropout": {"type": "float", "low": 0.0, "high": 0.3, "step": 0.1}}


def test_study_resumes_and_best_recipe_retrains(tmp_path: Path, capsys) -> None:
    out = tmp_path / "tune"
    first = tune("mlp-digits", SPACE, trials=2, sampler="random", pruner="none", overrides=FAST, out=out)
    assert first.counts == {"complete": 2}
    assert (out / "study.db").is_file() and first.storage.startswith("sqlite:///")
    for t in first.trials:  # every trial is a normal run directory
        assert (Path(t["run"]) / "model.json").is_file() and t["epochs_run"] == 3
    values = [t["value"] for t in first.trials]
    assert first.best_value == max(values) and 0.5 < first.best_value <= 1.0

    # rerunning (here through the CLI) continues the same study up to --trials in total
    space_file = tmp_path / "space.yaml"
    space_file.write_text(yaml.safe_dump(SPACE))
    sets = [a for k, v in FAST.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    code, stdout, err = run_cli(["tune", "mlp-digits", "--space", str(space_file), "--trials", "3", "--sampler", "random",
                               "--pruner", "none", "--out", str(out), "--json", *sets], capsys)
    assert code == 0, err
    second = json.loads(stdout.strip().splitlines()[-1])
    assert second["counts"] == {"complete": 3}
    rows = list(csv.DictReader(open(out / "trials.csv", encoding="utf-8")))
    assert [r["number"] for r in rows] == ["0", "1", "2"]
    trials = json.loads((out / "trials.json").read_text())
    assert [t["params"] for t in trials[:2]] == [t["params"] for t in first.trials]  # kept, not rerun
    assert trials[2]["params"] not in [t["params"] for t in trials[:2]]  # the resumed sampler draws anew
    assert (out / "trials" / "trial-0002" / "model.json").is_file()
    assert (out / "plots" / "optimization_history.png").stat().st_size > 1000
    assert (out / "plots" / "param_importances.png").stat().st_size > 1000
    assert set(second["importances"]) == set(SPACE)

    # the best config is a recipe: it loads, and training it reproduces the best trial's validation score
    best = second["best_recipe"]
    cfg = load_config(best)
    assert cfg.optim.lr == pytest.approx(second["best_params"]["optim.lr"]) and cfg.name == "mlp-digits-tuned"
    run = deepfoundry.train(best, out=tmp_path / "retrain")
    assert run.results["val"]["accuracy"] == pytest.approx(second["best_value"], abs=1e-9)

    # the same study with another space is refused (its trials would not be comparable)
    with pytest.raises(DeepfoundryError, match="was run with another space; use another --study-name"):
        tune("mlp-digits", {"optim.lr": SPACE["optim.lr"]}, trials=4, overrides=FAST, out=out)


def test_pruning_stops_runs_that_fall_behind(tmp_path: Path) -> None:
    # lr 1e-6 barely moves the weights: its epoch-1 accuracy is far below a trial at lr 1e-2
    space = {"optim.lr": {"type": "categorical", "choices": [1e-2, 1e-6]}}
    pruner = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    # the seeded random sampler draws lr 1e-6, 1e-2, 1e-6: the third trial is below the median at epoch 1
    result = tune("mlp-digits", space, trials=3, sampler="random", pruner=pruner, overrides=FAST,
                  out=tmp_path / "prune", seed=0)
    pruned = [t for t in result.trials if t["state"] == "pruned"]
    complete = [t for t in result.trials if t["state"] == "complete"]
    assert pruned and complete, result.trials
    for t in pruned:  # stopped cleanly after epoch 1: a finished run directory with fewer epochs
        assert t["params"]["optim.lr"] == 1e-6 and t["epochs_run"] < 3
        results = json.loads((Path(t["run"]) / "results.json").read_text())
        assert results["stop_reason"].startswith("pruned by optuna")
    assert all(t["epochs_run"] == 3 for t in complete)
    assert result.best_params == {"optim.lr": 1e-2}


def test_space_file_parsing(tmp_path: Path) -> None:
    params = load_space("mlp-digits")  # a shipped space
    assert {p.key for p in params} >= {"optim.lr", "model.hidden_sizes"}
    lr = next(p for p in params if p.key == "optim.lr")
    assert lr.type == "float" and lr.log and lr.low < lr.high


@pytest.mark.parametrize("space, message", [
    ({"optim.lr": {"type": "floaty", "low": 1e-4, "high": 1e-1}}, r"parameter 'optim\.lr': unknown type 'floaty'"),
    ({"optim.lrr": {"type": "float", "low": 1e-4, "high": 1e-1}}, r"parameter 'optim\.lrr': unknown config key"),
    ({"model.bogus": {"type": "int", "low": 1, "high": 3}},
     r"parameter 'model\.bogus': unknown config key 'model\.bogus' for model 'mlp'"),
    ({"trainer.epochs": {"type": "float", "low": 1.5, "high": 3.5}}, r"parameter 'trainer\.epochs'.*integer"),
    ({"optim.lr": {"type": "float", "low": 0.0, "high": 1e-1, "log": True}}, r"log scale needs low > 0"),
    ({"optim.lr": {"type": "float", "low": 1e-1, "high": 1e-4}}, r"low must be below high"),
    ({"optim.lr": {"type": "float", "lo": 1e-4, "high": 1e-1}}, r"unknown field 'lo' for type float"),
    ({"model.dropout": {"type": "categorical", "choices": []}}, r"non-empty list of choices"),
])
def test_bad_space_is_one_clear_error(space: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(DeepfoundryError, match=message):
        tune("mlp-digits", space, trials=2, out=tmp_path / "t")
    assert not (tmp_path / "t").exists()  # refused before any folder or study is made


def test_cli_bad_input_one_line_errors(tmp_path: Path, capsys) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("optim.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-1}\n")
    code, _, err = run_cli(["tune", "mlp-digits", "--space", str(space), "--out", str(tmp_path / "a")], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "unknown type 'loguniform'" in lines[0] and "optim.lr" in lines[0]
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(SPACE))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for args, pattern in [
        (["--trials", "0"], "trials must be a positive integer"),
        (["--storage", f"sqlite:///{blocker}/study.db"], "cannot open study storage"),
        (["--out", str(blocker / "sub")], "cannot create the tuning folder"),
        (["--metric", "test.accuracy"], "must be a validation metric"),
        (["--sampler", "grid"], "sampler 'grid' is not one of tpe, random"),
        (["--prune-after", "0"], "prune_after must be a positive number of epochs"),
        (["--space", str(tmp_path / "missing.yaml")], "space file .* does not exist"),
    ]:
        base = ["tune", "mlp-digits", "--space", str(good), "--out", str(tmp_path / "b")]
        code, _, err = run_cli(base + args, capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
        import re

        assert re.search(pattern, lines[0]), lines[0]


@pytest.mark.slow
def test_parallel_workers_share_one_study(tmp_path: Path) -> None:
    result = tune("mlp-digits", SPACE, trials=4, sampler="random", pruner="none", overrides=FAST,
                  out=tmp_path / "par", workers=2)
    numbers = [t["number"] for t in result.trials]
    assert len(numbers) == len(set(numbers)) and 4 <= result.counts["complete"] <= 5  # may overshoot by workers-1
    assert all((Path(t["run"]) / "model.json").is_file() for t in result.trials)
