"""UCI Adult: deepfoundry's `mlp-adult` recipe (MLP with categorical embeddings) beside plain scikit-learn
baselines on the same rows, one run.

Split: ../shared/datasets/adult holds adult.data only (32,561 rows; no adult.test), so every model uses the
recipe's split: stratified 20% test (6,512 rows), then 10% of the rest val (2,605), 23,444 train, seed 0.
Baselines are fitted on the same training rows and the same preprocessing, fitted on the training rows:
LogisticRegression (lbfgs, C=1, max_iter 2000) on the standardised numeric columns, missing indicators and
one-hot categories (the `encoding: onehot` features of deepfoundry.data.preprocess), and
HistGradientBoostingClassifier (scikit-learn defaults, early stopping off) on the same one-hot features.
Reported: test accuracy, ROC-AUC and wall-clock seconds of each fit.

usage: python benchmarks/adult.py [--data DIR] [--threads 2] [--epochs N]
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score

from _common import SHARED, print_table, write_result
import deepfoundry
from deepfoundry.data.tabular import adult


def ours(data: str, threads: int, epochs: int | None) -> dict:
    overrides = {"data.root": data, "trainer.progress": False, "trainer.report": False, "trainer.tensorboard": False,
                 "trainer.threads": threads}
    if epochs:
        overrides["trainer.epochs"] = epochs
    with tempfile.TemporaryDirectory() as tmp:
        run = deepfoundry.train("mlp-adult", overrides=overrides, out=f"{tmp}/run")
        test = run.results["test"]
        return {"model": "deepfoundry mlp-adult (embeddings)", "test_accuracy": test["accuracy"],
                "test_roc_auc": test["roc_auc"], "seconds": run.results["seconds"],
                "epochs": run.results["epochs_run"], "split": run.info["split_note"]}


def baselines(data: str) -> list[dict]:
    bundle = adult(root=data, encoding="onehot", seed=0)  # the recipe's split and fractions (seed 0)
    xtr, ytr = bundle.train.x.numpy(), bundle.train.y.numpy()
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
                     "test_roc_auc": float(roc_auc_score(yte, proba)), "seconds": seconds,
                     "features": xtr.shape[1]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "datasets" / "adult"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    mlp = ours(args.data, args.threads, args.epochs)
    base = baselines(args.data)
    lr = base[0]
    rows = [{"model": r["model"], "test_accuracy": r["test_accuracy"], "test_roc_auc": r["test_roc_auc"],
             "seconds": r["seconds"], "acc_minus_logreg": r["test_accuracy"] - lr["test_accuracy"]}
            for r in [mlp, *base]]
    print(mlp["split"])
    print_table(rows)
    print(f"wrote {write_result('adult', {'rows': rows, 'ours': mlp, 'baselines': base})}")


if __name__ == "__main__":
    main()
