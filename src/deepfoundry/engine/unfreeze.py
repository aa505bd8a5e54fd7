"""Gradual unfreezing (Howard & Ruder 2018, ULMFiT) as a Trainer callback.

The callback drives any model shaped like :class:`deepfoundry.models.layer_groups.GroupedModel` (it reads
``unfreeze_every`` and ``freeze_at`` and calls ``set_trainable_from(index)``); the engine imports no model.
The Trainer adds it for every model whose ``unfreeze_every`` is set (:func:`gradual_unfreezing_for`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import DeepfoundryError
from .callbacks import Callback

if TYPE_CHECKING:
    from .trainer import Trainer


class GradualUnfreezing(Callback):
    """ULMFiT's gradual unfreezing: at the start of epoch ``e`` the trainable groups are those from
    ``max(0, freeze_at - e // every)`` on, i.e. one more group (from the head towards the input)
    every ``every`` epochs. Stateless (a function of the epoch), so resume is exact.

    >>> GradualUnfreezing.trainable_from(freeze_at=6, epoch=5, every=2)
    4
    """

    def __init__(self, every: int) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise DeepfoundryError(f"config key 'model.unfreeze_every': expected a positive integer, "
                                   f"received {every!r}")
        self.every = every

    @staticmethod
    def trainable_from(freeze_at: int, epoch: int, every: int) -> int:
        return max(0, freeze_at - epoch // every)

    def on_epoch_start(self, trainer: "Trainer", epoch: int) -> None:
        model = trainer.unwrapped_model
        model.set_trainable_from(self.trainable_from(model.freeze_at, epoch, self.every))


def gradual_unfreezing_for(model: Any) -> list[Callback]:
    """``[GradualUnfreezing(model.unfreeze_every)]`` when the model asks for gradual unfreezing, else ``[]``."""
    every = getattr(model, "unfreeze_every", None)
    return [GradualUnfreezing(every)] if every else []


__all__ = ["GradualUnfreezing", "gradual_unfreezing_for"]
