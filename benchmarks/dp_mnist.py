"""DP-SGD on MNIST: deepfoundry's `lenet5-mnist-dp` recipe, the non-private `lenet5-mnist` recipe, and a
plain PyTorch loop made private with opacus' `PrivacyEngine.make_private_with_epsilon`, on the same data.

Data: the t10k-only folder (8,000 train/validate, 2,000 test) as the recipes split it; the plain loop
trains on the very same standardised training tensors (taken from deepfoundry's data bundle so the
split is identical) with the recipe's hyperparameters (LeNet-5 with tanh, SGD lr 2 momentum 0.9,
batch 256, 15 epochs, C = 0.1, epsilon 3, delta 1e-5), its DataLoader Poisson-sampled by opacus.
Accuracies and epsilons are real results; seconds are smoke figures (the machine is shared) and time
different things: ours the whole `train` call (data loading, per-epoch validation, test pass, saving),
the plain loop its training epochs only.

``--quick``: 2 epochs everywhere (``trainer.epochs=2``; opacus fits its noise to epsilon 3 over 2 epochs too):
smoke figures.

usage: python benchmarks/dp_mnist.py [--data DIR] [--quick]
"""
from __future__ import annotations

import argparse
import tempfile
import time
import warnings

import torch
from torch import nn

from _common import SHARED, print_table, summary_row, write_result
import deepfoundry
from deepfoundry.config import load_config
from deepfoundry.data import build_data

QUIET = {"trainer.progress": False, "trainer.report": False, "trainer.tensorboard": False}
EPOCHS: dict = {}  # --quick: {"trainer.epochs": 2}, for every side


def ours(recipe: str, data: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        run = deepfoundry.train(recipe, overrides={"data.root": data, **QUIET, **EPOCHS}, out=f"{tmp}/run")
        seconds = time.perf_counter() - started
        res = run.results
    p = res.get("privacy") or {}
    return {"method": f"deepfoundry {recipe}", "test_accuracy": res["test"]["accuracy"],
            "epsilon": p.get("epsilon"), "delta": p.get("delta"), "seconds": seconds}  # None: not private


def plain_opacus(data: str) -> dict:
    from opacus import PrivacyEngine

    cfg = load_config("lenet5-mnist-dp", {"data.root": data, **EPOCHS})
    torch.manual_seed(0)
    bundle = build_data(cfg.data, seed=cfg.seed)
    train = torch.utils.data.TensorDataset(bundle.train.x, bundle.train.y)
    loader = torch.utils.data.DataLoader(train, batch_size=cfg.data.batch_size, shuffle=True)
    model = nn.Sequential(  # LeNet-5 (tanh) for 28x28 inputs
        nn.Conv2d(1, 6, 5, padding=2), nn.Tanh(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.Tanh(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.Tanh(), nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum)
    engine = PrivacyEngine()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, optimizer, loader = engine.make_private_with_epsilon(
            module=model, optimizer=optimizer, data_loader=loader, target_epsilon=cfg.privacy.epsilon,
            target_delta=cfg.privacy.delta, epochs=cfg.trainer.epochs, max_grad_norm=cfg.privacy.max_grad_norm)
    started = time.perf_counter()
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(cfg.trainer.epochs):
        model.train()
        for x, y in loader:
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            optimizer.step()
    seconds = time.perf_counter() - started
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in bundle.test)
    return {"method": "plain loop + opacus make_private_with_epsilon", "test_accuracy": correct / bundle.test.num_samples,
            "epsilon": engine.get_epsilon(cfg.privacy.delta), "delta": cfg.privacy.delta, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "datasets" / "mnist-t10k"))
    parser.add_argument("--quick", action="store_true", help="2 epochs everywhere (smoke)")
    args = parser.parse_args()
    if args.quick:
        EPOCHS["trainer.epochs"] = 2
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    rows = [ours("lenet5-mnist-dp", args.data), plain_opacus(args.data), ours("lenet5-mnist", args.data)]
    print_table(rows)
    dp, plain, public = rows
    summary = [summary_row(f"test accuracy at epsilon {dp['epsilon']:.2f} (higher is better)", dp["test_accuracy"],
                           plain["test_accuracy"], f"plain loop + opacus (epsilon {plain['epsilon']:.2f})"),
               summary_row("test accuracy, private vs the non-private recipe", dp["test_accuracy"],
                           public["test_accuracy"], "deepfoundry lenet5-mnist (no privacy)")]
    path = write_result("dp_mnist", {"data": args.data, "rows": rows, "epochs_override": EPOCHS,
                                     "note": "accuracies and epsilons are real; seconds are smoke figures on a "
                                             "machine shared with other jobs"}, quick=args.quick, summary=summary)
    print(f"result: {path}")


if __name__ == "__main__":
    main()
