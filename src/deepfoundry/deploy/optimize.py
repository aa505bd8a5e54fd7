"""Optimise a run for inference: int8 quantisation and magnitude pruning, each variant measured.

Variants (each a bundle ``RUN/export/<variant>/``, beside the original):

- ``original``: the run's float32 model in PyTorch (the run directory itself);
- ``onnx``: the float32 graph in ONNX Runtime (the bundle of ``deepfoundry export``);
- ``--quantize dynamic``: ``torch-int8-dynamic``, ``torch.ao.quantization.quantize_dynamic`` on every
  ``nn.Linear``/``nn.LSTM``/``nn.GRU``: weights stored as int8 ``q = clamp(round(w / s), -128, 127)`` with
  one float scale ``s`` per tensor (zero point 0), activations quantised per batch at run time; written as
  ``model.int8.safetensors`` (int8 tensors, scales, zero points: no pickle) and read back by
  :func:`load_quantized`. ``onnx-int8-dynamic``: ONNX Runtime's ``quantize_dynamic`` of the float graph
  (int8 weights of MatMul/Gemm/LSTM/...).
- ``--quantize static``: ``onnx-int8-static``, ONNX Runtime's ``quantize_static`` in QDQ format, weights
  int8 per channel (7 bits: ``reduce_range``, as x86 CPUs without VNNI saturate 8-bit products) and
  activations int8 with ranges calibrated (min/max) on up to 1,000 training examples; for CNNs, whose
  convolutions dynamic quantisation leaves in float.
- ``--prune p``: ``pruned-<p>``, global L1 magnitude pruning (``torch.nn.utils.prune.global_unstructured``):
  the fraction ``p`` of all Linear/Conv weights with the smallest ``|w|`` set to zero, made permanent
  (``prune.remove``); its ``model.safetensors`` is a dense file with zeros, so ``load_run(BUNDLE)`` opens it.

Each row: ``size_bytes`` of the variant's weights file, latency percentiles ``p50``/``p99`` (ms) at batch
1 and 32 on one CPU thread (warm, repeated forwards of test examples), and the family's headline test
metric (:meth:`Task.score`: accuracy, or RMSE in the target's units) over the whole test split.
"""
from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..api import Run, load_run
from ..engine.checkpoint import atomic_write, save_weights
from ..engine.rundir import write_json
from ..errors import DeepfoundryError
from .export import COPIED, _as_numpy, _quiet, _size, parity, parity_batches, require, write_bundle

QUANTIZE = ("dynamic", "static")
DYNAMIC_TYPES = (nn.Linear, nn.LSTM, nn.GRU)
PRUNED_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
INT8_FILE = "model.int8.safetensors"


# ---------------------------------------------------------------------------------------------- torch int8
def quantize_dynamic_graph(graph: nn.Module) -> nn.Module:
    """int8 weights for every Linear/LSTM/GRU of a copy of ``graph`` (``torch.ao.quantization.quantize_dynamic``)."""
    with _quiet():
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(graph).eval(), set(DYNAMIC_TYPES),
                                                      dtype=torch.qint8)


def _quantized_kinds() -> tuple[type, type]:
    import torch.ao.nn.quantized.dynamic as nnqd
    from torch.ao.nn.quantized.dynamic.modules.rnn import RNNBase

    return nnqd.Linear, RNNBase


def _put(tensors: dict[str, torch.Tensor], name: str, q: torch.Tensor) -> None:
    """A quantized tensor as plain tensors: ``name.int8``, ``name.scale``, ``name.zero_point`` (+ ``name.axis``)."""
    tensors[f"{name}.int8"] = q.int_repr().contiguous()
    if q.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        tensors[f"{name}.scale"] = q.q_per_channel_scales().float()
        tensors[f"{name}.zero_point"] = q.q_per_channel_zero_points().long()
        tensors[f"{name}.axis"] = torch.tensor(q.q_per_channel_axis())
    else:
        tensors[f"{name}.scale"] = torch.tensor([q.q_scale()], dtype=torch.float32)
        tensors[f"{name}.zero_point"] = torch.tensor([q.q_zero_point()], dtype=torch.long)


def _get(tensors: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """The quantized tensor :func:`_put` stored under ``name``."""
    ints, scale, zero = tensors[f"{name}.int8"], tensors[f"{name}.scale"], tensors[f"{name}.zero_point"]
    if f"{name}.axis" in tensors:
        return torch._make_per_channel_quantized_tensor(ints, scale.double(), zero, int(tensors[f"{name}.axis"]))
    return torch._make_per_tensor_quantized_tensor(ints, float(scale[0]), int(zero[0]))


def int8_state(qgraph: nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor of a dynamically quantized graph, as plain tensors for safetensors (no pickle): the int8
    weights with their scales and zero points, float biases, and the float state of every other module."""
    qlinear, qrnn = _quantized_kinds()
    tensors: dict[str, torch.Tensor] = {}
    quantized: list[str] = []
    for name, module in qgraph.named_modules():
        if isinstance(module, qlinear):
            _put(tensors, f"{name}.weight", module.weight())
            if module.bias() is not None:
                tensors[f"{name}.bias"] = module.bias().detach().float()
            quantized.append(name)
        elif isinstance(module, qrnn):
            parts = module._weight_bias()
            for key, q in parts["weight"].items():
                _put(tensors, f"{name}.{key}", q)
            for key, b in parts["bias"].items():
                tensors[f"{name}.{key}"] = b.detach().float()
            quantized.append(name)
    for key, value in qgraph.state_dict().items():
        if isinstance(value, torch.Tensor) and not any(key.startswith(q + ".") for q in quantized):
            tensors[key] = value.detach().contiguous()
    return tensors


def load_int8_state(qgraph: nn.Module, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """Put :func:`int8_state`'s tensors back into ``qgraph`` (the same graph, quantized the same way)."""
    qlinear, qrnn = _quantized_kinds()
    from torch.ao.nn.quantized.dynamic.modules.rnn import PackedParameter

    quantized: list[str] = []
    for name, module in qgraph.named_modules():
        if isinstance(module, qlinear):
            module.set_weight_bias(_get(tensors, f"{name}.weight"), tensors.get(f"{name}.bias"))
            quantized.append(name)
        elif isinstance(module, qrnn):
            cells = []
            for layer in range(module.num_layers):
                for suffix in ("", "_reverse")[: 2 if module.bidirectional else 1]:
                    w = {k: _get(tensors, f"{name}.weight_{k}_l{layer}{suffix}") for k in ("ih", "hh")}
                    b = {k: tensors[f"{name}.bias_{k}_l{layer}{suffix}"] for k in ("ih", "hh")}
                    packed = {k: torch.ops.quantized.linear_prepack(w[k], b[k]) for k in ("ih", "hh")}
                    cells.append(PackedParameter(torch.ops.quantized.make_quantized_cell_params_dynamic(
                        packed["ih"], packed["hh"], b["ih"], b["hh"], True)))
            module._all_weight_values = nn.ModuleList(cells)
            quantized.append(name)
    saved = set(qgraph.state_dict())  # non-persistent buffers (index tables) are rebuilt by the model, not saved
    own = {k: v for k, v in [*qgraph.named_parameters(), *qgraph.named_buffers()]
           if k in saved and not any(k.startswith(q + ".") for q in quantized)}  # floats outside quantized modules
    missing = [k for k in own if k not in tensors]
    if missing:
        raise DeepfoundryError(f"the int8 weights lack {', '.join(missing[:3])}; make the variant again")
    with torch.no_grad():
        for key, value in own.items():
            value.copy_(tensors[key])
    return qgraph


def load_quantized(bundle: str | Path) -> nn.Module:
    """The int8 graph of a ``torch-int8-dynamic`` bundle: the run's graph rebuilt from the bundle's config,
    quantized, and given the stored int8 weights and scales (``model.int8.safetensors``)."""
    from ..engine.checkpoint import load_weights

    bundle = Path(bundle)
    path = bundle / INT8_FILE
    if not path.is_file():
        raise DeepfoundryError(f"'{bundle}' holds no {INT8_FILE}; make it with 'deepfoundry optimize RUN'")
    graph = quantize_dynamic_graph(load_run(bundle).task.export_graph())
    return load_int8_state(graph, load_weights(path))


# ---------------------------------------------------------------------------------------------- pruning
def prune_graph(graph: nn.Module, amount: float) -> tuple[nn.Module, float]:
    """Global L1 magnitude pruning of a copy: the fraction ``amount`` of the Linear/Conv weights with the
    smallest ``|w|`` (over all layers together) set to zero and the masks folded in. Returns the copy and
    the fraction of those weights that are zero."""
    from torch.nn.utils import prune

    pruned = copy.deepcopy(graph)
    params = [(m, "weight") for m in pruned.modules() if isinstance(m, PRUNED_TYPES)]
    if not params:
        raise DeepfoundryError("pruning needs Linear or Conv layers; this model has none")
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
    for module, name in params:
        prune.remove(module, name)  # permanent: weight = weight_orig * mask
    zeros = sum(int((m.weight == 0).sum()) for m, _ in params)
    return pruned, zeros / sum(m.weight.numel() for m, _ in params)


# ---------------------------------------------------------------------------------------------- ONNX Runtime
class _Calibration:
    """onnxruntime's CalibrationDataReader over training batches (the graph's inputs)."""

    def __init__(self, names: list[str], batches: list[tuple[torch.Tensor, ...]]) -> None:
        self.items = iter([{n: _as_numpy(f, "int64" if f.dtype == torch.long else "float32")
                            for n, f in zip(names, feeds)} for feeds in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.items, None)


def _onnx_int8(source: Path, out: Path, mode: str, run: Run, calibration: list[Any]) -> None:
    quant = require("onnxruntime.quantization")
    out.mkdir(parents=True, exist_ok=True)
    target = out / "model.onnx"
    logging.disable(logging.WARNING)  # onnxruntime.quantization logs advice on the root logger
    try:
        _quantize_onnx(quant, source, target, mode, run, calibration)
    finally:
        logging.disable(logging.NOTSET)


def _quantize_onnx(quant: Any, source: Path, target: Path, mode: str, run: Run, calibration: list[Any]) -> None:
    with _quiet():
        if mode == "dynamic":
            atomic_write(target, lambda tmp: quant.quantize_dynamic(str(source), tmp,
                                                                    weight_type=quant.QuantType.QInt8))
        else:
            names = [s["name"] for s in run.task.export_signature()]
            reader = _Calibration(names, [run.task.export_feeds(x) for x in calibration])
            atomic_write(target, lambda tmp: quant.quantize_static(
                str(source), tmp, reader, quant_format=quant.QuantFormat.QDQ, per_channel=True,
                activation_type=quant.QuantType.QInt8, weight_type=quant.QuantType.QInt8,
                calibrate_method=quant.CalibrationMethod.MinMax, reduce_range=True))
            # reduce_range: 7-bit weights. x86 CPUs without VNNI add int8 x int8 pairs in 16 bits (vpmaddubsw),
            # which saturates; measured on LeNet-5/MNIST here: 95.4% test accuracy with 8 bits, 98.6% with 7.


# ---------------------------------------------------------------------------------------------- measuring
def _latency(call: Callable[..., Any], feeds: tuple[Any, ...], repeats: int) -> tuple[float, float]:
    """p50 and p99 (ms) of ``repeats`` warm calls."""
    for _ in range(3):
        call(*feeds)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call(*feeds)
        times.append((time.perf_counter() - start) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def _rows_of(feeds: tuple[torch.Tensor, ...], n: int) -> tuple[torch.Tensor, ...]:
    """The first ``n`` examples of the graph's inputs (repeated when there are fewer)."""
    idx = torch.arange(n) % _size(feeds)
    return tuple(f[idx] for f in feeds)


def measure(name: str, call: Callable[..., Any], task: Any, test: list[tuple[Any, torch.Tensor]], size: int,
            repeats: int = 50) -> dict[str, Any]:
    """One table row: size, latency at batch 1 and 32, headline test metric of ``call`` (graph inputs -> outputs)."""
    outputs, targets = [], []
    with torch.no_grad():
        for x, y in test:
            outputs.append(torch.as_tensor(np.asarray(call(*task.export_feeds(x)), dtype=np.float32)))
            targets.append(y)
    metric_name, metric = task.score(torch.cat(outputs), torch.cat(targets))
    feeds = task.export_feeds(test[0][0])
    with torch.no_grad():
        p50_1, p99_1 = _latency(call, _rows_of(feeds, 1), repeats)
        p50_32, p99_32 = _latency(call, _rows_of(feeds, 32), max(10, repeats // 3))
    return {"variant": name, "size_bytes": int(size), "p50_ms_b1": p50_1, "p99_ms_b1": p99_1, "p50_ms_b32": p50_32,
            "p99_ms_b32": p99_32, "metric": metric, "metric_name": metric_name}


def _torch_call(module: nn.Module) -> Callable[..., np.ndarray]:
    def call(*feeds: Any) -> np.ndarray:
        with torch.no_grad():
            return module(*(torch.as_tensor(f) for f in feeds)).numpy()
    return call


def _copy_run_files(run: Run, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        src = run.path / name
        if src.is_file():
            atomic_write(out / name, lambda tmp, src=src: Path(tmp).write_bytes(src.read_bytes()))


def optimize_run(path: str | Path, quantize: str | None = "dynamic", prune: float | None = None,
                 out: str | Path | None = None, data_root: str | None = None, repeats: int = 50) -> dict[str, Any]:
    """Quantise (``dynamic`` or ``static``) and/or prune (fraction ``prune``) the run at ``path``; write each
    variant as a bundle in ``out`` (default ``RUN/export``) and the comparison to ``out/optimize.json``.

    Returns ``{"rows": [{"variant", "size_bytes", "p50_ms_b1", "p99_ms_b1", "p50_ms_b32", "p99_ms_b32",
    "metric", "metric_name"}, ...], "threads": 1, "path": ...}``, the original first.
    """
    if quantize is not None and quantize not in QUANTIZE:
        raise DeepfoundryError(f"unknown --quantize {quantize!r}; choose dynamic, static or none")
    if prune is not None and not 0.0 < prune < 1.0:
        raise DeepfoundryError(f"--prune is the fraction of weights to zero, in (0, 1); received {prune}")
    require("onnx")
    require("onnxruntime")
    run = load_run(path)
    base = Path(out) if out is not None else run.path / "export"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # every variant timed on one thread (onnxruntime too)
    try:
        task = run.task
        graph = task.export_graph()
        batches = parity_batches(run, 1000, data_root)
        test = [(task.loader_inputs(x), y) for x, y in run.data(data_root).test]
        rows = [measure("original", _torch_call(graph), task, test, (run.path / "model.safetensors").stat().st_size,
                        repeats)]

        onnx_dir = base / "onnx"
        write_bundle(run, graph, "onnx", onnx_dir, batches)
        rows.append(measure("onnx", _ort_call(onnx_dir), task, test, (onnx_dir / "model.onnx").stat().st_size, repeats))

        if quantize == "dynamic":
            qgraph = quantize_dynamic_graph(graph)
            qdir = base / "torch-int8-dynamic"
            _copy_run_files(run, qdir)
            save_tensors(qdir / INT8_FILE, int8_state(qgraph))
            reloaded = load_quantized(qdir)
            _write_variant_meta(qdir, run, "torch-int8-dynamic", INT8_FILE, task, reloaded, batches)
            rows.append(measure("torch-int8-dynamic", _torch_call(reloaded), task, test,
                                (qdir / INT8_FILE).stat().st_size, repeats))
        if quantize is not None:
            name = f"onnx-int8-{quantize}"
            qdir = base / name
            calibration = [task.loader_inputs(x) for x, _ in _first_batches(run.data(data_root).train, 1000)]
            _onnx_int8(onnx_dir / "model.onnx", qdir, quantize, run, calibration)
            _copy_run_files(run, qdir)
            _write_variant_meta(qdir, run, name, "model.onnx", task, None, batches, fmt="onnx")
            rows.append(measure(name, _ort_call(qdir), task, test, (qdir / "model.onnx").stat().st_size, repeats))
        if prune is not None:
            pruned, zeros = prune_graph(graph, prune)
            name = f"pruned-{prune:g}"
            pdir = base / name
            _copy_run_files(run, pdir)
            save_weights(pdir / "model.safetensors", pruned.task.model)
            _write_variant_meta(pdir, run, name, "model.safetensors", task, pruned, batches,
                                extra={"zero_fraction": zeros})
            row = measure(name, _torch_call(pruned), task, test, (pdir / "model.safetensors").stat().st_size, repeats)
            rows.append({**row, "zero_fraction": zeros})
    finally:
        torch.set_num_threads(threads)
    result = {"rows": rows, "threads": 1, "path": str(base), "run": str(run.path)}
    write_json(base / "optimize.json", result)
    return result


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Plain tensors as safetensors with the project's checksum (read back by ``load_weights``)."""
    from safetensors.torch import save_file

    from ..engine.checkpoint import CHECKSUM_KEY, checksum

    meta = {CHECKSUM_KEY: checksum(tensors, {})}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def _first_batches(loader: Any, limit: int) -> list[tuple[Any, Any]]:
    out, seen = [], 0
    for x, y in loader:
        out.append((x, y))
        seen += _size(x)
        if seen >= limit:
            break
    return out


def _ort_call(bundle: Path) -> Callable[..., np.ndarray]:
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(bundle / "model.onnx"), options, providers=["CPUExecutionProvider"])
    names = [(i.name, "int64" if "int64" in i.type else "float32") for i in session.get_inputs()]
    return lambda *feeds: session.run(None, {n: _as_numpy(f, d) for (n, d), f in zip(names, feeds)})[0]


def _write_variant_meta(out: Path, run: Run, variant: str, file: str, task: Any, module: nn.Module | None,
                        batches: list[Any], fmt: str | None = None, extra: dict[str, Any] | None = None) -> None:
    """``bundle.json`` of a variant: the run's facts, and ``max_abs_diff`` from the float predictions (the
    optimisation's error, recorded; no tolerance applies)."""
    call = _ort_call(out) if fmt == "onnx" else _torch_call(module)  # type: ignore[arg-type]
    worst, checked = parity(call, task, batches)
    meta = {"format": fmt or variant, "variant": variant, "file": file, **task.export_facts(),
            "metrics": {k: v for k, v in (run.results.get("test") or {}).items() if isinstance(v, (int, float))},
            "run": str(run.path), "max_abs_diff": worst, "checked": checked, "parity_tolerance": None,
            "torch_version": torch.__version__, **(extra or {})}
    write_json(out / "bundle.json", meta)


def format_table(result: dict[str, Any]) -> str:
    """The rows as an aligned text table."""
    head = f"{'variant':22s} {'size':>10s} {'p50 b1':>8s} {'p99 b1':>8s} {'p50 b32':>8s} {'p99 b32':>8s}  metric"
    lines = [head]
    for r in result["rows"]:
        lines.append(f"{r['variant']:22s} {r['size_bytes'] / 1024:9.1f}K {r['p50_ms_b1']:8.3f} {r['p99_ms_b1']:8.3f} "
                     f"{r['p50_ms_b32']:8.3f} {r['p99_ms_b32']:8.3f}  {r['metric_name']} {r['metric']:.4f}")
    lines.append(f"(latency in ms on {result['threads']} CPU thread; table in {result['path']}/optimize.json)")
    return "\n".join(lines)
