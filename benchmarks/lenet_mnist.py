"""LeNet-5 on MNIST: time to 98% test accuracy, deepfoundry's `lenet5-mnist` recipe beside the plain
pytorch/examples-style loop of ../shared/anchors/lenet_mnist_plain.py (Adam 1e-3, batch 64), on the
same data in the same run.

Default data: the t10k-only folder (first 8,000 images train/validate, last 2,000 test); the anchor
trains on all 8,000, the recipe holds 800 of them out for validation. Both clocks start after the
data is in memory; the anchor's clock includes its per-epoch test pass, ours includes its per-epoch
validation pass and excludes the test pass this benchmark adds to watch the accuracy.

``--quick``: one repeat each, and the anchor stopped after 6 epochs (the recipe's length) by running a
copy of it with its epoch range shortened (smoke figures; a run that does not reach 98% has no time).

usage: python benchmarks/lenet_mnist.py [--data DIR] [--anchor PATH] [--repeats 2] [--quick]
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from _common import SHARED, print_table, summary_row, write_result
import deepfoundry
from deepfoundry import Callback

TARGET = 0.98


class TimeToAccuracy(Callback):
    """After every epoch: test accuracy, and the training clock with this probe's own time removed."""

    def __init__(self) -> None:
        self.t0 = 0.0
        self.probe = 0.0
        self.curve: list[tuple[int, float, float]] = []

    def on_fit_start(self, trainer) -> None:
        self.t0 = time.perf_counter()

    def on_validation_end(self, trainer, metrics) -> None:
        now = time.perf_counter()
        acc = trainer.evaluate(trainer.data.test)["accuracy"]
        self.curve.append((trainer.epoch + 1, now - self.t0 - self.probe, acc))
        self.probe += time.perf_counter() - now

    def first_hit(self) -> tuple[int, float] | None:
        return next(((e, t) for e, t, a in self.curve if a >= TARGET), None)


def ours(data: str) -> dict:
    probe = TimeToAccuracy()
    with tempfile.TemporaryDirectory() as tmp:
        run = deepfoundry.train("lenet5-mnist", overrides={"data.root": data, "trainer.progress": False,
                                                           "trainer.report": False,
                                                           "trainer.tensorboard": False},
                                out=f"{tmp}/run", callbacks=[probe])
        final = run.results["test"]["accuracy"]
    hit = probe.first_hit()
    return {"epoch": hit and hit[0], "seconds": hit and hit[1], "final_accuracy": final,
            "curve": probe.curve}


QUICK_EPOCHS = 6


def shortened(path: str, folder: str) -> str:
    """A copy of the anchor script in ``folder`` whose loop runs ``QUICK_EPOCHS`` epochs instead of 30."""
    text = open(path, encoding="utf-8").read()
    loop = "range(1, 16 if full else 31)"
    if loop not in text:
        raise SystemExit(f"--quick: the anchor {path} has no '{loop}' to shorten")
    copy = f"{folder}/lenet_mnist_plain_quick.py"
    with open(copy, "w", encoding="utf-8") as fh:
        fh.write(text.replace(loop, f"range(1, {QUICK_EPOCHS + 1})"))
    return copy


def anchor(path: str, data: str) -> dict:
    out = subprocess.run([sys.executable, path, data], capture_output=True, text=True, check=True).stdout
    m = re.search(r"first >= ([\d.]+) at epoch (\d+), ([\d.]+) s", out)
    final = re.findall(r"epoch 30: test acc ([\d.]+)", out)
    return {"epoch": int(m.group(2)) if m else None, "seconds": float(m.group(3)) if m else None,
            "final_accuracy": float(final[-1]) if final else None, "stdout": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "datasets" / "mnist-t10k"))
    parser.add_argument("--anchor", default=str(SHARED / "anchors" / "lenet_mnist_plain.py"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="1 repeat, the anchor cut to 6 epochs (smoke)")
    args = parser.parse_args()
    tmp = tempfile.TemporaryDirectory()
    if args.quick:
        args.repeats, args.anchor = 1, shortened(args.anchor, tmp.name)
    torch.set_num_threads(2)
    results: dict[str, list[dict]] = {"plain loop (anchor)": [], "deepfoundry lenet5-mnist": []}
    for _ in range(args.repeats):  # alternate, so both see the same machine
        results["plain loop (anchor)"].append(anchor(args.anchor, args.data))
        results["deepfoundry lenet5-mnist"].append(ours(args.data))
    rows = []
    for name, rs in results.items():
        secs = [r["seconds"] for r in rs if r["seconds"] is not None]
        rows.append({"loop": name, "epochs to 98%": ",".join(str(r["epoch"]) for r in rs),
                     "median s to 98%": statistics.median(secs) if secs else float("nan"),
                     "final test acc": ",".join("-" if r["final_accuracy"] is None else f"{r['final_accuracy']:.4f}"
                                                for r in rs)})
    print_table(rows)
    ratio = rows[1]["median s to 98%"] / rows[0]["median s to 98%"]
    print(f"deepfoundry time to 98% / plain loop time to 98%: {ratio:.3f} (target <= 0.5)")
    for rs in results["plain loop (anchor)"]:
        rs.pop("stdout")
    ours_s, plain_s = rows[1]["median s to 98%"], rows[0]["median s to 98%"]
    summary = [summary_row("s to 98% test accuracy, LeNet-5 on the MNIST t10k copy (lower is better)", ours_s,
                           plain_s, "plain PyTorch loop (anchor)", "ratio <= 0.5",
                           None if ratio != ratio else ratio <= 0.5)]
    path = write_result("lenet_mnist", {"data": args.data, "target": TARGET, "runs": results, "table": rows,
                                         "time_ratio": ratio}, quick=args.quick, summary=summary)
    tmp.cleanup()
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
