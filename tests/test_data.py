"""Dataset builders on real data: sklearn's bundled sets and the copies in ../shared/datasets."""
from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_diabetes, load_digits

from deepfoundry.config import DataConfig
from deepfoundry.data import build_data, images, tabular
from deepfoundry.data.images import load_image_file, read_idx
from deepfoundry.errors import DeepfoundryError
from deepfoundry.registry import DATASETS
from deepfoundry.splits import holdout_split

CONTEXT = {"root": None, "download": False, "val_fraction": 0.1, "test_fraction": 0.2, "seed": 0}
CIFAR_RECORD = 3073


def build(name: str, **kwargs):
    """Build like build_data does: context facts first, the user's kwargs on top."""
    context = dict(CONTEXT, **{k: kwargs.pop(k) for k in list(kwargs) if k in CONTEXT})
    return DATASETS.build(name, kwargs, context=context, key="data")


def sizes(splits) -> tuple[int, int, int]:
    return len(splits.train[0]), len(splits.val[0]), len(splits.test[0])


def raw_idx_bytes(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()


def test_every_builder_is_registered():
    for name in ["digits", "mnist", "fashion-mnist", "cifar10", "image-folder",
                 "iris", "wine", "breast-cancer", "diabetes"]:
        assert name in DATASETS and DATASETS.describe(name)


# ----------------------------------------------------------------------------- digits

def test_digits_shapes_ranges_and_stratified_balance():
    splits = build("digits")
    (xtr, ytr), (xva, yva), (xte, yte) = splits.train, splits.val, splits.test
    assert sizes(splits) == (1294, 144, 359)
    for x, y in (splits.train, splits.val, splits.test):
        assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape[1:] == (1, 8, 8)
        assert 0.0 <= x.min() and x.max() <= 1.0
    full = np.bincount(load_digits().target, minlength=10)
    counts = [np.bincount(y.numpy(), minlength=10) for y in (ytr, yva, yte)]
    assert np.array_equal(sum(counts), full)  # the three splits partition the data set
    for part, n in zip(counts, (1294, 144, 359)):  # stratified: each class share within one image
        assert np.all(np.abs(part - full * n / full.sum()) <= 1.0)
    info = splits.info
    assert info["num_classes"] == 10 and info["class_names"] == [str(i) for i in range(10)]
    assert (info["in_channels"], info["input_size"], info["in_features"]) == (1, [8, 8], 64)
    assert info["task_type"] == "classification" and info["input_kind"] == "image"
    assert "1,294 train" in info["split_note"]


def test_digits_seeded_and_limited():
    a, b, c = build("digits", seed=1), build("digits", seed=1), build("digits", seed=2)
    assert torch.equal(a.train[0], b.train[0]) and not torch.equal(a.test[1], c.test[1])
    assert sizes(build("digits", limit=200)) == (180, 20, 359)
    with pytest.raises(DeepfoundryError, match="data.limit"):
        build("digits", limit=0)
    with pytest.raises(DeepfoundryError, match="unknown config key 'data.nope'"):
        build("digits", nope=1)


def test_build_data_standardises_digits_with_train_statistics():
    bundle = build_data(DataConfig(name="digits", batch_size=32), seed=0)
    x = bundle.train.x
    assert abs(x.mean().item()) < 1e-4 and abs(x.std().item() - 1.0) < 1e-3  # one channel
    assert bundle.info["preprocess"]["kind"] == "standardize" and len(bundle.info["preprocess"]["mean"]) == 1
    assert (bundle.info["num_train"], bundle.info["num_val"], bundle.info["num_test"]) == (1294, 144, 359)
    assert bundle.info["input_shape"] == [1, 8, 8] and bundle.info["dataset"] == "digits"
    xb, yb = next(iter(bundle.train))
    assert xb.shape == (32, 1, 8, 8) and yb.shape == (32,)


# ----------------------------------------------------------------------------- MNIST

def test_mnist_t10k_folder_gives_the_small_protocol(shared_dataset):
    root = shared_dataset("mnist-t10k")
    splits = build("mnist", root=str(root))
    assert sizes(splits) == (7200, 800, 2000)
    assert "uses the first 8,000 images to train/validate and the last 2,000 to test" in splits.info["split_note"]
    labels = np.frombuffer(raw_idx_bytes(root / "t10k-labels-idx1-ubyte.gz"), np.uint8, offset=8)
    assert np.array_equal(splits.train[1].numpy(), labels[:7200])
    assert np.array_equal(splits.val[1].numpy(), labels[7200:8000])
    assert np.array_equal(splits.test[1].numpy(), labels[8000:])
    pixels = np.frombuffer(raw_idx_bytes(root / "t10k-images-idx3-ubyte.gz"), np.uint8, offset=16)
    assert torch.allclose(splits.test[0][0, 0], torch.tensor(pixels[8000 * 784:8001 * 784].reshape(28, 28)) / 255.0)
    assert splits.info["input_size"] == [28, 28] and splits.info["in_features"] == 784


@pytest.fixture(scope="module")
def full_mnist(shared_dataset):
    root = shared_dataset("mnist")
    return root, build("mnist", root=str(root))


def test_full_mnist_gives_the_standard_split(full_mnist):
    root, splits = full_mnist
    assert sizes(splits) == (54000, 6000, 10000)
    labels = raw_idx_bytes(root / "train-labels-idx1-ubyte.gz")
    assert splits.train[1][0].item() == labels[8] == 5  # the first MNIST training digit is a 5
    assert np.array_equal(splits.val[1].numpy(), np.frombuffer(labels, np.uint8, offset=8)[54000:])
    counts = np.bincount(torch.cat([splits.train[1], splits.val[1]]).numpy(), minlength=10)
    assert counts.tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    pixels = np.frombuffer(raw_idx_bytes(root / "train-images-idx3-ubyte.gz"), np.uint8, offset=16, count=784)
    assert torch.equal(splits.train[0][0, 0], torch.tensor(pixels.reshape(28, 28), dtype=torch.float32) / 255.0)
    assert "standard MNIST split" in splits.info["split_note"]


def test_mnist_limit_keeps_the_first_training_images(shared_dataset):
    splits = build("mnist", root=str(shared_dataset("mnist-t10k")), limit=1000)
    assert sizes(splits) == (900, 100, 2000)


def test_truncated_or_corrupt_idx_files_are_reported(shared_dataset, tmp_path):
    source = shared_dataset("mnist-t10k")
    images_raw = raw_idx_bytes(source / "t10k-images-idx3-ubyte.gz")
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes((source / "t10k-labels-idx1-ubyte.gz").read_bytes())
    bad = tmp_path / "t10k-images-idx3-ubyte"
    bad.write_bytes(images_raw[: len(images_raw) - 100])  # plain IDX, cut short
    with pytest.raises(DeepfoundryError, match="t10k-images-idx3-ubyte' is truncated"):
        build("mnist", root=str(tmp_path))
    bad.unlink()
    gz = tmp_path / "t10k-images-idx3-ubyte.gz"
    compressed = gzip.compress(images_raw, compresslevel=1)
    gz.write_bytes(compressed[:50_000])  # a gzip stream cut short
    with pytest.raises(DeepfoundryError, match="t10k-images-idx3-ubyte.gz"):
        build("mnist", root=str(tmp_path))
    gz.write_bytes(b"\x00\x00\x99\x03" + images_raw[4:])  # unknown type code in the magic number
    with pytest.raises(DeepfoundryError, match="not an IDX file"):
        read_idx(gz)
    gz.write_bytes(compressed)  # an image file where the labels belong
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(compressed)
    with pytest.raises(DeepfoundryError, match="not an MNIST label file"):
        build("mnist", root=str(tmp_path))


def test_idx_reader_finds_torchvision_layout_and_fashion_names(shared_dataset, tmp_path):
    source = shared_dataset("mnist-t10k")
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):  # uncompressed, as torchvision leaves them
        (raw / name).write_bytes(raw_idx_bytes(source / f"{name}.gz"))
    splits = build("fashion-mnist", root=str(tmp_path))
    assert sizes(splits) == (7200, 800, 2000)
    assert splits.info["class_names"][0] == "T-shirt/top" and splits.info["class_names"][9] == "Ankle boot"
    with pytest.raises(DeepfoundryError, match="expected train-images-idx3-ubyte"):
        build("mnist", root=str(tmp_path))  # mnist does not look in FashionMNIST/raw


def test_missing_roots_name_the_folder(tmp_path):
    missing = tmp_path / "nowhere"
    for name in ("mnist", "fashion-mnist", "cifar10"):
        with pytest.raises(DeepfoundryError, match="nowhere' does not exist.*--data-root.*data.download=true"):
            build(name, root=str(missing))
    with pytest.raises(DeepfoundryError, match="nowhere' does not exist.*--data-root"):
        build("image-folder", root=str(missing))
    with pytest.raises(DeepfoundryError, match="needs data.root"):
        build("image-folder")


# ----------------------------------------------------------------------------- CIFAR-10

def cifar_record(path: Path, index: int) -> tuple[int, np.ndarray]:
    with open(path, "rb") as fh:
        fh.seek(index * CIFAR_RECORD)
        record = np.frombuffer(fh.read(CIFAR_RECORD), np.uint8)
    return int(record[0]), record[1:].reshape(3, 32, 32)


def test_cifar10_binary_copy(shared_dataset):
    folder = shared_dataset("cifar10-jpeg") / "cifar-10-batches-bin"
    splits = build("cifar10", root=str(folder.parent))
    assert sizes(splits) == (9000, 1000, 10000)
    assert splits.info["class_names"] == (folder / "batches.meta.txt").read_text().split()
    assert (splits.info["in_channels"], splits.info["input_size"]) == (3, [32, 32])
    ytr, yva = splits.train[1].numpy(), splits.val[1].numpy()
    counts = np.bincount(np.concatenate([ytr, yva]), minlength=10)
    assert counts.tolist() == [1005, 974, 1032, 1016, 999, 937, 1030, 1001, 1025, 981]
    assert np.all(np.abs(np.bincount(yva, minlength=10) - counts / 10) <= 1.0)  # stratified
    assert np.bincount(splits.test[1].numpy(), minlength=10).tolist() == [1000] * 10
    label, pixels = cifar_record(folder / "test_batch.bin", 0)
    assert splits.test[1][0].item() == label
    assert torch.equal(splits.test[0][0], torch.from_numpy(pixels.astype(np.float32)) / 255.0)
    raw_labels = np.fromfile(folder / "data_batch_1.bin", np.uint8)[::CIFAR_RECORD].astype(np.int64)
    train_idx, _ = holdout_split(np.arange(10000), 0.1, 0, raw_labels, strict=False)  # train keeps file order
    for i in (0, 4321, 8999):
        label, pixels = cifar_record(folder / "data_batch_1.bin", int(train_idx[i]))
        assert splits.train[1][i].item() == label
        assert torch.equal(splits.train[0][i], torch.from_numpy(pixels.astype(np.float32)) / 255.0)


@pytest.fixture
def small_cifar_folder(shared_dataset, tmp_path) -> Path:
    """A cifar-10-batches-bin/ with the first 200 training and 50 test records of the shared copy."""
    source = shared_dataset("cifar10-jpeg") / "cifar-10-batches-bin"
    folder = tmp_path / "src" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    (folder / "data_batch_1.bin").write_bytes((source / "data_batch_1.bin").read_bytes()[: 200 * CIFAR_RECORD])
    (folder / "test_batch.bin").write_bytes((source / "test_batch.bin").read_bytes()[: 50 * CIFAR_RECORD])
    (folder / "batches.meta.txt").write_bytes((source / "batches.meta.txt").read_bytes())
    return folder


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass

    def copyfile(self, source, outputfile):
        try:
            super().copyfile(source, outputfile)
        except (BrokenPipeError, ConnectionResetError):  # a client that only wanted the headers
            pass


def test_cifar10_download_extracts_the_binary_archive(small_cifar_folder, tmp_path, monkeypatch):
    archive = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(small_cifar_folder, arcname="cifar-10-batches-bin")
    handler = functools.partial(_QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(images, "CIFAR10_URL", f"http://127.0.0.1:{server.server_port}/cifar-10-binary.tar.gz")
        monkeypatch.setattr(images, "CIFAR10_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
        root = tmp_path / "downloads"
        splits = build("cifar10", root=str(root), download=True)
    finally:
        server.shutdown()
        server.server_close()
    assert sizes(splits) == (180, 20, 50)
    assert (root / "cifar-10-batches-bin" / "test_batch.bin").is_file()
    assert splits.info["class_names"][0] == "airplane"


def test_cifar10_truncated_batch_and_missing_files(small_cifar_folder):
    with open(small_cifar_folder / "data_batch_1.bin", "ab") as fh:
        fh.write(b"\x00" * 100)
    with pytest.raises(DeepfoundryError, match="data_batch_1.bin' is truncated"):
        build("cifar10", root=str(small_cifar_folder))
    (small_cifar_folder / "data_batch_1.bin").unlink()
    with pytest.raises(DeepfoundryError, match="expected data_batch_1.bin .*test_batch.bin"):
        build("cifar10", root=str(small_cifar_folder.parent))


# ----------------------------------------------------------------------------- image folders and predict

@pytest.fixture
def digit_folder(tmp_path) -> tuple[Path, np.ndarray]:
    """root/<digit>/NN.png: 10 real 8x8 digits of classes 0, 1, 2 each; returns the uint8 pixels in file order."""
    digits = load_digits()
    root, written = tmp_path / "digits", []
    for label in (0, 1, 2):
        (root / f"class{label}").mkdir(parents=True)
        for k, idx in enumerate(np.flatnonzero(digits.target == label)[:10]):
            pixels = np.round(digits.images[idx] * 255 / 16).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(root / f"class{label}" / f"{k:02d}.png")
            written.append(pixels)
    return root, np.stack(written)


def test_image_folder_round_trip_and_splits(digit_folder):
    root, written = digit_folder
    whole = build("image-folder", root=str(root), image_size=8, grayscale=True, val_fraction=0.0, test_fraction=0.0)
    x, y = whole.train
    assert x.shape == (30, 1, 8, 8) and y.tolist() == [0] * 10 + [1] * 10 + [2] * 10
    assert torch.equal((x[:, 0] * 255).round().to(torch.uint8), torch.from_numpy(written))
    assert whole.info["class_names"] == ["class0", "class1", "class2"] and whole.info["resize"] is True

    splits = build("image-folder", root=str(root), image_size=[16, 12])
    assert sizes(splits) == (22, 2, 6)  # 24 * 0.1 rounds to 2
    assert splits.train[0].shape[1:] == (3, 16, 12) and splits.info["input_size"] == [16, 12]
    assert np.bincount(splits.test[1].numpy()).tolist() == [2, 2, 2]  # stratified


def test_image_folder_errors(digit_folder):
    root, _ = digit_folder
    (root / "class2" / "broken.png").write_bytes(b"not an image at all")
    with pytest.raises(DeepfoundryError, match="cannot read image '.*broken.png'"):
        build("image-folder", root=str(root))
    with pytest.raises(DeepfoundryError, match="data.image_size"):
        build("image-folder", root=str(root), image_size=[8])
    with pytest.raises(DeepfoundryError, match="at least 2"):
        build("image-folder", root=str(root / "class0"))  # files, no class folders


def test_load_image_file(digit_folder, tmp_path):
    root, written = digit_folder
    info = build("image-folder", root=str(root), image_size=8, grayscale=True).info
    x = load_image_file(root / "class1" / "00.png", info)
    assert x.shape == (1, 1, 8, 8)
    assert torch.equal((x[0, 0] * 255).round().to(torch.uint8), torch.from_numpy(written[10]))
    assert load_image_file(root / "class1" / "00.png", dict(info, input_size=[28, 28])).shape == (1, 1, 28, 28)
    rgb = load_image_file(root / "class1" / "00.png", dict(info, in_channels=3))
    assert rgb.shape == (1, 3, 8, 8) and torch.equal(rgb[0, 0], rgb[0, 2])

    fixed = dict(info, resize=False, input_size=[28, 28])  # like an MNIST run
    with pytest.raises(DeepfoundryError, match="image '.*00.png' is 8x8 but the model expects 28x28 images"):
        load_image_file(root / "class1" / "00.png", fixed)
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(big)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(big.read_bytes()[:60])
    with pytest.raises(DeepfoundryError, match="cannot read image '.*truncated.png'"):
        load_image_file(truncated, info)
    with pytest.raises(DeepfoundryError, match="does not exist"):
        load_image_file(tmp_path / "absent.png", info)


# ----------------------------------------------------------------------------- tables

@pytest.mark.parametrize("name, rows, features, classes", [
    ("iris", 150, 4, 3), ("wine", 178, 13, 3), ("breast-cancer", 569, 30, 2)])
def test_tabular_classification(name, rows, features, classes):
    splits = build(name)
    assert sum(sizes(splits)) == rows
    for x, y in (splits.train, splits.val, splits.test):
        assert x.dtype == torch.float32 and x.shape[1] == features and y.dtype == torch.int64
    info = splits.info
    assert (info["num_classes"], info["in_features"], len(info["feature_names"])) == (classes, features, features)
    assert info["input_kind"] == "table" and info["task_type"] == "classification"
    full = np.bincount(torch.cat([splits.train[1], splits.val[1], splits.test[1]]).numpy())
    test_counts = np.bincount(splits.test[1].numpy(), minlength=classes)
    assert np.all(np.abs(test_counts - full * len(splits.test[1]) / rows) <= 1.0)  # stratified


def test_diabetes_targets_are_standardised_and_invertible():
    splits = build("diabetes")
    info = splits.info
    assert info["task_type"] == "regression" and info["num_classes"] == 1 and info["in_features"] == 10
    ytr = splits.train[1]
    assert ytr.dtype == torch.float32 and ytr.shape == (len(splits.train[0]), 1)
    assert abs(ytr.mean().item()) < 1e-5 and abs(ytr.std(unbiased=False).item() - 1.0) < 1e-4
    standardised = torch.cat([y for _, y in (splits.train, splits.val, splits.test)])
    restored = standardised * info["target_std"] + info["target_mean"]
    original = np.sort(load_diabetes().target)
    assert np.allclose(np.sort(restored[:, 0].numpy()), original, atol=1e-3)
    assert splits.train[0][:, 0].max() > 1.0  # raw ages in years, not sklearn's pre-scaled features
    bundle = build_data(DataConfig(name="diabetes"), seed=0)
    assert bundle.info["target_std"] == info["target_std"]
    assert torch.allclose(bundle.train.x.mean(0), torch.zeros(10), atol=1e-4)
    assert tabular.diabetes.__doc__
