"""The reference implementations' training details for GCN / GAT: weight decay on the first layer only
(Kipf & Welling), and early stopping on validation loss and accuracy together with patience (Velickovic
et al.), checked against a hand-run of the reference rule; the Cora recipes use them."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import deepfoundry
from conftest import FAST, require_shared_dataset
from deepfoundry.config import OptimConfig, TrainerConfig
from deepfoundry.engine import callbacks as cbs
from deepfoundry.engine.trainer import Trainer
from deepfoundry.errors import DeepfoundryError
from deepfoundry.models import build_model
from deepfoundry.optim import build_optimizer, parameter_groups


def test_weight_decay_on_the_first_layer_only() -> None:
    ctx = {"in_features": 6, "num_classes": 3}
    model = build_model("gcn", {"weight_decay_scope": "first"}, ctx)
    opt = build_optimizer(OptimConfig(name="adam", lr=0.01, weight_decay=5e-4), parameter_groups(model, 0.01))
    first = {id(p) for p in model.convs[0].parameters()}
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert len(decay) == sum(1 for _ in model.parameters())
    assert all(decay[i] == 5e-4 for i in first)
    assert all(w == 0.0 for i, w in decay.items() if i not in first)
    # the default keeps the plain loop's behaviour: every parameter decays
    plain = build_optimizer(OptimConfig(lr=0.01, weight_decay=5e-4),
                            parameter_groups(build_model("gcn", {}, ctx), 0.01))
    assert {g["weight_decay"] for g in plain.param_groups} == {5e-4}
    with pytest.raises(DeepfoundryError, match="weight_decay_scope"):
        build_model("gcn", {"weight_decay_scope": "last"}, ctx)


def _reference_gat_rule(losses: list[float], accs: list[float], patience: int) -> tuple[int, int]:
    """Velickovic et al.'s execute_cora.py loop: (epoch whose weights are saved, epochs run)."""
    vacc_mx, vlss_mn, curr_step, saved = 0.0, float("inf"), 0, -1
    for epoch, (loss, acc) in enumerate(zip(losses, accs)):
        if acc >= vacc_mx or loss <= vlss_mn:
            if acc >= vacc_mx and loss <= vlss_mn:
                saved = epoch
            vacc_mx, vlss_mn = max(acc, vacc_mx), min(loss, vlss_mn)
            curr_step = 0
        else:
            curr_step += 1
            if curr_step == patience:
                return saved, epoch + 1
    return saved, len(losses)


def test_joint_early_stopping_follows_the_gat_reference() -> None:
    gen = torch.Generator().manual_seed(0)
    for trial in range(20):
        n = 60
        losses = (1.0 / (1 + torch.arange(n) * 0.1) + 0.05 * torch.rand(n, generator=gen)).tolist()
        accs = (torch.rand(n, generator=gen) * 0.2 + torch.linspace(0.5, 0.7, n)).round(decimals=2).tolist()
        model = torch.nn.Linear(1, 1)
        trainer = SimpleNamespace(unwrapped_model=model, should_stop=False, stop_reason=None)
        cb = cbs.JointEarlyStopping("val_loss", "min", "val_accuracy", "max", patience=5, restore_best=True)
        ran = 0
        for epoch, (loss, acc) in enumerate(zip(losses, accs)):
            with torch.no_grad():
                model.weight.fill_(epoch)  # the weights remember their epoch
            cb.on_epoch_end(trainer, {"epoch": epoch, "val_loss": loss, "val_accuracy": acc})
            ran = epoch + 1
            if trainer.should_stop:
                break
        cb.on_fit_end(trainer)
        saved, epochs = _reference_gat_rule(losses, accs, 5)
        assert (cb.best_epoch, ran) == (saved, epochs), trial
        assert model.weight.item() == saved and cb.restored


def test_joint_early_stopping_from_the_config_and_its_state() -> None:
    cfg = TrainerConfig(epochs=3, progress=False, tensorboard=False,
                        early_stopping={"monitor": "val_loss", "also": "val_accuracy", "patience": 100})
    trainer = Trainer(cfg, OptimConfig())
    joint = [cb for cb in trainer.callbacks if isinstance(cb, cbs.JointEarlyStopping)]
    assert len(joint) == 1 and (joint[0].also, joint[0].also_mode, joint[0].patience) == ("val_accuracy", "max", 100)
    joint[0].bests = [0.5, 0.8]
    again = cbs.JointEarlyStopping("val_loss", "min", "val_accuracy", "max", 100)
    again.load_state_dict(joint[0].state_dict())
    assert again.bests == [0.5, 0.8]


@pytest.mark.slow
def test_gat_cora_recipe_stops_on_validation(tmp_path: Path) -> None:
    """A few epochs of the real recipe: the run records the kept epoch and restores it."""
    root = require_shared_dataset("cora")
    threads = torch.get_num_threads()
    try:
        run = deepfoundry.train("gat-cora", overrides={**FAST, "trainer.threads": 1, "data.root": str(root),
                                                        "trainer.epochs": 6,
                                                        "trainer.early_stopping.patience": 2},
                                out=tmp_path / "gat")
    finally:
        torch.set_num_threads(threads)
    assert run.results["epochs_run"] <= 6
    assert "restored the weights of epoch" in run.results["stop_reason"]
    assert run.results["test"]["accuracy"] > 1 / 7
