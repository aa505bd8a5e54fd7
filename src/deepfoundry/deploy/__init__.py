"""Deployment: export a run to ONNX / TorchScript / ``torch.export`` (:mod:`.export`), optimise it
(int8 quantisation, pruning: :mod:`.optimize`), serve it over HTTP and watch for drift.

Nothing heavy is imported here: ``from deepfoundry.deploy import export_run`` loads torch's exporters
and onnxruntime only when called (the ``deploy`` extra: ``pip install 'deepfoundry[deploy]'``).
"""
from __future__ import annotations

from typing import Any


def export_run(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """See :func:`deepfoundry.deploy.export.export_run`."""
    from .export import export_run as run

    return run(*args, **kwargs)


def optimize_run(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """See :func:`deepfoundry.deploy.optimize.optimize_run`."""
    from .optimize import optimize_run as run

    return run(*args, **kwargs)


__all__ = ["export_run", "optimize_run"]
