"""Malformed inputs: every file the command line reads, broken in any way, is one ``error:`` line on stderr
with exit code 2, never a traceback (issue 20, item 4).

The first half pins each case found by hand; the second half generates malformed files with hypothesis
(random bytes, truncations of valid files, wrong JSON/YAML types, wrong dtypes and shapes, tiny and empty
tables) for every file the CLI reads: a config YAML, a CSV, an image, a ``.npy`` array, a run's
``model.json`` (with its tokenizer) and ``results.json``. The last part holds the property tests of the
functions underneath (overrides and validation, config round trips, tokenisers, tabular preprocessing).

Everything runs the CLI in-process on two tiny runs trained once for the module (lenet5-digits and a GRU on
300 synthetic sentences, one epoch each); training a generated config or CSV is stopped at the Trainer
(:func:`no_training`), so only what comes before training is exercised there.
"""
from __future__ import annotations

import contextlib
import io
import json
import shutil
import struct
import warnings
import zlib
from pathlib import Path
from typing import Any, Iterator
from unittest import mock

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

import deepfoundry
from deepfoundry import api
from deepfoundry.cli import main
from deepfoundry.config import (RunConfig, apply_overrides, dump_config, load_config, parse_value, read_yaml,
                                recipe_path, validate)
from deepfoundry.data.preprocess import ENCODINGS, IMPUTATIONS, SCALINGS, TabularPreprocessor
from deepfoundry.data.text import BPETokenizer, CharTokenizer, WordTokenizer, tokenizer_from_json
from deepfoundry.errors import DeepfoundryError

QUICK = ["--no-report", "--set", "trainer.progress=false", "--set", "trainer.tensorboard=false"]
FEW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SOME = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------------------- helpers

def cli(args: list[str]) -> tuple[int, str, str]:
    """Run ``deepfoundry ARGS`` in-process: (exit code, stdout, stderr); warnings count as stderr lines."""
    out, err = io.StringIO(), io.StringIO()
    code: Any = 0
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        warnings.simplefilter("always")
        try:
            main(args)
        except SystemExit as exc:
            code = exc.code
    code = 0 if code is None else code if isinstance(code, int) else 1
    return code, out.getvalue(), err.getvalue() + "".join(f"warning: {w.message}\n" for w in caught)


def assert_one_line_error(code: int, err: str, pattern: str = "") -> str:
    """Exit code 2 and stderr exactly one line ``error: ...`` (matching ``pattern``); returns that line."""
    import re

    lines = err.splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    assert "Traceback" not in err
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


def assert_clean(code: int, err: str) -> None:
    """Either it worked (exit 0, nothing on stderr) or it is one ``error:`` line with exit code 2."""
    if code == 0:
        assert err == "", err
    else:
        assert_one_line_error(code, err)


class _Stopped(DeepfoundryError):
    pass


@contextlib.contextmanager
def no_training() -> Iterator[None]:
    """Stop ``train`` where the Trainer would start: data, model and task are built from the config first."""
    def trainer(*args: Any, **kwargs: Any) -> None:
        raise _Stopped("stopped before training (test)")

    with mock.patch.object(api, "Trainer", trainer):
        yield


_counter = iter(range(10**9))


def fresh(folder: Path, name: str) -> Path:
    """A path in ``folder`` no example used before (hypothesis reuses the module's folders)."""
    return folder / f"{next(_counter)}-{name}"


def copy_run(run: Path, folder: Path) -> Path:
    target = fresh(folder, "run")
    target.mkdir()
    for name in ("model.json", "config.yaml", "model.safetensors", "results.json"):
        shutil.copy(run / name, target / name)
    return target


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("malformed")


@pytest.fixture(scope="module")
def lenet_run(work: Path) -> Path:
    """lenet5-digits, one epoch (8x8 grayscale digits)."""
    out = work / "lenet"
    deepfoundry.train("lenet5-digits", overrides={"trainer.epochs": 1, "trainer.report": False,
                                                  "trainer.progress": False, "trainer.tensorboard": False}, out=out)
    return out


@pytest.fixture(scope="module")
def text_run(work: Path) -> Path:
    """A GRU on 300 synthetic sentences, one epoch: a run with a word tokenizer in its model.json."""
    out = work / "gru"
    deepfoundry.train("gru-sentiment", overrides={
        "data.size": 300, "trainer.epochs": 1, "trainer.report": False, "trainer.progress": False,
        "trainer.tensorboard": False, "optim.scheduler.name": "none"}, out=out)
    return out


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` grayscale pixels, with one empty data chunk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


# ----------------------------------------------------------------------------- found by hand: CSV tables

def _csv(path: Path, rows: int) -> Path:
    lines = ["a,b,y"] + [f"{i},{i * 7 % 5},{'xy'[i % 2]}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("rows", [1, 2, 6])
def test_too_small_csv_is_refused_before_training(work: Path, rows: int) -> None:
    csv = _csv(fresh(work, "small.csv"), rows)
    with no_training():
        code, _, err = cli(["train", "mlp-tabular", *QUICK, "--set", f"data.path={csv}", "--set", "data.target=y",
                            "--out", str(fresh(work, "out"))])
    assert_one_line_error(code, err, rf"has {rows} rows?.*needs at least 7 rows")


def test_smallest_accepted_csv_trains(work: Path) -> None:
    csv = _csv(fresh(work, "seven.csv"), 7)
    code, out, err = cli(["train", "mlp-tabular", *QUICK, "--epochs", "1", "--set", f"data.path={csv}",
                          "--set", "data.target=y", "--out", str(fresh(work, "out"))])
    assert code == 0, err


def test_no_validation_rows_trains_when_nothing_monitors_them(work: Path) -> None:
    csv = _csv(fresh(work, "ten.csv"), 10)
    code, out, err = cli(["train", "mlp-tabular", *QUICK, "--epochs", "1", "--set", f"data.path={csv}",
                          "--set", "data.target=y", "--set", "data.val_fraction=0", "--set",
                          "trainer.monitor=train_loss", "--out", str(fresh(work, "out"))])
    assert code == 0, err


def test_infinite_csv_value_is_one_line(work: Path) -> None:
    csv = fresh(work, "inf.csv")
    csv.write_text("a,y\n" + "".join(f"{v},{i % 2}\n" for i, v in enumerate(["1", "inf", "2", "3"] * 3)))
    with no_training():
        code, _, err = cli(["train", "mlp-tabular", *QUICK, "--set", f"data.path={csv}", "--set", "data.target=y",
                            "--out", str(fresh(work, "out"))])
    assert_one_line_error(code, err, r"numeric column .a. has an infinite value")


# ----------------------------------------------------------------------------- found by hand: config files

def test_yaml_errors_name_line_and_column(work: Path) -> None:
    path = fresh(work, "bad.yaml")
    path.write_text("name: x\ndata:\n  name: [digits\nmodel: mlp\n")
    code, _, err = cli(["train", str(path)])
    assert_one_line_error(code, err, r"is not valid YAML at line \d+, column \d+: ")


@pytest.mark.parametrize("text, pattern", [
    ("", r"config file '.*' is empty"),
    ("# only a comment\n", r"config file '.*' is empty"),
    ("- 1\n- 2\n", r"must be a mapping of config keys .*received a list"),
    ("just words\n", r"must be a mapping of config keys .*received a string"),
])
def test_empty_or_non_mapping_config_is_refused(work: Path, text: str, pattern: str) -> None:
    path = fresh(work, "c.yaml")
    path.write_text(text)
    with no_training():
        code, _, err = cli(["train", str(path), "--set", "trainer.epochs=1"])
    assert_one_line_error(code, err, pattern)


def test_directory_where_a_file_is_expected(work: Path, lenet_run: Path) -> None:
    folder = fresh(work, "conf.yaml")
    folder.mkdir()
    code, _, err = cli(["train", str(folder)])
    assert_one_line_error(code, err, r"config file '.*conf.yaml' is a directory")
    plain = fresh(work, "folder")
    plain.mkdir()
    code, _, err = cli(["train", str(plain)])
    assert_one_line_error(code, err, r"'.*folder' is a directory")
    csv = fresh(work, "table.csv")
    csv.mkdir()
    code, _, err = cli(["train", "mlp-tabular", *QUICK, "--set", f"data.path={csv}", "--set", "data.target=y",
                        "--out", str(fresh(work, "out"))])
    assert_one_line_error(code, err, r"CSV file '.*table.csv' is a directory")
    for name in ("x.npy", "x.png"):
        folder = fresh(work, name)
        folder.mkdir()
        code, _, err = cli(["predict", str(lenet_run), str(folder)])
        assert_one_line_error(code, err, r"is a directory")
    from deepfoundry.data.images import load_image_file

    with pytest.raises(DeepfoundryError, match="is a directory"):
        load_image_file(folder, deepfoundry.load_run(lenet_run).info)


# ----------------------------------------------------------------------------- found by hand: run files

def _edit_json(path: Path, edit: Any) -> None:
    obj = json.loads(path.read_text())
    edit(obj)
    path.write_text(json.dumps(obj))


@pytest.mark.parametrize("keys", [("model",), ("info",), ("model", "name"), ("model", "kwargs"),
                                  ("model", "context")])
def test_model_json_missing_key_names_file_and_key(work: Path, lenet_run: Path, keys: tuple[str, ...]) -> None:
    run = copy_run(lenet_run, work)
    np.save(run / "x.npy", np.zeros((1, 8, 8), np.float32))

    def drop(obj: dict) -> None:
        for k in keys[:-1]:
            obj = obj[k]
        del obj[keys[-1]]

    _edit_json(run / "model.json", drop)
    code, _, err = cli(["predict", str(run), str(run / "x.npy")])
    assert_one_line_error(code, err, rf"model.json' .*'{'.'.join(keys)}'")


def test_state_dict_mismatch_names_keys_and_shapes(work: Path, lenet_run: Path) -> None:
    run = copy_run(lenet_run, work)
    np.save(run / "x.npy", np.zeros((1, 8, 8), np.float32))
    _edit_json(run / "model.json", lambda m: m["model"]["context"].update(num_classes=7))
    code, _, err = cli(["predict", str(run), str(run / "x.npy")])
    line = assert_one_line_error(code, err, r"do not fit model 'lenet5'")
    assert "shape" in line and "[10, 84]" in line and "[7, 84]" in line, line
    _edit_json(run / "model.json", lambda m: m["model"].update(name="mlp"))
    code, _, err = cli(["predict", str(run), str(run / "x.npy")])
    line = assert_one_line_error(code, err, r"do not fit model 'mlp'")
    assert "missing" in line and "unexpected" in line, line


def test_empty_npy_is_one_line_even_with_debug(work: Path, lenet_run: Path) -> None:
    empty = fresh(work, "empty.npy")
    empty.write_bytes(b"")
    code, _, err = cli(["predict", str(lenet_run), str(empty)])
    assert_one_line_error(code, err, r"is not a readable \.npy array")
    with pytest.raises(DeepfoundryError, match=r"is not a readable \.npy array"):  # --debug: the exception itself
        main(["--debug", "predict", str(lenet_run), str(empty)])


@pytest.mark.parametrize("array, pattern", [
    (np.zeros((1, 8, 8), np.complex64), r"complex"),
    (np.full((1, 8, 8), np.nan, np.float32), r"NaN or infinite"),
    (np.full((1, 8, 8), 1e300), r"NaN or infinite"),
    (np.zeros((0, 1, 8, 8), np.float32), r"holds no examples"),
])
def test_npy_values_that_cannot_be_predicted(work: Path, lenet_run: Path, array: np.ndarray, pattern: str) -> None:
    path = fresh(work, "x.npy")
    np.save(path, array)
    code, _, err = cli(["predict", str(lenet_run), str(path)])
    assert_one_line_error(code, err, pattern)


def test_large_image_is_refused_from_its_header(work: Path, lenet_run: Path) -> None:
    from PIL import ImageFile

    big = fresh(work, "big.png")
    big.write_bytes(png_header(10_000, 10_000))
    decoded = mock.patch.object(ImageFile.ImageFile, "load", side_effect=AssertionError("decoded the image"))
    with decoded:
        code, _, err = cli(["predict", str(lenet_run), str(big)])
    assert_one_line_error(code, err, r"10000x10000")
    wrong = fresh(work, "wrong.png")
    Image.new("L", (64, 48)).save(wrong)
    with decoded:
        code, _, err = cli(["predict", str(lenet_run), str(wrong)])
    assert_one_line_error(code, err, r"is 48x64 but the model expects 8x8")


def test_pixel_limit_when_resizing(work: Path) -> None:
    from deepfoundry.data.images import MAX_IMAGE_PIXELS, load_image_file

    big = fresh(work, "big.png")
    big.write_bytes(png_header(10_000, 6_000))  # 60 Mpx > 50 Mpx
    info = {"input_kind": "image", "in_channels": 3, "input_size": [32, 32], "resize": True}
    assert MAX_IMAGE_PIXELS == 50_000_000
    with pytest.raises(DeepfoundryError, match=r"6000x10000 .*60,000,000 pixels.*50,000,000"):
        load_image_file(big, info)


def test_results_json_malformed_is_one_line(work: Path, lenet_run: Path) -> None:
    run = copy_run(lenet_run, work)
    (run / "results.json").write_text("{bad")
    code, _, err = cli(["compare", str(run), str(lenet_run)])
    assert_one_line_error(code, err, r"results.json' is corrupt")
    (run / "results.json").write_text("[1, 2]")
    code, _, err = cli(["compare", str(run), str(lenet_run)])
    assert_one_line_error(code, err, r"results.json' must hold a JSON object")


@pytest.mark.parametrize("tokenizer, pattern", [
    ("words", r"tokenizer.*must be an object"),
    ({"kind": "word"}, r"tokenizer.*'tokens'"),
    ({"kind": "word", "tokens": "abc"}, r"tokenizer.*'tokens'.*list of strings"),
    ({"kind": "word", "tokens": ["<pad>", "<unk>", "<bos>", "<eos>", 5]}, r"list of strings"),
    ({"kind": "bpe", "backend": "{not json"}, r"tokenizer.*bpe"),
    ({"kind": "char", "tokens": ["a", "b"]}, r"must start with <pad>"),
    ({"kind": 3}, r"unknown tokenizer kind 3"),
])
def test_tokenizer_json_malformed_is_one_line(work: Path, text_run: Path, tokenizer: Any, pattern: str) -> None:
    run = copy_run(text_run, work)
    _edit_json(run / "model.json", lambda m: m["info"].update(tokenizer=tokenizer))
    code, _, err = cli(["predict", str(run), "not good at all"])
    assert_one_line_error(code, err, pattern)


# ----------------------------------------------------------------------------- generated: config YAML

RECIPES = [recipe_path(n).read_text() for n in ("lenet5-digits", "mlp-wine", "mlp-tabular", "mlp-diabetes")]
SECTIONS = {"data": ["name", "root", "batch_size", "val_fraction", "test_fraction", "normalize", "augment", "limit"],
            "model": ["name", "dropout", "hidden_sizes"], "task": ["name"],
            "optim": ["name", "lr", "betas", "scheduler", "momentum"],
            "trainer": ["epochs", "device", "precision", "monitor", "early_stopping", "threads", "grad_clip"]}

scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)


def truncations(texts: list[str] | st.SearchStrategy) -> st.SearchStrategy:
    source = texts if isinstance(texts, st.SearchStrategy) else st.sampled_from(texts)
    return st.tuples(source, st.floats(0, 1, exclude_max=True)).map(lambda t: t[0][:int(len(t[0]) * t[1])])


@st.composite
def wrong_sections(draw: st.DrawFn) -> str:
    """A config of known sections and keys whose values have random (mostly wrong) types."""
    doc: dict[str, Any] = {}
    for section in draw(st.lists(st.sampled_from(list(SECTIONS) + ["seed", "name"]), max_size=3, unique=True)):
        if section in ("seed", "name") or draw(st.booleans()):
            doc[section] = draw(json_values)
        else:
            keys = draw(st.lists(st.sampled_from(SECTIONS[section]), min_size=1, max_size=2, unique=True))
            doc[section] = {k: draw(json_values) for k in keys}
    return yaml.safe_dump(doc)


config_texts = st.one_of(
    st.binary(max_size=120).map(lambda b: b.decode("latin-1")),
    truncations(RECIPES),
    json_values.filter(lambda v: not isinstance(v, dict)).map(yaml.safe_dump),
    wrong_sections(),
    st.text(alphabet="{}[]:,-&*!|>'\"# \n\tab1", max_size=40),
    st.sampled_from(["seed: 2001-02-30\n", "[" * 600 + "]" * 600, "a: !!python/object:os.system x\n",
                     "a: &x [*x]\n", "\ufeffname: x\nfoo: 1\n", "name: x\n\x00", "trainer: {epochs: 1e400}\n"]),
)


@FEW
@given(text=config_texts)
@example(text='data:\n  "\\r": 1\n')  # a carriage return in a key: the error line shows it escaped
def test_generated_config_files(work: Path, text: str) -> None:
    path = fresh(work, "config.yaml")
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with no_training():
        code, _, err = cli(["train", str(path), *QUICK, "--epochs", "1", "--out", str(fresh(work, "out"))])
    assert_one_line_error(code, err)


# ----------------------------------------------------------------------------- generated: CSV tables

CELLS = ["", "1", "2.5", "-3", "a", "b", "NA", "?", " ", "inf", "nan", "1e309", "\"q", "x,y", "é", "True"]
VALID_CSV = "a,b,c,y\n" + "".join(f"{i % 7},{i * 0.5},{'uvw'[i % 3]},{'pq'[i % 2]}\n" for i in range(40))


@st.composite
def tiny_tables(draw: st.DrawFn) -> str:
    """Up to 12 rows of odd cells (missing, infinite, quoted, non-numeric, accented) under odd column names."""
    columns = draw(st.lists(st.sampled_from(["a", "b", " y", "", "a"]), max_size=3))
    columns.insert(draw(st.integers(0, len(columns))), "y")
    cells = st.sampled_from(CELLS) if draw(st.booleans()) else st.sampled_from(["1", "2", "", "a"])
    rows = draw(st.lists(st.lists(cells, min_size=len(columns), max_size=len(columns)), max_size=12))
    sep = draw(st.sampled_from([",", ",", ";"]))
    return "\n".join(sep.join(r) for r in [columns, *rows]) + draw(st.sampled_from(["", "\n"]))


csv_texts = st.one_of(st.binary(max_size=80).map(lambda b: b.decode("latin-1")), truncations([VALID_CSV]),
                      tiny_tables(), tiny_tables())


@FEW
@given(text=csv_texts, fractions=st.sampled_from([("0.1", "0.2"), ("0", "0"), ("0", "0.5")]))
def test_generated_csv_files(work: Path, text: str, fractions: tuple[str, str]) -> None:
    path = fresh(work, "table.csv")
    path.write_bytes(text.encode("latin-1", "replace"))
    with no_training():
        code, _, err = cli(["train", "mlp-tabular", *QUICK, "--set", f"data.path={path}", "--set", "data.target=y",
                            "--set", f"data.val_fraction={fractions[0]}", "--set", f"data.test_fraction={fractions[1]}",
                            "--out", str(fresh(work, "out"))])
    assert_one_line_error(code, err)


# ----------------------------------------------------------------------------- generated: predict inputs

DTYPES = [np.float32, np.float64, np.float16, np.int8, np.uint8, np.int64, np.uint64, np.bool_, np.complex64,
          np.dtype("U3"), np.dtype("M8[D]"), np.dtype([("a", "f4")])]
SHAPES = [(), (8,), (8, 8), (1, 8, 8), (2, 1, 8, 8), (0, 1, 8, 8), (3, 8, 8), (1, 8, 9), (1, 1, 1, 8, 8)]


def _predictable(x: np.ndarray) -> bool:
    numeric = x.dtype == np.bool_ or (np.issubdtype(x.dtype, np.number) and not np.iscomplexobj(x))
    shape_ok = x.shape in ((8, 8), (1, 8, 8)) or (x.ndim == 4 and x.shape[0] >= 1 and x.shape[1:] == (1, 8, 8))
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, which predict refuses
        return bool(numeric and shape_ok and np.isfinite(x.astype(np.float32)).all())


@FEW
@given(x=st.tuples(st.sampled_from(DTYPES), st.sampled_from(SHAPES)).flatmap(lambda t: hnp.arrays(*t)))
def test_generated_npy_arrays(work: Path, lenet_run: Path, x: np.ndarray) -> None:
    path = fresh(work, "x.npy")
    np.save(path, x)
    code, out, err = cli(["predict", str(lenet_run), str(path)])
    if _predictable(x):
        assert code == 0 and err == "", err
        assert len(out.strip().splitlines()) == (len(x) if x.ndim == 4 else 1)  # (8, 8): one grayscale image
    else:
        assert_one_line_error(code, err)


def _npy_bytes() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((1, 8, 8), np.float32))
    return buffer.getvalue()


def _npz_bytes() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=np.zeros((1, 8, 8)))
    return buffer.getvalue()


@FEW
@given(data=st.one_of(st.binary(max_size=200), truncations(st.just(_npy_bytes())).filter(lambda b: len(b) < 384),
                      st.just(_npz_bytes()), st.just(b"\x93NUMPY\x01\x00")))
def test_generated_npy_bytes(work: Path, lenet_run: Path, data: bytes) -> None:
    path = fresh(work, "x.npy")
    path.write_bytes(data)
    code, _, err = cli(["predict", str(lenet_run), str(path)])
    assert_one_line_error(code, err)


def _image_bytes(mode: str, size: tuple[int, int], fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color=1).save(buffer, format=fmt)
    return buffer.getvalue()


FORMATS = {"PNG": ("L", "RGB", "RGBA", "P", "1", "I;16", "LA"), "BMP": ("L", "RGB", "1"), "GIF": ("L", "P"),
           "TIFF": ("L", "RGB", "F", "I;16", "CMYK"), "JPEG": ("L", "RGB", "CMYK")}


@st.composite
def image_files(draw: st.DrawFn) -> tuple[bytes, str, bool]:
    """(file bytes, suffix, whether the lenet run can predict it)."""
    kind = draw(st.sampled_from(["image", "image", "bytes", "truncated", "header"]))
    if kind == "bytes":
        return draw(st.binary(max_size=100)), draw(st.sampled_from([".png", ".jpg", ".gif"])), False
    if kind == "header":
        return png_header(draw(st.integers(1, 10**5)), draw(st.integers(1, 10**5))), ".png", False
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    mode = draw(st.sampled_from(FORMATS[fmt]))
    size = (8, 8) if draw(st.booleans()) else (draw(st.integers(1, 20)), draw(st.integers(1, 20)))
    data = _image_bytes(mode, size, fmt)
    suffix = "." + fmt.lower()
    if kind == "truncated":
        return data[:draw(st.integers(0, len(data) - 1))], suffix, False
    return data, suffix, size == (8, 8)


@FEW
@given(image=image_files())
@example(image=(_image_bytes("L", (8, 8), "TIFF")[:100], ".tiff", False))  # PIL warns "Corrupt EXIF data"
def test_generated_image_files(work: Path, lenet_run: Path, image: tuple[bytes, str, bool]) -> None:
    data, suffix, predictable = image
    path = fresh(work, "image" + suffix)
    path.write_bytes(data)
    code, out, err = cli(["predict", str(lenet_run), str(path)])
    if predictable:
        assert code == 0 and err == "", err
    elif code == 0:  # a truncated file PIL still decodes whole (the end of a GIF, TIFF's trailing tags)
        assert err == "" and len(out.strip().splitlines()) == 1
    else:
        assert_one_line_error(code, err)


# ----------------------------------------------------------------------------- generated: run files

def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a JSON object."""
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in [prefix + (k,), *_paths(v, prefix + (k,))]]
    if isinstance(obj, list):
        return [p for i, v in enumerate(obj) for p in [prefix + (i,), *_paths(v, prefix + (i,))]]
    return []


REQUIRED = {("model",): dict, ("info",): dict, ("model", "name"): str, ("model", "kwargs"): dict,
            ("model", "context"): dict}  # what model.json must hold: key path -> type


@st.composite
def model_json_edits(draw: st.DrawFn, text: str) -> tuple[str, bool]:
    """(new model.json text, whether it must be refused)."""
    kind = draw(st.sampled_from(["bytes", "truncated", "type", "delete", "replace", "replace"]))
    if kind == "bytes":
        return draw(st.binary(max_size=60)).decode("latin-1"), True
    if kind == "truncated":
        return text[:draw(st.integers(0, len(text) - 2))], True
    if kind == "type":
        return json.dumps(draw(json_values.filter(lambda v: not isinstance(v, dict)))), True
    obj = json.loads(text)
    path = draw(st.sampled_from(_paths(obj)))
    node = obj
    for k in path[:-1]:
        node = node[k]
    if kind == "delete":
        del node[path[-1]]
        return json.dumps(obj), path in REQUIRED
    value = draw(json_values)
    node[path[-1]] = value
    return json.dumps(obj), path in REQUIRED and not isinstance(value, REQUIRED[path])


@SOME
@given(data=st.data())
def test_generated_model_json(work: Path, lenet_run: Path, data: st.DataObject) -> None:
    text, must_refuse = data.draw(model_json_edits((lenet_run / "model.json").read_text()))
    run = copy_run(lenet_run, work)
    (run / "model.json").write_text(text)
    np.save(run / "x.npy", np.full((1, 8, 8), 0.5, np.float32))
    Image.new("L", (8, 8), color=128).save(run / "x.png")
    code, _, err = cli(["predict", str(run), str(run / "x.npy"), str(run / "x.png")])
    if must_refuse:
        assert_one_line_error(code, err)
    else:
        assert_clean(code, err)


@FEW
@given(data=st.data())
def test_generated_tokenizer_json(work: Path, text_run: Path, data: st.DataObject) -> None:
    meta = json.loads((text_run / "model.json").read_text())
    tokenizer = meta["info"]["tokenizer"]
    kind = data.draw(st.sampled_from(["value", "key", "token"]))
    if kind == "value":
        tokenizer = data.draw(json_values)
    elif kind == "key":
        tokenizer = {**tokenizer, data.draw(st.sampled_from(["kind", "tokens", "lowercase"])): data.draw(json_values)}
    else:
        tokens = list(tokenizer["tokens"])
        tokens[data.draw(st.integers(0, len(tokens) - 1))] = data.draw(json_values)
        tokenizer = {**tokenizer, "tokens": tokens}
    meta["info"]["tokenizer"] = tokenizer
    run = copy_run(text_run, work)
    (run / "model.json").write_text(json.dumps(meta))
    text = data.draw(st.text(max_size=20).filter(lambda s: s.strip() and not s.startswith("-")))  # "-x": an option
    code, _, err = cli(["predict", str(run), text])
    assert_clean(code, err)


results_texts = st.one_of(
    st.binary(max_size=60).map(lambda b: (b.decode("latin-1"), True)),
    truncations([json.dumps({"test": {"accuracy": 0.5}, "seconds": 1.0})]).map(lambda t: (t, True)),
    json_values.filter(lambda v: not isinstance(v, dict)).map(lambda v: (json.dumps(v), True)),
    st.dictionaries(st.sampled_from(["test", "val", "eval", "seconds"]), json_values, max_size=3)
    .map(lambda d: (json.dumps(d), False)),
)


@FEW
@given(results=results_texts)
def test_generated_results_json(work: Path, lenet_run: Path, results: tuple[str, bool]) -> None:
    text, must_refuse = results
    run = copy_run(lenet_run, work)
    (run / "results.json").write_text(text)
    code, _, err = cli(["compare", str(run), str(lenet_run)])
    if must_refuse:
        assert_one_line_error(code, err, r"results.json")
    else:
        assert_clean(code, err)


# ----------------------------------------------------------------------------- properties underneath

keys = st.lists(st.sampled_from(["data", "model", "trainer", "optim", "scheduler", "name", "lr", "epochs", "",
                                 "seed", "x", "early_stopping", "0"]), min_size=1, max_size=4).map(".".join)
override_values = st.one_of(st.text(max_size=12), st.sampled_from(["1", "-1", "1e-3", "true", "[1, 2]", "{a: 1}",
                                                                    ".inf", ".nan", "null", "99999999999999999999999",
                                                                    "[", "{", "!!binary x", "&a [*a]", "0x10",
                                                                    "2001-02-30", "[" * 600, "1e400"]))


@SOME
@given(pairs=st.lists(st.tuples(keys | st.text(max_size=10), override_values), max_size=4),
       raw=st.sampled_from([{}, {"data": {"name": "digits"}}, {"trainer": 3}]))
def test_overrides_and_validation_raise_only_project_errors(pairs: list[tuple[str, str]], raw: dict) -> None:
    items = [f"{k}={v}" for k, v in pairs]
    try:
        cfg = validate(apply_overrides(raw, items))
    except DeepfoundryError as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(cfg, RunConfig)
    assert 0 <= cfg.seed < 2**32  # every generator takes it: numpy, torch, scikit-learn's random_state


@SOME
@given(text=st.text(max_size=20))
def test_parse_value_never_raises(text: str) -> None:
    parse_value(text)


finite_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                           | st.text(max_size=8), lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
simple_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
valid_overrides = st.fixed_dictionaries({}, optional={
    "name": simple_text, "description": simple_text, "seed": st.integers(0, 2**32 - 1),
    "trainer.epochs": st.integers(1, 10**6), "optim.lr": st.floats(1e-8, 10.0), "data.batch_size": st.integers(1, 4096),
    "data.val_fraction": st.floats(0, 0.99), "optim.betas": st.tuples(st.floats(0, 0.999), st.floats(0, 0.999)),
    "optim.scheduler.name": st.sampled_from(["none", "step", "cosine", "wsd", "onecycle", "plateau"]),
    "model.extra_key": finite_json,
    "trainer.early_stopping.patience": st.integers(1, 100), "data.augment": st.sampled_from([None, "light", "mnist"]),
})


@SOME
@given(recipe=st.sampled_from(["lenet5-digits", "mlp-tabular", "gru-sentiment", "dqn-cartpole", "gcn-cora"]),
       overrides=valid_overrides)
def test_dump_then_load_gives_the_same_config(work: Path, recipe: str, overrides: dict[str, Any]) -> None:
    cfg = load_config(recipe, overrides)
    path = fresh(work, "dumped.yaml")
    path.write_text(dump_config(cfg), encoding="utf-8")
    assert load_config(path) == cfg
    assert validate(read_yaml(path)) == cfg


words_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)


@SOME
@given(corpus=st.lists(words_text, min_size=1, max_size=4), data=st.data())
def test_char_tokenizer_round_trip(corpus: list[str], data: st.DataObject) -> None:
    tok = CharTokenizer.fit("".join(corpus))
    tok = tokenizer_from_json(json.loads(json.dumps(tok.to_json())))
    s = data.draw(st.text(st.sampled_from(sorted(set("".join(corpus)))), max_size=30))
    assert tok.decode(tok.encode(s)) == s


@SOME
@given(corpus=st.lists(words_text, min_size=1, max_size=4), lowercase=st.booleans(), data=st.data())
def test_word_tokenizer_round_trip(corpus: list[str], lowercase: bool, data: st.DataObject) -> None:
    tok = WordTokenizer.fit(corpus, lowercase=lowercase)
    tok = tokenizer_from_json(json.loads(json.dumps(tok.to_json())))
    words = tok.tokens[4:]
    assume(words)
    s = " ".join(data.draw(st.lists(st.sampled_from(words), max_size=8)))
    assert tok.decode(tok.encode(s)) == s


@settings(max_examples=15, deadline=None)
@given(corpus=st.lists(words_text, min_size=1, max_size=4),
       s=st.text(max_size=30) | st.lists(st.sampled_from(["<pad>", "<unk>", "<bos>", "<eos>", "a", " ", "\n", "é"]),
                                         max_size=8).map("".join))
def test_bpe_tokenizer_round_trip(corpus: list[str], s: str) -> None:
    tok = BPETokenizer.fit(corpus, vocab_size=300, min_freq=1)
    tok = tokenizer_from_json(json.loads(json.dumps(tok.to_json())))
    assert tok.decode(tok.encode(s)) == s


@SOME
@given(obj=json_values | st.fixed_dictionaries({"kind": st.sampled_from(["char", "word", "bpe"])},
                                               optional={"tokens": json_values, "backend": json_values,
                                                         "lowercase": json_values}))
def test_tokenizer_from_json_raises_only_project_errors(obj: Any) -> None:
    try:
        tok = tokenizer_from_json(obj)
    except DeepfoundryError:
        return
    tok.decode(tok.encode("some text <unk> é"))


numbers = st.one_of(st.none(), st.floats(-1e6, 1e6), st.integers(-100, 100), st.sampled_from([1e300, -1e300]))
labels = st.one_of(st.none(), st.sampled_from(["a", "b", "c", " a", "A", "3", "3.0", ""]))


@st.composite
def frames(draw: st.DrawFn, n_num: int, n_cat: int, min_rows: int) -> pd.DataFrame:
    n = draw(st.integers(min_rows, 12))
    cols = {f"n{j}": draw(st.lists(numbers, min_size=n, max_size=n)) for j in range(n_num)}
    cols.update({f"c{j}": draw(st.lists(labels, min_size=n, max_size=n)) for j in range(n_cat)})
    return pd.DataFrame(cols)


@SOME
@given(data=st.data(), n_num=st.integers(0, 2), n_cat=st.integers(0, 2), encoding=st.sampled_from(ENCODINGS),
       scaling=st.sampled_from(SCALINGS), imputation=st.sampled_from(IMPUTATIONS),
       categorical_missing=st.sampled_from(["category", "most_frequent"]), indicators=st.booleans())
def test_tabular_preprocessor_output_is_finite_and_fits(data: st.DataObject, n_num: int, n_cat: int, encoding: str,
                                                        scaling: str, imputation: str, categorical_missing: str,
                                                        indicators: bool) -> None:
    assume(n_num + n_cat)
    train = data.draw(frames(n_num, n_cat, 1))
    numeric, categorical = [f"n{j}" for j in range(n_num)], [f"c{j}" for j in range(n_cat)]
    try:
        pre = TabularPreprocessor.fit(train, numeric, categorical, encoding=encoding, scaling=scaling,
                                      imputation=imputation, categorical_missing=categorical_missing,
                                      missing_indicators=indicators)
    except DeepfoundryError as exc:
        assert "float32" in str(exc)  # 1e300 in a training row
        return
    saved = TabularPreprocessor(json.loads(json.dumps(pre.state)))
    for frame in (train, data.draw(frames(n_num, n_cat, 0))):
        try:
            out = saved.transform(frame)
        except DeepfoundryError as exc:  # a value beyond float32 (1e300), or one a tiny scale takes there
            assert "float32" in str(exc)
            continue
        assert out.dtype == np.float32 and out.shape == (len(frame), len(pre.feature_names))
        assert np.isfinite(out).all()
        assert out.shape[1] == pre.model_context()["in_features"]
