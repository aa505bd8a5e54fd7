"""The engine: exact resume (also after SIGKILL), NaN guard, early stopping, accumulation,
schedulers, optimizers, atomic safetensors checkpoints."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import deepfoundry
from deepfoundry import Callback, DeepfoundryError
from deepfoundry.config import OptimConfig, SchedulerConfig, TrainerConfig
from deepfoundry.engine.checkpoint import load_state, load_weights, save_state
from deepfoundry.optim import build_optimizer, build_scheduler
from deepfoundry.tasks.losses import make_loss

FAST = {"trainer.progress": False, "trainer.tensorboard": False}
# dropout and a shuffled loader make resume non-trivial: RNG and data order must both be restored
RESUME = {**FAST, "model.dropout": 0.3, "trainer.epochs": 4, "trainer.checkpoint_every_steps": 7,
          "data.batch_size": 32}


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_state(run_dir / "checkpoints" / "last.safetensors")["model"]


def _assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


class Crash(Callback):
    """Simulates a crash after ``after`` optimizer steps (mid-epoch)."""

    def __init__(self, after: int) -> None:
        self.after = after

    def on_train_batch_end(self, trainer, loss) -> None:
        if trainer.global_step == self.after:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("full") / "run"
    deepfoundry.train("lenet5-digits", overrides=RESUME, out=out)
    return out


def test_resume_mid_epoch_is_bit_identical(uninterrupted: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        deepfoundry.train("lenet5-digits", overrides=RESUME, out=out, callbacks=[Crash(after=63)])
    state = load_state(out / "checkpoints" / "last.safetensors")
    assert state["trainer"]["global_step"] == 63 and state["trainer"]["batch_in_epoch"] > 0  # mid-epoch
    run = deepfoundry.train(None, resume=out)
    _assert_identical(_weights(uninterrupted), _weights(out))
    _assert_identical(load_weights(uninterrupted / "model.safetensors"), load_weights(out / "model.safetensors"))
    assert [r["epoch"] for r in run.history] == [1, 2, 3, 4]  # metrics.jsonl has no duplicated epochs


def test_resume_after_sigkill_is_bit_identical(uninterrupted: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    ckpt = out / "checkpoints" / "last.safetensors"
    cmd = [sys.executable, "-m", "deepfoundry", "train", "lenet5-digits", "--out", str(out)]
    cmd += [f"--set={k}={v}" for k, v in RESUME.items()]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (out / "model.json").exists()
    step = load_state(ckpt)["trainer"]["global_step"]
    assert 0 < step < 4 * 41
    rc = subprocess.run([sys.executable, "-m", "deepfoundry", "train", "--resume", str(out)],
                        capture_output=True, text=True)
    assert rc.returncode == 0, rc.stderr
    _assert_identical(_weights(uninterrupted), _weights(out))


def test_nan_loss_stops_with_clear_error_and_keeps_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "nan"
    with pytest.raises(DeepfoundryError, match=r"training loss became (nan|inf).*last good checkpoint"):
        deepfoundry.train("lenet5-digits", overrides={**FAST, "optim.name": "sgd", "optim.lr": 1e6,
                                                      "optim.scheduler.name": "none", "trainer.epochs": 5,
                                                      "data.batch_size": 32, "trainer.checkpoint_every_steps": 1},
                          out=out)
    state = load_state(out / "checkpoints" / "last.safetensors")
    assert all(torch.isfinite(t).all() for t in state["model"].values())


def test_early_stopping(tmp_path: Path) -> None:
    run = deepfoundry.train("mlp-digits", overrides={**FAST, "trainer.epochs": 50, "optim.lr": 1e-2,
                                                     "optim.scheduler.name": "none", "trainer.monitor": "val_loss",
                                                     "trainer.mode": "min", "trainer.early_stopping.enabled": True,
                                                     "trainer.early_stopping.patience": 2}, out=tmp_path / "es")
    assert run.results["epochs_run"] < 50
    assert "early stopping" in run.results["stop_reason"]


def test_gradient_accumulation_matches_large_batch() -> None:
    """Two accumulated batches of 16 give the same update as one batch of 32 (mean losses)."""
    torch.manual_seed(0)
    x, y = torch.randn(32, 5), torch.randint(0, 3, (32,))
    m1 = torch.nn.Linear(5, 3)
    m2 = torch.nn.Linear(5, 3)
    m2.load_state_dict(m1.state_dict())
    torch.nn.functional.cross_entropy(m1(x), y).backward()
    for i in range(2):
        (torch.nn.functional.cross_entropy(m2(x[i * 16:(i + 1) * 16]), y[i * 16:(i + 1) * 16]) / 2).backward()
    assert torch.allclose(m1.weight.grad, m2.weight.grad, atol=1e-6)
    run_ok = deepfoundry.train("mlp-digits", overrides={**FAST, "trainer.epochs": 3, "trainer.accumulate": 2},
                               out=Path(os.environ.get("TMPDIR", "/tmp")) / f"acc-{os.getpid()}")
    assert run_ok.results["test"]["accuracy"] > 0.85


def test_grad_norms_logged(tmp_path: Path) -> None:
    run = deepfoundry.train("lenet5-digits", overrides={**FAST, "trainer.epochs": 1, "trainer.grad_norms": True,
                                                        "trainer.log_every_steps": 10}, out=tmp_path / "g")
    import json

    rows = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    norms = [r["grad_norms"] for r in rows if r["kind"] == "grad_norms"]
    assert norms and "features.c1" in norms[0] and all(v > 0 for v in norms[0].values())


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop", "adagrad"])
def test_optimizers_reduce_loss(name: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(256, 4)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    model = torch.nn.Linear(4, 1)
    cfg = OptimConfig(name=name, lr=0.5 if name == "adagrad" else 0.05, momentum=0.9 if name == "sgd" else 0.0, nesterov=name == "sgd")
    opt = build_optimizer(cfg, model.parameters())
    loss_fn = make_loss("mse")
    first = float(loss_fn(model(x), y).detach())
    for _ in range(100):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.2 * first


@pytest.mark.parametrize("sched", ["step", "cosine", "onecycle", "none"])
def test_schedules_shape(sched: str) -> None:
    model = torch.nn.Linear(2, 1)
    cfg = OptimConfig(lr=0.1, scheduler=SchedulerConfig(name=sched, warmup_epochs=1, step_size=2))
    opt = build_optimizer(cfg, model.parameters())
    s = build_scheduler(cfg, opt, steps_per_epoch=10, epochs=4)
    lrs = []
    for _ in range(40):
        opt.step()
        s.scheduler.step()
        lrs.append(opt.param_groups[0]["lr"])
    if sched == "onecycle":
        assert max(lrs) == pytest.approx(0.1, rel=2e-2) and lrs[38] < 1e-4  # the 40th step is past the cycle
    else:
        assert lrs[0] < lrs[9] <= 0.1 + 1e-9  # linear warm-up over the first epoch
    if sched == "step":
        assert lrs[25] == pytest.approx(0.01)
    if sched == "cosine":
        assert lrs[-1] < 0.01


def test_plateau_schedule_decays(tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 1)
    cfg = OptimConfig(lr=0.1, scheduler=SchedulerConfig(name="plateau", patience=0, gamma=0.5))
    opt = build_optimizer(cfg, model.parameters())
    s = build_scheduler(cfg, opt, 10, 5)
    assert s.needs_metric and s.interval == "epoch"
    for _ in range(3):
        s.scheduler.step(1.0)
    assert opt.param_groups[0]["lr"] < 0.1


def test_losses_by_name() -> None:
    p, t = torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.0])
    assert float(make_loss("mse")(p, t)) == pytest.approx(2.5)
    assert float(make_loss("mae")(p, t)) == pytest.approx(1.5)
    assert float(make_loss("huber")(p, t)) == pytest.approx((0.5 + 1.5) / 2)
    logits, y = torch.tensor([[2.0, 0.0]]), torch.tensor([0])
    plain = float(make_loss("cross_entropy")(logits, y))
    assert plain == pytest.approx(-torch.log_softmax(logits, 1)[0, 0].item())
    assert float(make_loss("cross_entropy", label_smoothing=0.2)(logits, y)) > plain
    assert float(make_loss("bce")(torch.tensor([[0.0]]), torch.tensor([1]))) == pytest.approx(0.6931, abs=1e-4)
    with pytest.raises(DeepfoundryError, match="did you mean 'mse'"):
        make_loss("mse2")


def test_checkpoint_roundtrip_and_corruption(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    path = tmp_path / "c.safetensors"
    save_state(path, {"model": model.state_dict(), "opt": opt.state_dict(), "meta": {"epoch": 3, "x": None}})
    back = load_state(path)
    assert back["meta"] == {"epoch": 3, "x": None}
    opt2 = torch.optim.Adam(model.parameters())
    opt2.load_state_dict(back["opt"])  # int keys and param groups survive the JSON skeleton
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was moved into place
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DeepfoundryError, match="corrupt or unreadable"):
        load_state(path)


def test_custom_model_with_trainer(tmp_path: Path) -> None:
    """Users who write their own model: build data, wrap the model in a task, fit with the Trainer."""
    from deepfoundry.config import DataConfig
    from deepfoundry.tasks.classification import ClassificationTask

    data = deepfoundry.build_data(DataConfig(name="iris", batch_size=16), seed=0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))
    task = ClassificationTask(model, data.info)
    trainer = deepfoundry.Trainer(TrainerConfig(epochs=40, progress=False, tensorboard=False),
                                  OptimConfig(lr=0.01), run_dir=tmp_path / "mine")
    history = trainer.fit(task, data)
    assert len(history) == 40
    assert trainer.evaluate(data.test)["accuracy"] >= 0.9
    assert (tmp_path / "mine" / "checkpoints" / "best.safetensors").exists()
    assert "on_epoch_end" in trainer.describe_loop()


def test_tensorboard_events_and_bf16_autocast(tmp_path: Path) -> None:
    run = deepfoundry.train("mlp-digits", overrides={"trainer.progress": False, "trainer.epochs": 2,
                                                     "trainer.precision": "bf16"}, out=tmp_path / "tb")
    assert list((run.path / "tensorboard").glob("events.out.tfevents.*"))
    assert run.results["test"]["accuracy"] > 0.8  # bf16 autocast on the CPU still learns


def test_unavailable_device_is_a_clear_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(DeepfoundryError, match="CUDA is not available"):
        deepfoundry.Trainer(TrainerConfig(device="cuda"))
