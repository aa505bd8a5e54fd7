"""Export and optimisation (deploy/export.py, deploy/optimize.py): bundles, parity, refusals, int8 round trips.

Fast tests train tiny runs here (one or two epochs on scikit-learn's digits, the first 3,000 Adult rows,
the synthetic sentiment corpus, sunspots); the acceptance runs of issue 21 are marked ``slow``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import deepfoundry
from conftest import FAST, require_shared_dataset
from test_cli import assert_one_line_error, run_cli
from deepfoundry.errors import DeepfoundryError

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from deepfoundry.deploy.export import OnnxPredictor, export_run, load_graph, read_bundle  # noqa: E402
from deepfoundry.deploy.optimize import (INT8_FILE, int8_state, load_int8_state, load_quantized,  # noqa: E402
                                         optimize_run, quantize_dynamic_graph)

QUICK = {**FAST, "trainer.report": False, "trainer.threads": 1}


def _train(name: str, tmp: pytest.TempPathFactory, **overrides: object) -> deepfoundry.Run:
    return deepfoundry.train(name, overrides={**QUICK, **overrides}, out=tmp.mktemp("runs") / name)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> deepfoundry.Run:
    """LeNet-5 (with batch norm) on scikit-learn's digits: a CNN with a saved standardisation."""
    return _train("lenet5-digits", tmp_path_factory, **{"trainer.epochs": 1})


@pytest.fixture(scope="module")
def adult_run(tmp_path_factory: pytest.TempPathFactory) -> deepfoundry.Run:
    """mlp_tabular with categorical embeddings on the first 3,000 real Adult rows (saved preprocessing)."""
    from deepfoundry.data.tabular import read_adult

    frame = read_adult(require_shared_dataset("adult") / "adult.data").head(3000)
    csv = tmp_path_factory.mktemp("csv") / "adult3k.csv"
    frame.to_csv(csv, index=False, na_rep="?")
    return _train("mlp-tabular", tmp_path_factory, **{"data.path": str(csv), "data.target": "income",
                                                      "trainer.epochs": 1})


@pytest.fixture(scope="module")
def lstm_text_run(tmp_path_factory: pytest.TempPathFactory) -> deepfoundry.Run:
    return _train("gru-sentiment", tmp_path_factory, **{"model.name": "lstm", "trainer.epochs": 1,
                                                         "data.size": 1500})


# ---------------------------------------------------------------------------------------------- export
def test_image_bundle_onnx_parity_and_predictor(digits_run: deepfoundry.Run, tmp_path: Path) -> None:
    result = export_run(digits_run.path, "onnx", out=tmp_path / "b")
    assert result["format"] == "onnx" and result["checked"] == digits_run.info["num_test"]
    assert 0 <= result["max_abs_diff"] <= 1e-4
    assert {"model.onnx", "model.safetensors", "model.json", "config.yaml", "bundle.json",
            "reference.json"} <= set(result["files"])
    reference = json.loads((tmp_path / "b" / "reference.json").read_text())  # the drift reference of item 5
    assert reference["input_kind"] == "image" and reference["features"] and reference["predictions"]
    meta = read_bundle(tmp_path / "b")
    shape = tuple(digits_run.info["input_shape"])  # (1, 8, 8)
    assert meta["input_kind"] == "image" and meta["inputs"][0]["shape"] == ["batch", *shape]
    assert meta["labels"] == [str(k) for k in range(10)] and meta["metrics"]["accuracy"] > 0.5
    assert meta["standardisation"] == "in the graph" and meta["max_abs_diff"] == result["max_abs_diff"]
    bundle_run = deepfoundry.load_run(tmp_path / "b")  # the bundle opens as a run
    images = np.random.default_rng(0).random((5, *shape), dtype=np.float32)
    predictor = OnnxPredictor(tmp_path / "b")
    # forward takes the batch as encode_inputs gives it (standardised); the graph itself takes raw pixels
    probs = predictor.forward(bundle_run.task.encode_inputs(images))
    np.testing.assert_allclose(probs, digits_run.predict_proba(images), atol=1e-5)
    np.testing.assert_allclose(predictor.run(images), probs, atol=1e-5)
    np.testing.assert_allclose(predictor.forward(bundle_run.task.encode_inputs(images).numpy()), probs, atol=1e-6)
    rows = predictor.predict_rows(images)
    assert [r["label"] for r in rows] == [str(k) for k in digits_run.predict(images)]
    # dynamic batch: one example and many
    assert predictor.run(images[:1]).shape == (1, 10) and predictor.run(np.repeat(images, 13, 0)).shape == (65, 10)


@pytest.mark.parametrize("fmt", ["torchscript", "exported-program"])
def test_image_bundle_other_formats(digits_run: deepfoundry.Run, tmp_path: Path, fmt: str) -> None:
    result = export_run(digits_run.path, fmt, out=tmp_path / fmt, parity_limit=100)
    assert result["checked"] == 100 and result["max_abs_diff"] <= 1e-4
    assert ("model.ts" if fmt == "torchscript" else "model.pt2") in result["files"]
    images = np.random.default_rng(1).random((3, *digits_run.info["input_shape"]), dtype=np.float32)
    np.testing.assert_allclose(load_graph(tmp_path / fmt)(torch.from_numpy(images)),
                               digits_run.predict_proba(images), atol=1e-5)


def test_default_bundle_folder_is_inside_the_run(digits_run: deepfoundry.Run) -> None:
    result = export_run(digits_run.path, "torchscript", parity_limit=10)
    assert Path(result["bundle"]) == digits_run.path / "export" / "torchscript"


def test_tabular_bundle_with_embeddings(adult_run: deepfoundry.Run, tmp_path: Path) -> None:
    result = export_run(adult_run.path, "onnx", out=tmp_path / "b")
    assert result["max_abs_diff"] <= 1e-4 and result["checked"] == adult_run.info["num_test"]
    meta = read_bundle(tmp_path / "b")
    kinds = {c["name"]: c["kind"] for c in meta["columns"]}
    assert kinds["age"] == "numeric" and kinds["workclass"] == "categorical"
    assert meta["tabular"]["encoding"] == "embedding" and meta["labels"] == adult_run.info["class_names"]
    from deepfoundry.data.tabular import read_adult

    rows = read_adult(require_shared_dataset("adult") / "adult.data").iloc[5000:5040].drop(columns=["income"])
    rows.loc[rows.index[0], "workclass"] = "never-seen-category"  # unseen category: code 0, as in Python
    predictor = OnnxPredictor(tmp_path / "b")
    np.testing.assert_allclose(predictor.forward(adult_run.task.encode_inputs(rows)), adult_run.predict_proba(rows),
                               atol=1e-5)
    assert [r["label"] for r in predictor.predict_rows(rows)] == [r["label"] for r in adult_run.predict_rows(rows)]


def test_text_bundle_padded_lstm(lstm_text_run: deepfoundry.Run, tmp_path: Path) -> None:
    result = export_run(lstm_text_run.path, "onnx", out=tmp_path / "b")
    assert result["max_abs_diff"] <= 1e-4
    meta = read_bundle(tmp_path / "b")
    assert [s["name"] for s in meta["inputs"]] == ["tokens", "lengths"] and meta["tokenizer"]
    texts = ["not good", "a truly wonderful and moving film but too long", "bad", "good " * 20]
    predictor = OnnxPredictor(tmp_path / "b")
    np.testing.assert_allclose(predictor.forward(lstm_text_run.task.encode_inputs(texts)),
                               lstm_text_run.predict_proba(texts), atol=1e-5)  # different lengths in one batch
    assert export_run(lstm_text_run.path, "torchscript", out=tmp_path / "ts", parity_limit=200)["max_abs_diff"] <= 1e-4
    with pytest.raises(DeepfoundryError, match="sequence length of recurrent layers"):
        export_run(lstm_text_run.path, "exported-program", out=tmp_path / "pt2", parity_limit=50)


@pytest.mark.parametrize("bidirectional,layers", [(False, 2), (True, 1)])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_padded_path_equals_packed(cell: str, bidirectional: bool, layers: int) -> None:
    from deepfoundry import MODELS

    torch.manual_seed(0)
    model = MODELS.build(cell, vocab_size=40, num_classes=3, hidden_size=8, embedding_dim=6,
                         bidirectional=bidirectional, num_layers=layers).eval()
    lengths = torch.tensor([9, 1, 4, 6, 2])
    tokens = torch.randint(1, 40, (5, 9)) * (torch.arange(9)[None] < lengths[:, None])  # 0 = padding after each end
    packed = model((tokens, lengths))
    model.prepare_export()
    torch.testing.assert_close(model((tokens, lengths)), packed, atol=1e-6, rtol=0)
    model.padded = False
    torch.testing.assert_close(model((tokens, lengths)), packed, atol=0, rtol=0)  # training path unchanged


def test_bidirectional_stack_refuses_export() -> None:
    from deepfoundry import MODELS

    model = MODELS.build("gru", vocab_size=10, num_classes=2, hidden_size=4, bidirectional=True, num_layers=2)
    with pytest.raises(DeepfoundryError, match="cannot be exported"):
        model.prepare_export()


def test_forecasting_bundle(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    run = _train("lstm-sunspots", tmp_path_factory, **{"trainer.epochs": 2})
    result = export_run(run.path, "onnx", out=tmp_path / "b")
    assert result["max_abs_diff"] <= 1e-4 and result["checked"] == run.data().test.num_samples
    meta = read_bundle(tmp_path / "b")
    assert meta["target_scaling"]["scaler"] == run.info["scaler"] and meta["inputs"][0]["shape"] == ["batch", 33]
    windows = np.linspace(10, 120, 33 * 4, dtype=np.float32).reshape(4, 33)  # raw windows in the series' units
    np.testing.assert_allclose(OnnxPredictor(tmp_path / "b").predict_rows(windows)[0]["value"],
                               run.predict_rows(windows)[0]["value"], rtol=1e-5)


def test_parity_failure_is_one_line_and_leaves_no_bundle(digits_run: deepfoundry.Run, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import deepfoundry.deploy.export as export

    monkeypatch.setattr(export, "PARITY_TOLERANCE", -1.0)  # any difference (even 0) is now too much
    with pytest.raises(DeepfoundryError, match=r"differs from the run's predictions by .* nothing was exported"):
        export_run(digits_run.path, "onnx", out=tmp_path / "b", parity_limit=20)
    assert not (tmp_path / "b" / "model.onnx").exists() and not (tmp_path / "b" / "bundle.json").exists()


def test_missing_extra_is_one_line_naming_it(digits_run: deepfoundry.Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(DeepfoundryError, match=r"deploy extra: pip install 'deepfoundry\[deploy\]'"):
        export_run(digits_run.path, "onnx")


def test_families_without_one_graph_refuse(tmp_path_factory: pytest.TempPathFactory) -> None:
    run = _train("vae-digits", tmp_path_factory, **{"trainer.epochs": 1})
    with pytest.raises(DeepfoundryError, match="cannot be exported"):
        export_run(run.path, "onnx")


def test_cli_export_and_errors(digits_run: deepfoundry.Run, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, err = run_cli(["export", str(digits_run.path), "--out", str(tmp_path / "b"), "--limit", "50", "--json"],
                             capsys)
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["checked"] == 50 and result["max_abs_diff"] <= 1e-4 and "exported onnx" in out
    for args, pattern in [(["export", str(digits_run.path), "--format", "tflite"], "unknown export format 'tflite'"),
                          (["export", str(tmp_path)], "not a finished run directory"),
                          (["optimize", str(digits_run.path), "--quantize", "int4"], "unknown --quantize 'int4'"),
                          (["optimize", str(digits_run.path), "--prune", "1.5"], "--prune is the fraction")]:
        assert_one_line_error(*run_cli(args, capsys), pattern)


# ---------------------------------------------------------------------------------------------- optimize
def test_optimize_dynamic_and_pruning_table(adult_run: deepfoundry.Run, tmp_path: Path) -> None:
    result = optimize_run(adult_run.path, quantize="dynamic", prune=0.5, out=tmp_path, repeats=5)
    rows = {r["variant"]: r for r in result["rows"]}
    assert [r["variant"] for r in result["rows"]] == ["original", "onnx", "torch-int8-dynamic", "onnx-int8-dynamic",
                                                      "pruned-0.5"]
    assert json.loads((tmp_path / "optimize.json").read_text())["rows"] == json.loads(json.dumps(result["rows"]))
    for row in result["rows"]:
        assert row["metric_name"] == "accuracy" and 0 < row["p50_ms_b1"] <= row["p99_ms_b1"]
        assert row["size_bytes"] > 0 and row["p50_ms_b32"] > 0
    assert rows["original"]["metric"] == pytest.approx(adult_run.results["test"]["accuracy"], abs=1e-9)
    assert rows["onnx"]["metric"] == pytest.approx(rows["original"]["metric"], abs=1e-9)
    assert rows["torch-int8-dynamic"]["size_bytes"] < 0.5 * rows["original"]["size_bytes"]
    assert rows["onnx-int8-dynamic"]["size_bytes"] < rows["onnx"]["size_bytes"]
    assert rows["pruned-0.5"]["zero_fraction"] == pytest.approx(0.5, abs=0.01)
    pruned = deepfoundry.load_run(tmp_path / "pruned-0.5")  # a dense run directory with zeros
    linear = [m.weight for m in pruned.model.modules() if isinstance(m, torch.nn.Linear)]
    zeros = sum(int((w == 0).sum()) for w in linear) / sum(w.numel() for w in linear)
    assert zeros == pytest.approx(0.5, abs=0.01)
    # torch int8: only int8 weights with float scales, no pickle, and the reloaded graph is the quantized one
    from safetensors import safe_open

    with safe_open(str(tmp_path / "torch-int8-dynamic" / INT8_FILE), "pt") as fh:
        dtypes = {k: fh.get_tensor(k).dtype for k in fh.keys()}
    int8 = [k for k in dtypes if k.endswith(".int8")]
    assert int8 and all(dtypes[k] == torch.int8 for k in int8)
    quantized = quantize_dynamic_graph(adult_run.task.export_graph())
    reloaded = load_quantized(tmp_path / "torch-int8-dynamic")
    x = adult_run.task.export_feeds(next(iter(adult_run.data().test))[0])
    torch.testing.assert_close(reloaded(*x), quantized(*x), atol=0, rtol=0)


def test_int8_state_round_trips_a_dynamic_lstm(lstm_text_run: deepfoundry.Run) -> None:
    graph = lstm_text_run.task.export_graph()
    quantized = quantize_dynamic_graph(graph)
    fresh = quantize_dynamic_graph(graph)
    for p in fresh.parameters():  # a different float model: everything must come from the stored tensors
        p.data.zero_()
    state = int8_state(quantized)
    assert any(k.endswith("weight_ih_l0.int8") for k in state)
    load_int8_state(quantize_dynamic_graph(graph), state)
    restored = load_int8_state(fresh, state)
    tokens, lengths = lstm_text_run.task.encode_inputs(["good but not great", "awful"])
    torch.testing.assert_close(restored(tokens, lengths), quantized(tokens, lengths), atol=0, rtol=0)


def test_optimize_static_cnn(digits_run: deepfoundry.Run, tmp_path: Path) -> None:
    result = optimize_run(digits_run.path, quantize="static", out=tmp_path, repeats=3)
    rows = {r["variant"]: r for r in result["rows"]}
    assert list(rows) == ["original", "onnx", "onnx-int8-static"]
    assert rows["onnx-int8-static"]["size_bytes"] < 0.5 * rows["onnx"]["size_bytes"]
    assert rows["onnx-int8-static"]["metric"] >= rows["original"]["metric"] - 0.05
    import onnx

    ops = {n.op_type for n in onnx.load(str(tmp_path / "onnx-int8-static" / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops  # QDQ format
    assert read_bundle(tmp_path / "onnx-int8-static")["format"] == "onnx"


# ---------------------------------------------------------------------------------------------- acceptance
@pytest.mark.slow
@pytest.mark.parametrize("recipe,overrides", [
    ("lenet5-mnist", {"data.root": "mnist-t10k", "trainer.epochs": 2}),
    ("mlp-adult", {"data.root": "adult", "trainer.epochs": 3}),
    ("gru-sentiment", {"model.name": "lstm", "trainer.epochs": 3}),
])
def test_acceptance_onnx_parity_on_1000_test_inputs(recipe: str, overrides: dict, tmp_path_factory) -> None:
    if "data.root" in overrides:
        overrides = {**overrides, "data.root": str(require_shared_dataset(overrides["data.root"]))}
    run = _train(recipe, tmp_path_factory, **overrides)
    result = export_run(run.path, "onnx")
    assert result["checked"] == 1000 and result["max_abs_diff"] <= 1e-4
