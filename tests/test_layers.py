"""The layer rules of docs/architecture.md, held by reading every import with ``ast``.

Every ``import``/``from ... import`` in ``src/deepfoundry`` counts: at module level and inside
functions alike, except those under ``if typing.TYPE_CHECKING:`` (type hints only, never run).
A violation fails naming ``file:line``; the checker has its own tests on a small fake tree.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "deepfoundry"
SRC = Path(__file__).resolve().parents[1] / "src" / PACKAGE

# part -> the parts it must never import (at run time), from docs/architecture.md
FORBIDDEN: dict[str, set[str]] = {
    "nn": {"engine", "data", "tasks", "api", "cli", "report", "transfer", "rl", "generative", "models"},
    "models": {"engine", "data", "tasks", "api", "cli", "report", "transfer", "rl", "generative"},
    "data": {"engine", "tasks", "models", "api", "cli", "generative", "report", "rl", "transfer"},
    "engine": {"data", "tasks", "models", "rl", "api", "cli", "report", "transfer", "generative"},
    "tasks": {"api", "cli", "report", "rl", "transfer"},
    "rl": {"api", "cli", "report", "data", "transfer", "generative"},
    "report": {"api", "cli"},
    "transfer": {"api", "cli", "report", "tasks", "data", "rl"},
}
for _part in ("nn", "models", "data", "engine", "tasks", "rl", "report", "transfer"):  # deploy sits above api
    FORBIDDEN[_part] = FORBIDDEN[_part] | {"deploy"}
FORBIDDEN.setdefault("deploy", set()).add("cli")
# responsible AI (fairness, explanations, DP-SGD, ...): below api, above the families, which never import it
FORBIDDEN["responsible"] = {"api", "cli", "report"}  # api wires it in (DP-SGD, federate); it never reaches back up
for _part in ("nn", "models", "data", "engine", "tasks", "rl", "report", "transfer"):
    FORBIDDEN[_part] = FORBIDDEN[_part] | {"responsible"}  # engine takes DP-SGD through its PrivacyHook protocol
# the benchmark-suite runner (bench.py) sits beside cli: it runs scripts in subprocesses, never the layers below it
FORBIDDEN["bench"] = {"cli", "api", "deploy", "responsible", "tasks", "models", "data", "rl", "report"}
for _part in ("nn", "models", "data", "engine", "tasks", "rl", "report", "transfer", "deploy", "responsible"):
    FORBIDDEN[_part] = FORBIDDEN[_part] | {"bench"}
ONLY_IMPORTED_BY = {"cli": {"__main__"}}  # nothing but __main__ imports cli


def part_of(module: str) -> str:
    """``deepfoundry.data.images`` -> ``data``; the package root itself is ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path, root: Path, package: str) -> str:
    rel = path.relative_to(root).with_suffix("")
    names = [package, *rel.parts]
    if names[-1] == "__init__":
        names.pop()
    return ".".join(names)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(path: Path, root: Path, package: str) -> list[tuple[str, int]]:
    """Every module of ``package`` that ``path`` imports at run time, with its line.

    ``from . import x`` counts as importing ``pkg.x`` (a submodule or a name of the package: both run
    the package's ``__init__``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    this = module_name(path, root, package)
    is_pkg = path.name == "__init__.py"
    here = this.split(".") if is_pkg else this.split(".")[:-1]
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == package or alias.name.startswith(package + "."):
                    found.append((alias.name, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == package or target.startswith(package + "."):
                if node.module is None or target == package:  # from . import a, b: each name is a module or attribute
                    found.extend((f"{target}.{a.name}", node.lineno) for a in node.names)
                else:
                    found.append((target, node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def check_tree(root: Path, package: str = PACKAGE) -> list[str]:
    """All violations of the rules in ``root`` (the package folder), as ``file:line: message`` strings."""
    problems: list[str] = []
    edges: dict[str, dict[str, str]] = {}  # part -> imported part -> first "file:line"
    for path in sorted(root.rglob("*.py")):
        src_part = part_of(module_name(path, root, package))
        rel = f"{package}/{path.relative_to(root)}"
        for target, line in imports_of(path, root, package):
            dst_part = part_of(target)
            where = f"{rel}:{line}"
            if src_part == "__init__" or src_part == dst_part:
                continue
            if dst_part == "__init__" or target == f"{package}.__version__":
                problems.append(f"{where}: imports the package root '{package}' (a cycle through __init__)")
                continue
            if dst_part in FORBIDDEN.get(src_part, set()):
                problems.append(f"{where}: '{src_part}' must not import '{dst_part}' ({target})")
            allowed = ONLY_IMPORTED_BY.get(dst_part)
            if allowed is not None and src_part not in allowed:
                problems.append(f"{where}: only {', '.join(sorted(allowed))} may import '{dst_part}'")
            edges.setdefault(src_part, {}).setdefault(dst_part, where)
    problems.extend(find_cycles(edges))
    return problems


def find_cycles(edges: dict[str, dict[str, str]]) -> list[str]:
    """One message per import cycle between parts (each cycle named with the file:line of every edge)."""
    cycles: list[str] = []
    seen: set[frozenset[str]] = set()
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, {})):
            if state.get(nxt) == 1:
                loop = stack[stack.index(nxt):] + [nxt]
                key = frozenset(loop)
                if key not in seen:
                    seen.add(key)
                    hops = "; ".join(f"{a} -> {b} at {edges[a][b]}" for a, b in zip(loop, loop[1:]))
                    cycles.append(f"import cycle {' -> '.join(loop)} ({hops})")
            elif nxt not in state:
                dfs(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            dfs(node)
    return cycles


def test_the_package_holds_its_layers() -> None:
    problems = check_tree(SRC)
    assert not problems, "layer rules broken:\n" + "\n".join(problems)


def _fake_tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "fakepkg"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_checker_passes_a_clean_fake_tree(tmp_path: Path) -> None:
    root = _fake_tree(tmp_path, {
        "__init__.py": "from .api import train\n",
        "api.py": "from .engine import Trainer\nfrom .models import mlp\n",
        "engine/__init__.py": "from .trainer import Trainer\n",
        "engine/trainer.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..models import mlp\n",
        "models/__init__.py": "", "models/mlp.py": "from ..nn import layers\n",
        "nn/__init__.py": "", "nn/layers.py": "import torch\n",
    })
    assert check_tree(root, "fakepkg") == []


def test_checker_finds_a_planted_violation_inside_a_function(tmp_path: Path) -> None:
    root = _fake_tree(tmp_path, {
        "__init__.py": "",
        "engine/__init__.py": "",
        "engine/trainer.py": "import os\n\n\ndef fit():\n    from ..tasks.base import Task\n    return Task\n",
        "tasks/__init__.py": "", "tasks/base.py": "",
    })
    problems = check_tree(root, "fakepkg")
    assert problems == ["fakepkg/engine/trainer.py:5: 'engine' must not import 'tasks' (fakepkg.tasks.base)"]


def test_checker_finds_a_planted_cycle(tmp_path: Path) -> None:
    root = _fake_tree(tmp_path, {
        "__init__.py": "",
        "metrics.py": "from . import optim\n",
        "optim.py": "def f():\n    import fakepkg.metrics\n",
    })
    problems = check_tree(root, "fakepkg")
    assert len(problems) == 1
    assert problems[0].startswith("import cycle metrics -> optim -> metrics")
    assert "fakepkg/metrics.py:1" in problems[0] and "fakepkg/optim.py:2" in problems[0]


def test_checker_finds_cli_and_root_imports(tmp_path: Path) -> None:
    root = _fake_tree(tmp_path, {
        "__init__.py": "__version__ = '0'\n",
        "__main__.py": "from .cli import main\n",
        "cli.py": "",
        "api.py": "from . import __version__\nfrom .cli import main\n",
    })
    problems = check_tree(root, "fakepkg")
    assert "fakepkg/api.py:1: imports the package root 'fakepkg' (a cycle through __init__)" in problems
    assert "fakepkg/api.py:2: only __main__ may import 'cli'" in problems


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_every_ruled_part_exists(part: str) -> None:
    assert (SRC / part).is_dir() or (SRC / f"{part}.py").is_file(), f"rule names a part '{part}' that is gone"
