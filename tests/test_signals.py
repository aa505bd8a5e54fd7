"""SIGTERM and SIGINT: the training loops stop at a step boundary with a checkpoint and one line
(engine/signals.py); elsewhere the command line still ends in one line with the signal's exit code.
The Trainer's bit-identical resume after a signal is in test_trainer.py (it shares the uninterrupted run)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from deepfoundry.cli import main
from deepfoundry.engine.checkpoint import load_state
from deepfoundry.engine.signals import Stopped, graceful_stop

# a short DQN run whose first checkpoint comes early; the signal must reach it while it trains
DQN = ["--set=trainer.progress=false", "--set=task.total_steps=20000", "--set=task.checkpoint_every=1000",
       "--set=task.eval_every=0", "--set=task.final_eval_episodes=2", "--set=task.gradient_steps=8",
       "--set=model.hidden_sizes=[32, 32]"]


def _default_sigint() -> None:
    """In the child: SIGINT at its default (a background job of a shell script inherits it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def sigint_not_ignored():
    """Python's own SIGINT handler while the test runs (pytest may run as a script's background job)."""
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _signal_after_checkpoint(cmd: list[str], out: Path, sig: int) -> subprocess.CompletedProcess:
    ckpt = out / "checkpoints" / "last.safetensors"
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)
    deadline = time.time() + 180
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be signalled"
    os.kill(proc.pid, sig)
    stdout, stderr = proc.communicate(timeout=180)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def test_dqn_sigterm_checkpoints_and_resume_completes(tmp_path: Path) -> None:
    out = tmp_path / "dqn"
    cmd = [sys.executable, "-m", "deepfoundry", "train", "dqn-cartpole", "--out", str(out), "--no-report", *DQN]
    proc = _signal_after_checkpoint(cmd, out, signal.SIGTERM)
    assert proc.returncode == 143, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("stopped by SIGTERM at step ") and f"--resume {out}'" in last, proc.stderr
    assert "Traceback" not in proc.stderr and not (out / "model.json").exists()
    step = load_state(out / "checkpoints" / "last.safetensors")["step"]
    assert f"at step {step};" in last and 1000 <= step < 20000
    # one environment copy: the loop played on to the open episode's end, so the resume is exact
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["kind"] == "episode" and records[-1]["step"] == step, records[-3:]
    resumed = subprocess.run([sys.executable, "-m", "deepfoundry", "train", "--resume", str(out), "--json"],
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert load_state(out / "checkpoints" / "last.safetensors")["step"] == 20000
    assert (out / "model.json").exists() and (out / "results.json").exists()


def test_second_signal_exits_at_once() -> None:
    script = textwrap.dedent("""
        import os, signal, time
        from deepfoundry.engine.signals import graceful_stop
        with graceful_stop() as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.name == "SIGTERM"
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(30)
        print("not reached")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          preexec_fn=_default_sigint)
    assert proc.returncode == 130 and "not reached" not in proc.stdout
    assert proc.stderr.strip() == "SIGINT again: exiting now, without writing a checkpoint"


def test_graceful_stop_sets_a_flag_and_restores_the_handlers() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    with graceful_stop() as stop:
        assert stop.signum == 0
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before the next bytecode
        assert stop.signum == signal.SIGTERM and stop.name == "SIGTERM"
    assert {s: signal.getsignal(s) for s in before} == before


def test_graceful_stop_is_a_no_op_outside_the_main_thread() -> None:
    seen: list = []

    def worker() -> None:
        with graceful_stop() as stop:
            seen.append((stop.signum, signal.getsignal(signal.SIGTERM)))

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [(0, before)]


def test_an_ignored_signal_stays_ignored() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with graceful_stop():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_stopped_names_the_signal_the_place_and_the_exit_code(tmp_path: Path) -> None:
    exc = Stopped("SIGTERM", epoch=3, step=97, checkpoint=tmp_path / "last.safetensors", run_dir=tmp_path)
    assert str(exc) == f"stopped by SIGTERM at epoch 3, step 97; continue with 'deepfoundry train --resume {tmp_path}'"
    assert exc.exit_code == 143 and Stopped("SIGINT", step=5).exit_code == 130
    assert "no checkpoint" in str(Stopped("SIGINT", step=5))


@pytest.mark.parametrize("sig, code, line", [(signal.SIGINT, 130, "error: interrupted"),
                                             (signal.SIGTERM, 143, "error: terminated by SIGTERM")])
def test_a_signal_outside_training_is_one_line(sig: int, code: int, line: str, monkeypatch, capsys,
                                              sigint_not_ignored) -> None:
    """Before the loop starts (data, model) or after it (evaluation, report): one line, 128 + signum."""
    import deepfoundry.api

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), sig)
        time.sleep(5)  # the handler interrupts this
        raise AssertionError("not interrupted")

    monkeypatch.setattr(deepfoundry.api, "train", signalled)
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    with pytest.raises(SystemExit) as exc:
        main(["train", "lenet5-digits"])
    err = capsys.readouterr().err
    assert exc.value.code == code and err.strip().splitlines() == [line], err
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_signal_after_the_training_loop_stops_before_saving_and_the_resume_finishes(tmp_path: Path,
                                                                                    monkeypatch) -> None:
    """SIGTERM during the final evaluation (after the loop's last checkpoint): the run stops at the next
    phase boundary with the one line, writes no model, and the resume gives the uninterrupted weights."""
    import deepfoundry
    from deepfoundry.engine.trainer import Trainer
    from safetensors.torch import load_file

    overrides = {"trainer.progress": False, "trainer.tensorboard": False, "trainer.report": False,
                 "trainer.epochs": 2}
    whole = deepfoundry.train("lenet5-digits", overrides=overrides, out=tmp_path / "whole")
    evaluate, calls = Trainer.evaluate, []

    def signalled(self, loader, task=None):
        calls.append(1)
        if len(calls) == 3:  # two validations in the loop, then the final evaluation's first split
            os.kill(os.getpid(), signal.SIGTERM)
        return evaluate(self, loader, task)

    monkeypatch.setattr(Trainer, "evaluate", signalled)
    out = tmp_path / "stopped"
    with pytest.raises(Stopped) as exc:
        deepfoundry.train("lenet5-digits", overrides=overrides, out=out)
    assert str(exc.value) == (f"stopped by SIGTERM during the final evaluation; "
                              f"continue with 'deepfoundry train --resume {out}'")
    assert exc.value.exit_code == 143 and not (out / "model.json").exists()
    assert not (out / ".lock").exists()
    monkeypatch.setattr(Trainer, "evaluate", evaluate)
    resumed = deepfoundry.train(None, resume=out)
    a, b = load_file(whole.path / "model.safetensors"), load_file(resumed.path / "model.safetensors")
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)


def test_a_signal_while_the_data_loads_reaches_the_first_training_step(tmp_path: Path, monkeypatch) -> None:
    """One flag from the api down to the Trainer: a SIGTERM before the loop starts is not lost."""
    import deepfoundry
    import deepfoundry.api

    build_data = deepfoundry.api.build_data

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return build_data(*args, **kwargs)

    monkeypatch.setattr(deepfoundry.api, "build_data", signalled)
    out = tmp_path / "run"
    with pytest.raises(Stopped) as exc:
        deepfoundry.train("lenet5-digits", out=out, overrides={"trainer.progress": False, "trainer.report": False,
                                                               "trainer.epochs": 1})
    assert exc.value.step == 0 and (out / "checkpoints" / "last.safetensors").is_file()
    assert str(exc.value).startswith("stopped by SIGTERM at step 0; continue with")
    monkeypatch.setattr(deepfoundry.api, "build_data", build_data)
    resumed = deepfoundry.train(None, resume=out)  # from step 0: a whole run
    assert resumed.results["epochs_run"] == 1 and (out / "model.json").is_file()
