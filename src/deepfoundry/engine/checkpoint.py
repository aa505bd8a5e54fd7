"""Checkpoints as one safetensors file: every tensor of a nested state, plus its JSON skeleton.

Nothing is pickled. A state is any nesting of dicts (str or int keys), lists, tensors and JSON
scalars, e.g. ``{"model": model.state_dict(), "optimizer": opt.state_dict(), "trainer": {...}}``.
Tensors go into the safetensors body under their path (``optimizer/state/0/exp_avg``); everything
else goes into the header's metadata as JSON with ``{"__tensor__": path}`` placeholders.
Files are written atomically: a temporary file in the same folder, fsync, then ``os.replace``.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import DeepfoundryError

_TENSOR, _DICT = "__tensor__", "__dict__"


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


def atomic_write(path: str | Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then move the file into place atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """Write a nested state atomically as safetensors (see the module docstring)."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, "", tensors, set())
    meta = {"format": "deepfoundry-state-v1", "skeleton": json.dumps(skeleton)}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a state written by :func:`save_state`; a damaged file is a one-line DeepfoundryError."""
    path = Path(path)
    if not path.is_file():
        raise DeepfoundryError(f"checkpoint '{path}' does not exist")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        if meta.get("format") != "deepfoundry-state-v1":
            raise ValueError("not a deepfoundry checkpoint (format tag missing)")
        return _unflatten(json.loads(meta["skeleton"]), tensors)
    except DeepfoundryError:
        raise
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise DeepfoundryError(f"checkpoint '{path}' is corrupt or unreadable: {exc}") from exc


def save_weights(path: str | Path, model: torch.nn.Module, metadata: dict[str, str] | None = None) -> None:
    """A model's ``state_dict`` as plain safetensors (readable by any safetensors tool)."""
    tensors: dict[str, torch.Tensor] = {}
    flat = _flatten(model.state_dict(), "", tensors, set())
    named = {k: tensors[v[_TENSOR]] for k, v in flat.items()}
    atomic_write(path, lambda tmp: save_file(named, tmp, metadata=metadata or {}))


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise DeepfoundryError(f"weights file '{path}' does not exist")
    try:
        with safe_open(str(path), framework="pt") as fh:
            return {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:
        raise DeepfoundryError(f"weights file '{path}' is corrupt or unreadable: {exc}") from exc
