"""VAEs on the standard MNIST split: test negative ELBO against training time, deepfoundry's
`conv-vae-mnist` recipe beside the plain pytorch/examples MLP VAE of ../shared/anchors/vae_mnist_plain.py,
each trained for the same time budget in the same run; plus the importance-weighted estimate of the
conv VAE's test log-likelihood (k samples per image).

The negative ELBO is the anchor's: Bernoulli likelihood on the continuous pixels in [0, 1], summed over
the 784 pixels, plus the KL term, one posterior draw per image, in nats per image. Our clock is the
Trainer's (training and its per-epoch validation pass), without the test pass this benchmark adds
after every epoch; the anchor's clock is its own `train_s` (training only). The anchor runs as a
subprocess and is stopped at the first epoch whose `train_s` reaches the budget. CPU seconds (user +
system) are reported too: on a shared machine they say how much computing each side actually got.

usage: python benchmarks/vae_mnist.py [--data DIR] [--budget 600] [--epochs 12] [--threads 2] [--iw-k 100]
       [--recipe conv-vae-mnist] [--set model.flow_steps=4 ...] [--quick]

``--quick``: 30 s budget a side, 2 epochs on 10,000 images for ours, IW k=10 on 200 images (smoke figures).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time

import torch
import yaml

from _common import SHARED, print_table, summary_row, write_result
import deepfoundry
from deepfoundry import Callback
from deepfoundry.generative import importance_weighted_nll


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Curve(Callback):
    """After every epoch: the test negative ELBO, the training clock (probe time removed), CPU seconds;
    stops the run once the clock passes the budget."""

    def __init__(self, budget: float) -> None:
        self.budget, self.t0, self.c0, self.probe, self.cprobe = budget, 0.0, 0.0, 0.0, 0.0
        self.rows: list[dict] = []

    def on_fit_start(self, trainer) -> None:
        self.t0, self.c0 = time.perf_counter(), _cpu_self()

    def on_validation_end(self, trainer, metrics) -> None:
        now, cnow = time.perf_counter(), _cpu_self()
        test = trainer.evaluate(trainer.data.test)["neg_elbo"]
        seconds = now - self.t0 - self.probe
        self.rows.append({"epoch": trainer.epoch + 1, "train_s": round(seconds, 1),
                          "cpu_s": round(cnow - self.c0 - self.cprobe, 1), "test_neg_elbo": round(test, 2)})
        print(json.dumps({"ours": self.rows[-1]}), flush=True)
        self.probe += time.perf_counter() - now
        self.cprobe += _cpu_self() - cnow
        if seconds >= self.budget:
            trainer.should_stop = True
            trainer.stop_reason = f"time budget of {self.budget:.0f} s reached"


def ours(data: str, budget: float, epochs: int, threads: int, iw_k: int, iw_images: int,
         limit: int | None = None, recipe: str = "conv-vae-mnist", extra: dict | None = None) -> dict:
    curve = Curve(budget)
    with tempfile.TemporaryDirectory() as tmp:
        run = deepfoundry.train(recipe, out=f"{tmp}/run", callbacks=[curve], overrides={
            "data.root": data, "trainer.epochs": epochs, "trainer.threads": threads, "trainer.progress": False,
            "trainer.report": False, "trainer.tensorboard": False, "trainer.restore_best": False, "data.limit": limit, **(extra or {})})
        torch.set_num_threads(threads)
        x = run.data().test.x[:iw_images]
        started = time.perf_counter()
        nll = importance_weighted_nll(run.model.eval(), x, k=iw_k)
        iw_seconds = time.perf_counter() - started
        elbo_same = run.evaluate("test")["neg_elbo"]
        model_cfg = run.config.model.model_dump(mode="json")
    return {"curve": curve.rows, "final_test_neg_elbo": curve.rows[-1]["test_neg_elbo"],
            "best_test_neg_elbo": min(r["test_neg_elbo"] for r in curve.rows),
            "train_s": curve.rows[-1]["train_s"], "cpu_s": curve.rows[-1]["cpu_s"],
            "iw_nll": float(nll.mean()), "iw_k": iw_k, "iw_images": len(x), "iw_seconds": iw_seconds,
            "test_neg_elbo_all": elbo_same, "recipe": recipe, "model": model_cfg}


def anchor(path: str, data: str, budget: float) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen([sys.executable, "-u", path, data, "--protocol", "full", "--model", "mlp",
                             "--epochs", "100000"], stdout=subprocess.PIPE, text=True)
    rows = []
    for line in proc.stdout:
        row = json.loads(line)
        if "epoch" not in row:
            continue
        rows.append(row)
        print(json.dumps({"anchor": row}), flush=True)
        if row["train_s"] >= budget:
            break
    proc.terminate()
    proc.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {"curve": rows, "final_test_neg_elbo": rows[-1]["test_neg_elbo"],
            "best_test_neg_elbo": min(r["test_neg_elbo"] for r in rows), "train_s": rows[-1]["train_s"],
            "cpu_s_total": round(cpu, 1)}


def _overrides(sets: list[str]) -> dict:
    """``["model.flow_steps=4", ...]`` -> ``{"model.flow_steps": 4}`` (values parsed as YAML)."""
    out = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set needs KEY=VALUE; received {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "datasets" / "mnist"))
    parser.add_argument("--anchor", default=str(SHARED / "anchors" / "vae_mnist_plain.py"))
    parser.add_argument("--budget", type=float, default=600.0, help="training seconds for each side")
    parser.add_argument("--epochs", type=int, default=12, help="the recipe's epochs (its cosine schedule's length)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iw-k", type=int, default=100)
    parser.add_argument("--iw-images", type=int, default=1000)
    parser.add_argument("--recipe", default="conv-vae-mnist", help="our recipe (a VAE recipe on MNIST)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override of our recipe, e.g. --set model.flow_steps=4 (repeatable)")
    parser.add_argument("--limit", type=int, default=None, help="training images of ours (smoke runs only)")
    parser.add_argument("--quick", action="store_true", help="30 s a side, 2 epochs, 10,000 images (smoke)")
    args = parser.parse_args()
    if args.quick:
        args.budget, args.epochs, args.limit, args.iw_k, args.iw_images = 30.0, 2, 10_000, 10, 200
    mine = ours(args.data, args.budget, args.epochs, args.threads, args.iw_k, args.iw_images, args.limit, args.recipe,
                _overrides(args.sets))
    plain = anchor(args.anchor, args.data, args.budget)
    rows = [{"model": "plain MLP VAE 784-400-20 (anchor)", "epochs": len(plain["curve"]), "train s": plain["train_s"],
             "final test -ELBO": plain["final_test_neg_elbo"], "best test -ELBO": plain["best_test_neg_elbo"],
             "IW NLL": float("nan")},
            {"model": f"deepfoundry {args.recipe}", "epochs": len(mine["curve"]), "train s": mine["train_s"],
             "final test -ELBO": mine["final_test_neg_elbo"], "best test -ELBO": mine["best_test_neg_elbo"],
             "IW NLL": mine["iw_nll"]}]
    print_table(rows)
    print(f"conv VAE: IW estimate of -log p(x), k={mine['iw_k']}, {mine['iw_images']} test images: "
          f"{mine['iw_nll']:.2f} nats ({mine['iw_seconds']:.0f} s); target test -ELBO <= 96")
    path = write_result("vae_mnist", {"data": args.data, "budget_s": args.budget, "threads": args.threads,
                                       "epochs": args.epochs, "overrides": _overrides(args.sets),
                                       "ours": mine, "anchor": plain, "table": rows, "limit": args.limit},
                        quick=args.quick,
                        summary=[summary_row(f"final test -ELBO (nats/image) after {args.budget:g} s of training "
                                             "(lower is better)", mine["final_test_neg_elbo"],
                                             plain["final_test_neg_elbo"], "plain MLP VAE (anchor)", "ours <= 96",
                                             mine["final_test_neg_elbo"] <= 96)])
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
