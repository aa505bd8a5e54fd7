"""Transfer learning on CIFAR-10: does a backbone the project pretrained on other classes beat
training from scratch on 500 labelled images?

1. Pretrain ``transfer`` (torchvision mobilenet_v3_small, no ImageNet weights) with the project on
   CIFAR-10 classes 0-4 (airplane, automobile, bird, cat, deer; the shared copy's ~4,500 training images).
2. On 500 labelled images of classes 5-9 (dog, frog, horse, ship, truck; 100 per class, drawn per seed),
   train the same architecture (a) fine-tuned from step 1 (``model.weights_run``), (b) from scratch,
   (c) fine-tuned from step 1 by a plain hand-written PyTorch loop (same tensors, optimizer, schedule).
   3 seeds each; accuracy on all 5,000 test images of classes 5-9; mean +- std and the margin.
3. Text: all-MiniLM-L6-v2 fine-tuned (recipe minilm-sentiment) vs the project's GRU from scratch
   (gru-sentiment) on the same split of the synthetic sentiment corpus (one seed).

Run: ``flock /tmp/deepfoundry-cpu.lock python benchmarks/transfer.py`` (``--quick`` for a smoke run).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import summary_row, SHARED, print_table, write_result  # noqa: E402

import deepfoundry  # noqa: E402
from deepfoundry.config import load_config  # noqa: E402
from deepfoundry.data import build_data  # noqa: E402

BACKBONE = "mobilenet_v3_small"
COMMON = {"data.name": "class-subset", "data.of": "cifar10", "data.batch_size": 64,
          "model.name": "transfer", "model.backbone": BACKBONE, "model.bn_momentum": 0.1,
          "task.name": "classification", "optim.name": "adamw", "optim.weight_decay": 0.05,
          "optim.scheduler.name": "onecycle", "trainer.progress": False,
          "trainer.report": False, "trainer.tensorboard": False,
          "trainer.monitor": "val_accuracy", "trainer.mode": "max"}


def overrides(root: str, **more: object) -> dict:
    return {**COMMON, "data.root": root, **more}


def pretrain(root: str, out: Path, epochs: int) -> tuple[deepfoundry.Run, float]:
    started = time.perf_counter()
    run = deepfoundry.train("lenet5-digits", overrides=overrides(
        root, **{"data.classes": [0, 1, 2, 3, 4], "data.batch_size": 128, "optim.lr": 0.003,
                 "trainer.epochs": epochs, "trainer.restore_best": False}), out=out)
    return run, time.perf_counter() - started


def finetune_overrides(root: str, seed: int, epochs: int, lr: float) -> dict:
    return overrides(root, **{"seed": seed, "data.classes": [5, 6, 7, 8, 9], "data.per_class": 100,
                              "data.val_per_class": 20, "optim.lr": lr, "trainer.epochs": epochs,
                              "trainer.restore_best": False})  # fixed epochs: no model selection on val


def project_run(root: str, out: Path, seed: int, epochs: int, lr: float, weights_run: str | None) -> tuple[float, float]:
    ov = finetune_overrides(root, seed, epochs, lr)
    if weights_run:
        ov["model.weights_run"] = weights_run
    started = time.perf_counter()
    run = deepfoundry.train("lenet5-digits", overrides=ov, out=out)
    return run.results["test"]["accuracy"], time.perf_counter() - started


def plain_finetune(root: str, seed: int, epochs: int, lr: float, pretrained: Path) -> tuple[float, float]:
    """The same fine-tuning as a hand-written PyTorch loop on the same tensors."""
    import torchvision
    from safetensors.torch import load_file

    cfg = load_config("lenet5-digits", finetune_overrides(root, seed, epochs, lr))
    data = build_data(cfg.data, seed=seed)  # the same 500 images, standardised the same way
    xtr, ytr, xte, yte = data.train.x, data.train.y, data.test.x, data.test.y
    started = time.perf_counter()
    torch.manual_seed(seed)
    model = torchvision.models.mobilenet_v3_small(weights=None)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.1
    model.classifier[3] = torch.nn.Identity()
    state = load_file(str(pretrained))
    model.load_state_dict({k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")})
    head = torch.nn.Linear(1024, 5)
    net = torch.nn.Sequential(model, head)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.05)
    bs = 64
    steps = -(-len(xtr) // bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps * epochs, pct_start=0.25)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        net.train()
        perm = torch.randperm(len(xtr), generator=gen)
        for i in range(steps):
            idx = perm[i * bs:(i + 1) * bs]
            loss = F.cross_entropy(net(xtr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    with torch.no_grad():
        pred = torch.cat([net(xte[i:i + 1024]).argmax(1) for i in range(0, len(xte), 1024)])
    return float((pred == yte).float().mean()), time.perf_counter() - started


def text_transfer(size: int) -> list[dict]:
    """all-MiniLM-L6-v2 fine-tuned (all layers / head only) vs the project's GRU from scratch, same split."""
    common = {"data.size": size, "trainer.progress": False, "trainer.report": False, "trainer.tensorboard": False}
    rows = []
    for arm, recipe, extra in (("GRU from scratch (gru-sentiment)", "gru-sentiment", {}),
                               ("MiniLM fine-tuned, all layers", "minilm-sentiment", {}),
                               ("MiniLM, head only (frozen encoder)", "minilm-sentiment",
                                {"model.freeze": "all_but_head", "optim.lr": 0.002, "trainer.epochs": 4})):
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            run = deepfoundry.train(recipe, overrides={**common, **extra}, out=Path(tmp) / "run")
            rows.append({"arm": arm, "test_acc": run.results["test"]["accuracy"],
                         "epochs": run.results["epochs_run"], "seconds": time.perf_counter() - started})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 pretraining epoch, 2 fine-tuning epochs, 1 seed")
    parser.add_argument("--pretrain-epochs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.002)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--text-size", type=int, default=2000, help="texts for the MiniLM vs GRU part (0: skip)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = str(SHARED / "datasets" / "cifar10-jpeg")
    pre_epochs, epochs, seeds = (1, 2, [0]) if args.quick else (args.pretrain_epochs, args.epochs, [0, 1, 2])
    total_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pre, pre_seconds = pretrain(root, tmp / "pretrain", pre_epochs)
        pre_acc = pre.results["test"]["accuracy"]
        print(f"pretrained {BACKBONE} on classes 0-4: test accuracy {pre_acc:.4f} ({pre_seconds:.0f} s)", flush=True)
        arms = {"fine-tuned (deepfoundry)": [], "from scratch (deepfoundry)": [], "fine-tuned (plain PyTorch)": []}
        seconds = {k: [] for k in arms}
        for seed in seeds:
            for name, weights in (("fine-tuned (deepfoundry)", str(tmp / "pretrain")),
                                  ("from scratch (deepfoundry)", None)):
                acc, sec = project_run(root, tmp / f"{name[:4]}-{seed}", seed, epochs, args.lr, weights)
                arms[name].append(acc)
                seconds[name].append(sec)
            try:
                acc, sec = plain_finetune(root, seed, epochs, args.lr, tmp / "pretrain" / "model.safetensors")
            except Exception as exc:  # the baseline must not hide the main comparison; its failure is reported
                print(f"plain PyTorch baseline failed: {type(exc).__name__}: {exc}", flush=True)
                acc, sec = float("nan"), float("nan")
            arms["fine-tuned (plain PyTorch)"].append(acc)
            seconds["fine-tuned (plain PyTorch)"].append(sec)
            print(f"seed {seed}: " + ", ".join(f"{k} {v[-1]:.4f}" for k, v in arms.items()), flush=True)

    def stats(v: list[float]) -> tuple[float, float]:
        return statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0

    rows = [{"arm": k, "test_acc_mean": stats(v)[0], "test_acc_std": stats(v)[1],
             "per_seed": " ".join(f"{a:.4f}" for a in v), "seconds_per_run": statistics.mean(seconds[k])}
            for k, v in arms.items()]
    ft, sc = arms["fine-tuned (deepfoundry)"], arms["from scratch (deepfoundry)"]
    margins = [a - b for a, b in zip(ft, sc)]
    print_table(rows)
    margin = stats(margins)
    print(f"margin fine-tuned - scratch: {margin[0]:+.4f} +- {margin[1]:.4f} (per seed: "
          f"{' '.join(f'{m:+.4f}' for m in margins)}); total {time.perf_counter() - total_start:.0f} s")
    text_rows: list[dict] = []
    if not args.quick and args.text_size:
        try:
            text_rows = text_transfer(args.text_size)
            print_table(text_rows)
        except Exception as exc:  # the image comparison above stands on its own
            print(f"text transfer failed: {type(exc).__name__}: {exc}", flush=True)
    by = {r["arm"]: r["test_acc_mean"] for r in rows}
    summary = [summary_row("test accuracy on classes 5-9 from 500 images, fine-tuned vs from scratch",
                           by["fine-tuned (deepfoundry)"], by["from scratch (deepfoundry)"],
                           "from scratch (deepfoundry)", "ratio > 1",
                           by["fine-tuned (deepfoundry)"] > by["from scratch (deepfoundry)"]),
               summary_row("test accuracy, fine-tuned: deepfoundry vs plain PyTorch loop", by["fine-tuned (deepfoundry)"],
                           by["fine-tuned (plain PyTorch)"], "plain PyTorch fine-tuning loop")]
    write_result("transfer", {
        "text": {"dataset": "sentiment-synthetic", "size": args.text_size, "rows": text_rows},
        "setup": {"backbone": BACKBONE, "pretrain_classes": [0, 1, 2, 3, 4], "pretrain_epochs": pre_epochs,
                  "finetune_classes": [5, 6, 7, 8, 9], "labelled_images": 500, "epochs": epochs, "lr": args.lr,
                  "seeds": seeds, "test_images": 5000},
        "pretrain": {"test_accuracy": pre_acc, "seconds": pre_seconds},
        "rows": rows, "margin_mean": margin[0], "margin_std": margin[1], "margins": margins,
        "total_seconds": time.perf_counter() - total_start}, quick=args.quick, summary=summary)


if __name__ == "__main__":
    main()
