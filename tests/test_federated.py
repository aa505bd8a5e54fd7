"""Federated learning (responsible/federated.py): partitions, FedProx's term, refusals, and real Flower
processes on 127.0.0.1 (2 clients, 2 rounds; the acceptance run against centralised training is slow)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, run_cli
import torch
from sklearn.datasets import load_digits

from deepfoundry.api import load_run
from deepfoundry.responsible.federated import ProximalTerm, federated_summary, partition_indices

QUIET = ["--set", "trainer.progress=false", "--set", "trainer.tensorboard=false"]


def test_partitions_are_disjoint_complete_and_dirichlet_skews_labels() -> None:
    y = load_digits().target
    for scheme in ("iid", "dirichlet:0.5", "dirichlet:100"):
        parts = partition_indices(y, 5, scheme, seed=0)
        joined = np.concatenate(parts)
        assert len(parts) == 5 and min(map(len, parts)) > 0
        assert len(joined) == len(y) and len(np.unique(joined)) == len(y)
        assert all(np.array_equal(a, b) for a, b in zip(parts, partition_indices(y, 5, scheme, seed=0)))

    def skew(scheme: str) -> float:  # mean total-variation distance of client label shares from the overall one
        overall = np.bincount(y, minlength=10) / len(y)
        return float(np.mean([0.5 * np.abs(np.bincount(y[p], minlength=10) / len(p) - overall).sum()
                              for p in partition_indices(y, 5, scheme, seed=0)]))

    assert skew("dirichlet:0.5") > 0.3 > 0.1 > skew("iid")
    assert sorted(map(len, partition_indices(y, 5, "iid", 0))) == [359, 359, 359, 360, 360]


def test_proximal_term_adds_mu_times_the_drift_to_the_gradient() -> None:
    model = torch.nn.Linear(3, 2)
    term = ProximalTerm(model, mu=0.5)
    with torch.no_grad():
        model.weight.add_(1.0)
    model.weight.grad = torch.zeros_like(model.weight)
    model.bias.grad = torch.zeros_like(model.bias)
    term.on_after_backward(None)
    assert torch.allclose(model.weight.grad, torch.full_like(model.weight, 0.5))  # mu * (w - w0), w - w0 = 1
    assert torch.count_nonzero(model.bias.grad) == 0


@pytest.mark.parametrize("args, text", [
    (["--clients", "5000"], "more than the 1294 training samples"),
    (["--partition", "dirichlet:0"], "ALPHA > 0"),
    (["--partition", "dirichlet:-0.5"], "ALPHA > 0"),
    (["--partition", "shards"], "iid or dirichlet:ALPHA"),
    (["--strategy", "fedsgd"], "fedavg, fedprox"),
    (["--role", "client"], "--address"),
])
def test_bad_federations_are_one_line_errors(args: list[str], text: str, tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(["federate", "mlp-digits", "--out", str(tmp_path / "f"), *args, *QUIET], capsys)
    assert_one_line_error(code, err, text)
    assert not (tmp_path / "f" / "federated").exists()  # refused before any process started


def test_real_flower_processes_two_clients_two_rounds(tmp_path: Path, capsys) -> None:
    out = tmp_path / "fed"
    code, stdout, err = run_cli(["federate", "mlp-digits", "--clients", "2", "--rounds", "2", "--partition",
                                 "dirichlet:1.0", "--strategy", "fedprox", "--proximal-mu", "0.01", "--out", str(out),
                                 "--json", *QUIET, "--set", "trainer.report=false"], capsys)
    assert code == 0, err
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["federated"]["clients"] == 2 and result["federated"]["strategy"] == "fedprox"
    assert result["federated"]["framework"] == "flwr 1.32.1" and sum(result["federated"]["client_samples"]) == 1294
    rounds = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds if r["kind"] == "round"] == [0, 1, 2]
    assert rounds[2]["val_accuracy"] > rounds[0]["val_accuracy"] and "train_loss" in rounds[2]
    logs = sorted(p.name for p in (out / "federated").glob("client-*.log"))
    assert logs == ["client-0.log", "client-1.log"]  # one process per client
    run = load_run(out)
    assert run.evaluate("test")["accuracy"] == pytest.approx(result["test"]["accuracy"])
    assert federated_summary(run)["rounds_val"][-1]["round"] == 2
    from deepfoundry.report import write_report

    assert "Federated rounds" in write_report(run).read_text()


@pytest.mark.slow
def test_acceptance_dirichlet_within_three_points_of_centralised(tmp_path: Path, capsys) -> None:
    code, stdout, err = run_cli(["federate", "mlp-digits", "--clients", "5", "--rounds", "20", "--partition",
                                 "dirichlet:0.5", "--out", str(tmp_path / "fed"), "--json", *QUIET], capsys)
    assert code == 0, err
    federated = json.loads(stdout.strip().splitlines()[-1])["test"]["accuracy"]
    code, stdout, err = run_cli(["train", "mlp-digits", "--out", str(tmp_path / "central"), "--json", *QUIET], capsys)
    central = json.loads(stdout.strip().splitlines()[-1])["test"]["accuracy"]
    assert federated >= central - 0.03, (federated, central)


@pytest.mark.slow
def test_client_side_dp_spends_the_budget_by_the_last_round(tmp_path: Path, capsys) -> None:
    code, stdout, err = run_cli(["federate", "mlp-digits", "--clients", "2", "--rounds", "2", "--out",
                                 str(tmp_path / "dp"), "--json", *QUIET, "--set", "trainer.report=false",
                                 "--set", "privacy.epsilon=4"], capsys)
    assert code == 0, err
    result = json.loads(stdout.strip().splitlines()[-1])
    assert 3.9 < result["privacy"]["epsilon"] <= 4.0 and result["privacy"]["scope"] == "per client (largest)"
    rounds = [json.loads(line) for line in (tmp_path / "dp" / "metrics.jsonl").read_text().splitlines()]
    eps = [r["epsilon"] for r in rounds if r.get("kind") == "round" and r["round"] > 0]
    assert len(eps) == 2 and eps[0] < eps[1]
