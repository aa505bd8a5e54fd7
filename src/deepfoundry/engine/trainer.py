"""The one training loop.

``Trainer.fit(task, data)`` runs epochs of ``task.training_step`` -> backward -> (clip) -> optimizer
step -> scheduler step, validates after every epoch, and hands records to its callbacks (progress
bar, JSONL and TensorBoard logs, checkpoints, early stopping, gradient norms). It adds nothing to
the hot path that a hand-written loop would not do: hooks that no callback overrides are skipped,
batches come from in-memory tensors, and the loss is read back once per step on the CPU only.
"""
from __future__ import annotations

import contextlib
import copy
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import OptimConfig, TrainerConfig
from ..errors import DeepfoundryError
from ..optim import Schedule, build_optimizer, build_scheduler, native_bf16, parameter_groups
from . import callbacks as cbs
from .contracts import Data, Loader, PrivacyHook, TrainableTask
from .distributed import Distributed, check_loader
from .rundir import RunDirectory
from .checkpoint import load_resume_state, load_state, save_state
from .divergence import DivergenceGuard
from .signals import StopFlag, Stopped, graceful_stop
from .unfreeze import gradual_unfreezing_for


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` is ``bf16`` autocast where ``device`` multiplies bfloat16 natively
    (:func:`~deepfoundry.optim.native_bf16`; 1.2-1.65x faster training steps of the character models on an
    AVX512-BF16 CPU, docs/trainer.md), else ``32``; any other value is kept."""
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device.type) else "32"


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU; an unavailable device is a clear error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeepfoundryError(f"device {name!r} is not a device name; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeepfoundryError(f"device {name!r} requested but CUDA is not available here; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeepfoundryError(f"device {name!r} requested but MPS is not available here; use --device cpu")
    return device


class TrainingDiverged(DeepfoundryError):
    """The loss became NaN or infinite."""


class Trainer:
    """Fits a task (:class:`~.contracts.TrainableTask`, e.g. :class:`deepfoundry.tasks.base.Task`) on data
    (:class:`~.contracts.Data`, e.g. :class:`deepfoundry.data.DataBundle`).

    >>> trainer = Trainer(TrainerConfig(epochs=2, progress=False), OptimConfig(lr=1e-3))
    >>> history = trainer.fit(task, data)          # list of per-epoch records
    """

    def __init__(self, config: TrainerConfig | None = None, optim: OptimConfig | None = None,
                 run_dir: str | Path | None = None, callbacks: list[cbs.Callback] | None = None,
                 privacy: PrivacyHook | None = None, distributed: Distributed | None = None) -> None:
        self.config = config or TrainerConfig()
        self.privacy = privacy  # DP-SGD (responsible/privacy.py) or any PrivacyHook; None trains as usual
        self.optim_config = optim or OptimConfig()
        self.run_dir = Path(run_dir) if run_dir is not None else None
        # torchrun (engine/distributed.py): this rank's share of every batch; rank 0 alone writes and prints
        self.dist = distributed
        self.is_main = distributed is None or distributed.is_main
        self.device = distributed.device if distributed is not None else resolve_device(self.config.device)
        self.precision = resolve_precision(self.config.precision, self.device)
        self.callbacks = self._default_callbacks() + list(callbacks or [])
        self.epochs = self.config.epochs
        self.accumulate = self.config.accumulate
        self.epoch = 0                 # current epoch, 0-based
        self.global_step = 0           # optimizer steps taken
        self.batch_in_epoch = 0        # batches consumed in the current epoch
        self.should_stop = False
        self.stop_reason: str | None = None
        self.history: list[dict[str, Any]] = []
        self.resumed_from: Path | None = None
        self.elapsed = 0.0
        self._loss_sum, self._loss_count = 0.0, 0
        self.task: TrainableTask | None = None
        self.data: Data | None = None
        self.unwrapped_model: nn.Module | None = None
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedule = Schedule(None, "step")
        self.scaler: torch.amp.GradScaler | None = None
        self.steps_per_epoch_batches = 0
        self.stop_signal = StopFlag()  # set by SIGTERM/SIGINT while fit runs (engine/signals.py)
        self.divergence = DivergenceGuard(self.config.divergence_factor) if self.config.divergence != "off" else None

    # ------------------------------------------------------------------ setup
    def _default_callbacks(self) -> list[cbs.Callback]:
        c = self.config
        out: list[cbs.Callback] = [cbs.ProgressBar(enabled=c.progress and self.is_main)]
        if not self.is_main:
            out[0].console.quiet = True  # the other ranks of a torchrun job print nothing
        es = c.early_stopping
        if es.enabled:
            mode = es.mode or c.mode
            if es.also:
                out.append(cbs.JointEarlyStopping(es.monitor or c.monitor, mode, es.also,
                                                  es.also_mode or ("max" if mode == "min" else "min"), es.patience,
                                                  restore_best=es.restore_best))
            else:
                out.append(cbs.EarlyStopping(es.monitor or c.monitor, mode, es.patience, es.min_delta,
                                             restore_best=es.restore_best))
        if c.grad_norms:
            out.append(cbs.GradientNorms(c.log_every_steps))
        if self.run_dir is not None:
            layout = RunDirectory(self.run_dir)
            if self.is_main:
                out.append(cbs.JSONLLogger(layout.metrics_path))
                if c.tensorboard:
                    out.append(cbs.TensorBoardLogger(layout.tensorboard))
                if c.mlflow:
                    from .tracking import MLflowLogger  # the track extra, imported only when asked for

                    out.append(MLflowLogger(layout.path, c.mlflow_uri))
            # on every rank: the same best/last decisions (FSDP gathers the state on all ranks); rank 0 writes
            out.append(cbs.Checkpoint(layout.checkpoints, c.monitor, c.mode, c.checkpoint_every_steps))
        return out

    def describe_loop(self) -> str:
        """The order of calls in ``fit`` and which callbacks take part in each (``--show-loop``)."""
        def who(hook: str) -> str:
            names = [type(cb).__name__ for cb in self.callbacks if cbs.overrides(cb, hook)]
            return f"{hook:<20} {', '.join(names) or '-'}"
        lines = [who("on_fit_start"), "for epoch in epochs:", "  " + who("on_epoch_start"),
                 "  for batch in train:", "    task.training_step(batch) -> loss.backward()",
                 "    " + who("on_after_backward"), "    clip grads -> optimizer.step() -> scheduler.step()",
                 "    " + who("on_train_batch_end"), "  validation: task.evaluation_step(batch) ...",
                 "  " + who("on_validation_end"), "  " + who("on_epoch_end"), "  " + who("on_log"),
                 who("on_fit_end")]
        return "\n".join(lines)

    def _setup(self, task: TrainableTask, data: Data) -> None:
        c = self.config
        self._threads_before = torch.get_num_threads()
        if c.threads:
            torch.set_num_threads(c.threads)
        if c.deterministic:
            torch.use_deterministic_algorithms(True)
        self.task = task.to(self.device)
        if self.dist is not None:  # before the optimizer: FSDP shards the parameters it will step
            self._check_distributed(task, data)
            data.train.shard(self.dist.rank, self.dist.world_size)
            task.model = self.dist.prepare(task.model)
        self.unwrapped_model = task.model
        if c.channels_last:
            task.model.to(memory_format=torch.channels_last)
        if task.manual_optimization:
            self.optimizers = dict(task.configure_optimizers(self.optim_config))
        else:
            self.optimizers = {"main": build_optimizer(self.optim_config, parameter_groups(task, self.optim_config.lr),
                                                         module=task)}
            if self.privacy is not None:  # per-sample clipping + noise; Poisson batches (a different len(train))
                self.optimizers["main"] = self.privacy.attach(task, self.optimizers["main"], data.train,
                                                              self.epochs, c)
            steps = math.ceil(len(data.train) / self.accumulate)
            self.schedule = build_scheduler(self.optim_config, self.optimizers["main"], steps, self.epochs)
        if self.precision == "fp16" and self.device.type == "cuda":
            self.scaler = torch.amp.GradScaler("cuda")
        self._training_step = task.training_step if self.dist is None else self.dist.wrap_step(task)
        if c.compile:
            task.model = torch.compile(task.model)
        self.steps_per_epoch_batches = len(data.train)
        own = [*getattr(task, "callbacks", lambda: [])(), *getattr(self.unwrapped_model, "callbacks", lambda: [])(),
               *gradual_unfreezing_for(self.unwrapped_model)]
        for cb in own:  # the task's and the model's own callbacks (GAN sample grids, gradual unfreezing)
            if not any(type(c) is type(cb) for c in self.callbacks):
                self.callbacks.append(cb)
        self._hooks = {h: [cb for cb in self.callbacks if cbs.overrides(cb, h)]
                       for h in ("on_after_backward", "on_train_batch_end")}

    def _check_distributed(self, task: TrainableTask, data: Data) -> None:
        """What a torchrun job cannot train, refused in one line on every rank before any step."""
        if task.manual_optimization:
            raise DeepfoundryError(f"{type(task).__name__} steps its own optimizers (e.g. a GAN's two) and cannot "
                                   "train under torchrun; train it in one process")
        if self.privacy is not None:
            raise DeepfoundryError("privacy (DP-SGD) cannot train under torchrun (its Poisson sampling and accountant "
                                   "assume one process); train it in one process")
        check_loader(data.train, type(task).__name__)

    _NO_AUTOCAST = contextlib.nullcontext()  # reusable, so the fp32 hot path allocates nothing

    def autocast(self) -> contextlib.AbstractContextManager:
        p = self.precision
        if p == "32":
            return self._NO_AUTOCAST
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if p == "bf16" else torch.float16)

    def _to_device(self, batch: Any) -> Any:
        if isinstance(batch, torch.Tensor):
            batch = batch.to(self.device, non_blocking=True)
            if self.config.channels_last and batch.dim() == 4:
                batch = batch.contiguous(memory_format=torch.channels_last)
            return batch
        if isinstance(batch, (tuple, list)):
            return type(batch)(self._to_device(b) for b in batch)
        if isinstance(batch, dict):
            return {k: self._to_device(v) for k, v in batch.items()}
        return batch

    # ------------------------------------------------------------------ the loop
    def fit(self, task: TrainableTask, data: Data, resume_from: str | Path | dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Train ``task`` on ``data.train``, validating on ``data.val`` after every epoch."""
        self._setup(task, data)
        self.data = data
        if resume_from is not None:  # a checkpoint path (or run directory), or a state already read
            if isinstance(resume_from, dict):
                state, self.resumed_from = resume_from, Path(self.run_dir or ".")
            else:  # a damaged last.safetensors falls back on previous.safetensors, with one warning line
                state, self.resumed_from, warning = load_resume_state(resume_from)
                if warning:
                    self.progress.console.print(f"warning: {warning}", highlight=False, markup=False)
            self._restore(state)
        with graceful_stop() as self.stop_signal:  # SIGTERM/SIGINT: checkpoint at the next step, raise Stopped
            for cb in self.callbacks:
                cb.on_fit_start(self)
            try:
                if self._stop_requested():  # a signal while data and model were built: stop before any step
                    self._stop_on_signal()
                while self.epoch < self.epochs and not self.should_stop:
                    for cb in self.callbacks:
                        cb.on_epoch_start(self, self.epoch)
                    started = time.perf_counter()
                    train_loss = self._train_epoch(data.train)
                    val = self.evaluate(data.val) if data.val.num_samples else {}
                    for cb in self.callbacks:
                        cb.on_validation_end(self, val)
                    seconds = time.perf_counter() - started
                    self.elapsed += seconds
                    record = {"kind": "epoch", "epoch": self.epoch + 1, "step": self.global_step,
                              "train_loss": train_loss}
                    record.update({f"val_{k}": v for k, v in val.items() if isinstance(v, (int, float))})
                    record.update(lr=self.current_lr(), epoch_seconds=seconds, elapsed=self.elapsed)
                    if self.privacy is not None:
                        record.update(self.privacy.spent())  # epsilon spent so far, delta
                    if self.schedule.interval == "epoch" and self.schedule.scheduler is not None:
                        self.schedule.scheduler.step(cbs.monitored(record, self.config.monitor))
                    self.log(record)
                    self.epoch += 1
                    self.batch_in_epoch = 0
                    self._loss_sum, self._loss_count = 0.0, 0
                    for cb in self.callbacks:
                        cb.on_epoch_end(self, record)
                    if self._stop_requested():  # a signal during validation: stop at this epoch's end
                        self._stop_on_signal()
            finally:
                torch.set_num_threads(self._threads_before)
                if self.config.compile:
                    task.model = self.unwrapped_model
                if self.privacy is not None:
                    self.privacy.detach(task)
                for cb in self.callbacks:
                    cb.on_fit_end(self)
        stopped = next((cb for cb in self.callbacks if isinstance(cb, cbs.EarlyStopping) and cb.restored), None)
        if self.config.restore_best and stopped is None:  # early stopping already put its best weights back
            best = next((cb for cb in self.callbacks if isinstance(cb, cbs.Checkpoint)), None)
            if self.dist is not None and best is not None and best.best is not None:  # rank 0 holds the file
                self.load_model_state(load_state(best.best_path)["model"] if self.is_main else {})
            elif best is not None and best.best_path.exists():
                self.unwrapped_model.load_state_dict(load_state(best.best_path)["model"])
        return self.history

    def _stop_requested(self) -> bool:
        """A SIGTERM/SIGINT reached this process (under torchrun: any rank, so all stop at the same step)."""
        if self.dist is None:
            return bool(self.stop_signal.signum)
        return self.dist.agree(bool(self.stop_signal.signum))

    def _train_epoch(self, loader: Loader) -> float:
        task, c = self.task, self.config
        task.train()
        opt = self.optimizers.get("main")
        manual = task.manual_optimization
        on_cpu = self.device.type == "cpu"
        sched = self.schedule.scheduler if self.schedule.interval == "step" else None
        after_backward, batch_end = self._hooks["on_after_backward"], self._hooks["on_train_batch_end"]
        n_batches = len(loader)
        loss_sum_t = torch.zeros((), device=self.device)
        move = self.device.type != "cpu" or c.channels_last  # CPU tensors need no copy
        augment = getattr(loader, "batch_transform", None)  # data.augment: training batches only, on the device
        stop, guard, dist = self.stop_signal, self.divergence, self.dist
        training_step = self._training_step if dist is not None else task.training_step  # DDP: its wrapped step
        stopping = False  # under torchrun: a signal on any rank, agreed with this step's loss
        for batch in loader.epoch_batches(self.epoch, skip=self.batch_in_epoch):
            if move:
                batch = self._to_device(batch)
            if augment is not None:
                batch = augment(batch, epoch=self.epoch, index=self.batch_in_epoch)
            with self.autocast():
                loss = training_step(batch)
            if dist is not None:  # this rank's share n_r of the batch's n samples (engine/distributed.py)
                value, stopping, loss = self._distributed_loss(loss, loader.share, bool(stop.signum))
                self._loss_sum += value
            elif on_cpu:  # reading the loss back is free on the CPU: check every step, before the update
                value = loss.item()
                if not math.isfinite(value):
                    self._diverged(value)
                if guard is not None and guard.check(value):
                    self._blew_up(value)
                self._loss_sum += value
            else:
                loss_sum_t += loss.detach()
                if (self.batch_in_epoch + 1) % c.log_every_steps == 0:
                    value = float(loss.detach())
                    if not math.isfinite(value):
                        self._diverged(value)
                    if guard is not None and guard.check(value):
                        self._blew_up(value)
            self._loss_count += 1
            self.batch_in_epoch += 1
            if not manual:
                scaled = loss / self.accumulate if self.accumulate > 1 else loss
                (self.scaler.scale(scaled) if self.scaler else scaled).backward()
                if self.batch_in_epoch % self.accumulate == 0 or self.batch_in_epoch == n_batches:
                    for cb in after_backward:
                        cb.on_after_backward(self)
                    if c.grad_clip:
                        if self.scaler:
                            self.scaler.unscale_(opt)
                        torch.nn.utils.clip_grad_norm_(task.parameters(), c.grad_clip)
                    if self.scaler:
                        self.scaler.step(opt)
                        self.scaler.update()
                    else:
                        opt.step()
                    opt.zero_grad(set_to_none=True)
                    if sched is not None:
                        sched.step()
                    self.global_step += 1
            else:
                self.global_step += 1
            if self.global_step % c.log_every_steps == 0 and self.batch_in_epoch % self.accumulate == 0:
                self.log({"kind": "step", "epoch": self.epoch + 1, "step": self.global_step,
                          "train_loss": float(loss.detach()) if dist is None else value, "lr": self.current_lr()})
            for cb in batch_end:
                cb.on_train_batch_end(self, loss)
            if (stop.signum if dist is None else stopping) and (self.batch_in_epoch % self.accumulate == 0 or self.batch_in_epoch == n_batches):
                self._stop_on_signal(loss_sum_t)  # at an optimizer-step boundary, where a checkpoint resumes exactly
        if not on_cpu:
            self._loss_sum += float(loss_sum_t)
        return self._loss_sum / max(1, self._loss_count)

    def _distributed_loss(self, loss: torch.Tensor, share: tuple[int, int], signalled: bool
                          ) -> tuple[float, bool, torch.Tensor]:
        """One all-reduce per step: the batch's mean loss ``sum_r L_r n_r / n`` (what one process logs) and
        whether any rank was signalled; returns them with the loss to back-propagate, ``L_r n_r W / n``, whose
        gradient averaged over the ``W`` ranks (DDP, FSDP) is the single-process mean-loss gradient."""
        local, total = share
        d = self.dist
        agreed = d.all_reduce_sum(torch.stack([loss.detach().to(d.device, torch.float64) * (local / total),
                                               d.tensor([1.0 if signalled else 0.0])[0]]))
        value, stopping = float(agreed[0]), bool(agreed[1] > 0)
        if not math.isfinite(value):
            self._diverged(value)
        if self.divergence is not None and self.divergence.check(value):
            self._blew_up(value)
        return value, stopping, loss * (local * d.world_size / total)

    def _diverged(self, value: float, why: str = "") -> None:
        last = self.run_dir / "checkpoints" / "last.safetensors" if self.run_dir else None
        kept = f"; the last good checkpoint is kept at {last}" if last is not None and last.exists() else ""
        raise TrainingDiverged(f"training loss became {value} at epoch {self.epoch + 1}, step {self.global_step}"
                               f"{why}{kept} (try a lower --lr or trainer.grad_clip)")

    def _blew_up(self, value: float) -> None:
        """A finite loss above ``divergence_factor`` x its running median: stop (``trainer.divergence=stop``)
        or warn once (``warn``) on stderr and in metrics.jsonl."""
        guard = self.divergence
        why = f", above {self.config.divergence_factor:g} x its running median {guard.median:.4g}"
        if self.config.divergence == "stop":
            self._diverged(value, why)
        if guard.warned:
            return
        guard.warned = True
        message = (f"training loss became {value:.4g} at epoch {self.epoch + 1}, step {self.global_step}{why}; "
                   f"training goes on (trainer.divergence=stop stops here; try a lower --lr or trainer.grad_clip)")
        self.progress.console.print(f"warning: {message}", highlight=False)
        self.log({"kind": "warning", "epoch": self.epoch + 1, "step": self.global_step, "message": message,
                  "divergence": {"loss": value, "median": guard.median, "factor": self.config.divergence_factor}})

    def _stop_on_signal(self, pending_loss_sum: torch.Tensor | None = None) -> None:
        """Write ``checkpoints/last.safetensors`` (with a run directory) and raise :class:`Stopped`."""
        if pending_loss_sum is not None and self.device.type != "cpu":  # the epoch's loss sum, kept on the device
            self._loss_sum += float(pending_loss_sum)
            pending_loss_sum.zero_()
        ckpt = next((cb for cb in self.callbacks if isinstance(cb, cbs.Checkpoint)), None)
        path = ckpt.last_path if ckpt is not None and self.run_dir is not None else None
        if path is not None:
            self.save_checkpoint(path)
        epoch = self.epoch + 1 if self.batch_in_epoch else self.epoch
        name = self.stop_signal.name if self.stop_signal.signum else "SIGTERM"  # torchrun: another rank's signal
        raise Stopped(name, epoch=epoch or None,  # before the first step: "at step 0"
                      step=self.global_step, checkpoint=path, run_dir=self.run_dir)

    def step_flops(self, loader: Loader) -> int | None:
        """Floating-point operations of one training step (forward and backward) on the first batch of
        ``loader``, counted by ``torch.utils.flop_counter.FlopCounterMode`` (matrix products,
        convolutions and attention; element-wise operations are not counted; the fused CPU kernels of an LSTM
        layer and of attention are counted as their matrix products, see ``_cpu_flop_formulas``). The step
        runs on a copy of the task, so the weights, gradients and optimizer state of the run are
        untouched; ``None`` for an empty loader."""
        from torch.utils.flop_counter import FlopCounterMode

        batch = next(iter(loader.epoch_batches(0)), None)
        if batch is None or self.task is None:
            return None
        probe = copy.deepcopy(self.task)
        probe.train()
        with FlopCounterMode(display=False, custom_mapping=_cpu_flop_formulas()) as counter, self.autocast():
            loss = probe.training_step(self._to_device(batch))
            if not probe.manual_optimization and isinstance(loss, torch.Tensor) and loss.requires_grad:
                loss.backward()  # manual optimisation (GANs) runs its backward passes inside training_step
        return int(counter.get_total_flops())

    @torch.no_grad()
    def evaluate(self, loader: Loader, task: TrainableTask | None = None) -> dict[str, Any]:
        """Run ``task.evaluation_step`` over ``loader`` and return ``task.compute_metrics()``."""
        task = task or self.task
        was_training = task.training
        task.eval()
        task.reset_metrics()
        with torch.inference_mode():  # under torchrun every rank evaluates the whole split (the same metrics)
            for batch in loader:
                with self.autocast():
                    task.evaluation_step(self._to_device(batch))
        metrics = task.compute_metrics()
        task.train(was_training)
        return metrics

    @property
    def progress(self) -> cbs.ProgressBar:
        """The progress bar among the callbacks (its ``console`` prints the run's messages on stderr)."""
        bar = next((cb for cb in self.callbacks if isinstance(cb, cbs.ProgressBar)), None)
        if bar is None:  # a caller replaced the default callbacks: messages still go to stderr
            bar = cbs.ProgressBar(enabled=False)
        return bar

    def current_lr(self) -> float:
        opt = next(iter(self.optimizers.values()), None)
        return float(opt.param_groups[0]["lr"]) if opt is not None else 0.0

    def log(self, record: dict[str, Any]) -> None:
        if record.get("kind") == "epoch":
            self.history.append(record)
        for cb in self.callbacks:
            cb.on_log(self, record)

    # ------------------------------------------------------------------ checkpoint / resume
    def state_dict(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state_all()
        d = self.dist
        if d is not None:  # every rank's generator, so each resumes its own draws (dropout, augmentation)
            rng["ranks"] = d.gather_rng()
        return {
            "model": self.model_state(),
            "optimizers": {k: o.state_dict() if d is None else d.optimizer_state(self.unwrapped_model, o)
                           for k, o in self.optimizers.items()},
            "scheduler": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "rng": rng,
            "trainer": {"epochs": self.epochs, "epoch": self.epoch, "global_step": self.global_step, "batch_in_epoch": self.batch_in_epoch,
                        "base_lr": self.optim_config.lr,
                        "loss_sum": self._loss_sum, "loss_count": self._loss_count, "elapsed": self.elapsed},
            "callbacks": {type(cb).__name__: cb.state_dict() for cb in self.callbacks},
            "history": self.history,
            "divergence": self.divergence.state_dict() if self.divergence is not None else None,
            "privacy": self.privacy.state_dict() if self.privacy is not None else None,
        }

    def _scale_lr(self, ratio: float) -> None:
        """Multiply every learning rate (each group's, and what the schedule computes them from) by ``ratio``."""
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                for key in ("lr", "initial_lr", "max_lr", "min_lr"):
                    if isinstance(group.get(key), (int, float)):
                        group[key] *= ratio
        sched = self.schedule.scheduler
        for attr in ("base_lrs", "_last_lr"):
            values = getattr(sched, attr, None)
            if isinstance(values, list):
                setattr(sched, attr, [v * ratio if isinstance(v, (int, float)) else v for v in values])

    def save_checkpoint(self, path: str | Path) -> None:
        """Write the full state to ``path`` (under torchrun every rank calls this; rank 0 writes)."""
        state = self.state_dict()
        if self.is_main:
            save_state(path, state)

    def save_best(self, path: str | Path, extra: dict[str, Any]) -> None:
        """Write the model's weights with ``extra`` facts (the best checkpoint); rank 0 writes."""
        state = {"model": self.model_state(), **extra}
        if self.is_main:
            save_state(path, state)

    def model_state(self) -> dict[str, torch.Tensor]:
        """The model's full state dict (FSDP: gathered on rank 0, the other ranks get ``{}``; every rank calls)."""
        if self.dist is None:
            return self.unwrapped_model.state_dict()
        return self.dist.model_state(self.unwrapped_model)

    def load_model_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load weights that rank 0 holds into every rank's model (one process: plain ``load_state_dict``)."""
        if self.dist is None:
            self.unwrapped_model.load_state_dict(state)
        elif self.dist.mode == "fsdp":
            self.dist.load_model_state(self.unwrapped_model, state, from_rank0=True)
        else:
            if self.is_main:
                self.unwrapped_model.load_state_dict(state)
            self.dist.broadcast_module(self.unwrapped_model)

    def _restore(self, state: dict[str, Any]) -> None:
        try:
            d = self.dist
            if d is None:
                self.unwrapped_model.load_state_dict(state["model"])
                for name, opt in self.optimizers.items():
                    opt.load_state_dict(state["optimizers"][name])
            else:  # every rank read the same checkpoint
                d.load_model_state(self.unwrapped_model, state["model"])
                for name, opt in self.optimizers.items():
                    d.load_optimizer_state(self.unwrapped_model, opt, state["optimizers"][name])
            sched = self.schedule.scheduler
            fresh = {k: getattr(sched, k) for k in ("total_steps", "_schedule_phases") if hasattr(sched, k)}
            self.schedule.load_state_dict(state.get("scheduler") or {})
            if state["trainer"].get("epochs", self.epochs) != self.epochs:
                # a resumed run given more (or fewer) epochs stretches its schedule to the new length
                for k, v in fresh.items():
                    setattr(sched, k, v)
            if self.scaler and state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            base_lr = state["trainer"].get("base_lr", self.optim_config.lr)
            if base_lr != self.optim_config.lr:  # a resume with a new optim.lr: every rate scales from now on
                self._scale_lr(self.optim_config.lr / base_lr)
            t = state["trainer"]
        except (KeyError, RuntimeError, ValueError) as exc:
            raise DeepfoundryError(f"checkpoint does not match this model/optimizer: {str(exc).splitlines()[0]}") from exc
        self.epoch, self.global_step, self.batch_in_epoch = t["epoch"], t["global_step"], t["batch_in_epoch"]
        self._loss_sum, self._loss_count, self.elapsed = t["loss_sum"], t["loss_count"], t["elapsed"]
        ranks = state["rng"].get("ranks")
        if self.dist is not None and ranks is not None and len(ranks) == self.dist.world_size:
            torch.set_rng_state(ranks[self.dist.rank])
        else:
            torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        for cb in self.callbacks:
            cb.load_state_dict(state.get("callbacks", {}).get(type(cb).__name__, {}))
        self.history = list(state.get("history", []))
        if self.divergence is not None:
            self.divergence.load_state_dict(state.get("divergence") or {})
        if self.privacy is not None:
            self.privacy.load_state_dict(state.get("privacy") or {})


def _cpu_flop_formulas() -> dict:
    """FLOP formulas for the fused CPU kernels that ``FlopCounterMode`` does not know (it would count 0 for them).

    - ``aten.mkldnn_rnn_layer`` (the oneDNN layer a CPU ``nn.LSTM`` runs as one op; without it an LSTM step
      would count only its embedding and output layers): forward ``2 N (|W_ih| + |W_hh|)`` for ``N`` tokens
      (the gate products x W_ih^T and h W_hh^T).
    - ``aten._scaled_dot_product_flash_attention_for_cpu`` (``F.scaled_dot_product_attention`` on a CPU):
      forward ``2 B H T S (d_k + d_v)`` (``Q K^T`` and the weights times ``V``, the full ``T x S`` also when
      causal, as the explicit products count), the same as torch's own formula for the GPU kernels.

    Backward is twice the forward (gradients of the inputs and of the weights); a kernel's recomputation of its
    forward products is not model FLOPs."""
    from torch.utils.flop_counter import sdpa_flop_count

    aten = torch.ops.aten
    formulas: dict = {}

    def rnn_forward(input, w0, w1, *args, out_shape=None, **kwargs) -> int:  # input (.., I), W_ih (4H, I), W_hh
        return 2 * math.prod(input[:-1]) * (math.prod(w0) + math.prod(w1))

    def rnn_backward(input, w0, w1, *args, out_shape=None, **kwargs) -> int:
        return 2 * rnn_forward(input, w0, w1)

    def sdpa_forward(query, key, value, *args, out_shape=None, **kwargs) -> int:  # (B, H, T, d)
        return sdpa_flop_count(query, key, value)

    def sdpa_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
        return 2 * sdpa_flop_count(query, key, value)

    if hasattr(aten, "mkldnn_rnn_layer"):
        formulas.update({aten.mkldnn_rnn_layer: rnn_forward, aten.mkldnn_rnn_layer_backward: rnn_backward})
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        formulas.update({aten._scaled_dot_product_flash_attention_for_cpu: sdpa_forward,
                         aten._scaled_dot_product_flash_attention_for_cpu_backward: sdpa_backward})
    return formulas
