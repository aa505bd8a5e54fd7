"""Input codecs: a user's raw inputs -> the batch a trained model takes, with the run's saved preprocessing.

One codec per ``info["input_kind"]`` a data module produces, registered in :data:`CODECS`:

=============  ==============================================  =========================================
input kind     raw inputs (Python)                             command-line arguments (``read``)
=============  ==============================================  =========================================
``image``      arrays/tensors (C, H, W) or (N, C, H, W) in       image files (PNG, JPEG, ...) or ``.npy``
               the data's units ([0, 1] pixels)
``table``      arrays (F,) or (N, F)                           ``.npy`` arrays
``series``     the last ``window`` values (W,) or (N, W)       ``.npy`` arrays
``sequence``   arrays (L, F) or (N, L, F)                      ``.npy`` arrays
``tabular``    raw rows: DataFrame, CSV path, dict, dicts      CSV files of raw rows
``text``       a string or a list of strings                   the texts themselves
``translation`` a string or a list of source sentences         the sentences themselves
``graph``,     a batch dict (``run.data().test.batch()``,      (none: graphs are predicted from Python)
``graph_set``  ``GraphSet.from_graphs(...).batch(ids)``)
=============  ==============================================  =========================================

A task turns the encoded batch into outputs and decodes them (``Task.encode_inputs``/``decode_outputs``
in :mod:`deepfoundry.tasks.base`); a data module adds an input kind by registering a codec here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import DeepfoundryError
from ..registry import Registry
from .core import apply_preprocess

CODECS = Registry("input kind")
FLOAT32_MAX = float(np.finfo(np.float32).max)


class ExampleError(DeepfoundryError):
    """One served example that the model cannot take: ``field`` is where in the example (``()`` for all of it,
    ``("age",)`` for a tabular column, ...), the message the reason (shape, dtype, NaN/inf, unknown column)."""

    def __init__(self, message: str, field: tuple[Any, ...] = ()) -> None:
        super().__init__(message)
        self.field = field


@dataclass
class ReadInputs:
    """What ``Codec.read`` makes of command-line arguments: one ``name`` per example (``file[i]`` for the
    i-th of several in one file), the ``raw`` inputs to encode, and per example the ``columns`` to carry
    into an output table (tabular runs: the input row itself)."""

    names: list[str]
    raw: Any
    columns: list[dict[str, Any]] = field(default_factory=list)


class Codec:
    """Base codec: numeric arrays shaped like ``info["input_shape"]``, standardised as in training."""

    kind = "array"
    files = ".npy arrays"

    def __init__(self, info: dict[str, Any]) -> None:
        self.info = info

    def encode(self, raw: Any) -> Any:
        """Raw inputs -> the model's batch. A single example gets a batch dimension."""
        x = apply_preprocess(self._checked(raw), self.info.get("preprocess"))
        if not torch.isfinite(x).all():
            raise DeepfoundryError("inputs hold NaN or infinite values (as float32, after the run's "
                                   "standardisation); the model needs finite numbers")
        return x

    def _checked(self, raw: Any) -> torch.Tensor:
        """Raw inputs as a batch of the training inputs' shape (a single example gets a batch dimension)."""
        try:
            x = raw if isinstance(raw, torch.Tensor) else torch.as_tensor(np.asarray(raw))
        except (TypeError, ValueError, RuntimeError) as exc:
            raise DeepfoundryError(f"inputs must be a numeric array: {exc}") from None
        if x.is_complex():
            raise DeepfoundryError(f"inputs hold complex numbers ({x.dtype}); the model takes real numbers")
        shape = tuple(self.info.get("input_shape", x.shape[1:]))
        if tuple(x.shape) == shape:
            x = x.unsqueeze(0)
        if tuple(x.shape[1:]) != shape:
            raise DeepfoundryError(f"input of shape {tuple(x.shape[1:])} does not fit the model, which expects "
                                   f"{shape} (batch dimension first)")
        if len(x) == 0:
            raise DeepfoundryError(f"inputs hold no examples (shape {tuple(x.shape)})")
        return x

    # ------------------------------------------------------------------ serving (deepfoundry.deploy)
    def schema(self) -> dict[str, Any]:
        """What one example is, for clients (``GET /v1/model``): the input kind, shape and dtype."""
        shape = self.info.get("input_shape")
        return {"input_kind": self.kind, "input_shape": list(shape) if shape is not None else None,
                "dtype": "float32"}

    def example_from_json(self, value: Any) -> Any:
        """One JSON example -> one raw input, checked: a nested array of exactly ``input_shape`` holding
        finite numbers (float32). Raises :class:`ExampleError` naming the reason."""
        return _numeric_example(value, self.info.get("input_shape"))

    def example_schema(self) -> dict[str, Any]:
        """The JSON Schema of one JSON example (the served API's OpenAPI ``inputs.items``): a nested array of
        exactly ``input_shape`` holding numbers (finite as float32: a value the schema cannot state)."""
        shape = self.info.get("input_shape")
        if shape is None:
            return {"type": "array"}
        schema: dict[str, Any] = {"type": "number"}
        for size in reversed(list(shape)):
            schema = {"type": "array", "items": schema, "minItems": int(size), "maxItems": int(size)}
        return schema

    def batch_from_examples(self, examples: list[Any]) -> Any:
        """Checked raw examples -> the raw batch :meth:`encode` takes."""
        return np.stack(examples)

    def examples_from_file(self, name: str, data: bytes) -> list[Any]:
        """An uploaded file (``POST /v1/predict/file``) -> checked raw examples; the base reads ``.npy`` arrays."""
        import io

        if not name.lower().endswith(".npy"):
            raise ExampleError(f"'{name}': this model takes {self.kind} inputs; upload {self.files}")
        try:
            x = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise ExampleError(f"'{name}' is not a readable .npy array: {' '.join(str(exc).split())}") from None
        shape = tuple(self.info.get("input_shape") or x.shape[1:])
        x = x[None] if tuple(x.shape) == shape else x
        return [_numeric_example(e, shape) for e in x]

    def monitor_features(self, batch: Any) -> dict[str, np.ndarray]:
        """Per-example summary features of an encoded batch, watched for drift (:mod:`deepfoundry.deploy.monitor`).

        Arrays: the mean and standard deviation of each example (over all its values)."""
        x = torch.as_tensor(batch).double().flatten(1)  # (N, D)
        return {"mean": x.mean(dim=1).numpy(), "std": x.std(dim=1, correction=0).numpy()}

    # ------------------------------------------------------------------ export (deploy/export.py)
    # An exported graph takes ``export_inputs(raw)`` and runs ``export_prepare()`` before the model:
    # numeric arrays enter raw (in the data's units) and the graph standardises them with the saved
    # statistics, ``(x - mean) / std``; kinds transformed in Python (table rows, texts) enter encoded.
    def export_inputs(self, raw: Any) -> tuple[torch.Tensor, ...]:
        """Raw inputs -> the exported graph's inputs: the checked float32 batch, not yet standardised."""
        x = self._checked(raw).float()
        if not torch.isfinite(x).all():
            raise DeepfoundryError("inputs hold NaN or infinite values (as float32); the model needs finite numbers")
        return (x,)

    def export_feeds(self, batch: Any) -> tuple[torch.Tensor, ...]:
        """A loader's (encoded) batch -> the graph's inputs: the standardisation undone, ``x * std + mean``."""
        pre = self.info.get("preprocess")
        if not pre:
            return (batch.float(),)
        shape = _export_stat_shape(batch.dim(), batch.shape[1:])
        mean = torch.tensor(pre["mean"], dtype=torch.float32).reshape(shape)
        std = torch.tensor(pre["std"], dtype=torch.float32).reshape(shape)
        return (batch.float() * std + mean,)

    def export_prepare(self) -> torch.nn.Module:
        """The part of encoding that runs inside the graph: the saved standardisation (or nothing)."""
        pre = self.info.get("preprocess")
        if not pre:
            return Inputs()
        shape = tuple(self.info.get("input_shape") or [len(pre["mean"])])
        return Standardize(pre["mean"], pre["std"], _export_stat_shape(len(shape) + 1, shape))

    def export_signature(self) -> list[dict[str, Any]]:
        """The graph's inputs: ``name``, ``shape`` (``"batch"`` and other names are dynamic) and ``dtype``."""
        return [{"name": "input", "shape": ["batch", *self.info.get("input_shape", [])], "dtype": "float32"}]

    def export_facts(self) -> dict[str, Any]:
        """What a client of an exported graph needs to encode inputs itself (written to ``bundle.json``)."""
        return {"input_shape": self.info.get("input_shape"), "preprocess": self.info.get("preprocess"),
                "standardisation": "in the graph" if self.info.get("preprocess") else "none"}

    def read(self, arguments: Sequence[str]) -> ReadInputs:
        """Command-line arguments (file paths) -> raw inputs, stacked in argument order."""
        names: list[str] = []
        arrays: list[np.ndarray] = []
        for arg in arguments:
            path = Path(arg)
            x = self.read_file(path)
            many = x.ndim > len(self.info.get("input_shape", x.shape[1:]))
            x = x if many else x[None]
            names.extend(f"{path}[{i}]" if len(x) > 1 else str(path) for i in range(len(x)))
            arrays.append(x)
        if not arrays:
            raise DeepfoundryError(f"predict needs inputs: {self.files}")
        try:
            return ReadInputs(names, np.concatenate(arrays))
        except ValueError as exc:
            raise DeepfoundryError(f"the input files hold arrays of different shapes: {exc}") from None

    def read_file(self, path: Path) -> np.ndarray:
        if path.is_dir():
            raise DeepfoundryError(f"input '{path}' is a directory; pass {self.files}")
        if not path.is_file():
            raise DeepfoundryError(f"input file '{path}' does not exist")
        if path.suffix.lower() != ".npy":
            raise DeepfoundryError(f"'{path}': this model takes {self.kind} inputs; pass {self.files}")
        return read_npy(path)


def read_npy(path: Path) -> np.ndarray:
    """A ``.npy`` file without pickle; an unreadable file, or one that holds no real numbers, is one clear error.

    The file is mapped first, so a header claiming more data than the file holds is refused before any
    memory is allocated for it."""
    try:
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
        if not isinstance(mapped, np.ndarray):  # np.load opens a .npz archive whatever the file is named
            mapped.close()
            raise DeepfoundryError(f"'{path}' is a .npz archive of arrays, not one .npy array; save one array "
                                   f"with numpy.save")
        x = np.array(mapped)
    except (ValueError, OSError, EOFError, MemoryError) as exc:
        detail = " ".join(str(exc).split())
        if "Python objects" in detail or "allow_pickle" in detail:
            detail = "it holds Python objects, which predict does not unpickle; save a numeric array"
        elif "mmap length" in detail:
            detail = "it is truncated (its header describes more data than the file holds)"
        raise DeepfoundryError(f"'{path}' is not a readable .npy array: {detail}") from None
    if np.iscomplexobj(x):
        raise DeepfoundryError(f"'{path}' holds complex numbers ({x.dtype}); predict needs real numbers")
    if not np.issubdtype(x.dtype, np.number) and x.dtype != np.bool_:
        raise DeepfoundryError(f"'{path}' holds {x.dtype} values; predict needs numbers")
    if x.size == 0:
        raise DeepfoundryError(f"'{path}' holds no examples (an empty array of shape {x.shape})")
    return x


def _numeric_example(value: Any, shape: Sequence[int] | None) -> np.ndarray:
    """A JSON value -> float32 array of ``shape``; the first problem (shape, dtype, NaN/inf) as :class:`ExampleError`."""
    if isinstance(value, (str, bytes, dict)) or value is None:
        raise ExampleError(f"dtype: expected a nested array of numbers, received {type(value).__name__}")
    try:
        arr = np.asarray(value)
    except ValueError:
        arr = None
    if arr is not None and arr.dtype == object:  # ragged, or integers beyond 64 bits (numbers all the same)
        try:
            arr = np.asarray(value, dtype=np.float64)
        except OverflowError:
            raise ExampleError("NaN/inf: an integer beyond float range; the model needs finite float32 numbers") \
                from None
        except (TypeError, ValueError):
            arr = None
    if arr is None or arr.dtype == object:
        raise ExampleError(f"shape: a ragged nested array; expected shape {_shape(shape)}")
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise ExampleError(f"shape: expected {_shape(shape)}, received {_shape(arr.shape)}")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        kind = {"U": "strings", "S": "strings", "b": "booleans"}.get(arr.dtype.kind, str(arr.dtype))
        raise ExampleError(f"dtype: expected numbers (float32), received {kind}")
    with np.errstate(over="ignore"):
        out = arr.astype(np.float32)
    if not np.isfinite(out).all():
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(out))[0])
        raise ExampleError(f"NaN/inf: value at {list(bad)} is {float(arr[bad])!r} (as float32); the model needs "
                           f"finite numbers")
    return out


def _shape(shape: Sequence[int] | None) -> str:
    return "any" if shape is None else "(" + ", ".join(str(int(s)) for s in shape) + ")"

def _export_stat_shape(dims: int, example_shape: Sequence[int]) -> tuple[int, ...]:
    """Images (N, C, H, W) are standardised per channel, other arrays per value (as ``data.core``)."""
    return (1, int(example_shape[0]), 1, 1) if dims == 4 else (1, *(int(d) for d in example_shape))


class Inputs(torch.nn.Module):
    """The graph's inputs as the model takes them: one tensor, or a tuple of several (tokens, lengths)."""

    def forward(self, *inputs: torch.Tensor) -> Any:
        return inputs[0] if len(inputs) == 1 else tuple(inputs)


class Standardize(torch.nn.Module):
    """``(x - mean) / std`` with the run's saved statistics held as buffers (exported as constants)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], shape: tuple[int, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(shape))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std


@CODECS.register("array")
class ArrayCodec(Codec):
    """Numeric arrays shaped like the training inputs."""


@CODECS.register("table")
class TableCodec(Codec):
    """Feature vectors (F,) of a numeric table (scikit-learn data sets), standardised as in training."""

    kind = "table"

    def monitor_features(self, batch: Any) -> dict[str, np.ndarray]:
        """Each feature (standardised as the model sees it), named ``x<j>``."""
        x = torch.as_tensor(batch).double().flatten(1).numpy()  # (N, F)
        return {f"x{j}": x[:, j] for j in range(x.shape[1])}


@CODECS.register("series")
class SeriesCodec(Codec):
    """The last ``window`` values of a time series, in the series' own units."""

    kind = "series"


@CODECS.register("sequence")
class SequenceCodec(Codec):
    """Sequences (L, F) of a sequence-regression data set."""

    kind = "sequence"


@CODECS.register("image")
class ImageCodec(Codec):
    """Images in [0, 1] (C, H, W); image files are converted to the model's channels and size."""

    kind = "image"
    files = "image files (PNG, JPEG, ...) or .npy arrays"

    def example_from_json(self, value: Any) -> Any:
        """A nested array (C, H, W) in [0, 1], or ``{"image": "<base64 PNG/JPEG>"}`` converted like an image file."""
        if isinstance(value, dict):
            import base64
            import binascii

            if set(value) != {"image"} or not isinstance(value["image"], str):
                raise ExampleError(f"an image example is a nested array or {{\"image\": \"<base64>\"}}; received an "
                                   f"object with keys {sorted(map(str, value))}")
            try:
                data = base64.b64decode(value["image"].split(",", 1)[-1], validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ExampleError(f"image: not valid base64 ({exc})", ("image",)) from None
            return self._image_bytes("image", data, ("image",))
        return super().example_from_json(value)

    def example_schema(self) -> dict[str, Any]:
        return {"anyOf": [super().example_schema(),
                          {"type": "object", "properties": {"image": {"type": "string", "contentEncoding": "base64",
                                                                      "description": "a PNG or JPEG file"}},
                           "required": ["image"], "additionalProperties": False}]}

    def examples_from_file(self, name: str, data: bytes) -> list[Any]:
        if name.lower().endswith(".npy"):
            return super().examples_from_file(name, data)
        return [self._image_bytes(name, data, ())]

    def _image_bytes(self, name: str, data: bytes, field: tuple[Any, ...]) -> np.ndarray:
        from .images import load_image_file

        try:
            return load_image_file(name, self.info, data=data)[0].numpy()
        except DeepfoundryError as exc:
            raise ExampleError(str(exc), field) from None

    def monitor_features(self, batch: Any) -> dict[str, np.ndarray]:
        """Per channel, each example's mean and standard deviation (standardised units): ``c0_mean``, ``c0_std``, ..."""
        x = torch.as_tensor(batch).double()  # (N, C, H, W)
        flat = x.flatten(2)  # (N, C, H*W)
        mean, std = flat.mean(dim=2).numpy(), flat.std(dim=2, correction=0).numpy()
        out: dict[str, np.ndarray] = {}
        for c in range(x.shape[1]):
            out[f"c{c}_mean"], out[f"c{c}_std"] = mean[:, c], std[:, c]
        return out

    def read_file(self, path: Path) -> np.ndarray:
        from .images import load_image_file

        if path.suffix.lower() == ".npy" or path.is_dir() or not path.exists():
            return super().read_file(path)
        return load_image_file(path, self.info).numpy()


@CODECS.register("tabular")
class TabularCodec(Codec):
    """Raw table rows (CSV columns by name), transformed with the run's saved preprocessing."""

    kind = "tabular"
    files = "CSV files of raw rows"

    def _columns(self) -> tuple[list[str], list[str]]:
        state = self.info["tabular"]
        return [c["name"] for c in state["numeric"]], [c["name"] for c in state["categorical"]]

    def schema(self) -> dict[str, Any]:
        numeric, categorical = self._columns()
        categories = {c["name"]: c["categories"] for c in self.info["tabular"]["categorical"]}
        columns = [{"name": c, "type": "number"} for c in numeric]
        columns += [{"name": c, "type": "category", "categories": categories[c]} for c in categorical]
        return {"input_kind": self.kind, "input_shape": None, "dtype": "row", "columns": columns}

    def example_schema(self) -> dict[str, Any]:
        """A row: every column of the model, numbers for numeric columns, strings (or numbers) for categorical
        ones, ``null`` for a missing value."""
        numeric, categorical = self._columns()
        properties = {c: {"type": ["number", "null"]} for c in numeric}
        properties.update({c: {"type": ["string", "number", "null"]} for c in categorical})
        return {"type": "object", "properties": properties, "required": numeric + categorical,
                "additionalProperties": False}

    def example_from_json(self, value: Any) -> Any:
        """A row ``{column: raw value}`` holding every column of the model (``null``: missing, imputed as in
        training); numeric columns take numbers, categorical ones strings or numbers."""
        if not isinstance(value, dict):
            raise ExampleError(f"a tabular example is an object {{column: value}}, received {type(value).__name__}")
        numeric, categorical = self._columns()
        known = set(numeric) | set(categorical)
        unknown = [k for k in value if k not in known]
        if unknown:
            raise ExampleError(f"unknown column {unknown[0]!r}; the model's columns: {', '.join(numeric + categorical)}",
                               (unknown[0],))
        missing = [c for c in numeric + categorical if c not in value]
        if missing:
            raise ExampleError(f"missing column(s) {', '.join(map(repr, missing))} (null marks a missing value)",
                               (missing[0],))
        for col in numeric:
            v = value[col]
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ExampleError(f"dtype: column {col!r} is numeric, received {type(v).__name__} {v!r}"[:200], (col,))
            try:
                number = float(v)
            except OverflowError:  # an integer beyond float64 (JSON integers have no size limit)
                number = math.inf
            if not math.isfinite(number) or abs(number) > FLOAT32_MAX:
                raise ExampleError(f"NaN/inf: column {col!r} is {str(v)[:40]} (beyond float32); send null for a "
                                   f"missing value", (col,))
        for col in categorical:
            v = value[col]
            if v is not None and (isinstance(v, (bool, list, dict))):
                raise ExampleError(f"dtype: column {col!r} is categorical (a string), received {type(v).__name__}",
                                   (col,))
        return dict(value)

    def batch_from_examples(self, examples: list[Any]) -> Any:
        return list(examples)

    def examples_from_file(self, name: str, data: bytes) -> list[Any]:
        import tempfile

        import pandas as pd

        from .preprocess import read_table

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "upload.csv"
            path.write_bytes(data)
            try:
                frame = read_table(path, na_values=self.info["tabular"]["na_values"])
            except DeepfoundryError as exc:
                raise ExampleError(str(exc).replace(str(path), name)) from None
        frame = frame.astype(object).where(pd.notna(frame), None)
        rows = [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
                for row in frame.to_dict(orient="records")]
        return [self.example_from_json(row) for row in rows]

    def monitor_features(self, batch: Any) -> dict[str, np.ndarray]:
        """The numeric columns as the model sees them (scaled with the training statistics), by column name."""
        numeric, _ = self._columns()
        x = torch.as_tensor(batch).double().numpy()  # (N, F): the numeric columns first
        return {col: x[:, j] for j, col in enumerate(numeric)}

    def encode(self, raw: Any) -> torch.Tensor:
        from .tabular import table_inputs

        return table_inputs(self.info, raw)

    def export_inputs(self, raw: Any) -> tuple[torch.Tensor, ...]:
        """Rows are transformed in Python (the saved scikit-learn preprocessing); the graph takes the result."""
        return (self.encode(raw),)

    def export_feeds(self, batch: Any) -> tuple[torch.Tensor, ...]:
        return (batch.float(),)

    def export_prepare(self) -> torch.nn.Module:
        return Inputs()

    def export_signature(self) -> list[dict[str, Any]]:
        width = self.info.get("in_features") or (self.info.get("input_shape") or ["features"])[0]
        return [{"name": "input", "shape": ["batch", width], "dtype": "float32"}]

    def export_facts(self) -> dict[str, Any]:
        """The raw columns (numeric: fill, center, scale; categorical: fill and categories, code 0 = unseen)
        and the encoding: rows are transformed with them before the graph (``info['tabular']``)."""
        state = self.info["tabular"]
        columns = ([{"name": c["name"], "kind": "numeric"} for c in state["numeric"]]
                   + [{"name": c["name"], "kind": "categorical", "categories": c["categories"]}
                      for c in state["categorical"]])
        return {"columns": columns, "tabular": state}

    def read(self, arguments: Sequence[str]) -> ReadInputs:
        import pandas as pd

        from .preprocess import read_table

        if not arguments:
            raise DeepfoundryError("predict needs a CSV file of rows for this tabular run")
        na = self.info["tabular"]["na_values"]
        frames, names = [], []
        for arg in arguments:
            if Path(arg).is_dir():
                raise DeepfoundryError(f"input '{arg}' is a directory; pass {self.files}")
            frame = read_table(arg, na_values=na)
            frames.append(frame)
            names.extend(f"{arg}[{i}]" for i in range(len(frame)))
        rows = pd.concat(frames, ignore_index=True)
        return ReadInputs(names, rows, rows.to_dict(orient="records"))


@CODECS.register("text")
class TextCodec(Codec):
    """Raw strings, tokenised with the run's tokeniser and cut to its ``max_length``."""

    kind = "text"
    files = "the texts themselves"

    def schema(self) -> dict[str, Any]:
        return {"input_kind": self.kind, "input_shape": None, "dtype": "string",
                "max_length": self.info.get("max_length")}

    def example_schema(self) -> dict[str, Any]:
        return {"type": "string", "description": f"at most {self.info.get('max_length')} tokens"}

    def example_from_json(self, value: Any) -> Any:
        """A string of at most ``max_length`` tokens."""
        if not isinstance(value, str):
            raise ExampleError(f"dtype: a text example is a string, received {type(value).__name__}")
        limit = self.info.get("max_length")
        if limit is not None:
            from .text import tokenizer_from_json

            n = len(tokenizer_from_json(self.info["tokenizer"]).encode(value))
            if n > int(limit):
                raise ExampleError(f"shape: the text has {n} tokens, more than the model's maximum of {limit}")
        return value

    def batch_from_examples(self, examples: list[Any]) -> Any:
        return list(examples)

    def examples_from_file(self, name: str, data: bytes) -> list[Any]:
        """A UTF-8 text file, one example per non-empty line."""
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ExampleError(f"'{name}' is not UTF-8 text: {exc}") from None
        return [self.example_from_json(line) for line in text.splitlines() if line.strip()]

    def monitor_features(self, batch: Any) -> dict[str, np.ndarray]:
        """Token count and the rate of unknown tokens (``<unk>``) of each text."""
        from .text import UNK

        tokens, lengths = batch  # (B, L), (B,)
        lengths = torch.as_tensor(lengths).double()
        unknown = (torch.as_tensor(tokens) == UNK).sum(dim=1).double()
        return {"tokens": lengths.numpy(), "unknown_rate": (unknown / lengths.clamp_min(1)).numpy()}

    def encode(self, raw: Any) -> Any:
        from .text import encode_texts, tokenizer_from_json

        return encode_texts(tokenizer_from_json(self.info["tokenizer"]), raw, int(self.info["max_length"]))

    def export_inputs(self, raw: Any) -> tuple[torch.Tensor, ...]:
        """Texts are tokenised in Python: ``tokens (B, L)`` padded with 0 and ``lengths (B,)``, both int64."""
        return tuple(self.encode(raw))

    def export_feeds(self, batch: Any) -> tuple[torch.Tensor, ...]:
        return tuple(batch)

    def export_prepare(self) -> torch.nn.Module:
        return Inputs()

    def export_signature(self) -> list[dict[str, Any]]:
        return [{"name": "tokens", "shape": ["batch", "length"], "dtype": "int64"},
                {"name": "lengths", "shape": ["batch"], "dtype": "int64"}]

    def export_facts(self) -> dict[str, Any]:
        """The fitted tokeniser (JSON) and the longest text the model takes."""
        return {"tokenizer": self.info.get("tokenizer"), "max_length": self.info.get("max_length")}

    def read(self, arguments: Sequence[str]) -> ReadInputs:
        if not arguments:
            raise DeepfoundryError("predict needs texts: one argument each")
        return ReadInputs(list(arguments), list(arguments))


@CODECS.register("translation")
class SentenceCodec(TextCodec):
    """Raw source sentences; the task tokenises and decodes them itself (beam search)."""

    kind = "translation"

    def monitor_features(self, batch: Any) -> dict[str, np.ndarray]:
        """Words per source sentence."""
        return {"words": np.array([len(t.split()) for t in batch], dtype=np.float64)}

    def encode(self, raw: Any) -> list[str]:
        texts = [raw] if isinstance(raw, str) else list(raw)
        if not all(isinstance(t, str) for t in texts):
            raise DeepfoundryError("a translation run takes source sentences (strings)")
        return texts


@CODECS.register("graph")
class GraphCodec(Codec):
    """A graph batch dict, as the run's loaders make them (see docs/graphs.md)."""

    kind = "graph"
    hint = "run.predict(run.data().test.batch()) for the nodes of a graph"

    def encode(self, raw: Any) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise DeepfoundryError(f"graph runs predict a batch dict: {self.hint}; see docs/graphs.md")
        return raw

    def read(self, arguments: Sequence[str]) -> ReadInputs:
        raise DeepfoundryError(f"graph runs predict from Python: {self.hint}; see docs/graphs.md")

    def schema(self) -> dict[str, Any]:
        raise DeepfoundryError(f"graph runs are not served over HTTP; they predict from Python: {self.hint}")


@CODECS.register("graph_set")
class GraphSetCodec(GraphCodec):
    """A batch dict of whole graphs (``GraphSet.from_graphs(...).batch(ids)``)."""

    kind = "graph_set"
    hint = "run.predict(GraphSet.from_graphs(...).batch(ids)) for graphs"


def codec_for(info: dict[str, Any]) -> Codec:
    """The codec of the run's input kind (``info["input_kind"]``; plain arrays when it names none)."""
    return CODECS.get(info.get("input_kind") or "array")(info)
