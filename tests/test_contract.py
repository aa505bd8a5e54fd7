"""The per-family input/output contract (``Task.encode_inputs`` -> ``predict`` -> ``decode_outputs``) and the
run directory every ``train`` leaves: one real short run per family, a toy family added without touching
api, cli or report, and the registries' module lists."""
from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import deepfoundry
from deepfoundry import DATASETS, MODELS, TASKS
from deepfoundry.cli import main
from deepfoundry.errors import DeepfoundryError

from conftest import FAST

SRC = Path(deepfoundry.__file__).parent
QUIET = {"trainer.progress": False, "trainer.tensorboard": False}  # the report stays on: it is under test


def _train(recipe: str, out: Path, **overrides):
    return deepfoundry.train(recipe, overrides={**QUIET, **overrides}, out=out)


def _assert_run_files(run) -> None:
    for name in ("config.yaml", "metrics.jsonl", "model.safetensors", "model.json", "results.json",
                 "report.html", "model_card.md"):
        assert (run.path / name).is_file(), f"{run.path.name} has no {name}"
    card = (run.path / "model_card.md").read_text(encoding="utf-8")
    assert run.config.name in card and "torch" in card


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One short real run per family (the report and model card written, as every train does)."""
    root = tmp_path_factory.mktemp("contract")
    return {
        "image": _train("lenet5-digits", root / "image", **{"trainer.epochs": 1}),
        "text": _train("gru-sentiment", root / "text", **{"trainer.epochs": 1}),
        "forecast": _train("lstm-sunspots", root / "forecast", **{"trainer.epochs": 2}),
        "graph": _train("gcn-karate", root / "graph", **{"trainer.epochs": 20}),
        "table": _train("mlp-wine", root / "table", **{"trainer.epochs": 2}),
    }


def test_every_train_leaves_report_and_model_card(runs) -> None:
    for run in runs.values():
        _assert_run_files(run)


def test_image_contract(runs, tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    run = runs["image"]
    digits = load_digits()
    x = (digits.images[-6:] / 16.0)[:, None].astype("float32")  # raw pixels in [0, 1]
    rows = run.predict_rows(x)
    assert len(rows) == 6 and set(rows[0]) == {"class", "label", "probability", "probabilities"}
    assert [r["class"] for r in rows] == list(run.predict(x))
    np.testing.assert_allclose([r["probability"] for r in rows], run.predict_proba(x).max(axis=1), rtol=1e-6)
    assert sum(r["class"] == t for r, t in zip(rows, digits.target[-6:])) >= 4
    np.save(tmp_path / "x.npy", x)
    files = run.predict_files([str(tmp_path / "x.npy")], out=tmp_path / "preds.csv")
    assert [f["input"] for f in files] == [f"{tmp_path / 'x.npy'}[{i}]" for i in range(6)]
    table = pd.read_csv(tmp_path / "preds.csv")
    assert list(table.columns[:4]) == ["input", "class", "label", "probability"] and "p(9)" in table.columns
    with pytest.raises(DeepfoundryError, match="does not fit the model"):
        run.predict(np.zeros((2, 1, 5, 5), dtype="float32"))


def test_text_contract(runs) -> None:
    run = runs["text"]
    rows = run.predict_rows(["the movie was not good at all", "a truly great film"])
    assert len(rows) == 2 and all(r["label"] in run.info["class_names"] for r in rows)
    assert [r["class"] for r in rows] == list(run.predict(["the movie was not good at all", "a truly great film"]))
    files = run.predict_files(["a truly great film"])
    assert files[0]["input"] == "a truly great film" and files[0]["label"] == rows[1]["label"]


def test_forecast_contract(runs) -> None:
    run = runs["forecast"]
    window = int(run.info["input_shape"][0])
    last = np.linspace(10.0, 80.0, window).astype("float32")  # values in the series' own units
    rows = run.predict_rows(last)
    assert len(rows) == 1 and set(rows[0]) == {"value"}
    assert rows[0]["value"] == pytest.approx(float(run.predict(last)[0]), rel=1e-6)


def test_graph_contract(runs) -> None:
    run = runs["graph"]
    batch = run.data().test.batch()
    rows = run.predict_rows(batch)
    assert len(rows) == batch["x"].shape[0] and "label" in rows[0]
    with pytest.raises(DeepfoundryError, match="batch dict"):
        run.predict(np.zeros(3))
    with pytest.raises(DeepfoundryError, match="predict from Python"):
        run.predict_files(["x.npy"])


def test_table_contract_and_refusals(runs) -> None:
    from sklearn.datasets import load_wine

    run = runs["table"]
    wine = load_wine()
    rows = run.predict_rows(wine.data[:3].astype("float32"))
    assert [r["class"] for r in rows] == list(run.predict(wine.data[:3].astype("float32")))
    with pytest.raises(DeepfoundryError, match="generate needs a language-model run"):
        run.generate("x")
    with pytest.raises(DeepfoundryError, match="play needs a reinforcement-learning run"):
        run.play(1)


def test_cli_predict_is_the_contract(runs, tmp_path: Path, capsys) -> None:
    run = runs["text"]
    with pytest.raises(SystemExit) as exc:
        main(["predict", str(run.path), "a truly great film", "--json"])
    assert not exc.value.code
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["predictions"] == run.predict_files(["a truly great film"])


def test_tabular_csv_contract(tmp_path: Path) -> None:
    """Raw CSV rows in (missing values and all), the input columns and the answer out."""
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.iloc[:, [0, 1, 2, 3, -1]]
    frame["target"] = frame["target"].map({0: "malignant", 1: "benign"})
    frame.to_csv(tmp_path / "cancer.csv", index=False)
    run = deepfoundry.train("mlp-tabular", overrides={**FAST, "trainer.epochs": 2, "data.path": str(tmp_path / "cancer.csv"),
                                                       "data.target": "target"}, out=tmp_path / "run")
    _assert_run_files(run)
    new = frame.drop(columns="target").iloc[:4].copy()
    new.iloc[0, 1] = np.nan
    new.to_csv(tmp_path / "new.csv", index=False)
    rows = run.predict_files([str(tmp_path / "new.csv")], out=tmp_path / "preds.csv")
    assert [r["input"] for r in rows] == [f"{tmp_path / 'new.csv'}[{i}]" for i in range(4)]
    assert all(r["label"] in ("malignant", "benign") for r in rows)
    written = pd.read_csv(tmp_path / "preds.csv")
    assert list(written.columns[:4]) == list(new.columns)
    assert {"label", "probability", "p(benign)", "p(malignant)"} <= set(written.columns)
    assert list(run.predict_table(new)["prediction"]) == [r["label"] for r in rows]


def test_language_model_refuses_predict(tmp_path: Path) -> None:
    text = tmp_path / "input.txt"
    text.write_text("To be, or not to be, that is the question.\n" * 80, encoding="utf-8")
    run = deepfoundry.train("char-lstm-shakespeare", overrides={
        **FAST, "trainer.epochs": 1, "data.root": str(text), "data.seq_len": 16, "data.eval_seq_len": 32,
        "data.batch_size": 8, "model.hidden_size": 16, "model.embedding_dim": 8, "task.sample_tokens": 10},
        out=tmp_path / "lm")
    with pytest.raises(DeepfoundryError, match="language model: use Run.generate"):
        run.predict(["hello"])
    with pytest.raises(DeepfoundryError, match="language model: use Run.generate"):
        run.predict_files(["hello"])
    assert run.generate("To", tokens=5, seed=0).startswith("To")


# ----------------------------------------------------------------------------- a toy family

TOY = '''
"""A toy family: parity of two bits, registered from outside the package."""
import torch
from torch import nn
from deepfoundry import DATASETS, MODELS, TASKS
from deepfoundry.data import Splits
from deepfoundry.tasks.base import ClassifierOutputs, Task


@DATASETS.register("toy-xor")
def toy_xor(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 2, (600, 2), generator=g).float()
    y = (x[:, 0] != x[:, 1]).long()
    x = x + 0.05 * torch.randn(x.shape, generator=g)
    info = {"input_kind": "table", "num_classes": 2, "class_names": ["same", "different"], "in_features": 2}
    return Splits((x[:400], y[:400]), (x[400:500], y[400:500]), (x[500:], y[500:]), info)


@MODELS.register("toy-net")
def toy_net(in_features: int = 2, num_classes: int = 2):
    return nn.Sequential(nn.Linear(in_features, 16), nn.Tanh(), nn.Linear(16, num_classes))


class ToyTask(ClassifierOutputs, Task):
    report_sections = ("curves",)

    def training_step(self, batch):
        x, y = batch
        return nn.functional.cross_entropy(self.model(x), y)

    def reset_metrics(self):
        self.right, self.seen = 0, 0

    def evaluation_step(self, batch):
        x, y = batch
        self.right += int((self.model(x).argmax(1) == y).sum())
        self.seen += len(y)

    def compute_metrics(self):
        return {"accuracy": self.right / max(1, self.seen)}

    @torch.no_grad()
    def predict(self, x):
        return torch.softmax(self.model(x), dim=1)


@TASKS.register("toy-task")
def toy_task(*, model, info):
    return ToyTask(model, info)
'''


@pytest.fixture()
def toy_family(tmp_path: Path):
    (tmp_path / "toy_family.py").write_text(TOY, encoding="utf-8")
    sys.path.insert(0, str(tmp_path))
    import toy_family  # noqa: F401  (registers toy-xor, toy-net, toy-task)

    yield
    sys.path.remove(str(tmp_path))
    sys.modules.pop("toy_family", None)
    for registry, name in ((DATASETS, "toy-xor"), (MODELS, "toy-net"), (TASKS, "toy-task")):
        registry._builders.pop(name, None)


def test_a_toy_family_needs_no_edit_of_api_cli_or_report(toy_family, tmp_path: Path) -> None:
    cfg = deepfoundry.RunConfig.model_validate({
        "name": "toy", "data": {"name": "toy-xor", "batch_size": 32, "normalize": False},
        "model": {"name": "toy-net"}, "task": {"name": "toy-task"}, "optim": {"lr": 0.05},
        "trainer": {"epochs": 15, "progress": False, "tensorboard": False, "monitor": "val_accuracy", "mode": "max"}})
    run = deepfoundry.train(cfg, out=tmp_path / "toy")
    _assert_run_files(run)
    assert run.results["test"]["accuracy"] >= 0.9
    rows = deepfoundry.load_run(run.path).predict_rows([[0.0, 1.0], [1.0, 1.0]])
    assert [r["label"] for r in rows] == ["different", "same"]


# ----------------------------------------------------------------------------- registries list their modules

def _registering_modules(registry_name: str) -> set[str]:
    found = set()
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "register"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == registry_name):
                rel = path.relative_to(SRC.parent).with_suffix("")
                found.add(".".join(rel.parts))
    return found


@pytest.mark.parametrize("name, registry", [("MODELS", MODELS), ("DATASETS", DATASETS), ("TASKS", TASKS)])
def test_every_registering_module_is_listed(name: str, registry) -> None:
    missing = _registering_modules(name) - set(registry.modules)
    assert not missing, f"{name} registers builders in {sorted(missing)} that registry.py does not list"
    for module in registry.modules:
        __import__(module)


def test_importing_the_package_builds_no_model_module() -> None:
    import subprocess

    code = ("import sys, deepfoundry; bad = [m for m in sys.modules if m.startswith(('deepfoundry.models.', "
            "'deepfoundry.tasks.', 'deepfoundry.report')) and m != 'deepfoundry.tasks.base']; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_decoders_give_json_ready_rows() -> None:
    from deepfoundry.tasks.base import ClassifierOutputs, ValueOutputs

    class C(ClassifierOutputs):
        info = {"class_names": ["a", "b"]}

    rows = C().decode_outputs(torch.tensor([[0.25, 0.75]]))
    assert rows == [{"class": 1, "label": "b", "probability": 0.75, "probabilities": {"a": 0.25, "b": 0.75}}]
    assert ValueOutputs().decode_outputs(torch.tensor([[1.5], [2.0]])) == [{"value": 1.5}, {"value": 2.0}]
    assert ValueOutputs().decode_outputs(torch.tensor([[1.0, 2.0]])) == [{"values": [1.0, 2.0]}]
    json.dumps(rows)
