"""Regularisation ablation: the `mlp-mnist-ablation` recipe (a 512-512 MLP on 1,500 MNIST training
images, 1,500 validation images, the official 10,000 test images) trained with no regulariser,
with each switch on alone, and with all of them, plus a plain PyTorch loop of the unregularised
model as the anchor, in the same run.

Switches (config keys): dropout (model.dropout=0.5), batch norm (model.batch_norm=true), weight
decay (optim.weight_decay=0.5, AdamW's decoupled decay), label smoothing (task.label_smoothing=0.1),
early stopping (trainer.early_stopping.patience=5 on val_loss, restoring the best epoch), and
augmentation (data.augment=mnist: rotation +-10 deg, shift 10%, zoom 0.9-1.1). restore_best is off,
so a run's final weights are its last epoch's (early stopping's own restore excepted).

Writes benchmarks/results/ablation.json (every curve), ablation.png (train vs val loss per arm)
and prints the table: train accuracy (eval mode, no augmentation), val and test accuracy of the
final weights, the train-val gap, the lowest val loss and the final one (the rise between them is
the overfitting).

``--quick``: 3 epochs per arm (smoke figures: too short for the regularisers to matter).

usage: python benchmarks/ablation.py [--data DIR] [--epochs 30] [--quick]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from _common import SHARED, print_table, results_dir, summary_row, write_result
import deepfoundry
from deepfoundry.config import load_config
from deepfoundry.data import build_data

ARMS: dict[str, dict] = {
    "none": {},
    "dropout": {"model.dropout": 0.5},
    "batch_norm": {"model.batch_norm": True},
    "weight_decay": {"optim.weight_decay": 0.5},
    "label_smoothing": {"task.label_smoothing": 0.1},
    "early_stopping": {"trainer.early_stopping.patience": 5},
    "augment": {"data.augment": "mnist"},
}
ARMS["all"] = {k: v for arm in list(ARMS.values()) for k, v in arm.items()}
QUIET = {"trainer.progress": False, "trainer.report": False, "trainer.tensorboard": False}


def run_arm(name: str, overrides: dict, data_root: str, epochs: int, tmp: str) -> dict:
    started = time.perf_counter()
    run = deepfoundry.train("mlp-mnist-ablation", {**overrides, **QUIET, "data.root": data_root,
                                                    "trainer.epochs": epochs}, out=f"{tmp}/{name}")
    seconds = time.perf_counter() - started
    history = run.history
    train_acc = run.evaluate("train")["accuracy"]
    val, test = run.results["val"], run.results["test"]
    val_losses = [r["val_loss"] for r in history]
    return {"arm": name, "epochs_run": len(history), "train_acc": train_acc, "val_acc": val["accuracy"],
            "test_acc": test["accuracy"], "gap": train_acc - val["accuracy"], "min_val_loss": min(val_losses),
            "final_val_loss": val_losses[-1], "seconds": seconds,
            "curves": {"train_loss": [r["train_loss"] for r in history], "val_loss": val_losses,
                       "val_accuracy": [r["val_accuracy"] for r in history]}}


def plain_anchor(data_root: str, epochs: int) -> dict:
    """The unregularised arm as a hand-written PyTorch loop: same tensors, model, optimizer, batches."""
    cfg = load_config("mlp-mnist-ablation", {"data.root": data_root})
    data = build_data(cfg.data, seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=0.0)
    xtr, ytr = data.train.x, data.train.y
    started = time.perf_counter()
    train_losses, val_losses = [], []
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(xtr))
        total = 0.0
        for i in range(0, len(xtr), cfg.data.batch_size):
            idx = perm[i:i + cfg.data.batch_size]
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        train_losses.append(total / -(-len(xtr) // cfg.data.batch_size))
        model.eval()
        with torch.no_grad():
            val_losses.append(float(F.cross_entropy(model(data.val.x), data.val.y)))
    seconds = time.perf_counter() - started
    with torch.no_grad():
        acc = {s: float((model(getattr(data, s).x).argmax(1) == getattr(data, s).y).float().mean())
               for s in ("train", "val", "test")}
    return {"arm": "plain torch (none)", "epochs_run": epochs, "train_acc": acc["train"], "val_acc": acc["val"],
            "test_acc": acc["test"], "gap": acc["train"] - acc["val"], "min_val_loss": min(val_losses),
            "final_val_loss": val_losses[-1], "seconds": seconds,
            "curves": {"train_loss": train_losses, "val_loss": val_losses}}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 3
    fig, axes = plt.subplots(-(-len(rows) // cols), cols, figsize=(12, 3.0 * -(-len(rows) // cols)), sharey=True)
    for ax, r in zip(axes.flat, rows):
        c = r["curves"]
        epochs = range(1, len(c["train_loss"]) + 1)
        ax.plot(epochs, c["train_loss"], label="train loss")
        ax.plot(epochs, c["val_loss"], label="val loss")
        ax.set_title(f"{r['arm']}: val acc {r['val_acc']:.3f}, gap {r['gap']:+.3f}", fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_yscale("log")
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("MLP 512-512 on 1,500 MNIST images: train vs val loss, each regulariser alone and all together")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(SHARED / "datasets" / "mnist"))
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--quick", action="store_true", help="3 epochs per arm (smoke)")
    args = ap.parse_args()
    if args.quick:
        args.epochs = 3
    out = results_dir(args.quick)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in ARMS.items():
            rows.append(run_arm(name, overrides, args.data, args.epochs, tmp))
            print(f"{name}: val acc {rows[-1]['val_acc']:.4f}  ({rows[-1]['seconds']:.1f}s)", flush=True)
    rows.append(plain_anchor(args.data, args.epochs))
    out.mkdir(parents=True, exist_ok=True)
    plot(rows, out / "ablation.png")
    table = [{k: v for k, v in r.items() if k != "curves"} for r in rows]
    acc = {r["arm"]: r["test_acc"] for r in rows}
    summary = [summary_row("test accuracy, no regulariser: recipe vs plain loop (same model)", acc["none"],
                           acc["plain torch (none)"], "plain PyTorch loop"),
               summary_row("test accuracy, all regularisers vs none (higher is better)", acc["all"], acc["none"],
                           "deepfoundry, no regulariser", "ratio > 1", acc["all"] > acc["none"])]
    print_table(table)
    path = write_result("ablation", {"recipe": "mlp-mnist-ablation", "data": args.data, "epochs": args.epochs,
                                     "arms": ARMS, "rows": rows, "plot": "ablation.png"}, quick=args.quick,
                        summary=summary)
    print(f"wrote {path} and {out / 'ablation.png'}")


if __name__ == "__main__":
    main()
