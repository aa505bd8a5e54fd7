"""Registries: register builders by name, build them with keyword arguments, list them with docs.

>>> from deepfoundry import MODELS
>>> import torch
>>> MODELS.build("mlp", in_features=4, num_classes=3)(torch.randn(2, 4)).shape
torch.Size([2, 3])
"""
from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Any, Callable, Iterator, Sequence, TypeVar

from .errors import DeepfoundryError

F = TypeVar("F", bound=Callable[..., Any])


class Registry:
    """A name -> builder table. Duplicate names raise; unknown names suggest the closest one.

    ``modules`` lists, by name, the modules whose builders fill this table: they are imported the first
    time the table is read (not when this module is imported), so importing a low layer never pulls in
    the high ones, and the list of what registers is written down in one place (:data:`MODELS` etc.
    below). A builder registered from anywhere else (a user's plugin, a test) works the same way.
    """

    def __init__(self, kind: str, modules: Sequence[str] = ()) -> None:
        self.kind = kind
        self.modules = tuple(modules)
        self._builders: dict[str, Callable[..., Any]] = {}
        self._loaded = not self.modules

    def load(self) -> None:
        """Import the listed modules once (each registers its builders on import)."""
        if self._loaded:
            return
        self._loaded = True  # before importing: a listed module reading the table must not recurse
        for name in self.modules:
            importlib.import_module(name)

    @property
    def _table(self) -> dict[str, Callable[..., Any]]:
        self.load()
        return self._builders

    def register(self, name: str) -> Callable[[F], F]:
        def decorator(fn: F) -> F:
            if name in self._builders:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._builders[name] = fn
            return fn

        return decorator

    def __contains__(self, name: object) -> bool:
        return name in self._table

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._table))

    def __len__(self) -> int:
        return len(self._table)

    def names(self) -> list[str]:
        return sorted(self._table)

    def get(self, name: str) -> Callable[..., Any]:
        try:
            return self._table[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._builders, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; available: {', '.join(self.names())}"
            raise DeepfoundryError(f"{self.kind} {name!r} is not registered{hint}") from None

    def describe(self, name: str) -> str:
        """First line of the builder's docstring (what ``deepfoundry list`` prints)."""
        doc = inspect.getdoc(self.get(name)) or ""
        return doc.splitlines()[0] if doc else ""

    def build(self, name: str, kwargs: dict[str, Any] | None = None, context: dict[str, Any] | None = None,
              key: str | None = None, **more: Any) -> Any:
        """Call the builder ``name``.

        ``kwargs`` are the user's arguments: every one must be a parameter of the builder (an
        unknown one is an error naming the config key ``key.<arg>``); ``None`` values are dropped
        so the builder's defaults stay. ``context`` holds facts about the data (``num_classes``,
        ``in_channels``, ``input_size``, ...) passed only to builders that accept them.
        Keyword arguments after ``key`` are merged into ``kwargs``.
        """
        fn = self.get(name)
        kwargs = {**(kwargs or {}), **more}
        params = inspect.signature(fn).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        prefix = f"{key}." if key else ""
        call: dict[str, Any] = {}
        for k, v in (context or {}).items():
            if (k in params or takes_any) and v is not None:
                call[k] = v
        for k, v in (kwargs or {}).items():
            if v is None:
                continue
            if k not in params and not takes_any:
                accepted = [p for p in params if params[p].kind is not inspect.Parameter.VAR_POSITIONAL]
                raise DeepfoundryError(
                    f"unknown config key '{prefix}{k}' for {self.kind} {name!r}; accepted: {', '.join(accepted)}")
            call[k] = v
        try:  # only a call that does not fit the signature is the user's error; the builder's own TypeErrors propagate
            inspect.signature(fn).bind(**call)
        except TypeError as exc:
            missing = [p for p, param in params.items() if param.default is inspect.Parameter.empty
                       and param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY) and p not in call]
            if missing:
                keys = ", ".join(f"'{prefix}{p}'" for p in missing)
                plural = "s" if len(missing) > 1 else ""
                raise DeepfoundryError(f"{self.kind} {name!r} needs config key{plural} {keys}; "
                                       f"received: {', '.join(call) or 'none'}") from None
            raise DeepfoundryError(f"{self.kind} {name!r}: {exc}") from None
        return fn(**call)


_MODELS = ("models.alexnet", "models.forecaster", "models.gan", "models.gnn", "models.graph_level", "models.lenet",
           "models.mlp", "models.qnet", "models.rnn", "models.seq2seq", "models.tabular", "models.text_encoder",
           "models.transformer", "models.vae", "models.vgg",
           "transfer")  # model 'transfer' reads weights files and runs, which models/ may not (it imports no engine)
_DATASETS = ("class_subset", "folds", "graph_csv", "graph_sets", "graphs", "images", "tabular", "text",
             "timeseries", "translation")
_TASKS = ("tasks.adversarial", "tasks.auto", "tasks.classification", "tasks.forecasting",
          "tasks.graph_classification", "tasks.language_model", "tasks.node_classification", "tasks.regression",
          "tasks.translation", "tasks.variational", "rl.task")

MODELS = Registry("model", [f"deepfoundry.{m}" for m in _MODELS])
DATASETS = Registry("dataset", [f"deepfoundry.data.{m}" for m in _DATASETS])
TASKS = Registry("task", [f"deepfoundry.{m}" for m in _TASKS])
