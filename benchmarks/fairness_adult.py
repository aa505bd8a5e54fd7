"""Fairness on UCI Adult (sensitive column: sex): unmitigated, reweighing and ThresholdOptimizer, ours beside the
plain way, one split, one run.

Ours: the `mlp-adult` recipe trained as it ships (baseline) and with `fairness.sensitive=[sex]
fairness.reweigh=true` (Kamiran-Calders loss weights), each audited with `deepfoundry audit --sensitive sex`
on the test split; the baseline run also with `--mitigate threshold` at its defaults (demographic parity,
tolerance auto = a third of the unmitigated val gap), with exact parity (`--tolerance none`) and with
`--constraint equalized_odds`. Plain: scikit-learn LogisticRegression on the one-hot features of the same
rows (fitted on the training rows), unweighted and with the same Kamiran-Calders weights as sample_weight,
and fairlearn's ThresholdOptimizer (prefit on the logistic regression, fitted on the val rows, exact
demographic parity), scored with fairlearn's functions on the same test rows (random_state 0).

Split: ../shared/datasets/adult holds adult.data only: stratified 20% test (6,512 rows), then 10% of the rest
val (2,605), 23,444 train, seed 0 (the recipe's). Accuracy and the parity gaps do not depend on machine load.

``--quick``: 3 training epochs per run (the recipe has 15) and 100 bootstrap resamples: smoke figures.

usage: python benchmarks/fairness_adult.py [--data DIR] [--threads 1] [--bootstrap 1000] [--quick]
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
from fairlearn.metrics import demographic_parity_difference, demographic_parity_ratio, equalized_odds_difference
from fairlearn.postprocessing import ThresholdOptimizer
from sklearn.linear_model import LogisticRegression

from _common import summary_row, SHARED, print_table, write_result
import deepfoundry
from deepfoundry.data.tabular import adult
from deepfoundry.responsible.fairness import audit, reweighing_weights


def row(method: str, res: dict, seconds: float) -> dict:
    ci = res.get("ci") or {}
    return {"method": method, "accuracy": res["accuracy"], "dp_difference": res["demographic_parity_difference"],
            "dp_difference_ci": ci.get("demographic_parity_difference"), "dp_ratio": res["demographic_parity_ratio"],
            "eo_difference": res["equalized_odds_difference"], "eo_difference_ci": ci.get("equalized_odds_difference"),
            "seconds": round(seconds, 1)}


def ours(data: str, threads: int, bootstrap: int, tmp: str, epochs: int | None = None) -> list[dict]:
    base = {"data.root": data, "trainer.progress": False, "trainer.report": False, "trainer.tensorboard": False,
            "trainer.threads": threads, **({"trainer.epochs": epochs} if epochs else {})}
    rows = []
    started = time.perf_counter()
    run = deepfoundry.train("mlp-adult", overrides=base, out=f"{tmp}/baseline")
    train_seconds = time.perf_counter() - started
    res = audit(run, "sex", bootstrap=bootstrap)
    rows.append(row("ours: mlp-adult, unmitigated", res, train_seconds))
    for label, kwargs in (("ours: + ThresholdOptimizer (defaults: DP, tolerance auto)", {}),
                          ("ours: + ThresholdOptimizer (DP, tolerance none)", {"tolerance": None}),
                          ("ours: + ThresholdOptimizer (equalized odds)", {"constraint": "equalized_odds"})):
        started = time.perf_counter()
        res = audit(run, "sex", mitigate="threshold", bootstrap=bootstrap, **kwargs)
        rows.append(row(label, res["mitigated"], time.perf_counter() - started) | {
            "tolerance": res["mitigated"]["tolerance"]})
    started = time.perf_counter()
    rw = deepfoundry.train("mlp-adult", overrides={**base, "fairness.sensitive": ["sex"], "fairness.reweigh": True},
                           out=f"{tmp}/reweighed")
    seconds = time.perf_counter() - started
    rows.append(row("ours: mlp-adult + reweighing", audit(rw, "sex", bootstrap=bootstrap), seconds))
    return rows


def plain(data: str) -> list[dict]:
    bundle = adult(root=data, encoding="onehot", seed=0)
    # float64: fairlearn writes its float64 decisions into an array shaped like the scores
    xtr, ytr = bundle.train.x.double().numpy(), bundle.train.y.numpy()
    xva, yva = bundle.val.x.double().numpy(), bundle.val.y.numpy()
    xte, yte = bundle.test.x.double().numpy(), bundle.test.y.numpy()
    str_, sva, ste = (bundle.frames[s]["sex"].astype(str).to_numpy() for s in ("train", "val", "test"))

    def scores(d: np.ndarray, seconds: float, method: str) -> dict:
        return {"method": method, "accuracy": float((d == yte).mean()),
                "dp_difference": float(demographic_parity_difference(yte, d, sensitive_features=ste)),
                "dp_difference_ci": None,
                "dp_ratio": float(demographic_parity_ratio(yte, d, sensitive_features=ste)),
                "eo_difference": float(equalized_odds_difference(yte, d, sensitive_features=ste)),
                "eo_difference_ci": None, "seconds": round(seconds, 1)}

    rows = []
    started = time.perf_counter()
    lr = LogisticRegression(max_iter=2000).fit(xtr, ytr)
    rows.append(scores(lr.predict(xte), time.perf_counter() - started, "plain: LogisticRegression"))
    started = time.perf_counter()
    to = ThresholdOptimizer(estimator=lr, constraints="demographic_parity", prefit=True,
                            predict_method="predict_proba").fit(xva, yva, sensitive_features=sva)
    rows.append(scores(to.predict(xte, sensitive_features=ste, random_state=0), time.perf_counter() - started,
                       "plain: + fairlearn ThresholdOptimizer (DP)"))
    started = time.perf_counter()
    lrw = LogisticRegression(max_iter=2000).fit(xtr, ytr, sample_weight=reweighing_weights(str_, ytr))
    rows.append(scores(lrw.predict(xte), time.perf_counter() - started, "plain: LogisticRegression + reweighing"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "datasets" / "adult"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="3 epochs per run, 100 bootstrap resamples (smoke)")
    args = parser.parse_args()
    epochs = None
    if args.quick:
        epochs, args.bootstrap = 3, 100
    with tempfile.TemporaryDirectory() as tmp:
        rows = ours(args.data, args.threads, args.bootstrap, tmp, epochs) + plain(args.data)
    base = rows[0]
    for r in rows:
        r.setdefault("tolerance", None)
    print_table([{k: r[k] for k in ("method", "accuracy", "dp_difference", "dp_ratio", "eo_difference", "seconds")}
                 for r in rows])
    mitigated = rows[1]
    verdict = {"dp_difference_halved": mitigated["dp_difference"] <= 0.5 * base["dp_difference"],
               "accuracy_points_lost": round(100 * (base["accuracy"] - mitigated["accuracy"]), 2)}
    print(f"acceptance (threshold defaults vs unmitigated): {verdict}")
    by = {r["method"]: r for r in rows}
    fair_plain = by["plain: + fairlearn ThresholdOptimizer (DP)"]
    exact = by["ours: + ThresholdOptimizer (DP, tolerance none)"]
    summary = [summary_row("demographic-parity difference (sex), threshold defaults vs unmitigated (lower is better)",
                           mitigated["dp_difference"], base["dp_difference"], "ours unmitigated",
                           "ratio <= 0.5", verdict["dp_difference_halved"]),
               summary_row("test accuracy, threshold defaults vs unmitigated", mitigated["accuracy"], base["accuracy"],
                           "ours unmitigated"),
               summary_row("demographic-parity difference, exact DP thresholds: ours vs fairlearn on LogisticRegression",
                           exact["dp_difference"], fair_plain["dp_difference"], "fairlearn ThresholdOptimizer")]
    path = write_result("fairness_adult", {"sensitive": "sex", "split": "test (6,512 rows)", "rows": rows,
                                           "acceptance": verdict, "bootstrap": args.bootstrap, "epochs": epochs},
                        quick=args.quick, summary=summary)
    print(f"result: {path}")


if __name__ == "__main__":
    main()
