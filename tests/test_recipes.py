"""End-to-end recipes on real data, with the acceptance floors of the foundation issue."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import deepfoundry
from conftest import FAST, require_shared_dataset


def test_lenet5_digits_recipe(tmp_path: Path) -> None:
    run = deepfoundry.train("lenet5-digits", overrides=FAST, out=tmp_path / "r")
    assert run.results["test"]["accuracy"] >= 0.97
    # the saved run rebuilds the same model and the same numbers
    again = deepfoundry.load_run(run.path)
    assert again.evaluate("test")["accuracy"] == pytest.approx(run.results["test"]["accuracy"])
    data = again.data()
    raw = data.test.x * torch.tensor(again.info["preprocess"]["std"]).reshape(1, -1, 1, 1) \
        + torch.tensor(again.info["preprocess"]["mean"]).reshape(1, -1, 1, 1)
    pred = again.predict(raw.numpy())
    assert (pred == data.test.y.numpy()).mean() == pytest.approx(run.results["test"]["accuracy"], abs=1e-6)
    assert again.predict_proba(raw[:3]).sum(axis=1) == pytest.approx(np.ones(3), abs=1e-5)


def test_lenet5_mnist_t10k_protocol(tmp_path: Path, capsys) -> None:
    root = require_shared_dataset("mnist-t10k")
    run = deepfoundry.train("lenet5-mnist", overrides={**FAST, "data.root": str(root)}, out=tmp_path / "m")
    assert "first 8,000 images to train/validate and the last 2,000 to test" in capsys.readouterr().err
    assert run.info["num_test"] == 2000 and run.info["num_train"] + run.info["num_val"] == 8000
    assert run.results["test"]["accuracy"] >= 0.98


def test_mlp_tabular_recipes(tmp_path: Path) -> None:
    wine = deepfoundry.train("mlp-wine", overrides=FAST, out=tmp_path / "w")
    assert wine.results["test"]["accuracy"] >= 0.9
    diabetes = deepfoundry.train("mlp-diabetes", overrides=FAST, out=tmp_path / "d")
    test = diabetes.results["test"]
    assert test["r2"] > 0.2 and test["rmse"] == pytest.approx(test["mse"] ** 0.5)
    average_patient = np.array([diabetes.info["preprocess"]["mean"]] * 2, np.float32)  # raw feature units
    values = diabetes.predict(average_patient)
    assert values.shape == (2,)
    assert abs(values[0] - diabetes.info["target_mean"]) < 60  # in the target's units (disease progression)


def _linear_baseline(data) -> float:
    from sklearn.linear_model import LogisticRegression

    x, y = data.train.x.flatten(1).numpy(), data.train.y.numpy()
    clf = LogisticRegression(max_iter=300).fit(x, y)
    return float((clf.predict(data.test.x.flatten(1).numpy()) == data.test.y.numpy()).mean())


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("model", ["vgg11_bn", "alexnet"])
def test_vgg_and_alexnet_beat_linear_baseline_on_cifar10(model: str, tmp_path: Path) -> None:
    """Full-width VGG11-BN and AlexNet, end to end on 5,000 CIFAR-10 images (the local binary copy)."""
    root = require_shared_dataset("cifar10-jpeg")
    recipe = "vgg11-bn-cifar10" if model == "vgg11_bn" else "alexnet-cifar10"
    run = deepfoundry.train(recipe, overrides={**FAST, "data.root": str(root), "data.limit": 5000,
                                               "trainer.epochs": 4, "data.batch_size": 64}, out=tmp_path / model)
    baseline = _linear_baseline(run.data())
    assert run.results["test"]["accuracy"] > baseline + 0.03, (run.results["test"]["accuracy"], baseline)
