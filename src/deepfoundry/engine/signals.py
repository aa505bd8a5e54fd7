"""Stopping a run on SIGTERM or SIGINT at a step boundary, with a checkpoint to resume from.

The training loops (``Trainer.fit``, DQN's ``train_rl``) run inside :func:`graceful_stop`. The first
SIGTERM or SIGINT only sets a flag; the loop reads it once per step (one attribute read) and, at the
next step boundary, writes ``checkpoints/last.safetensors`` and raises :class:`Stopped`. The command
line turns that into one line and the shell's exit code for the signal (``128 + signum``: 143 for
SIGTERM, 130 for SIGINT)::

    stopped by SIGTERM at epoch 3, step 97; continue with 'deepfoundry train --resume runs/x'

A second signal before the loop has stopped exits at once (no checkpoint), for a run that hangs.

>>> with graceful_stop() as stop:
...     for step in range(1000):
...         if stop.signum:          # one attribute read per step
...             raise Stopped(stop.name, step=step)
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import DeepfoundryError

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_ACTIVE: "StopFlag | None" = None  # the flag of the outermost graceful_stop in this process


class StopFlag:
    """Set by the first SIGTERM/SIGINT: ``signum`` is 0 until then."""

    __slots__ = ("signum",)

    def __init__(self) -> None:
        self.signum = 0

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


class Stopped(DeepfoundryError):
    """Training stopped on a signal, at a step boundary, after writing its checkpoint.

    ``signal_name`` is ``"SIGTERM"`` or ``"SIGINT"``; ``epoch`` (1-based, ``None`` for loops without
    epochs) and ``step`` say where, or ``phase`` (``step=None``) for a signal after the loop, e.g. during
    the final evaluation; ``checkpoint`` is the file to resume from (``None`` without a run directory).
    """

    def __init__(self, signal_name: str, *, step: int | None, epoch: int | None = None,
                 checkpoint: str | Path | None = None, run_dir: str | Path | None = None,
                 phase: str | None = None) -> None:
        self.signal_name, self.epoch, self.step, self.phase = signal_name, epoch, step, phase
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.run_dir = Path(run_dir) if run_dir is not None else None
        if step is None:  # after the training loop: ``phase`` names what was running
            where = phase or "after training"
        else:
            where = f"at epoch {epoch}, step {step}" if epoch is not None else f"at step {step}"
            if phase:
                where += f" ({phase})"
        if self.checkpoint is not None and self.run_dir is not None:
            then = f"continue with 'deepfoundry train --resume {self.run_dir}'"
        else:
            then = "no checkpoint was written (the run has no run directory)"
        super().__init__(f"stopped by {signal_name} {where}; {then}")

    @property
    def exit_code(self) -> int:
        """The shell's code for death by this signal: 128 + signum (143 for SIGTERM, 130 for SIGINT)."""
        return 128 + int(signal.Signals[self.signal_name])


def _install(handler: Callable[[int, Any], None]) -> dict[int, Any]:
    """Put ``handler`` on SIGTERM and SIGINT, except where the signal is ignored (``nohup``-style, or a
    background job of a script): an ignored signal stays ignored. Returns the handlers replaced."""
    previous = {}
    for sig in SIGNALS:
        if signal.getsignal(sig) is not signal.SIG_IGN:
            previous[sig] = signal.signal(sig, handler)
    return previous


def _restore(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        if handler is not None:  # None: installed outside Python, cannot be put back
            signal.signal(sig, handler)


@contextlib.contextmanager
def graceful_stop() -> Iterator[StopFlag]:
    """Handle SIGTERM and SIGINT while the block runs; yields the :class:`StopFlag` to poll.

    The first signal sets the flag; a second one prints one line and exits at once with
    ``128 + signum``. Nested inside another ``graceful_stop`` it yields the outer flag (a signal that
    arrives while data loads is seen by the first training step). Outside the main thread (where Python cannot install handlers) the flag is
    never set; an ignored signal stays ignored. The previous handlers are put back on exit.
    """
    global _ACTIVE
    if _ACTIVE is not None:  # nested (the api around the Trainer): one flag, so no signal is lost between them
        yield _ACTIVE
        return
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handle(signum: int, frame: object) -> None:
        if flag.signum:
            name = signal.Signals(signum).name
            # os.write: print() could re-enter a write to stderr that the signal interrupted
            os.write(2, f"{name} again: exiting now, without writing a checkpoint\n".encode())
            os._exit(128 + signum)
        flag.signum = signum

    previous = _install(handle)
    _ACTIVE = flag
    try:
        yield flag
    finally:
        _ACTIVE = None
        _restore(previous)


class Terminated(BaseException):
    """SIGTERM outside a training loop, under :func:`unwind_on_signals`: unwinds like ``KeyboardInterrupt``
    (``finally`` blocks run, files are closed) instead of killing the process on the spot."""


@contextlib.contextmanager
def unwind_on_signals() -> Iterator[StopFlag]:
    """For the command line, outside the training loops (which :func:`graceful_stop` takes over):
    SIGTERM raises :class:`Terminated`; SIGINT raises ``KeyboardInterrupt`` as Python's default does.
    The yielded flag records a SIGINT, so the caller can name it even where a library turned the
    exception into an exit code (typer exits 130 on ``KeyboardInterrupt``). Main thread only.
    """
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handle(signum: int, frame: object) -> None:
        if signum == signal.SIGINT:
            flag.signum = signum
            raise KeyboardInterrupt
        raise Terminated(signal.Signals(signum).name)

    previous = _install(handle)
    try:
        yield flag
    finally:
        _restore(previous)
