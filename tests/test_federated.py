"""Federated learning (responsible/federated.py): partitions, FedProx's term, refusals, and real Flower
processes on 127.0.0.1 (2 clients, 2 rounds; the acceptance run against centralised training is slow)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, run_cli
import torch
from sklearn.datasets import load_digits

from deepfoundry.api import load_run
from deepfoundry.responsible.federated import ProximalTerm, federated_summary, free_port, partition_indices

SRC = Path(__file__).resolve().parents[1] / "src"

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



def test_free_port_never_hands_out_a_port_already_taken(monkeypatch) -> None:
    """The OS may give the same free port twice in a row (before anyone binds it): one federation's ports stay
    distinct, and the --role server's own --address port is never handed to its other APIs."""
    import deepfoundry.responsible.federated as federated

    offered = iter([9092, 9092, 9093, 9092, 9094])

    class FakeSocket:
        def __init__(self, *args) -> None:
            self.port = next(offered)

        def __enter__(self) -> "FakeSocket":
            return self

        def __exit__(self, *exc) -> None:
            return None

        def bind(self, address) -> None:
            return None

        def getsockname(self) -> tuple[str, int]:
            return "127.0.0.1", self.port

    monkeypatch.setattr(federated.socket, "socket", FakeSocket)
    taken = {9092}  # the server's --address
    assert [free_port(taken), free_port(taken)] == [9093, 9094] and taken == {9092, 9093, 9094}

@pytest.mark.parametrize("args, text", [
    (["--clients", "5000"], "more than the 1294 training samples"),
    (["--partition", "dirichlet:0"], "ALPHA > 0"),
    (["--partition", "dirichlet:-0.5"], "ALPHA > 0"),
    (["--partition", "shards"], "iid or dirichlet:ALPHA"),
    (["--strategy", "fedsgd"], "fedavg, fedprox"),
    (["--role", "client"], "--address"),
    (["--role", "server", "--address", "no-port"], "HOST:PORT"),
    (["--role", "client", "--address", "127.0.0.1:9092", "--partition-id", "7", "--clients", "2"], "0..1"),
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
    logs = sorted(p.name for p in (out / "federated").glob("*.log"))
    assert logs == ["client-0.log", "client-1.log", "flwr-run.log", "superlink.log"]  # a SuperNode per client
    assert "Successfully started run" in (out / "federated" / "flwr-run.log").read_text() or \
        '"success": true' in (out / "federated" / "flwr-run.log").read_text()
    app = (out / "federated" / "app" / "pyproject.toml").read_text()
    assert 'serverapp = "deepfoundry.responsible.flower_app:server_app"' in app and "clients = 2" in app
    assert result["federated"]["deployment"] == "superlink+supernodes"
    assert not _processes_of(out / "federated" / "flwr-home")  # SuperLink, SuperNodes and their apps all stopped
    run = load_run(out)
    assert run.evaluate("test")["accuracy"] == pytest.approx(result["test"]["accuracy"])
    assert federated_summary(run)["rounds_val"][-1]["round"] == 2
    from deepfoundry.report import write_report

    assert "Federated rounds" in write_report(run).read_text()
    code, stdout, err = run_cli(["export", str(out), "--out", str(tmp_path / "bundle")], capsys)
    assert code == 0 and (tmp_path / "bundle" / "model.onnx").exists(), err  # a federated run exports like any


def _processes_of(flwr_home: Path) -> list[int]:
    """Live processes started with this FLWR_HOME in their environment (the federation's own)."""
    marker = f"FLWR_HOME={flwr_home.resolve()}".encode()
    found = []
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker in env.read_bytes().split(b"\0"):
                found.append(int(env.parent.name))
        except OSError:
            continue
    return found


def _deepfoundry(*args: str, log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    with log.open("w") as fh:
        return subprocess.Popen([sys.executable, "-m", "deepfoundry", *args], stdout=fh, stderr=subprocess.STDOUT,
                                env=env)


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


@pytest.mark.slow
def test_roles_server_and_clients_as_on_separate_machines(tmp_path: Path) -> None:
    """``--role server`` (a SuperLink waiting for SuperNodes) and two ``--role client`` SuperNodes, each its own
    deepfoundry process as on three machines, over 127.0.0.1."""
    address = f"127.0.0.1:{free_port()}"
    common = ["--clients", "2", *QUIET, "--set", "trainer.report=false"]
    server = _deepfoundry("federate", "mlp-digits", "--role", "server", "--address", address, "--rounds", "2",
                          "--out", str(tmp_path / "fed"), "--json", *common, log=tmp_path / "server.log")
    clients = [_deepfoundry("federate", "mlp-digits", "--role", "client", "--address", address,
                            "--partition-id", str(k), *common, log=tmp_path / f"client{k}.log") for k in range(2)]
    try:
        assert server.wait(timeout=600) == 0, (tmp_path / "server.log").read_text()[-3000:]
    finally:
        _stop([server, *clients])
    result = json.loads((tmp_path / "server.log").read_text().strip().splitlines()[-1])
    assert result["federated"]["clients"] == 2 and sum(result["federated"]["client_samples"]) == 1294
    assert result["test"]["accuracy"] > 0.8
    assert all(p.returncode is not None for p in clients)  # the SuperNodes stopped with their processes


@pytest.mark.slow
def test_a_failing_client_ends_the_federation_in_one_line(tmp_path: Path) -> None:
    """A SuperNode whose partition does not fit the run (num-partitions 2 for a 1-client run) fails its
    ClientApp; the server refuses the round and exits 2 with one line, leaving no process behind."""
    address = f"127.0.0.1:{free_port()}"
    server = _deepfoundry("federate", "mlp-digits", "--role", "server", "--address", address, "--clients", "1",
                          "--rounds", "2", "--out", str(tmp_path / "fed"), *QUIET, log=tmp_path / "server.log")
    client = _deepfoundry("federate", "mlp-digits", "--role", "client", "--address", address, "--clients", "2",
                          "--partition-id", "0", log=tmp_path / "client.log")
    try:
        code = server.wait(timeout=600)
    finally:
        _stop([server, client])
    lines = (tmp_path / "server.log").read_text().strip().splitlines()
    assert code == 2 and lines[-1].startswith("error: the federation failed: round 1:"), lines[-5:]
    assert "does not fit the run's 1 clients" in lines[-1] and "Traceback" not in "\n".join(lines)


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
