"""Import every module of a package, so that the builders they register are available by name."""
from __future__ import annotations

import importlib
import pkgutil


def import_submodules(package_name: str, skip: tuple[str, ...] = ()) -> None:
    """Import each non-private module of ``package_name`` (sorted, so registration order is stable)."""
    package = importlib.import_module(package_name)
    for mod in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if not mod.name.startswith("_") and mod.name not in skip:
            importlib.import_module(f"{package_name}.{mod.name}")
