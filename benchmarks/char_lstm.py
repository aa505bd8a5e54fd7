"""Character LSTM on tiny Shakespeare: the `char-lstm-shakespeare` recipe against the plain anchor
(../shared/anchors/char_lstm_plain.py: 2 x 512 LSTM, dropout 0.2, batch 64 x 128, constant AdamW 2e-3),
validation loss against training wall time, same machine, one after the other.

Both sides are scored on the anchor's validation set (the last 10% of the text in contiguous 512-character
chunks, each from a zero state), so the curves compare the same text; ours also reports its own
validation split (the first half of that 10%). Our clock is ``deepfoundry.train``'s training time with
its per-epoch validation included and this probe's scoring on the anchor's set excluded; the anchor's is
its own training clock (its evaluation excluded). Issue 24's goals: <= 1.46 nats/char within
``--minutes`` (5) of training, the anchor's value at the same minute beside it, and the best of each.

usage: flock /tmp/deepfoundry-cpu.lock python benchmarks/char_lstm.py [--minutes 5] [--anchor-minutes 10]
       [--set KEY=VALUE ...] [--quick]

``--quick``: the first 60,000 characters (a copy in a temporary folder), one epoch, the anchor for
0.1 minute (smoke figures).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from _common import SHARED, print_table, summary_row, write_result
import deepfoundry
from deepfoundry import Callback

TARGET = 1.46


@torch.no_grad()
def anchor_val_loss(model: torch.nn.Module, tokenizer, text: str, length: int = 512, batch: int = 32) -> float:
    """Mean nats/char on the anchor's validation set: the last 10% of the text in (length+1)-char chunks."""
    va = torch.tensor(tokenizer.encode(text[int(0.9 * len(text)):]))
    chunks = [va[i:i + length + 1] for i in range(0, len(va) - length - 1, length)]
    was_training = model.training
    model.eval()
    tot = cnt = 0.0
    for i in range(0, len(chunks), batch):
        b = torch.stack(chunks[i:i + batch])
        logits, _ = model(b[:, :-1])
        tot += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), b[:, 1:].reshape(-1), reduction="sum").item()
        cnt += b[:, 1:].numel()
    model.train(was_training)
    return tot / cnt


class AnchorValCurve(Callback):
    """After every epoch: the loss on the anchor's validation set against the training clock, probe time removed."""

    def __init__(self, text: str, length: int = 512) -> None:
        self.text, self.length, self.t0, self.probe, self.curve = text, length, 0.0, 0.0, []

    def on_fit_start(self, trainer) -> None:
        self.t0 = time.perf_counter()

    def on_validation_end(self, trainer, metrics) -> None:
        now = time.perf_counter()
        loss = anchor_val_loss(trainer.task.model, trainer.task.tokenizer, self.text, self.length)
        own = metrics.get("val_loss", metrics.get("loss"))
        self.curve.append({"epoch": trainer.epoch + 1, "train_min": round((now - self.t0 - self.probe) / 60, 3),
                           "val_loss": round(loss, 4), "own_val_loss": round(float(own), 4)})
        self.probe += time.perf_counter() - now


def ours(path: Path, sets: list[str]) -> dict:
    text = path.read_text(encoding="utf-8")
    probe = AnchorValCurve(text)
    with tempfile.TemporaryDirectory() as tmp:
        deepfoundry.train("char-lstm-shakespeare", out=f"{tmp}/run", callbacks=[probe], overrides=[
            f"data.root={path.parent}", "trainer.progress=false", "trainer.report=false",
            "trainer.tensorboard=false", *sets])
    return {"curve": probe.curve, "overrides": sets}


def anchor(path: Path, minutes: float, eval_every: float) -> dict:
    script = SHARED / "anchors" / "char_lstm_plain.py"
    cmd = [sys.executable, str(script), str(path), "--minutes", str(minutes), "--eval-every", str(eval_every)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return {"curve": rows[:-1], **rows[-1]}


def at(curve: list[dict], minutes: float) -> float | None:
    """The last validation loss measured within ``minutes`` of training (None if none was)."""
    within = [r["val_loss"] for r in curve if r["train_min"] <= minutes + 1e-9]
    return within[-1] if within else None


def plot(ours_curve: list[dict], anchor_curve: list[dict], path: Path, minutes: float,
         ours_label: str = "deepfoundry char-lstm-shakespeare", anchor_label: str = "plain anchor (2 x 512)",
         title: str = "character LSTM, tiny Shakespeare", target: float = TARGET) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["train_min"] for r in ours_curve], [r["val_loss"] for r in ours_curve], "o-",
            label=ours_label)
    ax.plot([r["train_min"] for r in anchor_curve], [r["val_loss"] for r in anchor_curve], "s-",
            label=anchor_label)
    ax.axhline(target, ls="--", color="grey", lw=0.8)
    ax.axvline(minutes, ls=":", color="grey", lw=0.8)
    ax.set(xlabel="training minutes (2 CPU cores)", ylabel="val loss, anchor's set (nats/char)",
           title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=5.0, help="the budget the goal is read at")
    p.add_argument("--anchor-minutes", type=float, default=10.0)
    p.add_argument("--data", default=str(SHARED / "datasets" / "tinyshakespeare" / "input.txt"))
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="an override of the recipe (a variant), repeatable")
    p.add_argument("--no-anchor", action="store_true", help="ours only (recipe variants)")
    p.add_argument("--name", default="char_lstm", help="result file name")
    p.add_argument("--quick", action="store_true", help="60,000 characters, one epoch (smoke)")
    a = p.parse_args()
    torch.set_num_threads(2)
    path = Path(a.data)
    eval_every = 1.0
    if a.quick:
        folder = Path(tempfile.mkdtemp())
        (folder / "input.txt").write_text(path.read_text(encoding="utf-8")[:60_000], encoding="utf-8")
        path, a.anchor_minutes, eval_every = folder / "input.txt", 0.1, 0.05
        a.sets = ["trainer.epochs=1", *a.sets]
    mine = ours(path, a.sets)
    theirs = None if a.no_anchor else anchor(path, a.anchor_minutes, eval_every)
    best = min(r["val_loss"] for r in mine["curve"])
    rows = [{"side": "deepfoundry char-lstm-shakespeare", f"val at {a.minutes:g} min": at(mine["curve"], a.minutes),
             "final": mine["curve"][-1]["val_loss"], "final min": mine["curve"][-1]["train_min"], "best": best}]
    if theirs:
        rows.append({"side": "plain anchor", f"val at {a.minutes:g} min": at(theirs["curve"], a.minutes),
                     "final": theirs["final"]["val_loss"], "final min": theirs["final"]["train_min"],
                     "best": theirs["best"]})
    print_table(rows)
    ours_at = rows[0][f"val at {a.minutes:g} min"]
    summary = [summary_row(f"val loss (nats/char, anchor's set) within {a.minutes:g} min of training "
                           "(lower is better)", ours_at, rows[1][f"val at {a.minutes:g} min"] if theirs else None,
                           "plain LSTM loop (anchor)", f"<= {TARGET}",
                           None if ours_at is None else ours_at <= TARGET),
               summary_row("best val loss (nats/char, anchor's set)", best, theirs["best"] if theirs else None,
                           "plain LSTM loop (anchor)", "<= 1.42", best <= 1.42)]
    out = write_result(a.name, {"minutes": a.minutes, "anchor_minutes": a.anchor_minutes, "data": str(path),
                                "ours": mine, "anchor": theirs, "table": rows}, quick=a.quick, summary=summary)
    if theirs:
        plot(mine["curve"], theirs["curve"], out.with_suffix(".png"), a.minutes)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
