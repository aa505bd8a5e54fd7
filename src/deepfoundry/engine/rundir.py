"""The one writer of a run directory.

Every training loop (the :class:`~.trainer.Trainer` and reinforcement learning's own loop) writes its
run through :class:`RunDirectory`, so every run has the same layout::

    RUN/config.yaml               the resolved config                       (start)
    RUN/metrics.jsonl             one JSON record per line                  (metrics_logger; resume truncates it)
    RUN/checkpoints/last.safetensors, best.safetensors                      (the loop's checkpoints)
    RUN/checkpoints/previous.safetensors    the last before the newest       (kept for a damaged last)
    RUN/tensorboard/              TensorBoard events
    RUN/model.safetensors         final weights                             (save_model)
    RUN/model.json                what rebuilds the model: registry name, kwargs, data facts, versions
    RUN/results.json              final metrics, timings, device            (save_results)
    RUN/report.html, model_card.md                                           (written by the report package)

Every file is written atomically (a temporary file, fsync, rename), so a crash never leaves half a file;
:meth:`RunDirectory.start` removes the temporaries such a crash leaves behind.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._version import __version__
from ..errors import DeepfoundryError
from ..config import RunConfig, dump_config
from .checkpoint import atomic_write, remove_stale_temporaries, save_weights

MODEL_FORMAT = "deepfoundry-model-v1"


def write_json(path: str | Path, obj: Any) -> None:
    """``obj`` as indented JSON at ``path``, atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8"))


def truncate_jsonl(path: str | Path, step: int) -> None:
    """Keep the records of ``path`` whose ``step`` is at most ``step`` (a resumed run writes the rest again)."""
    path = Path(path)
    if not path.exists():
        return
    keep = [row for row in read_jsonl(path) if row.get("step", 0) <= step]  # a torn last line goes too
    text = "".join(json.dumps(row) + "\n" for row in keep)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


class RunDirectory:
    """A run directory being written. ``RunDirectory(path).start(cfg)`` creates it with its config."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDirectory('{self.path}')"

    # the layout
    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.safetensors"

    @property
    def previous_checkpoint(self) -> Path:
        return self.checkpoints / "previous.safetensors"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    # writing
    def start(self, cfg: RunConfig) -> None:
        """Create the folder, remove what an interrupted write left (a resume), write the resolved ``config.yaml``."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.clean_temporaries()
        atomic_write(self.config_path, lambda tmp: Path(tmp).write_text(dump_config(cfg), encoding="utf-8"))

    def clean_temporaries(self) -> list[Path]:
        """Remove the ``.<name>.<random>.tmp`` files an interrupted write left here and in ``checkpoints/``."""
        return remove_stale_temporaries(self.path) + remove_stale_temporaries(self.checkpoints)

    def reset_metrics(self, resume_step: int | None = None) -> None:
        """A fresh run empties ``metrics.jsonl``; a run resumed at ``resume_step`` keeps the records up to it."""
        self.path.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.metrics_path.write_text("", encoding="utf-8")
        else:
            truncate_jsonl(self.metrics_path, resume_step)

    def save_model(self, model: nn.Module, *, name: str, kwargs: dict[str, Any], context: dict[str, Any],
                   task: str, task_kwargs: dict[str, Any], info: dict[str, Any],
                   state: dict[str, Any] | None = None) -> None:
        """Final weights (``model.safetensors``; ``state`` instead of ``model.state_dict()`` when given, e.g. the
        full state FSDP gathered) and what rebuilds the model (``model.json``)."""
        save_weights(self.path / "model.safetensors", model, {"format": MODEL_FORMAT}, state=state)
        write_json(self.path / "model.json", {
            "format": MODEL_FORMAT,
            "model": {"name": name, "kwargs": kwargs, "context": context},
            "task": {"name": task, "kwargs": task_kwargs},
            "info": info,
            "deepfoundry_version": __version__,
            "torch_version": torch.__version__,
        })

    def save_results(self, results: dict[str, Any]) -> None:
        """``results.json``: final metrics, timings and the device the run trained on."""
        write_json(self.path / "results.json", results)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file such as ``metrics.jsonl``.

    A torn last line (the process was killed while writing it) is skipped; any other line that is not a
    JSON object is an error naming ``file:line``.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DeepfoundryError(f"cannot read '{path}': {exc}") from None
    rows: list[dict[str, Any]] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if n == len(lines):  # torn by a kill mid-write: the records before it stand
                break
            raise DeepfoundryError(f"{path}:{n}: not a JSON line ({exc.msg})") from None
        if not isinstance(row, dict):
            raise DeepfoundryError(f"{path}:{n}: a record must be a JSON object, not {type(row).__name__}")
        rows.append(row)
    return rows
