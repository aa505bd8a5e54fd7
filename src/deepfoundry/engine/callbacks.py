"""Callbacks: the Trainer's extension points, called in this order (``deepfoundry train --show-loop``)::

    on_fit_start
    for each epoch:
        on_epoch_start
        for each batch:   training_step -> backward -> on_after_backward -> optimizer step -> on_train_batch_end
        validation        -> on_validation_end(metrics)
        on_epoch_end(record)                              (checkpoints, early stopping, logs)
    on_fit_end

Stateful callbacks implement ``state_dict`` / ``load_state_dict`` so that resume is exact.
Loggers receive every record through ``on_log``.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import DeepfoundryError
from .logging import JsonlWriter
from .rundir import truncate_jsonl

if TYPE_CHECKING:
    from .trainer import Trainer


class Callback:
    """Base class; override only the hooks you need (the Trainer skips hooks left as they are)."""

    def on_fit_start(self, trainer: "Trainer") -> None: ...
    def on_epoch_start(self, trainer: "Trainer", epoch: int) -> None: ...
    def on_after_backward(self, trainer: "Trainer") -> None: ...
    def on_train_batch_end(self, trainer: "Trainer", loss: torch.Tensor) -> None: ...
    def on_validation_end(self, trainer: "Trainer", metrics: dict[str, Any]) -> None: ...
    def on_epoch_end(self, trainer: "Trainer", record: dict[str, Any]) -> None: ...
    def on_fit_end(self, trainer: "Trainer") -> None: ...
    def on_log(self, trainer: "Trainer", record: dict[str, Any]) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def overrides(cb: Callback, hook: str) -> bool:
    return getattr(type(cb), hook) is not getattr(Callback, hook)


def is_better(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


def monitored(record: dict[str, Any], monitor: str) -> float:
    if monitor not in record:
        available = ", ".join(k for k in record if k.startswith(("val_", "train_")))
        raise DeepfoundryError(f"monitor {monitor!r} not in logged metrics; available: {available}")
    return float(record[monitor])


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    An epoch improves when ``value < best - min_delta`` (mode ``min``) or ``value > best + min_delta``
    (mode ``max``). With ``restore_best`` the weights of the best epoch are kept (a copy on the
    model's device) and put back when training stops early, so the returned model is the best one
    seen, not the last. The best value, the wait counter and the kept weights are part of the
    checkpoint, so a resumed run stops at the same epoch with the same weights.
    """

    def __init__(self, monitor: str = "val_loss", mode: str = "min", patience: int = 5, min_delta: float = 0.0,
                 restore_best: bool = False) -> None:
        self.monitor, self.mode, self.patience, self.min_delta = monitor, mode, patience, min_delta
        self.restore_best = restore_best
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.wait = 0
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.restored = False

    def on_epoch_end(self, trainer: "Trainer", record: dict[str, Any]) -> None:
        value = monitored(record, self.monitor)
        if is_better(value, self.best, self.mode, self.min_delta):
            self.best, self.best_epoch, self.wait = value, record["epoch"], 0
            if self.restore_best:
                self.best_weights = {k: v.detach().clone() for k, v in trainer.model_state().items()}
        else:
            self.wait += 1
            if self.wait >= self.patience:
                trainer.should_stop = True
                trainer.stop_reason = (f"early stopping: {self.monitor} did not improve for {self.patience} epochs "
                                       f"(best {self.best:.4g} at epoch {self.best_epoch})")

    def on_fit_end(self, trainer: "Trainer") -> None:
        if self.restore_best and trainer.should_stop and self.best_weights is not None:
            trainer.load_model_state(self.best_weights)
            self.restored = True
            trainer.stop_reason = f"{trainer.stop_reason}; restored the weights of epoch {self.best_epoch}"

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait, "best_weights": self.best_weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.wait = state.get("best"), state.get("wait", 0)
        self.best_epoch, self.best_weights = state.get("best_epoch"), state.get("best_weights")


class JointEarlyStopping(EarlyStopping):
    """Early stopping on two metrics at once, as in Velickovic et al.'s GAT code (val loss and accuracy).

    With bests ``b1`` (``monitor``) and ``b2`` (``also``) so far, an epoch with values ``v1, v2``:

    * is *progress* when ``v1`` is at least as good as ``b1`` **or** ``v2`` at least as good as ``b2``
      (ties count): the wait counter restarts and both bests move to ``best(b, v)``;
    * is *kept* (its weights become the ones restored) when ``v1`` and ``v2`` are **both** at least as good;
    * otherwise counts towards ``patience``; after ``patience`` such epochs in a row training stops.

    With ``restore_best`` the kept weights are put back at the end of training (early or not). ``best`` and
    ``best_epoch`` describe the kept epoch (its ``monitor`` value); the state round-trips through checkpoints.
    """

    def __init__(self, monitor: str, mode: str, also: str, also_mode: str, patience: int,
                 restore_best: bool = False) -> None:
        super().__init__(monitor, mode, patience, 0.0, restore_best)
        self.also, self.also_mode = also, also_mode
        self.bests: list[float | None] = [None, None]

    @staticmethod
    def _as_good(value: float, best: float | None, mode: str) -> bool:
        return best is None or (value <= best if mode == "min" else value >= best)

    def on_epoch_end(self, trainer: "Trainer", record: dict[str, Any]) -> None:
        values = (monitored(record, self.monitor), monitored(record, self.also))
        modes = (self.mode, self.also_mode)
        good = [self._as_good(v, b, m) for v, b, m in zip(values, self.bests, modes)]
        if any(good):
            if all(good):
                self.best, self.best_epoch = values[0], record["epoch"]
                if self.restore_best:
                    self.best_weights = {k: v.detach().clone() for k, v in trainer.unwrapped_model.state_dict().items()}
            self.bests = [v if b is None else (min(v, b) if m == "min" else max(v, b))
                          for v, b, m in zip(values, self.bests, modes)]
            self.wait = 0
        else:
            self.wait += 1
            if self.wait >= self.patience:
                trainer.should_stop = True
                trainer.stop_reason = (f"early stopping: neither {self.monitor} nor {self.also} improved for "
                                       f"{self.patience} epochs (kept epoch {self.best_epoch}, {self.monitor} "
                                       f"{self.best:.4g})")

    def on_fit_end(self, trainer: "Trainer") -> None:
        """Put the kept weights back, also when the epochs ran out first: the criterion picks the epoch."""
        if self.restore_best and self.best_weights is not None:
            trainer.unwrapped_model.load_state_dict(self.best_weights)
            self.restored = True
            reason = trainer.stop_reason or f"{self.monitor} and {self.also} kept improving to the last epoch"
            trainer.stop_reason = f"{reason}; restored the weights of epoch {self.best_epoch}"

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "bests": list(self.bests)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.bests = list(state.get("bests", [None, None]))


class Checkpoint(Callback):
    """Writes ``checkpoints/last.safetensors`` (full state, every epoch and every N steps) and
    ``checkpoints/best.safetensors`` (model weights whenever ``monitor`` improves)."""

    def __init__(self, folder: str | Path, monitor: str = "val_loss", mode: str = "min",
                 every_steps: int | None = None) -> None:
        self.folder = Path(folder)
        self.monitor, self.mode, self.every_steps = monitor, mode, every_steps
        self.best: float | None = None
        self.best_epoch: int | None = None

    @property
    def last_path(self) -> Path:
        return self.folder / "last.safetensors"

    @property
    def best_path(self) -> Path:
        return self.folder / "best.safetensors"

    def on_train_batch_end(self, trainer: "Trainer", loss: torch.Tensor) -> None:
        if self.every_steps and trainer.batch_in_epoch % trainer.accumulate == 0 \
                and trainer.global_step % self.every_steps == 0:
            trainer.save_checkpoint(self.last_path)

    def on_epoch_end(self, trainer: "Trainer", record: dict[str, Any]) -> None:
        value = monitored(record, self.monitor)
        if is_better(value, self.best, self.mode):
            self.best, self.best_epoch = value, record["epoch"]
            trainer.save_best(self.best_path, {"epoch": record["epoch"], self.monitor: value})
        trainer.save_checkpoint(self.last_path)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state.get("best"), state.get("best_epoch")


class JSONLLogger(Callback):
    """Appends every record to ``metrics.jsonl`` (one JSON object per line; :class:`~.logging.JsonlWriter`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._writer: JsonlWriter | None = None

    def on_fit_start(self, trainer: "Trainer") -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if trainer.resumed_from is not None:  # drop records written after the checkpoint (written again)
            truncate_jsonl(self.path, trainer.global_step)
        self._writer = JsonlWriter(self.path)

    def on_log(self, trainer: "Trainer", record: dict[str, Any]) -> None:
        if self._writer is not None:
            self._writer.write(record)

    def on_fit_end(self, trainer: "Trainer") -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class TensorBoardLogger(Callback):
    """Writes scalars to TensorBoard event files under ``folder`` (namespaced keys: ``train/loss``)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.writer = None

    def on_fit_start(self, trainer: "Trainer") -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(self.folder), purge_step=trainer.global_step or None)

    def on_log(self, trainer: "Trainer", record: dict[str, Any]) -> None:
        if self.writer is None:
            return
        step = record.get("step", trainer.global_step)
        for key, value in record.items():
            if key in ("kind", "step", "epoch") or not isinstance(value, (int, float)):
                continue
            split, _, name = key.partition("_")
            tag = f"{split}/{name}" if split in ("train", "val", "test") else key
            self.writer.add_scalar(tag, value, step)
        for name, value in record.get("grad_norms", {}).items():
            self.writer.add_scalar(f"grad_norm/{name}", value, step)

    def on_fit_end(self, trainer: "Trainer") -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class GradientNorms(Callback):
    """Backpropagation diagnostics: the L2 norm of each layer's gradient, every ``every_steps`` steps.

    For layer ``l`` with parameters ``W_l``: ``||dL/dW_l||_2 = sqrt(sum_i g_i^2)``. Norms shrinking
    layer by layer towards the input show vanishing gradients; growing ones, exploding gradients.
    """

    def __init__(self, every_steps: int = 50) -> None:
        self.every_steps = every_steps

    def on_after_backward(self, trainer: "Trainer") -> None:
        if trainer.global_step % self.every_steps != 0 or trainer.batch_in_epoch % trainer.accumulate != 0:
            return
        per_layer: dict[str, torch.Tensor] = {}
        for name, p in trainer.unwrapped_model.named_parameters():
            if p.grad is not None:
                layer = name.rsplit(".", 1)[0]
                sq = p.grad.detach().float().pow(2).sum()
                per_layer[layer] = per_layer[layer] + sq if layer in per_layer else sq
        if per_layer:
            norms = {k: math.sqrt(float(v)) for k, v in per_layer.items()}
            trainer.log({"kind": "grad_norms", "epoch": trainer.epoch + 1, "step": trainer.global_step + 1,
                         "grad_norms": norms})


class ProgressBar(Callback):
    """A rich progress bar per epoch and one summary line per epoch, on stderr."""

    SHOWN = ("val_accuracy", "val_rmse", "val_r2")

    def __init__(self, enabled: bool = True) -> None:
        from rich.console import Console

        self.console = Console(stderr=True, soft_wrap=True)  # never break lines mid-metric in logs
        self.enabled = enabled
        self._progress = None
        self._task = None
        self._last = 0.0

    def on_fit_start(self, trainer: "Trainer") -> None:
        if trainer.resumed_from is not None:
            self.console.print(f"resumed from {trainer.resumed_from} at epoch {trainer.epoch + 1}, "
                               f"step {trainer.global_step}")

    def on_epoch_start(self, trainer: "Trainer", epoch: int) -> None:
        if not (self.enabled and self.console.is_terminal):
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(TextColumn(f"epoch {epoch + 1}/{trainer.epochs}"), BarColumn(),
                                  MofNCompleteColumn(), TimeRemainingColumn(), TextColumn("{task.description}"),
                                  console=self.console, transient=True)
        self._progress.start()
        self._task = self._progress.add_task("", total=trainer.steps_per_epoch_batches,
                                             completed=trainer.batch_in_epoch)

    def on_train_batch_end(self, trainer: "Trainer", loss: torch.Tensor) -> None:
        if self._progress is None:
            return
        now = time.perf_counter()
        if now - self._last > 0.1:  # refreshing at most 10 times a second keeps the bar off the hot path
            self._progress.update(self._task, completed=trainer.batch_in_epoch, description=f"loss {float(loss.detach()):.4f}")
            self._last = now

    def on_epoch_end(self, trainer: "Trainer", record: dict[str, Any]) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        keys = ["train_loss", "val_loss", trainer.config.monitor, *self.SHOWN]
        shown = [f"{k} {record[k]:.4f}" for k in dict.fromkeys(keys) if isinstance(record.get(k), float)]
        self.console.print(f"epoch {record['epoch']}/{trainer.epochs}  " + "  ".join(shown)
                           + f"  lr {record['lr']:.2e}  {record['epoch_seconds']:.1f}s", highlight=False)

    def on_fit_end(self, trainer: "Trainer") -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if trainer.stop_reason:
            self.console.print(trainer.stop_reason, highlight=False)
