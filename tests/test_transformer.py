"""Transformers: KV-cache decoding == full recomputation (LM and translator), translation protocol, bad input,
and short real trainings (char LM on tiny Shakespeare, encoder classifier on the synthetic sentiment corpus)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import deepfoundry
from deepfoundry.data.text import CharTokenizer
from deepfoundry.errors import DeepfoundryError
from deepfoundry.models import build_model
from deepfoundry.tasks.language_model import LanguageModelTask

from conftest import FAST, require_shared_dataset

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\nAll:\nSpeak, speak.\n"


def _lm(**kw):
    torch.manual_seed(0)
    args = {"d_model": 32, "num_heads": 4, "num_layers": 2, "context_length": 24, "dropout": 0.1, **kw}
    return build_model("transformer_lm", args, {"vocab_size": CharTokenizer.fit(TEXT).vocab_size}).eval()


@pytest.mark.parametrize("norm_first,positional", [(True, "learned"), (False, "sinusoidal"), (True, "rotary")])
def test_lm_kv_cache_logits_equal_full_recomputation(norm_first, positional):
    model = _lm(norm_first=norm_first, positional=positional)
    x = torch.randint(4, model.vocab_size, (2, 20))
    with torch.no_grad():
        full, state = model(x)
        assert state is None  # training/plain forward builds no cache
        cache = model.new_cache()
        parts = [model(x[:, :5], cache)[0]] + [model(x[:, t:t + 1], cache)[0] for t in range(5, 20)]
    assert cache.length == 20
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)


def test_lm_cached_generation_equals_uncached_token_for_token():
    tok = CharTokenizer.fit(TEXT)
    model = _lm()
    task = LanguageModelTask(model, {"tokenizer": tok.to_json()})
    for temperature in (0.0, 1.0):  # 40 new tokens: the 24-token window slides twice
        cached = task.generate("All:", 40, temperature=temperature, top_k=None, seed=3, use_cache=True)
        plain = task.generate("All:", 40, temperature=temperature, top_k=None, seed=3, use_cache=False)
        assert cached == plain and cached.startswith("All:") and len(cached) == 44


def test_lm_too_long_input_is_one_line_error():
    model = _lm()
    with pytest.raises(DeepfoundryError, match="longer than the model's context_length 24") as exc:
        model(torch.randint(4, model.vocab_size, (1, 25)))
    assert "\n" not in str(exc.value)
    cache = model.new_cache()
    model(torch.randint(4, model.vocab_size, (1, 24)), cache)
    with pytest.raises(DeepfoundryError, match="25 tokens"):
        model(torch.randint(4, model.vocab_size, (1, 1)), cache)


def _translator(**kw):
    torch.manual_seed(0)
    ctx = {"src_vocab_size": 30, "tgt_vocab_size": 35, "pad_id": 0, "bos_id": 2, "eos_id": 3, "max_src_len": 12,
           "max_tgt_len": 14}
    return build_model("transformer_translator", {"d_model": 32, "num_heads": 4, "num_encoder_layers": 2,
                                                  "num_decoder_layers": 2, "max_len": 16, **kw}, ctx).eval()


@pytest.mark.parametrize("norm_first,positional", [(True, "sinusoidal"), (False, "sinusoidal"), (True, "rotary")])
def test_translator_decode_step_equals_teacher_forced_forward(norm_first, positional):
    model = _translator(norm_first=norm_first, positional=positional)
    assert model.uses_attention and (model.pad_id, model.bos_id, model.eos_id) == (0, 2, 3)
    src = torch.randint(4, 30, (3, 9))
    src_mask = torch.arange(9)[None, :] < torch.tensor([9, 6, 2])[:, None]
    src = src.masked_fill(~src_mask, 0)
    tgt_in = torch.cat([torch.full((3, 1), 2), torch.randint(4, 35, (3, 7))], 1)
    with torch.no_grad():
        full = model(src, src_mask, tgt_in, teacher_forcing=0.5)  # Transformers ignore teacher_forcing
        assert full.shape == (3, 8, 35)
        state = model.encode(src, src_mask)
        steps = []
        for t in range(8):
            logits, state, weights = model.decode_step(tgt_in[:, t], state, t)
            steps.append(logits)
            assert weights.shape == (3, 9) and torch.all(weights[~src_mask] == 0)
            torch.testing.assert_close(weights.sum(-1), torch.ones(3))
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=1e-5)
    assert state.self_caches[0].length == 8


def test_translator_greedy_with_cache_equals_recomputation_and_reorders():
    model = _translator()
    src = torch.randint(4, 30, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.bool)
    with torch.no_grad():
        state, prev, cached = model.encode(src, mask), torch.full((2,), 2), []
        for t in range(10):
            logits, state, _ = model.decode_step(prev, state, t)
            prev = logits.argmax(-1)
            cached.append(prev)
        seq, plain = torch.full((2, 1), 2), []
        for t in range(10):  # no cache: the whole prefix every step
            nxt = model(src, mask, seq)[:, -1].argmax(-1)
            plain.append(nxt)
            seq = torch.cat([seq, nxt[:, None]], 1)
        assert torch.equal(torch.stack(cached, 1), torch.stack(plain, 1))
        # reorder_state: swapping the rows swaps the next logits
        swapped = model.reorder_state(state, torch.tensor([1, 0]))
        a, _, _ = model.decode_step(prev, model.reorder_state(state, torch.tensor([0, 1])), 10)
        b, _, _ = model.decode_step(prev.flip(0), swapped, 10)
    torch.testing.assert_close(a.flip(0), b, atol=1e-5, rtol=1e-5)


def test_translator_bad_input():
    model = _translator()
    with pytest.raises(DeepfoundryError, match="source of 17 tokens is longer than the model's max_len 16"):
        model.encode(torch.randint(4, 30, (1, 17)), torch.ones(1, 17, dtype=torch.bool))
    with pytest.raises(DeepfoundryError, match="share_embeddings"):
        _translator(share_embeddings=True)
    # an all-padding (empty) source decodes to finite logits and zero attention, never NaN
    with torch.no_grad():
        state = model.encode(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.bool))
        logits, state, weights = model.decode_step(torch.full((2,), 2), state, 0)
    assert torch.isfinite(logits).all() and torch.all(weights == 0)


def test_translator_embedding_scale_matches_positions():
    """Sinusoidal positions (amplitude ~0.71): token embeddings start at N(0, 1/d) so that sqrt(d) * E has unit
    variance; learned positions keep the 0.02 rule; a shared matrix is initialised once."""
    d = 256
    for share in (False, True):
        model = _translator(d_model=d, share_embeddings=share, **({"tgt_vocab_size": 30} if share else {}))
        for stack in (model.encoder, model.decoder):
            scaled = stack.embedding.weight * stack.scale
            assert abs(float(scaled.std()) - 1.0) < 0.05
        assert model.head.weight is model.decoder.embedding.weight
    learned = _translator(positional="learned")
    assert abs(float(learned.encoder.embedding.weight.std()) - 0.02) < 0.005


def test_classifier_pooling_ignores_padding_and_length_limit():
    torch.manual_seed(0)
    for pool, positional in (("mean", "learned"), ("cls", "learned"), ("mean", "rotary"), ("cls", "rotary")):
        model = build_model("transformer_classifier", {"d_model": 32, "num_heads": 4, "pool": pool, "max_length": 10,
                                                       "positional": positional},
                            {"vocab_size": 50, "num_classes": 3}).eval()
        tokens = torch.randint(4, 50, (1, 6))
        padded = torch.cat([tokens, torch.zeros(1, 4, dtype=torch.long)], 1)
        with torch.no_grad():
            torch.testing.assert_close(model((padded, torch.tensor([6]))), model((tokens, torch.tensor([6]))),
                                       atol=1e-5, rtol=1e-5)
        with pytest.raises(DeepfoundryError, match="longer than the model's max_length 10"):
            model((torch.randint(4, 50, (1, 11)), torch.tensor([11])))


# ------------------------------------------------------------------ short real trainings
def test_transformer_lm_trains_on_tiny_shakespeare(tmp_path):
    root = require_shared_dataset("tinyshakespeare")
    run = deepfoundry.train("transformer-shakespeare", out=tmp_path / "lm", overrides={
        **FAST, "data.root": str(root), "data.limit": 40000, "data.batch_size": 16, "data.seq_len": 32,
        "data.eval_seq_len": 32, "model.context_length": 32, "model.d_model": 48, "model.num_layers": 1,
        "model.num_heads": 4, "trainer.epochs": 3, "optim.lr": 0.005, "task.sample_tokens": 80,
        "trainer.threads": 1})
    history, vocab = run.history, run.info["model_context"]["vocab_size"]
    assert history[-1]["val_loss"] < history[0]["val_loss"] < np.log(vocab)
    assert history[-1]["val_loss"] < 2.8  # below the unigram entropy (~3.05 nats): it uses the context
    text = run.generate("ROMEO:", 100, seed=1)  # 100 tokens > the 32-token context: the window slides
    assert text.startswith("ROMEO:") and len(text) == 106
    assert text == deepfoundry.load_run(run.path).generate("ROMEO:", 100, seed=1)


def test_transformer_classifier_learns_sentiment(tmp_path):
    run = deepfoundry.train("transformer-sentiment", out=tmp_path / "cls", overrides={
        **FAST, "data.size": 4000, "trainer.epochs": 4, "optim.lr": 0.003, "model.dropout": 0.0})
    assert run.results["test"]["accuracy"] > 0.8  # chance is 0.5; bag-of-words cannot solve this corpus
