"""UCI Adult: deepfoundry's deep tabular recipes (`mlp-plr-adult`: an MLP on periodic embeddings of the numeric
columns, the headline deep model; `mlp-ple-adult`: on piecewise-linear encoded numeric columns; `mlp-adult`: the
plain MLP with categorical embeddings) beside scikit-learn's trees and a linear model on the same rows, one run.

Split: ../shared/datasets/adult holds adult.data only (32,561 rows; no adult.test), so every model uses the
recipes' split: stratified 20% test (6,512 rows), then 10% of the rest val (2,605), 23,444 train, seed 0.
The deep recipes pick their epoch on the validation rows (early stopping on val loss, best weights restored).
Baselines are fitted on the same training rows and the same preprocessing, fitted on the training rows:
LogisticRegression (lbfgs, C=1, max_iter 2000) on the standardised numeric columns, missing indicators and
one-hot categories (the `encoding: onehot` features of deepfoundry.data.preprocess), and
HistGradientBoostingClassifier (scikit-learn defaults, early stopping off) on the same one-hot features.
Reported: test (and val) accuracy, ROC-AUC and wall-clock seconds of each fit (seconds taken while other jobs
share the machine are smoke figures).

``--quick``: 2 epochs of each deep recipe (the same split and test rows; a smoke run, not a result).

usage: python benchmarks/adult.py [--quick] [--data DIR] [--threads 1] [--epochs N] [--out DIR]
"""
from __future__ import annotations

import argparse
import tempfile
import os
import time
from pathlib import Path

import torch
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score

import _common
from _common import SHARED, print_table, write_result
import deepfoundry
from deepfoundry.data.tabular import adult

RECIPES = {"mlp-plr-adult": "deepfoundry mlp-plr-adult (periodic numeric + embeddings)",
           "mlp-ple-adult": "deepfoundry mlp-ple-adult (PLE numeric + embeddings)",
           "mlp-adult": "deepfoundry mlp-adult (embeddings)"}
TARGET = 0.865  # issue 24, goal 6


def ours(recipe: str, data: str, threads: int, epochs: int | None) -> dict:
    overrides = {"data.root": data, "trainer.progress": False, "trainer.report": False, "trainer.tensorboard": False,
                 "trainer.threads": threads}
    if epochs:
        overrides["trainer.epochs"] = epochs
    with tempfile.TemporaryDirectory() as tmp:
        run = deepfoundry.train(recipe, overrides=overrides, out=f"{tmp}/run")
        test = run.results["test"]
        return {"model": RECIPES[recipe], "test_accuracy": test["accuracy"], "test_roc_auc": test["roc_auc"],
                "val_accuracy": run.results["val"]["accuracy"], "seconds": run.results["seconds"],
                "epochs": run.results["epochs_run"], "stop_reason": run.results["stop_reason"],
                "split": run.info["split_note"]}


def baselines(data: str) -> list[dict]:
    bundle = adult(root=data, encoding="onehot", seed=0)  # the recipes' split and fractions (seed 0)
    xtr, ytr = bundle.train.x.numpy(), bundle.train.y.numpy()
    xva, yva = bundle.val.x.numpy(), bundle.val.y.numpy()
    xte, yte = bundle.test.x.numpy(), bundle.test.y.numpy()
    rows = []
    for name, model in (("sklearn LogisticRegression (one-hot)", LogisticRegression(max_iter=2000)),
                        ("sklearn HistGradientBoosting (one-hot)",
                         HistGradientBoostingClassifier(early_stopping=False, random_state=0))):
        started = time.perf_counter()
        model.fit(xtr, ytr)
        seconds = time.perf_counter() - started
        proba = model.predict_proba(xte)[:, 1]
        rows.append({"model": name, "test_accuracy": float(accuracy_score(yte, proba > 0.5)),
                     "test_roc_auc": float(roc_auc_score(yte, proba)),
                     "val_accuracy": float(accuracy_score(yva, model.predict_proba(xva)[:, 1] > 0.5)),
                     "seconds": seconds, "features": xtr.shape[1]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "datasets" / "adult"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=None, help="override the recipes' epochs")
    parser.add_argument("--quick", action="store_true", help="2 epochs per deep recipe (smoke)")
    parser.add_argument("--out", default=None, help="folder for the JSON result (default: _common's results folder)")
    args = parser.parse_args()
    if args.out:
        _common.RESULTS = Path(args.out)
        os.environ["DEEPFOUNDRY_BENCH_OUT"] = args.out  # the convention of _common.write_result
    torch.set_num_threads(args.threads)
    epochs = args.epochs or (2 if args.quick else None)
    deep = [ours(recipe, args.data, args.threads, epochs) for recipe in RECIPES]
    base = baselines(args.data)
    lr, hgb = base
    rows = [{"model": r["model"], "test_accuracy": r["test_accuracy"], "val_accuracy": r["val_accuracy"],
             "test_roc_auc": r["test_roc_auc"], "seconds": r["seconds"]} for r in [*deep, *base]]
    print(deep[0]["split"])
    print_table(rows)
    plr = deep[0]
    summary = [
        {"metric": "Adult test accuracy (deep model mlp-plr-adult)", "ours": plr["test_accuracy"],
         "peer": hgb["test_accuracy"], "peer_name": hgb["model"], "ratio": plr["test_accuracy"] / hgb["test_accuracy"],
         "target": f">= {TARGET}", "met": plr["test_accuracy"] >= TARGET},
        *({"metric": f"Adult test accuracy ({recipe})", "ours": res["test_accuracy"], "peer": hgb["test_accuracy"],
           "peer_name": hgb["model"], "ratio": res["test_accuracy"] / hgb["test_accuracy"], "target": None, "met": None}
          for recipe, res in zip(list(RECIPES)[1:], deep[1:])),
        {"metric": "Adult fit seconds, mlp-plr-adult vs trees (time ratio x, lower is faster)", "ours": plr["seconds"],
         "peer": hgb["seconds"], "peer_name": hgb["model"], "ratio": plr["seconds"] / hgb["seconds"], "target": None,
         "met": None},
    ]
    path = write_result("adult", {"quick": args.quick, "summary": summary, "rows": rows, "ours": deep,
                                  "baselines": base, "threads": args.threads})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
