"""deepfoundry: every classic deep-learning technique as real, fast, tested software.

>>> import deepfoundry
>>> run = deepfoundry.train("lenet5-digits")
>>> run.evaluate("test")
"""
from ._version import __version__  # noqa: E402

from .config import RunConfig, load_config  # noqa: E402
from .errors import DeepfoundryError  # noqa: E402
from .registry import DATASETS, MODELS, TASKS, Registry  # noqa: E402
from .data import DataBundle, build_data  # noqa: E402
from .engine import Callback, Trainer  # noqa: E402
from .api import Run, load_run, train  # noqa: E402
from .crossval import cross_validate  # noqa: E402
from .compare import compare_runs  # noqa: E402
from .tune import tune  # noqa: E402  (the function shadows the module: from deepfoundry.tune import load_space)

__all__ = ["DATASETS", "MODELS", "TASKS", "Callback", "DataBundle", "DeepfoundryError", "Registry", "Run",
           "RunConfig", "Trainer", "build_data", "compare_runs", "cross_validate", "load_config", "load_run", "train",
           "tune", "__version__"]
