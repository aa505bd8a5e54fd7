"""Translation: parallel data, seq2seq models, greedy/beam decoding, BLEU, the translate verb, bad input."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import deepfoundry
from deepfoundry.data.text import BOS, EOS, PAD, fit_tokenizer
from deepfoundry.data.translation import (TranslationLoader, encode_sources, multi30k, read_parallel,
                                          read_tsv_pairs, synthetic_dates)
from deepfoundry.errors import DeepfoundryError
from deepfoundry.models import build_model
from deepfoundry.tasks.translation import beam_search, corpus_bleu, greedy_decode, length_penalty

from conftest import FAST, require_shared_dataset, run_cli

DATES = {**FAST, "data.size": 4000, "data.val_fraction": 0.05, "data.test_fraction": 0.05, "data.max_tokens": 1024,
         "model.hidden_size": 64, "trainer.epochs": 4, "optim.lr": 0.005}


@pytest.fixture(scope="module")
def dates_run(tmp_path_factory: pytest.TempPathFactory):
    """The synthetic-dates recipe with Bahdanau attention, trained small (about 30-40 s on one core)."""
    return deepfoundry.train("seq2seq-dates", overrides=DATES, out=tmp_path_factory.mktemp("runs") / "dates")


# ------------------------------------------------------------------ data
def test_multi30k_loader_reads_the_real_folder_with_standard_counts():
    folder = require_shared_dataset("multi30k-en-de")
    src, tgt = read_parallel(folder / "train.en.gz", folder / "train.de.gz")
    assert len(src) == len(tgt) == 29000
    assert src[0].startswith("Two young, White males are outside")
    data = multi30k(root=str(folder), tokenizer="word", max_tokens=6000)  # word: quick; the recipes fit BPE
    assert (data.info["num_train"], data.info["num_val"], data.info["num_test"]) == (29000, 1014, 1000)
    assert data.test.references[0] == "Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt."
    for batch in list(data.train.epoch_batches(0))[:5]:
        b, s = batch["src"].shape
        assert b * max(s, batch["tgt_in"].shape[1]) <= 6000  # token-based batches
        assert torch.equal(batch["src_mask"], batch["src"] != PAD)
        assert (batch["tgt_in"][:, 0] == BOS).all() and torch.equal(batch["tgt_in"][:, 1:] != PAD,
                                                                    batch["tgt_out"][:, :-1] != PAD)
        assert int((batch["tgt_out"] == EOS).sum()) == b
    assert sum(batch["src"].shape[0] for batch in data.train) == 29000
    replay = list(data.train.epoch_batches(3, skip=2))[0]
    assert torch.equal(replay["index"], list(data.train.epoch_batches(3))[2]["index"])
    ctx = data.info["model_context"]
    assert ctx["pad_id"] == PAD and ctx["src_vocab_size"] == ctx["tgt_vocab_size"]


def test_multi30k_missing_folder_names_the_files_and_the_download_flag(tmp_path):
    with pytest.raises(DeepfoundryError, match="train.en.gz.*data.download=true"):
        multi30k(root=str(tmp_path))


def test_parallel_text_files_tsv_and_misaligned_input(tmp_path):
    (tmp_path / "a.txt").write_text("one\ntwo\nthree\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("eins\nzwei\n", encoding="utf-8")
    with pytest.raises(DeepfoundryError, match="3 lines.*2"):
        read_parallel(tmp_path / "a.txt", tmp_path / "b.txt")
    (tmp_path / "p.tsv").write_text("hello\thallo\nno tab here\n", encoding="utf-8")
    with pytest.raises(DeepfoundryError, match="line 2.*no tab"):
        read_tsv_pairs(tmp_path / "p.tsv")
    src, tgt = synthetic_dates(200, seed=1)
    (tmp_path / "d.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in zip(src, tgt)), encoding="utf-8")
    data = deepfoundry.data.build_data(deepfoundry.config.DataConfig(
        name="parallel-text", root=str(tmp_path / "d.tsv"), tokenizer="char", val_fraction=0.1, test_fraction=0.1))
    assert data.info["num_train"] == 160 and data.info["num_test"] == 20


def test_loader_buckets_by_length_and_respects_the_token_budget():
    src = [[5] * n for n in (3, 9, 4, 8, 2, 10)]
    loader = TranslationLoader(src, [[6] * 3] * 6, ["x"] * 6, ["y"] * 6, max_tokens=20)
    lengths = [[len(src[i]) for i in b] for b in loader.batches]
    assert lengths == [[2, 3, 4], [8, 9], [10]]  # sorted, each batch <= 20 padded tokens


# ------------------------------------------------------------------ models
@pytest.mark.parametrize("name", ["gru_seq2seq", "lstm_seq2seq"])
@pytest.mark.parametrize("attention", ["none", "bahdanau", "luong_dot", "luong_general"])
def test_seq2seq_step_decoding_equals_teacher_forced_forward(name, attention):
    ctx = {"src_vocab_size": 30, "tgt_vocab_size": 30}
    m = build_model(name, {"attention": attention, "hidden_size": 16, "embedding_dim": 8, "num_layers": 2,
                           "dropout": 0.0}, ctx).eval()
    src = torch.tensor([[5, 6, 7, EOS], [8, EOS, PAD, PAD]])
    tgt = torch.tensor([[BOS, 9, 10, 11], [BOS, 12, PAD, PAD]])
    full = m(src, src != PAD, tgt)  # (B, T, V); Luong and none run the recurrence in one call
    state, steps = m.encode(src, src != PAD), []
    for t in range(tgt.shape[1]):
        logits, state, weights = m.decode_step(tgt[:, t], state, t)
        steps.append(logits)
        assert (weights is None) == (attention == "none")
        if weights is not None:
            assert torch.allclose(weights.sum(1), torch.ones(2)) and float(weights[1, 2:].detach().abs().sum()) == 0.0
    assert torch.allclose(full, torch.stack(steps, 1), atol=1e-5)
    assert m.uses_attention == (attention != "none")


def test_fixed_context_decoder_sees_only_the_final_encoder_state():
    """Without attention, changing the source changes the output only through the final encoder state."""
    m = build_model("gru_seq2seq", {"attention": "none", "hidden_size": 16, "embedding_dim": 8, "dropout": 0.0,
                                    "bidirectional": False}, {"src_vocab_size": 30, "tgt_vocab_size": 30}).eval()
    src = torch.tensor([[5, 6, 7, EOS]])
    state = m.encode(src, src != PAD)
    assert set(state) == {"h", "keys", "mask", "context"}
    keys = state["keys"].clone()
    state["keys"] = torch.randn_like(keys)  # the annotations are never read
    a = m.decode_step(torch.tensor([BOS]), state, 0)[0]
    state["keys"] = keys
    assert torch.equal(a, m.decode_step(torch.tensor([BOS]), state, 0)[0])


def test_teacher_forcing_below_one_feeds_the_models_own_tokens():
    m = build_model("gru_seq2seq", {"attention": "luong_dot", "hidden_size": 16, "embedding_dim": 8, "dropout": 0.0},
                    {"src_vocab_size": 30, "tgt_vocab_size": 30}).eval()
    src, tgt = torch.tensor([[5, 6, EOS]]), torch.tensor([[BOS, 9, 10, 11, 12]])
    forced = m(src, src != PAD, tgt, teacher_forcing=1.0)
    free = m(src, src != PAD, tgt, teacher_forcing=0.0)  # every input after <bos> is the model's own argmax
    assert torch.allclose(forced[:, 0], free[:, 0], atol=1e-6) and not torch.allclose(forced, free)
    prefix = [BOS] + free[0].argmax(-1).tolist()[:4]
    assert torch.allclose(free, m(src, src != PAD, torch.tensor([prefix])), atol=1e-5)


# ------------------------------------------------------------------ decoding
class ToyTranslator(nn.Module):
    """Fixed next-token distributions over <pad> <unk> <bos> <eos> A: first step <eos> 0.52 / A 0.48,
    after A: <eos> 0.99. Raw log-probability prefers the empty output; length-normalised (alpha = 1) prefers 'A'."""

    uses_attention, pad_id, bos_id, eos_id, max_tgt_len = False, PAD, BOS, EOS, 4

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def encode(self, src, src_mask):
        return torch.zeros(src.shape[0], 1)

    def decode_step(self, prev, state, step):
        p = torch.full((prev.shape[0], 5), 1e-9)
        first = torch.tensor([0, 0, 0, 0.52, 0.48])
        after_a = torch.tensor([0, 0, 0, 0.99, 0.01])
        p[:] = torch.where((prev == 4)[:, None], after_a, first) + 1e-9
        return p.log(), state, None

    def reorder_state(self, state, index):
        return state.index_select(0, index)


def test_length_penalty_formula_and_its_effect_on_beam_search():
    assert length_penalty(1, 0.0) == 1.0 and math.isclose(length_penalty(7, 1.0), 2.0)
    assert math.isclose(length_penalty(3, 0.6), (8 / 6) ** 0.6)
    m, src = ToyTranslator(), torch.tensor([[5, EOS]])
    assert beam_search(m, src, src != PAD, beam=2, alpha=0.0) == [[]]  # log .52 > log(.48 * .99)
    assert beam_search(m, src, src != PAD, beam=2, alpha=1.0) == [[4]]  # -.744 / (7/6) > -.654 / 1
    assert greedy_decode(m, src, src != PAD)[0] == [[]]


def test_beam_size_one_equals_greedy_and_a_wider_beam_is_at_least_as_likely(dates_run):
    task = dates_run.task
    test = dates_run.data().test
    batch = test.batch(test.batches[0][:40])
    greedy, _ = greedy_decode(task.model, batch["src"], batch["src_mask"])
    assert beam_search(task.model, batch["src"], batch["src_mask"], beam=1, alpha=0.0) == greedy
    assert beam_search(task.model, batch["src"], batch["src_mask"], beam=1, alpha=0.6) == greedy
    beam4 = beam_search(task.model, batch["src"], batch["src_mask"], beam=4, alpha=0.0)
    assert all(len(ids) <= task.info["max_tgt_len"] for ids in beam4)

    def log_prob(seqs):  # sum over outputs of log p(y | x) (with <eos>), by one teacher-forced pass
        tgt = torch.full((len(seqs), max(map(len, seqs)) + 2), PAD)
        for i, ids in enumerate(seqs):
            tgt[i, :len(ids) + 2] = torch.tensor([BOS, *ids, EOS])
        logp = torch.log_softmax(task.model(batch["src"], batch["src_mask"], tgt[:, :-1]), -1)
        picked = logp.gather(2, tgt[:, 1:, None]).squeeze(-1)
        return float(picked[tgt[:, 1:] != PAD].detach().sum())

    assert log_prob(beam4) >= log_prob(greedy) - 1e-3  # a wider search finds outputs at least as likely


def test_bleu_uses_sacrebleu_on_detokenised_text():
    score, sig = corpus_bleu(["Ein Mann fährt ein Fahrrad."], ["Ein Mann fährt ein Fahrrad."])
    assert score == pytest.approx(100.0) and "tok:13a" in sig and "case:mixed" in sig
    assert corpus_bleu(["Ein Hund."], ["Ein Mann fährt ein Fahrrad."])[0] < 10


# ------------------------------------------------------------------ end to end
def test_attention_model_learns_synthetic_dates(dates_run):
    test = dates_run.results["test"]
    assert test["exact_match"] >= 0.6 and test["bleu"] >= 85, test
    assert "tok:13a" in test["bleu_signature"]
    assert any("val_bleu" in r for r in dates_run.history)
    assert dates_run.translate(["12 March 2021"])[0] == "2021-03-12"
    model = json.loads((dates_run.path / "model.json").read_text())
    assert model["info"]["tokenizer"]["kind"] == "char"  # the fitted vocabulary travels with the run


def test_translate_verb_in_a_subprocess(dates_run):
    env = {**os.environ, "PYTHONPATH": str(Path(deepfoundry.__file__).parents[1])}
    proc = subprocess.run([sys.executable, "-m", "deepfoundry", "translate", str(dates_run.path), "4 July 1999",
                           "MAR 12 2021", "--beam", "3", "--json"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[:2] == dates_run.translate(["4 July 1999", "MAR 12 2021"], beam=3)
    assert json.loads(lines[-1])["translations"] == lines[:2] and lines[0] == "1999-07-04"


def test_bad_inputs_are_one_line_errors_or_unknown_tokens(dates_run, capsys):
    code, _, err = run_cli(["translate", str(dates_run.path), "   "], capsys)
    assert code == 2 and err.startswith("error: source sentence 0 is empty") and err.count("\n") == 1
    code, _, err = run_cli(["translate", str(dates_run.path), "12 March 2021 " * 5], capsys)
    assert code == 2 and "longer than the model's maximum of 48" in err  # refused, never silently truncated
    tok = dates_run.task.tokenizer
    src, _ = encode_sources(tok, ["12 März 2021 ✓"], 48)
    unseen = [c for c in "12 März 2021 ✓" if c not in tok.index]
    assert "ä" in unseen and "✓" in unseen and int((src == 1).sum()) == len(unseen)  # <unk>; the rest translates
    assert len(dates_run.translate("12 März 2021 ✓")[0]) > 0
    with pytest.raises(DeepfoundryError, match="beam size must be >= 1"):
        dates_run.translate("12 March 2021", beam=0)
    code, out, _ = run_cli(["predict", str(dates_run.path), "12 March 2021", "--json"], capsys)  # the contract:
    assert code == 0                                                                    # greedy translations
    assert json.loads(out.strip().splitlines()[-1])["predictions"] == [
        {"input": "12 March 2021", "translation": dates_run.translate("12 March 2021")[0]}]


def test_translate_needs_a_translation_run(digits_run):
    with pytest.raises(DeepfoundryError, match="translate needs a translation run"):
        digits_run.translate("x")


def test_bpe_never_produces_unknown_tokens():
    tok = fit_tokenizer("bpe", ["A man is riding a bike.", "Ein Mann fährt Fahrrad."] * 50, vocab_size=300)
    src, mask = encode_sources(tok, ["Ein Bär 🐻 fährt"], 64)
    assert 1 not in src.tolist()[0] and tok.decode(src[0, :-1].tolist()) == "Ein Bär 🐻 fährt"


@pytest.mark.slow
def test_report_has_attention_heatmaps_and_bleu_by_length(dates_run):
    from deepfoundry.report import write_report

    page = write_report(dates_run).read_text(encoding="utf-8")
    assert "Attention (source x output)" in page and "BLEU by source length" in page
    assert (dates_run.path / "plots" / "attention_0.png").exists()
    assert (dates_run.path / "plots" / "bleu_by_length.png").exists()


def test_transformer_translator_follows_the_protocol_with_the_task():
    from deepfoundry.data.translation import dates_synthetic
    from deepfoundry.tasks.translation import TranslationTask

    data = dates_synthetic(size=300, val_fraction=0.1, test_fraction=0.1)
    torch.manual_seed(0)
    model = build_model("transformer_translator", {"d_model": 32, "num_heads": 2, "num_encoder_layers": 1,
                                                   "num_decoder_layers": 1}, data.info["model_context"]).eval()
    task = TranslationTask(model, data.info)
    batch = data.test.batch(data.test.batches[0][:6])
    assert task.training_step(batch).isfinite()
    greedy, maps = greedy_decode(model, batch["src"], batch["src_mask"], return_attention=True)
    assert beam_search(model, batch["src"], batch["src_mask"], beam=1, alpha=0.0) == greedy
    assert maps[0].shape[1] == int(batch["src_mask"][0].sum())  # (output tokens, source tokens)
    assert all(isinstance(t, str) for t in task.translate(["12 March 2021"], beam=3))
