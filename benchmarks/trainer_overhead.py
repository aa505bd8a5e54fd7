"""Trainer overhead: the same MLP, data and steps run by deepfoundry's Trainer and by a hand-written
PyTorch loop in one process, alternating; samples/s of each and their ratio.

The job is the one of ../shared/anchors/loop_overhead.py (MLP 64-256-256-10, 32,768 samples x 3
epochs, batch 128, Adam 1e-3). Rows:
- plain (tensors): a hand-written loop over in-memory tensor slices (the strict comparison: the same
  batching as the Trainer, so the difference is the Trainer's own cost);
- plain (DataLoader): the anchor's loop, a DataLoader over a TensorDataset (what users usually write);
- trainer: ``Trainer.fit`` with no run directory (no files written), no validation set;
- trainer + run dir: the same with metrics.jsonl and per-epoch safetensors checkpoints;
- Lightning: a ``pytorch_lightning.LightningModule`` with the same MLP, loss and Adam, fed the same
  in-memory tensor slices (a reshuffled permutation per epoch), ``Trainer(max_epochs=3)`` with no
  logger, checkpointing, progress bar or model summary;
- Keras 3 (torch backend): the same MLP as ``keras.Sequential`` of Dense layers, Adam 1e-3, sparse
  cross-entropy from logits, ``model.fit(x, y, batch_size=128, epochs=3, shuffle=True)`` on the arrays.
A peer whose package is missing (``pip install 'deepfoundry[bench]'``) gets a row marked unavailable.

``--quick``: 4,096 samples, 1 round (smoke figures).

usage: python benchmarks/trainer_overhead.py [--rounds 8] [--quick]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn

from _common import print_table, summary_row, write_result
from deepfoundry import Trainer
from deepfoundry.config import OptimConfig, TrainerConfig
from deepfoundry.data import ArrayLoader, DataBundle
from deepfoundry.tasks.classification import ClassificationTask

N, D, C, B, EPOCHS = 32768, 64, 10, 128, 3  # N: samples (--quick: 4096)
LIGHTNING, KERAS = "Lightning", "Keras 3 (torch)"


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(D, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, C))


def plain_tensors(x: torch.Tensor, y: torch.Tensor) -> float:
    N = len(x)
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
    N = len(x)
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
    return len(x) * EPOCHS / (time.perf_counter() - t)


class TensorBatches:
    """The plain loop's batching as an iterable: a new permutation per epoch, then slices of ``B``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return (len(self.x) + B - 1) // B

    def __iter__(self):
        perm = torch.randperm(len(self.x))
        xs, ys = self.x[perm], self.y[perm]
        for i in range(0, len(xs), B):
            yield xs[i:i + B], ys[i:i + B]


def lightning_fit(x: torch.Tensor, y: torch.Tensor) -> float:
    """Samples/s of ``pytorch_lightning.Trainer.fit`` on the same MLP, batches and optimiser."""
    import logging

    import pytorch_lightning as pl

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    class LitMLP(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = mlp()

        def training_step(self, batch, batch_idx):
            xb, yb = batch
            return F.cross_entropy(self.net(xb), yb)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), 1e-3)

    trainer_ = pl.Trainer(max_epochs=EPOCHS, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    model = LitMLP()
    t = time.perf_counter()
    trainer_.fit(model, train_dataloaders=TensorBatches(x, y))
    return len(x) * EPOCHS / (time.perf_counter() - t)


def keras_fit(x: torch.Tensor, y: torch.Tensor) -> float:
    """Samples/s of Keras 3 ``model.fit`` (torch backend) on the same MLP, batch size and optimiser."""
    os.environ["KERAS_BACKEND"] = "torch"  # read once, when keras is first imported
    import keras

    if keras.backend.backend() != "torch":
        raise RuntimeError(f"keras runs on the {keras.backend.backend()!r} backend, not torch")
    model = keras.Sequential([keras.Input((D,)), keras.layers.Dense(256, activation="relu"),
                              keras.layers.Dense(256, activation="relu"), keras.layers.Dense(C)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    xn, yn = x.numpy(), y.numpy()
    t = time.perf_counter()
    model.fit(xn, yn, batch_size=B, epochs=EPOCHS, shuffle=True, verbose=0)
    return len(x) * EPOCHS / (time.perf_counter() - t)


def available(fn, x: torch.Tensor, y: torch.Tensor) -> str | None:
    """None if the peer runs (a warm-up fit on a small slice), else why not."""
    try:
        fn(x[:1024], y[:1024])
    except ImportError as exc:
        return f"unavailable: {exc.name or exc} not installed (pip install 'deepfoundry[bench]')"
    except Exception as exc:  # a peer that breaks is reported, not fatal to the other rows
        return f"unavailable: {type(exc).__name__}: {exc}"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="4,096 samples, 1 round (smoke figures)")
    args = parser.parse_args()
    n, rounds = (4096, 1) if args.quick else (N, args.rounds)
    torch.manual_seed(0)
    x, y = torch.randn(n, D), torch.randint(0, C, (n,))
    peers = {LIGHTNING: lightning_fit, KERAS: keras_fit}
    unavailable = {name: why for name, fn in peers.items() if (why := available(fn, x, y))}
    for name, why in unavailable.items():
        print(f"{name}: {why}")
    runs: dict[str, list[float]] = {"plain (tensors)": [], "trainer": [], "plain (DataLoader)": [],
                                    "trainer + run dir": [], LIGHTNING: [], KERAS: []}
    trainer(x, y)  # warm-up (allocator, first-call costs) for both sides
    plain_tensors(x, y)
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            first, second = (plain_tensors, trainer) if r % 2 == 0 else (trainer, plain_tensors)
            for fn in (first, second):  # alternate which goes first
                runs["plain (tensors)" if fn is plain_tensors else "trainer"].append(fn(x, y))
            runs["plain (DataLoader)"].append(plain_dataloader(x, y))
            runs["trainer + run dir"].append(trainer(x, y, f"{tmp}/run{r}"))
            for name, fn in peers.items():
                if name not in unavailable:
                    runs[name].append(fn(x, y))
    base = statistics.median(runs["plain (tensors)"])
    rows = [{"loop": k, "median samples/s": statistics.median(v) if v else None, "best samples/s": max(v, default=None),
             "time ratio to plain (tensors)": base / statistics.median(v) if v else None} for k, v in runs.items()]
    print_table([{k: ("-" if v is None else v) for k, v in r.items()} for r in rows])
    ratio = base / statistics.median(runs["trainer"])
    print(f"Trainer time / plain-loop time: {ratio:.3f} (target <= 1.03)")
    med = {r["loop"]: r["median samples/s"] for r in rows}
    ours = med["trainer"]
    summary = [summary_row("samples/s, Trainer vs plain loop (tensors)", ours, med["plain (tensors)"],
                           "plain PyTorch loop", "time within 3% (ratio >= 0.971)", ratio <= 1.03)]
    for name in (LIGHTNING, KERAS):
        peer = med[name]
        summary.append(summary_row(f"samples/s, Trainer vs {name}", ours, peer,
                                   name + (f" ({unavailable[name]})" if name in unavailable else ""),
                                   "ours faster (ratio > 1)", None if peer is None else ours > peer))
    path = write_result("trainer_overhead", {"job": f"MLP 64-256-256-10, {n} x 3 epochs, batch 128, Adam",
                                              "rounds": rounds, "samples_per_s": runs, "table": rows,
                                              "trainer_time_ratio": ratio, "unavailable": unavailable},
                        quick=args.quick, summary=summary)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
