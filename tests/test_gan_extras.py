"""DCGAN capacity option, the EMA generator's batch-norm recalibration, fused Adam."""
import pytest
import torch

from deepfoundry.errors import DeepfoundryError
from deepfoundry.models.gan import dcgan


def _first_bn_input(gan, z):
    body = gan.generator_ema.body
    h = body[1](body[0](z))  # Linear -> Unflatten: the first batch norm's input
    return h.mean(dim=(0, 2, 3)), h.var(dim=(0, 2, 3))


def test_recalibrated_statistics_describe_the_ema_generator():
    torch.manual_seed(0)
    gan = dcgan(input_size=(28, 28), base_channels=8)
    with torch.no_grad():  # make the EMA weights differ from the live generator's
        for p in gan.generator_ema.parameters():
            p.mul_(1.5)
        gan.update_ema(1.0)  # copies the live generator's running statistics (all defaults here)
    bn = gan.generator_ema.body[2]
    z = torch.randn(4096, gan.latent_dim)
    mean, var = _first_bn_input(gan, z)
    assert not torch.allclose(bn.running_var, var, rtol=0.1)
    gan.recalibrate_ema_bn(batches=16, batch_size=256)
    assert torch.allclose(bn.running_mean, mean, atol=0.05 * float(var.sqrt().mean()))
    assert torch.allclose(bn.running_var, var, rtol=0.1)
    assert not gan.generator_ema.training and bn.momentum == 0.1  # back in eval mode, momentum restored


def test_extra_layers_keep_shapes_and_reject_negative():
    gan = dcgan(input_size=(28, 28), base_channels=8, extra_layers=2, conditional=True)
    x = gan.sample(3, labels=torch.tensor([0, 1, 2]))
    assert x.shape == (3, 1, 28, 28)
    assert gan.discriminator(x * 2 - 1, torch.tensor([0, 1, 2])).shape[0] == 3
    n_plain = sum(p.numel() for p in dcgan(input_size=(28, 28), base_channels=8).parameters())
    assert sum(p.numel() for p in dcgan(input_size=(28, 28), base_channels=8, extra_layers=2).parameters()) > n_plain
    with pytest.raises(DeepfoundryError, match="extra_layers"):
        dcgan(extra_layers=-1)


def test_ema_bn_option_is_checked():
    from deepfoundry.tasks.adversarial import adversarial

    with pytest.raises(DeepfoundryError, match="ema_bn"):
        adversarial(model=dcgan(input_size=(8, 8), base_channels=4), info={}, ema_bn="average")


def test_fused_adam_takes_the_same_step_and_is_checked():
    from deepfoundry.config import OptimConfig
    from deepfoundry.optim import build_optimizer

    out = []
    for fused in (False, True):
        torch.manual_seed(0)
        layer = torch.nn.Linear(30, 20)
        opt = build_optimizer(OptimConfig(name="adamw", lr=1e-2, weight_decay=0.1, fused=fused), layer.parameters())
        for step in range(5):
            torch.manual_seed(step)
            layer(torch.randn(8, 30)).square().mean().backward()
            opt.step()
            opt.zero_grad()
        out.append(layer.weight.detach().clone())
    torch.testing.assert_close(out[0], out[1], rtol=1e-5, atol=1e-6)
    with pytest.raises(DeepfoundryError, match="optim.fused"):
        build_optimizer(OptimConfig(name="sgd", fused=True), layer.parameters())
