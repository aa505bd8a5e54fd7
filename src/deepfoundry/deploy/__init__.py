"""Deployment: export and optimise a run, serve it over HTTP with a web page, watch it for drift.

``create_app(path)`` (:mod:`.serve`) is the served app; :mod:`.monitor` builds drift references and reports.
The HTTP parts need the ``deploy`` extra (``pip install 'deepfoundry[deploy]'``); they are imported on use.
"""
from __future__ import annotations

from typing import Any


def create_app(path: Any, **kwargs: Any) -> Any:
    """The FastAPI app serving a run or bundle (see :func:`deepfoundry.deploy.serve.create_app`)."""
    from .serve import create_app as _create_app

    return _create_app(path, **kwargs)


__all__ = ["create_app"]
