"""The divergence guard for finite blow-ups (the NaN/inf guard is in the Trainer's loop).

A loss that jumps to ``1e30`` is still finite, so ``math.isfinite`` lets it pass. The guard flags a
loss whose size exceeds ``factor`` times the running median of the recent losses' sizes::

    |loss_t| > factor * max(median(|loss_{t-W}| ... |loss_{t-1}|), 1)

The median (of a ring of the last ``WINDOW`` values, recomputed every ``EVERY`` values) ignores a
few spikes; the floor of 1 keeps a loss that has converged near 0 (``1e-6`` -> ``1e-3``) from
counting as a blow-up. The guard arms after ``WARMUP`` values. It sees every step's loss on the
CPU and one loss every ``trainer.log_every_steps`` steps on accelerators (no extra synchronisation).

>>> guard = DivergenceGuard(factor=1e3)
>>> [guard.check(2.3) for _ in range(30)][-1], guard.check(1e30)
(False, True)
"""
from __future__ import annotations

import statistics
from typing import Any


class DivergenceGuard:
    """Running median of ``|loss|`` over a ring of recent values; :meth:`check` says whether a value blew up."""

    WINDOW, WARMUP, EVERY = 50, 20, 10

    def __init__(self, factor: float = 1e3) -> None:
        self.factor = factor
        self.values = [0.0] * self.WINDOW  # the ring of recent |loss|
        self.count = 0                     # values seen
        self.median = float("nan")         # of the ring, when last recomputed
        self.threshold = float("inf")      # factor * max(median, 1); inf until armed
        self.warned = False                # the Trainer warns once per run

    def check(self, value: float) -> bool:
        """Record ``value``; True when it exceeds the threshold set by the values before it."""
        size = abs(value)
        blown = size > self.threshold
        self.values[self.count % self.WINDOW] = size
        self.count += 1
        if self.count % self.EVERY == 0 and self.count >= self.WARMUP:
            self.median = statistics.median(self.values[:min(self.count, self.WINDOW)])
            self.threshold = self.factor * max(self.median, 1.0)
        return blown

    def state_dict(self) -> dict[str, Any]:
        return {"values": list(self.values), "count": self.count, "median": self.median,
                "threshold": self.threshold, "warned": self.warned}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.values, self.count = list(state["values"]), state["count"]
            self.median, self.threshold, self.warned = state["median"], state["threshold"], state["warned"]
