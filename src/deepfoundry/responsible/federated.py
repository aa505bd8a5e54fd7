"""Federated learning with Flower: a server process and one process per client, talking gRPC.

Each round t the server sends the global weights w_t to every client k; client k trains them on its own
partition D_k of the training split with the project's Trainer for ``local_epochs`` epochs and returns
w_{t+1}^k; the server averages them weighted by partition size (FedAvg, McMahan et al. 2017):

    w_{t+1} = sum_k (|D_k| / sum_j |D_j|) * w_{t+1}^k

FedProx (Li et al. 2020) adds ``mu/2 * ||w - w_t||^2`` to each client's loss; its gradient
``mu * (w - w_t)`` is added to every local step's gradient (:class:`ProximalTerm`). After each round the
server evaluates w_{t+1} on the validation split and appends ``{"kind": "round", ...}`` to
``metrics.jsonl``; at the end it writes a normal run directory (``model.safetensors``, ``results.json``)
that ``evaluate``, ``report`` and ``export`` read like a trained run's.

Partitions: ``iid`` splits a seeded permutation into equal parts; ``dirichlet:ALPHA`` draws, per class,
the share of each client from Dir(ALPHA * 1_K) (small ALPHA: each client sees few classes).
Client-side DP-SGD (``privacy.*``): each client's accountant composes over all its rounds, calibrated
to spend ``privacy.epsilon`` by the last one; the run reports the largest epsilon among the clients.

Processes: the server (``flwr.server.start_server``) and clients (``flwr.client.start_client``) of
flwr 1.32's gRPC transport; ``federate`` starts the clients as subprocesses on 127.0.0.1 and runs the
server itself. ``--role server|client`` runs one side per machine (docs/privacy.md).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import RunConfig, dump_config
from ..engine.callbacks import Callback
from ..errors import DeepfoundryError

EXTRA = "pip install 'deepfoundry[responsible]'"
STRATEGIES = ("fedavg", "fedprox")


def _flwr() -> Any:
    try:
        import flwr
    except ImportError:
        raise DeepfoundryError(f"federated learning needs flwr; install it with {EXTRA}") from None
    from flwr.common.logger import FLOWER_LOGGER

    FLOWER_LOGGER.setLevel(logging.ERROR)  # its banners and deprecation notes; our own lines say what happens
    return flwr


# ----------------------------------------------------------------------------------------- partitions
def parse_partition(text: str) -> tuple[str, float | None]:
    """``"iid"`` -> ``("iid", None)``; ``"dirichlet:0.5"`` -> ``("dirichlet", 0.5)``; anything else is an error."""
    if text == "iid":
        return "iid", None
    if text.startswith("dirichlet:"):
        raw = text.split(":", 1)[1]
        try:
            alpha = float(raw)
        except ValueError:
            raise DeepfoundryError(f"--partition dirichlet:ALPHA needs a number, received {raw!r}") from None
        if not np.isfinite(alpha) or alpha <= 0:
            raise DeepfoundryError(f"--partition dirichlet:ALPHA needs ALPHA > 0, received {raw}")
        return "dirichlet", alpha
    raise DeepfoundryError(f"--partition must be iid or dirichlet:ALPHA (e.g. dirichlet:0.5), received {text!r}")


def partition_indices(labels: np.ndarray, clients: int, partition: str, seed: int) -> list[np.ndarray]:
    """Indices of the training samples each client holds (disjoint, together all of them, none empty).

    >>> [len(p) for p in partition_indices(np.arange(10) % 2, 2, "iid", 0)]
    [5, 5]
    """
    n = len(labels)
    if clients < 1:
        raise DeepfoundryError(f"--clients must be at least 1, received {clients}")
    if clients > n:
        raise DeepfoundryError(f"--clients {clients} is more than the {n} training samples; each client needs one")
    kind, alpha = parse_partition(partition)
    rng = np.random.default_rng(seed)
    if kind == "iid":
        return [np.sort(part) for part in np.array_split(rng.permutation(n), clients)]
    labels = np.asarray(labels).reshape(n, -1)[:, 0] if np.asarray(labels).ndim > 1 else np.asarray(labels)
    for _ in range(100):  # redraw until no client is empty (rare unless ALPHA is tiny and clients many)
        parts: list[list[int]] = [[] for _ in range(clients)]
        for c in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == c))
            shares = rng.dirichlet(np.full(clients, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].extend(chunk.tolist())
        if min(len(p) for p in parts) > 0:
            return [np.sort(np.array(p, dtype=np.int64)) for p in parts]
    raise DeepfoundryError(f"dirichlet:{alpha} left a client without samples in 100 draws; use a larger ALPHA "
                           f"or fewer --clients")


# ----------------------------------------------------------------------------------------- weights
def get_weights(model: torch.nn.Module) -> list[np.ndarray]:
    """Every entry of the state dict (parameters and buffers), in order, as float32/int64 NumPy arrays."""
    return [v.detach().cpu().numpy() for v in model.state_dict().values()]


def set_weights(model: torch.nn.Module, arrays: list[np.ndarray]) -> None:
    """Load :func:`get_weights`' arrays back (averaged integer buffers are rounded to their dtype)."""
    state = model.state_dict()
    if len(arrays) != len(state):
        raise DeepfoundryError(f"received {len(arrays)} weight arrays for a model with {len(state)}; do the server "
                               f"and the clients run the same recipe and --set?")
    new = {k: torch.as_tensor(np.asarray(a)).reshape(v.shape).to(v.dtype) for (k, v), a in zip(state.items(), arrays)}
    model.load_state_dict(new)


class ProximalTerm(Callback):
    """FedProx: after each backward pass add ``mu * (w - w_global)``, the gradient of ``mu/2 ||w - w_global||^2``."""

    def __init__(self, model: torch.nn.Module, mu: float) -> None:
        self.mu = mu
        self.anchor = [p.detach().clone() for p in model.parameters()]
        self.params = list(model.parameters())

    def on_after_backward(self, trainer: Any) -> None:
        with torch.no_grad():
            for p, w0 in zip(self.params, self.anchor):
                if p.grad is not None:
                    p.grad.add_(p - w0, alpha=self.mu)


# ----------------------------------------------------------------------------------------- both sides
def _build(cfg: RunConfig) -> tuple[Any, Any, Any, dict[str, Any], Any]:
    """Data, model (DP layer replacements applied when privacy is on), task, model context, DP-SGD or None."""
    from ..data import build_data
    from ..data.core import model_context
    from ..engine.seeding import seed_everything
    from ..models import build_model
    from ..registry import DATASETS, MODELS, TASKS
    from ..tasks import build_task
    from .privacy import DPSGD, make_private_model

    for registry in (DATASETS, MODELS, TASKS):
        registry.load()
    if getattr(TASKS.get(cfg.task.name), "own_loop", None) is not None:
        raise DeepfoundryError(f"federate trains with the Trainer; task {cfg.task.name!r} runs its own loop")
    seed_everything(cfg.seed)
    data = build_data(cfg.data, seed=cfg.seed)
    if not hasattr(data.train, "x") or not hasattr(data.train, "use_poisson_sampling"):
        raise DeepfoundryError(f"federate needs a data set held in memory (ArrayLoader); {cfg.data.name!r} is not")
    context = model_context(data.info)
    model = build_model(cfg.model.name, cfg.model.builder_kwargs(), context)
    if cfg.privacy.enabled:
        model = make_private_model(model)
    task = build_task(cfg.task, model, data.info)
    if getattr(task, "manual_optimization", False):
        raise DeepfoundryError(f"federate cannot train {type(task).__name__}: it steps its own optimizers (GANs)")
    return data, model, task, context, DPSGD if cfg.privacy.enabled else None


def _client_trainer_config(cfg: RunConfig, local_epochs: int) -> Any:
    es = cfg.trainer.early_stopping.model_copy(update={"enabled": False})
    return cfg.trainer.model_copy(update={"epochs": local_epochs, "progress": False, "tensorboard": False,
                                          "restore_best": False, "early_stopping": es, "report": False,
                                          "threads": cfg.trainer.threads or 1})


def run_client(cfg: RunConfig, address: str, partition_id: int, clients: int, partition: str,
               rounds: int, local_epochs: int = 1) -> None:
    """One client: its partition of the training split, trained each round with the Trainer (``--role client``)."""
    flwr = _flwr()
    from ..data.core import ArrayLoader
    from ..engine.seeding import seed_everything
    from ..engine.trainer import Trainer

    data, model, task, _, dpsgd = _build(cfg)
    if not 0 <= partition_id < clients:
        raise DeepfoundryError(f"--partition-id must be in 0..{clients - 1}, received {partition_id}")
    ytr = data.train.y.numpy()
    index = torch.as_tensor(partition_indices(ytr, clients, partition, cfg.seed)[partition_id])
    x, y = data.train.x[index], data.train.y[index]
    optim = cfg.optim.model_copy(update={"scheduler": cfg.optim.scheduler.model_copy(update={"name": "none"})})
    privacy = dpsgd(cfg.privacy, planned_epochs=rounds * local_epochs) if dpsgd is not None else None

    class Client(flwr.client.NumPyClient):
        def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
            return get_weights(model)

        def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict]:
            set_weights(model, parameters)
            rnd = int(config.get("round", 1))
            seed_everything(cfg.seed + 7919 * (partition_id + 1) + rnd)
            train = ArrayLoader(x, y, cfg.data.batch_size, shuffle=True, seed=cfg.seed * 1009 + partition_id * 97 + rnd)
            train.batch_transform = getattr(data.train, "batch_transform", None)
            bundle = type(data)(train=train, val=type(data.val)(x[:0], y[:0], 1), test=data.test, info=data.info)
            mu = float(config.get("proximal_mu", 0.0))
            callbacks = [ProximalTerm(model, mu)] if mu > 0 else []
            trainer = Trainer(_client_trainer_config(cfg, int(config.get("local_epochs", local_epochs))), optim,
                              run_dir=None, callbacks=callbacks, privacy=privacy)
            history = trainer.fit(task, bundle)
            metrics: dict[str, Any] = {"train_loss": float(history[-1]["train_loss"]) if history else float("nan"),
                                       "partition_id": partition_id}
            if privacy is not None:
                metrics.update(privacy.spent())
            return get_weights(model), len(x), metrics

        def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[float, int, dict]:
            return 0.0, len(x), {}

    flwr.client.start_client(server_address=address, client=Client().to_client(), insecure=True,
                             max_wait_time=300.0)


def _aggregate_fit_metrics(results: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    """Clients' train losses weighted by their sample counts; the largest client epsilon (DP-SGD)."""
    total = sum(n for n, _ in results) or 1
    out: dict[str, Any] = {"train_loss": sum(n * float(m.get("train_loss", 0.0)) for n, m in results) / total}
    eps = [float(m["epsilon"]) for _, m in results if "epsilon" in m]
    if eps:
        out["epsilon"] = max(eps)
        out["delta"] = float(next(m["delta"] for _, m in results if "delta" in m))
    return out


def run_server(cfg: RunConfig, run_dir: str | Path, address: str, clients: int, rounds: int, partition: str,
               strategy: str = "fedavg", proximal_mu: float = 0.01, local_epochs: int = 1,
               console: Any = None, built: tuple[Any, ...] | None = None) -> dict[str, Any]:
    """The server (``--role server``): waits for ``clients`` clients at ``address``, runs ``rounds`` rounds,
    evaluates the global model on val after each and writes the run directory. Returns ``results.json``."""
    flwr = _flwr()
    from flwr.common import ndarrays_to_parameters
    from flwr.server.strategy import FedAvg, FedProx

    from ..engine.rundir import RunDirectory
    from ..engine.trainer import Trainer

    if strategy not in STRATEGIES:
        raise DeepfoundryError(f"--strategy must be one of {', '.join(STRATEGIES)}, received {strategy!r}")
    if rounds < 1 or local_epochs < 1:
        raise DeepfoundryError(f"--rounds and --local-epochs must be at least 1, received {rounds} and {local_epochs}")
    data, model, task, context, _ = built or _build(cfg)
    partition_indices(data.train.y.numpy(), clients, partition, cfg.seed)  # refuse a bad split before listening
    rundir = RunDirectory(run_dir)
    rundir.start(cfg)
    rundir.reset_metrics()
    evaluator = Trainer(cfg.trainer.model_copy(update={"progress": False, "compile": False}), run_dir=None)
    task.to(evaluator.device)
    started = time.perf_counter()
    last_fit: dict[str, Any] = {}
    say = console.print if console is not None else (lambda *a, **k: None)

    def record(line: dict[str, Any]) -> None:
        with rundir.metrics_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")

    def evaluate_fn(server_round: int, arrays: list[np.ndarray], config: dict[str, Any]) -> tuple[float, dict]:
        set_weights(model, arrays)
        task.to(evaluator.device)
        val = evaluator.evaluate(data.val, task) if data.val.num_samples else {}
        line: dict[str, Any] = {"kind": "round", "round": server_round, "step": server_round}
        if server_round > 0:
            line.update({k: v for k, v in last_fit.items()})
        line.update({f"val_{k}": v for k, v in val.items() if isinstance(v, (int, float))})
        line["elapsed"] = time.perf_counter() - started
        record(line)
        shown = "  ".join(f"{k} {v:.4f}" for k, v in line.items() if k in ("train_loss", "val_loss", "val_accuracy",
                                                                            "epsilon") and isinstance(v, float))
        say(f"round {server_round}/{rounds}  {shown}  {line['elapsed']:.1f}s", highlight=False)
        return float(val.get("loss", 0.0)), {k: v for k, v in val.items() if isinstance(v, (int, float))}

    def fit_metrics(results: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
        last_fit.clear()
        last_fit.update(_aggregate_fit_metrics(results))
        return dict(last_fit)

    common = dict(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=clients, min_evaluate_clients=0,
                  min_available_clients=clients, evaluate_fn=evaluate_fn, accept_failures=False,
                  on_fit_config_fn=lambda rnd: {"round": rnd, "local_epochs": local_epochs},
                  initial_parameters=ndarrays_to_parameters(get_weights(model)),
                  fit_metrics_aggregation_fn=fit_metrics)
    chosen = FedProx(proximal_mu=proximal_mu, **common) if strategy == "fedprox" else FedAvg(**common)
    say(f"federated server at {address}: {clients} clients, {rounds} rounds, {strategy}, partition {partition}",
        highlight=False)
    flwr.server.start_server(server_address=address, config=flwr.server.ServerConfig(num_rounds=rounds),
                             strategy=chosen)
    seconds = time.perf_counter() - started
    rounds_done = [r for r in _rounds(rundir.metrics_path) if r["round"] > 0]
    if len(rounds_done) < rounds:
        raise DeepfoundryError(f"the federation stopped after {len(rounds_done)} of {rounds} rounds (a client failed; "
                               f"see its log under {rundir.path / 'federated'})")
    model.cpu()
    task.to(evaluator.device)
    val = evaluator.evaluate(data.val, task) if data.val.num_samples else {}
    test = evaluator.evaluate(data.test, task) if data.test.num_samples else {}
    rundir.save_model(model, name=cfg.model.name, kwargs=cfg.model.builder_kwargs(), context=context,
                      task=cfg.task.name, task_kwargs=cfg.task.builder_kwargs(), info=data.info)
    sizes = [len(p) for p in partition_indices(data.train.y.numpy(), clients, partition, cfg.seed)]
    results: dict[str, Any] = {
        "val": val, "test": test, "seconds": seconds, "device": str(evaluator.device), "stop_reason": None,
        "federated": {"clients": clients, "rounds": rounds, "partition": partition, "strategy": strategy,
                      "proximal_mu": proximal_mu if strategy == "fedprox" else None, "local_epochs": local_epochs,
                      "client_samples": sizes, "address": address, "framework": f"flwr {flwr.__version__}"}}
    final = rounds_done[-1]
    if cfg.privacy.enabled and "epsilon" in final:
        results["privacy"] = {"epsilon": final["epsilon"], "delta": final["delta"], "scope": "per client (largest)",
                              "target_epsilon": cfg.privacy.epsilon, "noise_multiplier": cfg.privacy.noise_multiplier,
                              "max_grad_norm": cfg.privacy.max_grad_norm, "sampling": "poisson",
                              "accountant": cfg.privacy.accountant}
    rundir.save_results(results)
    return results


def _rounds(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if r.get("kind") == "round"]


def _watch_clients(procs: list[subprocess.Popen]) -> list[tuple[int, int]]:
    """Watch the client processes from a thread; the first that exits with an error interrupts the main thread
    (blocked in the Flower server) and is recorded in the returned list, which the caller appends to, to stop it."""
    import _thread
    import threading

    failed: list[tuple[int, int]] = []

    def watch() -> None:
        while not failed:
            for k, p in enumerate(procs):
                code = p.poll()
                if code not in (None, 0) and not failed:
                    failed.append((k, code))
                    _thread.interrupt_main()
                    return
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()
    return failed


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def federate(recipe: str | Path, clients: int = 5, rounds: int = 10, partition: str = "iid",
             strategy: str = "fedavg", proximal_mu: float = 0.01, local_epochs: int = 1,
             overrides: list[str] | None = None, out: str | Path | None = None,
             console: Any = None) -> tuple[Path, dict[str, Any]]:
    """Run a whole federation on this machine: the server here, each client a subprocess on 127.0.0.1.

    Returns the run directory (open it with :func:`deepfoundry.load_run`) and its ``results.json``.

    >>> path, results = federate("mlp-digits", clients=5, rounds=20, partition="dirichlet:0.5")  # doctest: +SKIP
    >>> results["test"]["accuracy"]                                                             # doctest: +SKIP
    """
    from datetime import datetime

    from ..config import load_config
    from ..engine.ownership import check_new_run, check_out, claim

    _flwr()
    cfg = load_config(recipe, list(overrides or []))
    parse_partition(partition)
    if strategy not in STRATEGIES:
        raise DeepfoundryError(f"--strategy must be one of {', '.join(STRATEGIES)}, received {strategy!r}")
    check_out(out)
    built = _build(cfg)  # every refusal (a task without the Trainer, too many clients) before a process starts
    partition_indices(built[0].train.y.numpy(), clients, partition, cfg.seed)
    run_dir = Path(out) if out is not None else Path("runs") / f"{cfg.name}-federated-{datetime.now():%Y%m%d-%H%M%S}"
    address = f"127.0.0.1:{free_port()}"
    logs = run_dir / "federated"
    with claim(run_dir):
        check_new_run(run_dir, False)
        logs.mkdir(parents=True, exist_ok=True)
        (logs / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")
        base = [sys.executable, "-m", "deepfoundry", "federate", str(recipe), "--role", "client", "--address", address,
                "--clients", str(clients), "--partition", partition, "--rounds", str(rounds),
                "--local-epochs", str(local_epochs)]
        for item in overrides or []:
            base += ["--set", item]
        procs: list[subprocess.Popen] = []
        try:
            for k in range(clients):
                with (logs / f"client-{k}.log").open("w", encoding="utf-8") as log:
                    procs.append(subprocess.Popen(base + ["--partition-id", str(k)], stdout=log,
                                                  stderr=subprocess.STDOUT, env=dict(os.environ)))
            failed = _watch_clients(procs)  # a client that dies stops the server's wait for it
            try:
                results = run_server(cfg, run_dir, address, clients, rounds, partition, strategy, proximal_mu,
                                     local_epochs, console, built)
            except KeyboardInterrupt:
                if not failed:
                    raise
                k, code = failed[0]
                raise DeepfoundryError(f"client {k} exited with code {code} before the federation finished; see "
                                       f"{logs / f'client-{k}.log'}") from None
            finally:
                failed.append((-1, 0))  # tells the watcher to stop
            for k, p in enumerate(procs):
                try:
                    code = p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    code = None
                if code not in (0, None):
                    raise DeepfoundryError(f"client {k} exited with code {code}; see {logs / f'client-{k}.log'}")
        finally:
            for p in procs:  # only the clients started here
                if p.poll() is None:
                    p.terminate()
                    try:
                        p.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        p.kill()
    return run_dir, results


def federated_summary(run: Any) -> dict[str, Any] | None:
    """A federated run's facts for a model card: clients, rounds, partition, strategy, client sizes, and the
    validation accuracy after each round; None for a run not trained by ``federate``."""
    results = run if isinstance(run, dict) else getattr(run, "results", {})
    fed = results.get("federated") if isinstance(results, dict) else None
    if not isinstance(fed, dict):
        return None
    out = dict(fed)
    path = getattr(run, "path", None)
    if path is not None:
        out["rounds_val"] = [{k: r[k] for k in ("round", "val_loss", "val_accuracy", "train_loss", "epsilon") if k in r}
                             for r in _rounds(Path(path) / "metrics.jsonl")]
    return out
