"""Distributed training under torchrun (engine/distributed.py, docs/distributed.md).

The acceptance check runs ``torchrun --nproc-per-node 2`` (gloo over loopback) against one process on the same
recipe and compares the per-epoch train losses and the final weights. The per-rank shares of every batch are
checked on the loaders directly; the bad-input lines are checked in-process with torchrun's environment set
(they are refused before the process group is joined).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_cli

import deepfoundry
from deepfoundry.data.core import ArrayLoader
from deepfoundry.data.text import LMWindowLoader, PaddedTextLoader
from deepfoundry.engine.checkpoint import load_weights
from deepfoundry.engine.rundir import read_jsonl

SRC = Path(deepfoundry.__file__).resolve().parents[1]
QUIET = ["--set", "trainer.progress=false", "--set", "trainer.tensorboard=false", "--no-report"]
ACCEPT = ["lenet5-digits", "--epochs", "2", "--set", "data.batch_size=32", "--set", "trainer.restore_best=false",
          "--set", "trainer.threads=1", *QUIET]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    env.update(PYTHONPATH=str(SRC) + os.pathsep + env.get("PYTHONPATH", ""), OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    return env


def torchrun(args: list[str], nproc: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --nproc-per-node N -m deepfoundry ARGS`` on loopback."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-addr",
           "127.0.0.1", "--master-port", str(_free_port()), "-m", "deepfoundry", *args]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)


def single(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deepfoundry", *args], env=_env(), capture_output=True, text=True,
                          timeout=300)


def epoch_losses(run: Path) -> list[float]:
    return [r["train_loss"] for r in read_jsonl(run / "metrics.jsonl") if r.get("kind") == "epoch"]


def assert_equivalent(one: Path, many: Path) -> None:
    """Per-epoch train loss within 1e-4 relative, final weights within 1e-4 max abs (the acceptance bounds)."""
    a, b = epoch_losses(one), epoch_losses(many)
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert abs(x - y) <= 1e-4 * abs(x), (a, b)
    wa, wb = load_weights(one / "model.safetensors"), load_weights(many / "model.safetensors")
    assert sorted(wa) == sorted(wb)
    diff = max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)
    assert diff <= 1e-4, diff


# ------------------------------------------------------------------------------------------------ shares
def _parts(make, world: int, epoch: int = 0) -> list[list]:
    """Every rank's batches of one epoch, from fresh loaders made by ``make()``."""
    out = []
    for rank in range(world):
        loader = make()
        loader.shard(rank, world)
        batches = []
        for batch in loader.epoch_batches(epoch):
            batches.append((batch, loader.share))
        out.append(batches)
    return out


def test_array_loader_shares_every_batch_of_the_same_permutation() -> None:
    """Concatenating the ranks' parts of batch i gives the single-process batch i; an uneven last batch is
    split into parts differing by one, and a part that would be empty is one sample weighted 0."""
    x, y = torch.arange(23.0).unsqueeze(1), torch.arange(23)
    make = lambda: ArrayLoader(x, y, batch_size=6, shuffle=True, seed=3)  # noqa: E731
    whole = list(make().epoch_batches(1))
    for world in (2, 3, 6):
        parts = _parts(make, world, epoch=1)
        assert all(len(p) == len(whole) for p in parts)  # the same number of steps on every rank
        for i, (bx, by) in enumerate(whole):
            shares = [parts[r][i][1] for r in range(world)]
            assert {n for _, n in shares} == {len(by)} and sum(k for k, _ in shares) == len(by)
            sizes = [k for k, _ in shares]
            assert max(sizes) - min(sizes) <= 1
            got = torch.cat([parts[r][i][0][1] for r in range(world) if shares[r][0] > 0])
            assert torch.equal(got, by)
    last = _parts(make, 6, epoch=1)  # 23 = 3 * 6 + 5: the last batch has 5 samples for 6 ranks
    assert [b[-1][1] for b in last] == [(1, 5)] * 5 + [(0, 5)]
    assert len(last[5][-1][0][1]) == 1  # the empty part still takes part in the step, with weight 0


def test_text_loaders_share_like_one_process() -> None:
    ids = torch.arange(200) % 37
    make = lambda: LMWindowLoader(ids, seq_len=8, batch_size=4, shuffle=True, seed=1)  # noqa: E731
    whole = list(make().epoch_batches(2))
    parts = _parts(make, 2, epoch=2)
    for i, (bx, _) in enumerate(whole):
        assert torch.equal(torch.cat([parts[r][i][0][0] for r in range(2) if parts[r][i][1][0]]), bx)
    seqs = [[1 + (i % 5)] * (1 + i % 7) for i in range(11)]
    labels = torch.arange(11)
    make = lambda: PaddedTextLoader(seqs, labels, batch_size=4, shuffle=True, seed=2)  # noqa: E731
    whole = list(make().epoch_batches(0))
    parts = _parts(make, 2)
    for i, (_, by) in enumerate(whole):
        assert torch.equal(torch.cat([parts[r][i][0][1] for r in range(2) if parts[r][i][1][0]]), by)


# ------------------------------------------------------------------------------------------------ bad input
@pytest.fixture
def torchrun_env(monkeypatch: pytest.MonkeyPatch):
    """torchrun's environment for one worker of two (nothing listens: the checks come before the rendezvous)."""
    def set_rank(rank: int) -> None:
        for key, value in (("WORLD_SIZE", "2"), ("RANK", str(rank)), ("LOCAL_RANK", str(rank)),
                           ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", str(_free_port()))):
            monkeypatch.setenv(key, value)
    return set_rank


def _one_error(code: int, err: str, pattern: str) -> None:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert pattern in lines[0], lines[0]


def test_batch_size_not_divisible_by_world_size_is_one_line(torchrun_env, tmp_path: Path, capsys) -> None:
    torchrun_env(0)
    code, _, err = run_cli(["train", "lenet5-digits", "--batch-size", "33", "--out", str(tmp_path / "r"), *QUIET],
                           capsys)
    _one_error(code, err, "data.batch_size 33 is not divisible by the world size 2")
    assert not (tmp_path / "r").exists()
    torchrun_env(1)  # the other ranks meet the same input and exit 2 without repeating the line
    code, out, err = run_cli(["train", "lenet5-digits", "--batch-size", "33", "--out", str(tmp_path / "r"), *QUIET],
                             capsys)
    assert code == 2 and not err.strip() and not out.strip()


def test_own_loop_family_is_refused_under_torchrun(torchrun_env, tmp_path: Path, capsys) -> None:
    torchrun_env(0)
    code, _, err = run_cli(["train", "dqn-cartpole", "--out", str(tmp_path / "r"), *QUIET], capsys)
    _one_error(code, err, "cannot train under torchrun")


# ------------------------------------------------------------------------------------------------ torchrun
@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One process, the acceptance settings."""
    out = tmp_path_factory.mktemp("one") / "run"
    overrides = {"trainer.epochs": 2, "data.batch_size": 32, "trainer.restore_best": False, "trainer.threads": 1,
                 "trainer.progress": False, "trainer.tensorboard": False, "trainer.report": False}
    deepfoundry.train("lenet5-digits", overrides, out=out)  # in this process: the same numbers, no start-up
    return out


def test_ddp_two_processes_match_one_process(reference: Path, tmp_path: Path) -> None:
    """Acceptance: lenet5-digits, 2 epochs, global batch 32, gloo on loopback, against one process."""
    out = tmp_path / "ddp"
    done = torchrun(["train", *ACCEPT, "--out", str(out), "--json"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert_equivalent(reference, out)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["world_size"] == 2 and done.stdout.count("run directory:") == 1  # rank 0 alone prints
    results = json.loads((out / "results.json").read_text())
    assert results["world_size"] == 2 and results["distributed"] == "ddp"
    assert json.loads((reference / "results.json").read_text())["world_size"] == 1
    assert {p.name for p in (out / "checkpoints").iterdir()} >= {"last.safetensors", "best.safetensors"}
    assert not (out / ".lock").exists()


@pytest.mark.slow
def test_fsdp_two_processes_match_one_process(reference: Path, tmp_path: Path) -> None:
    """FSDP (fully_shard) runs on gloo in this torch: the same bounds, the full state gathered to rank 0."""
    out = tmp_path / "fsdp"
    done = torchrun(["train", *ACCEPT, "--set", "trainer.distributed=fsdp", "--out", str(out)])
    assert done.returncode == 0, done.stderr[-3000:]
    assert_equivalent(reference, out)
    assert json.loads((out / "results.json").read_text())["distributed"] == "fsdp"


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_uneven_last_batch_matches_one_process(mode: str, tmp_path: Path) -> None:
    """271 training images at batch 32: the last batch (15) splits 8 / 7, weighted to the single-process mean."""
    args = ["train", *ACCEPT, "--set", "data.limit=301", "--set", f"trainer.distributed={mode}"]
    one, many = tmp_path / "one", tmp_path / "many"
    done = single([*args, "--out", str(one)])
    assert done.returncode == 0, done.stderr[-2000:]
    done = torchrun([*args, "--out", str(many)])
    assert done.returncode == 0, done.stderr[-3000:]
    assert_equivalent(one, many)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_resume_under_torchrun_is_exact(mode: str, tmp_path: Path) -> None:
    """Resuming from the epoch-1 checkpoint (``previous.safetensors``) under torchrun gives the same weights and
    records, bit for bit, as the uninterrupted run."""
    full = tmp_path / "full"
    done = torchrun(["train", *ACCEPT, "--set", f"trainer.distributed={mode}", "--out", str(full)])
    assert done.returncode == 0, done.stderr[-3000:]
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "checkpoints").mkdir()
    (cut / "config.yaml").write_bytes((full / "config.yaml").read_bytes())
    (cut / "checkpoints" / "last.safetensors").write_bytes((full / "checkpoints" / "previous.safetensors").read_bytes())
    # the whole log: a resume drops the records after its checkpoint's step before writing them again
    (cut / "metrics.jsonl").write_bytes((full / "metrics.jsonl").read_bytes())
    done = torchrun(["train", "--resume", str(cut)])
    assert done.returncode == 0, done.stderr[-3000:]
    assert epoch_losses(cut) == epoch_losses(full)
    a, b = load_weights(full / "model.safetensors"), load_weights(cut / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("recipe, pattern", [("dcgan-digits", "steps its own optimizers"),
                                             ("gcn-karate", "whole data set as one batch")])
def test_unsupported_family_under_torchrun_is_one_line(recipe: str, pattern: str, tmp_path: Path) -> None:
    """GANs (two optimizers) and full-batch node classification: every rank refuses alike, rank 0 says it in one
    line and each worker exits 2 (torchrun itself then reports the failed workers and exits 1)."""
    done = torchrun(["train", recipe, "--epochs", "1", "--out", str(tmp_path / "r"), *QUIET])
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and pattern in errors[0], done.stderr[-3000:]
    assert "[rank0]" not in done.stderr and "[rank1]" not in done.stderr  # no worker traceback (torchrun's own follows)
    assert done.returncode != 0 and "exitcode  : 2" in done.stderr
