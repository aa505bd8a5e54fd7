"""Every registered model: build, forward, backward, no NaN, safetensors round trip; plus targeted checks."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from deepfoundry.errors import DeepfoundryError
from deepfoundry.models import MODELS, build_model
from deepfoundry.nn import make_activation, make_pool

IMAGE_CONTEXTS = {  # (in_channels, H, W) the data layer may hand a conv net
    "digits8": (1, 8, 8),
    "mnist28": (1, 28, 28),
    "cifar32": (3, 32, 32),
}
CHEAP = {"alexnet": {"width": 0.25}, **{n: {"width": 0.25} for n in MODELS.names() if n.startswith("vgg")}}


def _context(shape: tuple[int, ...], num_classes: int = 5) -> dict:
    c, h, w = shape
    return {"num_classes": num_classes, "in_channels": c, "input_size": [h, w], "in_features": c * h * w}


def _cases() -> list:
    cases = []
    for name in MODELS.names():
        if name == "mlp":
            cases += [pytest.param(name, (7,), id="mlp-table7"), pytest.param(name, (1, 28, 28), id="mlp-mnist28")]
        elif name == "lenet5" or name == "alexnet" or name.startswith("vgg"):
            cases += [pytest.param(name, s, id=f"{name}-{k}") for k, s in IMAGE_CONTEXTS.items()]
        # other families (rnn, gnn, qnet, gan, vae, ...) take other inputs: test_text, test_timeseries,
        # test_gnn, test_dqn and test_generative build and round-trip them
    return cases


def _build(name: str, shape: tuple[int, ...], seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    context = {"num_classes": 5, "in_features": shape[0]} if len(shape) == 1 else _context(shape)
    return build_model(name, CHEAP.get(name, {}), context)


@pytest.mark.parametrize("name", MODELS.names())
def test_registered_builder_is_documented(name):
    assert MODELS.describe(name), f"{name}: the builder needs a docstring (its first line is what `list` shows)"


@pytest.mark.parametrize("name,shape", _cases())
def test_model_forward_backward_roundtrip(name, shape, tmp_path):
    model = _build(name, shape)
    x = torch.randn(3, *shape)
    out = model(x)
    assert out.shape == (3, 5)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)

    model.eval()
    save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
    fresh = _build(name, shape, seed=1).eval()
    fresh.load_state_dict(load_file(str(tmp_path / "model.safetensors")))
    with torch.no_grad():
        expected = model.head(model.features(x))  # the shared interface
        assert torch.equal(model(x), expected)
        assert torch.equal(fresh(x), expected)


@pytest.mark.parametrize("size", [(8, 8), (28, 28), (32, 32)])
def test_lenet5_sizes_and_1998_options(size):
    model = build_model("lenet5", {"activation": "tanh", "pool": "avg"},
                        {"num_classes": 10, "in_channels": 1, "input_size": list(size)})
    assert isinstance(model.features.act1, nn.Tanh) and isinstance(model.features.s2, nn.AvgPool2d)
    h = model.features(torch.randn(2, 1, *size))
    assert h.shape[1] == 16
    assert model(torch.randn(2, 1, *size)).shape == (2, 10)
    if size != (8, 8):  # both standard layouts feed 16 * 5 * 5 = 400 into C5, as pytorch/examples
        assert h.shape[2:] == (5, 5) and model.head.c5.in_features == 400


def test_lenet5_batch_norm_measures_without_touching_running_stats():
    model = build_model("lenet5", {"batch_norm": True, "dropout": 0.2}, {"input_size": (28, 28)})
    assert int(model.features.bn1.num_batches_tracked) == 0
    assert torch.equal(model.features.bn1.running_var, torch.ones(6))
    assert isinstance(model.head.drop5, nn.Dropout) and model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_alexnet_imagenet_layout_with_lrn():
    model = build_model("alexnet", {"lrn": True, "width": 0.25, "dropout": 0.0}, {"num_classes": 7})
    assert sum(isinstance(m, nn.LocalResponseNorm) for m in model.modules()) == 2
    assert model.features.conv1.kernel_size == (11, 11) and model.features.conv1.stride == (4, 4)
    with torch.no_grad():
        h = model.features(torch.randn(1, 3, 224, 224))
        assert h.shape == (1, 64, 6, 6)
        assert model.head(h).shape == (1, 7)


def test_alexnet_small_variant_never_crashes_on_8x8():
    model = build_model("alexnet", {"width": 0.25}, _context((1, 8, 8)))
    assert model.features.conv1.kernel_size == (3, 3)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 5)


def test_vgg16_bn_has_batch_norm_and_vgg16_has_none():
    plain = build_model("vgg16", {"width": 0.25}, _context((3, 32, 32)))
    bn = build_model("vgg16_bn", {"width": 0.25}, _context((3, 32, 32)))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in bn.modules()) == 13
    assert sum(isinstance(m, nn.Conv2d) for m in plain.modules()) == 13


def test_vgg_imagenet_head_is_7x7_4096():
    model = build_model("vgg11", {"width": 0.125}, {"num_classes": 3})
    assert model.head[0].output_size == 7 and model.head[2].in_features == 64 * 7 * 7


def test_channels_last_gives_the_same_logits():
    model = build_model("vgg11_bn", {"width": 0.25}, _context((3, 32, 32))).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        got = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", MODELS.names())
def test_unknown_kwarg_names_the_config_key(name):
    with pytest.raises(DeepfoundryError, match=r"model\.bogus"):
        MODELS.build(name, {"bogus": 1}, key="model")


def test_unknown_activation_suggests_the_closest():
    with pytest.raises(DeepfoundryError, match=r"did you mean 'gelu'"):
        make_activation("gelo")
    with pytest.raises(DeepfoundryError, match=r"'tahn'.*did you mean 'tanh'"):
        build_model("mlp", {"activation": "tahn"}, {"in_features": 4, "num_classes": 3})
    with pytest.raises(DeepfoundryError, match=r"did you mean 'max'"):
        make_pool("maxx")


@pytest.mark.parametrize("kwargs,fragment", [
    ({"dropout": 1.5}, "dropout=1.5"),
    ({"input_size": [28]}, "input_size"),
    ({"num_classes": 0}, "num_classes=0"),
])
def test_bad_values_say_what_was_received(kwargs, fragment):
    with pytest.raises(DeepfoundryError, match=fragment):
        build_model("lenet5", kwargs)


def test_mlp_depth_width_shorthand_and_missing_sizes():
    model = build_model("mlp", {"depth": 3, "width": 32}, {"in_features": 4, "num_classes": 3})
    assert [m.out_features for m in model.modules() if isinstance(m, nn.Linear)] == [32, 32, 32, 3]
    linear = build_model("mlp", {"depth": 0}, {"in_features": 4, "num_classes": 1})
    assert linear(torch.randn(2, 4)).shape == (2, 1)
    with pytest.raises(DeepfoundryError, match="in_features"):
        build_model("mlp", {}, {"num_classes": 3})


def test_mlp_learns_iris():
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32)
    x = (x - x.mean(0)) / x.std(0)
    y = torch.tensor(y)
    torch.manual_seed(0)
    model = build_model("mlp", {"hidden_sizes": [32]}, {"in_features": 4, "num_classes": 3})
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy > 0.9
