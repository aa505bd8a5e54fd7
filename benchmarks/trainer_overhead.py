"""Trainer overhead: the same MLP, data and steps run by deepfoundry's Trainer and by a hand-written
PyTorch loop in one process, alternating; samples/s of each and their ratio.

The job is the one of ../shared/anchors/loop_overhead.py (MLP 64-256-256-10, 32,768 samples x 3
epochs, batch 128, Adam 1e-3). Rows:
- plain (tensors): a hand-written loop over in-memory tensor slices (the strict comparison: the same
  batching as the Trainer, so the difference is the Trainer's own cost);
- plain (DataLoader): the anchor's loop, a DataLoader over a TensorDataset (what users usually write);
- trainer: ``Trainer.fit`` with no run directory (no files written), no validation set;
- trainer + run dir: the same with metrics.jsonl and per-epoch safetensors checkpoints.

usage: python benchmarks/trainer_overhead.py [--rounds 5]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn

from _common import print_table, write_result
from deepfoundry import Trainer
from deepfoundry.config import OptimConfig, TrainerConfig
from deepfoundry.data import ArrayLoader, DataBundle
from deepfoundry.tasks.classification import ClassificationTask

N, D, C, B, EPOCHS = 32768, 64, 10, 128, 3


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(D, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, C))


def plain_tensors(x: torch.Tensor, y: torch.Tensor) -> float:
    m = mlp()
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    t = time.perf_counter()
    for epoch in range(EPOCHS):
        perm = torch.randperm(N)
        xs, ys = x[perm], y[perm]
        for i in range(0, N, B):
            opt.zero_grad()
            F.cross_entropy(m(xs[i:i + B]), ys[i:i + B]).backward()
            opt.step()
    return N * EPOCHS / (time.perf_counter() - t)


def plain_dataloader(x: torch.Tensor, y: torch.Tensor) -> float:
    m = mlp()
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=B, shuffle=True)
    t = time.perf_counter()
    for _ in range(EPOCHS):
        for xb, yb in loader:
            opt.zero_grad()
            F.cross_entropy(m(xb), yb).backward()
            opt.step()
    return N * EPOCHS / (time.perf_counter() - t)


def trainer(x: torch.Tensor, y: torch.Tensor, run_dir: str | None = None) -> float:
    empty = ArrayLoader(x[:0], y[:0], 1024)
    data = DataBundle(ArrayLoader(x, y, B, shuffle=True), empty, empty, {"num_classes": C})
    task = ClassificationTask(mlp(), data.info)
    tr = Trainer(TrainerConfig(epochs=EPOCHS, progress=False, tensorboard=False, monitor="train_loss"),
                 OptimConfig(name="adam", lr=1e-3), run_dir=run_dir)
    t = time.perf_counter()
    tr.fit(task, data)
    return N * EPOCHS / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    x, y = torch.randn(N, D), torch.randint(0, C, (N,))
    runs: dict[str, list[float]] = {"plain (tensors)": [], "trainer": [], "plain (DataLoader)": [],
                                    "trainer + run dir": []}
    trainer(x, y)  # warm-up (allocator, first-call costs) for both sides
    plain_tensors(x, y)
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            first, second = (plain_tensors, trainer) if r % 2 == 0 else (trainer, plain_tensors)
            for fn in (first, second):  # alternate which goes first
                runs["plain (tensors)" if fn is plain_tensors else "trainer"].append(fn(x, y))
            runs["plain (DataLoader)"].append(plain_dataloader(x, y))
            runs["trainer + run dir"].append(trainer(x, y, f"{tmp}/run{r}"))
    base = statistics.median(runs["plain (tensors)"])
    rows = [{"loop": k, "median samples/s": statistics.median(v), "best samples/s": max(v),
             "time ratio to plain (tensors)": base / statistics.median(v)} for k, v in runs.items()]
    print_table(rows)
    ratio = base / statistics.median(runs["trainer"])
    print(f"Trainer time / plain-loop time: {ratio:.3f} (target <= 1.03)")
    path = write_result("trainer_overhead", {"job": "MLP 64-256-256-10, 32768 x 3 epochs, batch 128, Adam",
                                              "rounds": args.rounds, "samples_per_s": runs, "table": rows,
                                              "trainer_time_ratio": ratio})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
