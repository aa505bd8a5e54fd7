"""What the engine needs of a task and of the data, as structural types (``typing.Protocol``).

The engine imports no task, model family or data module: anything shaped like these works.
:class:`deepfoundry.tasks.base.Task` and :class:`deepfoundry.data.DataBundle` are the implementations
the project ships; a test or a user may hand the Trainer their own.
"""
from __future__ import annotations

from typing import Any, Iterator, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class Loader(Protocol):
    """Batches of one split. ``epoch_batches(epoch, skip)`` yields the training order of ``epoch`` (a
    deterministic function of the seed and the epoch, so a resumed run skips the ``skip`` batches it
    already took); iterating yields evaluation batches in a fixed order."""

    num_samples: int

    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Any]: ...
    def epoch_batches(self, epoch: int, skip: int = 0) -> Iterator[Any]: ...


@runtime_checkable
class Data(Protocol):
    """The three splits and what the run needs to know about them (``info``)."""

    train: Loader
    val: Loader
    test: Loader
    info: dict[str, Any]


class TrainableTask(Protocol):
    """What the Trainer calls on a task: an ``nn.Module`` owning ``model``.

    ``training_step(batch) -> loss`` (the Trainer steps the optimizer unless ``manual_optimization``,
    in which case the task steps the optimizers it returned from ``configure_optimizers``);
    ``reset_metrics()``, ``evaluation_step(batch)`` per batch and ``compute_metrics()`` for an
    evaluation pass. Optional: ``callbacks()`` returning extra callbacks, ``parameter_groups``.
    """

    model: nn.Module
    manual_optimization: bool
    training: bool

    def training_step(self, batch: Any) -> torch.Tensor: ...
    def reset_metrics(self) -> None: ...
    def evaluation_step(self, batch: Any) -> None: ...
    def compute_metrics(self) -> dict[str, Any]: ...
    def to(self, *args: Any, **kwargs: Any) -> Any: ...
    def train(self, mode: bool = True) -> Any: ...
    def eval(self) -> Any: ...
    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...


class PrivacyHook(Protocol):
    """A training-privacy mechanism the Trainer hands its model, optimizer and loader to (DP-SGD:
    :class:`deepfoundry.responsible.privacy.DPSGD`); the engine knows only this shape.

    ``attach`` runs once in ``Trainer._setup`` after the optimizer is built and returns the optimizer to
    step (e.g. one that clips per-sample gradients and adds noise); it may wrap ``task.model`` and switch
    ``loader`` to another sampling. ``spent()`` is what the run has spent so far (logged in every epoch
    record: ``{"epsilon": ..., "delta": ...}``); ``summary()`` the facts for ``results.json``; ``detach``
    undoes the wrapping at the end of ``fit``. ``state_dict``/``load_state_dict`` travel in checkpoints
    (the accountant's history), so a resumed run reports the same budget as an uninterrupted one.
    """

    def attach(self, task: TrainableTask, optimizer: torch.optim.Optimizer, loader: Loader, epochs: int,
               config: Any) -> torch.optim.Optimizer: ...
    def detach(self, task: TrainableTask) -> None: ...
    def spent(self) -> dict[str, float]: ...
    def summary(self) -> dict[str, Any]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...
