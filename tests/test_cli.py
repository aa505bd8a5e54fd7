"""The command line: every verb, --json on the last line, and one-line errors with exit code 2."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image


FAST = ["--set", "trainer.progress=false", "--set", "trainer.tensorboard=false"]


def assert_one_line_error(code: int, out: str, err: str, pattern: str) -> None:
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    import re

    assert re.search(pattern, lines[0]), lines[0]


def test_list(capsys) -> None:
    code, out, _ = run_cli(["list", "models"], capsys)
    assert code == 0 and "lenet5" in out and "vgg16_bn" in out and "alexnet" in out
    code, out, _ = run_cli(["list", "recipes"], capsys)
    assert "lenet5-digits" in out and "mlp-diabetes" in out
    code, out, _ = run_cli(["list", "datasets"], capsys)
    assert "mnist" in out and "cifar10" in out and "image-folder" in out


def test_train_json_evaluate_predict_report(tmp_path: Path, capsys) -> None:
    out_dir = tmp_path / "run"
    code, out, err = run_cli(["train", "lenet5-digits", "--epochs", "4", "--out", str(out_dir), "--json", *FAST],
                             capsys)
    assert code == 0, err
    assert f"run directory: {out_dir}" in out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["run"] == str(out_dir) and result["test"]["accuracy"] > 0.8 and result["seconds"] > 0
    for name in ("config.yaml", "metrics.jsonl", "model.safetensors", "model.json", "results.json",
                 "checkpoints/last.safetensors", "checkpoints/best.safetensors"):
        assert (out_dir / name).exists(), name

    code, out, _ = run_cli(["evaluate", str(out_dir), "--split", "test", "--json"], capsys)
    evaluated = json.loads(out.strip().splitlines()[-1])["test"]
    assert evaluated["accuracy"] == pytest.approx(result["test"]["accuracy"])

    # predict: a real test digit as .npy (raw scale [0, 1]) and as an 8x8 PNG
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images[-5:] / 16.0).astype(np.float32)[:, None]
    np.save(tmp_path / "five.npy", x)
    Image.fromarray((x[0, 0] * 255).round().astype(np.uint8)).save(tmp_path / "one.png")
    code, out, err = run_cli(["predict", str(out_dir), str(tmp_path / "five.npy"), str(tmp_path / "one.png"),
                              "--json"], capsys)
    assert code == 0, err
    preds = json.loads(out.strip().splitlines()[-1])["predictions"]
    assert len(preds) == 6
    assert sum(p["class"] == t for p, t in zip(preds, digits.target[-5:])) >= 4
    assert preds[5]["class"] == preds[0]["class"]  # the PNG is the first .npy image

    code, out, _ = run_cli(["report", str(out_dir)], capsys)
    assert code == 0 and (out_dir / "report.html").exists()


def test_resume_flag_and_show_loop(tmp_path: Path, capsys) -> None:
    out_dir = tmp_path / "r"
    code, out, err = run_cli(["train", "mlp-digits", "--epochs", "2", "--out", str(out_dir), "--show-loop", *FAST],
                             capsys)
    assert code == 0 and "on_epoch_end" in err and "Checkpoint" in err
    code, out, err = run_cli(["train", "--resume", str(out_dir), "--epochs", "4", *FAST], capsys)
    assert code == 0, err
    assert "resumed from" in err
    assert len([json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()
                if '"kind": "epoch"' in line]) == 4


def test_error_unknown_recipe(capsys) -> None:
    assert_one_line_error(*run_cli(["train", "lenet5-digit"], capsys), r"did you mean 'lenet5-digits'")


def test_error_unknown_key(capsys) -> None:
    assert_one_line_error(*run_cli(["train", "lenet5-digits", "--set", "trainer.epoch=3"], capsys),
                          r"unknown config key 'trainer.epoch'")


def test_error_unknown_model_key(tmp_path: Path, capsys) -> None:
    assert_one_line_error(*run_cli(["train", "lenet5-digits", "--set", "model.bogus=3", "--out",
                                    str(tmp_path / "x"), *FAST], capsys), r"unknown config key 'model.bogus'")


def test_error_wrong_type(capsys) -> None:
    assert_one_line_error(*run_cli(["train", "lenet5-digits", "--set", "trainer.epochs=ten"], capsys),
                          r"config key 'trainer.epochs'.*integer")


def test_error_missing_data_path(tmp_path: Path, capsys) -> None:
    assert_one_line_error(*run_cli(["train", "lenet5-mnist", "--data-root", str(tmp_path / "nowhere"),
                                    "--out", str(tmp_path / "x"), *FAST], capsys), r"nowhere")


def test_error_corrupt_checkpoint(digits_run, tmp_path: Path, capsys) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(digits_run.path, broken)
    (broken / "checkpoints" / "last.safetensors").write_bytes(b"\x00garbage" * 10)
    (broken / "checkpoints" / "previous.safetensors").write_bytes(b"\x00garbage" * 10)  # else resume falls back on it
    assert_one_line_error(*run_cli(["train", "--resume", str(broken), *FAST], capsys), r"corrupt or unreadable")
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    assert_one_line_error(*run_cli(["evaluate", str(broken)], capsys), r"corrupt or unreadable")


def test_error_wrong_image_size(digits_run, tmp_path: Path, capsys) -> None:
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "big.png")
    assert_one_line_error(*run_cli(["predict", str(digits_run.path), str(tmp_path / "big.png")], capsys),
                          r"28x28.*8x8")
    np.save(tmp_path / "bad.npy", np.zeros((2, 1, 28, 28), np.float32))
    assert_one_line_error(*run_cli(["predict", str(digits_run.path), str(tmp_path / "bad.npy")], capsys),
                          r"expects \(1, 8, 8\)")


def test_error_not_a_run(tmp_path: Path, capsys) -> None:
    assert_one_line_error(*run_cli(["evaluate", str(tmp_path)], capsys), r"not a finished run directory")


def test_real_process_prints_no_traceback_and_debug_does() -> None:
    proc = subprocess.run([sys.executable, "-m", "deepfoundry", "train", "no-such-recipe"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: recipe 'no-such-recipe'") and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "deepfoundry", "--debug", "train", "no-such-recipe"],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" in proc.stderr
