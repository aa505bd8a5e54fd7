"""A run directory has one owner: who may write it, and what a resume may change.

- :func:`claim` takes ``RUN/.lock`` for the life of a training process (created with ``O_EXCL``, so of two
  processes started together exactly one gets it) holding ``{"pid", "host", "started"}``. A lock left by a
  dead process on this host is stale and taken over; a live owner, or one on another host (whose process
  cannot be checked from here), refuses the second writer in one line.
- :func:`check_new_run` refuses an empty ``--out`` and an existing non-empty folder unless ``overwrite``
  (which empties it first).
- :func:`resume_changes` compares the config a resume would use with the run's saved one: changes that
  keep the run exact or are meant to apply from now on are allowed (more epochs or environment steps, a new
  learning rate, where logs go), each explained in one line; anything that would mix two runs (seed, data,
  batch size, model, task, optimizer, schedule, ...) is refused before anything on disk changes.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from contextlib import contextmanager

from ..config import RunConfig, flatten_keys
from ..errors import DeepfoundryError

LOCK = ".lock"

# keys a resume may change without mixing two runs: what they change, in words
HARMLESS = {
    "trainer.progress": "the progress display",
    "trainer.tensorboard": "TensorBoard logging",
    "trainer.report": "whether the report is written",
    "trainer.log_every_steps": "how often steps are logged",
    "trainer.checkpoint_every_steps": "how often checkpoints are written",
    "trainer.threads": "the CPU thread count",
    "trainer.device": "the device",
    "trainer.grad_norms": "gradient-norm logging",
    "trainer.mlflow": "MLflow tracking",
    "trainer.mlflow_uri": "the MLflow store",
    "data.root": "where the data is read from",
    "data.download": "whether missing data is downloaded",
    "description": "the description",
}
LONGER = ("trainer.epochs", "task.total_steps")  # may grow (the schedule stretches to the new length)
FROM_NOW_ON = ("optim.lr",)                       # applies from the checkpoint on, recorded in metrics.jsonl


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@dataclass
class Claim:
    """A held ``RUN/.lock``; :meth:`release` (or leaving :func:`claim`'s block) removes it, and the folder too
    when :func:`acquire` created it and nothing else was written there (a run refused before it started)."""

    path: Path
    token: dict[str, Any] = field(default_factory=dict)
    created: bool = False

    def release(self) -> None:
        try:
            if json.loads(self.path.read_text(encoding="utf-8")) == self.token:
                self.path.unlink()
                if self.created and not any(self.path.parent.iterdir()):
                    self.path.parent.rmdir()
        except (OSError, ValueError):
            pass


def _take(lock: Path, token: dict[str, Any]) -> bool:
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(token, fh)
    return True


def acquire(run_dir: str | Path) -> Claim:
    """Take ``run_dir/.lock`` (creating the folder); a live owner is a one-line :class:`DeepfoundryError`."""
    run_dir = Path(run_dir)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / LOCK
    token = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    for _ in range(3):
        if _take(lock, token):
            return Claim(lock, token, created)
        try:
            owner = json.loads(lock.read_text(encoding="utf-8"))
            pid, host = int(owner["pid"]), str(owner["host"])
        except (OSError, ValueError, KeyError, TypeError):
            owner, pid, host = None, -1, ""
        if owner is None:  # being written by the other process right now, or unreadable: look again
            time.sleep(0.05)
            if lock.exists() and not _readable(lock):
                raise DeepfoundryError(f"'{lock}' exists and is not a lock this version wrote; remove it if no "
                                       "training writes this run")
            continue
        if host == socket.gethostname() and not _alive(pid):
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        where = "this machine" if host == socket.gethostname() else f"host {host}"
        raise DeepfoundryError(f"run directory '{run_dir}' is in use by process {pid} on {where} ({lock}); "
                               "wait for it to finish, or remove the lock if that process is gone")
    raise DeepfoundryError(f"could not take the lock '{lock}'; another process keeps taking it")


def _readable(lock: Path) -> bool:
    try:
        json.loads(lock.read_text(encoding="utf-8"))
        return True
    except (OSError, ValueError):
        return False


@contextmanager
def claim(run_dir: str | Path) -> Iterator[Claim]:
    """``with claim(RUN):`` the run directory is this process's until the block ends."""
    held = acquire(run_dir)
    try:
        yield held
    finally:
        held.release()


def check_out(out: str | Path | None) -> None:
    """An empty ``--out`` (an unset shell variable) would write the run into the current folder."""
    if out is not None and str(out).strip() in ("", "."):
        raise DeepfoundryError(f"--out {str(out)!r} names no new folder (an unset variable?); give the run "
                               "directory to create, e.g. --out runs/my-run")


def check_new_run(run_dir: Path, overwrite: bool) -> None:
    """A new run needs an empty (or absent) folder: a non-empty one is refused unless ``overwrite``, which
    empties it (the lock this process holds stays)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise DeepfoundryError(f"--out '{run_dir}' is a file, not a folder")
    entries = [p for p in run_dir.iterdir() if p.name != LOCK] if run_dir.is_dir() else []
    if not entries:
        return
    if not overwrite:
        kind = ("a finished run" if (run_dir / "model.json").exists() else
                "an interrupted run (continue it with 'deepfoundry train --resume " f"{run_dir}')"
                if (run_dir / "checkpoints" / "last.safetensors").exists() else "a non-empty folder")
        raise DeepfoundryError(f"--out '{run_dir}' is {kind}; choose a new folder, or pass --overwrite to "
                               "replace what is in it")
    for p in entries:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def resume_changes(saved: RunConfig, new: RunConfig, state: dict[str, Any] | None = None,
                   recipe: RunConfig | None = None) -> list[str]:
    """The changes ``new`` makes to the run's ``saved`` config, in words, one per line; a change that would
    break the resumed run's exactness is a :class:`DeepfoundryError` naming each such key.

    ``state`` is the checkpoint (for the epoch reached); ``recipe`` a recipe given beside ``--resume``,
    which must be the run's own (with the same overrides) to be accepted."""
    if recipe is not None:
        differ = _differences(saved, recipe, ignore=set(HARMLESS))
        if differ:
            raise DeepfoundryError(f"--resume continues the run with its own config; the recipe given beside it "
                                   f"differs in {', '.join(differ[:6])}{' ...' if len(differ) > 6 else ''} "
                                   "(drop the recipe, or start a new run)")
    before, after = flatten_keys(saved.model_dump(mode="json")), flatten_keys(new.model_dump(mode="json"))
    changes, refused = [], []
    for key in sorted(set(before) | set(after)):
        old, value = before.get(key), after.get(key)
        if old == value:
            continue
        if key in HARMLESS:
            changes.append(f"{key}: {old!r} -> {value!r} ({HARMLESS[key]})")
        elif key in LONGER:
            if value is None or old is None or value < old:
                done = _done(state, key)
                refused.append(f"{key} {old} -> {value} (a resume can only lengthen a run{done}; to stop early "
                               "use the run as it is, or start a new one)")
            else:
                changes.append(f"{key}: {old} -> {value} (the run goes on longer; the schedule stretches to the new "
                               "length)")
        elif key in FROM_NOW_ON:
            changes.append(f"{key}: {old} -> {value} (from the checkpoint on)")
        else:
            refused.append(f"{key} {old!r} -> {value!r}")
    if refused:
        raise DeepfoundryError("a resume continues the run exactly, so it cannot change: " + "; ".join(refused)
                               + " (start a new run with --out to train with other settings)")
    return changes


def _done(state: dict[str, Any] | None, key: str) -> str:
    trainer = (state or {}).get("trainer") or {}
    if key == "trainer.epochs" and "epoch" in trainer:
        return f", which has finished epoch {trainer['epoch']}"
    if key == "task.total_steps" and "step" in (state or {}):
        return f", which is at step {state['step']}"
    return ""


def _differences(a: RunConfig, b: RunConfig, ignore: set[str]) -> list[str]:
    fa, fb = flatten_keys(a.model_dump(mode="json")), flatten_keys(b.model_dump(mode="json"))
    return [k for k in sorted(set(fa) | set(fb)) if k not in ignore and fa.get(k) != fb.get(k)]
