"""Experiment tracking with MLflow (``trainer.mlflow: true``; the ``track`` extra): one MLflow run per run directory.

What goes where (docs/trainer.md#experiment-tracking-mlflow)::

    params     the resolved config.yaml, flattened to dotted keys (optim.lr, trainer.epochs, model.name, ...)
    metrics    every numeric field of every log record (epoch records: train_loss, val_*, lr, epoch_seconds, ...;
               grad_norms as grad_norm/<layer>), at the record's global step
    artifacts  every file of the run directory once the run is saved (config, metrics.jsonl, checkpoints,
               model.safetensors + model.json, results, report, TensorBoard events)
    tags       deepfoundry.run_dir

The MLflow run id is kept in ``RUN/mlflow.json``: ``deepfoundry train --resume RUN`` continues the same MLflow run.
TensorBoard and ``metrics.jsonl`` stay on either way. Under ``torchrun`` only rank 0 (``RANK`` 0 or unset) logs.

The default store is ``sqlite:///<cwd>/mlruns/mlflow.db`` with artifacts in ``<cwd>/mlruns/``: everything in one
local ``mlruns/`` folder, offline. MLflow 3 refuses its old plain-folder store (``file:./mlruns``) unless
``MLFLOW_ALLOW_FILE_STORE=true`` is set; a SQLite file is the local store it supports.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import flatten_keys, read_yaml
from ..errors import DeepfoundryError
from .callbacks import Callback
from .rundir import write_json

if TYPE_CHECKING:
    from .trainer import Trainer

STATE = "mlflow.json"  # {"run_id", "tracking_uri", "experiment_id"} in the run directory
SKIPPED = {".lock"}    # files of a run directory that are not artifacts
PARAM_LIMIT = 6000     # MLflow's longest parameter value
BATCH = 100            # params per log_batch call (MLflow's limit)


def is_rank_zero() -> bool:
    """Whether this process logs: rank 0 of a ``torchrun`` launch, or a plain single process (``RANK`` unset)."""
    return os.environ.get("RANK", "0") == "0"


def require_mlflow() -> Any:
    """``mlflow``, or one error line naming the extra to install."""
    try:
        import mlflow
    except ImportError as exc:
        raise DeepfoundryError(f"trainer.mlflow needs MLflow ({exc.name or 'mlflow'} is missing): "
                               f"pip install 'deepfoundry[track]'") from None
    return mlflow


def default_uri(cwd: str | Path | None = None) -> str:
    """``sqlite:///<cwd>/mlruns/mlflow.db`` (artifacts beside it in ``mlruns/``), an absolute path so a resume
    from another folder finds the same store."""
    folder = Path(cwd or Path.cwd()).resolve() / "mlruns"
    return f"sqlite:///{folder / 'mlflow.db'}"


def _client(uri: str) -> Any:
    mlflow = require_mlflow()
    if uri.startswith("sqlite:///"):  # SQLite does not create the folder of its file
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return mlflow.MlflowClient(tracking_uri=uri)


def _mlflow_error(exc: Exception, uri: str) -> DeepfoundryError:
    first = " ".join(str(exc).split()).split(". ")[0][:300]
    hint = ""
    if "filesystem tracking backend" in first:
        hint = "; use a SQLite store (trainer.mlflow_uri=sqlite:///PATH/mlflow.db) or set MLFLOW_ALLOW_FILE_STORE=true"
    return DeepfoundryError(f"MLflow store {uri!r}: {first}{hint}")


def _numbers(record: dict[str, Any]) -> dict[str, float]:
    """The finite numeric fields of a log record (``grad_norms`` as ``grad_norm/<layer>``); not ``step``/``kind``."""
    out = {k: float(v) for k, v in record.items()
           if k not in ("step", "kind") and isinstance(v, (int, float)) and not isinstance(v, bool)}
    out.update({f"grad_norm/{k}": float(v) for k, v in (record.get("grad_norms") or {}).items()})
    return {k: v for k, v in out.items() if math.isfinite(v)}


class MLflowLogger(Callback):
    """Logs a Trainer run to MLflow: the config as params at the start, every record's numbers as metrics.

    ``tracking_uri`` None means :func:`default_uri` (or, on resume, the store the run was started in). The
    run directory's files are logged by :func:`log_run_directory` once the run is saved (``deepfoundry.train``
    calls it); ``on_fit_end`` marks the MLflow run FINISHED, or KILLED when training stopped before its last
    epoch (a crash or a signal: ``--resume`` continues it). With ``enabled=False`` (ranks other than 0) it does
    nothing at all.
    """

    def __init__(self, run_dir: str | Path, tracking_uri: str | None = None, enabled: bool | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = is_rank_zero() if enabled is None else enabled
        self.tracking_uri = tracking_uri
        self.client: Any = None
        self.run_id: str | None = None
        if self.enabled:
            require_mlflow()  # a missing package fails before the run directory is written

    def on_fit_start(self, trainer: "Trainer") -> None:
        if not self.enabled:
            return
        state_path = self.run_dir / STATE
        saved = read_state(self.run_dir) if trainer.resumed_from is not None and state_path.is_file() else None
        if saved is not None and self.tracking_uri not in (None, saved.get("tracking_uri")):
            saved = None  # resumed into another store: a new MLflow run there
        uri = self.tracking_uri or (saved or {}).get("tracking_uri") or default_uri()
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException

        try:
            client = _client(uri)
            if saved is not None:  # --resume: the same MLflow run, RUNNING again
                self.run_id = saved["run_id"]
                client.update_run(self.run_id, status="RUNNING")
                return self._ready(client, uri)
            config = read_yaml(self.run_dir / "config.yaml") if (self.run_dir / "config.yaml").is_file() else {}
            name = str(config.get("name") or "deepfoundry")
            experiment = client.get_experiment_by_name(name)
            experiment_id = experiment.experiment_id if experiment is not None else client.create_experiment(name)
            run = client.create_run(experiment_id, run_name=self.run_dir.name,
                                    tags={"deepfoundry.run_dir": str(self.run_dir.resolve())})
            self.run_id = run.info.run_id
            params = [Param(k, ("" if v is None else str(v))[:PARAM_LIMIT]) for k, v in flatten_keys(config).items()]
            for i in range(0, len(params), BATCH):
                client.log_batch(self.run_id, params=params[i:i + BATCH])
        except MlflowException as exc:
            raise _mlflow_error(exc, uri) from None
        write_json(state_path, {"run_id": self.run_id, "tracking_uri": uri, "experiment_id": experiment_id})
        self._ready(client, uri)

    def _ready(self, client: Any, uri: str) -> None:
        self.client, self.tracking_uri = client, uri

    def on_log(self, trainer: "Trainer", record: dict[str, Any]) -> None:
        if self.client is None:
            return
        from mlflow.entities import Metric

        step, now = int(record.get("step", trainer.global_step)), int(time.time() * 1000)
        metrics = [Metric(key, value, now, step) for key, value in _numbers(record).items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def on_fit_end(self, trainer: "Trainer") -> None:
        if self.client is None:
            return
        done = trainer.epoch >= trainer.epochs or (trainer.should_stop and not trainer.stop_signal.signum)
        self.client.set_terminated(self.run_id, status="FINISHED" if done else "KILLED")
        self.client = None


def read_state(run_dir: str | Path) -> dict[str, Any]:
    """``RUN/mlflow.json``: the MLflow run id and store of a tracked run."""
    import json

    path = Path(run_dir) / STATE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DeepfoundryError(f"'{path}' is unreadable ({exc}); delete it to start a new MLflow run") from None
    if not isinstance(state, dict) or not isinstance(state.get("run_id"), str):
        raise DeepfoundryError(f"'{path}' holds no MLflow run id; delete it to start a new MLflow run")
    return state


def log_run_directory(run_dir: str | Path) -> list[str]:
    """Log every file of a tracked, saved run directory as artifacts of its MLflow run (rank 0 only); returns
    the artifact paths. Nothing happens for a run directory without ``mlflow.json``."""
    run_dir = Path(run_dir)
    if not is_rank_zero() or not (run_dir / STATE).is_file():
        return []
    state = read_state(run_dir)
    require_mlflow()
    from mlflow.exceptions import MlflowException

    logged = []
    try:
        client = _client(state["tracking_uri"])
        for path in sorted(p for p in run_dir.rglob("*") if p.is_file() and p.name not in SKIPPED):
            folder = path.parent.relative_to(run_dir).as_posix()
            client.log_artifact(state["run_id"], str(path), artifact_path=None if folder == "." else folder)
            logged.append(path.relative_to(run_dir).as_posix())
    except MlflowException as exc:
        raise _mlflow_error(exc, state["tracking_uri"]) from None
    return logged
