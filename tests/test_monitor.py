"""Drift monitoring: a shifted stream (inverted digit images; Adult rows with ages + 30) lifts the drift score
above the threshold, the run's own test inputs do not; over HTTP (``/metrics``) and with ``deepfoundry monitor``
on the request log the server wrote. Plus the statistics themselves (PSI, KS) on known distributions."""
from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from conftest import FAST, require_shared_dataset  # noqa: E402

from deepfoundry.deploy.monitor import _numeric_reference, build_reference, ks, psi  # noqa: E402
from deepfoundry.deploy.serve import create_app  # noqa: E402

THRESHOLD = 0.2


# ---------------------------------------------------------------------------------------------- the statistics
def test_psi_and_ks_on_known_distributions():
    rng = np.random.default_rng(0)
    ref = _numeric_reference(rng.normal(size=20_000))
    same, shifted = rng.normal(size=2_000), rng.normal(1.0, 1.0, size=2_000)
    assert len(ref["edges"]) == 9 and abs(sum(ref["p"]) - 1) < 1e-12
    assert psi(ref, same) < 0.02  # sampling noise: about (bins - 1) / n
    # a unit shift of a standard normal: PSI = KL both ways = 1.0 in the continuum; deciles see most of it
    assert 0.6 < psi(ref, shifted) < 1.2
    d, p = ks(ref, shifted)
    assert 0.33 < d < 0.43 and p < 1e-6  # sup |Phi(x) - Phi(x - 1)| = 2 Phi(0.5) - 1 = 0.383
    d, p = ks(ref, same)
    assert d < 0.05


def test_categorical_psi():
    ref = {"kind": "categorical", "labels": ["a", "b"], "p": [0.5, 0.5]}
    assert psi(ref, ["a", "b"] * 50) == pytest.approx(0.0)
    # q = (0.9, 0.1): 0.4 ln(1.8) + (-0.4) ln(0.2)
    assert psi(ref, ["a"] * 90 + ["b"] * 10) == pytest.approx(0.4 * np.log(1.8) - 0.4 * np.log(0.2))


# ---------------------------------------------------------------------------------------------- end to end
def raw_test_images(run):
    """The run's test images in [0, 1] (the loader holds them standardised)."""
    pre = run.info["preprocess"]
    x = torch_cat([x for x, _ in run.data().test])
    return (x * pre["std"][0] + pre["mean"][0]).clamp(0, 1).numpy()


def torch_cat(parts):
    import torch

    return torch.cat(parts)


def adult_test_rows(n):
    """Raw rows of the Adult run's own test split (the split the data module draws, seed 0)."""
    from deepfoundry.data.tabular import read_adult
    from deepfoundry.splits import stratified_split

    frame = read_adult(require_shared_dataset("adult") / "adult.data")
    labels = np.array([str(v) for v in frame["income"]])
    test = frame.iloc[stratified_split(labels, 0.1, 0.2, 0, strict=False)[2]].iloc[:n]
    return json.loads(test.drop(columns="income").to_json(orient="records"))


async def _stream(app, examples, batch=32):
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            for i in range(0, len(examples), batch):
                r = await c.post("/v1/predict", json={"inputs": examples[i:i + batch]})
                assert r.status_code == 200, r.text
            text = (await c.get("/metrics")).text
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


def _served_score(path, examples, log, window=300):
    metrics = asyncio.run(_stream(create_app(path, drift_window=window, log=log), examples))
    return metrics["deepfoundry_drift_score"], metrics


def _monitor(capsys, path, log, *extra):
    from deepfoundry.cli import main

    try:
        main(["monitor", str(path), "--log", str(log), "--json", *map(str, extra)])
    except SystemExit as exc:  # typer exits 0 after a verb
        assert not exc.code, capsys.readouterr().err
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_inverted_images_drift_test_images_do_not(digits_run, tmp_path, capsys):
    images = raw_test_images(digits_run)[:300]
    clean, _ = _served_score(digits_run.path, images.tolist(), tmp_path / "clean.jsonl")
    inverted, metrics = _served_score(digits_run.path, (1.0 - images).tolist(), tmp_path / "inverted.jsonl")
    assert clean < THRESHOLD < inverted, (clean, inverted)
    assert metrics['deepfoundry_drift_psi{feature="c0_mean"}'] > THRESHOLD
    assert (digits_run.path / "reference.json").is_file()  # built on first use

    stable = _monitor(capsys, digits_run.path, tmp_path / "clean.jsonl")
    drifted = _monitor(capsys, digits_run.path, tmp_path / "inverted.jsonl", "--threshold", THRESHOLD)
    assert set(stable) >= {"drift_score", "threshold", "drifted", "features"}
    assert not stable["drifted"] and drifted["drifted"]
    assert stable["drift_score"] == pytest.approx(clean) and drifted["drift_score"] == pytest.approx(inverted)
    out = digits_run.path / "monitor"
    assert json.loads((out / "drift.json").read_text())["drifted"] is True
    assert "DRIFTED" in (out / "drift.html").read_text()
    # --drift-window: the last 20 examples only
    assert _monitor(capsys, digits_run.path, tmp_path / "clean.jsonl", "--drift-window", 20)["examples"] == 20


def test_adult_ages_plus_30_drift_test_rows_do_not(adult_run, tmp_path, capsys):
    rows = adult_test_rows(400)
    older = [{**r, "age": r["age"] + 30} for r in rows]
    clean, _ = _served_score(adult_run.path, rows, tmp_path / "clean.jsonl")
    shifted, metrics = _served_score(adult_run.path, older, tmp_path / "older.jsonl")
    assert clean < THRESHOLD < shifted, (clean, shifted)
    assert metrics['deepfoundry_drift_psi{feature="age"}'] > THRESHOLD
    assert metrics['deepfoundry_drift_psi{feature="hours-per-week"}'] < THRESHOLD
    stable = _monitor(capsys, adult_run.path, tmp_path / "clean.jsonl")
    drifted = _monitor(capsys, adult_run.path, tmp_path / "older.jsonl")
    assert not stable["drifted"] and drifted["drifted"]
    assert drifted["features"]["age"]["psi"] > THRESHOLD and drifted["features"]["age"]["ks"] > 0.5


def test_reference_features_per_input_kind(digits_run):
    ref = build_reference(digits_run)
    assert set(ref["features"]) == {"c0_mean", "c0_std"}
    assert ref["predictions"]["kind"] == "categorical" and ref["predictions"]["labels"] == [str(k) for k in range(10)]
    assert abs(sum(ref["predictions"]["p"]) - 1) < 1e-9


def test_monitor_errors(digits_run, tmp_path, capsys):
    from deepfoundry.cli import main

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"inputs": [1], "predictions": []}\n')
    for args, words in ((["--log", tmp_path / "none.jsonl"], "does not exist"),
                        (["--log", bad], "not a request record"),
                        (["--log", bad, "--threshold", "0"], "--threshold")):
        with pytest.raises(SystemExit) as info:
            main(["monitor", str(digits_run.path), *map(str, args)])
        err = capsys.readouterr().err.strip().splitlines()
        assert info.value.code == 2 and len(err) == 1 and words in err[0], err


def test_text_reference_watches_token_count_and_unknown_rate(tmp_path):
    import deepfoundry

    run = deepfoundry.train("gru-sentiment", overrides={**FAST, "trainer.epochs": 1, "trainer.report": False},
                            out=tmp_path / "text")
    ref = build_reference(run)
    assert set(ref["features"]) == {"tokens", "unknown_rate"}
    from deepfoundry.data.codecs import codec_for

    known = [t for t in run.info["tokenizer"]["tokens"] if t.isalpha()][:5]  # words of the run's vocabulary
    texts = [" ".join(known), "zzqx vvbn qqpl wwer"]
    features = codec_for(run.info).monitor_features(run.task.encode_inputs(texts))
    assert features["unknown_rate"].tolist() == [0.0, 1.0]  # made-up words are all <unk>
    assert features["tokens"].tolist() == [5.0, 4.0]
