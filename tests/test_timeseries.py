"""Time series: windowing without leakage, baselines, explicit LSTM/GRU cells, the adding problem, BPTT."""
from __future__ import annotations

import doctest
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import deepfoundry
from deepfoundry.cli import main
from deepfoundry.data import timeseries
from deepfoundry.data.timeseries import adding_problem, make_forecasting_splits, split_sizes
from deepfoundry.errors import DeepfoundryError
from deepfoundry.models import forecaster
from deepfoundry.nn import recurrent
from deepfoundry.nn.recurrent import ExplicitRecurrent, hidden_state_gradients
from deepfoundry.registry import DATASETS
from deepfoundry.tasks import forecasting
from deepfoundry.tasks.forecasting import ForecastingTask

FAST = {"trainer.progress": False, "trainer.tensorboard": False}


@pytest.mark.parametrize("module", [timeseries, forecaster, recurrent, forecasting])
def test_docstring_examples_run(module):
    result = doctest.testmod(module, extraglobs={"torch": torch, "np": np})
    assert result.failed == 0


# ---------------------------------------------------------------- windowing and leakage
def _split(values, **kw):
    args = dict(title="t", window=4, horizon=2, val_fraction=0.25, test_fraction=0.2, scaling="none", season=2)
    args.update(kw)
    return make_forecasting_splits(values, list(range(len(values))), **args)


def test_windows_hold_only_targets_of_their_own_span():
    y = np.arange(20, dtype=float)
    assert split_sizes(20, 0.25, 0.2) == (12, 4, 4)
    s = _split(y)
    (xtr, ytr), (xva, yva), (xte, yte) = s.train, s.val, s.test
    assert xtr.shape == (7, 4) and ytr.shape == (7, 2)  # origins 4..10: targets up to index 11
    assert ytr.max() == 11 and yva.min() == 12 and yva.max() == 15 and yte.min() == 16 and yte.max() == 19
    assert len(xva) == 3 and len(xte) == 3
    torch.testing.assert_close(xte[0], torch.tensor([12.0, 13.0, 14.0, 15.0]))  # inputs may reach back
    assert s.info["test_times"] == [16, 17, 18, 19]
    assert s.info["model_context"] == {"in_features": 1, "horizon": 2}


def test_scaler_is_fitted_on_the_training_span_only():
    rng = np.random.default_rng(0)
    y = rng.normal(10, 2, 200)
    a = _split(y, scaling="standard", val_fraction=0.1, test_fraction=0.1)
    n_train = split_sizes(200, 0.1, 0.1)[0]
    assert a.info["scaler"]["loc"] == pytest.approx(y[:n_train].mean())
    assert a.info["scaler"]["scale"] == pytest.approx(y[:n_train].std())
    leaked = y.copy()
    leaked[n_train:] += 1000.0  # change every val/test value: nothing fitted may move
    b = _split(leaked, scaling="standard", val_fraction=0.1, test_fraction=0.1)
    assert b.info["scaler"] == a.info["scaler"]
    assert torch.equal(a.train[0], b.train[0]) and torch.equal(a.train[1], b.train[1])
    mm = _split(y, scaling="minmax", val_fraction=0.1, test_fraction=0.1)
    assert mm.train[0].min() >= 0 and mm.train[0].max() <= 1
    assert mm.info["scaler"]["loc"] == pytest.approx(y[:n_train].min())


# ---------------------------------------------------------------- baselines, by hand
class _Constant(nn.Module):
    def __init__(self, value: float, horizon: int):
        super().__init__()
        self.value, self.horizon = value, horizon

    def forward(self, x):
        return torch.full((len(x), self.horizon), self.value)


def test_naive_and_seasonal_naive_rmse_by_hand():
    y = np.arange(20, dtype=float) ** 2  # test windows: origins t = 16, 17, 18, targets t^2 and (t+1)^2
    s = _split(y)
    task = ForecastingTask(_Constant(0.0, 2), s.info)
    task.reset_metrics()
    task.evaluation_step(s.test)
    m = task.compute_metrics()
    # naive predicts (t-1)^2: errors 2t-1 and 4t; seasonal (s=2) predicts (t-2)^2 then (t-1)^2: errors 4t-4 and 4t
    naive = [31, 64, 33, 68, 35, 72]
    seasonal = [60, 64, 64, 68, 68, 72]
    truth = [256, 289, 289, 324, 324, 361]
    assert m["naive_rmse"] == pytest.approx(math.sqrt(np.mean(np.square(naive))))
    assert m["seasonal_naive_rmse"] == pytest.approx(math.sqrt(np.mean(np.square(seasonal))))
    assert m["rmse"] == pytest.approx(math.sqrt(np.mean(np.square(truth))))  # the model predicts 0
    assert m["mae"] == pytest.approx(np.mean(truth)) and m["mape"] == pytest.approx(100.0)
    assert m["rmse_by_step"] == pytest.approx([math.sqrt(np.mean([256**2, 289**2, 324**2])),
                                               math.sqrt(np.mean([289**2, 324**2, 361**2]))])


# ---------------------------------------------------------------- explicit cells
@pytest.mark.parametrize("cls", [nn.RNN, nn.LSTM, nn.GRU])
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, False), (2, True)])
def test_explicit_cells_match_the_fused_layers(cls, layers, bidirectional):
    torch.manual_seed(0)
    fused = cls(3, 16, num_layers=layers, batch_first=True, bidirectional=bidirectional)
    x = torch.randn(5, 12, 3)
    out, state, gates = ExplicitRecurrent(fused)(x)
    ref, ref_state = fused(x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)  # float32
    if cls is nn.LSTM:
        torch.testing.assert_close(state[0], ref_state[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(state[1], ref_state[1], atol=1e-5, rtol=0)
    else:
        torch.testing.assert_close(state, ref_state, atol=1e-5, rtol=0)
    assert len(gates) == layers * (2 if bidirectional else 1)
    for name in {nn.LSTM: "ifo", nn.GRU: "rz", nn.RNN: ""}[cls]:
        g = gates[0][name]
        assert g.shape == (5, 12, 16) and g.min() >= 0 and g.max() <= 1


def test_hidden_state_gradients_are_the_true_bptt_gradients():
    torch.manual_seed(0)
    lstm, head = nn.LSTM(2, 8, batch_first=True), nn.Linear(8, 1)
    x, y = torch.rand(4, 12, 2), torch.rand(4, 1)
    prof = hidden_state_gradients(lstm, lambda out: head(out[:, -1]), x, y)
    # reference: feed h_t as a leaf into the rest of the unrolled computation with nn.LSTMCell
    cell = nn.LSTMCell(2, 8)
    cell.load_state_dict({k.replace("_l0", ""): v for k, v in lstm.state_dict().items()})
    h = c = torch.zeros(4, 8)
    with torch.no_grad():
        for t in range(6):
            h, c = cell(x[:, t], (h, c))
    h = h.clone().requires_grad_(True)
    hh, cc = h, c
    for t in range(6, 12):
        hh, cc = cell(x[:, t], (hh, cc))
    ((head(hh) - y) ** 2).sum().backward()
    assert prof[5] == pytest.approx(h.grad.norm(dim=1).mean().item(), rel=1e-4)


def test_vanilla_rnn_gradient_vanishes_at_initialisation():
    torch.manual_seed(0)
    x, y = (torch.from_numpy(a) for a in adding_problem(16, 100, np.random.default_rng(0)))
    model = forecaster.rnn_forecaster(in_features=2)
    prof = hidden_state_gradients(model.rnn, lambda out: model.readout(out, x), x, y)
    assert prof.shape == (100,)
    assert prof[0] < 1e-6 * prof[-1]


# ---------------------------------------------------------------- the adding problem
def test_adding_problem_properties():
    s = DATASETS.build("adding", length=50, num_train=4000, num_val=10, num_test=20, seed=3)
    x, y = s.train
    assert x.shape == (4000, 50, 2) and y.shape == (4000, 1) and x.dtype == torch.float32
    markers = x[..., 1]
    assert torch.all(markers.sum(1) == 2)
    first, second = markers[:, :25].sum(1), markers[:, 25:].sum(1)
    assert torch.all(first == 1) and torch.all(second == 1)  # one marker in each half
    torch.testing.assert_close((x[..., 0] * markers).sum(1, keepdim=True), y)
    assert 0 <= x[..., 0].min() and x[..., 0].max() <= 1
    assert abs(float(((y - 1.0) ** 2).mean()) - 1 / 6) < 0.01  # the trivial baseline
    again = DATASETS.build("adding", length=50, num_train=4000, num_val=10, num_test=20, seed=3)
    assert torch.equal(again.test[0], s.test[0])
    assert not torch.equal(DATASETS.build("adding", length=50, num_train=10, num_val=10, num_test=20, seed=4).test[0],
                           s.test[0])


def test_adding_run_reports_trivial_mse_and_bptt_plot(tmp_path):
    run = deepfoundry.train("adding-gru", overrides={**FAST, "trainer.epochs": 1, "data.length": 20,
                                                      "data.num_train": 256, "data.num_val": 64,
                                                      "data.num_test": 64, "model.hidden_size": 8},
                            out=tmp_path / "add")
    test = run.results["test"]
    assert set(test) >= {"mse", "rmse", "mae", "trivial_mse"}
    assert abs(test["trivial_mse"] - 1 / 6) < 0.05
    assert run.model.default_grad_clip == 1.0 and run.config.trainer.grad_clip == 1.0
    from deepfoundry.report import write_report

    page = write_report(run).read_text()
    assert "Gradient norm per time step" in page and "Gate activations" in page
    assert (run.path / "plots" / "bptt_gradients.png").is_file()


# ---------------------------------------------------------------- forecasting end to end
def test_sunspots_run_reports_rmse_beside_both_baselines(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "lstm-sunspots", "--epochs", "3", "--out", str(tmp_path / "sun"), "--json",
              "--set", "trainer.progress=false"])
    assert (exc.value.code or 0) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    test = result["test"]
    for key in ("rmse", "mae", "mape", "naive_rmse", "seasonal_naive_rmse"):
        assert math.isfinite(test[key]), key
    run = deepfoundry.load_run(tmp_path / "sun")
    assert run.info["scaler"]["kind"] == "standard" and run.info["season"] == 11
    assert run.info["spans"]["test"] == [1978, 2008]  # the last 10%: 31 of 309 years
    # predict takes raw values in the series' units and answers in them
    last = run.data().test.x[-1] * run.info["scaler"]["scale"] + run.info["scaler"]["loc"]
    value = run.predict(last.numpy())
    assert value.shape == (1,) and 0 <= float(value[0]) < 400
    from deepfoundry.report import write_report

    page = write_report(run).read_text()
    assert "Forecast vs truth" in page and "Gate activations" in page


def test_co2_is_monthly_with_gaps_interpolated():
    s = DATASETS.build("co2", test_fraction=0.1)
    assert s.info["num_points"] == 526 and s.info["season"] == 12 and s.info["horizon"] == 12
    assert s.train[1].shape[1] == 12 and torch.isfinite(s.train[0]).all()
    assert "interpolated" in s.info["split_note"]


# ---------------------------------------------------------------- bad inputs
def _csv(tmp_path, text):
    path = tmp_path / "series.csv"
    path.write_text(text)
    return str(path)


def test_series_csv_reads_sorts_and_splits(tmp_path):
    rows = "\n".join(f"2020-{m:02d}-01,{m * 1.5}" for m in range(12, 0, -1))
    s = DATASETS.build("series-csv", path=_csv(tmp_path, "month,sales\n" + rows), time_column="month",
                       value_column="sales", window=3, scaling="none", val_fraction=0.2, test_fraction=0.2)
    assert s.info["test_times"][0].startswith("2020-11")  # sorted by time
    torch.testing.assert_close(s.train[0][0], torch.tensor([1.5, 3.0, 4.5]))


@pytest.mark.parametrize("text,kwargs,pattern", [
    ("date,value\n2020-01-01,1\n", {"value_column": "sales"}, r"no column 'sales'.*columns: date, value"),
    ("date,value\n" + "\n".join(f"2020-01-{d:02d},{d}" for d in range(1, 20)) + "\n2020-01-20,abc\n", {},
     r"not a number at data row 20: 'abc'"),
    ("date,value\n" + "\n".join(f"2020-01-{d:02d},{d}" for d in range(1, 11)) + "\n", {"window": 24},
     r"too short for window 24"),
    ("date,value\n2020-01-01,1\n2020-01-01,2\n", {}, r"repeats the time"),
])
def test_series_csv_bad_inputs(tmp_path, text, kwargs, pattern):
    with pytest.raises(DeepfoundryError, match=pattern):
        DATASETS.build("series-csv", path=_csv(tmp_path, text), **kwargs)


def test_other_bad_inputs(tmp_path):
    with pytest.raises(DeepfoundryError, match="does not exist"):
        DATASETS.build("series-csv", path=str(tmp_path / "nope.csv"))
    with pytest.raises(DeepfoundryError, match=r"shorter than the season \(11\)"):
        DATASETS.build("sunspots", window=8)
    with pytest.raises(DeepfoundryError, match="scaling must be one of"):
        DATASETS.build("sunspots", scaling="robust")
    with pytest.raises(DeepfoundryError, match="horizon must be a positive integer"):
        forecaster.lstm_forecaster(horizon=0)


def test_cli_error_for_a_missing_column_is_one_line(tmp_path, capsys):
    path = _csv(tmp_path, "t,v\n1,2\n")
    with pytest.raises(SystemExit) as exc:
        main(["train", "lstm-sunspots", "--set", "data.name=series-csv", "--set", f"data.path={path}",
              "--set", "data.time_column=t", "--set", "data.value_column=y"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and "no column 'y'" in err[0]


# ---------------------------------------------------------------- slow: the LSTM learns the adding problem
@pytest.mark.slow
def test_lstm_drives_adding_mse_far_below_the_trivial_baseline(tmp_path):
    run = deepfoundry.train("adding-lstm", overrides={**FAST, "data.length": 50, "data.num_train": 10000,
                                                       "trainer.epochs": 6}, out=tmp_path / "lstm")
    test = run.results["test"]  # T=50 to fit the slow-test budget (about 20 s); T=100: benchmarks/adding_problem.py
    assert test["trivial_mse"] > 0.15 and test["mse"] < 0.01, test  # solved: measured 0.0012 after 6 epochs
