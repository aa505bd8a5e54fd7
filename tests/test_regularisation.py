"""Regularisation switches: dropout / batch norm on the models, weight decay, label smoothing, and
early stopping (stops, restores the best weights, resumes exactly)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import deepfoundry
from deepfoundry.api import model_context
from deepfoundry.config import TrainerConfig, load_config
from deepfoundry.data import build_data
from deepfoundry.engine.callbacks import EarlyStopping
from deepfoundry.engine.checkpoint import load_state, load_weights, save_state
from deepfoundry.engine.trainer import Trainer
from deepfoundry.errors import DeepfoundryError
from deepfoundry.models import build_model
from deepfoundry.tasks import build_task

IMAGE_CTX = {"num_classes": 10, "in_channels": 3, "input_size": (32, 32), "in_features": 3 * 32 * 32}


@pytest.mark.parametrize("name, kwargs", [("mlp", {}), ("lenet5", {}), ("vgg11", {"width": 0.125, "classifier_width": 32}),
                                          ("alexnet", {"width": 0.25}), ("gru", {"vocab_size": 50})])
def test_dropout_switch_reaches_the_layers(name: str, kwargs: dict) -> None:
    ctx = {**IMAGE_CTX, **({"vocab_size": 50} if name == "gru" else {})}
    kwargs = {k: v for k, v in kwargs.items() if k != "vocab_size"}
    model = build_model(name, {**kwargs, "dropout": 0.37}, ctx)
    rates = {m.p for m in model.modules() if isinstance(m, nn.Dropout)}
    assert rates == {0.37}


@pytest.mark.parametrize("name", ["mlp", "lenet5"])
def test_batch_norm_switch(name: str) -> None:
    with_bn = build_model(name, {"batch_norm": True}, IMAGE_CTX)
    without = build_model(name, {}, IMAGE_CTX)
    assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in with_bn.modules())
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in without.modules())


def _digits_task(overrides: dict):
    cfg = load_config("mlp-digits", overrides)
    data = build_data(cfg.data, seed=cfg.seed)
    model = build_model(cfg.model.name, cfg.model.builder_kwargs(), model_context(data.info))
    return cfg, data, build_task(cfg.task, model, data.info)


def test_weight_decay_and_label_smoothing_switches() -> None:
    cfg, data, task = _digits_task({"optim.weight_decay": 0.01, "task.label_smoothing": 0.2})
    trainer = Trainer(TrainerConfig(epochs=1, progress=False, device="cpu"), cfg.optim)
    trainer._setup(task, data)
    assert all(g["weight_decay"] == 0.01 for g in trainer.optimizers["main"].param_groups)
    logits = torch.tensor([[8.0, -8.0]])
    smooth = task.loss_fn(logits, torch.tensor([0]))
    plain = torch.nn.functional.cross_entropy(logits, torch.tensor([0]))
    assert smooth > plain + 0.5  # smoothing penalises a confident correct answer


def test_early_stopping_config_switch() -> None:
    cfg = load_config("mlp-digits", {"trainer.early_stopping.patience": 2})
    es = cfg.trainer.early_stopping
    assert es.enabled and es.monitor is None and es.restore_best
    cfg = load_config("mlp-digits", {"trainer.early_stopping": {"monitor": "val_loss", "mode": "min"}})
    trainer = Trainer(cfg.trainer, cfg.optim)
    cb = next(c for c in trainer.callbacks if isinstance(c, EarlyStopping))
    assert (cb.monitor, cb.mode) == ("val_loss", "min")  # its own, not trainer.monitor (val_accuracy)
    with pytest.raises(DeepfoundryError, match="trainer.early_stopping.mode"):
        load_config("mlp-digits", {"trainer.early_stopping.mode": "lowest"})


OVERFIT = {"data.limit": 200, "model.hidden_sizes": [64, 64], "trainer.threads": 1, "model.dropout": 0.0, "optim.lr": 0.01,
           "optim.scheduler.name": "none", "trainer.epochs": 40, "trainer.progress": False,
           "trainer.tensorboard": False, "trainer.monitor": "val_loss", "trainer.mode": "min"}


def test_early_stopping_stops_and_restores_best_weights() -> None:
    cfg, data, task = _digits_task(OVERFIT)
    stopper = EarlyStopping("val_loss", "min", patience=3, restore_best=True)
    trainer = Trainer(cfg.trainer.model_copy(update={"device": "cpu"}), cfg.optim, callbacks=[stopper])
    history = trainer.fit(task, data)
    assert trainer.should_stop and len(history) < 40
    assert len(history) == stopper.best_epoch + 3  # stopped exactly `patience` epochs after the best
    best = min(r["val_loss"] for r in history)
    assert history[stopper.best_epoch - 1]["val_loss"] == best
    assert trainer.evaluate(data.val)["loss"] == pytest.approx(best, rel=1e-5)  # the best weights are back
    assert history[-1]["val_loss"] > best


@pytest.mark.slow
def test_early_stopping_state_round_trips_and_resume_is_exact(tmp_path: Path) -> None:
    es = {"trainer.early_stopping": {"patience": 3, "monitor": "val_loss", "mode": "min"}}
    full = deepfoundry.train("mlp-digits", {**OVERFIT, **es}, out=tmp_path / "full")
    part = deepfoundry.train("mlp-digits", {**OVERFIT, **es, "trainer.epochs": 2}, out=tmp_path / "part")
    state = load_state(part.path / "checkpoints" / "last.safetensors")["callbacks"]["EarlyStopping"]
    assert state["wait"] >= 0 and set(state["best_weights"]) == set(part.model.state_dict())
    resumed = deepfoundry.train(None, {"trainer.epochs": 40}, resume=part.path)
    assert resumed.results["epochs_run"] == full.results["epochs_run"] < 40
    assert "early stopping" in resumed.results["stop_reason"]
    a, b = load_weights(full.path / "model.safetensors"), load_weights(resumed.path / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    round_trip = tmp_path / "es.safetensors"
    save_state(round_trip, {"es": state})
    again = EarlyStopping()
    again.load_state_dict(load_state(round_trip)["es"])
    assert again.best == state["best"] and again.best_epoch == state["best_epoch"]


def test_early_stopping_on_a_missing_metric_is_one_line_error() -> None:
    cfg, data, task = _digits_task({**OVERFIT, "trainer.epochs": 1})
    trainer = Trainer(cfg.trainer.model_copy(update={"device": "cpu"}), cfg.optim,
                      callbacks=[EarlyStopping("val_acc", "max", patience=2)])
    with pytest.raises(DeepfoundryError, match="monitor 'val_acc' not in logged metrics; available: .*val_accuracy"):
        trainer.fit(task, data)


@pytest.mark.slow
def test_ablation_recipe_with_every_switch_on_real_mnist(tmp_path: Path) -> None:
    from conftest import require_shared_dataset

    root = require_shared_dataset("mnist")
    switches = {"model.dropout": 0.5, "model.batch_norm": True, "optim.weight_decay": 0.5,
                "task.label_smoothing": 0.1, "trainer.early_stopping.patience": 5, "data.augment": "mnist"}
    run = deepfoundry.train("mlp-mnist-ablation", {**switches, "data.root": str(root), "data.limit": 400,
                                                   "trainer.epochs": 2, "trainer.progress": False,
                                                   "trainer.tensorboard": False}, out=tmp_path / "all")
    assert run.config.trainer.early_stopping.enabled and run.info["augment"][0]["name"] == "RandomAffine"
    assert len(run.history) == 2 and run.results["test"]["accuracy"] > 0.5
