"""GCN on Cora: deepfoundry's `gcn-cora` recipe beside the plain PyTorch Geometric loop of
../shared/anchors/gcn_cora_pyg.py (Kipf & Welling settings, 200 epochs, --normalize), same data, one run.

Both train the same 2-layer GCN (hidden 16, dropout 0.5, Adam 0.01, weight decay 5e-4) with 2 torch
threads. The anchor's clock covers its 10 seeds of 200 epochs plus one test pass each; ours is the
wall clock of ``Trainer.fit`` per seed, which also validates after every epoch and writes the
checkpoints of the run directory, so the comparison is conservative for us. Reported: mean +- std
test accuracy over the seeds, seconds per 200-epoch run, and the epochs/s ratio (target >= 2).

``--gat`` also trains the `gat-cora` recipe over the same seeds (no plain counterpart; its row reports
accuracy and time only).

usage: python benchmarks/gcn_cora.py [--data DIR] [--anchor PATH] [--seeds 10] [--threads 2] [--gat]
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile

import torch

from _common import SHARED, print_table, write_result
import deepfoundry

EPOCHS = 200


def ours(data: str, seeds: int, threads: int, recipe: str = "gcn-cora") -> dict:
    accs, secs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(seeds):
            run = deepfoundry.train(recipe, overrides={"data.root": data, "seed": seed, "trainer.progress": False,
                                                       "trainer.report": False,
                                                       "trainer.tensorboard": False, "trainer.threads": threads},
                                    out=f"{tmp}/run{seed}")
            accs.append(run.results["test"]["accuracy"])
            secs.append(run.results["seconds"])
    return {"accuracies": accs, "seconds": secs, "seconds_per_run": statistics.mean(secs)}


def anchor(path: str, data: str) -> dict:
    out = subprocess.run([sys.executable, path, data, "--normalize"], capture_output=True, text=True,
                         check=True).stdout
    m = re.search(r"test acc mean ([\d.]+) std ([\d.]+) over (\d+) seeds; ([\d.]+) s per", out)
    if m is None:
        raise SystemExit(f"could not parse the anchor's output:\n{out}")
    return {"mean": float(m.group(1)), "std": float(m.group(2)), "seeds": int(m.group(3)),
            "seconds_per_run": float(m.group(4)), "stdout": out.strip()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "datasets" / "cora"))
    parser.add_argument("--anchor", default=str(SHARED / "anchors" / "gcn_cora_pyg.py"))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for our runs (the anchor uses 2)")
    parser.add_argument("--gat", action="store_true", help="also run the gat-cora recipe over the same seeds")
    args = parser.parse_args()
    plain = anchor(args.anchor, args.data)
    mine = ours(args.data, args.seeds, args.threads)
    accs = mine["accuracies"]
    rows = [
        {"loop": "plain PyG loop (anchor)", "test acc mean": plain["mean"], "std": plain["std"],
         "seeds": plain["seeds"], "s per run": plain["seconds_per_run"],
         "epochs/s": EPOCHS / plain["seconds_per_run"]},
        {"loop": "deepfoundry gcn-cora", "test acc mean": statistics.mean(accs),
         "std": statistics.stdev(accs) if len(accs) > 1 else 0.0, "seeds": len(accs),
         "s per run": mine["seconds_per_run"], "epochs/s": EPOCHS / mine["seconds_per_run"]},
    ]
    gat = ours(args.data, args.seeds, args.threads, recipe="gat-cora") if args.gat else None
    if gat is not None:
        rows.append({"loop": "deepfoundry gat-cora", "test acc mean": statistics.mean(gat["accuracies"]),
                     "std": statistics.stdev(gat["accuracies"]) if len(gat["accuracies"]) > 1 else 0.0,
                     "seeds": len(gat["accuracies"]), "s per run": gat["seconds_per_run"],
                     "epochs/s": EPOCHS / gat["seconds_per_run"]})
    print_table(rows)
    ratio = rows[1]["epochs/s"] / rows[0]["epochs/s"]
    print(f"deepfoundry epochs/s / plain PyG epochs/s: {ratio:.2f} (target >= 2)")
    path = write_result("gcn_cora", {"data": args.data, "threads": args.threads, "anchor": plain, "ours": mine,
                                      "gat": gat, "table": rows, "epochs_per_second_ratio": ratio})
    print(f"wrote {path}")


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
