"""Kill and resume: runs killed at seeded random moments, resumed, compared bit for bit with uninterrupted runs.

Two jobs, each first trained once uninterrupted (the reference):
- ``lenet``: lenet5-digits, 3 epochs, batch 32, dropout 0.3, a checkpoint every ``--every`` optimizer steps
  (odd trials write one every step, so many kills land inside a checkpoint write);
- ``dqn``: dqn-cartpole for 6,000 environment steps, a checkpoint every 500 steps (at episode ends).

Each SIGKILL trial starts ``deepfoundry train`` in a subprocess, waits for its first checkpoint, sleeps a
seeded random time within the run's expected length, sends SIGKILL, then runs ``deepfoundry train --resume``
and compares every tensor of ``model.safetensors`` with the reference. SIGTERM trials do the same with SIGTERM and also check the exit code (143) and the one
``stopped by SIGTERM ...`` line. A trial whose kill came after the run had finished counts as ``finished``
(no resume needed) and is redrawn (up to 10 times); a run that fails on its own counts as a failure.

usage: python benchmarks/kill_resume.py [--kills 20] [--terms 10] [--seed 0] [--quick]
"""
from __future__ import annotations

import argparse
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from _common import summary_row, print_table, write_result

from deepfoundry.engine.checkpoint import load_weights

QUIET = ["--set", "trainer.progress=false", "--set", "trainer.tensorboard=false", "--set", "trainer.report=false"]
JOBS = {
    "lenet": ["lenet5-digits", "--epochs", "3", "--batch-size", "32", "--set", "model.dropout=0.3"],
    "dqn": ["dqn-cartpole", "--set", "task.total_steps=6000", "--set", "task.checkpoint_every=500",
            "--set", "task.eval_every=0", "--set", "task.final_eval_episodes=3"],
}


def command(job: str, out: Path, every: int | None) -> list[str]:
    cmd = [sys.executable, "-m", "deepfoundry", "train", *JOBS[job], "--out", str(out), *QUIET]
    if job == "lenet":
        cmd += ["--set", f"trainer.checkpoint_every_steps={every}"]
    return cmd


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = load_weights(a / "model.safetensors"), load_weights(b / "model.safetensors")
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def trial(job: str, sig: signal.Signals, rng: random.Random, ref: Path, work: Path, length: float,
          every: int) -> dict:
    out = work / f"{job}-{sig.name}-{rng.randrange(10**9)}"
    ckpt = out / "checkpoints" / "last.safetensors"
    proc = subprocess.Popen(command(job, out, every), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    delay = rng.uniform(0.0, length)
    time.sleep(delay)
    if proc.poll() is not None:
        _, err = proc.communicate()
        if proc.returncode != 0:  # not a late signal: the run itself failed
            return {"job": job, "signal": sig.name, "delay_s": round(delay, 2), "exit": proc.returncode,
                    "outcome": "failed", "ok": False, "error": err.strip().splitlines()[-1:]}
        return {"job": job, "signal": sig.name, "delay_s": round(delay, 2), "outcome": "finished"}
    proc.send_signal(sig)
    _, err = proc.communicate()
    code = proc.returncode
    stopped_line = next((line for line in err.splitlines() if line.startswith("stopped by")), "")
    if (out / "model.json").exists():  # the signal came after the final write
        return {"job": job, "signal": sig.name, "delay_s": round(delay, 2), "outcome": "finished"}
    resumed = subprocess.run([sys.executable, "-m", "deepfoundry", "train", "--resume", str(out)],
                             capture_output=True, text=True)
    exact = resumed.returncode == 0 and same_weights(ref, out)
    row = {"job": job, "signal": sig.name, "delay_s": round(delay, 2), "exit": code,
           "resume_exit": resumed.returncode, "bit_identical": exact, "outcome": "resumed"}
    if sig is signal.SIGTERM:
        row["message"] = stopped_line[:90] or (err.strip().splitlines() or [""])[-1][:90]
        row["ok"] = exact and code == 143 and stopped_line.startswith("stopped by SIGTERM")
    else:
        row["ok"] = exact and code == -signal.SIGKILL
    if resumed.returncode != 0:
        row["resume_error"] = resumed.stderr.strip().splitlines()[-1:] if resumed.stderr else []
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--terms", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="4 kills and 2 terms")
    args = parser.parse_args()
    if args.quick:
        args.kills, args.terms = 4, 2
    rng = random.Random(args.seed)
    rows, lengths = [], {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        refs = {}
        for job in JOBS:  # the uninterrupted references; the kill window: first checkpoint to the saved model
            refs[job] = work / f"{job}-reference"
            proc = subprocess.Popen(command(job, refs[job], 7), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            ckpt = refs[job] / "checkpoints" / "last.safetensors"
            while not ckpt.exists() and proc.poll() is None:
                time.sleep(0.01)
            t = time.perf_counter()
            while not (refs[job] / "model.json").exists() and proc.poll() is None:  # the end of its training
                time.sleep(0.01)
            lengths[job] = round(time.perf_counter() - t, 2)
            if proc.wait() != 0:
                raise SystemExit(f"the reference run of {job} failed")
        for n, sig in enumerate([signal.SIGKILL] * args.kills + [signal.SIGTERM] * args.terms):
            job = "dqn" if n % 4 == 3 else "lenet"  # one trial in four on the DQN loop
            every = 1 if n % 2 else 7               # every step: many kills land inside a checkpoint write
            for _ in range(10):  # redraw a moment that came after the run had finished
                # the window: the reference's time from its first checkpoint to its model.json (training and
                # the final evaluation; a kill after the save finds a finished run and is drawn again)
                row = trial(job, sig, rng, refs[job], work, max(0.2, lengths[job]), every)
                if row["outcome"] != "finished":
                    break
            rows.append(row)
            print(row, flush=True)
    kills = [r for r in rows if r["signal"] == "SIGKILL" and r["outcome"] == "resumed"]
    terms = [r for r in rows if r["signal"] == "SIGTERM" and r["outcome"] == "resumed"]
    summary = [{"signal": "SIGKILL", "trials": len(kills), "bit_identical": sum(r["bit_identical"] for r in kills),
                "ok": sum(r["ok"] for r in kills)},
               {"signal": "SIGTERM", "trials": len(terms), "bit_identical": sum(r["bit_identical"] for r in terms),
                "ok (exit 143 + message + exact)": sum(r["ok"] for r in terms)}]
    for s in summary:
        print_table([s])
    headline = [summary_row(f"SIGKILL trials resumed bit-identical (of {len(kills)})",
                            summary[0]["bit_identical"], target=f"all {len(kills)}",
                            met=bool(kills) and summary[0]["bit_identical"] == len(kills)),
                summary_row(f"SIGTERM trials: exit 143, message and bit-identical resume (of {len(terms)})",
                            summary[1]["ok (exit 143 + message + exact)"], target=f"all {len(terms)}",
                            met=bool(terms) and summary[1]["ok (exit 143 + message + exact)"] == len(terms))]
    write_result("kill_resume",
                 {"rows": rows, "signals": summary, "seconds": round(time.perf_counter() - started, 1),
                  "seed": args.seed, "lengths_s": lengths}, quick=args.quick, summary=headline)


if __name__ == "__main__":
    main()
