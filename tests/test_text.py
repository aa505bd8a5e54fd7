"""Text: tokenisers, vocabulary, packing, recurrent classifiers and language models, generate/predict, bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import deepfoundry
from deepfoundry.data.text import (PAD, UNK, BPETokenizer, CharTokenizer, LMWindowLoader, WordTokenizer, collate,
                                   fit_tokenizer, read_labelled_table, read_text_file, synthetic_sentiment,
                                   tokenizer_from_json)
from deepfoundry.errors import DeepfoundryError
from deepfoundry.models import build_model

from conftest import FAST, require_shared_dataset, run_cli


def _shakespeare() -> str:
    return (require_shared_dataset("tinyshakespeare") / "input.txt").read_text(encoding="utf-8")


# ------------------------------------------------------------------ tokenisers and vocabulary
def test_char_tokenizer_round_trip_and_unknowns():
    text = _shakespeare()[:20000]
    tok = CharTokenizer.fit(text)
    assert tok.tokens[:4] == ["<pad>", "<unk>", "<bos>", "<eos>"]
    assert tok.decode(tok.encode(text)) == text
    ids = tok.encode("ROMEO~")  # '~' never occurs in the training text
    assert ids[-1] == UNK and UNK not in ids[:-1]
    again = tokenizer_from_json(json.loads(json.dumps(tok.to_json())))
    assert again.encode(text[:500]) == tok.encode(text[:500])


def test_word_tokenizer_vocab_min_freq_and_round_trip():
    tok = WordTokenizer.fit(["The cat sat.", "the cat ran", "a dog"], min_freq=2)
    assert tok.tokens[4:] == ["cat", "the"]  # by frequency, then alphabetically; rare words dropped
    assert tok.encode("The CAT flew") == [tok.index["the"], tok.index["cat"], UNK]
    assert tok.decode(tok.encode("the cat")) == "the cat"
    assert tokenizer_from_json(tok.to_json()).tokens == tok.tokens


def test_bpe_tokenizer_trains_on_the_given_text_and_round_trips():
    text = _shakespeare()
    train = text[:200000]
    tok = fit_tokenizer("bpe", [train], vocab_size=1000)
    assert isinstance(tok, BPETokenizer) and tok.vocab_size == 1000
    held_out = text[-3000:]
    ids = tok.encode(held_out)
    assert tok.decode(ids) == held_out  # byte level: exact for any string
    assert len(ids) < 0.6 * len(held_out)  # merges compress real text
    assert tokenizer_from_json(json.loads(json.dumps(tok.to_json()))).encode(held_out) == ids
    assert tok.decode(tok.encode("ROMEO: ünïcode ✓")) == "ROMEO: ünïcode ✓"


# ------------------------------------------------------------------ loaders and packing
def test_lm_window_loader_covers_the_stream_and_replays_epochs():
    ids = torch.arange(1000)
    loader = LMWindowLoader(ids, seq_len=16, batch_size=8, shuffle=True, seed=3)
    batches = list(loader.epoch_batches(2))
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert torch.equal(y, x + 1)  # targets are the next tokens
    assert len(torch.unique(x)) == x.numel() >= 1000 - 2 * 16  # non-overlapping windows cover the stream
    replay = list(loader.epoch_batches(2, skip=3))
    assert torch.equal(replay[0][0], batches[3][0])
    assert not torch.equal(list(loader.epoch_batches(3))[0][0], batches[0][0])
    evals = list(LMWindowLoader(ids, 64, 4).epoch_batches(0))
    assert sum(int((b[1] != -100).sum()) for b in evals) == 999  # every next token scored once


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_packing_equals_running_each_sequence_alone(cell, bidirectional):
    torch.manual_seed(0)
    model = build_model(cell, {"hidden_size": 12, "embedding_dim": 6, "num_layers": 2, "bidirectional": bidirectional},
                        {"vocab_size": 30, "num_classes": 3}).eval()
    seqs = [torch.randint(4, 30, (n,)) for n in (7, 3, 5, 1)]
    tokens, lengths = collate(seqs)
    assert tokens.shape == (4, 7) and (tokens[1, 3:] == PAD).all()
    batched = model((tokens, lengths))
    alone = torch.cat([model(s[None]) for s in seqs])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)
    unpacked = model(tokens)  # without lengths the padding enters the recurrence
    assert not torch.allclose(unpacked[1], alone[1], atol=1e-4)


def test_lm_weight_tying_and_default_clip():
    m = build_model("lstm_lm", {"hidden_size": 32, "embedding_dim": 16}, {"vocab_size": 40})
    assert m.decoder.weight is m.embedding.weight and type(m).default_grad_clip == 1.0
    untied = build_model("gru_lm", {"hidden_size": 32, "tie_weights": False}, {"vocab_size": 40})
    assert untied.decoder.weight is not untied.embedding.weight


def test_pretrained_embedding_matrix(tmp_path):
    matrix = np.random.default_rng(0).normal(size=(30, 5)).astype(np.float32)
    np.save(tmp_path / "emb.npy", matrix)
    m = build_model("gru", {"embeddings": str(tmp_path / "emb.npy"), "freeze_embeddings": True},
                    {"vocab_size": 30, "num_classes": 2})
    assert torch.equal(m.embedding.weight, torch.from_numpy(matrix)) and not m.embedding.weight.requires_grad
    with pytest.raises(DeepfoundryError, match="has 30 rows but the vocabulary has 31"):
        build_model("gru", {"embeddings": str(tmp_path / "emb.npy")}, {"vocab_size": 31, "num_classes": 2})


# ------------------------------------------------------------------ training on real text
@pytest.fixture(scope="module")
def char_lm_run(tmp_path_factory):
    root = require_shared_dataset("tinyshakespeare")
    return deepfoundry.train("char-lstm-shakespeare", out=tmp_path_factory.mktemp("runs") / "lm", overrides={
        **FAST, "data.root": str(root), "data.limit": 60000, "data.batch_size": 32, "data.seq_len": 64,
        "model.hidden_size": 64, "model.num_layers": 1, "trainer.epochs": 3, "optim.lr": 0.01,
        "optim.scheduler.name": "none", "task.sample_tokens": 40, "trainer.threads": 1})


def test_char_lm_trains_on_tiny_shakespeare_and_loss_drops(char_lm_run):
    history = char_lm_run.history
    vocab = char_lm_run.info["model_context"]["vocab_size"]
    assert history[-1]["val_loss"] < history[0]["val_loss"] < np.log(vocab)  # better than uniform, and improving
    assert history[-1]["val_loss"] < 3.0
    res = char_lm_run.results["val"]
    assert res["bpc"] == pytest.approx(res["loss"] / np.log(2)) and res["perplexity"] == pytest.approx(np.exp(res["loss"]))
    assert deepfoundry.load_run(char_lm_run.path).evaluate("val")["loss"] == pytest.approx(res["loss"], rel=1e-5)
    samples = (char_lm_run.path / "samples.txt").read_text(encoding="utf-8")
    assert "ROMEO:" in samples
    again = deepfoundry.load_run(char_lm_run.path).generate("ROMEO:", 50, seed=7)
    assert again.startswith("ROMEO:") and len(again) == len("ROMEO:") + 50
    assert again == char_lm_run.generate("ROMEO:", 50, seed=7)  # seeded sampling is reproducible


def test_generate_cli_and_its_errors(char_lm_run, capsys):
    args = ["generate", str(char_lm_run.path), "--prompt", "JULIET:", "--temperature", "0.8", "--top-k", "40",
            "--seed", "1", "--json"]
    code, out, err = run_cli(args + ["--tokens", "30"], capsys)
    assert code == 0, err
    text = json.loads(out.strip().splitlines()[-1])["text"]
    assert text.startswith("JULIET:") and len(text) == 37
    code, out, err = run_cli(args + ["--tokens", "5000"], capsys)
    assert code == 2 and err.strip() == ("error: prompt (7 tokens) + 5000 new tokens = 5007, longer than the model's "
                                         "maximum of 4096 (set model.max_length when training)")
    with pytest.raises(DeepfoundryError, match="prompt is empty"):
        char_lm_run.generate("", 5)


# ------------------------------------------------------------------ classification on raw strings
@pytest.fixture(scope="module")
def sentiment_run(tmp_path_factory):
    return deepfoundry.train("gru-sentiment", out=tmp_path_factory.mktemp("runs") / "gru", overrides={
        **FAST, "data.size": 2000, "trainer.epochs": 6, "trainer.threads": 1})


def test_gru_learns_word_order_and_predicts_raw_strings(sentiment_run):
    assert sentiment_run.results["test"]["accuracy"] > 0.9
    run = deepfoundry.load_run(sentiment_run.path)
    labels = run.info["class_names"]
    texts = ["the plot was good but the acting was terrible", "the plot was terrible but the acting was good",
             "the film was not good", "the film was not bad"]
    pred = [labels[k] for k in run.predict(texts)]
    assert pred == ["negative", "positive", "negative", "positive"]
    assert run.predict_proba(texts[:1]).shape == (1, 2)
    with pytest.raises(DeepfoundryError, match="longer than the model's maximum of 32"):
        run.predict(["the film was good " * 10])


def test_predict_cli_on_text(sentiment_run, capsys):
    code, out, err = run_cli(["predict", str(sentiment_run.path), "the cast was not dull", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["predictions"][0]["label"] == "positive"


def test_synthetic_corpus_defeats_bag_of_words():
    from deepfoundry.data.text import bag_of_words_baseline

    texts, labels = synthetic_sentiment(3000, seed=1)
    assert bag_of_words_baseline(texts, labels)["accuracy"] < 0.7


def test_text_csv_with_bpe_trains_and_predicts(tmp_path):
    import csv

    texts, labels = synthetic_sentiment(600, seed=2)
    path = tmp_path / "reviews.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["review", "sentiment"])
        writer.writerows(zip(texts, labels))
    run = deepfoundry.train("gru-sentiment", out=tmp_path / "run", overrides={
        **FAST, "data.name": "text-csv", "data.root": str(path), "data.text_column": "review",
        "data.label_column": "sentiment", "data.tokenizer": "bpe", "data.vocab_size": 300, "trainer.epochs": 2,
        "trainer.threads": 1})
    assert run.info["tokenizer"]["kind"] == "bpe" and run.info["num_train"] + run.info["num_val"] + run.info["num_test"] == 600
    assert run.results["test"]["accuracy"] > 0.5
    assert deepfoundry.load_run(run.path).predict(["the film was not good", "the cast was superb"]).shape == (2,)


# ------------------------------------------------------------------ bad input
def test_empty_and_non_utf8_text_files(tmp_path):
    (tmp_path / "empty.txt").write_text("  \n", encoding="utf-8")
    with pytest.raises(DeepfoundryError, match="is empty"):
        read_text_file(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("Roméo".encode("latin-1"))
    with pytest.raises(DeepfoundryError, match="is not UTF-8"):
        deepfoundry.train("char-lstm-shakespeare", overrides={**FAST, "data.root": str(tmp_path / "latin1.txt")},
                          out=tmp_path / "run")


def test_label_column_missing_names_the_columns(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("review,stars\ngreat film,5\nawful film,1\n", encoding="utf-8")
    with pytest.raises(DeepfoundryError, match="column 'text' not in .*columns present: review, stars"):
        read_labelled_table(path, "text", "label", None)
    texts, labels = read_labelled_table(path, "review", "stars", None)
    assert texts == ["great film", "awful film"] and labels == ["5", "1"]


def test_cli_errors_are_one_line(tmp_path, capsys):
    path = tmp_path / "reviews.tsv"
    path.write_text("text\tsentiment\ngood\tpos\n", encoding="utf-8")
    code, _, err = run_cli(["train", "gru-sentiment", "--set", "data.name=text-csv", "--data-root", str(path)], capsys)
    assert code == 2
    assert err.strip() == f"error: column 'label' not in '{path}'; columns present: text, sentiment " \
                                 "(set data.label_column)"
