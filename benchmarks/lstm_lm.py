"""LSTM language-model training throughput: deepfoundry's Trainer vs a plain PyTorch loop, same model and data.

The model is the anchor's (../shared/anchors/char_lstm_plain.py): character embedding 128, 2 x 512 LSTM,
dropout 0.2, untied linear output, AdamW 2e-3 (weight decay 0.01), gradient clipping at 1.0, batches of
64 windows of 128 characters of tiny Shakespeare's training split. Both sides build it with
``lstm_lm(tie_weights=False)`` from the same seed. Rows:
- plain loop: the anchor's loop (random windows via ``torch.randint`` + ``torch.stack``, forward, loss,
  backward, clip, step);
- trainer: ``Trainer.fit`` on :class:`LanguageModelTask` with the ``tinyshakespeare`` loader
  (:class:`LMWindowLoader`), no run directory, no validation.
Rounds alternate which side goes first; the ratio is of median characters per second.

usage: python benchmarks/lstm_lm.py [--steps 12] [--rounds 3] [--threads 2] [--quick]

``--quick``: 4 steps a round, one round (smoke figures).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from _common import summary_row, SHARED, print_table, write_result
from deepfoundry import Trainer
from deepfoundry.config import OptimConfig, TrainerConfig
from deepfoundry.data import ArrayLoader, DataBundle
from deepfoundry.data.text import LMWindowLoader, tinyshakespeare
from deepfoundry.models.rnn import lstm_lm
from deepfoundry.tasks.language_model import LanguageModelTask

B, T = 64, 128


def model(vocab: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return lstm_lm(vocab_size=vocab, embedding_dim=128, hidden_size=512, num_layers=2, dropout=0.2, tie_weights=False)


def plain(train: torch.Tensor, vocab: int, steps: int) -> float:
    m = model(vocab)
    opt = torch.optim.AdamW(m.parameters(), 2e-3, weight_decay=0.01)
    t = time.perf_counter()
    for _ in range(steps):
        ix = torch.randint(len(train) - T - 1, (B,))
        b = torch.stack([train[i:i + T + 1] for i in ix])
        logits, _ = m(b[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, vocab), b[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
    return steps * B * T / (time.perf_counter() - t)


def trainer(train: torch.Tensor, info: dict, steps: int, epoch: int) -> float:
    vocab = info["model_context"]["vocab_size"]
    loader = LMWindowLoader(train[:steps * B * T + T + 1], T, B, shuffle=True, seed=epoch)
    empty = ArrayLoader(torch.zeros(0), torch.zeros(0), 1)
    data = DataBundle(loader, empty, empty, info)
    chars = sum(x.numel() for x, _ in loader.epoch_batches(0))  # the epoch Trainer.fit runs
    task = LanguageModelTask(model(vocab), info)
    tr = Trainer(TrainerConfig(epochs=1, progress=False, tensorboard=False, monitor="train_loss", grad_clip=1.0,
                               device="cpu"), OptimConfig(name="adamw", lr=2e-3, weight_decay=0.01))
    t = time.perf_counter()
    tr.fit(task, data)
    return chars / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="4 steps a round, 1 round (smoke)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.rounds = 4, 1
    torch.set_num_threads(args.threads)
    bundle = tinyshakespeare(root=str(SHARED / "datasets" / "tinyshakespeare"))
    train, info = bundle.train.ids, bundle.info
    vocab = info["model_context"]["vocab_size"]
    plain(train, vocab, 2)  # warm-up both sides
    trainer(train, info, 2, 0)
    runs: dict[str, list[float]] = {"plain loop": [], "trainer": []}
    for r in range(args.rounds):
        order = ("plain loop", "trainer") if r % 2 == 0 else ("trainer", "plain loop")
        for name in order:
            runs[name].append(plain(train, vocab, args.steps) if name == "plain loop"
                              else trainer(train, info, args.steps, r))
    base = statistics.median(runs["plain loop"])
    rows = [{"loop": k, "median chars/s": statistics.median(v), "best chars/s": max(v),
             "throughput ratio to plain": statistics.median(v) / base} for k, v in runs.items()]
    print_table(rows)
    ratio = statistics.median(runs["trainer"]) / base
    print(f"trainer chars/s / plain-loop chars/s: {ratio:.3f} (target >= 0.97)")
    path = write_result("lstm_lm", {"job": "char LSTM LM 2x512, emb 128, batch 64 x 128 chars, AdamW, clip 1.0",
                                     "steps_per_round": args.steps, "rounds": args.rounds, "threads": args.threads,
                                     "chars_per_s": runs, "table": rows, "trainer_throughput_ratio": ratio},
                        quick=args.quick,
                        summary=[summary_row("chars/s, Trainer vs plain loop (char LSTM LM 2x512)",
                                             statistics.median(runs["trainer"]), base, "plain PyTorch loop",
                                             "ratio >= 0.97", ratio >= 0.97)])
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
