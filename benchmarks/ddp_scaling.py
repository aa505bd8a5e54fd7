"""Data-parallel scaling: training samples/s of one process against two (torchrun, gloo on loopback).

The job is ``lenet5-digits`` at global batch 32 (``data.batch_size`` stays the global batch under torchrun,
so both runs take the same optimizer steps on the same batches), one CPU thread per process
(``trainer.threads=1``, ``OMP_NUM_THREADS=1``): the single process uses one core, the two processes two.
Throughput is ``num_train x epochs / train_seconds`` from each run's ``results.json`` (the training loop's
time, validation after every epoch included). Beside the speed, each multi-process run is checked against
the single-process one: the largest absolute difference of the final weights (acceptance: <= 1e-4).

Rows: 1 process; 2 processes DDP; (full mode) 2 processes FSDP. On a machine whose cores other work shares,
the figures are smoke figures, not results.

usage: python benchmarks/ddp_scaling.py [--quick] [--epochs N]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import _common
from _common import print_table, write_result

SRC = Path(__file__).resolve().parents[1] / "src"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    env.update(PYTHONPATH=str(SRC) + os.pathsep + env.get("PYTHONPATH", ""), OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    return env


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(out: Path, epochs: int, nproc: int, mode: str = "ddp") -> dict:
    """One run of lenet5-digits; returns its results.json with the run directory."""
    args = ["train", "lenet5-digits", "--epochs", str(epochs), "--set", "data.batch_size=32",
            "--set", "trainer.restore_best=false", "--set", "trainer.threads=1", "--set", "trainer.progress=false",
            "--set", "trainer.tensorboard=false", "--set", f"trainer.distributed={mode}", "--no-report",
            "--out", str(out)]
    launcher = [sys.executable, "-m", "deepfoundry"] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-addr", "127.0.0.1",
        "--master-port", str(_port()), "-m", "deepfoundry"]
    done = subprocess.run([*launcher, *args], env=_env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"run failed ({nproc} processes, {mode}):\n{done.stderr[-3000:]}")
    results = json.loads((out / "results.json").read_text())
    info = json.loads((out / "model.json").read_text())["info"]
    results["samples_per_s"] = info["num_train"] * results["epochs_run"] / results["train_seconds"]
    results["path"] = out
    return results


def max_weight_diff(a: Path, b: Path) -> float:
    sys.path.insert(0, str(SRC))
    from deepfoundry.engine.checkpoint import load_weights

    wa, wb = load_weights(a / "model.safetensors"), load_weights(b / "model.safetensors")
    return max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 epochs, DDP only")
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args()
    epochs = args.epochs or (2 if args.quick else 10)
    modes = ["ddp"] if args.quick else ["ddp", "fsdp"]
    with tempfile.TemporaryDirectory() as tmp:
        one = train(Path(tmp) / "one", epochs, 1)
        rows = [{"processes": 1, "mode": "-", "samples_per_s": one["samples_per_s"],
                 "train_seconds": one["train_seconds"], "speed_up": 1.0, "max_weight_diff": 0.0}]
        for mode in modes:
            many = train(Path(tmp) / mode, epochs, 2, mode)
            rows.append({"processes": 2, "mode": mode, "samples_per_s": many["samples_per_s"],
                         "train_seconds": many["train_seconds"],
                         "speed_up": many["samples_per_s"] / one["samples_per_s"],
                         "max_weight_diff": max_weight_diff(one["path"], many["path"])})
    print_table(rows)
    summary = []
    for row in rows[1:]:
        summary.append({"metric": f"training samples/s, 2 processes ({row['mode'].upper()}, gloo) vs 1 (speed-up x)",
                        "ours": row["samples_per_s"], "peer": rows[0]["samples_per_s"],
                        "peer_name": "deepfoundry, 1 process", "ratio": row["speed_up"], "target": None,
                        "met": None})
        summary.append({"metric": f"max |final weights, 2 processes ({row['mode'].upper()}) - 1 process|",
                        "ours": row["max_weight_diff"], "peer": None, "peer_name": None, "ratio": None,
                        "target": "<= 1e-4", "met": row["max_weight_diff"] <= 1e-4})
    if os.environ.get("DEEPFOUNDRY_BENCH_OUT"):  # where results go when the runner names a folder
        _common.RESULTS = Path(os.environ["DEEPFOUNDRY_BENCH_OUT"])
    path = write_result("ddp_scaling", {"quick": args.quick, "recipe": "lenet5-digits", "epochs": epochs,
                                        "global_batch": 32, "threads_per_process": 1, "rows": rows,
                                        "summary": summary})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
