"""Tuning: 20 Optuna trials with pruning vs 20 without (same TPE seed), and the best trial vs the
recipe's default config trained the same way.

Job: ``mlp-digits`` (MLP on scikit-learn's 8x8 digits, 30 epochs, one-cycle Adam) searched over
the shipped space ``recipes/spaces/mlp-digits.yaml`` (lr, weight decay, dropout, hidden sizes,
batch size), metric val.accuracy. Every run (default and trials) uses the same overrides: one
torch thread, no TensorBoard, no progress bar. Rows: the default config; each study's wall time,
epochs actually trained (the work pruning saves, free of timing noise), its ratio to the
unpruned study, the best trial's validation accuracy and that trial's test accuracy.

``--quick``: 4 trials per study, 5 epochs per run (smoke figures).

usage: flock /tmp/deepfoundry-cpu.lock python benchmarks/tuning.py [--trials 20] [--pruners median,none] [--quick]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import summary_row, print_table, write_result

import deepfoundry
from deepfoundry.tune import tune

RECIPE, SPACE = "mlp-digits", "mlp-digits"
COMMON = {"trainer.threads": 1, "trainer.tensorboard": False, "trainer.progress": False, "trainer.report": False}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--pruners", default="median,none", help="comma-separated: median, hyperband, none")
    parser.add_argument("--seed", type=int, default=0, help="TPE sampler seed (the same for every study)")
    parser.add_argument("--quick", action="store_true", help="4 trials per study, 5 epochs per run (smoke)")
    args = parser.parse_args()
    if args.quick:
        args.trials = 4
        COMMON["trainer.epochs"] = 5
    work = Path(tempfile.mkdtemp(prefix="deepfoundry-tuning-"))

    started = time.perf_counter()
    default = deepfoundry.train(RECIPE, overrides=COMMON, out=work / "default")
    default_wall = time.perf_counter() - started
    res = default.results
    rows = [{"config": "recipe default", "trials (complete/pruned)": "1/0", "epochs trained": res["epochs_run"],
             "wall s": round(default_wall, 1), "wall ratio": "", "best val acc": res["val"]["accuracy"],
             "its test acc": res["test"]["accuracy"]}]
    studies = {}
    for pruner in args.pruners.split(","):
        started = time.perf_counter()
        result = tune(RECIPE, SPACE, trials=args.trials, sampler="tpe", pruner=pruner, seed=args.seed,
                      overrides=COMMON, out=work / f"study-{pruner}")
        wall = time.perf_counter() - started
        epochs = sum(t["epochs_run"] or 0 for t in result.trials)
        studies[pruner] = {"wall_seconds": wall, "epochs_trained": epochs, "counts": result.counts,
                           "best_trial": result.best_trial, "best_params": result.best_params,
                           "best_val_accuracy": result.best_value,
                           "best_test_accuracy": result.best_test.get("accuracy"), "importances": result.importances,
                           "trials": [{k: t[k] for k in ("number", "state", "value", "params", "epochs_run", "seconds")}
                                      for t in result.trials]}
    base = studies.get("none")
    for pruner, s in studies.items():
        c = s["counts"]
        rows.append({"config": f"TPE, pruner {pruner}", "trials (complete/pruned)": f"{c.get('complete', 0)}/"
                     f"{c.get('pruned', 0)}", "epochs trained": s["epochs_trained"], "wall s": round(s["wall_seconds"], 1),
                     "wall ratio": round(s["wall_seconds"] / base["wall_seconds"], 3) if base else "",
                     "best val acc": s["best_val_accuracy"], "its test acc": s["best_test_accuracy"]})
    print_table(rows)
    summary = []
    if "median" in studies and base:
        med = studies["median"]
        summary.append(summary_row(f"epochs trained by {args.trials} TPE trials, median pruning vs none (lower is better)",
                                   med["epochs_trained"], base["epochs_trained"], "no pruning", "ratio < 1",
                                   med["epochs_trained"] < base["epochs_trained"]))
    for pruner, st in studies.items():
        summary.append(summary_row(f"test accuracy of the best trial (pruner {pruner}) vs the recipe default",
                                   st["best_test_accuracy"], res["test"]["accuracy"], "recipe default config"))
    path = write_result("tuning", {
        "recipe": RECIPE, "space": SPACE, "trials": args.trials, "sampler": "tpe", "seed": args.seed, "overrides": COMMON,
        "default": {"val": res["val"]["accuracy"], "test": res["test"]["accuracy"], "wall_seconds": default_wall,
                    "epochs": res["epochs_run"]},
        "studies": studies, "rows": rows}, quick=args.quick, summary=summary)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
