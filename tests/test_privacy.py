"""DP-SGD (responsible/privacy.py): Poisson batches, the budget in every record, exact resume, layer
replacements, refusals."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cli
import torch
from torch import nn

from deepfoundry.api import load_run, train
from deepfoundry.data.core import ArrayLoader
from deepfoundry.engine.checkpoint import load_weights
from deepfoundry.responsible.privacy import make_private_model, privacy_summary

FAST = {"trainer.progress": False, "trainer.tensorboard": False, "trainer.report": False, "trainer.threads": 1}


# ------------------------------------------------------------------------------------ Poisson sampling
def test_poisson_batches_vary_replay_exactly_and_report_empty_draws() -> None:
    x, y = torch.arange(1000).float().unsqueeze(1), torch.arange(1000)
    loader = ArrayLoader(x, y, batch_size=50, shuffle=True, seed=3)
    q = loader.use_poisson_sampling()
    assert q == pytest.approx(0.05) and len(loader) == 20
    sizes = [len(b[1]) for b in loader.epoch_batches(0)]
    assert len(set(sizes)) > 3 and abs(sum(sizes) / len(sizes) - 50) < 10  # Binomial(1000, 0.05) sizes
    first = [b[1] for b in loader.epoch_batches(0)]
    again = [b[1] for b in loader.epoch_batches(0, skip=7)]
    assert all(torch.equal(a, b) for a, b in zip(first[7:], again)) and len(again) == len(first) - 7
    assert not torch.equal(first[0], next(loader.epoch_batches(1))[1])  # another epoch, other draws
    tiny = ArrayLoader(x[:4], y[:4], batch_size=1, seed=0)  # q = 0.25: about a third of the draws are empty
    tiny.use_poisson_sampling()
    empties: list[int] = []
    tiny.on_empty_draw = lambda: empties.append(1)
    taken = sum(1 for _ in tiny.epoch_batches(0)) + sum(1 for _ in tiny.epoch_batches(1))
    assert empties and taken + len(empties) == 2 * len(tiny)


# ------------------------------------------------------------------------------------ training
def test_dp_training_logs_epsilon_each_epoch_and_stays_within_budget(tmp_path: Path, capsys) -> None:
    out = tmp_path / "dp"
    args = ["train", "mlp-digits", "--epochs", "3", "--out", str(out), "--json", "--set", "privacy.epsilon=2",
            "--set", "privacy.delta=1e-5", "--set", "privacy.max_grad_norm=1.0",
            *[f"--set={k}={v}" for k, v in FAST.items()]]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    result = json.loads(stdout.strip().splitlines()[-1])
    p = result["privacy"]
    assert 1.9 < p["epsilon"] <= 2.0 and p["delta"] == 1e-5 and p["sampling"] == "poisson"
    assert p["noise_multiplier"] > 0.5 and p["max_grad_norm"] == 1.0 and p["steps"] == 3 * 21
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    eps = [r["epsilon"] for r in epochs if r["kind"] == "epoch"]
    assert len(eps) == 3 and eps[0] < eps[1] < eps[2] == pytest.approx(p["epsilon"])
    run = load_run(out)
    assert privacy_summary(run)["epsilon"] == p["epsilon"] and privacy_summary({"test": {}}) is None
    assert result["test"]["accuracy"] > 0.5  # learns through the noise (digits, 3 epochs)
    assert run.evaluate("test")["accuracy"] == pytest.approx(result["test"]["accuracy"])


def test_dp_resume_is_exact_accountant_included(tmp_path: Path) -> None:
    cfg = {**FAST, "privacy.noise_multiplier": 1.0, "trainer.restore_best": False, "optim.scheduler.name": "none"}
    whole = train("mlp-digits", overrides={**cfg, "trainer.epochs": 2}, out=tmp_path / "whole")
    train("mlp-digits", overrides={**cfg, "trainer.epochs": 1}, out=tmp_path / "part")
    resumed = train(None, overrides={"trainer.epochs": 2}, resume=tmp_path / "part")
    a, b = load_weights(whole.path / "model.safetensors"), load_weights(resumed.path / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.results["privacy"]["epsilon"] == whole.results["privacy"]["epsilon"]
    assert resumed.results["privacy"]["steps"] == whole.results["privacy"]["steps"]


def test_batchnorm_becomes_groupnorm_with_a_notice_and_the_run_reloads(tmp_path: Path, capsys) -> None:
    args = ["train", "lenet5-digits", "--epochs", "1", "--out", str(tmp_path / "bn"), "--set", "model.batch_norm=true",
            "--set", "privacy.epsilon=5", *[f"--set={k}={v}" for k, v in FAST.items()]]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    notices = [line for line in err.splitlines() if line.startswith("privacy: replaced")]
    assert len(notices) == 1 and "BatchNorm2d -> GroupNorm" in notices[0]
    run = load_run(tmp_path / "bn")
    assert any(isinstance(m, nn.GroupNorm) for m in run.model.modules())
    assert 0.0 <= run.evaluate("test")["accuracy"] <= 1.0


def test_lstm_becomes_dplstm() -> None:
    from opacus.layers import DPLSTM

    model = nn.Sequential(nn.LSTM(4, 8, batch_first=True))
    fixed = make_private_model(model)
    assert isinstance(fixed[0], DPLSTM)


# ------------------------------------------------------------------------------------ refusals
@pytest.mark.parametrize("setting, text", [
    ("privacy.epsilon=0", "privacy.epsilon"), ("privacy.epsilon=-1", "privacy.epsilon"),
    ("privacy.delta=0", "privacy.delta"), ("privacy.delta=1", "privacy.delta"), ("privacy.delta=1.5", "privacy.delta"),
])
def test_bad_budgets_are_one_line_errors(setting: str, text: str, tmp_path: Path, capsys) -> None:
    extra = [] if setting.startswith("privacy.epsilon") else ["--set", "privacy.epsilon=3"]
    code, _, err = run_cli(["train", "mlp-digits", "--out", str(tmp_path / "r"), "--set", setting, *extra], capsys)
    assert_one_line_error(code, err, text)


@pytest.mark.parametrize("recipe, extra, text", [
    ("dcgan-digits", [], "steps its own optimizers"), ("dqn-cartpole", [], "runs its own loop"),
    ("gcn-karate", [], "needs Poisson-sampled batches"),
    ("mlp-digits", ["--set", "trainer.accumulate=2"], "needs trainer.accumulate=1"),
])
def test_what_dp_sgd_cannot_train_is_refused(recipe: str, extra: list[str], text: str, tmp_path: Path,
                                             capsys) -> None:
    code, _, err = run_cli(["train", recipe, "--out", str(tmp_path / "r"), "--set", "privacy.epsilon=3",
                            "--set", "trainer.progress=false", *extra], capsys)
    err = "\n".join(line for line in err.splitlines()  # torch_geometric's own FutureWarning about torch.jit
                     if "Warning:" not in line and "warnings.warn(" not in line)
    assert_one_line_error(code, err, text)


@pytest.mark.slow
def test_acceptance_lenet5_mnist_dp_reaches_90_percent_within_epsilon_3(tmp_path: Path) -> None:
    from conftest import require_shared_dataset

    root = require_shared_dataset("mnist-t10k")
    run = train("lenet5-mnist-dp", overrides={**FAST, "trainer.threads": 2, "data.root": str(root)},
                out=tmp_path / "dp")
    p = run.results["privacy"]
    assert run.results["test"]["accuracy"] >= 0.90 and p["epsilon"] <= 3.0 and p["delta"] == 1e-5
