"""Muon (optim.name=muon): Newton-Schulz orthogonalisation, the parameter split, agreement with torch's
Muon and AdamW, exact resume, and a better character Transformer than AdamW on tiny Shakespeare."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import FAST, Crash, require_shared_dataset

import deepfoundry
from deepfoundry import DeepfoundryError
from deepfoundry.config import OptimConfig
from deepfoundry.engine.checkpoint import load_state
from deepfoundry.models import build_model
from deepfoundry.optim import Muon, build_optimizer, hidden_matrices, newton_schulz


@pytest.mark.parametrize("shape", [(64, 32), (32, 64), (48, 48), (16, 3, 5, 5)])
def test_newton_schulz_gives_an_orthogonal_factor(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    g = torch.randn(*shape)
    o = newton_schulz(g)
    assert o.shape == g.shape
    s = torch.linalg.svdvals(o.reshape(shape[0], -1))
    assert s.min() > 0.6 and s.max() < 1.3  # every direction about the same size (exactly 1 is not needed)
    u, _, vh = torch.linalg.svd(g.reshape(shape[0], -1), full_matrices=False)
    cosine = torch.nn.functional.cosine_similarity((u @ vh).flatten(), o.flatten(), dim=0)
    assert cosine > 0.95  # and it is U V^T's direction


def test_muon_agrees_with_torch_muon_and_adamw() -> None:
    torch.manual_seed(0)
    w, b = torch.nn.Parameter(torch.randn(48, 16)), torch.nn.Parameter(torch.randn(16))
    w_ref, b_ref = torch.nn.Parameter(w.detach().clone()), torch.nn.Parameter(b.detach().clone())
    start = w.detach().clone()
    ours = Muon([{"params": [w], "use_muon": True, "lr": 0.02}, {"params": [b], "use_muon": False}], lr=0.01,
                weight_decay=0.1, betas=(0.9, 0.99))
    theirs = [torch.optim.Muon([w_ref], lr=0.02, weight_decay=0.1, adjust_lr_fn="original"),
              torch.optim.AdamW([b_ref], lr=0.01, weight_decay=0.1, betas=(0.9, 0.99))]
    for _ in range(5):
        gw, gb = torch.randn(48, 16), torch.randn(16)
        w.grad, w_ref.grad, b.grad, b_ref.grad = gw.clone(), gw.clone(), gb.clone(), gb.clone()
        ours.step()
        for opt in theirs:
            opt.step()
    assert torch.allclose(b, b_ref, atol=1e-6)  # the AdamW part is AdamW
    # both iterate Newton-Schulz in bfloat16 here (ours in float32 on CPUs without it): the moves agree closely
    moved, moved_ref = w.detach() - start, w_ref.detach() - start
    assert (moved - moved_ref).norm() < 0.05 * moved_ref.norm()


def test_hidden_matrices_leave_out_embeddings_and_the_output_layer() -> None:
    lm = build_model("transformer_lm", {"d_model": 32, "num_heads": 2, "num_layers": 2, "context_length": 16},
                     {"vocab_size": 20})
    names = {n for n, p in lm.named_parameters() if id(p) in hidden_matrices(lm)}
    assert names == {f"decoder.blocks.{i}.{k}.weight" for i in range(2)
                     for k in ("self_attn.in_proj", "self_attn.out_proj", "ff.0", "ff.3")}
    net = build_model("lenet5", {}, {"num_classes": 10, "in_channels": 1})
    names = {n for n, p in net.named_parameters() if id(p) in hidden_matrices(net)}
    assert names == {"features.c1.weight", "features.c3.weight", "head.c5.weight", "head.f6.weight"}
    gen = build_model("dcgan", {"input_size": (8, 8)}, {}).generator  # its output layer is a transposed conv
    out = [m for m in gen.modules() if isinstance(m, torch.nn.ConvTranspose2d)][-1]
    chosen = hidden_matrices(gen)
    assert id(out.weight) not in chosen and len(chosen) == sum(p.dim() >= 2 for p in gen.parameters()) - 1


def test_muon_errors_are_one_line() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 1))
    with pytest.raises(DeepfoundryError, match="needs the model"):
        build_optimizer(OptimConfig(name="muon"), model.parameters())
    with pytest.raises(DeepfoundryError, match="weight matrices"):
        Muon([{"params": list(model[0].parameters()), "use_muon": True}])
    opt = build_optimizer(OptimConfig(name="muon", lr=1e-3, muon_lr=0.03), model.parameters(), module=model)
    assert [(g["use_muon"], g["lr"], len(g["params"])) for g in opt.param_groups] == [(True, 0.03, 1),
                                                                                       (False, 1e-3, 3)]


def test_muon_resume_is_bit_identical(tmp_path: Path) -> None:
    """Momentum buffers and AdamW moments go through the safetensors checkpoint and come back exactly."""
    sets = {**FAST, "optim.name": "muon", "optim.lr": 2e-3, "optim.muon_lr": 0.02, "trainer.epochs": 2,
            "trainer.checkpoint_every_steps": 7, "data.batch_size": 32, "trainer.threads": 1}
    full = deepfoundry.train("lenet5-digits", overrides=sets, out=tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        deepfoundry.train("lenet5-digits", overrides=sets, out=tmp_path / "cut", callbacks=[Crash(after=21)])
    state = load_state(tmp_path / "cut" / "checkpoints" / "last.safetensors")
    assert any("momentum_buffer" in s for s in state["optimizers"]["main"]["state"].values())
    deepfoundry.train(None, resume=tmp_path / "cut")
    a = load_state(tmp_path / "full" / "checkpoints" / "last.safetensors")["model"]
    b = load_state(tmp_path / "cut" / "checkpoints" / "last.safetensors")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert full.history[-1]["val_accuracy"] > 0.8  # it learns (chance: 0.1)


def test_muon_trains_a_character_transformer_faster_than_adamw(tmp_path: Path) -> None:
    """The same steps on the first 100,000 characters of tiny Shakespeare: Muon's validation loss is lower."""
    root = require_shared_dataset("tinyshakespeare")
    loss = {}
    for name in ("adamw", "muon"):
        run = deepfoundry.train("transformer-shakespeare", out=tmp_path / name, overrides={
            **FAST, "trainer.report": False, "data.root": str(root), "data.limit": 100_000, "data.seq_len": 64,
            "data.eval_seq_len": 64, "model.context_length": 64, "model.d_model": 64, "model.num_heads": 2,
            "model.num_layers": 2, "trainer.epochs": 2, "trainer.threads": 1, "optim.name": name,
            "model.positional": "learned", "trainer.precision": "32",  # the optimizer alone differs
            "optim.weight_decay": 0.0, "task.sample_tokens": 0})
        loss[name] = run.history[-1]["val_loss"]
    assert loss["muon"] < loss["adamw"] - 0.05, loss
