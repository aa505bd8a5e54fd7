"""A run directory has one owner: --out checks, the lock, and what a resume may change (issue: reliability)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Crash, run_cli

import deepfoundry
from deepfoundry.engine.checkpoint import load_state, load_weights
from deepfoundry.engine.ownership import LOCK, acquire
from deepfoundry.errors import DeepfoundryError

QUIET = {"trainer.progress": False, "trainer.tensorboard": False, "trainer.report": False}
SHORT = {**QUIET, "trainer.epochs": 4, "trainer.checkpoint_every_steps": 7, "data.batch_size": 32}
CLI_QUIET = ["--set", "trainer.progress=false", "--set", "trainer.tensorboard=false", "--set", "trainer.report=false"]


def one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture()
def interrupted(tmp_path: Path) -> Path:
    """A lenet5-digits run stopped after 50 steps (epoch 2 of 4), its checkpoint on disk."""
    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        deepfoundry.train("lenet5-digits", overrides=SHORT, out=out, callbacks=[Crash(after=50)])
    assert not (out / LOCK).exists()  # the lock goes with the process that held it, even on a crash
    return out


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_empty_out_is_refused_and_the_current_folder_untouched(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text("mine: true\n", encoding="utf-8")
    code, _, err = run_cli(["train", "lenet5-digits", "--out", "", *CLI_QUIET], capsys)
    assert code == 2 and "names no new folder" in one_error_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]
    assert (tmp_path / "config.yaml").read_text(encoding="utf-8") == "mine: true\n"



def test_a_refused_run_leaves_no_empty_folder(tmp_path: Path, monkeypatch) -> None:
    """A config the model rejects (after the run directory was claimed) removes the folder the claim created,
    under the default runs/<recipe>-<time> as under --out; a folder the user made stays."""
    monkeypatch.chdir(tmp_path)
    bad = {**QUIET, "model.input_size": [28, 28]}  # the generator's images would not match the 8x8 digits
    with pytest.raises(DeepfoundryError, match="generator makes images"):
        deepfoundry.train("dcgan-digits", overrides=bad)
    with pytest.raises(DeepfoundryError, match="generator makes images"):
        deepfoundry.train("dcgan-digits", overrides=bad, out=tmp_path / "new")
    assert not (tmp_path / "new").exists() and not any((tmp_path / "runs").iterdir())
    (tmp_path / "mine").mkdir()
    with pytest.raises(DeepfoundryError, match="generator makes images"):
        deepfoundry.train("dcgan-digits", overrides=bad, out=tmp_path / "mine")
    assert (tmp_path / "mine").is_dir() and not any((tmp_path / "mine").iterdir())

def test_existing_runs_are_refused_unless_overwrite(interrupted: Path, tmp_path: Path, capsys) -> None:
    before = _snapshot(interrupted)
    code, _, err = run_cli(["train", "lenet5-digits", "--out", str(interrupted), *CLI_QUIET], capsys)
    assert code == 2 and "an interrupted run (continue it with 'deepfoundry train --resume" in one_error_line(err)
    assert _snapshot(interrupted) == before  # nothing replaced, nothing appended to metrics.jsonl
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep", encoding="utf-8")
    code, _, err = run_cli(["train", "lenet5-digits", "--out", str(other), *CLI_QUIET], capsys)
    assert code == 2 and "a non-empty folder" in one_error_line(err)
    code, _, err = run_cli(["train", "lenet5-digits", "--out", str(other), "--overwrite", "--epochs", "1",
                            *CLI_QUIET], capsys)
    assert code == 0, err
    assert not (other / "notes.txt").exists() and (other / "model.json").exists()
    code, _, err = run_cli(["train", "lenet5-digits", "--out", str(other), *CLI_QUIET], capsys)
    assert code == 2 and "is a finished run" in one_error_line(err)


def test_an_empty_existing_folder_is_fine(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    run = deepfoundry.train("mlp-wine", overrides={**QUIET, "trainer.epochs": 1}, out=tmp_path / "empty")
    assert (run.path / "model.json").exists() and not (run.path / LOCK).exists()


def test_resume_refuses_changes_that_break_exactness_before_touching_disk(interrupted: Path, capsys) -> None:
    before = _snapshot(interrupted)
    for flag, pattern in ((["--batch-size", "8"], "data.batch_size 32 -> 8"), (["--seed", "7"], "seed 0 -> 7"),
                          (["--epochs", "1"], "trainer.epochs 4 -> 1 .*finished epoch 1"),
                          (["--set", "model.dropout=0.5"], "model.dropout")):
        code, _, err = run_cli(["train", "--resume", str(interrupted), *flag], capsys)
        line = one_error_line(err)
        assert code == 2 and "cannot change" in line, line
        import re

        assert re.search(pattern, line), line
        assert _snapshot(interrupted) == before, flag
    code, _, err = run_cli(["train", "mlp-wine", "--resume", str(interrupted)], capsys)
    assert code == 2 and "the recipe given beside it differs" in one_error_line(err)
    code, _, err = run_cli(["train", "--resume", str(interrupted), "--out", "elsewhere"], capsys)
    assert code == 2 and "drop --out" in one_error_line(err)
    assert _snapshot(interrupted) == before


def test_resume_applies_safe_changes_and_records_them(interrupted: Path, tmp_path: Path, capsys) -> None:
    state = load_state(interrupted / "checkpoints" / "last.safetensors")
    run = deepfoundry.train(None, resume=interrupted, overrides={"trainer.epochs": 5, "optim.lr": 0.006})
    err = capsys.readouterr().err
    assert "resume: optim.lr: 0.003 -> 0.006 (from the checkpoint on)" in err
    assert "resume: trainer.epochs: 4 -> 5" in err
    records = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    resume = [r for r in records if r["kind"] == "resume"]
    assert len(resume) == 1 and resume[0]["step"] == state["trainer"]["global_step"]
    assert [r["epoch"] for r in run.history] == [1, 2, 3, 4, 5]
    assert run.config.optim.lr == 0.006 and run.config.trainer.epochs == 5
    # the new peak rate applies from the checkpoint on: the logged rates after it are twice the schedule's
    plain = deepfoundry.train("lenet5-digits", overrides={**SHORT, "trainer.epochs": 5}, out=tmp_path / "plain")
    after = [r["lr"] for r in run.history if r["epoch"] >= 2]
    ref = [r["lr"] for r in plain.history if r["epoch"] >= 2]
    assert after == pytest.approx([2 * v for v in ref], rel=1e-6)


def test_a_live_lock_refuses_a_second_writer_and_a_stale_one_is_taken(tmp_path: Path, capsys) -> None:
    out = tmp_path / "locked"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK).write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname(), "started": 0}))
        code, _, err = run_cli(["train", "lenet5-digits", "--out", str(out), *CLI_QUIET], capsys)
        line = one_error_line(err)
        assert code == 2 and f"in use by process {sleeper.pid} on this machine" in line and LOCK in line
    finally:
        sleeper.kill()
        sleeper.wait()
    dead = sleeper.pid  # now gone: its lock is stale
    (out / LOCK).write_text(json.dumps({"pid": dead, "host": socket.gethostname(), "started": 0}))
    held = acquire(out)
    assert json.loads((out / LOCK).read_text())["pid"] == os.getpid()
    held.release()
    assert not (out / LOCK).exists()


def test_two_trains_with_one_out_exactly_one_runs(tmp_path: Path) -> None:
    out = tmp_path / "shared"
    cmds = [[sys.executable, "-m", "deepfoundry", "train", "lenet5-digits", "--out", str(out), "--epochs", "4",
             "--seed", str(seed), "--json", *CLI_QUIET] for seed in (1, 2)]
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    codes = sorted(r[0] for r in results)
    assert codes == [0, 2], results
    loser = next(r for r in results if r[0] == 2)
    assert "in use by process" in one_error_line(loser[2])
    winner = next(r for r in results if r[0] == 0)
    printed = json.loads(winner[1].strip().splitlines()[-1])["test"]
    run = deepfoundry.load_run(out)
    assert run.config.seed in (1, 2) and not (out / LOCK).exists()
    reference = deepfoundry.train("lenet5-digits", overrides={**QUIET, "trainer.epochs": 4, "seed": run.config.seed},
                                  out=tmp_path / "reference")  # the same seed alone: the same files
    assert run.results["test"] == reference.results["test"]
    assert printed == {k: v for k, v in reference.results["test"].items() if isinstance(v, (int, float))}
    a, b = load_weights(out / "model.safetensors"), load_weights(reference.path / "model.safetensors")
    assert all(bool((a[k] == b[k]).all()) for k in a)


def test_version(capsys) -> None:
    code, out, _ = run_cli(["--version"], capsys)
    assert code == 0 and out.strip() == f"deepfoundry {deepfoundry.__version__}"


def test_api_refuses_the_same_as_the_cli(interrupted: Path) -> None:
    with pytest.raises(DeepfoundryError, match="interrupted run"):
        deepfoundry.train("lenet5-digits", overrides=QUIET, out=interrupted)
    with pytest.raises(DeepfoundryError, match="names no new folder"):
        deepfoundry.train("lenet5-digits", overrides=QUIET, out="")
