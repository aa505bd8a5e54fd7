"""Multi30k English->German: BLEU against training time for our recipes, beside the plain anchor.

Each chosen model trains with deepfoundry's Trainer from its recipe (``--models``):

- ``transformer``   -> ``transformer-multi30k``        (d256, 3+3 layers, pre-norm, joint BPE 8k)
- ``gru-attention`` -> ``seq2seq-attention-multi30k``  (bidirectional GRU, Bahdanau attention)
- ``gru-luong``     -> ``seq2seq-luong-multi30k``      (Luong general attention)
- ``gru-none``      -> ``seq2seq-nocontext-multi30k``  (fixed context vector, no attention)

for ``--minutes`` of training time on ``--threads`` threads. Training time counts the optimizer steps
only (like the anchor): evaluations pause the clock. Every ``--eval-every`` minutes, and at the end, the
model translates test_2016_flickr greedily and sacreBLEU scores the detokenised output against the raw
references (13a, case-sensitive; the signature is stored). The number of epochs (which sets the length of
the recipe's cosine schedule) is fitted to the budget from the timed first steps (nearest whole epoch).
``--anchor`` also runs ``../shared/anchors/transformer_multi30k_plain.py`` (plain nn.Transformer, same data,
same budget) in the same invocation, so the curves compare on the same machine; the table gives each BLEU / anchor BLEU.

The final model's test BLEU by source-length bucket is stored too (the fixed-context bottleneck).

usage: python benchmarks/translation_multi30k.py [--models transformer,gru-attention,gru-none] [--minutes 45]
       [--eval-every 5] [--threads 2] [--anchor] [--anchor-minutes 40] [--set KEY=VALUE ...] [--data DIR]
       [--final-beam 5] [--name NAME]
       python benchmarks/translation_multi30k.py --merge results/A.json results/B.json --name NAME
       python benchmarks/translation_multi30k.py --quick   (skipped: records why, see QUICK_SKIP)
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from _common import summary_row, write_skipped, SHARED, print_table, write_result
from deepfoundry.api import model_context
from deepfoundry.engine import seed_everything
from deepfoundry.config import apply_overrides, load_raw, validate
from deepfoundry.data import build_data
from deepfoundry.engine.callbacks import Callback
from deepfoundry.engine.trainer import Trainer
from deepfoundry.models import build_model
from deepfoundry.tasks import build_task
from deepfoundry.tasks.translation import bleu_by_length, corpus_bleu

RECIPES = {"transformer": "transformer-multi30k", "gru-attention": "seq2seq-attention-multi30k",
           "gru-luong": "seq2seq-luong-multi30k", "gru-none": "seq2seq-nocontext-multi30k"}
ANCHOR = SHARED / "anchors" / "transformer_multi30k_plain.py"
JOB = "Multi30k en->de test_2016_flickr, sacreBLEU 13a cased, greedy"


class TimeUp(Exception):
    """Raised by :class:`BleuClock` when the training-time budget is spent."""


class BleuClock(Callback):
    """Counts training time (between the start of an epoch's batches and each batch end) and scores test BLEU
    every ``eval_every`` seconds of it; raises :class:`TimeUp` once ``budget`` seconds are spent."""

    def __init__(self, data: Any, budget: float, eval_every: float) -> None:
        self.data, self.budget, self.eval_every = data, budget, eval_every
        self.train_s, self.next_eval, self.log, self.last = 0.0, eval_every, [], 0.0
        self.signature = ""

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        self.last = time.perf_counter()

    def on_train_batch_end(self, trainer: Trainer, loss: torch.Tensor) -> None:
        now = time.perf_counter()
        self.train_s += now - self.last
        if self.train_s >= min(self.next_eval, self.budget):
            self.evaluate(trainer, float(loss.detach()))
            self.next_eval += self.eval_every
        self.last = time.perf_counter()
        if self.train_s >= self.budget:
            raise TimeUp

    def evaluate(self, trainer: Trainer, loss: float) -> None:
        started = time.perf_counter()
        task = trainer.task
        task.val_bleu = True
        metrics = trainer.evaluate(self.data.test)
        task.val_bleu = False
        self.signature = metrics["bleu_signature"]
        row = {"train_min": round(self.train_s / 60, 2), "epoch": trainer.epoch + 1, "step": trainer.global_step,
               "loss": round(loss, 3), "bleu": round(metrics["bleu"], 2),
               "eval_s": round(time.perf_counter() - started, 1)}
        self.log.append(row)
        print(json.dumps(row), flush=True)


def time_steps(task: Any, loader: Any, n: int = 4) -> float:
    """Seconds per training step (forward + backward) on ``n`` batches spread over the length buckets."""
    picks = [loader.batches[round(i * (len(loader) - 1) / max(1, n - 1))] for i in range(n)]
    task.train()
    task.training_step(loader.batch(picks[0])).backward()  # warm-up
    started = time.perf_counter()
    for idx in picks:
        task.training_step(loader.batch(idx)).backward()
    task.zero_grad(set_to_none=True)
    return (time.perf_counter() - started) / n


QUICK_SKIP = ("no quick version: every BLEU point translates all 1,000 test_2016_flickr sentences greedily (twice "
              "at the end), which alone takes minutes on 2 cores, more than the suite's quick budget "
              "(a 30-second smoke run on 5,000 pairs went past 10 minutes on a loaded machine)")


def run_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    raw = apply_overrides(load_raw(RECIPES[name]), {
        "data.root": str(args.data), "trainer.progress": False, "trainer.tensorboard": False,
        "trainer.threads": args.threads, "task.val_bleu": False, "trainer.monitor": "val_loss", "trainer.mode": "min",
        **({"data.limit": args.limit} if args.limit else {})})
    cfg = validate(apply_overrides(raw, args.sets))  # --set KEY=VALUE: a variant of the recipe
    torch.set_num_threads(args.threads)
    seed_everything(cfg.seed)
    data = build_data(cfg.data, seed=cfg.seed)
    model = build_model(cfg.model.name, cfg.model.builder_kwargs(), model_context(data.info))
    task = build_task(cfg.task, model, data.info)
    step_s = time_steps(task, data.train)
    budget = args.minutes * 60
    # nearest whole epoch: the clock cuts an over-long last epoch (the cosine is then almost spent), where
    # rounding down would leave up to an epoch of the budget unused
    epochs = args.epochs or max(1, round(budget / (1.05 * step_s * len(data.train))))
    warmup = min(cfg.optim.scheduler.warmup_epochs, 0.15 * epochs)
    optim = cfg.optim.model_copy(update={"scheduler": cfg.optim.scheduler.model_copy(update={"warmup_epochs": warmup})})
    trainer_cfg = cfg.trainer.model_copy(update={"epochs": epochs, "grad_clip": cfg.trainer.grad_clip or
                                                 getattr(model, "default_grad_clip", None), "restore_best": False})
    clock = BleuClock(data, budget, args.eval_every * 60)
    trainer = Trainer(trainer_cfg, optim, run_dir=None, callbacks=[clock])
    params = sum(p.numel() for p in model.parameters())
    print(f"{name}: {cfg.name}, {params / 1e6:.2f}M parameters, {len(data.train)} batches/epoch, "
          f"{step_s:.2f} s/step measured -> {epochs} epochs for {args.minutes} min", flush=True)
    started = time.perf_counter()
    stopped = "epochs done"
    try:
        trainer.fit(task, data)
    except TimeUp:
        stopped = "time budget"
    wall = time.perf_counter() - started
    if not clock.log or clock.log[-1]["step"] != trainer.global_step:
        clock.evaluate(trainer, float("nan"))
    task.eval()
    test = data.test
    out = {"recipe": cfg.name, "overrides": args.sets, "params": params, "epochs_planned": epochs, "stopped": stopped,
           "train_minutes": round(clock.train_s / 60, 2), "wall_seconds": round(wall, 1), "log": clock.log,
           "final_bleu": clock.log[-1]["bleu"], "signature": clock.signature,
           "bleu_by_source_length": bleu_by_length(task, test.sources, test.references)}
    if args.final_beam > 1:
        hyps = task.translate(test.sources, beam=args.final_beam)
        out[f"final_bleu_beam{args.final_beam}"] = round(corpus_bleu(hyps, test.references)[0], 2)
    return out


def run_anchor(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "anchor.json"
        cmd = [sys.executable, str(ANCHOR), str(args.data), "--minutes", str(args.anchor_minutes),
               "--eval-every", str(args.eval_every), "--out", str(out)]
        print("anchor:", " ".join(cmd), flush=True)
        started = time.perf_counter()
        subprocess.run(cmd, check=True)
        result = json.loads(out.read_text())
    log = result["log"]
    return {"recipe": "plain nn.Transformer (anchor)", "params": result["params"], "stopped": "time budget",
            "train_minutes": log[-1]["train_min"], "wall_seconds": round(time.perf_counter() - started, 1),
            "log": log, "final_bleu": log[-1]["bleu"], "signature": result["signature"]}


def bleu_at(log: list[dict[str, Any]], minutes: float) -> float | None:
    """BLEU of the last evaluation at or before ``minutes`` of training (None when there was none)."""
    rows = [r for r in log if r["train_min"] <= minutes + 0.5]  # an evaluation runs at the first step past the mark
    return rows[-1]["bleu"] if rows else None


def marks_of(minutes: float, eval_every: float) -> list[float]:
    return [eval_every * k for k in range(1, int(minutes // eval_every) + 1)]


def table(results: dict[str, Any], grids: dict[str, list[float]]) -> list[dict[str, Any]]:
    """One row per model: BLEU at each mark of its own evaluation grid (``-`` off its grid or past its
    training time), final BLEU (greedy, and beam when scored), and the ratio to the anchor's final BLEU."""
    marks = sorted({m for grid in grids.values() for m in grid})
    anchor_final = results.get("anchor", {}).get("final_bleu")
    beam_keys = sorted({k for res in results.values() for k in res if k.startswith("final_bleu_beam")})
    rows = []
    for name, res in results.items():
        row = {"model": name, "train min": res["train_minutes"], "wall s": res["wall_seconds"]}
        for m in marks:
            value = bleu_at(res["log"], m) if m in grids[name] and m <= res["train_minutes"] + 0.5 else None
            row[f"BLEU@{m:g}min"] = "-" if value is None else value
        row["final BLEU"] = res["final_bleu"]
        for key in beam_keys:
            row[key.replace("final_bleu_", "final ")] = res.get(key, "-")
        if anchor_final:
            row["final / anchor"] = round(res["final_bleu"] / anchor_final, 3)
        rows.append(row)
    return rows


def plot_curves(results: dict[str, Any], path: Path) -> Path:
    """BLEU (greedy, test_2016_flickr) against minutes of training, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, res in results.items():
        log = [r for r in res["log"] if not math.isnan(r.get("bleu", float("nan")))]
        ax.plot([0.0] + [r["train_min"] for r in log], [0.0] + [r["bleu"] for r in log], marker="o", label=name)
    ax.set_xlabel("training time (minutes, evaluation excluded)")
    ax.set_ylabel("sacreBLEU (13a, cased), greedy")
    ax.set_title("Multi30k en->de test_2016_flickr")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def merge(paths: list[Path], name: str) -> None:
    """Combine the ``results`` of earlier runs (``--merge A.json B.json``) into one table, JSON and plot."""
    results: dict[str, Any] = {}
    grids: dict[str, list[float]] = {}
    runs = []
    for path in paths:
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise SystemExit(f"--merge: cannot read {path}: {exc}")
        if "results" not in data:
            raise SystemExit(f"--merge: {path} is not a translation_multi30k result (no 'results' key)")
        results.update(data["results"])
        grids.update({model: marks_of(data["minutes"], data["eval_every"]) for model in data["results"]})
        runs.append({"file": path.name, "minutes": data["minutes"], "eval_every": data["eval_every"],
                     "threads": data["threads"], "date": data.get("environment", {}).get("date")})
    rows = table(results, grids)
    print_table(rows)
    out = write_result(name, {"job": JOB,
                              "merged_from": runs, "results": results, "table": rows})
    print(f"wrote {out} and {plot_curves(results, out.with_suffix('.png'))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="transformer,gru-attention,gru-none",
                        help=f"comma-separated, from {', '.join(RECIPES)}")
    parser.add_argument("--minutes", type=float, default=45.0, help="training time per model")
    parser.add_argument("--eval-every", type=float, default=5.0, help="minutes of training between test BLEU points")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=0, help="fixed epoch count (default: fitted to --minutes)")
    parser.add_argument("--anchor", action="store_true", help="also run the plain anchor script for --minutes")
    parser.add_argument("--anchor-minutes", type=float, default=0.0,
                        help="the anchor's training time when it differs from --minutes")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of our recipes (repeatable), e.g. --set optim.lr=0.002")
    parser.add_argument("--final-beam", type=int, default=0, help="also score the final model with this beam size")
    parser.add_argument("--data", type=Path, default=SHARED / "datasets" / "multi30k-en-de")
    parser.add_argument("--name", default="translation_multi30k", help="results/NAME.json (and NAME.png)")
    parser.add_argument("--merge", type=Path, nargs="+", default=None,
                        help="train nothing: combine these result JSONs into results/NAME.json and NAME.png")
    parser.add_argument("--limit", type=int, default=None, help="first N training pairs only (smoke runs)")
    parser.add_argument("--quick", action="store_true", help="no quick version: records why and exits")
    args = parser.parse_args()
    if args.quick:
        print(f"--quick: {QUICK_SKIP}")
        write_skipped(args.name, QUICK_SKIP)
        return
    if args.merge:
        merge(args.merge, args.name)
        return
    args.anchor_minutes = args.anchor_minutes or args.minutes
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in RECIPES]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(RECIPES)}")
    results: dict[str, Any] = {}
    grids: dict[str, list[float]] = {}
    if args.anchor:
        results["anchor"] = run_anchor(args)
        grids["anchor"] = marks_of(args.anchor_minutes, args.eval_every)
    for name in models:
        results[name] = run_model(name, args)
        grids[name] = marks_of(args.minutes, args.eval_every)
    rows = table(results, grids)
    print_table(rows)
    anchor_bleu = results.get("anchor", {}).get("final_bleu")
    summary = [summary_row(f"test BLEU (greedy) after {args.minutes:g} min of training, {name}", res["final_bleu"],
                           anchor_bleu, "plain nn.Transformer (anchor)" if anchor_bleu else None)
               for name, res in results.items() if name != "anchor"]
    path = write_result(args.name, {"job": JOB,
                                    "minutes": args.minutes, "eval_every": args.eval_every, "threads": args.threads,
                                    "limit": args.limit, "results": results, "table": rows},
                        quick=args.quick, summary=summary)
    print(f"wrote {path} and {plot_curves(results, path.with_suffix('.png'))}")


if __name__ == "__main__":
    main()
