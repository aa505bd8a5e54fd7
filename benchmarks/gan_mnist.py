"""GANs on the standard MNIST split, scored offline by the project's own LeNet-5 (`lenet5-mnist`).

DCGAN: the share of 1,000 samples the classifier labels with confidence >= 0.9, the share of each
predicted class (coverage; no class should pass 20%), and the Frechet distance between Gaussians
fitted to the classifier's penultimate (F6, 84-d) features of the samples and of 1,000 held-out
test images, beside two references: 1,000 uniform-noise images (the baseline to beat) and 1,000
real validation images (the floor). cGAN: for each class k, the share of 1,000 samples drawn with
`--class k` that the classifier labels k.

Trains the `dcgan-mnist` and `cgan-mnist` recipes unless finished runs are given.

``--quick`` (smoke figures, far from the targets): the classifier too is trained here when ``--classifier`` is
not given (lenet5-mnist, 1 epoch on 5,000 images); the GANs 1 epoch on 2,000 images; 200 samples.

``--recipe dcgan-mnist-cpu --no-cgan``: issue 24's CPU race, the DCGAN sized for 2 cores, whose whole
training must fit 15 minutes (its seconds are in the table and the summary).

usage: python benchmarks/gan_mnist.py --classifier RUN [--dcgan RUN] [--cgan RUN] [--data DIR] [--epochs N]
       python benchmarks/gan_mnist.py --classifier RUN --recipe dcgan-mnist-cpu --no-cgan
       python benchmarks/gan_mnist.py --quick [--classifier RUN]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from _common import SHARED, print_table, summary_row, write_result
import deepfoundry
from deepfoundry.generative import frechet_distance, classifier_outputs, quality_score, sample_images


def train(recipe: str, data: str, epochs: int | None, out: Path, threads: int,
          limit: int | None = None) -> tuple[deepfoundry.Run, float]:
    over = {"data.root": data, "trainer.progress": False,
            "trainer.report": False, "trainer.tensorboard": False, "trainer.threads": threads,
            "data.limit": limit}
    if epochs:
        over["trainer.epochs"] = epochs
    started = time.perf_counter()
    run = deepfoundry.train(recipe, overrides=over, out=out)
    return run, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classifier", default=None, help="a finished lenet5-mnist run on the standard split "
                        "(required unless --quick)")
    parser.add_argument("--dcgan", default=None)
    parser.add_argument("--cgan", default=None)
    parser.add_argument("--data", default=str(SHARED / "datasets" / "mnist"))
    parser.add_argument("--epochs", type=int, default=None, help="override the recipes' epochs when training")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="runs/bench-gan")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=None, help="training images (smoke runs only)")
    parser.add_argument("--quick", action="store_true", help="1 epoch on 2,000 images, 200 samples (smoke)")
    parser.add_argument("--recipe", default="dcgan-mnist", help="the DCGAN recipe to train")
    parser.add_argument("--no-cgan", action="store_true", help="score the DCGAN only")
    parser.add_argument("--budget", type=float, default=None, help="minutes the DCGAN's training must fit "
                        "(default: 15 for dcgan-mnist-cpu, none otherwise)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.epochs, args.limit, args.n = 1, 2000, 200
        args.out = str(Path(tempfile.mkdtemp()) / "bench-gan")
    if args.classifier is None:
        if not args.quick:
            parser.error("--classifier RUN is required (a finished lenet5-mnist run on the standard split)")
        clf, _ = train("lenet5-mnist", args.data, 1, Path(args.out) / "classifier", args.threads, 5000)
        args.classifier = str(clf.path)
    clf = deepfoundry.load_run(args.classifier)
    result: dict = {"classifier": args.classifier, "classifier_test_accuracy": clf.results["test"]["accuracy"]}

    dc, seconds = (deepfoundry.load_run(args.dcgan), None) if args.dcgan else \
        train(args.recipe, args.data, args.epochs, Path(args.out) / "dcgan", args.threads, args.limit)
    data = dc.data(args.data)
    real_test, real_val = data.test.x[:args.n], data.val.x[:args.n]
    score = quality_score(sample_images(dc, args.n, seed=0), clf, real=real_test)
    _, f_val = classifier_outputs(clf, real_val)
    _, f_test = classifier_outputs(clf, real_test)
    score["frechet_real_val"] = frechet_distance(f_val, f_test)
    score.update(run=str(dc.path), train_seconds=seconds or dc.results.get("seconds"), epochs=dc.results.get("epochs_run"))
    result["dcgan"] = score
    print_table([{"samples": f"{args.recipe}, {score['epochs']} epochs", "train s": score["train_seconds"],
                  "conf>=0.9": score["confident_share"],
                  "classes": score["classes_present"], "max class share": score["max_class_share"],
                  "FD vs test": score["frechet_distance"], "FD noise": score["frechet_noise"],
                  "FD real val": score["frechet_real_val"]}])
    print("class shares:", score["class_shares"])
    budget = args.budget if args.budget is not None else (15.0 if args.recipe == "dcgan-mnist-cpu" else None)
    ok = (score["confident_share"] >= 0.8 and score["classes_present"] == 10 and score["max_class_share"] <= 0.15
          and (budget is None or (score["train_seconds"] or 0) <= budget * 60))
    result["recipe"], result["budget_minutes"] = args.recipe, budget
    summary = [summary_row(f"DCGAN ({args.recipe}): share of samples the classifier labels with confidence >= 0.9"
                           + (f", training <= {budget:g} min" if budget else ""),
                           score["confident_share"], target=">= 0.80, 10 classes, max share <= 0.15"
                           + (f", <= {budget:g} min" if budget else ""), met=ok),
               summary_row(f"DCGAN ({args.recipe}): training seconds", score["train_seconds"]),
               summary_row("DCGAN: Frechet distance of classifier features to test images (lower is better)",
                           score["frechet_distance"], score["frechet_noise"], "uniform noise images")]
    if args.no_cgan:
        name = "gan_mnist" if args.recipe == "dcgan-mnist" else f"gan_mnist_{args.recipe.replace('-', '_')}"
        print(f"wrote {write_result(name, result, quick=args.quick, summary=summary)}")
        return

    cg, seconds = (deepfoundry.load_run(args.cgan), None) if args.cgan else \
        train("cgan-mnist", args.data, args.epochs, Path(args.out) / "cgan", args.threads, args.limit)
    rows = []
    for k in range(10):
        s = quality_score(sample_images(cg, args.n, cls=k, seed=k), clf, target_class=k)
        rows.append({"class": k, "labelled k": s["label_match"], "conf>=0.9": s["confident_share"]})
    print_table(rows)
    result["cgan"] = {"run": str(cg.path), "train_seconds": seconds or cg.results.get("seconds"),
                      "epochs": cg.results.get("epochs_run"), "per_class": rows,
                      "min_label_match": min(r["labelled k"] for r in rows)}
    print(f"cGAN: lowest per-class label match {result['cgan']['min_label_match']:.3f} (target >= 0.90); "
          f"DCGAN confident share {score['confident_share']:.3f} (target >= 0.80)")
    summary = [*summary,
               summary_row("cGAN: lowest per-class share labelled as the requested class",
                           result["cgan"]["min_label_match"], target=">= 0.90",
                           met=result["cgan"]["min_label_match"] >= 0.9)]
    print(f"wrote {write_result('gan_mnist', result, quick=args.quick, summary=summary)}")


if __name__ == "__main__":
    main()
