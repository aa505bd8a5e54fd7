"""Export a finished run as a bundle: one graph (ONNX, TorchScript or ``torch.export``) plus what rebuilds it.

A **bundle** (default ``RUN/export/<format>/``) holds

- ``model.onnx`` | ``model.ts`` | ``model.pt2``: the graph ``predict(prepare(*inputs))`` of the run's task
  (:meth:`deepfoundry.tasks.base.Task.export_graph`), with a dynamic batch dimension (and a dynamic length
  for texts). It takes what the task's codec hands it (:meth:`Task.export_inputs`): arrays in the data's own
  units, standardised inside the graph ``(x - mean) / std``; table rows transformed in Python with the saved
  preprocessing; texts tokenised in Python to ``tokens (B, L)`` and ``lengths (B,)``. It returns what
  ``Task.predict`` returns: class probabilities ``softmax(z)`` (B, C), or values in the target's units.
- copies of ``model.safetensors``, ``model.json``, ``config.yaml`` (and ``results.json``,
  ``model_card.md`` where present), so ``load_run(BUNDLE)`` opens it as a run;
- ``bundle.json``: the format, the graph's inputs (name, shape, dtype), the input kind's facts (columns,
  tokeniser, standardisation), labels, target scaling, the run's test metrics, and the parity check.

**Parity.** Up to ``parity_limit`` test examples (``Run.data().test``) go through the exported file
(onnxruntime, ``torch.jit.load``, ``torch.export.load``) and through ``Task.predict`` of the same encoded
batch (what ``Run.predict*`` compute); ``max_abs_diff = max |graph - predict|`` over every output value.
Above ``1e-4`` the export fails in one line and no bundle is left behind.

>>> export_run("runs/lenet5-digits", "onnx")["max_abs_diff"] <= 1e-4
True
"""
from __future__ import annotations

import contextlib
import io
import json
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ..api import Run, load_run
from ..engine.checkpoint import atomic_write
from ..engine.rundir import write_json
from ..errors import DeepfoundryError

FORMATS: dict[str, str] = {"onnx": "model.onnx", "torchscript": "model.ts", "exported-program": "model.pt2"}
PARITY_TOLERANCE = 1e-4
COPIED = ("model.safetensors", "model.json", "config.yaml", "results.json", "model_card.md")
EXTRA_HINT = "pip install 'deepfoundry[deploy]'"


def check_format(fmt: str) -> str:
    """``fmt`` if it is one of :data:`FORMATS`, else one line naming the choices."""
    if fmt not in FORMATS:
        raise DeepfoundryError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return fmt


def require(module: str) -> Any:
    """Import an optional dependency of the ``deploy`` extra, or fail in one line naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise DeepfoundryError(f"this needs the '{module}' package of the deploy extra: {EXTRA_HINT}") from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:300] + "...") if len(text) > 300 else text or type(exc).__name__


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Exporters print progress and warn about tracing; keep stdout for the result (``--json``)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


# ---------------------------------------------------------------------------------------------- test examples
def _take(batch: Any, n: int) -> Any:
    return tuple(_take(b, n) for b in batch) if isinstance(batch, (tuple, list)) else batch[:n]


def _size(batch: Any) -> int:
    return _size(batch[0]) if isinstance(batch, (tuple, list)) else len(batch)


def parity_batches(run: Run, limit: int, data_root: str | None = None) -> list[Any]:
    """Test batches of the run (``Run.data().test``) as ``encode_inputs`` gives them, ``limit`` examples in all."""
    try:
        loader = run.data(data_root).test
    except DeepfoundryError as exc:
        raise DeepfoundryError(f"export checks the graph on the run's test data, which cannot be built: "
                               f"{exc}") from None
    batches, seen = [], 0
    task = run.task
    for x, _ in loader:
        x = task.loader_inputs(_take(x, limit - seen))
        batches.append(x)
        seen += _size(x)
        if seen >= limit:
            break
    if not batches:
        raise DeepfoundryError(f"run '{run.path}' has no test examples to check the exported graph on")
    return batches


def _example(feeds: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Two examples (a batch of one would fix the batch dimension at 1 while tracing)."""
    n = _size(feeds)
    idx = torch.tensor([0, 1 % n])
    return tuple(f[idx] for f in feeds)


# ---------------------------------------------------------------------------------------------- writers
def _dynamic_axes(signature: list[dict[str, Any]]) -> dict[str, dict[int, str]]:
    return {s["name"]: {i: d for i, d in enumerate(s["shape"]) if isinstance(d, str)} for s in signature}


def _write_onnx(graph: torch.nn.Module, example: tuple[torch.Tensor, ...], signature: list[dict[str, Any]],
                path: Path) -> None:
    """``torch.onnx.export`` (the TorchScript-based exporter: dynamic axes and recurrent layers export in
    about a second; the dynamo exporter is the fallback)."""
    require("onnx")
    names = [s["name"] for s in signature]
    axes = {**_dynamic_axes(signature), "output": {0: "batch"}}

    def write(tmp: str) -> None:
        try:
            torch.onnx.export(graph, example, tmp, input_names=names, output_names=["output"], dynamic_axes=axes,
                              dynamo=False, opset_version=17)
        except Exception:  # noqa: BLE001  (any exporter failure: try the other exporter before giving up)
            require("onnxscript")
            shapes = {s["name"]: {i: torch.export.Dim.DYNAMIC for i in axes[s["name"]]} for s in signature}
            torch.onnx.export(graph, example, tmp, input_names=names, output_names=["output"],
                              dynamic_shapes=shapes, dynamo=True, external_data=False)

    atomic_write(path, write)


def _write_torchscript(graph: torch.nn.Module, example: tuple[torch.Tensor, ...], signature: list[dict[str, Any]],
                       path: Path) -> None:
    traced = torch.jit.trace(graph, example, check_trace=False)
    atomic_write(path, lambda tmp: torch.jit.save(traced, tmp))


def _write_exported_program(graph: torch.nn.Module, example: tuple[torch.Tensor, ...],
                            signature: list[dict[str, Any]], path: Path) -> None:
    shapes = tuple({i: torch.export.Dim.DYNAMIC for i, d in enumerate(s["shape"]) if isinstance(d, str)}
                   for s in signature)
    try:
        program = torch.export.export(graph, example, dynamic_shapes=(shapes,))  # one entry: forward's *inputs
    except Exception as exc:  # noqa: BLE001
        if "specialized it to be a constant" in str(exc):  # nn.RNN/LSTM/GRU unroll over a fixed length here
            raise DeepfoundryError("torch.export fixes the sequence length of recurrent layers (nn.RNN/LSTM/GRU), so "
                                   "this graph cannot take texts of any length; use --format onnx or torchscript"
                                   ) from None
        raise
    buffer = io.BytesIO()  # torch.export.save wants a name ending in .pt2 or a buffer
    torch.export.save(program, buffer)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))


WRITERS: dict[str, Callable[..., None]] = {"onnx": _write_onnx, "torchscript": _write_torchscript,
                                           "exported-program": _write_exported_program}


# ---------------------------------------------------------------------------------------------- runners
def _as_numpy(x: Any, dtype: str) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return np.ascontiguousarray(arr.astype(dtype, copy=False))


def _as_tensors(batch: Any) -> Any:
    if isinstance(batch, (tuple, list)):
        return tuple(_as_tensors(b) for b in batch)
    return batch if isinstance(batch, torch.Tensor) else torch.as_tensor(np.asarray(batch))


class OnnxPredictor:
    """onnxruntime on a bundle's ``model.onnx``, fed through the run's task contract.

    - :meth:`forward` takes a batch as ``task.encode_inputs(raw)`` returns it (the standardised array,
      the encoded rows, ``(tokens, lengths)``) and returns ``task.predict(batch)`` as an array
      (probabilities (B, C) or values);
    - :meth:`run` takes the graph's own inputs (``task.export_inputs(raw)``: raw arrays, encoded rows, token
      ids and lengths);
    - :meth:`predict_rows` takes raw inputs and answers as ``Run.predict_rows`` does.

    >>> OnnxPredictor("runs/lenet5-digits/export/onnx").predict_rows(images)[0]["label"]
    """

    def __init__(self, bundle: str | Path, threads: int | None = None) -> None:
        ort = require("onnxruntime")
        self.bundle = Path(bundle)
        self.meta = read_bundle(self.bundle)
        model = self.bundle / FORMATS["onnx"]
        if self.meta.get("format") != "onnx" or not model.is_file():
            raise DeepfoundryError(f"'{self.bundle}' is not an ONNX bundle (no {FORMATS['onnx']}); export it with "
                                   f"'deepfoundry export RUN --format onnx'")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self.inputs = [(i.name, "int64" if "int64" in i.type else "float32") for i in self.session.get_inputs()]
        self._run: Run | None = None

    @property
    def task(self) -> Any:
        """The run's task (for encoding and decoding; the forward pass is onnxruntime's)."""
        if self._run is None:
            self._run = load_run(self.bundle)
        return self._run.task

    def run(self, *feeds: Any) -> np.ndarray:
        """The graph's inputs (arrays or tensors, in :attr:`inputs` order) -> its output (B, ...)."""
        if len(feeds) == 1 and isinstance(feeds[0], (tuple, list)):
            feeds = tuple(feeds[0])
        if len(feeds) != len(self.inputs):
            names = ", ".join(n for n, _ in self.inputs)
            raise DeepfoundryError(f"the graph takes {len(self.inputs)} inputs ({names}), "
                                   f"received {len(feeds)}")
        return self.session.run(None, {n: _as_numpy(f, d) for (n, d), f in zip(self.inputs, feeds)})[0]

    def forward(self, batch: Any) -> np.ndarray:
        """An encoded batch (``task.encode_inputs(raw)``; tensors or arrays) -> ``task.predict(batch)`` computed
        by onnxruntime."""
        return self.run(*self.task.export_feeds(_as_tensors(batch)))

    __call__ = forward

    def predict_rows(self, raw: Any) -> list[dict[str, Any]]:
        """Raw inputs -> JSON-ready answers, as ``Run.predict_rows``."""
        task = self.task
        return task.decode_outputs(torch.from_numpy(self.run(*task.export_inputs(raw))))


def onnx_session(bundle: str | Path, threads: int | None = None) -> OnnxPredictor:
    """An :class:`OnnxPredictor` on ``bundle`` (a folder holding ``model.onnx`` and ``bundle.json``)."""
    return OnnxPredictor(bundle, threads)


def load_graph(bundle: str | Path) -> Callable[..., np.ndarray]:
    """A callable running a bundle's graph file on its inputs (arrays or tensors) -> a numpy array."""
    return load_graph_file(Path(bundle), read_bundle(bundle)["format"])


def read_bundle(bundle: str | Path) -> dict[str, Any]:
    """``bundle.json`` of an exported bundle (one line when the folder is not one)."""
    path = Path(bundle) / "bundle.json"
    if not path.is_file():
        raise DeepfoundryError(f"'{bundle}' is not an export bundle (no bundle.json); make one with "
                               f"'deepfoundry export RUN'")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DeepfoundryError(f"'{path}' is corrupt: {_one_line(exc)}") from None
    if not isinstance(meta, dict) or meta.get("format") not in FORMATS:
        raise DeepfoundryError(f"'{path}' names no known format ({', '.join(FORMATS)}); export the run again")
    return meta


# ---------------------------------------------------------------------------------------------- export
def parity(call: Callable[..., np.ndarray], task: Any, batches: list[Any]) -> tuple[float, int]:
    """``max |call(*export_feeds(x)) - predict(x)|`` over the batches, and the number of examples checked."""
    worst, checked = 0.0, 0
    with torch.no_grad():
        for x in batches:
            expected = task.predict(x).float().numpy()
            got = np.asarray(call(*task.export_feeds(x)), dtype=np.float32)
            if got.shape != expected.shape:
                raise DeepfoundryError(f"the exported graph gives outputs of shape {got.shape}, predict "
                                       f"{expected.shape}")
            worst = max(worst, float(np.max(np.abs(got - expected))) if got.size else 0.0)
            if not np.isfinite(got).all():
                worst = float("inf")
            checked += _size(x)
    return worst, checked


def write_bundle(run: Run, graph: torch.nn.Module, fmt: str, out: Path, batches: list[Any]) -> dict[str, Any]:
    """Write ``graph`` (the task's :meth:`export_graph`) in ``fmt`` with the run's files into ``out``, check
    parity on ``batches`` (encoded test batches) and write ``bundle.json``; one line above the tolerance."""
    task = run.task
    signature = task.export_signature()
    example = _example(task.export_feeds(batches[0]))
    out.mkdir(parents=True, exist_ok=True)
    model_path = out / FORMATS[fmt]
    try:
        with _quiet(), torch.no_grad():
            WRITERS[fmt](graph, example, signature, model_path)
    except DeepfoundryError:
        raise
    except Exception as exc:  # noqa: BLE001  (an exporter's failure, whatever its type, is one line)
        raise DeepfoundryError(f"the {task.family} run '{run.path}' cannot be exported as {fmt}: "
                               f"{type(exc).__name__}: {_one_line(exc)}") from None
    for name in COPIED:
        if (run.path / name).is_file() and (run.path / name).resolve() != (out / name).resolve():
            src = run.path / name
            atomic_write(out / name, lambda tmp, src=src: shutil.copyfile(src, tmp))
    meta = {"format": fmt, "file": FORMATS[fmt], **task.export_facts(), "outputs": None,
            "metrics": {k: v for k, v in (run.results.get("test") or {}).items() if isinstance(v, (int, float))},
            "run": str(run.path), "torch_version": torch.__version__}
    with _quiet():
        call = load_graph_file(out, fmt)
        worst, checked = parity(call, task, batches)
        meta["outputs"] = [{"name": "output", "shape": ["batch", *np.asarray(call(*example)).shape[1:]],
                            "dtype": "float32"}]
    tolerance = PARITY_TOLERANCE
    meta.update({"max_abs_diff": worst, "checked": checked, "parity_tolerance": tolerance})
    if not worst <= tolerance:
        model_path.unlink(missing_ok=True)
        (out / "bundle.json").unlink(missing_ok=True)  # an earlier export's description no longer holds
        raise DeepfoundryError(f"the exported {fmt} graph differs from the run's predictions by {worst:.3g} "
                               f"(max |difference| over {checked} test examples; tolerance {tolerance:g}); "
                               f"nothing was exported")
    write_json(out / "bundle.json", meta)
    return meta


def load_graph_file(out: Path, fmt: str) -> Callable[..., np.ndarray]:
    """The graph file of format ``fmt`` in ``out`` as a callable (also before ``bundle.json`` exists)."""
    if fmt == "onnx":
        ort = require("onnxruntime")
        session = ort.InferenceSession(str(out / FORMATS[fmt]), providers=["CPUExecutionProvider"])
        names = [(i.name, "int64" if "int64" in i.type else "float32") for i in session.get_inputs()]
        return lambda *feeds: session.run(None, {n: _as_numpy(f, d) for (n, d), f in zip(names, feeds)})[0]
    path = out / FORMATS[fmt]
    module = torch.jit.load(str(path)) if fmt == "torchscript" else torch.export.load(str(path)).module()

    def call(*feeds: Any) -> np.ndarray:
        with torch.no_grad():
            return module(*(torch.as_tensor(f) for f in feeds)).detach().numpy()

    return call


def export_run(path: str | Path, fmt: str = "onnx", out: str | Path | None = None, parity_limit: int = 1000,
               data_root: str | None = None) -> dict[str, Any]:
    """Export the run at ``path`` as a bundle in ``fmt`` (``onnx``, ``torchscript``, ``exported-program``).

    Returns ``{"bundle", "format", "max_abs_diff", "checked", "files"}``; raises one line when the run's
    family has no single graph (GANs, language models, translation, graphs), an extra is missing, or the
    graph's predictions differ from ``Run.predict*`` by more than 1e-4 on the checked test examples.
    """
    check_format(fmt)
    if fmt == "onnx":
        require("onnx")
        require("onnxruntime")
    if parity_limit < 1:
        raise DeepfoundryError(f"parity_limit must be at least 1, received {parity_limit}")
    run = load_run(path)
    threads = torch.get_num_threads()
    try:
        task = run.task
        graph = task.export_graph()  # the family refuses here when it has no single graph
        batches = parity_batches(run, parity_limit, data_root)
        bundle = Path(out) if out is not None else run.path / "export" / fmt
        meta = write_bundle(run, graph, fmt, bundle, batches)
        from .monitor import REFERENCE, write_reference

        if (run.path / REFERENCE).is_file():  # the drift reference serve and monitor compare live inputs with
            shutil.copy2(run.path / REFERENCE, bundle / REFERENCE)
        else:
            write_reference(run, bundle, data_root)
    finally:
        torch.set_num_threads(threads)
    files = sorted(p.name for p in bundle.iterdir() if p.is_file() and not p.name.startswith("."))
    return {"bundle": str(bundle), "format": fmt, "max_abs_diff": meta["max_abs_diff"], "checked": meta["checked"],
            "files": files}


def summary_line(result: dict[str, Any]) -> str:
    """What ``deepfoundry export`` prints."""
    return (f"exported {result['format']}: {result['bundle']} (max |graph - predict| = {result['max_abs_diff']:.2e} "
            f"on {result['checked']} test examples)")
