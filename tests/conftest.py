"""Shared test fixtures.

Real data sets live beside the repository in ``../shared/datasets`` (see its README);
``DEEPFOUNDRY_DATASETS`` points elsewhere. Tests that need them skip when they are absent.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Callable

import pytest


def shared_datasets_dir() -> Path:
    """``$DEEPFOUNDRY_DATASETS``, else ``<repo>/../shared/datasets``."""
    env = os.environ.get("DEEPFOUNDRY_DATASETS")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def _missing(reason: str) -> None:
    """Skip in a user's clone; fail under CI (``DEEPFOUNDRY_REQUIRE_DATASETS=1``, set by .ci/run)."""
    if os.environ.get("DEEPFOUNDRY_REQUIRE_DATASETS") == "1":
        pytest.fail(f"{reason} (DEEPFOUNDRY_REQUIRE_DATASETS=1: CI must run every data test)")
    pytest.skip(reason)


def require_shared_dataset(name: str = "") -> Path:
    """The folder ``name`` inside the shared data sets (or the folder itself); skip the test when absent."""
    root = shared_datasets_dir()
    if not root.is_dir():
        _missing(f"../shared/datasets not found: {root} (set DEEPFOUNDRY_DATASETS to its location)")
    folder = root / name if name else root
    if not folder.exists():
        _missing(f"../shared/datasets not found: {folder} is missing")
    return folder


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The shared data-set folder (skips the test when it is absent)."""
    return require_shared_dataset()


@pytest.fixture(scope="session")
def shared_dataset() -> Callable[[str], Path]:
    """``shared_dataset("mnist")`` -> the folder of one shared data set (skips the test when absent)."""
    return require_shared_dataset


FAST = {"trainer.progress": False, "trainer.tensorboard": False}


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory: pytest.TempPathFactory):
    """A real LeNet-5 run on sklearn's digits (3 epochs), shared by the API and CLI tests."""
    import deepfoundry

    return deepfoundry.train("lenet5-digits", overrides={**FAST, "trainer.epochs": 3},
                             out=tmp_path_factory.mktemp("runs") / "digits")


def _crash_class():
    from deepfoundry.engine.callbacks import Callback

    class Crash(Callback):
        """A Trainer callback that simulates a crash (``KeyboardInterrupt``) after ``after`` optimizer steps."""

        def __init__(self, after: int) -> None:
            self.after = after

        def on_train_batch_end(self, trainer, loss) -> None:
            if trainer.global_step == self.after:
                raise KeyboardInterrupt

    return Crash


Crash = _crash_class()


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """The CLI in-process: exit code, stdout, stderr."""
    from deepfoundry.cli import main

    with pytest.raises(SystemExit) as exc:
        main(args)
    out = capsys.readouterr()
    return exc.value.code or 0, out.out, out.err


def last_json(out: str) -> dict:
    """The JSON object a ``--json`` command prints on its last line."""
    return json.loads(out.strip().splitlines()[-1])


def one_line_error(code: int, err: str, pattern: str) -> str:
    """Exit code 2 and stderr one ``error: ...`` line matching the regular expression ``pattern``; returns it."""
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


def assert_one_line_error(code: int, err: str, text: str) -> str:
    """As :func:`one_line_error`, with ``text`` a plain substring of the line."""
    return one_line_error(code, err, re.escape(text))


@pytest.fixture(scope="session")
def adult_run(tmp_path_factory: pytest.TempPathFactory):
    """A real mlp-adult run (1 epoch) on the shared UCI Adult copy, shared by the serving and drift tests."""
    import deepfoundry

    root = require_shared_dataset("adult")
    return deepfoundry.train("mlp-adult", overrides={**FAST, "trainer.epochs": 1, "data.root": str(root),
                                                     "trainer.report": False},
                             out=tmp_path_factory.mktemp("runs") / "adult")
