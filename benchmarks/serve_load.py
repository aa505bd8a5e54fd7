"""Serving under load: ``deepfoundry serve`` (micro-batching) beside a plain FastAPI endpoint doing one forward
per request and beside LitServe with its batching on; same model, same JSON, same load.

Each server runs in its own process on loopback; the load generator (this process, aiohttp: httpx's async
client costs enough CPU to cap the load on a small machine) keeps ``--clients`` requests in flight (64)
until ``--requests`` (5,000) are answered or ``--seconds`` (120) pass, each request one test example as
``{"inputs": [example]}``. Reported per server: throughput (answered requests per second of wall
time), p50/p99 latency, failed requests (non-200 or transport errors), and for ``serve`` the mean batch it
formed (from its /metrics). Rows: a ``vgg11-bn-cifar10`` run (1 epoch, ``data.limit=2000``, CIFAR-10 from
``../shared/datasets/cifar10-jpeg``) and ``lenet5-digits``.

    python benchmarks/serve_load.py                        # trains both runs into runs/serve_load once
    python benchmarks/serve_load.py --requests 500 --seconds 20 --models lenet5-digits   # a quick look
    python benchmarks/serve_load.py --quick                # the same quick look (smoke figures)

The servers and the load share the machine's cores: on a small or shared machine the figures are smoke
figures; compare servers within one run of this script.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import summary_row, SHARED, print_table, write_result  # noqa: E402

HERE = Path(__file__).resolve().parent
SERVERS = ("serve", "plain-fastapi", "litserve")
MODELS = {
    "vgg11-bn-cifar10": ["trainer.epochs=1", "data.limit=2000"],
    "lenet5-digits": ["trainer.epochs=3"],
}


# ---------------------------------------------------------------------------------------------- the runs
def ensure_run(name: str, runs: Path) -> Path:
    """The benchmark's run of recipe ``name`` (trained once into ``runs/name``)."""
    out = runs / name
    if (out / "model.json").is_file():
        return out
    import deepfoundry

    overrides = ["trainer.progress=false", "trainer.tensorboard=false", "trainer.report=false", *MODELS[name]]
    if name.startswith("vgg"):
        overrides.append(f"data.root={SHARED / 'datasets' / 'cifar10-jpeg'}")
    deepfoundry.train(name, overrides=overrides, out=out, overwrite=True)
    return out


def test_examples(run_path: Path, n: int = 512) -> list[Any]:
    """Raw test inputs in [0, 1] as JSON-ready nested lists (the loaders hold them standardised)."""
    import deepfoundry

    run = deepfoundry.load_run(run_path)
    pre = run.info["preprocess"]
    x, _ = next(iter(run.data().test.epoch_batches(0)))
    shape = (1, -1, 1, 1)
    mean, std = np.asarray(pre["mean"]).reshape(shape), np.asarray(pre["std"]).reshape(shape)
    raw = np.clip(x.numpy() * std + mean, 0, 1)
    while len(raw) < n:
        raw = np.concatenate([raw, raw])
    return np.round(raw[:n], 4).tolist()


# ---------------------------------------------------------------------------------------------- the servers
def plain_fastapi(run_path: str, port: int) -> None:
    """The baseline: FastAPI, one ``encode -> forward -> decode`` per request (FastAPI's thread pool)."""
    import uvicorn
    from fastapi import FastAPI

    import deepfoundry

    run = deepfoundry.load_run(run_path)
    task = run.task.eval()
    app = FastAPI()

    @app.post("/v1/predict")
    def predict(body: dict) -> dict:
        return {"predictions": task.predict_rows(np.asarray(body["inputs"], dtype=np.float32))}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


try:  # LitServe pickles its API into a spawned worker: the class must live at module level
    import litserve as ls

    class LitTaskAPI(ls.LitAPI):
        """The same task contract inside LitServe: decode one example, stack a batch, one forward."""

        def __init__(self, run_path: str, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.run_path = run_path

        def setup(self, device: str) -> None:
            import deepfoundry

            self.task = deepfoundry.load_run(self.run_path).task.eval()

        def decode_request(self, request: dict) -> np.ndarray:
            return np.asarray(request["inputs"][0], dtype=np.float32)

        def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
            return np.stack(inputs)

        def predict(self, x: np.ndarray) -> list[dict]:
            import torch

            with torch.no_grad():
                return self.task.decode_outputs(self.task.predict(self.task.encode_inputs(x)))

        def unbatch(self, output: list[dict]) -> list[dict]:
            return output

        def encode_response(self, output: dict) -> dict:
            return {"predictions": [output]}
except ImportError:  # the bench extra is missing: the litserve row is skipped
    ls = None


def litserve_server(run_path: str, port: int, max_batch: int, wait_ms: float) -> None:
    """LitServe with its batching on (``max_batch_size``, ``batch_timeout``), the same task contract inside."""
    api = LitTaskAPI(run_path, max_batch_size=max_batch, batch_timeout=wait_ms / 1000.0, api_path="/v1/predict")
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=60)
    server.run(host="127.0.0.1", port=port, generate_client_file=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(kind: str, run_path: Path, port: int, max_batch: int, wait_ms: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(HERE.parent / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if kind == "serve":
        cmd = [sys.executable, "-m", "deepfoundry", "serve", str(run_path), "--port", str(port),
               "--max-batch", str(max_batch), "--max-wait-ms", str(wait_ms)]
    else:
        cmd = [sys.executable, __file__, "--server", kind, "--run", str(run_path), "--port", str(port),
               "--max-batch", str(max_batch), "--max-wait-ms", str(wait_ms)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# ---------------------------------------------------------------------------------------------- the load
async def wait_ready(url: str, example: Any, proc: subprocess.Popen, timeout: float = 300) -> None:
    import aiohttp

    deadline = time.time() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
            try:
                async with session.post(url, json={"inputs": [example]}) as r:
                    if r.status == 200:
                        return
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass
            await asyncio.sleep(0.25)
    raise RuntimeError(f"server at {url} not ready after {timeout} s")


async def load(url: str, examples: list[Any], requests: int, seconds: float, clients: int) -> dict[str, Any]:
    """``clients`` loops (aiohttp, one keep-alive connection each), each sending one request after the other,
    until ``requests`` are sent or ``seconds`` pass. The generator's own CPU time is reported too: on a small
    machine it competes with the server for the same cores."""
    import aiohttp

    bodies = [json.dumps({"inputs": [e]}).encode() for e in examples]
    latencies: list[float] = []
    failures = 0
    reasons: dict[str, int] = {}
    sent = 0
    deadline = time.perf_counter() + seconds
    headers = {"content-type": "application/json"}

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal sent, failures
        while sent < requests and time.perf_counter() < deadline:
            body = bodies[sent % len(bodies)]
            sent += 1
            t0 = time.perf_counter()
            reason = None
            try:
                async with session.post(url, data=body, headers=headers) as r:
                    answer = await r.read()
                    if r.status != 200:
                        reason = f"HTTP {r.status}"
                    elif len(json.loads(answer)["predictions"]) != 1:
                        reason = "wrong answer"
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError) as exc:
                reason = type(exc).__name__
            if reason is None:
                latencies.append(time.perf_counter() - t0)
            else:
                failures += 1
                reasons[reason] = reasons.get(reason, 0) + 1

    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=120)  # a request slower than the run's bound fails
    cpu = time.process_time()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        await asyncio.gather(*[client(session) for _ in range(clients)])
        wall = time.perf_counter() - started
    lat = np.array(latencies) * 1000
    return {"requests": sent, "answered": len(latencies), "failures": failures, "failure_reasons": reasons,
            "seconds": wall, "client_cpu_s": time.process_time() - cpu,
            "throughput_rps": len(latencies) / wall,
            "p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
            "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan")}


def mean_batch(base: str) -> float | None:
    import urllib.request

    try:
        with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
            text = r.read().decode()
    except OSError:
        return None
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("deepfoundry_batch_size_")}
    count = values.get("deepfoundry_batch_size_count", 0)
    return values.get("deepfoundry_batch_size_sum", 0) / count if count else None


def bench(model: str, run_path: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    examples = test_examples(run_path)
    rows = []
    for kind in args.servers:
        if kind == "litserve" and ls is None:
            print("litserve is not installed (pip install 'deepfoundry[bench]'): its row is skipped")
            continue
        port = free_port()
        proc = start(kind, run_path, port, args.max_batch, args.max_wait_ms)
        base, url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/v1/predict"
        try:
            asyncio.run(wait_ready(url, examples[0], proc))
            asyncio.run(load(url, examples, min(200, args.requests), 30, args.clients))  # warm-up, not counted
            result = asyncio.run(load(url, examples, args.requests, args.seconds, args.clients))
            batch = mean_batch(base) if kind == "serve" else None
        finally:
            stop(proc)
        row = {"model": model, "server": kind, **result, "mean_batch": batch}
        rows.append(row)
        print(f"{model:18s} {kind:14s} {result['throughput_rps']:8.1f} req/s  p50 {result['p50_ms']:7.1f} ms  "
              f"p99 {result['p99_ms']:7.1f} ms  failures {result['failures']}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", choices=["plain-fastapi", "litserve"], help=argparse.SUPPRESS)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--servers", nargs="+", default=list(SERVERS), choices=list(SERVERS))
    parser.add_argument("--requests", type=int, default=5000, help="requests per server (default 5000)")
    parser.add_argument("--seconds", type=float, default=120, help="time limit per server (default 120)")
    parser.add_argument("--clients", type=int, default=64, help="requests in flight (default 64)")
    parser.add_argument("--max-batch", type=int, default=32, help="serve's --max-batch and LitServe's max_batch_size")
    parser.add_argument("--max-wait-ms", type=float, default=5, help="serve's --max-wait-ms, LitServe's batch_timeout")
    parser.add_argument("--runs", type=Path, default=HERE.parent / "runs" / "serve_load",
                        help="where the benchmark's runs are trained (once)")
    parser.add_argument("--name", default="serve_load", help="result file benchmarks/results/NAME.json")
    parser.add_argument("--quick", action="store_true", help="lenet5-digits only, 500 requests, 20 s per server")
    args = parser.parse_args()
    if args.quick and not args.server:
        args.models, args.requests, args.seconds = ["lenet5-digits"], 500, 20
    if args.server == "plain-fastapi":
        return plain_fastapi(args.run, args.port)
    if args.server == "litserve":
        return litserve_server(args.run, args.port, args.max_batch, args.max_wait_ms)
    rows = []
    for model in args.models:
        rows += bench(model, ensure_run(model, args.runs), args)
    table = [{k: r[k] for k in ("model", "server", "throughput_rps", "p50_ms", "p99_ms", "failures", "answered",
                                "mean_batch", "client_cpu_s")} for r in rows]
    print()
    print_table(table)
    settings = {k: getattr(args, k) for k in ("requests", "seconds", "clients", "max_batch", "max_wait_ms")}
    rps = {(r["model"], r["server"]): r["throughput_rps"] for r in rows}
    summary = [summary_row(f"requests/s, {model}: deepfoundry serve vs {peer}", rps[model, "serve"], rps[model, peer],
                           peer, "ratio > 1", rps[model, "serve"] > rps[model, peer])
               for model in args.models for peer in args.servers
               if peer != "serve" and (model, "serve") in rps and (model, peer) in rps]
    path = write_result(args.name, {"benchmark": "serve_load", "settings": settings, "rows": rows},
                        quick=args.quick, summary=summary)
    print(f"\nresult: {path}")


if __name__ == "__main__":
    main()
