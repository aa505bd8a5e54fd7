"""Piecewise-linear and periodic encodings of numeric columns (models ``mlp_ple``, ``mlp_plr``): the formulas, the training
quantiles the Adult data hands the model (training rows only), and a short real run that saves, loads
and predicts raw rows."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import deepfoundry
from conftest import FAST, require_shared_dataset
from deepfoundry.data.preprocess import numeric_frame
from deepfoundry.data.tabular import QUANTILE_LEVELS, read_adult
from deepfoundry.errors import DeepfoundryError
from deepfoundry.models.tabular import PeriodicEncoding, PiecewiseLinearEncoding, mlp_ple, mlp_plr, ple_edges
from deepfoundry.registry import DATASETS


def _ple_reference(x: float, edges: list[float]) -> list[float]:
    """Gorishniy et al.'s definition, written case by case."""
    out, t_max = [], len(edges) - 1
    for t in range(1, t_max + 1):
        lo, hi = edges[t - 1], edges[t]
        if x < lo and t > 1:
            out.append(0.0)
        elif x >= hi and t < t_max:
            out.append(1.0)
        else:
            out.append((x - lo) / (hi - lo))
    return out


def test_encoding_matches_the_definition() -> None:
    edges = [[-1.0, 0.0, 0.5, 2.0], [3.0, 4.0]]  # 3 bins, then 1 bin
    enc = PiecewiseLinearEncoding(edges, num_numeric=3)  # the third column passes through
    xs = torch.tensor([[-3.0, 2.0, 7.0], [-1.0, 3.5, 0.0], [0.25, 4.0, 1.0], [1.0, 9.0, 1.0], [5.0, 3.0, 0.0]])
    out = enc(xs)
    assert out.shape == (5, 3 + 1 + 1) and enc.dims == [3, 1, 1]
    for row, x in zip(out.tolist(), xs.tolist()):
        want = _ple_reference(x[0], edges[0]) + _ple_reference(x[1], edges[1]) + [x[2]]
        assert row == pytest.approx(want)
    # a thermometer inside the range: ones, a fraction, zeros; beyond it the end bins extrapolate
    assert out[2, :3].tolist() == pytest.approx([1.0, 0.5, 0.0])
    assert out[0, 0] == pytest.approx(-2.0) and out[4, 2] == pytest.approx(3.0)  # (5 - 0.5) / 1.5


def test_edges_from_quantiles_and_the_per_column_layer() -> None:
    assert ple_edges([0, 0, 0, 1, 2, 3, 4, 5, 6], 4) == [0.0, 2.0, 4.0, 6.0]
    assert ple_edges([2.0] * 9, 4) == [2.0, 3.0]  # a constant column: one bin
    assert ple_edges(list(range(5)), 48) == [0.0, 1.0, 2.0, 3.0, 4.0]  # fewer quantiles than bins: all of them
    m = mlp_ple(num_classes=2, num_numeric=2, cardinalities=[3], numeric_quantiles=[[0, 1, 2], [0, 5, 10]],
                d_embedding=4, hidden_sizes=[8])
    assert m.ple.dims == [4, 4] and m.column_of_dim.tolist()[:8] == [0] * 4 + [1] * 4
    assert m(torch.tensor([[0.5, 7.0, 2.0]])).shape == (1, 2)
    with pytest.raises(DeepfoundryError, match="numeric_quantiles"):
        mlp_ple(num_classes=2, num_numeric=2, cardinalities=[])
    with pytest.raises(DeepfoundryError, match="d_embedding"):
        mlp_ple(num_classes=2, num_numeric=1, numeric_quantiles=[[0, 1]], d_embedding=-1)


@pytest.fixture(scope="module")
def adult_small():
    root = require_shared_dataset("adult")
    return DATASETS.build("adult", {"root": str(root), "limit": 3000})


def test_quantiles_come_from_the_training_rows_only(adult_small) -> None:
    info = adult_small.info
    quantiles = np.array(info["model_context"]["numeric_quantiles"])
    numeric = info["numeric_columns"]
    assert quantiles.shape == (len(numeric), QUANTILE_LEVELS + 1)
    state = {c["name"]: c for c in info["tabular"]["numeric"]}
    train = adult_small.frames["train"]
    for j, col in enumerate(numeric):
        raw = numeric_frame(train, [col])[:, 0]
        raw = np.where(np.isnan(raw), state[col]["fill"], raw)
        scaled = (raw - state[col]["center"]) / state[col]["scale"]
        np.testing.assert_allclose(quantiles[j], np.quantile(scaled, np.linspace(0, 1, QUANTILE_LEVELS + 1)),
                                   atol=1e-5)


def test_mlp_ple_adult_trains_saves_and_predicts(tmp_path: Path) -> None:
    root = require_shared_dataset("adult")
    threads = torch.get_num_threads()
    try:
        run = deepfoundry.train("mlp-ple-adult", overrides={**FAST, "trainer.threads": 1, "data.root": str(root),
                                                             "data.limit": 4000, "trainer.epochs": 2},
                                out=tmp_path / "ple")
    finally:
        torch.set_num_threads(threads)
    assert run.results["epochs_run"] == 2
    assert run.results["test"]["accuracy"] >= 0.78, run.results["test"]  # the majority class is 0.76
    rows = read_adult(root / "adult.data").head(20).drop(columns=["income"])
    first = deepfoundry.load_run(run.path).predict_table(rows)
    second = deepfoundry.load_run(run.path).predict_table(rows)
    assert len(first) == 20 and first.equals(second)


def test_periodic_encoding_matches_the_definition() -> None:
    torch.manual_seed(0)
    enc = PeriodicEncoding(num_encoded=2, num_numeric=3, frequencies=3, sigma=0.5, d_embedding=4)
    x = torch.tensor([[0.3, -1.2, 1.0], [2.0, 0.0, 0.0]])
    out = enc(x)
    assert out.shape == (2, 2 * 4 + 1) and enc.dims == [4, 4, 1]
    for j in range(2):  # ReLU([cos 2 pi c x, sin 2 pi c x] W_j + b_j), column by column
        z = 2 * torch.pi * x[:, j:j + 1] * enc.frequency[j]
        want = torch.relu(torch.cat([z.cos(), z.sin()], dim=1) @ enc.weight[j] + enc.bias[j])
        torch.testing.assert_close(out[:, 4 * j:4 * j + 4], want)
    assert out[:, -1].tolist() == [1.0, 0.0]  # the missing indicator passes through
    assert enc.frequency.abs().max() <= 1.5  # truncated at 3 sigma
    lite = PeriodicEncoding(2, 2, frequencies=3, d_embedding=4, lite=True)
    assert lite.weight.shape == (6, 4) and lite(x[:, :2]).shape == (2, 8)


def test_mlp_plr_encodes_only_the_real_numeric_columns() -> None:
    m = mlp_plr(num_classes=2, num_numeric=3, cardinalities=[5], numeric_quantiles=[[0, 1], [0, 2]],
                frequencies=4, d_embedding=6, hidden_sizes=[8])
    assert m.plr.dims == [6, 6, 1] and m.column_of_dim.tolist()[:13] == [0] * 6 + [1] * 6 + [2]
    assert m(torch.tensor([[0.5, 1.0, 0.0, 3.0]])).shape == (1, 2)
    with pytest.raises(DeepfoundryError, match="sigma"):
        mlp_plr(num_classes=2, num_numeric=1, sigma=0)
    with pytest.raises(DeepfoundryError, match="num_numeric"):
        mlp_plr(num_classes=2)


def test_mlp_plr_adult_trains_saves_and_predicts(tmp_path: Path) -> None:
    root = require_shared_dataset("adult")
    threads = torch.get_num_threads()
    try:
        run = deepfoundry.train("mlp-plr-adult", overrides={**FAST, "trainer.threads": 1, "data.root": str(root),
                                                             "data.limit": 4000, "data.batch_size": 64,
                                                             "trainer.epochs": 3},
                                out=tmp_path / "plr")  # batch 64: 135 steps on the 2,880 training rows
    finally:
        torch.set_num_threads(threads)
    assert run.results["epochs_run"] == 3
    assert run.results["test"]["accuracy"] >= 0.78, run.results["test"]  # the majority class is 0.76
    assert run.model.plr.dims == [24] * 6 + [1] * (run.model.num_numeric - 6)  # 6 numeric columns, then indicators
    rows = read_adult(root / "adult.data").head(20).drop(columns=["income"])
    first = deepfoundry.load_run(run.path).predict_table(rows)
    assert len(first) == 20 and first.equals(deepfoundry.load_run(run.path).predict_table(rows))
