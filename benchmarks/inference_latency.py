"""Inference latency on CPU: eager PyTorch vs torch.compile vs ONNX Runtime, batch 1 and 32, p50/p99, for an
image, a tabular and a text model.

Each model is a short real run of a shipped recipe (1 epoch; the latency does not depend on how well it
learned): image ``lenet5-mnist`` on the MNIST t10k copy, tabular ``mlp-adult`` on UCI Adult, text
``gru-sentiment`` on the offline synthetic corpus. All three paths compute the same function, the
run's export graph ``predict(prepare(*inputs))`` (:meth:`Task.export_graph`, what ``deepfoundry
export`` writes), on the same inputs (the first test examples, as ``Task.export_feeds`` gives them):

- eager: the graph module under ``torch.inference_mode``;
- torch.compile: ``torch.compile(graph)`` (default mode, inductor); its compile time (the first
  call at each batch size, minus one eager call) is reported apart and excluded from the latency;
- ONNX Runtime: the bundle ``deploy.export.export_run(RUN, "onnx")`` writes (parity-checked there
  to 1e-4), run by ``OnnxPredictor`` on the CPU execution provider.

Per path and batch size: ``warmup`` untimed calls, then ``calls`` timed calls one after another;
p50 and p99 of the per-call times. Every path uses the same number of threads (``--threads``).

usage: python benchmarks/inference_latency.py [--threads 2] [--calls 300] [--quick]
"""
from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from typing import Any, Callable

import numpy as np
import torch

from _common import SHARED, print_table, summary_row, write_result
import deepfoundry
from deepfoundry.deploy.export import OnnxPredictor, export_run, parity_batches

MODELS = {  # input kind -> (recipe, overrides)
    "image": ("lenet5-mnist", {"data.root": str(SHARED / "datasets" / "mnist-t10k")}),
    "tabular": ("mlp-adult", {"data.root": str(SHARED / "datasets" / "adult")}),
    "text": ("gru-sentiment", {}),
}
BATCHES = (1, 32)
PATHS = ("eager", "torch.compile", "ONNX Runtime")


def latencies(call: Callable[[], Any], warmup: int, calls: int) -> list[float]:
    """Seconds of each of ``calls`` timed calls of ``call()`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return times


def feeds_of(run: Any, n: int) -> tuple[torch.Tensor, ...]:
    """The export graph's inputs for the first ``n`` test examples of ``run``."""
    batches = parity_batches(run, n)
    feeds = [run.task.export_feeds(b) for b in batches]
    return tuple(torch.cat([f[i] for f in feeds])[:n] for i in range(len(feeds[0])))


def measure(kind: str, tmp: str, threads: int, warmup: int, calls: int) -> list[dict]:
    recipe, overrides = MODELS[kind]
    run = deepfoundry.train(recipe, overrides={**overrides, "trainer.epochs": 1, "trainer.progress": False,
                                               "trainer.report": False, "trainer.tensorboard": False,
                                               "trainer.threads": threads}, out=f"{tmp}/{kind}")
    export_run(run.path, "onnx", out=f"{tmp}/{kind}-onnx", parity_limit=64)
    torch.set_num_threads(threads)
    graph = run.task.export_graph().eval()
    compiled = torch.compile(graph)
    session = OnnxPredictor(f"{tmp}/{kind}-onnx", threads=threads)
    rows = []
    for b in BATCHES:
        feeds = feeds_of(run, b)
        with torch.inference_mode():
            eager_out = graph(*feeds)
            t = time.perf_counter()
            graph(*feeds)
            eager_once = time.perf_counter() - t
            t = time.perf_counter()
            compiled_out = compiled(*feeds)  # compiles for this shape
            compile_s = time.perf_counter() - t - eager_once
            calls_by_path = {"eager": lambda: graph(*feeds), "torch.compile": lambda: compiled(*feeds),
                             "ONNX Runtime": lambda: session.run(*feeds)}
            onnx_out = session.run(*feeds)
            diff = {"torch.compile": float((compiled_out - eager_out).abs().max()),
                    "ONNX Runtime": float(np.abs(onnx_out - eager_out.numpy()).max()), "eager": 0.0}
            for path in PATHS:
                times = np.array(latencies(calls_by_path[path], warmup, calls if b == 1 else max(calls // 3, 10)))
                rows.append({"model": kind, "recipe": recipe, "batch": b, "path": path,
                             "p50 ms": float(np.percentile(times, 50) * 1e3),
                             "p99 ms": float(np.percentile(times, 99) * 1e3),
                             "compile s": compile_s if path == "torch.compile" else None,
                             "max |diff| vs eager": diff[path], "calls": len(times)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=300, help="timed calls at batch 1 (a third at batch 32)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="60 calls after 5 warm-up calls (smoke figures)")
    args = parser.parse_args()
    if args.quick:
        args.calls, args.warmup = 60, 5
    warnings.filterwarnings("ignore")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in MODELS:
            rows.extend(measure(kind, tmp, args.threads, args.warmup, args.calls))
    print_table([{k: ("-" if v is None else v) for k, v in r.items()} for r in rows])
    p50 = {(r["model"], r["batch"], r["path"]): r["p50 ms"] for r in rows}
    summary = []
    for kind, (recipe, _) in MODELS.items():
        for b in BATCHES:
            for path in ("torch.compile", "ONNX Runtime"):
                summary.append(summary_row(f"p50 ms, {kind} ({recipe}) batch {b}: {path} vs eager (lower is better)",
                                           p50[kind, b, path], p50[kind, b, "eager"], "eager PyTorch"))
    path = write_result("inference_latency", {"threads": args.threads, "calls": args.calls, "warmup": args.warmup,
                                              "rows": rows}, quick=args.quick, summary=summary)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
