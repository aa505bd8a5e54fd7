"""Model-FLOPs utilisation (MFU) on CPU: training steps of four recipes against the machine's measured matmul peak.

For each recipe (lenet5-mnist on the MNIST t10k copy, vgg11-bn-cifar10 on the CIFAR-10 binary copy,
transformer-shakespeare and char-lstm-shakespeare on tiny Shakespeare) the recipe's own data, model, task and optimiser run in
deepfoundry's ``Trainer``; a callback stamps the end of every training step, and the step time is the
median gap between consecutive stamps after the warm-up steps (data fetch + forward + backward +
optimiser step: what one step of a real run costs).

    FLOPs per step  F = FlopCounterMode count of one forward + backward on a training batch
                        (``Trainer.step_flops``: matrix products, convolutions, attention; element-wise
                        operations and the optimiser are not counted, as in the usual MFU definition)
    achieved        A = F / step time                                        [FLOP/s]
    peak            P = max over repeats of 2 n^3 / time(torch.mm(n x n, n x n))   (float32, same threads)
    MFU             = A / P

The peak is measured in the same process, with the same thread count, just before the recipes. A step that
ran under bf16 autocast (``trainer.precision`` bf16, or ``auto`` on a CPU with AVX512-BF16/AMX) is measured
against the bfloat16 ``torch.mm`` peak instead.

``--variants`` adds rows for settings the recipes do not take (NCHW for the VGG, which takes channels-last, and
channels-last for LeNet, which does not; batch 64 for the character LSTM; float32 for the VGG and the
Transformer, which take ``precision: auto``, and bf16 for the LSTM and LeNet, which do not), to check that the
recipe's own setting is the faster one.

usage: python benchmarks/mfu.py [--threads 2] [--steps 20] [--warmup 3] [--size 2048] [--variants] [--quick]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from _common import SHARED, print_table, summary_row, write_result
from deepfoundry import Callback, Trainer
from deepfoundry.config import load_config
from deepfoundry.data import build_data
from deepfoundry.data.core import model_context
from deepfoundry.engine.seeding import seed_everything
from deepfoundry.models import build_model
from deepfoundry.optim import native_bf16
from deepfoundry.tasks import build_task

DATA = {"lenet5-mnist": SHARED / "datasets" / "mnist-t10k",
        "vgg11-bn-cifar10": SHARED / "datasets" / "cifar10-jpeg",
        "transformer-shakespeare": SHARED / "datasets" / "tinyshakespeare" / "input.txt",
        "char-lstm-shakespeare": SHARED / "datasets" / "tinyshakespeare" / "input.txt"}


def matmul_peak(size: int, repeats: int, dtype: torch.dtype = torch.float32) -> float:
    """Best ``torch.mm`` rate in ``dtype``, FLOP/s: ``2 n^3`` multiply-adds over the fastest of ``repeats``."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)  # warm-up (allocation, thread pool)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * size ** 3 / best


class _Enough(Exception):
    """Raised by the stopwatch once it has its steps (the benchmark needs no full epoch)."""


class StepClock(Callback):
    """Stamps the end of each training step; stops the fit after ``warmup + steps`` steps."""

    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup, self.steps = warmup, steps
        self.stamps: list[float] = []

    def on_epoch_start(self, trainer, epoch: int) -> None:
        self.stamps.append(time.perf_counter())  # the first step's start (an epoch's first fetch included)

    def on_train_batch_end(self, trainer, loss) -> None:
        self.stamps.append(time.perf_counter())
        if len(self.stamps) > self.warmup + self.steps:
            raise _Enough

    def step_seconds(self) -> list[float]:
        gaps = [b - a for a, b in zip(self.stamps, self.stamps[1:])]
        return gaps[self.warmup:]


VARIANTS = [("vgg11-bn-cifar10", {"trainer.channels_last": False}),
            ("lenet5-mnist", {"trainer.channels_last": True}),
            ("char-lstm-shakespeare", {"data.batch_size": 64}),
            ("transformer-shakespeare", {"trainer.precision": "32"}),
            ("char-lstm-shakespeare", {"trainer.precision": "auto"}),
            ("vgg11-bn-cifar10", {"trainer.precision": "32"}),
            ("lenet5-mnist", {"trainer.precision": "auto"})]


def measure(recipe: str, threads: int, warmup: int, steps: int, extra: dict | None = None) -> dict:
    """One recipe: FLOPs per training step, the median step time over ``steps`` steps, the achieved rate."""
    cfg = load_config(recipe, {"data.root": str(DATA[recipe]), "trainer.progress": False,
                               "trainer.tensorboard": False, "trainer.report": False, "trainer.threads": threads,
                               "trainer.epochs": 1000,  # many epochs: the clock, not the schedule, ends the fit
                               **(extra or {})})
    seed_everything(cfg.seed)
    data = build_data(cfg.data, seed=cfg.seed)
    model = build_model(cfg.model.name, cfg.model.builder_kwargs(), model_context(data.info))
    task = build_task(cfg.task, model, data.info)
    clock = StepClock(warmup, steps)
    trainer = Trainer(cfg.trainer, cfg.optim, callbacks=[clock])
    try:
        trainer.fit(task, data)
    except _Enough:
        pass
    torch.set_num_threads(threads)
    times = clock.step_seconds()
    if len(times) < steps:
        raise RuntimeError(f"{recipe}: only {len(times)} timed steps (an epoch is shorter than warm-up + steps?)")
    flops = trainer.step_flops(data.train)
    step = statistics.median(times)
    return {"recipe": recipe + "".join(f" [{k.split('.')[-1]}={v}]" for k, v in (extra or {}).items()),
            "batch_size": cfg.data.batch_size, "precision": trainer.precision, "flops_per_step": flops,
            "median_step_s": step, "step_s": times, "achieved_flops": flops / step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per recipe")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--size", type=int, default=2048, help="n of the n x n torch.mm peak")
    parser.add_argument("--repeats", type=int, default=10, help="torch.mm repeats (the fastest is the peak)")
    parser.add_argument("--quick", action="store_true", help="3 timed steps after 1, torch.mm n=1024 (smoke)")
    parser.add_argument("--variants", action="store_true", help="also the recipes with channels-last / another "
                        "batch size (does a setting the recipe lacks make its step faster?)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warmup, args.size = 3, 1, 1024
    torch.set_num_threads(args.threads)
    peak = matmul_peak(args.size, args.repeats)
    print(f"torch.mm peak ({args.size}x{args.size}, float32, {args.threads} threads): {peak / 1e9:.1f} GFLOP/s")
    peak_bf16 = matmul_peak(args.size, args.repeats, torch.bfloat16) if native_bf16("cpu") else None
    if peak_bf16:
        print(f"torch.mm peak ({args.size}x{args.size}, bfloat16, {args.threads} threads): "
              f"{peak_bf16 / 1e9:.1f} GFLOP/s")
    rows, raw = [], []
    todo = [(recipe, None) for recipe in DATA] + (VARIANTS if args.variants else [])
    for recipe, extra in todo:
        r = measure(recipe, args.threads, args.warmup, args.steps, extra)
        r["mfu"] = r["achieved_flops"] / (peak_bf16 if r["precision"] == "bf16" and peak_bf16 else peak)
        raw.append(r)
        rows.append({"recipe": r["recipe"], "batch": r["batch_size"], "precision": r["precision"],
                     "GFLOP/step": r["flops_per_step"] / 1e9,
                     "median step s": r["median_step_s"], "GFLOP/s": r["achieved_flops"] / 1e9,
                     "MFU %": 100 * r["mfu"]})
    print_table(rows)
    goal = ("vgg11-bn-cifar10", "transformer-shakespeare")  # issue 24: >= 40% on these two steps
    summary = [summary_row(f"MFU % of the torch.mm peak, {r['recipe']} training step", 100 * r["mfu"],
                           target=">= 40%" if r["recipe"] in goal else None,
                           met=100 * r["mfu"] >= 40 if r["recipe"] in goal else None)
               for r in raw]
    summary.append(summary_row(f"torch.mm peak GFLOP/s (n={args.size}, {args.threads} threads)", peak / 1e9))
    if peak_bf16:
        summary.append(summary_row(f"torch.mm bfloat16 peak GFLOP/s (n={args.size}, {args.threads} threads)",
                                   peak_bf16 / 1e9))
    path = write_result("mfu", {"threads": args.threads, "steps": args.steps, "warmup": args.warmup,
                                "peak": {"size": args.size, "repeats": args.repeats, "flops": peak,
                                         "flops_bf16": peak_bf16},
                                "recipes": raw, "table": rows}, quick=args.quick, summary=summary)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
