"""MLflow tracking (``trainer.mlflow``): a real digits run logged to a local store in tmp_path and read back with
MLflow's client (params, metric history, artifacts, status), continued by ``--resume``; the config rules and the
one-line errors (no MLflow installed, a reinforcement-learning run)."""
from __future__ import annotations

import builtins
import json

import pytest

from conftest import FAST, assert_one_line_error, run_cli

import deepfoundry
from deepfoundry.config import load_config
from deepfoundry.errors import DeepfoundryError

mlflow = pytest.importorskip("mlflow")

TINY = {**FAST, "trainer.report": False}


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def artifacts(client, run_id: str, path: str | None = None) -> set[str]:
    out = set()
    for item in client.list_artifacts(run_id, path):
        out |= artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return out


def test_a_run_is_logged_and_resume_continues_the_same_mlflow_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default store: ./mlruns/mlflow.db, artifacts in ./mlruns/
    out = tmp_path / "run"
    run = deepfoundry.train("mlp-digits", overrides={**TINY, "trainer.epochs": 1, "trainer.mlflow": True},
                            out=out)
    state = json.loads((out / "mlflow.json").read_text())
    assert state["tracking_uri"] == f"sqlite:///{tmp_path.resolve()}/mlruns/mlflow.db"
    assert (tmp_path / "mlruns" / "mlflow.db").is_file()
    client = mlflow.MlflowClient(tracking_uri=state["tracking_uri"])
    logged = client.get_run(state["run_id"])
    assert logged.info.status == "FINISHED" and logged.info.run_name == "run"
    assert client.get_experiment(logged.info.experiment_id).name == run.config.name
    params = logged.data.params
    assert params["trainer.epochs"] == "1" and params["model.name"] == "mlp"
    assert params["optim.lr"] == str(run.config.optim.lr) and params["trainer.mlflow"] == "True"
    records = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "epoch"]
    assert history(client, state["run_id"], "val_loss") == [(r["step"], pytest.approx(r["val_loss"]))
                                                          for r in records]
    assert {"train_loss", "val_accuracy", "lr", "epoch", "epoch_seconds"} <= set(logged.data.metrics)
    files = artifacts(client, state["run_id"])
    assert {"config.yaml", "metrics.jsonl", "model.safetensors", "model.json", "mlflow.json",
            "checkpoints/last.safetensors"} <= files and ".lock" not in files

    # --resume with one more epoch: the same MLflow run gets the new epoch
    deepfoundry.train(None, overrides={"trainer.epochs": 2}, resume=out)
    assert json.loads((out / "mlflow.json").read_text())["run_id"] == state["run_id"]
    steps = [s for s, _ in history(client, state["run_id"], "val_loss")]
    assert len(steps) == 2 and steps[1] > steps[0]
    assert client.get_run(state["run_id"]).data.params["trainer.epochs"] == "1"  # params are the first run's
    assert client.get_run(state["run_id"]).info.status == "FINISHED"


def test_config_rules():
    assert load_config("lenet5-digits").trainer.mlflow is False  # TensorBoard and JSONL stay the defaults
    cfg = load_config("lenet5-digits", {"trainer.mlflow_uri": "sqlite:///x.db"})
    assert cfg.trainer.mlflow is True  # a store named means tracking on
    with pytest.raises(DeepfoundryError, match="trainer.mlflow_uri is set but trainer.mlflow is false"):
        load_config("lenet5-digits", {"trainer.mlflow_uri": "sqlite:///x.db", "trainer.mlflow": False})


def test_missing_mlflow_is_one_error_line(tmp_path, monkeypatch, capsys):
    real_import = builtins.__import__

    def no_mlflow(name, *args, **kwargs):
        if name == "mlflow" or name.startswith("mlflow."):
            raise ImportError(f"No module named {name!r}", name="mlflow")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    code, _, err = run_cli(["train", "lenet5-digits", "--epochs", "1", "--out", str(tmp_path / "run"),
                            "--set", "trainer.mlflow=true", "--set", "trainer.progress=false"], capsys)
    assert_one_line_error(code, err, "pip install 'deepfoundry[track]'")


def test_reinforcement_learning_runs_are_refused(tmp_path, capsys):
    code, _, err = run_cli(["train", "dqn-cartpole", "--out", str(tmp_path / "run"),
                            "--set", "trainer.mlflow=true"], capsys)
    assert_one_line_error(code, err, "trainer.mlflow cannot track task")


def test_mlflow_is_imported_only_when_tracking_is_asked_for():
    """No module of the package imports mlflow at import time (the track extra stays optional)."""
    import ast
    from pathlib import Path

    root = Path(deepfoundry.__file__).parent
    top_level = []
    for path in root.rglob("*.py"):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            top_level += [f"{path.name}:{node.lineno}" for n in names if n.split(".")[0] == "mlflow"]
    assert not top_level, top_level


def test_a_store_mlflow_refuses_is_one_error_line(tmp_path, monkeypatch, capsys):
    """MLflow 3 refuses the plain-folder store unless MLFLOW_ALLOW_FILE_STORE=true: one line, exit 2."""
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    code, _, err = run_cli(["train", "mlp-wine", "--epochs", "1", "--out", str(tmp_path / "run"), "--set",
                            f"trainer.mlflow_uri=file:{tmp_path / 'mlruns'}", "--set", "trainer.progress=false",
                            "--set", "trainer.report=false", "--set", "trainer.tensorboard=false"], capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err  # after the data's one split line
    assert errors[0].startswith(f"error: MLflow store 'file:{tmp_path / 'mlruns'}'") and \
        "MLFLOW_ALLOW_FILE_STORE=true" in errors[0], errors
