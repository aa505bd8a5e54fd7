"""Federated learning with Flower: a SuperLink, one SuperNode per client and a Flower App, talking gRPC.

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

Processes (flwr 1.32's Deployment Engine): a SuperLink, one SuperNode per client (``--node-config
'partition-id=K num-partitions=N'``) and ``flwr run`` submitting the Flower App written to
``RUN/federated/app`` (components in :mod:`deepfoundry.responsible.flower_app`). The SuperLink runs the
ServerApp (:func:`server_main`), each SuperNode a ClientApp process per round (:func:`client_train`).
``federate`` starts them all on 127.0.0.1; ``--role server`` runs the SuperLink alone for SuperNodes on other
machines (``--role client``, :func:`join_federation`), see docs/privacy.md.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
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


# ----------------------------------------------------------------------------------------- the Flower App
@dataclass
class FederationSpec:
    """Everything the Flower App's two sides need, carried in the run config of ``flwr run``: the resolved
    :class:`RunConfig` (as JSON, so clients on other machines need no recipe file), the federation's shape and
    where the server writes the run directory."""

    config: RunConfig
    clients: int
    rounds: int
    partition: str = "iid"
    strategy: str = "fedavg"
    proximal_mu: float = 0.01
    local_epochs: int = 1
    run_dir: str = ""

    def check(self) -> None:
        parse_partition(self.partition)
        if self.strategy not in STRATEGIES:
            raise DeepfoundryError(f"--strategy must be one of {', '.join(STRATEGIES)}, received {self.strategy!r}")
        if self.clients < 1:
            raise DeepfoundryError(f"--clients must be at least 1, received {self.clients}")
        if self.rounds < 1 or self.local_epochs < 1:
            raise DeepfoundryError(f"--rounds and --local-epochs must be at least 1, received {self.rounds} and "
                                   f"{self.local_epochs}")

    def to_run_config(self) -> dict[str, Any]:
        """Flat TOML values for ``[tool.flwr.app.config]``."""
        return {"config": json.dumps(self.config.model_dump(mode="json"), separators=(",", ":")),
                "clients": self.clients, "rounds": self.rounds, "partition": self.partition,
                "strategy": self.strategy, "proximal-mu": float(self.proximal_mu),
                "local-epochs": self.local_epochs, "run-dir": self.run_dir}

    @classmethod
    def from_run_config(cls, rc: Any) -> "FederationSpec":
        from ..config import validate

        return cls(config=validate(json.loads(str(rc["config"]))), clients=int(rc["clients"]),
                   rounds=int(rc["rounds"]), partition=str(rc["partition"]), strategy=str(rc["strategy"]),
                   proximal_mu=float(rc["proximal-mu"]), local_epochs=int(rc["local-epochs"]),
                   run_dir=str(rc["run-dir"]))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # a JSON string literal is a valid TOML basic string


def write_app(spec: FederationSpec, folder: str | Path) -> Path:
    """Write the Flower App (``pyproject.toml``) that ``flwr run`` builds into a FAB and submits to the SuperLink.

    Its components are this package's :mod:`deepfoundry.responsible.flower_app` (``server_app``, ``client_app``),
    so every machine of the federation needs deepfoundry installed; the run config carries the rest.
    """
    from .._version import __version__

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = "\n".join(f"{k} = {_toml_value(v)}" for k, v in spec.to_run_config().items())
    text = f'''# The Flower App of one `deepfoundry federate` run (written by deepfoundry; `flwr run` submits it).
[project]
name = "deepfoundry-federated"
version = "{__version__.split('+')[0]}"
description = "deepfoundry's Trainer on each SuperNode's partition; FedAvg/FedProx and evaluation in the ServerApp"
license = "Apache-2.0"
dependencies = ["deepfoundry[responsible]", "flwr=={_flwr_version()}"]

[tool.flwr.app]
publisher = "deepfoundry"

[tool.flwr.app.components]
serverapp = "deepfoundry.responsible.flower_app:server_app"
clientapp = "deepfoundry.responsible.flower_app:client_app"

[tool.flwr.app.config]
{config}
'''
    (folder / "pyproject.toml").write_text(text, encoding="utf-8")
    return folder


def _flwr_version() -> str:
    return str(_flwr().__version__)


def _round_seed(cfg: RunConfig, partition_id: int, rnd: int) -> tuple[int, int]:
    return cfg.seed + 7919 * (partition_id + 1) + rnd, cfg.seed * 1009 + partition_id * 97 + rnd


def client_train(msg: Any, context: Any) -> Any:
    """The ClientApp's train function: this SuperNode's partition (``--node-config partition-id=K``) of the
    training split, trained from the received global weights with the Trainer; replies with the new weights,
    the sample count (FedAvg's weight) and the train loss (and the epsilon spent, with DP-SGD)."""
    from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

    from ..data.core import ArrayLoader
    from ..engine.seeding import seed_everything
    from ..engine.trainer import Trainer

    spec = FederationSpec.from_run_config(context.run_config)
    cfg = spec.config
    node = dict(context.node_config)
    if "partition-id" not in node:
        raise DeepfoundryError("this SuperNode has no partition-id; start it with "
                               "--node-config 'partition-id=K num-partitions=N'")
    partition_id = int(node["partition-id"])
    clients = int(node.get("num-partitions", spec.clients))
    if clients != spec.clients or not 0 <= partition_id < clients:
        raise DeepfoundryError(f"SuperNode partition-id={partition_id} num-partitions={clients} does not fit the "
                               f"run's {spec.clients} clients")
    data, model, task, _, dpsgd = _build(cfg)
    index = torch.as_tensor(partition_indices(data.train.y.numpy(), clients, spec.partition, cfg.seed)[partition_id])
    x, y = data.train.x[index], data.train.y[index]
    set_weights(model, list(msg.content["arrays"].to_numpy_ndarrays()))
    settings = msg.content["config"]
    rnd = int(settings.get("server-round", 1))
    seed, loader_seed = _round_seed(cfg, partition_id, rnd)
    seed_everything(seed)
    train = ArrayLoader(x, y, cfg.data.batch_size, shuffle=True, seed=loader_seed)
    train.batch_transform = getattr(data.train, "batch_transform", None)
    bundle = type(data)(train=train, val=type(data.val)(x[:0], y[:0], 1), test=data.test, info=data.info)
    mu = float(settings.get("proximal-mu", 0.0))
    callbacks = [ProximalTerm(model, mu)] if mu > 0 else []
    privacy = None
    if dpsgd is not None:  # one accountant over all rounds: its history lives in the node's context between rounds
        privacy = dpsgd(cfg.privacy, planned_epochs=spec.rounds * spec.local_epochs)
        if "dp" in context.state.config_records:
            privacy.load_state_dict(json.loads(str(context.state.config_records["dp"]["state"])))
    optim = cfg.optim.model_copy(update={"scheduler": cfg.optim.scheduler.model_copy(update={"name": "none"})})
    trainer = Trainer(_client_trainer_config(cfg, spec.local_epochs), optim, run_dir=None, callbacks=callbacks,
                      privacy=privacy)
    history = trainer.fit(task, bundle)
    metrics: dict[str, Any] = {"num-examples": len(x), "partition-id": partition_id,
                               "train_loss": float(history[-1]["train_loss"]) if history else float("nan")}
    if privacy is not None:
        metrics.update(privacy.spent())
        context.state.config_records["dp"] = ConfigRecord({"state": json.dumps(privacy.state_dict())})
    model.cpu()
    content = RecordDict({"arrays": ArrayRecord(get_weights(model)), "metrics": MetricRecord(metrics)})
    return Message(content=content, reply_to=msg)


def _aggregate_train_metrics(records: list[Any], weight_key: str) -> Any:
    """Clients' train losses weighted by their sample counts; the largest client epsilon (DP-SGD)."""
    from flwr.app import MetricRecord

    rows = [next(iter(r.metric_records.values())) for r in records]
    total = sum(float(m[weight_key]) for m in rows) or 1.0
    out: dict[str, Any] = {"train_loss": sum(float(m[weight_key]) * float(m["train_loss"]) for m in rows) / total}
    eps = [float(m["epsilon"]) for m in rows if "epsilon" in m]
    if eps:
        out["epsilon"] = max(eps)
        out["delta"] = float(next(m["delta"] for m in rows if "delta" in m))
    return MetricRecord(out)


def _strict(strategy_cls: type, clients: int, on_round: Any) -> Any:
    """The strategy, refusing a round where a client failed (a silent smaller average would be a different
    federation), and handing each round's aggregated train metrics to ``on_round``."""

    class Strict(strategy_cls):  # type: ignore[misc, valid-type]
        def aggregate_train(self, server_round: int, replies: Any) -> Any:
            replies = list(replies)
            failed = [m for m in replies if m.has_error()]
            if failed or len(replies) < clients:
                why = failed[0].error.reason.strip().splitlines()[-1] if failed else "no reply before the timeout"
                raise DeepfoundryError(f"round {server_round}: {len(failed) or clients - len(replies)} of {clients} "
                                       f"clients failed ({why})")
            held = sorted(int(next(iter(m.content.metric_records.values()))["partition-id"]) for m in replies)
            if held != list(range(clients)):
                raise DeepfoundryError(f"round {server_round}: the SuperNodes hold partitions {held}, not 0..{clients - 1} "
                                       f"once each; start each with its own --node-config partition-id")
            arrays, metrics = super().aggregate_train(server_round, replies)
            on_round(dict(metrics) if metrics is not None else {})
            return arrays, metrics

    return Strict


def server_main(grid: Any, context: Any) -> None:
    """The ServerApp's main: FedAvg/FedProx over the SuperNodes, the global model evaluated on val after each
    round (``{"kind": "round"}`` lines in ``metrics.jsonl``), then the run directory's model and results.
    A failure is also written as one line to ``RUN/federated/error.txt`` for ``federate`` to report."""
    spec = FederationSpec.from_run_config(context.run_config)
    try:
        run_federation_server(grid, spec)
    except BaseException as exc:
        line = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        error = Path(spec.run_dir) / "federated" / "error.txt"
        error.parent.mkdir(parents=True, exist_ok=True)
        error.write_text((line if isinstance(exc, DeepfoundryError) else f"{type(exc).__name__}: {line}") + "\n")
        raise


def run_federation_server(grid: Any, spec: FederationSpec) -> dict[str, Any]:
    """The server side of :func:`server_main`, given Flower's ``Grid``; returns ``results.json``."""
    flwr = _flwr()
    from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
    from flwr.serverapp.strategy import FedAvg, FedProx

    from ..engine.rundir import RunDirectory
    from ..engine.trainer import Trainer

    spec.check()
    cfg, clients, rounds = spec.config, spec.clients, spec.rounds
    data, model, task, context, _ = _build(cfg)
    rundir = RunDirectory(spec.run_dir)
    rundir.start(cfg)
    rundir.reset_metrics()
    evaluator = Trainer(cfg.trainer.model_copy(update={"progress": False, "compile": False}), run_dir=None)
    task.to(evaluator.device)
    started = time.perf_counter()
    last_fit: dict[str, Any] = {}

    def evaluate_fn(server_round: int, arrays: Any) -> Any:
        set_weights(model, list(arrays.to_numpy_ndarrays()))
        task.to(evaluator.device)
        val = evaluator.evaluate(data.val, task) if data.val.num_samples else {}
        line: dict[str, Any] = {"kind": "round", "round": server_round, "step": server_round}
        if server_round > 0:
            line.update(last_fit)
        line.update({f"val_{k}": v for k, v in val.items() if isinstance(v, (int, float))})
        line["elapsed"] = time.perf_counter() - started
        with rundir.metrics_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")
        return MetricRecord({k: float(v) for k, v in val.items() if isinstance(v, (int, float))})

    def on_round(metrics: dict[str, Any]) -> None:
        last_fit.clear()
        last_fit.update(metrics)

    base = FedProx if spec.strategy == "fedprox" else FedAvg
    kwargs: dict[str, Any] = dict(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=clients,
                                  min_evaluate_nodes=0, min_available_nodes=clients,
                                  train_metrics_aggr_fn=_aggregate_train_metrics)
    if spec.strategy == "fedprox":
        kwargs["proximal_mu"] = spec.proximal_mu
    strategy = _strict(base, clients, on_round)(**kwargs)
    strategy.start(grid=grid, initial_arrays=ArrayRecord(get_weights(model)), num_rounds=rounds,
                   train_config=ConfigRecord({"local-epochs": spec.local_epochs}), evaluate_fn=evaluate_fn,
                   timeout=CLIENT_TIMEOUT)
    seconds = time.perf_counter() - started
    done = [r for r in _rounds(rundir.metrics_path) if r["round"] > 0]
    if len(done) < rounds:
        raise DeepfoundryError(f"the federation stopped after {len(done)} of {rounds} rounds")
    model.cpu()
    task.to(evaluator.device)
    val = evaluator.evaluate(data.val, task) if data.val.num_samples else {}
    test = evaluator.evaluate(data.test, task) if data.test.num_samples else {}
    rundir.save_model(model, name=cfg.model.name, kwargs=cfg.model.builder_kwargs(), context=context,
                      task=cfg.task.name, task_kwargs=cfg.task.builder_kwargs(), info=data.info)
    sizes = [len(p) for p in partition_indices(data.train.y.numpy(), clients, spec.partition, cfg.seed)]
    results: dict[str, Any] = {
        "val": val, "test": test, "seconds": seconds, "device": str(evaluator.device), "stop_reason": None,
        "federated": {"clients": clients, "rounds": rounds, "partition": spec.partition, "strategy": spec.strategy,
                      "proximal_mu": spec.proximal_mu if spec.strategy == "fedprox" else None,
                      "local_epochs": spec.local_epochs, "client_samples": sizes,
                      "framework": f"flwr {flwr.__version__}", "deployment": "superlink+supernodes"}}
    final = done[-1]
    if cfg.privacy.enabled and "epsilon" in final:
        results["privacy"] = {"epsilon": final["epsilon"], "delta": final["delta"], "scope": "per client (largest)",
                              "target_epsilon": cfg.privacy.epsilon, "noise_multiplier": cfg.privacy.noise_multiplier,
                              "max_grad_norm": cfg.privacy.max_grad_norm, "sampling": "poisson",
                              "accountant": cfg.privacy.accountant}
    rundir.save_results(results)
    return results


def _rounds(path: Path) -> list[dict[str, Any]]:
    from ..engine.rundir import read_jsonl

    return [r for r in read_jsonl(path) if r.get("kind") == "round"] if path.exists() else []


# ----------------------------------------------------------------------------------------- processes
CLIENT_TIMEOUT = 3600.0  # seconds the ServerApp waits for a round's replies


def free_port(taken: set[int] | None = None) -> int:
    """A TCP port free on 127.0.0.1 now and not in ``taken`` (which it joins): the OS may hand out again a port
    it gave a moment ago, before the process it was meant for bound it (a SuperLink's two APIs got one port)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if taken is None:
            return port
        if port not in taken:
            taken.add(port)
            return port


def _split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DeepfoundryError(f"--address must be HOST:PORT (e.g. 0.0.0.0:9092), received {address!r}")
    return host, int(port)


def _flower_env(home: Path | None) -> dict[str, str]:
    """This environment with the Python's own bin folder first on PATH (the SuperLink and SuperNode start
    ``flower-superexec`` and the apps by name) and ``FLWR_HOME`` set to ``home`` when given."""
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
               PYTHONUNBUFFERED="1")
    if home is not None:
        env["FLWR_HOME"] = str(home.resolve())
    return env


def _tool(name: str) -> str:
    """A Flower executable: the one beside this Python (a venv not on PATH), else on PATH."""
    import shutil

    found = Path(sys.executable).parent / name
    path = str(found) if found.exists() else shutil.which(name)
    if path is None:
        raise DeepfoundryError(f"{name} not found beside {sys.executable} or on PATH; install flwr with {EXTRA}")
    return path


class Federation:
    """The Flower processes of one federation, each logging to ``RUN/federated/<name>.log``: a SuperLink
    (``flower-superlink``), SuperNodes (``flower-supernode --node-config 'partition-id=K num-partitions=N'``)
    and the ``flwr run`` that submits the app. Leaving the ``with`` block stops every process it started.

    The executables are the ones beside this Python (a venv not on PATH works); ``FLWR_HOME`` is
    ``RUN/federated/flwr-home``, so nothing is written under ``~/.flwr``.
    """

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = _flower_env(logs / "flwr-home")

    def __enter__(self) -> "Federation":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self, name: str, command: list[str]) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("w", encoding="utf-8")
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                start_new_session=True)  # its own group: stop() ends the apps it spawned too
        log.close()
        self.procs[name] = proc
        return proc

    def superlink(self, fleet: str, control: str, serverappio: str) -> None:
        self.start("superlink", [_tool("flower-superlink"), "--insecure", "--fleet-api-address", fleet,
                                 "--control-api-address", control, "--serverappio-api-address", serverappio,
                                 "--disable-runtime-dependency-installation"])

    def supernode(self, partition_id: int, clients: int, superlink: str, clientappio: str) -> None:
        self.start(f"client-{partition_id}", [
            _tool("flower-supernode"), "--insecure", "--superlink", superlink,
            "--node-config", f"partition-id={partition_id} num-partitions={clients}",
            "--clientappio-api-address", clientappio])

    def submit(self, app: Path, control: str) -> None:
        """``flwr run APP local``: build the FAB and start the run on the SuperLink's Control API."""
        home = Path(self.env["FLWR_HOME"])
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(f'[superlink]\ndefault = "local"\n\n[superlink.local]\n'
                                          f'address = "{control}"\ninsecure = true\n', encoding="utf-8")
        deadline = time.monotonic() + 60
        while True:  # the Control API may not be listening yet
            done = subprocess.run([_tool("flwr"), "run", str(app), "local", "--format", "json"],
                                  capture_output=True, text=True, env=self.env, timeout=120)
            (self.logs / "flwr-run.log").write_text(done.stdout + done.stderr, encoding="utf-8")
            if done.returncode == 0:
                return
            self.check()
            if time.monotonic() > deadline:
                last = (done.stderr or done.stdout).strip().splitlines()
                raise DeepfoundryError(f"flwr run failed: {last[-1] if last else 'no output'} (see "
                                       f"{self.logs / 'flwr-run.log'})")
            time.sleep(1.0)

    def check(self) -> None:
        """One line naming the first Flower process that exited, and its log."""
        for name, proc in self.procs.items():
            code = proc.poll()
            if code is not None:
                raise DeepfoundryError(f"{name} exited with code {code} before the federation finished; see "
                                       f"{self.logs / f'{name}.log'}")

    def stop(self) -> None:
        """SIGTERM to each process group (a SuperLink's or SuperNode's apps are in it too), then SIGKILL to
        whatever is left in them: an app that outlives its SuperLink would retry it forever."""
        import signal

        def signal_groups(sig: int) -> None:
            for proc in self.procs.values():
                try:
                    os.killpg(proc.pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass

        signal_groups(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        time.sleep(0.5)
        signal_groups(signal.SIGKILL)
        for proc in self.procs.values():
            proc.wait()


def _follow(run_dir: Path, fed: Federation, rounds: int, console: Any) -> dict[str, Any]:
    """Print each round as the ServerApp records it; return ``results.json`` once written. A failed app
    (``federated/error.txt``) or a Flower process that exited ends the wait with its one line."""
    say = console.print if console is not None else (lambda *a, **k: None)
    shown = 0
    results_path, error_path = run_dir / "results.json", run_dir / "federated" / "error.txt"
    while True:
        rows = _rounds(run_dir / "metrics.jsonl")
        for line in rows[shown:]:
            values = "  ".join(f"{k} {v:.4f}" for k, v in line.items()
                               if k in ("train_loss", "val_loss", "val_accuracy", "epsilon") and isinstance(v, float))
            say(f"round {line['round']}/{rounds}  {values}  {line['elapsed']:.1f}s", highlight=False)
        shown = len(rows)
        if error_path.exists():
            raise DeepfoundryError(f"the federation failed: {error_path.read_text(encoding='utf-8').strip()}")
        if results_path.exists():
            return json.loads(results_path.read_text(encoding="utf-8"))
        fed.check()
        time.sleep(0.5)


def _local_config(recipe: str | Path, overrides: list[str] | None) -> RunConfig:
    """The resolved config, with a relative ``data.root`` made absolute (the apps run in other folders)."""
    from ..config import load_config

    cfg = load_config(recipe, list(overrides or []))
    root = getattr(cfg.data, "root", None)
    if isinstance(root, str) and root and not os.path.isabs(root) and Path(root).exists():
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"root": str(Path(root).resolve())})})
    return cfg


def federate(recipe: str | Path, clients: int = 5, rounds: int = 10, partition: str = "iid",
             strategy: str = "fedavg", proximal_mu: float = 0.01, local_epochs: int = 1,
             overrides: list[str] | None = None, out: str | Path | None = None, console: Any = None,
             role: str = "local", address: str | None = None) -> tuple[Path, dict[str, Any]]:
    """Run a federation and return its run directory (open it with :func:`deepfoundry.load_run`) and
    ``results.json``.

    ``role="local"``: a SuperLink and one SuperNode per client on 127.0.0.1, all separate processes.
    ``role="server"``: the SuperLink alone, its Fleet API at ``address`` (HOST:PORT) for SuperNodes started
    elsewhere (:func:`join_federation`); the run starts once ``clients`` of them are connected.
    Both submit the Flower App with ``flwr run`` and wait for it.

    >>> path, results = federate("mlp-digits", clients=5, rounds=20, partition="dirichlet:0.5")  # doctest: +SKIP
    >>> results["test"]["accuracy"]                                                             # doctest: +SKIP
    """
    from datetime import datetime

    from ..engine.ownership import check_new_run, check_out, claim

    _flwr()
    cfg = _local_config(recipe, overrides)
    spec = FederationSpec(cfg, clients, rounds, partition, strategy, proximal_mu, local_epochs)
    spec.check()
    check_out(out)
    built = _build(cfg)  # every refusal (a task without the Trainer, too many clients) before a process starts
    partition_indices(built[0].train.y.numpy(), clients, partition, cfg.seed)
    if role == "server":
        if address is None:
            raise DeepfoundryError("--role server needs --address HOST:PORT to listen on (e.g. 0.0.0.0:9092)")
        _split_address(address)
    run_dir = Path(out) if out is not None else Path("runs") / f"{cfg.name}-federated-{datetime.now():%Y%m%d-%H%M%S}"
    logs = run_dir / "federated"
    with claim(run_dir):
        check_new_run(run_dir, False)
        logs.mkdir(parents=True, exist_ok=True)
        spec.run_dir = str(run_dir.resolve())
        app = write_app(spec, logs / "app")
        (logs / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")
        taken = {_split_address(address)[1]} if role == "server" else set()  # ports this federation will bind
        fleet = address if role == "server" else f"127.0.0.1:{free_port(taken)}"
        control, serverappio = f"127.0.0.1:{free_port(taken)}", f"127.0.0.1:{free_port(taken)}"
        say = console.print if console is not None else (lambda *a, **k: None)
        with Federation(logs) as fed:
            fed.superlink(fleet, control, serverappio)
            if role != "server":
                for k in range(clients):
                    fed.supernode(k, clients, fleet, f"127.0.0.1:{free_port(taken)}")
            fed.submit(app, control)
            say(f"federated run: SuperLink {fleet}, {clients} SuperNodes{' (waiting for them)' if role == 'server' else ''}, "
                f"{rounds} rounds, {strategy}, partition {partition}", highlight=False)
            results = _follow(run_dir, fed, rounds, console)
    return run_dir, results


def join_federation(address: str, partition_id: int, clients: int) -> int:
    """``--role client``: a SuperNode holding partition ``partition_id`` of ``clients``, connected to the
    SuperLink's Fleet API at ``address``; runs (in the foreground) until stopped. Returns its exit code."""
    _flwr()
    _split_address(address)
    if clients < 1 or not 0 <= partition_id < clients:
        raise DeepfoundryError(f"--partition-id must be in 0..{clients - 1}, received {partition_id}")
    command = [_tool("flower-supernode"), "--insecure", "--superlink", address, "--node-config",
               f"partition-id={partition_id} num-partitions={clients}",
               "--clientappio-api-address", f"127.0.0.1:{free_port()}"]
    node = Federation(Path.cwd())
    node.env = _flower_env(None)
    node.procs["supernode"] = subprocess.Popen(command, env=node.env, start_new_session=True)
    try:
        return node.procs["supernode"].wait()
    finally:  # a SIGTERM or Ctrl-C to this process must not leave the SuperNode or its apps running
        node.stop()


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
