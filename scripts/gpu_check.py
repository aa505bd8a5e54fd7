"""GPU check: every family's recipe on CUDA in fp32, bf16, fp16 (autocast + GradScaler) and with torch.compile,
DDP on one GPU through torchrun, and the trainer-overhead and MFU benchmarks on the GPU, within a hard time budget
(8 minutes by default). Writes ``benchmarks/results/gpu.json``: per check its status (pass, fail, timeout, skip),
seconds, steps and what went wrong.

usage: scripts/gpu_check.sh                      # on a machine with a CUDA GPU
       python scripts/gpu_check.py --device cpu --steps 2 --families mlp-wine --out /tmp/gpu.json   # CPU smoke
       python scripts/gpu_check.py --dry-run     # print the matrix, run nothing

How it runs: one worker process trains the matrix in-process (``deepfoundry.train`` with a callback that ends
training at the first epoch end past ``--steps`` optimizer steps), mode by mode (fp32 for every family first,
then bf16, fp16, compile), printing one JSON line per check; the parent kills it when its share of the budget
is spent and records the check in flight as ``timeout`` and the rest as ``skip``. The torchrun and benchmark
checks run after it, each with its own timeout, in the time reserved for them.

A check passes when training ends with a finite training loss and the final evaluation ran. On the CPU,
fp16 needs CUDA's GradScaler and is skipped; ``compile`` runs only when asked for (``--modes``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "gpu.json"
MODES = {"fp32": {"trainer.precision": "32"}, "bf16": {"trainer.precision": "bf16"},
         "fp16": {"trainer.precision": "fp16"}, "compile": {"trainer.precision": "32", "trainer.compile": True}}
# one recipe per family (task and input kind); the shared data set a recipe needs, if any
FAMILIES: dict[str, str | None] = {
    "lenet5-digits": None,            # image classification (CNN)
    "mlp-wine": None,                 # table classification (MLP)
    "mlp-diabetes": None,             # regression
    "mlp-adult": "adult",             # raw tabular rows (preprocessing pipeline)
    "gru-sentiment": None,            # text classification (RNN)
    "transformer-sentiment": None,    # text classification (Transformer encoder)
    "transformer-shakespeare": "tinyshakespeare",  # language model (decoder)
    "adding-lstm": None,              # sequence regression
    "lstm-sunspots": None,            # time-series forecasting
    "seq2seq-dates": None,            # translation (GRU seq2seq with attention)
    "transformer-multi30k": "multi30k-en-de",      # translation (Transformer)
    "gcn-karate": None,               # node classification (GNN)
    "gin-graphs": None,               # graph classification
    "dcgan-digits": None,             # GAN
    "vae-digits": None,               # VAE
}
CPU_FAMILIES = ["mlp-wine", "lenet5-digits"]
NOT_HERE = {"dqn-cartpole": "DQN trains on the CPU by design (rl/dqn.py: small MLP, environment-bound)"}
DDP_RECIPE = "lenet5-digits"
BENCHMARKS = ("trainer_overhead", "mfu")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def datasets_dir() -> Path:
    env = os.environ.get("DEEPFOUNDRY_DATASETS")
    return Path(env).expanduser() if env else ROOT.parent / "shared" / "datasets"


def matrix(families: list[str], modes: list[str], device: str) -> list[dict[str, Any]]:
    """Every (family, mode) check in run order: mode by mode, so the cheap modes all run before compile."""
    checks = []
    for mode in modes:
        for family in families:
            check = {"name": f"{family}/{mode}", "kind": "recipe", "recipe": family, "mode": mode}
            need = FAMILIES.get(family)
            if mode == "fp16" and device == "cpu":
                check["skip"] = "fp16 autocast with GradScaler needs CUDA"
            elif need is not None and not (datasets_dir() / need).exists():
                check["skip"] = f"shared data set {need!r} not found in {datasets_dir()} (set DEEPFOUNDRY_DATASETS)"
            checks.append(check)
    return checks


# ---------------------------------------------------------------------------------------------- the worker
def run_recipe(check: dict[str, Any], device: str, steps: int, work: Path) -> dict[str, Any]:
    """Train one recipe in one mode until ``steps`` optimizer steps (at an epoch end); pass/fail with numbers."""
    import torch

    import deepfoundry
    from deepfoundry.engine.callbacks import Callback

    class StopAfterSteps(Callback):
        """Ends training at the first epoch end with at least ``steps`` optimizer steps taken."""

        def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
            if trainer.global_step >= steps:
                trainer.should_stop = True
                trainer.stop_reason = f"gpu check: {trainer.global_step} steps"

    overrides: dict[str, Any] = {"trainer.device": device, "trainer.epochs": 100_000, "trainer.progress": False,
                                 "trainer.tensorboard": False, "trainer.report": False, **MODES[check["mode"]]}
    need = FAMILIES.get(check["recipe"])
    if need is not None:
        overrides["data.root"] = str(datasets_dir() / need)
    started = time.perf_counter()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    try:
        run = deepfoundry.train(check["recipe"], overrides=overrides, out=work / check["name"].replace("/", "-"),
                                callbacks=[StopAfterSteps()])
    except BaseException as exc:  # noqa: BLE001 (every failure is a finding, recorded with its reason)
        if isinstance(exc, KeyboardInterrupt):
            raise
        message = " ".join(str(exc).split())[:400]
        return {"status": "fail", "seconds": round(time.perf_counter() - started, 2),
                "detail": f"{type(exc).__name__}: {message}"}
    seconds = time.perf_counter() - started
    epochs = [r for r in map(json.loads, run.path.joinpath("metrics.jsonl").read_text().splitlines())
              if r.get("kind") == "epoch"]
    loss = epochs[-1]["train_loss"] if epochs else float("nan")
    results = json.loads(run.path.joinpath("results.json").read_text()) if run.path.joinpath("results.json").is_file() \
        else {}
    out = {"seconds": round(seconds, 2), "steps": epochs[-1]["step"] if epochs else 0, "train_loss": loss,
           "test": {k: v for k, v in (results.get("test") or {}).items() if isinstance(v, (int, float))},
           "device": results.get("device")}
    if device == "cuda":
        out["peak_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    ok = epochs and isinstance(loss, (int, float)) and math.isfinite(loss) and "test" in results
    out["status"] = "pass" if ok else "fail"
    if not ok:
        out["detail"] = f"training loss {loss} after {out['steps']} steps" if epochs else "no epoch was logged"
    return out


def worker(args: argparse.Namespace) -> int:
    """Run the recipe checks in this process, one JSON line per check on stdout (training output: stderr)."""
    import torch

    torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))
    checks = matrix(args.families, args.modes, args.device)
    stdout = sys.stdout
    sys.stdout = sys.stderr  # anything deepfoundry prints stays off the result lines
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for check in checks:
            if "skip" in check:
                result = {"status": "skip", "detail": check.pop("skip")}
            else:
                print(f"start {check['name']}", file=stdout, flush=True)
                result = run_recipe(check, args.device, args.steps, Path(tmp))
            print(json.dumps({**check, **result}), file=stdout, flush=True)
    return 0


# ---------------------------------------------------------------------------------------------- the parent
def run_matrix(args: argparse.Namespace, budget: float, log: Path) -> list[dict[str, Any]]:
    checks = matrix(args.families, args.modes, args.device)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--device", args.device, "--steps",
           str(args.steps), "--families", ",".join(args.families), "--modes", ",".join(args.modes)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    with open(log, "w", encoding="utf-8") as err:  # its own session: a timeout kills compile workers too
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=max(budget, 1))
            timed_out = False
        except subprocess.TimeoutExpired as exc:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            out, timed_out = exc.stdout or b"", True
        text, rc = out.decode(errors="replace"), proc.returncode
    done: dict[str, dict[str, Any]] = {}
    started: str | None = None
    for line in text.splitlines():
        if line.startswith("start "):
            started = line[6:]
        elif line.startswith("{"):
            row = json.loads(line)
            done[row["name"]] = row
            started = None
    results = []
    for check in checks:
        check.pop("skip", None)
        if check["name"] in done:
            results.append(done[check["name"]])
        elif check["name"] == started and timed_out:
            results.append({**check, "status": "timeout", "detail": f"the time budget ({budget:.0f} s for the "
                                                                     f"recipe checks) ran out during this check"})
        elif check["name"] == started:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            results.append({**check, "status": "fail", "detail": f"the worker died (exit {rc}): {' | '.join(tail)}"})
        else:
            results.append({**check, "status": "skip", "detail": "not reached: the time budget for the recipe "
                                                                 "checks ran out" if timed_out else
                                                                 f"not reached: the worker exited ({rc})"})
    return results


def run_command(name: str, kind: str, cmd: list[str], timeout: float, env: dict[str, str] | None = None,
                cwd: Path = ROOT) -> dict[str, Any]:
    """One command as a check: pass on exit 0, with its last stderr line on failure."""
    if timeout < 5:
        return {"name": name, "kind": kind, "status": "skip", "detail": "no time left in the budget"}
    started = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           **(env or {})}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    except subprocess.TimeoutExpired:
        return {"name": name, "kind": kind, "status": "timeout", "seconds": round(time.perf_counter() - started, 2),
                "detail": f"over its {timeout:.0f} s", "command": " ".join(cmd)}
    row = {"name": name, "kind": kind, "status": "pass" if proc.returncode == 0 else "fail",
           "seconds": round(time.perf_counter() - started, 2), "command": " ".join(cmd)}
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if ln.strip()]
        row["detail"] = f"exit {proc.returncode}: {lines[-1][:400] if lines else '(no output)'}"
    return row


def run_ddp(args: argparse.Namespace, timeout: float, work: Path) -> dict[str, Any]:
    """``torchrun --nproc-per-node 1`` training a recipe on one device; records what the run says it was."""
    out = work / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1", "-m", "deepfoundry",
           "train", DDP_RECIPE, "--device", args.device, "--epochs", "2", "--out", str(out), "--json",
           "--set", "trainer.progress=false", "--set", "trainer.report=false", "--set", "trainer.tensorboard=false"]
    row = run_command("ddp-1gpu/torchrun", "ddp", cmd, timeout)
    results = out / "results.json"
    if results.is_file():
        saved = json.loads(results.read_text())
        row["device"] = saved.get("device")
        row["distributed"] = saved.get("distributed", saved.get("world_size"))  # present once the dist work lands
    return row


def run_benchmarks(args: argparse.Namespace, timeout: float, work: Path) -> list[dict[str, Any]]:
    rows = []
    each = timeout / len(BENCHMARKS)
    for name in BENCHMARKS:
        script = ROOT / "benchmarks" / f"{name}.py"
        label = f"bench/{name}"
        if not script.is_file():
            rows.append({"name": label, "kind": "benchmark", "status": "skip", "detail": f"{script.name} is missing"})
            continue
        help_text = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True,
                                   cwd=script.parent, timeout=60,
                                   env={**os.environ, "PYTHONPATH": str(ROOT / "src")}).stdout
        if "--device" not in help_text:
            rows.append({"name": label, "kind": "benchmark", "status": "skip",
                         "detail": f"{script.name} has no --device option: it cannot run on the GPU"})
            continue
        cmd = [sys.executable, str(script), "--device", args.device] + (["--quick"] if "--quick" in help_text else [])
        bench_out = work / "bench"
        row = run_command(label, "benchmark", cmd, each, env={"DEEPFOUNDRY_BENCH_OUT": str(bench_out)},
                          cwd=script.parent)
        result = bench_out / f"{name}.json"
        if result.is_file():
            row["summary"] = json.loads(result.read_text()).get("summary")
        rows.append(row)
    return rows


def gpu_info(device: str) -> dict[str, Any]:
    import torch

    info = {"torch": torch.__version__, "device": device, "cpu_count": os.cpu_count()}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                    capability=f"{props.major}.{props.minor}", memory_gb=round(props.total_memory / 2**30, 1),
                    bf16=torch.cuda.is_bf16_supported())
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per recipe check (at least)")
    parser.add_argument("--budget", type=float, default=480, help="hard limit for everything, seconds")
    parser.add_argument("--families", default=None, help="comma-separated recipes (default: every family's; on "
                                                          "the CPU: " + ",".join(CPU_FAMILIES) + ")")
    parser.add_argument("--modes", default=None, help="comma-separated of fp32,bf16,fp16,compile (default: all; "
                                                      "on the CPU fp32,bf16,fp16)")
    parser.add_argument("--skip-ddp", action="store_true")
    parser.add_argument("--skip-bench", action="store_true")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--dry-run", action="store_true", help="print the checks, run nothing")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.families = args.families.split(",") if args.families else \
        (list(FAMILIES) if args.device == "cuda" else CPU_FAMILIES)
    args.modes = args.modes.split(",") if args.modes else \
        (list(MODES) if args.device == "cuda" else ["fp32", "bf16", "fp16"])
    bad = [m for m in args.modes if m not in MODES] + [f for f in args.families if f not in FAMILIES]
    if bad:
        print(f"error: unknown mode or family {bad[0]!r}; modes: {', '.join(MODES)}; families: "
              f"{', '.join(FAMILIES)}", file=sys.stderr)
        return 2
    if args.worker:
        return worker(args)
    if args.dry_run:
        for check in matrix(args.families, args.modes, args.device):
            print(check["name"] + (f"  (skip: {check['skip']})" if "skip" in check else ""))
        print("ddp-1gpu/torchrun" if not args.skip_ddp else "", *(f"bench/{b}" for b in BENCHMARKS), sep="\n")
        return 0
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA GPU here (torch.cuda.is_available() is False): run scripts/gpu_check.sh on a machine "
              "with a GPU, or add --device cpu for the CPU smoke version", file=sys.stderr)
        return 2
    started = time.perf_counter()
    reserve = (0 if args.skip_ddp else 90) + (0 if args.skip_bench else 120)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        checks = run_matrix(args, args.budget - reserve, work / "worker.log")
        left = lambda: args.budget - (time.perf_counter() - started)  # noqa: E731
        if not args.skip_ddp:
            checks.append(run_ddp(args, min(90, left() - (0 if args.skip_bench else 120)), work))
        if not args.skip_bench:
            checks += run_benchmarks(args, left() - 5, work)
    seconds = time.perf_counter() - started
    counts = {s: sum(c["status"] == s for c in checks) for s in ("pass", "fail", "timeout", "skip")}
    ran = counts["pass"] + counts["fail"] + counts["timeout"]
    result = {"quick": args.steps < 100, "date": now(), **gpu_info(args.device), "steps": args.steps,
              "budget_s": args.budget, "seconds": round(seconds, 1), "counts": counts,
              "failed": [c["name"] for c in checks if c["status"] in ("fail", "timeout")],
              "not_run_on_gpu": NOT_HERE,
              "summary": [{"metric": "checks passed (of those run)", "ours": counts["pass"], "peer": None,
                           "peer_name": None, "ratio": None, "target": f"{ran} of {ran}",
                           "met": counts["pass"] == ran}],
              "checks": checks}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp_out, args.out)
    for c in checks:
        extra = c.get("detail", "")
        print(f"{c['status']:8} {c['name']:38} {c.get('seconds', ''):>8}  {extra}"[:200])
    print(f"{counts['pass']} passed, {counts['fail']} failed, {counts['timeout']} timed out, {counts['skip']} skipped "
          f"in {seconds:.0f} s -> {args.out}")
    return 0 if counts["fail"] == counts["timeout"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
