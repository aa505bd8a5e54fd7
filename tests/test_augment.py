"""Augmentation: image batches on the device (presets, explicit lists, MixUp/CutMix), EDA on text,
training-only application, determinism, augment-preview and bad inputs."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from deepfoundry.cli import main
from deepfoundry.config import load_config
from deepfoundry.data import build_data
from deepfoundry.data.augment import PRESETS, BatchAugment, build_batch_augment
from deepfoundry.data.images import read_cifar_batch
from deepfoundry.data.text_augment import (RandomDeletion, RandomInsertion, RandomSwap, SynonymReplacement,
                                           build_text_augment)
from deepfoundry.engine.trainer import Trainer
from deepfoundry.config import OptimConfig, TrainerConfig
from deepfoundry.errors import DeepfoundryError
from deepfoundry.models import build_model
from deepfoundry.tasks import build_task
from deepfoundry.api import model_context

from conftest import require_shared_dataset

INFO = {"input_kind": "image", "num_classes": 10, "task_type": "classification"}


@pytest.fixture(scope="module")
def cifar() -> tuple[torch.Tensor, torch.Tensor]:
    folder = require_shared_dataset("cifar10-jpeg")
    images, labels = read_cifar_batch(next(folder.rglob("data_batch_1.bin")))
    return torch.from_numpy(images[:32].astype(np.float32) / 255), torch.from_numpy(labels[:32])


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_keep_shape_dtype_range(preset: str, cifar) -> None:
    x, y = cifar
    xa, ya = build_batch_augment(preset, INFO, seed=0)((x, y), epoch=0, index=0)
    assert xa.shape == x.shape and xa.dtype == x.dtype and ya.dtype == y.dtype and torch.equal(ya, y)
    assert xa.min() >= 0 and xa.max() <= 1 and not torch.isnan(xa).any()
    assert (xa - x).abs().mean() > 0.01  # something happened


def test_exact_kernels_match_torchvision(cifar) -> None:
    x, y = cifar
    flip = BatchAugment([{"name": "RandomHorizontalFlip", "p": 1.0}, {"name": "RandomVerticalFlip", "p": 1.0}])
    assert torch.equal(flip((x, y))[0], x.flip(-1).flip(-2))
    same = BatchAugment([{"name": "RandomCrop", "padding": 0}, {"name": "RandomHorizontalFlip", "p": 0.0}])
    assert torch.equal(same((x, y))[0], x)
    rot = BatchAugment([{"name": "RandomRotation", "degrees": [30, 30]}])((x, y))[0]
    ref = TF.rotate(x, 30, interpolation=InterpolationMode.BILINEAR)
    assert (rot - ref)[..., 6:26, 6:26].abs().max() < 1e-4  # same rotation (edges differ only in fill)
    hue = BatchAugment([{"name": "ColorJitter", "hue": [0.1, 0.1]}])((x, y))[0]
    assert (hue - TF.adjust_hue(x, 0.1)).abs().max() < 1e-4


def test_per_sample_randomness_and_determinism(cifar) -> None:
    x, y = cifar
    same_image = x[:1].repeat(8, 1, 1, 1)
    aug = BatchAugment([{"name": "RandomRotation", "degrees": 30}], seed=3)
    out = aug((same_image, y[:8]), epoch=0, index=0)[0]
    assert len({round(float(o.sum()), 3) for o in out}) == 8  # every image has its own angle
    again = BatchAugment([{"name": "RandomRotation", "degrees": 30}], seed=3)((same_image, y[:8]), epoch=0, index=0)[0]
    assert torch.equal(out, again)
    other = aug((same_image, y[:8]), epoch=0, index=1)[0]
    assert not torch.equal(out, other)


@pytest.mark.parametrize("name", ["MixUp", "CutMix"])
def test_mixing_gives_soft_targets_that_sum_to_one(name: str, cifar) -> None:
    x, y = cifar
    xa, q = BatchAugment([{"name": name, "alpha": 1.0}], num_classes=10)((x, y), epoch=0, index=2)
    assert q.shape == (len(y), 10) and torch.allclose(q.sum(dim=1), torch.ones(len(y)))
    assert (q.max(dim=1).values < 1).any()  # mixed, not one-hot
    keep = q[torch.arange(len(y)), y]  # the share of each image's own class
    assert (keep >= 0).all() and xa.shape == x.shape


def test_augmentation_runs_on_training_batches_only() -> None:
    cfg = load_config("mlp-digits", {"data.augment": [{"name": "RandomAffine", "degrees": 10}, {"name": "MixUp"}],
                                     "trainer.epochs": 1, "trainer.progress": False})
    data = build_data(cfg.data, seed=0)
    assert isinstance(data.train.batch_transform, BatchAugment)
    assert data.val.batch_transform is None and data.test.batch_transform is None
    calls: list[tuple[int, int]] = []
    inner = data.train.batch_transform

    def spy(batch, epoch, index):
        calls.append((epoch, index))
        return inner(batch, epoch=epoch, index=index)

    data.train.batch_transform = spy
    model = build_model(cfg.model.name, cfg.model.builder_kwargs(), model_context(data.info))
    task = build_task(cfg.task, model, data.info)
    Trainer(TrainerConfig(epochs=1, progress=False, device="cpu"), OptimConfig()).fit(task, data)
    assert calls == [(0, i) for i in range(len(data.train))]  # every training batch, nothing else


def test_soft_target_loss_in_classification_task() -> None:
    cfg = load_config("mlp-digits")
    data = build_data(cfg.data, seed=0)
    model = build_model("mlp", {}, model_context(data.info))
    task = build_task(cfg.task, model, data.info)
    x, y = next(iter(data.train))
    hard = task.training_step((x, y))
    soft = task.training_step((x, torch.nn.functional.one_hot(y, 10).float()))
    assert torch.allclose(hard, soft, atol=1e-6)


def test_bad_image_augment_inputs(tmp_path: Path, capsys) -> None:
    with pytest.raises(DeepfoundryError, match="did you mean 'RandomRotation'"):
        BatchAugment([{"name": "RandomRotaton", "degrees": 3}])
    with pytest.raises(DeepfoundryError, match="unknown parameter 'degree'"):
        BatchAugment([{"name": "RandomRotation", "degree": 3}])
    with pytest.raises(DeepfoundryError, match="p must be a probability"):
        BatchAugment([{"name": "RandomHorizontalFlip", "p": 2}])
    with pytest.raises(DeepfoundryError, match="GaussianBlur"):
        BatchAugment([{"name": "GaussianBlur", "kernel": 3}])
    with pytest.raises(DeepfoundryError, match="needs image data"):
        build_data(load_config("mlp-wine", {"data.augment": "standard"}).data)
    with pytest.raises(SystemExit) as exc:
        main(["augment-preview", "mlp-digits", "--out", str(tmp_path / "g.png"), "--set", "data.augment=[{name: Zoom}]"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and err.startswith("error: augment transform 'Zoom' is not known") and "\n" not in err


def test_augment_preview_writes_png(tmp_path: Path, capsys) -> None:
    out = tmp_path / "grid.png"
    with pytest.raises(SystemExit) as exc:
        main(["augment-preview", "lenet5-digits", "--out", str(out), "--n", "12", "--set", "data.augment=mnist"])
    assert (exc.value.code or 0) == 0 and "augment preview" in capsys.readouterr().out
    from PIL import Image

    with Image.open(out) as img:
        assert img.format == "PNG" and img.size[0] > 8 * 8
    with pytest.raises(SystemExit) as exc:
        main(["augment-preview", "mlp-digits", "--out", str(out)])
    assert exc.value.code == 2 and "has no data.augment" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- text (EDA)
@pytest.fixture(scope="module")
def shakespeare_lines() -> list[str]:
    path = require_shared_dataset("tinyshakespeare") / "input.txt"
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if len(ln.split()) >= 6]
    return lines[:200]


@pytest.fixture()
def synonym_file(tmp_path: Path) -> Path:
    path = tmp_path / "synonyms.txt"
    path.write_text("# groups of synonyms\nking, monarch, sovereign\nlord, master\ngood, fine, worthy\n"
                    "speak, talk, say\nhear, listen\n", encoding="utf-8")
    return path


def test_eda_operations_on_shakespeare(shakespeare_lines: list[str], synonym_file: Path) -> None:
    rng = np.random.default_rng(0)
    swap, delete = RandomSwap(alpha=0.2, p=1.0), RandomDeletion(alpha=0.3, p=1.0)
    replace = SynonymReplacement(alpha=0.3, p=1.0, synonyms=str(synonym_file))
    insert = RandomInsertion(alpha=0.2, p=1.0, synonyms=str(synonym_file))
    replaced = inserted = 0
    for line in shakespeare_lines:
        words = line.split()
        assert Counter(swap.apply(words, rng)) == Counter(words)  # a permutation
        kept = delete.apply(words, rng)
        assert 1 <= len(kept) <= len(words) and all(w in words for w in kept)
        out = replace.apply(words, rng)
        assert len(out) == len(words)
        for a, b in zip(words, out):
            if a != b:
                replaced += 1
                assert b in replace.synonyms.of(a)
        ins = insert.apply(words, rng)
        inserted += len(ins) - len(words)
    assert replaced > 0 and inserted > 0


def test_text_augment_is_seeded_and_training_only(synonym_file: Path) -> None:
    aug = build_text_augment({"name": "eda", "p": 1.0, "synonyms": str(synonym_file)}, seed=1)
    assert [e["name"] for e in aug.entries] == ["SynonymReplacement", "RandomInsertion", "RandomSwap", "RandomDeletion"]
    text = "the lord did speak a good word to the king of the land"
    assert aug.for_sample(text, 0, 5) == aug.for_sample(text, 0, 5) != aug.for_sample(text, 1, 5)
    cfg = load_config("gru-sentiment", {"data.augment": "eda", "data.size": 400})
    data = build_data(cfg.data, seed=0)
    assert data.train.augment is not None and data.val.augment is None and data.test.augment is None
    plain = load_config("gru-sentiment", {"data.size": 400})
    ref = build_data(plain.data, seed=0)
    (tok_a, _), ya = next(data.train.epoch_batches(0))
    (tok_b, _), yb = next(ref.train.epoch_batches(0))
    assert torch.equal(ya, yb) and not torch.equal(tok_a, tok_b)  # same samples, augmented tokens
    (va, _), _ = next(iter(data.val))
    (vb, _), _ = next(iter(ref.val))
    assert torch.equal(va, vb)


def test_bad_text_augment_inputs(tmp_path: Path) -> None:
    with pytest.raises(DeepfoundryError, match="needs a synonym source"):
        build_text_augment([{"name": "SynonymReplacement"}])
    with pytest.raises(DeepfoundryError, match="does not exist"):
        build_text_augment([{"name": "SynonymReplacement", "synonyms": str(tmp_path / "none.txt")}])
    with pytest.raises(DeepfoundryError, match="not known"):
        build_text_augment(["RandomShuffle"])
    with pytest.raises(DeepfoundryError, match=r"alpha must be in \[0, 1\]"):
        build_text_augment([{"name": "RandomSwap", "alpha": 3}])
    try:
        import nltk  # noqa: F401
    except ImportError:
        with pytest.raises(DeepfoundryError, match="needs nltk"):
            build_text_augment([{"name": "SynonymReplacement", "wordnet": True}])
