"""Checkpoints as one safetensors file: every tensor of a nested state, plus its JSON skeleton.

Nothing is pickled. A state is any nesting of dicts (str or int keys), lists, tensors and JSON
scalars, e.g. ``{"model": model.state_dict(), "optimizer": opt.state_dict(), "trainer": {...}}``.
Tensors go into the safetensors body under their path (``optimizer/state/0/exp_avg``); everything
else goes into the header's metadata as JSON with ``{"__tensor__": path}`` placeholders.

Every file written here can be trusted when read back:

- it is written atomically (a temporary ``.<name>.<random>.tmp`` in the same folder, fsync, then
  ``os.replace``), with the mode the umask gives (``0644`` under umask ``022``), and a full disk is
  one line that leaves the previous file in place and no temporary behind;
- it carries a SHA-256 of its metadata and tensors (``deepfoundry_sha256`` in its metadata, see
  :func:`checksum`), checked on every load: flipped bytes are a one-line error, never damaged values.
  Files without it (older versions, other tools) load unchecked;
- saving a state over an intact ``last.safetensors`` first moves it to ``previous.safetensors``, and
  :func:`load_resume_state` falls back on it when ``last`` is damaged.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import DeepfoundryError

_TENSOR, _DICT = "__tensor__", "__dict__"
CHECKSUM_KEY = "deepfoundry_sha256"
LAST = "last.safetensors"  # a checkpoint by this name keeps the one it replaces as previous.safetensors
_NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
_TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")  # tempfile.mkstemp(prefix=".<name>.", suffix=".tmp")
_umask_lock = threading.Lock()
_verified: dict[str, tuple[int, int, int]] = {}  # files this process wrote: path -> (inode, size, mtime_ns)


def _flatten(obj: Any, path: str, tensors: dict[str, torch.Tensor], seen: set[int]) -> Any:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen or t.storage_offset() != 0 or t.untyped_storage().nbytes() != t.nbytes:
            t = t.clone()  # safetensors refuses tensors that share or partly use storage
        seen.add(t.untyped_storage().data_ptr())
        tensors[path] = t
        return {_TENSOR: path}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and _TENSOR not in obj and _DICT not in obj:
            return {k: _flatten(v, f"{path}/{k}", tensors, seen) for k, v in obj.items()}
        return {_DICT: [[k, _flatten(v, f"{path}/{k}", tensors, seen)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [_flatten(v, f"{path}/{i}", tensors, seen) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {path!r} in a checkpoint")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if _TENSOR in obj:
            return tensors[obj[_TENSOR]]
        if _DICT in obj:
            return {k: _unflatten(v, tensors) for k, v in obj[_DICT]}
        return {k: _unflatten(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


# ---------------------------------------------------------------------------------------- checksums
def checksum(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> str:
    """The SHA-256 (hex) a file written here carries under ``deepfoundry_sha256``.

    It hashes ``json.dumps({"metadata": ..., "tensors": [[name, dtype, shape], ...]}, sort_keys=True)``
    (the metadata without the checksum itself, the tensors in sorted name order), then each tensor's
    raw bytes in the same order. The same tensors and metadata give the same checksum whether they
    were about to be written or were just read.

    >>> checksum({"w": torch.zeros(2)}) == checksum({"w": torch.zeros(2)})
    True
    """
    names = sorted(tensors)
    head = {"metadata": {k: v for k, v in (metadata or {}).items() if k != CHECKSUM_KEY},
            "tensors": [[n, str(tensors[n].dtype).removeprefix("torch."), list(tensors[n].shape)] for n in names]}
    digest = hashlib.sha256(json.dumps(head, sort_keys=True).encode("utf-8"))
    for name in names:
        t = tensors[name]
        if t.numel():
            digest.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())  # (nbytes,)
    return digest.hexdigest()


class _Damaged(Exception):
    """The tensors or metadata read differ from those the checksum was computed on."""


def _read(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """The metadata and tensors of a safetensors file; a checksum that does not match raises."""
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    expected = meta.get(CHECKSUM_KEY)
    if expected is not None and checksum(tensors, meta) != expected:
        raise _Damaged()
    return meta, tensors


def _damaged(kind: str, path: Path) -> DeepfoundryError:
    return DeepfoundryError(f"{kind} '{path}' is damaged: its tensor data does not match the checksum written with it")


def _intact(path: Path) -> bool:
    """Whether ``path`` reads back whole and matches its checksum (files this process wrote are trusted)."""
    try:
        st = path.stat()
        if _verified.get(str(path)) == (st.st_ino, st.st_size, st.st_mtime_ns):
            return True
        _read(path)
        return True
    except Exception:  # unreadable or damaged: either way not worth keeping
        return False


# ---------------------------------------------------------------------------------------- writing
def _file_mode() -> int:
    """``0o666`` less the process's umask: the mode ``open()`` gives a new file (mkstemp gives 0600)."""
    try:  # Linux reports the umask without changing it
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:  # elsewhere: set it and put it back at once
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def _no_space(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in _NO_SPACE
    text = str(exc)  # safetensors' writer reports I/O errors as "... No space left on device (os error 28)"
    return any(f"(os error {code})" in text for code in _NO_SPACE) or "No space left on device" in text


def atomic_write(path: str | Path, write: Callable[[str], Any], *, keep_previous: str | Path | None = None) -> None:
    """Call ``write(tmp_path)`` then move the file into place atomically.

    The temporary file (``.<name>.<random>.tmp`` in the same folder) is fsynced and given the mode
    the umask allows before ``os.replace``. With ``keep_previous``, an intact file already at ``path``
    is first moved there. A full disk raises one line; the old file stays and the temporary is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, _file_mode())
        if keep_previous is not None and path.exists() and _intact(path):
            os.replace(path, keep_previous)  # a damaged last is dropped, never rotated over a good previous
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if _no_space(exc):
            kept = (f"the previous {'checkpoint' if path.suffix == '.safetensors' else 'file'} is intact"
                    if path.exists() else "nothing was written")
            raise DeepfoundryError(f"no space left on device while writing '{path}'; {kept}") from exc
        raise


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporaries an interrupted :func:`atomic_write` left in ``folder`` (``.<name>.<random>.tmp``).

    Only files of that pattern are touched; call it when nothing else writes the folder (before a resume).
    Returns the removed paths.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in folder.iterdir():
        if _TEMPORARY.match(entry.name) and entry.is_file():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def previous_path(last: str | Path) -> Path:
    """Where a rotated checkpoint goes: ``last.safetensors`` -> ``previous.safetensors``; ``x.y`` -> ``x.previous.y``."""
    last = Path(last)
    return last.with_name("previous" + last.suffix if last.stem == "last" else f"{last.stem}.previous{last.suffix}")


def _remember(path: Path) -> None:
    st = path.stat()
    _verified[str(path)] = (st.st_ino, st.st_size, st.st_mtime_ns)


def save_state(path: str | Path, state: dict[str, Any], *, keep_previous: bool | None = None) -> None:
    """Write a nested state atomically as safetensors (see the module docstring).

    ``keep_previous`` first moves an intact file at ``path`` to :func:`previous_path`, so one damaged
    checkpoint never loses the run; by default it is on for ``last.safetensors`` (what every training
    loop resumes from: the Trainer's ``Checkpoint`` callback, DQN's loop) and off for any other name.
    """
    path = Path(path)
    if keep_previous is None:
        keep_previous = path.name == LAST
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, "", tensors, set())
    meta = {"format": "deepfoundry-state-v1", "skeleton": json.dumps(skeleton)}
    meta[CHECKSUM_KEY] = checksum(tensors, meta)
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta),
                 keep_previous=previous_path(path) if keep_previous else None)
    _remember(path)


# ---------------------------------------------------------------------------------------- reading
def load_state(path: str | Path) -> dict[str, Any]:
    """Read a state written by :func:`save_state`; a damaged file is a one-line DeepfoundryError."""
    path = Path(path)
    if not path.is_file():
        raise DeepfoundryError(f"checkpoint '{path}' does not exist")
    try:
        meta, tensors = _read(path)
        if meta.get("format") != "deepfoundry-state-v1":
            raise ValueError("not a deepfoundry checkpoint (format tag missing)")
        return _unflatten(json.loads(meta["skeleton"]), tensors)
    except _Damaged:
        raise _damaged("checkpoint", path) from None
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise DeepfoundryError(f"checkpoint '{path}' is corrupt or unreadable: {_first_line(exc)}") from exc


def load_resume_state(path: str | Path) -> tuple[dict[str, Any], Path, str | None]:
    """The state a resume continues from: ``(state, path used, warning or None)``.

    ``path`` is a run directory, its ``checkpoints`` folder or the ``last.safetensors`` itself. A
    damaged or missing ``last`` falls back on ``previous.safetensors`` with a one-line warning; when
    neither can be read the error names both files.
    """
    path = Path(path)
    if path.is_dir():
        path = (path / "checkpoints" if (path / "checkpoints").is_dir() else path) / LAST
    previous = previous_path(path)
    try:
        return load_state(path), path, None
    except DeepfoundryError as exc:
        if not previous.is_file():
            if not path.is_file():
                raise
            raise DeepfoundryError(f"{exc}; there is no previous checkpoint '{previous}' to continue from") from None
        reason = exc
    try:
        state = load_state(previous)
    except DeepfoundryError as exc:
        raise DeepfoundryError(f"cannot resume: {reason}; and {exc}") from None
    return state, previous, f"{reason}; continuing from the previous checkpoint '{previous}'"


def save_weights(path: str | Path, model: torch.nn.Module, metadata: dict[str, str] | None = None,
                 state: dict[str, torch.Tensor] | None = None) -> None:
    """A model's ``state_dict`` (or ``state``, e.g. the full one FSDP gathered) as plain safetensors (readable
    by any safetensors tool), with its checksum."""
    tensors: dict[str, torch.Tensor] = {}
    flat = _flatten(model.state_dict() if state is None else state, "", tensors, set())
    named = {k: tensors[v[_TENSOR]] for k, v in flat.items()}
    meta = dict(metadata or {})
    meta[CHECKSUM_KEY] = checksum(named, meta)
    atomic_write(path, lambda tmp: save_file(named, tmp, metadata=meta))


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, checked against their checksum when the file carries one."""
    path = Path(path)
    if not path.is_file():
        raise DeepfoundryError(f"weights file '{path}' does not exist")
    try:
        return _read(path)[1]
    except _Damaged:
        raise _damaged("weights file", path) from None
    except Exception as exc:
        raise DeepfoundryError(f"weights file '{path}' is corrupt or unreadable: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
