"""Graph classification on the offline synthetic set: the `gin-graphs` recipe beside a plain PyTorch
Geometric loop (``torch_geometric.loader.DataLoader`` over ``Data`` objects, the same GIN, optimiser,
batch size and epochs) and the structure-blind baseline (``model.name=mlp_graph``: the same network
with every message-passing layer replaced by a per-node linear layer), same graphs, one run.

The plain loop has no anchor script in ../shared/anchors, so it is written here as a user would
write it (the PyG GIN example's layout). Its clock covers its epochs and one test pass; ours is the
wall clock of ``Trainer.fit``, which also validates every epoch and keeps the best validation epoch
(the plain loop reports its last epoch). One torch thread each (small graphs: many small ops).

``--quick``: 1 seed, 5 epochs (smoke figures).

usage: python benchmarks/gin_graphs.py [--seeds 2] [--epochs 40] [--quick]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from _common import print_table, summary_row, write_result
import deepfoundry
from deepfoundry.data.graph_sets import synthetic_graph_set
from deepfoundry.splits import stratified_split_of_all


def plain_pyg(seed: int, epochs: int) -> dict:
    from torch import nn
    from torch_geometric.data import Data
    from torch_geometric.loader import DataLoader
    from torch_geometric.nn import GINConv, global_add_pool

    graphs = synthetic_graph_set(seed=0)  # the recipe's graphs (data.graph_seed=0) and split (seed)
    train, _, test = stratified_split_of_all(graphs.y.numpy(), 0.1, 0.2, seed)
    data = [Data(x=graphs.graph(g)[0], edge_index=graphs.graph(g)[1], y=graphs.y[g:g + 1]) for g in range(len(graphs))]
    torch.manual_seed(seed)

    class GIN(nn.Module):
        def __init__(self, hidden: int = 64, depth: int = 3) -> None:
            super().__init__()
            sizes = [8] + [hidden] * depth
            self.convs = nn.ModuleList(GINConv(nn.Sequential(nn.Linear(sizes[i], hidden), nn.ReLU(),
                                                             nn.Linear(hidden, hidden)), train_eps=True)
                                       for i in range(depth))
            self.norms = nn.ModuleList(nn.BatchNorm1d(hidden) for _ in range(depth))
            self.head = nn.Sequential(nn.Linear(hidden * depth, hidden), nn.ReLU(), nn.Dropout(0.5),
                                      nn.Linear(hidden, 4))

        def forward(self, x, edge_index, batch):
            pooled = []
            for conv, norm in zip(self.convs, self.norms):
                x = F.relu(norm(conv(x, edge_index)))
                pooled.append(global_add_pool(x, batch))
            return self.head(torch.cat(pooled, dim=1))

    model = GIN()
    opt = torch.optim.Adam(model.parameters(), lr=0.005)
    train_loader = DataLoader([data[i] for i in train], batch_size=64, shuffle=True)
    test_loader = DataLoader([data[i] for i in test], batch_size=1024)
    started = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for b in train_loader:
            opt.zero_grad()
            F.cross_entropy(model(b.x, b.edge_index, b.batch), b.y).backward()
            opt.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for b in test_loader:
            correct += int((model(b.x, b.edge_index, b.batch).argmax(1) == b.y).sum())
    return {"accuracy": correct / len(test), "seconds": time.perf_counter() - started}


def ours(model: str, seed: int, epochs: int, out: str) -> dict:
    run = deepfoundry.train("gin-graphs", overrides={"model.name": model, "seed": seed, "trainer.epochs": epochs,
                                                     "trainer.progress": False, "trainer.report": False,
                                                     "trainer.threads": 1}, out=out)
    return {"accuracy": run.results["test"]["accuracy"], "seconds": run.results["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--quick", action="store_true", help="1 seed, 5 epochs (smoke)")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.epochs = 1, 5
    results: dict[str, list[dict]] = {"plain": [], "gin_graph": [], "mlp_graph": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):  # alternate the order of the loops from seed to seed
            order = ["plain", "gin_graph", "mlp_graph"] if seed % 2 == 0 else ["mlp_graph", "gin_graph", "plain"]
            for name in order:
                torch.set_num_threads(1)
                r = plain_pyg(seed, args.epochs) if name == "plain" else ours(name, seed, args.epochs,
                                                                              f"{tmp}/{name}{seed}")
                results[name].append(r)
    labels = {"plain": "plain PyG loop, GIN (last epoch)", "gin_graph": "deepfoundry gin-graphs (GIN)",
              "mlp_graph": "deepfoundry gin-graphs, model.name=mlp_graph (structure-blind)"}
    rows = []
    for name, rs in results.items():
        accs = [r["accuracy"] for r in rs]
        rows.append({"loop": labels[name], "test acc mean": statistics.mean(accs),
                     "std": statistics.stdev(accs) if len(accs) > 1 else 0.0, "seeds": len(accs),
                     "s per run": statistics.mean(r["seconds"] for r in rs),
                     "epochs/s": args.epochs / statistics.mean(r["seconds"] for r in rs)})
    print_table(rows)
    plain, gin, blind = rows
    summary = [summary_row("test accuracy, gin-graphs vs plain PyG GIN loop", gin["test acc mean"],
                           plain["test acc mean"], "plain PyTorch Geometric loop"),
               summary_row("epochs/s, gin-graphs vs plain PyG GIN loop", gin["epochs/s"], plain["epochs/s"],
                           "plain PyTorch Geometric loop"),
               summary_row("test accuracy, GIN vs structure-blind mlp_graph", gin["test acc mean"],
                           blind["test acc mean"], "mlp_graph (no message passing)", "ratio > 1",
                           gin["test acc mean"] > blind["test acc mean"])]
    path = write_result("gin_graphs", {"epochs": args.epochs, "results": results, "table": rows},
                        quick=args.quick, summary=summary)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
