"""Fairness (issue 22, item 1): the audit verb, reweighing, and ThresholdOptimizer stored as JSON.

Fast tests train tiny runs on the first 2,500 rows of UCI Adult (``data.limit``); the full acceptance run
(``mlp-adult``, then ``audit --sensitive sex --mitigate threshold``) is marked slow.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("fairlearn")

from deepfoundry.cli import main  # noqa: E402
from deepfoundry.responsible.fairness import (decision_probability, draw_decisions, fairness_summary,  # noqa: E402
                                              fit_thresholds, reweighing_weights)
from conftest import last_json, one_line_error, require_shared_dataset, run_cli  # noqa: E402

FAST = ["--set", "trainer.progress=false", "--set", "trainer.tensorboard=false", "--set", "trainer.threads=1"]
TINY = ["--epochs", "2", "--set", "data.limit=2500", "--set", "model.hidden_sizes=[32]", "--no-report"]
AUDIT_KEYS = {"run", "sensitive", "accuracy", "demographic_parity_difference", "demographic_parity_ratio",
              "equalized_odds_difference", "ci", "groups", "mitigated"}


# ----------------------------------------------------------------------------- the math

def test_reweighing_makes_group_and_label_independent() -> None:
    rng = np.random.default_rng(0)
    g = rng.choice(["a", "b", "c"], size=500, p=[0.5, 0.3, 0.2])
    y = (rng.random(500) < np.where(g == "a", 0.6, 0.2)).astype(int)  # label depends on the group
    w = reweighing_weights(g, y)
    assert w.mean() == pytest.approx(1.0, abs=1e-6)
    for gv in "abc":  # under the weights P_w(g, y) = P(g) P(y)
        for yv in (0, 1):
            joint = w[(g == gv) & (y == yv)].sum() / w.sum()
            assert joint == pytest.approx((g == gv).mean() * (y == yv).mean(), abs=1e-6)


def test_vectorised_estimates_equal_fairlearn() -> None:
    from fairlearn.metrics import (demographic_parity_difference, demographic_parity_ratio,
                                   equalized_odds_difference)

    from deepfoundry.responsible.fairness import _group_rates_2d, _summary

    rng = np.random.default_rng(1)
    g = rng.integers(0, 3, 400)
    y = rng.integers(0, 2, 400)
    d = (rng.random(400) < 0.2 + 0.2 * g).astype(int)
    g[:5], y[:5] = 3, 0  # a small group without positives: its TPR counts as 0, as in fairlearn
    ours = _summary(*_group_rates_2d(d[None], y[None], g[None], 4))
    assert ours["demographic_parity_difference"][0] == pytest.approx(demographic_parity_difference(y, d, sensitive_features=g))
    assert ours["demographic_parity_ratio"][0] == pytest.approx(demographic_parity_ratio(y, d, sensitive_features=g))
    assert ours["equalized_odds_difference"][0] == pytest.approx(equalized_odds_difference(y, d, sensitive_features=g))


@pytest.mark.parametrize("constraint,tolerance", [("demographic_parity", None), ("demographic_parity", 0.05),
                                                  ("equalized_odds", None)])
def test_thresholds_from_json_equal_fairlearn(constraint: str, tolerance: float | None) -> None:
    """The stored rules (after a JSON round trip) give fairlearn's P(d=1) and, with the same seed, its decisions."""
    rng = np.random.default_rng(2)
    n = 3000
    keys = rng.choice(["Female", "Male"], size=n, p=[0.35, 0.65]).astype(object)
    y = (rng.random(n) < np.where(keys == "Male", 0.3, 0.12)).astype(int)
    scores = np.clip(0.35 * y + 0.1 * (keys == "Male") + rng.normal(0.25, 0.15, n), 0, 1)
    state, opt = fit_thresholds(scores, y, keys, constraint, tolerance)
    state = json.loads(json.dumps(state))  # what threshold.json holds
    test_scores = rng.random(500)
    test_keys = rng.choice(["Female", "Male"], size=500).astype(object)
    ours = decision_probability(state, test_scores, test_keys)
    theirs = opt._pmf_predict(test_scores[:, None], sensitive_features=pd.Series(test_keys))[:, 1]
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
    expected = opt.predict(test_scores[:, None], sensitive_features=pd.Series(test_keys), random_state=7)
    np.testing.assert_array_equal(draw_decisions(ours, 7), expected)


# ----------------------------------------------------------------------------- tiny Adult runs

@pytest.fixture(scope="module")
def adult_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny mlp-adult runs on 2,500 rows: sex and race dropped from the features, and reweighed by sex."""
    root = require_shared_dataset("adult")
    base = tmp_path_factory.mktemp("fairness")
    runs = {"dropped": base / "dropped", "reweighed": base / "reweighed"}
    extra = {"dropped": ["--set", "data.drop=[sex,race]"],
             "reweighed": ["--set", "fairness.sensitive=[sex]", "--set", "fairness.reweigh=true"]}
    for name, path in runs.items():
        with pytest.raises(SystemExit) as exc:
            main(["train", "mlp-adult", "--data-root", str(root), "--out", str(path), *FAST, *TINY, *extra[name]])
        assert (exc.value.code or 0) == 0
    return runs


def test_audit_of_a_dropped_column_with_threshold_mitigation(adult_runs, capsys, tmp_path) -> None:
    run = adult_runs["dropped"]
    assert "sex" not in json.loads((run / "model.json").read_text())["info"]["feature_names"]
    code, out, err = run_cli(["audit", str(run), "--sensitive", "sex,race", "--bootstrap", "50", "--json"], capsys)
    assert code == 0, err
    result = last_json(out)
    assert set(result) == AUDIT_KEYS and result["mitigated"] is None
    assert result["sensitive"] == ["sex", "race"]
    assert {tuple(g["group"]) for g in result["groups"]} == {("sex", "race")}  # the intersection
    assert len(result["groups"]) > 4
    assert sum(g["count"] for g in result["groups"]) == json.loads((run / "model.json").read_text())["info"]["num_test"]
    code, out, err = run_cli(["audit", str(run), "--sensitive", "sex", "--mitigate", "threshold",
                              "--bootstrap", "50", "--json"], capsys)
    assert code == 0, err
    result = last_json(out)
    assert set(result) == AUDIT_KEYS
    for key in ("demographic_parity_difference", "equalized_odds_difference", "accuracy"):
        lo, hi = result["ci"][key]
        assert lo <= hi
    assert result["ci"]["resamples"] == 50
    mitigated = result["mitigated"]
    assert mitigated["method"] == "threshold" and set(AUDIT_KEYS - {"run", "sensitive", "mitigated"}) <= set(mitigated)
    saved = json.loads((run / "fairness" / "audit.json").read_text())
    assert saved["demographic_parity_difference"] == pytest.approx(result["demographic_parity_difference"])
    state = json.loads((run / "fairness" / "threshold.json").read_text())
    assert state["sensitive"] == ["sex"] and set(state["groups"]) == {"Female", "Male"}
    assert (run / "fairness" / "groups.png").stat().st_size > 1000
    summary = fairness_summary(run)
    assert summary["mitigated"]["demographic_parity_difference"] == pytest.approx(
        mitigated["demographic_parity_difference"])
    card = (run / "model_card.md").read_text()  # audit rewrites the card with what it measured
    assert "## Fairness" in card and "| measure | model | mitigated (threshold) |" in card
    assert f"| demographic parity difference | {result['demographic_parity_difference']:.4f} |" in card
    assert "| Female |" in card and "Not audited for fairness" not in card

    # predict: rows carrying sex get the mitigated decision; rows without it do not
    from deepfoundry.data.tabular import read_adult

    rows = read_adult(require_shared_dataset("adult") / "adult.data").iloc[:20].drop(columns=["income"])
    rows.to_csv(tmp_path / "rows.csv", index=False)
    code, out, err = run_cli(["predict", str(run), str(tmp_path / "rows.csv"), "--json"], capsys)
    assert code == 0, err
    preds = last_json(out)["predictions"]
    assert all("fair_class" in p and p["fair_label"] in ("<=50K", ">50K") for p in preds)
    rows.drop(columns=["sex"]).to_csv(tmp_path / "nosex.csv", index=False)
    code, out, err = run_cli(["predict", str(run), str(tmp_path / "nosex.csv"), "--json"], capsys)
    assert code == 0, err
    assert all("fair_class" not in p for p in last_json(out)["predictions"])

    from deepfoundry import load_run
    from deepfoundry.report import write_report

    page = write_report(load_run(run)).read_text()
    assert "<h2>Fairness</h2>" in page and "demographic parity difference" in page


def test_reweighed_run_records_its_weights(adult_runs, capsys) -> None:
    info = json.loads((adult_runs["reweighed"] / "model.json").read_text())["info"]
    weights = info["reweighing"]["weights"]
    assert set(weights) == {"Female", "Male"}
    # women are rarer among >50K than overall: their positive rows weigh more than 1, men's less
    assert weights["Female"][">50K"] > 1 > weights["Male"][">50K"]
    code, out, err = run_cli(["audit", str(adult_runs["reweighed"]), "--sensitive", "sex", "--bootstrap", "0",
                              "--json"], capsys)
    assert code == 0, err
    assert last_json(out)["mitigated"] is None


def test_training_batches_carry_the_weights() -> None:
    import torch

    from deepfoundry.data.core import ArrayLoader

    x, y = torch.arange(10.0)[:, None], torch.arange(10)
    loader = ArrayLoader(x, y, 4, shuffle=True, seed=3)
    loader.weights = torch.arange(10.0) * 2
    for xb, yb, wb in loader:
        assert torch.equal(wb, xb[:, 0] * 2) and torch.equal(yb.float(), xb[:, 0])


# ----------------------------------------------------------------------------- refusals

def test_refusals(adult_runs, capsys, tmp_path) -> None:
    code, _, err = run_cli(["audit", str(adult_runs["dropped"]), "--sensitive", "gender"], capsys)
    one_line_error(code, err, r"sensitive column 'gender' is not in .*columns: age")
    code, _, err = run_cli(["train", "mlp-digits", "--out", str(tmp_path / "digits"), *FAST, "--epochs", "1",
                            "--set", "data.limit=300", "--no-report"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["audit", str(tmp_path / "digits"), "--sensitive", "sex"], capsys)
    one_line_error(code, err, r"audit needs a tabular run")
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True, scaled=False).frame
    frame.to_csv(tmp_path / "diabetes.csv", index=False)
    code, _, err = run_cli(["train", "mlp-adult", "--out", str(tmp_path / "reg"), *FAST,
                            "--set", "data.name=table-csv", "--set", f"data.path={tmp_path / 'diabetes.csv'}",
                            "--set", "data.target=target", "--set", "data.task_type=regression",
                            "--set", "task.name=regression", "--set", "trainer.monitor=val_loss",
                            "--epochs", "1", "--no-report"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["audit", str(tmp_path / "reg"), "--sensitive", "sex"], capsys)
    one_line_error(code, err, r"audit needs a classification run; .* is a regression run")
    code, _, err = run_cli(["train", "lenet5-digits", "--out", str(tmp_path / "x"), *FAST,
                            "--set", "fairness.reweigh=true"], capsys)
    one_line_error(code, err, r"fairness.reweigh needs fairness.sensitive")
    code, _, err = run_cli(["train", "lenet5-digits", "--out", str(tmp_path / "y"), *FAST,
                            "--set", "fairness.sensitive=[sex]", "--set", "fairness.reweigh=true"], capsys)
    one_line_error(code, err, r"fairness.reweigh needs a table with raw rows")
    code, _, err = run_cli(["train", "lenet5-digits", "--out", str(tmp_path / "z"), *FAST,
                            "--set", "fairness.colour=1"], capsys)
    one_line_error(code, err, r"unknown config key 'fairness.colour'")


# ----------------------------------------------------------------------------- acceptance (slow)

@pytest.mark.slow
def test_adult_acceptance_threshold_halves_dp(capsys, tmp_path) -> None:
    """Full mlp-adult, then the audit with its defaults: DPD at least halved, accuracy down at most 2 points."""
    root = require_shared_dataset("adult")
    run = tmp_path / "adult"
    code, _, err = run_cli(["train", "mlp-adult", "--data-root", str(root), "--out", str(run), *FAST, "--no-report"],
                           capsys)
    assert code == 0, err
    code, out, err = run_cli(["audit", str(run), "--sensitive", "sex", "--mitigate", "threshold", "--json"], capsys)
    assert code == 0, err
    r = last_json(out)
    m = r["mitigated"]
    assert m["demographic_parity_difference"] <= 0.5 * r["demographic_parity_difference"]
    assert m["accuracy"] >= r["accuracy"] - 0.02
