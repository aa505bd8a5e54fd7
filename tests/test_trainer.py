"""The engine: exact resume (also after SIGKILL), NaN guard, early stopping, accumulation,
schedulers, optimizers, atomic safetensors checkpoints."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Crash
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


def _default_sigint() -> None:
    """In the child: SIGINT at its default (a background job of a shell script inherits it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_at_a_step_with_a_checkpoint_and_resume_is_bit_identical(sig: int, uninterrupted: Path,
                                                                              tmp_path: Path) -> None:
    out = tmp_path / "signalled"
    ckpt = out / "checkpoints" / "last.safetensors"
    # no periodic mid-epoch checkpoints (they do not change the numbers): the signal's is the one resumed from
    overrides = {**RESUME, "trainer.checkpoint_every_steps": 100_000}
    cmd = [sys.executable, "-m", "deepfoundry", "train", "lenet5-digits", "--out", str(out)]
    cmd += [f"--set={k}={v}" for k, v in overrides.items()]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:  # epoch 1's checkpoint
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be signalled"
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err  # 143 for SIGTERM, 130 for SIGINT
    t = load_state(ckpt)["trainer"]
    epoch = t["epoch"] + 1 if t["batch_in_epoch"] else t["epoch"]
    assert err.strip().splitlines()[-1] == (f"stopped by {signal.Signals(sig).name} at epoch {epoch}, step "
                                            f"{t['global_step']}; continue with 'deepfoundry train --resume {out}'")
    assert "Traceback" not in err and not (out / "model.json").exists()
    assert 41 <= t["global_step"] < 4 * 41
    rc = subprocess.run([sys.executable, "-m", "deepfoundry", "train", "--resume", str(out)],
                        capture_output=True, text=True)
    assert rc.returncode == 0, rc.stderr
    _assert_identical(_weights(uninterrupted), _weights(out))
    _assert_identical(load_weights(uninterrupted / "model.safetensors"), load_weights(out / "model.safetensors"))


class SendSignal(Callback):
    """Sends ``sig`` to this process once, at the end of batch ``batch`` of epoch ``epoch`` (1-based)."""

    def __init__(self, sig: int, epoch: int, batch: int) -> None:
        self.sig, self.epoch, self.batch, self.sent = sig, epoch, batch, False

    def on_train_batch_end(self, trainer, loss) -> None:
        if not self.sent and trainer.epoch + 1 == self.epoch and trainer.batch_in_epoch == self.batch:
            self.sent = True
            os.kill(os.getpid(), self.sig)


def test_signal_through_the_python_api_raises_stopped_at_an_optimizer_step(tmp_path: Path) -> None:
    """With accumulation a step ends every ``accumulate`` batches: a signal after batch 4 of 3-batch steps
    stops after batch 6, where the checkpoint resumes exactly (no half-accumulated gradient is lost)."""
    from deepfoundry.config import DataConfig
    from deepfoundry.engine.signals import Stopped
    from deepfoundry.engine.seeding import seed_everything
    from deepfoundry.tasks.classification import ClassificationTask

    config = TrainerConfig(epochs=3, accumulate=3, progress=False, tensorboard=False, restore_best=False)

    def fit(run_dir: Path, callbacks=(), resume_from=None) -> deepfoundry.Trainer:
        seed_everything(0)
        data = deepfoundry.build_data(DataConfig(name="iris", batch_size=8), seed=0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.Dropout(0.2), torch.nn.ReLU(),
                                    torch.nn.Linear(32, 3))
        trainer = deepfoundry.Trainer(config, OptimConfig(lr=0.01), run_dir=run_dir, callbacks=list(callbacks))
        trainer.fit(ClassificationTask(model, data.info), data, resume_from=resume_from)
        return trainer

    full = fit(tmp_path / "full")
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    with pytest.raises(Stopped) as exc:
        fit(tmp_path / "stopped", [SendSignal(signal.SIGTERM, epoch=2, batch=4)])
    assert {s: signal.getsignal(s) for s in before} == before  # fit put the handlers back
    ckpt = tmp_path / "stopped" / "checkpoints" / "last.safetensors"
    t = load_state(ckpt)["trainer"]
    assert (t["epoch"], t["batch_in_epoch"]) == (1, 6) and exc.value.exit_code == 143
    assert (exc.value.epoch, exc.value.step, exc.value.checkpoint) == (2, t["global_step"], ckpt)
    resumed = fit(tmp_path / "stopped", resume_from=ckpt)
    _assert_identical(full.unwrapped_model.state_dict(), resumed.unwrapped_model.state_dict())
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in full.history]


def test_divergence_guard_running_median() -> None:
    from deepfoundry.engine.divergence import DivergenceGuard

    guard = DivergenceGuard(factor=1e3)
    assert not any(guard.check(1e6) for _ in range(DivergenceGuard.WARMUP - 1))  # not armed yet
    guard = DivergenceGuard(factor=1e3)
    values = [2.0] * 40 + [50.0] + [2.3] * 9  # one spike moves a median, not a maximum
    assert not any(guard.check(v) for v in values) and guard.median == 2.0
    assert not guard.check(1999.0) and guard.check(2001.0) and guard.check(1e30)
    small = DivergenceGuard(factor=1e3)  # a loss near 0: the median counts as at least 1
    assert not any(small.check(1e-6) for _ in range(30)) and not small.check(0.5) and small.check(1001.0)
    copy = DivergenceGuard(factor=1e3)
    copy.load_state_dict(guard.state_dict())
    assert copy.state_dict() == guard.state_dict()


def _blow_up_after(monkeypatch, steps: int) -> None:
    """From training step ``steps + 1`` on, the loss *value* is 1e30 times larger; its gradient is not (a
    finite blow-up that leaves the weights alone)."""
    from deepfoundry.tasks.classification import ClassificationTask

    original, count = ClassificationTask.training_step, [0]

    def training_step(self, batch):
        loss = original(self, batch)
        count[0] += 1
        return loss + loss.detach() * 1e30 if count[0] > steps else loss

    monkeypatch.setattr(ClassificationTask, "training_step", training_step)


def _train_cli(out: Path, *extra: str) -> tuple[int, str]:
    import contextlib
    import io

    from deepfoundry.cli import main

    err = io.StringIO()
    with pytest.raises(SystemExit) as exc, contextlib.redirect_stderr(err):
        main(["train", "mlp-digits", "--out", str(out), "--epochs", "4", "--no-report",
              "--set", "trainer.progress=false", "--set", "trainer.tensorboard=false", *extra])
    return exc.value.code or 0, err.getvalue()


def test_finite_blow_up_warns_once_by_default(tmp_path: Path, monkeypatch) -> None:
    _blow_up_after(monkeypatch, 40)  # mlp-digits: 21 steps an epoch; every step after the 40th is blown up
    code, err = _train_cli(tmp_path / "warn")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, err
    assert re.match(r"warning: training loss became [\d.]+e\+(29|30) at epoch 2, step 40, above 1000 x its running "
                    r"median \d\.\d+; training goes on", warnings[0]), warnings[0]
    records = [json.loads(line) for line in (tmp_path / "warn" / "metrics.jsonl").read_text().splitlines()]
    warned = [r for r in records if r["kind"] == "warning"]
    assert len(warned) == 1 and warned[0]["step"] == 40 and warned[0]["divergence"]["loss"] > 1e29
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2, 3, 4]  # the run went on


def test_finite_blow_up_stops_with_divergence_stop(tmp_path: Path, monkeypatch) -> None:
    _blow_up_after(monkeypatch, 40)
    code, err = _train_cli(tmp_path / "stop", "--set", "trainer.divergence=stop")
    lines = err.strip().splitlines()
    assert code == 2 and "Traceback" not in err and not any(line.startswith("warning:") for line in lines), err
    assert [line for line in lines if line.startswith("error:")] == lines[-1:]
    last = tmp_path / "stop" / "checkpoints" / "last.safetensors"
    assert re.match(r"error: training loss became [\d.]+e\+(29|30) at epoch 2, step 40, above 1000 x its running "
                    rf"median \d\.\d+; the last good checkpoint is kept at {re.escape(str(last))} ",
                    lines[-1]), lines[-1]
    assert load_state(last)["trainer"]["global_step"] == 21  # epoch 1's


def test_divergence_off(tmp_path: Path, monkeypatch) -> None:
    _blow_up_after(monkeypatch, 40)
    code, err = _train_cli(tmp_path / "off", "--set", "trainer.divergence=off")
    assert code == 0 and "warning:" not in err, err


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


@pytest.mark.parametrize("sched", ["step", "cosine", "wsd", "onecycle", "none"])
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


def test_wsd_schedule_holds_then_decays_linearly() -> None:
    model = torch.nn.Linear(2, 1)
    cfg = OptimConfig(lr=0.1, scheduler=SchedulerConfig(name="wsd", warmup_epochs=1, decay_fraction=0.25, min_lr=0.01))
    opt = build_optimizer(cfg, model.parameters())
    s = build_scheduler(cfg, opt, steps_per_epoch=4, epochs=5)  # 20 steps: 4 warm-up, 12 stable, 4 decay
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        s.scheduler.step()
    assert lrs[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    assert lrs[4:16] == pytest.approx([0.1] * 12)
    assert lrs[16:] == pytest.approx([0.0775, 0.055, 0.0325, 0.01])  # linear to min_lr at the last step


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


def test_precision_auto_follows_the_hardware(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """auto is bf16 autocast exactly where the device multiplies bfloat16 natively, else float32; the run
    records what it used."""
    from deepfoundry.engine import trainer as trainer_mod
    from deepfoundry.engine.trainer import resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision("fp16", cpu) == "fp16" and resolve_precision("32", cpu) == "32"
    for native, expected in ((True, "bf16"), (False, "32")):
        monkeypatch.setattr(trainer_mod, "native_bf16", lambda device_type, native=native: native)
        assert resolve_precision("auto", cpu) == expected
        trainer = deepfoundry.Trainer(TrainerConfig(precision="auto", progress=False))
        assert trainer.precision == expected
        assert (trainer.autocast() is trainer._NO_AUTOCAST) == (expected == "32")
    run = deepfoundry.train("mlp-digits", overrides={"trainer.progress": False, "trainer.epochs": 2,
                                                     "trainer.precision": "auto"}, out=tmp_path / "auto")
    assert run.results["precision"] == expected  # the patched answer (False): float32
    assert run.results["test"]["accuracy"] > 0.8


def test_unavailable_device_is_a_clear_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(DeepfoundryError, match="CUDA is not available"):
        deepfoundry.Trainer(TrainerConfig(device="cuda"))


def test_step_flops_counts_the_fused_cpu_lstm() -> None:
    """A CPU nn.LSTM runs as one fused oneDNN op FlopCounterMode does not know; step_flops counts its gate
    products, 2 N (|W_ih| + |W_hh|) per layer forward and twice that backward, beside the output layers."""
    from deepfoundry import Trainer
    from deepfoundry.data.text import LMWindowLoader, fit_tokenizer
    from deepfoundry.models.rnn import lstm_lm
    from deepfoundry.tasks.language_model import LanguageModelTask

    tok = fit_tokenizer("char", ["abcdefgh"], vocab_size=100)
    info = {"tokenizer": tok.to_json(), "vocab_size": tok.vocab_size}
    torch.manual_seed(0)
    model = lstm_lm(vocab_size=tok.vocab_size, embedding_dim=16, hidden_size=32, num_layers=2, dropout=0.0)
    loader = LMWindowLoader(torch.randint(0, tok.vocab_size, (400,)), seq_len=10, batch_size=4, shuffle=True)
    trainer = Trainer(TrainerConfig(progress=False, tensorboard=False, report=False), OptimConfig())
    trainer.task = LanguageModelTask(model, info)
    n = 4 * 10  # tokens in the first batch
    recurrent = sum(2 * n * (getattr(model.rnn, f"weight_ih_l{k}").numel() + getattr(model.rnn, f"weight_hh_l{k}").numel())
                    for k in range(2))
    output = 2 * n * (32 * 16 + 16 * tok.vocab_size)  # projection 32 -> 16, tied decoder 16 -> V
    flops = trainer.step_flops(loader)
    assert 3 * recurrent <= flops <= 3 * (recurrent + output) * 1.01, (flops, recurrent, output)


def test_step_flops_counts_the_fused_cpu_attention() -> None:
    """F.scaled_dot_product_attention runs on a CPU as a fused kernel FlopCounterMode counts as 0; step_flops
    counts it as its products, so a Transformer step is 3 x (the linear layers' 2 N |W| + attention's
    4 B T^2 D per layer), whether attention runs fused (float32) or as explicit products (bf16 autocast)."""
    from deepfoundry import Trainer
    from deepfoundry.data.text import LMWindowLoader, fit_tokenizer
    from deepfoundry.models import build_model
    from deepfoundry.tasks.language_model import LanguageModelTask

    tok = fit_tokenizer("char", ["abcdefgh"], vocab_size=100)
    info = {"tokenizer": tok.to_json(), "vocab_size": tok.vocab_size}
    b, t, d, layers = 4, 16, 32, 2
    torch.manual_seed(0)
    model = build_model("transformer_lm", dict(d_model=d, num_heads=4, num_layers=layers, context_length=t,
                                               dropout=0.0, tie_weights=True), info)
    loader = LMWindowLoader(torch.randint(0, tok.vocab_size, (400,)), seq_len=t, batch_size=b, shuffle=True)
    n = b * t
    linear = 2 * n * (layers * 12 * d * d + d * tok.vocab_size)  # q, k, v, out (4 D^2), MLP (8 D^2); tied head
    attention = layers * 4 * b * t * t * d
    for precision in ("32", "bf16"):
        trainer = Trainer(TrainerConfig(progress=False, tensorboard=False, report=False, precision=precision),
                          OptimConfig())
        trainer.task = LanguageModelTask(model, info)
        assert trainer.step_flops(loader) == 3 * (linear + attention), precision
