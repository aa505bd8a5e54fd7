"""Checkpoints you can trust: checksums checked on every load, the previous ``last`` kept for a damaged
one, a full disk in one line, files readable as the umask says, no temporaries left behind."""
from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import deepfoundry
from deepfoundry import DeepfoundryError
from deepfoundry.engine import checkpoint
from deepfoundry.engine.checkpoint import (
    load_resume_state,
    load_state,
    load_weights,
    remove_stale_temporaries,
    save_state,
    save_weights,
)
from deepfoundry.engine.rundir import write_json

FAST = {"trainer.progress": False, "trainer.tensorboard": False, "trainer.report": False}
RUN = {**FAST, "trainer.epochs": 2, "trainer.checkpoint_every_steps": 5}


def flip_tensor_byte(path: Path) -> None:
    """Flip one bit in the middle of the tensor data (after the 8-byte length and the JSON header)."""
    data = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", data[:8])
    body = 8 + n
    assert len(data) > body, "no tensor data to damage"
    data[body + (len(data) - body) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A real LeNet-5 run on digits: 2 epochs, a checkpoint every 5 steps (so last has a previous)."""
    out = tmp_path_factory.mktemp("ckpt") / "run"
    deepfoundry.train("lenet5-digits", overrides=RUN, out=out)
    return out


@pytest.fixture()
def run_copy(finished: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(finished, out)
    return out


def _one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# ------------------------------------------------------------------------------------------- checksums
def test_flipped_bytes_in_a_state_or_weights_file_are_detected(tmp_path: Path) -> None:
    model = torch.nn.Linear(4, 3)
    state_path, weights_path = tmp_path / "state.safetensors", tmp_path / "w.safetensors"
    save_state(state_path, {"model": model.state_dict(), "step": 3})
    save_weights(weights_path, model, {"format": "x"})
    assert torch.equal(load_state(state_path)["model"]["weight"], model.weight.detach())
    assert torch.equal(load_weights(weights_path)["bias"], model.bias.detach())
    for path, load in ((state_path, load_state), (weights_path, load_weights)):
        flip_tensor_byte(path)
        with pytest.raises(DeepfoundryError, match="is damaged: its tensor data does not match the checksum") as info:
            load(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_changed_digit_in_the_saved_skeleton_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "state.safetensors"
    save_state(path, {"trainer": {"global_step": 36}, "w": torch.ones(3)})
    data = path.read_bytes()
    assert data.count(b'global_step\\": 36') == 1
    path.write_bytes(data.replace(b'global_step\\": 36', b'global_step\\": 38'))  # same length: still valid JSON
    with pytest.raises(DeepfoundryError, match="is damaged"):
        load_state(path)


def test_files_without_a_checksum_still_load(tmp_path: Path) -> None:
    """Files from older versions (no checksum in the metadata) and from other tools load unchecked."""
    old = tmp_path / "old.safetensors"
    skeleton = {"model": {"weight": {"__tensor__": "/model/weight"}}, "epoch": 2}
    save_file({"/model/weight": torch.arange(6.0).reshape(2, 3)}, str(old),
              metadata={"format": "deepfoundry-state-v1", "skeleton": json.dumps(skeleton)})
    state = load_state(old)
    assert state["epoch"] == 2 and torch.equal(state["model"]["weight"], torch.arange(6.0).reshape(2, 3))
    assert load_resume_state(old)[0]["epoch"] == 2
    foreign = tmp_path / "foreign.safetensors"
    save_file({"fc.weight": torch.ones(2, 2)}, str(foreign))  # no metadata at all
    assert torch.equal(load_weights(foreign)["fc.weight"], torch.ones(2, 2))


def test_checksum_covers_every_dtype_and_empty_tensors(tmp_path: Path) -> None:
    state = {"b": torch.tensor([True, False]), "h": torch.ones(2, dtype=torch.bfloat16), "e": torch.zeros(0, 3),
             "i": torch.arange(5), "s": torch.tensor(1.5)}
    save_state(tmp_path / "s.safetensors", state)
    back = load_state(tmp_path / "s.safetensors")
    assert all(torch.equal(back[k], v) and back[k].dtype == v.dtype for k, v in state.items())


# ------------------------------------------------------------------------------------------- real runs
def test_damaged_model_weights_stop_evaluate_and_predict(run_copy: Path, capsys) -> None:
    from deepfoundry.cli import main

    assert deepfoundry.load_run(run_copy).evaluate("test")["accuracy"] > 0.5  # intact: works
    weights = run_copy / "model.safetensors"
    flip_tensor_byte(weights)
    with pytest.raises(DeepfoundryError, match="is damaged") as info:
        deepfoundry.load_run(run_copy).evaluate("test")
    assert str(weights) in str(info.value)
    with pytest.raises(DeepfoundryError, match="is damaged"):
        deepfoundry.load_run(run_copy).predict(np.zeros((2, 1, 8, 8), np.float32))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(run_copy)])
    assert exit_info.value.code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "model.safetensors' is damaged" in line


def test_saving_last_keeps_the_previous_one(finished: Path) -> None:
    last, previous = finished / "checkpoints" / "last.safetensors", finished / "checkpoints" / "previous.safetensors"
    assert previous.is_file()
    a, b = load_state(last)["trainer"], load_state(previous)["trainer"]
    assert b["global_step"] < a["global_step"]  # previous is the checkpoint written before last


def test_damaged_last_resumes_from_previous_with_a_warning(finished: Path, run_copy: Path, capsys) -> None:
    last = run_copy / "checkpoints" / "last.safetensors"
    previous = run_copy / "checkpoints" / "previous.safetensors"
    flip_tensor_byte(last)
    state, used, warning = load_resume_state(run_copy)
    assert used == previous and str(last) in warning and "previous" in warning and "\n" not in warning
    capsys.readouterr()
    run = deepfoundry.train(None, resume=run_copy)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and str(last) in warnings[0] and str(previous) in warnings[0]
    # continued from previous (mid-epoch 2) to the end: the same final weights as the run that was never damaged
    ours, theirs = load_weights(run.path / "model.safetensors"), load_weights(finished / "model.safetensors")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert load_state(last)["trainer"]["global_step"] == load_state(finished / "checkpoints" / "last.safetensors")[
        "trainer"]["global_step"]


def test_both_checkpoints_damaged_is_one_error_naming_both(run_copy: Path, capsys) -> None:
    from deepfoundry.cli import main

    last = run_copy / "checkpoints" / "last.safetensors"
    previous = run_copy / "checkpoints" / "previous.safetensors"
    flip_tensor_byte(last)
    flip_tensor_byte(previous)
    with pytest.raises(DeepfoundryError) as info:
        deepfoundry.train(None, resume=run_copy)
    assert str(last) in str(info.value) and str(previous) in str(info.value)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["train", "--resume", str(run_copy), "--set", "trainer.progress=false"])
    line = _one_error_line(capsys.readouterr().err)
    assert str(last) in line and str(previous) in line
    previous.unlink()  # a damaged last and no previous at all
    with pytest.raises(DeepfoundryError, match="no previous checkpoint") as info:
        load_resume_state(run_copy)
    assert str(last) in str(info.value) and str(previous) in str(info.value)


def test_resume_removes_stale_temporaries(run_copy: Path) -> None:
    planted = [run_copy / "checkpoints" / ".last.safetensors.k3j_9xq2.tmp", run_copy / ".results.json.ab12cd34.tmp"]
    kept = [run_copy / "checkpoints" / "notes.tmp", run_copy / ".hidden", run_copy / "checkpoints" / ".x.tmp"]
    for path in planted + kept:
        path.write_bytes(b"half a file")
    deepfoundry.train(None, resume=run_copy)
    assert not any(p.exists() for p in planted)
    assert all(p.exists() for p in kept)


# ------------------------------------------------------------------------------------------- the writer
def test_rotation_never_moves_a_damaged_last_over_a_good_previous(tmp_path: Path) -> None:
    last, previous = tmp_path / "last.safetensors", tmp_path / "previous.safetensors"
    for step in (1, 2):
        save_state(last, {"step": step, "w": torch.full((4,), float(step))}, keep_previous=True)
    assert load_state(previous)["step"] == 1 and load_state(last)["step"] == 2
    flip_tensor_byte(last)
    save_state(last, {"step": 3, "w": torch.full((4,), 3.0)}, keep_previous=True)
    assert load_state(previous)["step"] == 1 and load_state(last)["step"] == 3
    save_state(tmp_path / "best.safetensors", {"w": torch.ones(1)})
    save_state(tmp_path / "best.safetensors", {"w": torch.ones(1)})  # without keep_previous: no rotation
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.safetensors", "last.safetensors", "previous.safetensors"]


@pytest.mark.parametrize("failure", ["oserror", "safetensors", "fsync"])
def test_no_space_left_is_one_line_and_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch, failure) -> None:
    from safetensors import SafetensorError

    last = tmp_path / "last.safetensors"
    save_state(last, {"step": 1, "w": torch.ones(8)}, keep_previous=True)
    before = last.read_bytes()

    def full_disk(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\x00" * 100)  # part of the file was written
        if failure == "oserror":
            raise OSError(errno.ENOSPC, "No space left on device")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    def fsync_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    if failure == "fsync":
        monkeypatch.setattr(checkpoint.os, "fsync", fsync_full)
    else:
        monkeypatch.setattr(checkpoint, "save_file", full_disk)
    with pytest.raises(DeepfoundryError) as info:
        save_state(last, {"step": 2, "w": torch.zeros(8)}, keep_previous=True)
    assert str(info.value) == (f"no space left on device while writing '{last}'; the previous checkpoint is intact")
    assert last.read_bytes() == before and load_state(last)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.safetensors"]  # no temporary, no rotation


def test_other_write_errors_are_not_called_a_full_disk(tmp_path: Path, monkeypatch) -> None:
    def broken(tensors, filename, metadata=None):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(checkpoint, "save_file", broken)
    with pytest.raises(OSError, match="Input/output error"):
        save_state(tmp_path / "last.safetensors", {"w": torch.ones(1)})
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_have_the_mode_the_umask_gives(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        save_state(tmp_path / "last.safetensors", {"w": torch.ones(2)}, keep_previous=True)
        save_state(tmp_path / "last.safetensors", {"w": torch.ones(2)}, keep_previous=True)
        save_weights(tmp_path / "model.safetensors", torch.nn.Linear(2, 2))
        write_json(tmp_path / "results.json", {"a": 1})
    finally:
        os.umask(old)
    for name in ("last.safetensors", "previous.safetensors", "model.safetensors", "results.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def test_a_real_run_is_readable_by_others_under_umask_022(finished: Path) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    expected = 0o666 & ~umask  # the process's own umask decides; under 022 this is 0644
    for path in (finished / "model.safetensors", finished / "model.json", finished / "checkpoints" / "last.safetensors"):
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


def test_remove_stale_temporaries_touches_only_the_writers_pattern(tmp_path: Path) -> None:
    stale = [tmp_path / ".last.safetensors.abcdefgh.tmp", tmp_path / ".config.yaml.a_b1c2d3.tmp"]
    others = [tmp_path / "last.safetensors", tmp_path / "x.tmp", tmp_path / ".lock", tmp_path / ".a.toolong12345.tmp"]
    for path in stale + others:
        path.write_bytes(b"")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted(stale)
    assert all(p.exists() for p in others) and not any(p.exists() for p in stale)
    assert remove_stale_temporaries(tmp_path / "missing") == []


def test_trainer_fit_resume_from_a_damaged_last_path_falls_back_on_previous(run_copy: Path, capsys) -> None:
    """The Python API (``Trainer.fit(resume_from=path)``) has the same fallback as ``train --resume``."""
    from deepfoundry.api import Run, model_context
    from deepfoundry.data import build_data
    from deepfoundry.engine.trainer import Trainer
    from deepfoundry.models import build_model
    from deepfoundry.tasks import build_task

    last = run_copy / "checkpoints" / "last.safetensors"
    flip_tensor_byte(last)
    previous_step = load_state(run_copy / "checkpoints" / "previous.safetensors")["trainer"]["global_step"]
    cfg = Run(run_copy).config
    data = build_data(cfg.data, seed=cfg.seed)
    task = build_task(cfg.task, build_model(cfg.model.name, cfg.model.builder_kwargs(), model_context(data.info)),
                      data.info)
    trainer = Trainer(cfg.trainer, cfg.optim)
    capsys.readouterr()
    trainer.fit(task, data, resume_from=last)
    err = capsys.readouterr().err
    assert sum(line.startswith("warning:") for line in err.splitlines()) == 1 and str(last) in err
    assert trainer.resumed_from == run_copy / "checkpoints" / "previous.safetensors"
    assert trainer.global_step > previous_step


def test_metrics_jsonl_torn_last_line_is_skipped_and_a_bad_line_is_one_error(tmp_path: Path) -> None:
    from deepfoundry.engine.rundir import read_jsonl, truncate_jsonl

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"kind": "epoch", "step": 1}\n{"kind": "epoch", "step": 2}\n{"kind": "ep')
    assert [r["step"] for r in read_jsonl(path)] == [1, 2]
    truncate_jsonl(path, 1)  # a resume at step 1: the torn line and step 2 go
    assert read_jsonl(path) == [{"kind": "epoch", "step": 1}]
    path.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(DeepfoundryError, match=r"metrics.jsonl:2: not a JSON line"):
        read_jsonl(path)
    path.write_text('[1, 2]\n{"step": 3}\n')
    with pytest.raises(DeepfoundryError, match=r"metrics.jsonl:1: a record must be a JSON object"):
        read_jsonl(path)
