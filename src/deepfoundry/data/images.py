"""Image data sets: sklearn digits, MNIST and Fashion-MNIST (IDX), CIFAR-10 (binary version) and a
folder of class folders, plus :func:`load_image_file` for ``predict``.

Every builder returns :class:`~deepfoundry.data.core.Splits` with inputs as float32 tensors
``(N, C, H, W)`` in [0, 1] and int64 labels; :func:`~deepfoundry.data.core.build_data` then
standardises each channel with statistics of the training split. File formats are parsed with
numpy alone (no pickle); torchvision is used only to download the standard sources.

>>> from deepfoundry.registry import DATASETS
>>> splits = DATASETS.build("digits", {"limit": 200})
>>> splits.train[0].shape, splits.info["num_classes"]
(torch.Size([180, 1, 8, 8]), 10)
"""
from __future__ import annotations

import gzip
import io
import math
import re
import struct
import warnings
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import DeepfoundryError
from ..registry import DATASETS
from ..splits import (SplitIndices, check_limit, check_strategy, holdout_count, holdout_split, random_split,
                      stratified_split)
from .core import Splits

DIGIT_CLASSES = [str(i) for i in range(10)]
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
DEFAULT_DATA_HOME = Path("~/.cache/deepfoundry/datasets")
MAX_IMAGE_PIXELS = 50_000_000  # larger images are refused from their header, before they are decoded


def _three_way(labels: np.ndarray, stratified: bool, val_fraction: float, test_fraction: float, seed: int,
               limit: int | None = None) -> SplitIndices:
    """``data.split``: stratified by ``labels`` (where possible) or plain random; see :mod:`deepfoundry.splits`."""
    if stratified:
        return stratified_split(labels, val_fraction, test_fraction, seed, strict=False, limit=limit)
    return random_split(len(labels), val_fraction, test_fraction, seed, limit=limit)


def _to_tensors(images: np.ndarray, labels: np.ndarray, idx: np.ndarray | slice) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, C, H, W) and labels, selected by ``idx`` -> float32 in [0, 1] and int64."""
    x = torch.from_numpy(np.asarray(images[idx], dtype=np.float32)).div_(255.0)
    y = torch.from_numpy(np.asarray(labels[idx], dtype=np.int64))
    return x, y


def _image_info(class_names: Sequence[str], shape: tuple[int, int, int], split_note: str,
                resize: bool = False) -> dict[str, Any]:
    c, h, w = shape
    return {"task_type": "classification", "num_classes": len(class_names), "class_names": list(class_names),
            "in_channels": c, "input_size": [h, w], "input_shape": [c, h, w], "in_features": c * h * w,
            "input_kind": "image", "resize": resize, "split_note": split_note}


def _counts_note(train: int, val: int, test: int) -> str:
    return f"{train:,} train / {val:,} val / {test:,} test images"


# ----------------------------------------------------------------------------- folders and errors

def _resolve_root(name: str, root: str | None) -> Path:
    """The user's root, or ``~/.cache/deepfoundry/datasets/<name>`` when none was given."""
    return Path(root).expanduser() if root else DEFAULT_DATA_HOME.expanduser() / name


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _missing_root(name: str, folder: Path, what: str) -> DeepfoundryError:
    return DeepfoundryError(
        f"dataset {name!r}: folder '{folder}' does not exist; point --data-root (data.root) at a folder "
        f"holding {what}, or set data.download=true to fetch them")


# ----------------------------------------------------------------------------- digits

@DATASETS.register("digits")
def digits(*, val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0,
           limit: int | None = None, split: str = "stratified") -> Splits:
    """scikit-learn's 1,797 handwritten digits, 8x8 grayscale, 10 classes (offline)."""
    from sklearn.datasets import load_digits

    stratified = check_strategy(split, ("stratified", "random")) == "stratified"  # data.split
    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8), pixels 0..16 -> [0, 1]
    labels = bunch.target.astype(np.int64)
    train, val, test = _three_way(labels, stratified, val_fraction, test_fraction, seed, limit)
    pick = lambda idx: (torch.from_numpy(images[idx]), torch.from_numpy(labels[idx]))  # noqa: E731
    kind = "a stratified random" if stratified else "a random"
    note = (f"{_counts_note(len(train), len(val), len(test))}: {kind} split (seed {seed}) of "
            f"scikit-learn's {len(labels):,} digits, {test_fraction:.0%} test, then {val_fraction:.0%} of the rest val")
    return Splits(pick(train), pick(val), pick(test), _image_info(DIGIT_CLASSES, (1, 8, 8), note))


# ----------------------------------------------------------------------------- MNIST / Fashion-MNIST (IDX)

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise DeepfoundryError(f"cannot decompress '{path}' (truncated or corrupt gzip file: {exc})") from None


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzip or not): magic ``0 0 <dtype> <ndim>``, ``ndim`` big-endian uint32
    sizes, then the values. The file size must match the sizes in its header."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DeepfoundryError(f"'{path}' is not an IDX file (bad magic number {raw[:4].hex() or 'none'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DeepfoundryError(f"IDX file '{path}' is truncated: {len(raw)} bytes, shorter than its header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = header + math.prod(dims) * dtype.itemsize
    if len(raw) != expected:
        raise DeepfoundryError(f"IDX file '{path}' is truncated or corrupt: its header announces shape {dims} "
                               f"({expected:,} bytes) but it holds {len(raw):,} bytes")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def _read_mnist_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 1, 28, 28) and labels (N,) from one MNIST-style IDX pair, validated."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DeepfoundryError(f"'{images_path}' is not an MNIST image file (magic 2051, N x 28 x 28 bytes); "
                               f"found {images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DeepfoundryError(f"'{labels_path}' is not an MNIST label file (magic 2049, N bytes); "
                               f"found {labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise DeepfoundryError(f"'{images_path}' holds {len(images):,} images but '{labels_path}' "
                               f"{len(labels):,} labels")
    if labels.size and labels.max() > 9:
        raise DeepfoundryError(f"'{labels_path}' has label {int(labels.max())}; MNIST labels are 0-9")
    return images[:, None], labels


def _find_idx_pair(folder: Path, kind: str) -> tuple[Path, Path] | None:
    found = []
    for stem in _MNIST_FILES[kind]:
        path = next((folder / n for n in (stem, stem + ".gz") if (folder / n).is_file()), None)
        if path is None:
            return None
        found.append(path)
    return found[0], found[1]


def _locate_mnist(root: Path, raw_sub: str) -> tuple[tuple[Path, Path], tuple[Path, Path] | None] | None:
    """(test pair, train pair or None) from ``root`` or ``root/<raw_sub>/raw`` (torchvision's
    layout), preferring a folder with both pairs; ``None`` when neither holds the t10k files."""
    found = []
    for folder in (root, root / raw_sub / "raw"):
        test = _find_idx_pair(folder, "test")
        if test is not None:
            found.append((test, _find_idx_pair(folder, "train")))
    found.sort(key=lambda pairs: pairs[1] is None)  # stable: a complete folder first
    return found[0] if found else None


def _download_mnist(title: str, dataset_cls: str, folder: Path) -> None:
    """Let torchvision fetch the standard IDX files into ``folder/<dataset_cls>/raw``."""
    import torchvision.datasets

    try:
        getattr(torchvision.datasets, dataset_cls)(str(folder), train=True, download=True)
    except Exception as exc:  # network errors come in many types; report them as one line
        raise DeepfoundryError(f"could not download {title} into '{folder}': {_one_line(exc)}") from None


def _mnist_like(name: str, title: str, raw_sub: str, class_names: list[str], root: str | None,
                download: bool, val_fraction: float, limit: int | None) -> Splits:
    folder = _resolve_root(name, root)
    found = _locate_mnist(folder, raw_sub) if folder.is_dir() else None
    if download and (found is None or found[1] is None):
        _download_mnist(title, raw_sub, folder)
        found = _locate_mnist(folder, raw_sub)
    if found is None:
        if not folder.is_dir():
            raise _missing_root(name, folder, f"the {title} IDX files")
        expected = ", ".join(f"{s}(.gz)" for s in _MNIST_FILES["train"] + _MNIST_FILES["test"])
        raise DeepfoundryError(
            f"dataset {name!r}: no {title} IDX files in '{folder}' (looked there and in "
            f"'{folder / raw_sub / 'raw'}'); expected {expected} (the t10k pair alone gives the small "
            f"8,000/2,000 protocol); set data.download=true to fetch them")
    test_paths, train_paths = found

    if train_paths is not None:  # the standard split: 60,000 train (val = the last share), 10,000 test
        images, labels = _read_mnist_pair(*train_paths)
        x_test, y_test = _read_mnist_pair(*test_paths)
        pool = len(images) if limit is None else min(len(images), check_limit(limit))
        n_val = holdout_count(pool, val_fraction)
        train = _to_tensors(images, labels, slice(0, pool - n_val))
        val = _to_tensors(images, labels, slice(pool - n_val, pool))
        test = _to_tensors(x_test, y_test, slice(None))
        note = (f"standard {title} split: {_counts_note(pool - n_val, n_val, len(y_test))}; val is the last "
                f"{val_fraction:.0%} of the first {pool:,} training images, test the official t10k set")
    else:  # only the t10k files: the small offline protocol (first 8,000 train/val, last 2,000 test)
        images, labels = _read_mnist_pair(*test_paths)
        n_pool = len(images) * 4 // 5
        pool = n_pool if limit is None else min(n_pool, check_limit(limit))
        n_val = holdout_count(pool, val_fraction)
        train = _to_tensors(images, labels, slice(0, pool - n_val))
        val = _to_tensors(images, labels, slice(pool - n_val, pool))
        test = _to_tensors(images, labels, slice(n_pool, None))
        note = (f"only the {title} t10k files were found: uses the first {n_pool:,} images to train/validate "
                f"and the last {len(images) - n_pool:,} to test "
                f"({_counts_note(pool - n_val, n_val, len(images) - n_pool)}, val = the last {val_fraction:.0%}); "
                f"not comparable to standard {title} numbers")
    return Splits(train, val, test, _image_info(class_names, (1, 28, 28), note))


@DATASETS.register("mnist")
def mnist(*, root: str | None = None, download: bool = False, val_fraction: float = 0.1,
          limit: int | None = None) -> Splits:
    """MNIST handwritten digits, 28x28 grayscale, 10 classes, from the IDX files (60k/10k, or t10k alone)."""
    return _mnist_like("mnist", "MNIST", "MNIST", DIGIT_CLASSES, root, download, val_fraction, limit)


@DATASETS.register("fashion-mnist")
def fashion_mnist(*, root: str | None = None, download: bool = False, val_fraction: float = 0.1,
                  limit: int | None = None) -> Splits:
    """Fashion-MNIST clothing images, 28x28 grayscale, 10 classes, from the IDX files."""
    return _mnist_like("fashion-mnist", "Fashion-MNIST", "FashionMNIST", FASHION_MNIST_CLASSES,
                       root, download, val_fraction, limit)


# ----------------------------------------------------------------------------- CIFAR-10 (binary version)

_CIFAR_RECORD = 1 + 3 * 32 * 32  # label byte, then the R, G and B planes, each 32x32 row-major


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 3, 32, 32) and labels (N,) of one CIFAR-10 binary batch file."""
    path = Path(path)
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % _CIFAR_RECORD:
        raise DeepfoundryError(f"'{path}' is truncated or not a CIFAR-10 binary batch: {raw.size:,} bytes is "
                               f"not a positive multiple of the {_CIFAR_RECORD:,}-byte record")
    records = raw.reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise DeepfoundryError(f"'{path}' has label {int(labels.max())}; CIFAR-10 labels are 0-9")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def _locate_cifar(root: Path) -> tuple[list[Path], Path, Path] | None:
    """(training batches, test batch, meta file) in ``root`` or ``root/cifar-10-batches-bin``."""
    for folder in (root, root / "cifar-10-batches-bin"):
        batches = sorted(folder.glob("data_batch_*.bin"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
        if batches and (folder / "test_batch.bin").is_file():
            return batches, folder / "test_batch.bin", folder / "batches.meta.txt"
    return None


def download_cifar10(folder: Path) -> None:
    """Fetch ``CIFAR10_URL`` (checked against ``CIFAR10_MD5``) and extract it into ``folder``."""
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        download_and_extract_archive(CIFAR10_URL, str(folder), md5=CIFAR10_MD5, remove_finished=True)
    except Exception as exc:  # network and archive errors come in many types; report them as one line
        raise DeepfoundryError(
            f"could not download CIFAR-10 from {CIFAR10_URL} into '{folder}': {_one_line(exc)}") from None


@DATASETS.register("cifar10")
def cifar10(*, root: str | None = None, download: bool = False, val_fraction: float = 0.1, seed: int = 0,
            limit: int | None = None) -> Splits:
    """CIFAR-10 photos, 32x32 RGB, 10 classes, from the official binary version (no pickle)."""
    folder = _resolve_root("cifar10", root)
    found = _locate_cifar(folder) if folder.is_dir() else None
    if found is None and download:
        download_cifar10(folder)
        found = _locate_cifar(folder)
    if found is None:
        if not folder.is_dir():
            raise _missing_root("cifar10", folder, "cifar-10-batches-bin/ (CIFAR-10 binary version)")
        raise DeepfoundryError(
            f"dataset 'cifar10': no CIFAR-10 binary batches in '{folder}' or '{folder / 'cifar-10-batches-bin'}'; "
            f"expected data_batch_1.bin ... data_batch_5.bin (at least one), test_batch.bin and batches.meta.txt "
            f"(the binary version, {CIFAR10_URL}); set data.download=true to fetch them")
    batches, test_path, meta_path = found
    parts = [read_cifar_batch(p) for p in batches]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    x_test, y_test = read_cifar_batch(test_path)
    class_names = CIFAR10_CLASSES
    if meta_path.is_file():
        class_names = [line.strip() for line in meta_path.read_text().splitlines() if line.strip()]
        if len(class_names) != 10:
            raise DeepfoundryError(f"'{meta_path}' lists {len(class_names)} class names; expected 10")

    pool = np.arange(len(labels) if limit is None else min(len(labels), check_limit(limit)))
    train, val = holdout_split(pool, val_fraction, seed, labels, strict=False)
    note = (f"CIFAR-10 ({len(batches)} of 5 training batches): {_counts_note(len(train), len(val), len(y_test))}; "
            f"val is a stratified random {val_fraction:.0%} (seed {seed}) of the training images, "
            f"test the official test batch")
    return Splits(_to_tensors(images, labels, train), _to_tensors(images, labels, val),
                  _to_tensors(x_test, y_test, slice(None)), _image_info(class_names, (3, 32, 32), note))


# ----------------------------------------------------------------------------- a folder of class folders

def _image_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int) and not isinstance(image_size, bool) and image_size > 0:
        return image_size, image_size
    if (isinstance(image_size, (list, tuple)) and len(image_size) == 2
            and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in image_size)):
        return int(image_size[0]), int(image_size[1])
    raise DeepfoundryError(f"config key 'data.image_size': expected a positive integer or [height, width], "
                           f"received {image_size!r}")


def _read_image(path: Path, mode: str, size: tuple[int, int] | None,
                expect: tuple[int, int] | None = None, data: bytes | None = None) -> np.ndarray:
    """uint8 array (C, H, W) of one image file in PIL ``mode`` (L or RGB), resized to ``size`` (H, W) if given.

    The size is read from the header first (PIL opens lazily): an image above :data:`MAX_IMAGE_PIXELS`, or
    of another size than ``expect`` (H, W), is refused before its pixels are decoded."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit below is lower
            warnings.simplefilter("ignore", UserWarning)  # PIL's notes on damaged metadata ("Corrupt EXIF data"):
            source = path if data is None else io.BytesIO(data)  # data: an upload's bytes, named by path
            with Image.open(source) as img:               # the pixels decode, or the error below says why not
                width, height = img.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise DeepfoundryError(f"image '{path}' is {height}x{width} ({width * height:,} pixels), above "
                                           f"the limit of {MAX_IMAGE_PIXELS:,} pixels; shrink it first")
                if expect is not None and (height, width) != tuple(expect):
                    raise DeepfoundryError(f"image '{path}' is {height}x{width} but the model expects {expect[0]}x"
                                           f"{expect[1]} images (height x width); resize it first")
                img = img.convert(mode)
                if size is not None and img.size != (size[1], size[0]):
                    img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                arr = np.array(img, dtype=np.uint8)
    except Image.DecompressionBombError as exc:
        raise DeepfoundryError(f"image '{path}' is too large to read (above {MAX_IMAGE_PIXELS:,} pixels): "
                               f"{exc}") from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, KeyError, TypeError,
            ZeroDivisionError, MemoryError) as exc:  # what PIL's decoders raise on damaged files
        raise DeepfoundryError(f"cannot read image '{path}': {' '.join(str(exc).split()) or type(exc).__name__}"
                               ) from None
    return arr[None] if arr.ndim == 2 else np.ascontiguousarray(arr.transpose(2, 0, 1))


@DATASETS.register("image-folder")
def image_folder(*, root: str | None = None, image_size: int | list[int] = 32, grayscale: bool = False,
                 val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0,
                 split: str = "stratified") -> Splits:
    """Your own images: root/<class>/*.png|jpg|jpeg|bmp|gif|webp, resized to image_size, split by fraction."""
    if not root:
        raise DeepfoundryError("dataset 'image-folder' needs data.root (--data-root): a folder with one "
                               "sub-folder of images per class")
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise DeepfoundryError(f"dataset 'image-folder': folder '{folder}' does not exist; point --data-root "
                               f"(data.root) at a folder with one sub-folder of images per class")
    height, width = _image_size(image_size)
    stratified = check_strategy(split, ("stratified", "random")) == "stratified"  # data.split
    class_dirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(class_dirs) < 2:
        raise DeepfoundryError(f"dataset 'image-folder': '{folder}' has {len(class_dirs)} class folder(s); "
                               f"expected at least 2 sub-folders, one per class, each holding images")
    files: list[tuple[Path, int]] = []
    for label, class_dir in enumerate(class_dirs):
        found = sorted(p for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not found:
            raise DeepfoundryError(f"dataset 'image-folder': class folder '{class_dir}' holds no image "
                                   f"({', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder")
        files += [(p, label) for p in found]
    mode = "L" if grayscale else "RGB"
    images = np.stack([_read_image(p, mode, (height, width)) for p, _ in files])
    labels = np.array([label for _, label in files], dtype=np.int64)
    train, val, test = _three_way(labels, stratified, val_fraction, test_fraction, seed)
    kind = "a stratified random" if stratified else "a random"
    note = (f"{_counts_note(len(train), len(val), len(test))} from '{folder}': {kind} split "
            f"(seed {seed}), {test_fraction:.0%} test, then {val_fraction:.0%} of the rest val")
    info = _image_info([d.name for d in class_dirs], (images.shape[1], height, width), note, resize=True)
    return Splits(_to_tensors(images, labels, train), _to_tensors(images, labels, val),
                  _to_tensors(images, labels, test), info)


# ----------------------------------------------------------------------------- predict

def load_image_file(path: str | Path, info: dict[str, Any], data: bytes | None = None) -> torch.Tensor:
    """One image file as the float tensor (1, C, H, W) in [0, 1] a model trained on ``info`` expects.

    ``data``: the file's bytes (an upload); ``path`` then only names it in messages.

    Converted to grayscale or RGB by ``info['in_channels']``; resized to ``info['input_size']`` when
    ``info['resize']`` is true (image-folder runs), otherwise its size must already match.
    """
    path = Path(path)
    if info.get("input_kind", "image") != "image":
        raise DeepfoundryError(f"this model takes {info.get('input_kind')} inputs, not image files like '{path}'")
    if data is None and path.is_dir():
        raise DeepfoundryError(f"image file '{path}' is a directory; pass image files")
    if data is None and not path.is_file():
        raise DeepfoundryError(f"image file '{path}' does not exist")
    channels, size = info.get("in_channels", 0), info.get("input_size")
    if channels not in (1, 3):
        raise DeepfoundryError(f"the model expects {channels}-channel inputs; image files can feed only "
                               f"1-channel (grayscale) or 3-channel (RGB) models")
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)):
        raise DeepfoundryError(f"the run's info.input_size (model.json) must be [height, width], received {size!r}")
    height, width = (int(s) for s in size)
    resize = bool(info.get("resize"))
    arr = _read_image(path, "L" if channels == 1 else "RGB", (height, width) if resize else None,
                      expect=None if resize else (height, width), data=data)
    if arr.shape[1:] != (height, width):
        raise DeepfoundryError(f"image '{path}' is {arr.shape[1]}x{arr.shape[2]} but the model expects "
                               f"{height}x{width} images (height x width); resize it first")
    return torch.from_numpy(arr).float().div_(255.0).unsqueeze(0)
