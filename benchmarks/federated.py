"""Federated learning: FedAvg and FedProx (real Flower processes on 127.0.0.1) per round, beside centralised
training of the same recipe (default `mlp-digits`, 5 clients, 20 rounds, Dirichlet(0.5) label skew).

Accuracies are real results; seconds are smoke figures (client processes start on a shared machine).

``--quick``: 3 clients, 3 rounds (smoke figures).

usage: python benchmarks/federated.py [--recipe mlp-digits] [--clients 5] [--rounds 20] [--partition dirichlet:0.5]
       [--quick]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _common import print_table, summary_row, write_result
import deepfoundry
from deepfoundry.responsible.federated import federate

QUIET = ["trainer.progress=false", "trainer.report=false", "trainer.tensorboard=false"]


def federated(recipe: str, clients: int, rounds: int, partition: str, strategy: str, mu: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        path, results = federate(recipe, clients, rounds, partition, strategy, mu, 1, QUIET, Path(tmp) / "run")
        seconds = time.perf_counter() - started
        rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    curve = [round(r["val_accuracy"], 4) for r in rows if r.get("kind") == "round"]
    return {"method": strategy + (f" (mu {mu})" if strategy == "fedprox" else ""),
            "test_accuracy": results["test"]["accuracy"], "val_by_round": curve, "seconds": seconds}


def centralised(recipe: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        run = deepfoundry.train(recipe, overrides=QUIET, out=f"{tmp}/run")
        seconds = time.perf_counter() - started
        curve = [round(r["val_accuracy"], 4) for r in run.history]
        return {"method": "centralised", "test_accuracy": run.results["test"]["accuracy"],
                "val_by_epoch": curve, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="mlp-digits")
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--partition", default="dirichlet:0.5")
    parser.add_argument("--mu", type=float, default=0.01)
    parser.add_argument("--quick", action="store_true", help="3 clients, 3 rounds (smoke)")
    args = parser.parse_args()
    if args.quick:
        args.clients, args.rounds = 3, 3
    rows = [centralised(args.recipe),
            federated(args.recipe, args.clients, args.rounds, args.partition, "fedavg", args.mu),
            federated(args.recipe, args.clients, args.rounds, args.partition, "fedprox", args.mu)]
    print_table([{k: v for k, v in r.items() if not k.startswith("val_by")} for r in rows])
    for r in rows[1:]:
        print(f"{r['method']:>16} val accuracy by round: {r['val_by_round']}")
    summary = [summary_row(f"test accuracy, {r['method']}, {args.clients} clients x {args.rounds} rounds vs centralised",
                           r["test_accuracy"], rows[0]["test_accuracy"], f"centralised {args.recipe}")
               for r in rows[1:]]
    path = write_result("federated", {**vars(args), "rows": rows,
                                      "note": "accuracies are real; seconds are smoke figures on a shared machine"},
                        quick=args.quick, summary=summary)
    print(f"result: {path}")


if __name__ == "__main__":
    main()
