"""The Task: what a family of models means, for training and for its users.

A Task is an ``nn.Module`` that owns the model. Training (the Trainer calls these; the contract the
engine needs is :class:`deepfoundry.engine.contracts.TrainableTask`): ``training_step(batch) -> loss``
in its loop, ``evaluation_step(batch)`` on validation/test batches (the task accumulates what its
metrics need) and ``compute_metrics()`` at the end of an evaluation pass. Tasks with several
optimizers (GANs) set ``manual_optimization = True`` and step their own optimizers inside
``training_step``.

Using a trained model, the family's **input/output contract** (``Run.predict``, ``deepfoundry predict``,
the report, serving and export all go through it)::

    raw inputs --encode_inputs--> batch --predict--> outputs --decode_outputs--> [{...}, ...] (JSON-ready)
                                                             --predictions-->    np.ndarray   (Run.predict)

``encode_inputs`` uses the codec of the data's input kind (:mod:`deepfoundry.data.codecs`: image
files/arrays, raw table rows, texts, graph batches) with the run's saved preprocessing;
``read_inputs`` turns command-line arguments into raw inputs. A family that cannot take an input
(a language model asked to classify, a GAN asked to predict) refuses in one line.

Serving (:mod:`deepfoundry.deploy.serve`, :mod:`deepfoundry.deploy.monitor`) uses the same halves: the codec
checks each JSON example and extracts drift features; the task says whether it answers inputs
(:meth:`Task.serves`) and what drift monitoring watches of an answer (``prediction_labels``,
:meth:`monitored_prediction`).

Export (:mod:`deepfoundry.deploy.export`) goes through the same contract: a family whose ``predict`` is
one graph sets ``exportable = True``; :meth:`Task.export_graph` is then a module mapping
``export_inputs(raw)`` (the codec's graph inputs: raw arrays, encoded table rows, token ids and lengths)
to exactly what ``predict(encode_inputs(raw))`` gives. Other families refuse in one line.
"""
from __future__ import annotations

import copy
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..data.codecs import ReadInputs, codec_for
from ..errors import DeepfoundryError


class Task(nn.Module):
    manual_optimization: bool = False
    report_sections: tuple[str, ...] = ("curves",)  # report sections of the family, in order (deepfoundry.report.SECTIONS)

    def __init__(self, model: nn.Module, info: dict[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.info = info

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: Any) -> torch.Tensor:
        raise NotImplementedError

    def reset_metrics(self) -> None:
        raise NotImplementedError

    def evaluation_step(self, batch: Any) -> None:
        raise NotImplementedError

    def compute_metrics(self) -> dict[str, Any]:
        raise NotImplementedError

    def predict(self, x: Any) -> Any:
        """Model outputs for an encoded batch, in the user's units (probabilities, values, ...)."""
        raise DeepfoundryError(f"a {self.family} run does not predict inputs{self.use_instead}")

    # ------------------------------------------------------------------ the input/output contract
    @property
    def family(self) -> str:
        """A short name of the family for messages (``classification``, ``language model``, ...)."""
        return type(self).__name__.removesuffix("Task").lower() or "task"

    use_instead = ""  # e.g. ": use Run.generate(prompt) or 'deepfoundry generate RUN'"

    def encode_inputs(self, raw: Any) -> Any:
        """Raw inputs -> the model's batch, with the run's saved preprocessing (the input kind's codec)."""
        return codec_for(self.info).encode(raw)

    def read_inputs(self, arguments: Sequence[str]) -> ReadInputs:
        """Command-line arguments (files, texts) -> names and raw inputs (the input kind's codec)."""
        return codec_for(self.info).read(arguments)

    def decode_outputs(self, outputs: Any) -> list[dict[str, Any]]:
        """Outputs of :meth:`predict` -> one JSON-ready dict per example."""
        raise DeepfoundryError(f"a {self.family} run does not predict inputs{self.use_instead}")

    def predictions(self, outputs: Any) -> np.ndarray:
        """Outputs of :meth:`predict` -> the array ``Run.predict`` returns (one value or row per example)."""
        return torch.as_tensor(outputs).squeeze(-1).numpy()

    def probabilities(self, batch: Any) -> torch.Tensor:
        """Class probabilities (N, C) of an encoded batch; only classifiers have them."""
        raise DeepfoundryError(f"predict_proba needs a classification run; this is a {self.family} run")

    def serves(self) -> bool:
        """Whether the family answers raw inputs (``decode_outputs``), so that ``deepfoundry serve`` can serve it."""
        return type(self).decode_outputs is not Task.decode_outputs

    prediction_labels: list[str] | None = None  # set by classifiers: predictions are watched as categories

    def monitored_prediction(self, row: dict[str, Any]) -> Any:
        """What drift monitoring watches of one answer of :meth:`decode_outputs` (a label, or a number)."""
        raise DeepfoundryError(f"a {self.family} run has no predictions to monitor")

    @torch.no_grad()
    def predict_rows(self, raw: Any) -> list[dict[str, Any]]:
        """``decode_outputs(predict(encode_inputs(raw)))``: raw inputs to JSON-ready answers."""
        return self.decode_outputs(self.predict(self.encode_inputs(raw)))

    # ------------------------------------------------------------------ export (deploy/export.py)
    exportable = False  # True where ``predict`` of an encoded batch is one graph (classifiers, regressors, forecasts)

    def export_graph(self) -> "ExportGraph":
        """A copy of this task as one module for ``torch.onnx``/``torch.export``/TorchScript:
        ``graph(*export_inputs(raw)) == predict(encode_inputs(raw))`` (see :class:`ExportGraph`)."""
        if not self.exportable:
            raise DeepfoundryError(f"a {self.family} run cannot be exported: its outputs are not one graph from "
                                   f"inputs to predictions (exportable: classification, regression, forecasting "
                                   f"runs; see docs/deploy.md){self.use_instead}")
        return ExportGraph(self, codec_for(self.info).export_prepare())

    def loader_inputs(self, x: Any) -> Any:
        """A data loader's input batch as :meth:`encode_inputs` would give it, i.e. what :meth:`predict` takes
        (the same for most families; forecasting loaders hold scaled windows, predict takes the series' units)."""
        return x

    def score(self, outputs: torch.Tensor, target: torch.Tensor) -> tuple[str, float]:
        """The family's headline test metric from :meth:`predict` outputs and a loader's targets (comparing
        exported or optimised graphs: ``deepfoundry optimize``)."""
        raise DeepfoundryError(f"a {self.family} run has no headline metric to compare optimised models on")

    def export_inputs(self, raw: Any) -> tuple[torch.Tensor, ...]:
        """Raw inputs -> the exported graph's inputs (the input kind's codec)."""
        return codec_for(self.info).export_inputs(raw)

    def export_feeds(self, batch: Any) -> tuple[torch.Tensor, ...]:
        """An encoded batch (a loader's, or ``encode_inputs``') -> the exported graph's inputs."""
        return codec_for(self.info).export_feeds(batch)

    def export_signature(self) -> list[dict[str, Any]]:
        """The exported graph's inputs: ``[{"name", "shape", "dtype"}]``; string dimensions are dynamic."""
        return codec_for(self.info).export_signature()

    def export_facts(self) -> dict[str, Any]:
        """What ``bundle.json`` records beside the graph: the input kind's facts (columns, tokeniser, shape),
        class labels and the target scaling that ``predict`` already applies inside the graph."""
        facts = {"task_type": self.info.get("task_type"), "input_kind": self.info.get("input_kind") or "array",
                 "family": self.family, "inputs": self.export_signature(), **codec_for(self.info).export_facts()}
        if self.info.get("class_names") is not None:
            facts["labels"] = [str(c) for c in self.info["class_names"]]
        scaling = {k: self.info[k] for k in ("target_mean", "target_std", "scaler") if self.info.get(k) is not None}
        if scaling:
            facts["target_scaling"] = scaling
        return facts


class ClassifierOutputs:
    """The output half of the contract for tasks whose ``predict`` gives class probabilities (N, C):
    rows ``{"class", "label", "probability", "probabilities": {label: p}}``, ``Run.predict`` the class
    indices, ``Run.predict_proba`` the probabilities. Mix in before :class:`Task`."""

    info: dict[str, Any]

    def class_names(self, n: int) -> list[str]:
        names = self.info.get("class_names") or []
        return [str(c) for c in names] if len(names) == n else [str(k) for k in range(n)]

    @property
    def prediction_labels(self) -> list[str]:
        """The labels answers carry (drift of predictions is watched over these categories)."""
        return self.class_names(int(self.info.get("num_classes") or len(self.info.get("class_names") or [])))

    def monitored_prediction(self, row: dict[str, Any]) -> Any:
        return row["label"]

    def decode_outputs(self, outputs: torch.Tensor) -> list[dict[str, Any]]:
        proba = torch.as_tensor(outputs).double().cpu().numpy()
        names = self.class_names(proba.shape[1])
        rows = []
        for p in proba:
            k = int(p.argmax())
            rows.append({"class": k, "label": names[k], "probability": float(p[k]),
                         "probabilities": {name: float(v) for name, v in zip(names, p)}})
        return rows

    def predictions(self, outputs: torch.Tensor) -> np.ndarray:
        return torch.as_tensor(outputs).argmax(dim=1).numpy()

    def probabilities(self, batch: Any) -> torch.Tensor:
        return self.predict(batch)  # type: ignore[attr-defined]

    def score(self, outputs: torch.Tensor, target: torch.Tensor) -> tuple[str, float]:
        """``accuracy = mean(argmax_c p_c == y)``."""
        return "accuracy", float((torch.as_tensor(outputs).argmax(dim=1) == target).double().mean())


class ValueOutputs:
    """The output half of the contract for tasks whose ``predict`` gives values in the target's units:
    rows ``{"value": v}`` (one value) or ``{"values": [...]}`` (several, e.g. a multi-step forecast).
    Mix in before :class:`Task`."""

    def monitored_prediction(self, row: dict[str, Any]) -> Any:
        """The value, or the first of several (a forecast's next step)."""
        return float(row["value"]) if "value" in row else float(row["values"][0])

    def decode_outputs(self, outputs: torch.Tensor) -> list[dict[str, Any]]:
        values = torch.as_tensor(outputs).double().cpu().numpy()
        values = values.reshape(len(values), -1)
        return [{"value": float(v[0])} if len(v) == 1 else {"values": [float(t) for t in v]} for v in values]


class ExportGraph(nn.Module):
    """One traceable module from graph inputs to predictions: ``predict(prepare(*inputs))``.

    ``prepare`` is the codec's in-graph encoding (the saved standardisation ``(x - mean) / std`` for
    arrays; nothing for rows and texts, which are encoded in Python). The task is deep-copied, put in
    eval mode, and every submodule with a ``prepare_export()`` hook is switched to its export path
    (the recurrent classifiers read each row's state at its length instead of packing the batch).
    """

    def __init__(self, task: Task, prepare: nn.Module) -> None:
        super().__init__()
        self.task = copy.deepcopy(task).eval()
        for module in self.task.modules():
            hook = getattr(module, "prepare_export", None)
            if callable(hook):
                hook()
        self.prepare = prepare
        self.eval()  # exporters restore the mode they found: inference mode (dropout off, batch-norm statistics)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.task.predict(self.prepare(*inputs))
