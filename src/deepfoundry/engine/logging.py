"""What every training loop uses to log: a JSON Lines writer and a step-based progress bar on stderr.

The Trainer's :class:`~.callbacks.JSONLLogger` writes ``metrics.jsonl`` through :class:`JsonlWriter`;
loops that count something other than epochs (reinforcement learning counts environment steps)
use both directly::

    >>> with JsonlWriter(run_dir.metrics_path) as log, StepProgress(50_000, enabled=True) as bar:
    ...     log.write({"kind": "train", "step": 1000, "loss": 0.12})
    ...     bar.update(1000, "loss 0.1200")
    ...     bar.print("step 1000  eval mean 21.0")
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

__all__ = ["JsonlWriter", "StepProgress", "stderr_console"]


class JsonlWriter:
    """Appends records to a JSON Lines file (one JSON object per line), flushed after every record,
    so a run killed at any moment leaves whole lines. Opening never truncates: a fresh or resumed run
    prepares the file first (:meth:`RunDirectory.reset_metrics <.rundir.RunDirectory.reset_metrics>`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: Any = open(self.path, "a", encoding="utf-8")

    def __repr__(self) -> str:
        return f"JsonlWriter('{self.path}')"

    def write(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            raise ValueError(f"{self!r} is closed")
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "JsonlWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def stderr_console() -> Any:
    """The rich console training loops print on: stderr, lines never broken mid-metric in logs
    (the same settings as :class:`~.callbacks.ProgressBar`'s)."""
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


class StepProgress:
    """A rich progress bar over ``total`` steps on stderr, plus one-line messages.

    With ``enabled=False`` nothing is shown or printed (``trainer.progress: false``). The bar appears
    only on a terminal (logs get the messages alone) and refreshes at most 10 times a second, so
    calling :meth:`update` every step costs next to nothing.
    """

    def __init__(self, total: int, *, enabled: bool = True, label: str = "step", console: Any = None) -> None:
        self.total, self.enabled, self.label = total, enabled, label
        self.console = console if console is not None else stderr_console()
        self._progress: Any = None
        self._task: Any = None
        self._last = 0.0

    @property
    def active(self) -> bool:
        """Whether a bar is on screen (callers may skip formatting its description when it is not)."""
        return self._progress is not None

    def start(self, completed: int = 0) -> "StepProgress":
        if self.enabled and self.console.is_terminal and self._progress is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(TextColumn(self.label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                      TextColumn("{task.description}"), console=self.console, transient=True)
            self._progress.start()
            self._task = self._progress.add_task("", total=self.total, completed=completed)
        return self

    def update(self, completed: int, description: str | None = None) -> None:
        """Move the bar to ``completed`` steps (throttled to 10 refreshes a second)."""
        if self._progress is None:
            return
        now = time.perf_counter()
        if now - self._last > 0.1 or completed >= self.total:
            fields = {} if description is None else {"description": description}
            self._progress.update(self._task, completed=completed, **fields)
            self._last = now

    def print(self, message: str) -> None:
        """One line on stderr, above the bar (nothing when disabled)."""
        if self.enabled:
            self.console.print(message, highlight=False)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __enter__(self) -> "StepProgress":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
