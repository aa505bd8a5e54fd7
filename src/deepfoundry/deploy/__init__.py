"""Deployment: export a run to ONNX / TorchScript / ``torch.export`` (:mod:`.export`), optimise it
(int8 quantisation, pruning: :mod:`.optimize`), serve it over HTTP with a web page (:mod:`.serve`,
``create_app``) and watch it for drift (:mod:`.monitor`).

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


def create_app(path: Any, **kwargs: Any) -> Any:
    """The FastAPI app serving a run or bundle (see :func:`deepfoundry.deploy.serve.create_app`)."""
    from .serve import create_app as _create_app

    return _create_app(path, **kwargs)


__all__ = ["create_app", "export_run", "optimize_run"]
