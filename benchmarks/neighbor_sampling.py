"""Neighbour-sampled mini-batches vs full-batch training on Cora, same recipe, same seeds, one run.

`gcn-cora` and `sage-cora` as shipped (full batch, 200 epochs) beside the same recipes with
``data.batching=neighbor``, ``data.num_neighbors=[10, 5]``, ``data.batch_size=32`` (5 steps an epoch
on the 140 training nodes; validation and test on sampled neighbourhoods too). Reported: mean +- std
test accuracy, seconds per run, and the mean number of nodes in a sampled training batch against
the 2,708 of the whole graph (what bounds memory on a graph too large for full-batch training).

usage: python benchmarks/neighbor_sampling.py [--data DIR] [--seeds 1] [--threads 1] [--quick]

``--quick``: 20 epochs per run (smoke figures).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile

import torch

from _common import summary_row, SHARED, print_table, write_result
import deepfoundry
from deepfoundry.config import DataConfig
from deepfoundry.data import build_data

SAMPLED = {"data.batching": "neighbor", "data.num_neighbors": [10, 5], "data.batch_size": 32}


def batch_nodes(data_dir: str) -> float:
    """Mean number of nodes per sampled training batch over one epoch."""
    data = build_data(DataConfig(name="cora", root=data_dir, batch_size=32, batching="neighbor",
                                 num_neighbors=[10, 5]))
    return statistics.mean(len(b["x"]) for b in data.train)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "datasets" / "cora"))
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="20 epochs per run (smoke)")
    args = parser.parse_args()
    epochs = {"trainer.epochs": 20} if args.quick else {}
    rows, raw = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in ("gcn-cora", "sage-cora"):
            for mode, extra in (("full batch", {}), ("neighbour [10, 5], batch 32", SAMPLED)):
                accs, secs = [], []
                for seed in range(args.seeds):
                    run = deepfoundry.train(recipe, overrides={"data.root": args.data, "seed": seed,
                                                               "trainer.progress": False, "trainer.report": False,
                                                               "trainer.threads": args.threads, **extra, **epochs},
                                            out=f"{tmp}/{recipe}-{len(extra)}-{seed}")
                    accs.append(run.results["test"]["accuracy"])
                    secs.append(run.results["seconds"])
                raw[f"{recipe} {mode}"] = {"accuracies": accs, "seconds": secs}
                rows.append({"recipe": recipe, "batching": mode, "test acc mean": statistics.mean(accs),
                             "std": statistics.stdev(accs) if len(accs) > 1 else 0.0, "seeds": len(accs),
                             "s per run": statistics.mean(secs)})
    nodes = batch_nodes(args.data)
    print_table(rows)
    print(f"mean nodes in a sampled training batch: {nodes:.0f} of 2,708")
    summary = [summary_row(f"test accuracy, {full['recipe']}: neighbour-sampled vs full batch", sampled["test acc mean"],
                           full["test acc mean"], "full-batch training")
               for full, sampled in zip(rows[0::2], rows[1::2])]
    path = write_result("neighbor_sampling", {"data": args.data, "threads": args.threads, "runs": raw, "table": rows,
                                              "mean_batch_nodes": nodes, "epochs": epochs}, quick=args.quick,
                        summary=summary)
    print(f"wrote {path}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
