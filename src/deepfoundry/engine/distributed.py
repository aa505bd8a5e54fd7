"""Data-parallel training under ``torchrun``: DDP or FSDP, with the single-process run's numbers.

``torchrun --nproc-per-node N -m deepfoundry train RECIPE`` starts N processes; torchrun gives each
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address (``MASTER_ADDR``/``MASTER_PORT``) in
its environment. :func:`from_env` reads them (``None`` without torchrun, or with ``WORLD_SIZE=1``: the
single-process path is then untouched) and :meth:`Distributed.init` joins the process group: gloo on the
CPU, NCCL on CUDA with device ``cuda:LOCAL_RANK``.

The equivalence with one process rests on three facts (docs/distributed.md):

* ``data.batch_size`` is the global batch ``B``. Every rank walks the same seeded permutation and takes its
  contiguous share of every batch (``n_r`` of its ``n`` samples; shares differ by at most one in an uneven
  last batch).
* Rank ``r`` back-propagates ``L_r * n_r * W / n``, its mean loss ``L_r`` weighted by its share. DDP (and
  FSDP's reduce-scatter) average gradients over the ``W`` ranks, so the gradient stepped is
  ``(1/W) sum_r grad(L_r) n_r W / n = (1/n) sum_r n_r grad(L_r)``: the gradient of the mean loss over the
  whole batch, the single-process one, also for a last batch that does not split evenly.
* The logged training loss is ``sum_r L_r n_r / n`` (one all-reduce per step), the single-process batch
  mean; validation and test run on every rank over the whole split, so the metrics are the same numbers.

Rank 0 alone writes the run directory and prints; the other ranks compute the same decisions (best
checkpoint, early stopping, stop on a signal) from the same all-reduced numbers, so no rank waits alone.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
from torch import nn

from ..errors import DeepfoundryError

MODES = ("ddp", "fsdp")


def env_world_size() -> int:
    """``WORLD_SIZE`` from torchrun's environment (1 without torchrun)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        raise DeepfoundryError(f"WORLD_SIZE={os.environ.get('WORLD_SIZE')!r} is not a whole number") from None


def env_rank() -> int:
    """``RANK`` from torchrun's environment (0 without torchrun)."""
    try:
        return int(os.environ.get("RANK", "0")) if env_world_size() > 1 else 0
    except ValueError:
        raise DeepfoundryError(f"RANK={os.environ.get('RANK')!r} is not a whole number") from None


def is_secondary() -> bool:
    """True in a torchrun worker other than rank 0 (it neither writes nor prints)."""
    try:
        return env_rank() != 0
    except DeepfoundryError:
        return False


@dataclass
class Distributed:
    """One process of a data-parallel run: its ``rank`` among ``world_size``, its ``device`` and ``mode``."""

    rank: int
    world_size: int
    local_rank: int
    mode: str = "ddp"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str = "gloo"
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------------ process group
    def init(self, device_name: str = "auto") -> "Distributed":
        """Pick the device (``cuda:LOCAL_RANK`` when CUDA is asked for or ``auto`` finds it, else the CPU) and
        the backend (NCCL on CUDA, gloo on the CPU), and join the process group unless one is joined."""
        import torch.distributed as dist

        want_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
        if want_cuda:
            if not torch.cuda.is_available():
                raise DeepfoundryError(f"device {device_name!r} requested but CUDA is not available here; "
                                       "use --device cpu")
            if self.local_rank >= torch.cuda.device_count():
                raise DeepfoundryError(f"LOCAL_RANK {self.local_rank} has no GPU: this machine has "
                                       f"{torch.cuda.device_count()}; start at most that many processes per node")
            self.device, self.backend = torch.device("cuda", self.local_rank), "nccl"
            torch.cuda.set_device(self.device)
        elif device_name not in ("auto", "cpu"):
            raise DeepfoundryError(f"device {device_name!r} is not supported under torchrun; use cpu or cuda")
        if not dist.is_initialized():
            for key in ("MASTER_ADDR", "MASTER_PORT"):
                if key not in os.environ:
                    raise DeepfoundryError(f"WORLD_SIZE={self.world_size} is set but {key} is not: start the "
                                           "run with torchrun (docs/distributed.md)")
            kwargs: dict[str, Any] = {"timeout": datetime.timedelta(minutes=30)}
            if self.backend == "nccl":
                kwargs["device_id"] = self.device
            dist.init_process_group(self.backend, rank=self.rank, world_size=self.world_size, **kwargs)
            self.owns_group = True
        elif dist.get_world_size() != self.world_size:
            raise DeepfoundryError(f"the process group has {dist.get_world_size()} processes but WORLD_SIZE is "
                                   f"{self.world_size}")
        return self

    def close(self) -> None:
        """Leave the process group this object joined (a group the caller joined stays)."""
        import torch.distributed as dist

        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False

    def barrier(self) -> None:
        import torch.distributed as dist

        if self.backend == "nccl":
            dist.barrier(device_ids=[self.local_rank])
        else:
            dist.barrier()

    # ------------------------------------------------------------------ collectives
    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum ``values`` (float64 on the CPU, or on the run's device for NCCL) over the ranks, in place."""
        import torch.distributed as dist

        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def tensor(self, values: Iterable[float]) -> torch.Tensor:
        """A float64 vector on the device the backend communicates on."""
        return torch.tensor(list(values), dtype=torch.float64, device=self.device)

    def agree(self, flag: bool) -> bool:
        """True on every rank when it is true on any (a signal that reached one rank stops them all)."""
        return bool(self.all_reduce_sum(self.tensor([1.0 if flag else 0.0]))[0] > 0)

    def broadcast_text(self, text: str) -> str:
        """Rank 0's ``text`` on every rank (the run directory's name), as bytes, with no pickling."""
        import torch.distributed as dist

        data = torch.tensor(list(text.encode("utf-8")) if self.is_main else [], dtype=torch.uint8)
        size = self.tensor([len(data)])
        dist.broadcast(size, 0)
        buf = torch.zeros(int(size[0]), dtype=torch.uint8, device=self.device)
        if self.is_main:
            buf.copy_(data.to(self.device))
        dist.broadcast(buf, 0)
        return bytes(buf.cpu().tolist()).decode("utf-8")

    def broadcast_module(self, module: nn.Module) -> None:
        """Copy rank 0's parameters and buffers into every rank's ``module`` (DDP: a full replica per rank)."""
        import torch.distributed as dist

        with torch.no_grad():
            for t in module.state_dict().values():
                if isinstance(t, torch.Tensor):
                    dist.broadcast(t, 0)

    def gather_rng(self) -> list[torch.Tensor]:
        """Every rank's CPU random-generator state (rank order), for an exact resume of each."""
        import torch.distributed as dist

        mine = torch.get_rng_state().to(self.device)
        out = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(out, mine)
        return [t.cpu() for t in out]

    # ------------------------------------------------------------------ models
    def prepare(self, model: nn.Module) -> nn.Module:
        """Before the optimizer is built. FSDP shards ``model`` in place (``fully_shard`` on every child holding
        parameters, then the root), so the optimizer sees the sharded parameters; DDP converts BatchNorm to
        SyncBatchNorm on CUDA (batch statistics over the global batch, as one process computes them)."""
        if self.mode == "fsdp":
            from torch.distributed.fsdp import fully_shard

            for child in list(model.modules())[1:]:
                if any(True for _ in child.parameters(recurse=False)) and not any(
                        True for _ in child.children()):
                    fully_shard(child)
            fully_shard(model)
            return model
        if self.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model

    def wrap_step(self, task: nn.Module) -> Any:
        """After the optimizer is built: what the Trainer calls for ``task.training_step(batch)``.

        DDP wraps the training step, not the model: its forward is ``task.training_step``, so the gradient hooks
        are armed however the task uses its model (a VAE calls ``encode``/``decode``, not ``forward``), and the
        task's ``model`` stays the plain module (attributes, evaluation and saving as in one process). Rank 0's
        buffers (BatchNorm statistics) are broadcast at every step, as DDP does. FSDP's sharded model is
        called as it is."""
        if self.mode == "fsdp":
            return task.training_step
        import warnings

        from torch.nn.parallel import DistributedDataParallel

        # a weight with a dimension of size 1 (a conv on one input channel) may have strides that differ from its
        # gradient's in that dimension only; DDP copies it either way, so its performance warning is noise here
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        ids = [self.device.index] if self.device.type == "cuda" else None
        # static_graph: parameters the step leaves unused (the same ones every step) are found once, at the first
        # step, instead of stalling DDP or costing a traversal of the graph at every step
        return DistributedDataParallel(_TrainingStep(task), device_ids=ids, static_graph=True)

    def model_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The full (unsharded) state dict on the CPU: FSDP gathers it (every rank must call; rank 0 receives
        it, the others an empty dict); DDP's replica is already full."""
        if self.mode != "fsdp":
            return model.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        _reshard(model)
        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        if self.mode != "fsdp":
            return optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(model, optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def load_model_state(self, model: nn.Module, state: dict[str, torch.Tensor], from_rank0: bool = False) -> None:
        """Load a full state dict into the (sharded) model: every rank holds it (read from the run directory),
        or, ``from_rank0``, rank 0 alone does and FSDP broadcasts it."""
        if self.mode != "fsdp":
            model.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        _reshard(model)
        options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=from_rank0)
        set_model_state_dict(model, state if self.is_main or not from_rank0 else {}, options=options)

    def load_optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        if self.mode != "fsdp":
            optimizer.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def _reshard(model: nn.Module) -> None:
    """Put every FSDP module back in its sharded state (a task that calls its model's methods other than
    ``forward``, e.g. a VAE's ``encode``/``decode``, can leave the root's parameters gathered)."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


class _TrainingStep(nn.Module):
    """``forward(batch) = task.training_step(batch)``: the module DDP wraps."""

    def __init__(self, task: nn.Module) -> None:
        super().__init__()
        self.task = task

    def forward(self, batch: Any) -> torch.Tensor:
        return self.task.training_step(batch)


def from_env(mode: str = "ddp") -> Distributed | None:
    """The process's place in a torchrun job, or ``None`` for a single process (no ``WORLD_SIZE`` or 1)."""
    world = env_world_size()
    if world <= 1:
        return None
    if mode not in MODES:
        raise DeepfoundryError(f"trainer.distributed must be one of {', '.join(MODES)}, received {mode!r}")
    try:
        rank = int(os.environ["RANK"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except (KeyError, ValueError):
        raise DeepfoundryError(f"WORLD_SIZE={world} is set but RANK is missing or not a number: start the run "
                               "with torchrun (docs/distributed.md)") from None
    if not 0 <= rank < world:
        raise DeepfoundryError(f"RANK={rank} is outside 0..{world - 1}")
    return Distributed(rank=rank, world_size=world, local_rank=local, mode=mode)


def check_batch_size(batch_size: int, world_size: int) -> None:
    """``data.batch_size`` is the global batch: it must split evenly over the ranks."""
    if batch_size % world_size:
        raise DeepfoundryError(f"data.batch_size {batch_size} is not divisible by the world size {world_size}: "
                               f"each of the {world_size} processes takes an equal share of every batch; use a "
                               f"multiple of {world_size}")


def check_loader(loader: Any, what: str) -> None:
    """A training loader must take a per-rank share of every batch (``shard(rank, world)``)."""
    if not callable(getattr(loader, "shard", None)):
        raise DeepfoundryError(f"{what} cannot train under torchrun: its training loader "
                               f"({type(loader).__name__}) yields the whole data set as one batch, which "
                               "has no per-process share; train it in one process")
