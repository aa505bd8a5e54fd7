"""KV-cache generation speed: tokens/s of cached vs uncached sampling from the Transformer LM, several lengths.

The model is the `transformer-shakespeare` architecture (4 layers, d 256, 4 heads, learned positions) with the
context raised to the longest length measured, so no window slides; its weights are random (speed does not
depend on them). Both sides run ``LanguageModelTask.generate`` greedily from the same one-character prompt:
- uncached (what a plain loop such as nanoGPT's ``generate`` does): the whole prefix through the model for
  every new token, ``O(t^2)`` attention work and ``O(t)`` MLP work per token;
- cached: each layer's keys/values are kept, one token through the model per step.
Both must produce the same text (checked). Rounds alternate which side goes first; medians are reported.

usage: flock /tmp/deepfoundry-cpu.lock python benchmarks/kv_cache.py [--lengths 64 128 256 512] [--rounds 3] [--quick]

``--quick``: lengths 64 and 128, one round (smoke figures).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from _common import print_table, summary_row, write_result
from deepfoundry.data.text import CharTokenizer
from deepfoundry.models.transformer import transformer_lm
from deepfoundry.tasks.language_model import LanguageModelTask


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 256, 512])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="lengths 64 and 128, 1 round (smoke)")
    a = p.parse_args()
    if a.quick:
        a.lengths, a.rounds = [64, 128], 1
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    tok = CharTokenizer.fit("abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ.,;:!?'\n-")
    model = transformer_lm(vocab_size=tok.vocab_size, d_model=256, num_heads=4, num_layers=4,
                           context_length=max(a.lengths) + 1, dropout=0.0)
    task = LanguageModelTask(model, {"tokenizer": tok.to_json()}).eval()
    task.generate("a", 8, temperature=0)  # warm-up
    rows = []
    for n in a.lengths:
        times: dict[bool, list[float]] = {True: [], False: []}
        texts = {}
        for r in range(a.rounds):
            for use_cache in ((True, False) if r % 2 == 0 else (False, True)):
                start = time.perf_counter()
                texts[use_cache] = task.generate("a", n, temperature=0, use_cache=use_cache)
                times[use_cache].append(time.perf_counter() - start)
        if texts[True] != texts[False]:
            raise SystemExit(f"cached and uncached generation differ at length {n}")
        cached, plain = n / statistics.median(times[True]), n / statistics.median(times[False])
        rows.append({"tokens": n, "uncached_tok_s": round(plain, 1), "cached_tok_s": round(cached, 1),
                     "speedup": round(cached / plain, 2), "same_text": True})
    print_table(rows)
    summary = [summary_row(f"tokens/s generating {r['tokens']} tokens, KV cache vs none", r["cached_tok_s"],
                           r["uncached_tok_s"], "uncached (the whole prefix each token)", "ratio > 1",
                           r["cached_tok_s"] > r["uncached_tok_s"]) for r in rows]
    write_result("kv_cache", {"model": "transformer_lm 4 x 256, 4 heads", "threads": a.threads, "rounds": a.rounds,
                              "rows": rows}, quick=a.quick, summary=summary)


if __name__ == "__main__":
    main()
