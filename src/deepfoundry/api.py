"""The Python API: ``train``, ``load_run`` and the :class:`Run` they return.

>>> import deepfoundry
>>> run = deepfoundry.train("lenet5-digits", overrides={"trainer.epochs": 2})
>>> run.evaluate("test")["accuracy"]
>>> run.predict(images)            # class indices (or values, for regression)
>>> deepfoundry.load_run(run.path)  # the run directory is all that is needed
"""
from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .config import RunConfig, apply_overrides, load_config, read_yaml, validate
from .data import DataBundle, build_data
from .data.core import CONTEXT_KEYS, model_context  # noqa: F401  (re-exported: deepfoundry.api.model_context)
from .engine.checkpoint import load_resume_state, load_weights, previous_path
from .engine.distributed import Distributed, check_batch_size, from_env, is_secondary
from .engine.ownership import check_new_run, check_out, claim, resume_changes
from .engine.rundir import RunDirectory, read_jsonl
from .engine.seeding import seed_everything
from .engine.signals import StopFlag, Stopped, graceful_stop
from .engine.trainer import Trainer
from .errors import DeepfoundryError
from .models import build_model
from .registry import DATASETS, MODELS, TASKS
from .tasks import Task, build_task



def default_run_dir(name: str) -> Path:
    return Path("runs") / f"{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def train(recipe: str | Path | RunConfig | None, overrides: dict[str, Any] | list[str] | None = None,
          out: str | Path | None = None, resume: str | Path | None = None,
          callbacks: list[Any] | None = None, show_loop: bool = False, overwrite: bool = False) -> "Run":
    """Train a recipe name, a YAML config file or a :class:`RunConfig`; return the finished :class:`Run`.

    ``overrides`` are dotted keys (``{"optim.lr": 0.01}`` or ``["optim.lr=0.01"]``). ``out`` must be a new or
    empty folder (``overwrite`` empties an existing one first). ``resume`` is a run directory whose
    ``checkpoints/last.safetensors`` is continued exactly (same final weights as an uninterrupted run); its
    saved config is used, with ``overrides`` applied on top where they keep it exact (more epochs, a new
    learning rate from the checkpoint on, where logs go; see :func:`deepfoundry.engine.ownership.resume_changes`).
    The run directory is locked (``RUN/.lock``) while it trains, and ends with ``report.html`` and
    ``model_card.md`` unless ``trainer.report`` is false.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every process calls ``train`` alike: they train one model data-parallel
    (``trainer.distributed``: ddp or fsdp; docs/distributed.md), rank 0 writes the run directory, and the other
    ranks return the same :class:`Run` where they can read that directory (one machine), else ``None``.
    """
    threads = torch.get_num_threads()
    try:  # a recipe's trainer.threads applies to this run only, not to the rest of the process
        return _train(recipe, overrides, out, resume, callbacks, show_loop, overwrite)
    finally:
        torch.set_num_threads(threads)


def _train(recipe: str | Path | RunConfig | None, overrides: dict[str, Any] | list[str] | None,
           out: str | Path | None, resume: str | Path | None, callbacks: list[Any] | None,
           show_loop: bool, overwrite: bool) -> "Run":
    changes: list[str] = []
    if resume is not None:  # every check before anything on disk changes
        if out is not None:
            raise DeepfoundryError("--resume continues a run in its own folder; drop --out")
        run_dir = Path(resume)
        ckpt = run_dir / "checkpoints" / "last.safetensors"
        if not (run_dir / "config.yaml").is_file():
            raise DeepfoundryError(f"'{run_dir}' is not a run directory (no config.yaml) to resume")
        if not ckpt.is_file() and not previous_path(ckpt).is_file():
            raise DeepfoundryError(f"run '{run_dir}' has no checkpoint to resume from ({ckpt} is missing)")
        saved = validate(read_yaml(run_dir / "config.yaml"))
        cfg = validate(apply_overrides(read_yaml(run_dir / "config.yaml"), overrides))
        given = None if recipe is None else recipe if isinstance(recipe, RunConfig) else load_config(recipe)
        ckpt, _, warning = load_resume_state(ckpt)  # read (and check) it before any work starts
        if warning and not is_secondary():  # a damaged last.safetensors: the run continues from previous.safetensors
            print(f"warning: {warning}", file=sys.stderr)
        changes = resume_changes(saved, cfg, ckpt, given)
        if isinstance(ckpt.get("trainer"), dict):  # checkpoints from before base_lr was recorded
            ckpt["trainer"].setdefault("base_lr", saved.optim.lr)
    else:
        if recipe is None:
            raise DeepfoundryError("train needs a RECIPE (see 'deepfoundry list recipes') or --resume RUN")
        check_out(out)
        cfg = recipe if isinstance(recipe, RunConfig) else load_config(recipe, overrides)
        run_dir = Path(out) if out is not None else default_run_dir(cfg.name)
        ckpt = None
    for registry in (DATASETS, MODELS, TASKS):  # import every family before seeding: some imports draw from
        registry.load()                          # Python's global RNG (sklearn.preprocessing), so a fresh process
    own_loop = getattr(TASKS.get(cfg.task.name), "own_loop", None)  # a family with its own loop (DQN)
    if own_loop is not None and cfg.privacy.enabled:
        raise DeepfoundryError(f"privacy (DP-SGD) cannot train task {cfg.task.name!r}: it runs its own loop "
                               f"(reinforcement learning); drop the privacy.* keys")
    if own_loop is not None and cfg.trainer.mlflow:
        raise DeepfoundryError(f"trainer.mlflow cannot track task {cfg.task.name!r}: it runs its own loop "
                               f"(reinforcement learning), which logs metrics.jsonl only; drop trainer.mlflow")
    dist = _join_torchrun(cfg, own_loop)
    if dist is not None:  # one run directory for all ranks: rank 0's (a default name holds a timestamp)
        run_dir = Path(dist.broadcast_text(str(run_dir)))
    rundir = RunDirectory(run_dir)               # and a warm one must reach seed_everything in the same state
    main = dist is None or dist.is_main
    try:
        # SIGTERM/SIGINT from here on: the training loops stop at a step boundary with a checkpoint; outside
        # them (loading data, the final evaluation, saving) the run stops at the next phase boundary
        with contextlib.ExitStack() as stack:
            refused = None
            try:  # rank 0 alone owns (locks) the run directory; the other ranks hear whether it could
                if main:
                    stack.enter_context(claim(run_dir))
                    if resume is None:
                        check_new_run(run_dir, overwrite)
            except DeepfoundryError as exc:
                refused = exc
            if dist is not None and dist.agree(refused is not None) and refused is None:
                raise DeepfoundryError(f"rank 0 cannot write the run directory '{run_dir}'")
            if refused is not None:
                raise refused
            stop = stack.enter_context(graceful_stop())
            if resume is not None and changes and main:
                _record_resume(rundir, ckpt, changes)
            if own_loop is not None:
                own_loop(cfg, rundir, ckpt)
            else:
                _fit(cfg, rundir, ckpt, callbacks, show_loop, stop, dist)
            _stop_if_signalled(stop, rundir, "after training, before the report")
            if main:
                run = Run(rundir.path)
                if cfg.trainer.report:
                    from .report import write_report
                    from .responsible.model_card import write_model_card

                    write_report(run)
                    write_model_card(run)
                if cfg.trainer.mlflow:  # the saved run directory, report included, as the MLflow run's artifacts
                    from .engine.tracking import log_run_directory

                    log_run_directory(rundir.path)
        if dist is not None:
            dist.barrier()  # the run directory is complete for every rank
            if not main:
                return Run(rundir.path) if (rundir.path / "model.json").is_file() else None  # type: ignore[return-value]
        return run
    finally:
        if dist is not None:
            dist.close()


def _join_torchrun(cfg: RunConfig, own_loop: Any) -> Distributed | None:
    """Under torchrun: check that the run can train data-parallel (one line, on every rank, before any
    process waits for another), then join the process group. ``None`` for a single process."""
    dist = from_env(cfg.trainer.distributed)
    if dist is None:
        return None
    if own_loop is not None:
        raise DeepfoundryError(f"task {cfg.task.name!r} runs its own loop (reinforcement learning) and cannot train "
                               "under torchrun; train it in one process")
    if cfg.privacy.enabled:
        raise DeepfoundryError("privacy (DP-SGD) cannot train under torchrun (its Poisson sampling and accountant "
                               "assume one process); train it in one process")
    check_batch_size(cfg.data.batch_size, dist.world_size)
    return dist.init(cfg.trainer.device)


def _record_resume(rundir: RunDirectory, state: dict[str, Any], changes: list[str]) -> None:
    """Say each change a resume applies (stderr) and record them in ``metrics.jsonl`` at the checkpoint's step."""
    from .engine.logging import stderr_console

    console = stderr_console()
    for line in changes:
        console.print(f"resume: {line}", highlight=False, markup=False)
    step = (state.get("trainer") or {}).get("global_step", state.get("step", 0))
    with rundir.metrics_path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"kind": "resume", "step": step, "changes": changes}) + "\n")


def _stop_if_signalled(stop: StopFlag, rundir: RunDirectory, phase: str) -> None:
    """Raise :class:`Stopped` if SIGTERM/SIGINT arrived; the resume starts from the last checkpoint."""
    if stop.signum:
        last = rundir.last_checkpoint
        raise Stopped(stop.name, step=None, phase=phase, run_dir=rundir.path,
                      checkpoint=last if last.is_file() or previous_path(last).is_file() else None)


def _fit(cfg: RunConfig, rundir: RunDirectory, ckpt: dict[str, Any] | None, callbacks: list[Any] | None,
         show_loop: bool, stop: StopFlag, dist: Distributed | None = None) -> None:
    """The Trainer's families: data, model and task from the config, fitted, evaluated and saved."""
    seed_everything(cfg.seed)
    data = build_data(cfg.data, seed=cfg.seed)
    if cfg.fairness.reweigh:  # Kamiran-Calders loss weights on the training rows (docs/responsible.md)
        from .responsible.fairness import attach_reweighing

        data.info["reweighing"] = attach_reweighing(data, cfg.fairness.sensitive)
    context = model_context(data.info)
    model = build_model(cfg.model.name, cfg.model.builder_kwargs(), context)
    privacy = None
    if cfg.privacy.enabled:  # DP-SGD: BatchNorm -> GroupNorm, LSTM -> DPLSTM, then clipping + noise in the Trainer
        from .engine.logging import stderr_console
        from .responsible.privacy import DPSGD, make_private_model

        notices: list[str] = []
        model = make_private_model(model, notices.append)
        privacy = DPSGD(cfg.privacy)
    task = build_task(cfg.task, model, data.info)
    if privacy is not None:
        privacy.check(task, cfg.trainer, data.train)  # GANs, accumulation, graphs... refused before any notice
        for line in notices:
            stderr_console().print(line, highlight=False, markup=False)
    clip = getattr(model, "default_grad_clip", None)
    if cfg.trainer.grad_clip is None and clip:  # recurrent models clip by default (exploding gradients)
        cfg = cfg.model_copy(update={"trainer": cfg.trainer.model_copy(update={"grad_clip": float(clip)})})
    trainer = Trainer(cfg.trainer, cfg.optim, run_dir=rundir.path, callbacks=callbacks, privacy=privacy,
                      distributed=dist)
    console = trainer.progress.console
    main = trainer.is_main
    if show_loop:
        console.print(trainer.describe_loop(), highlight=False)
    if main:
        rundir.start(cfg)
    note = data.info.get("split_note")
    if note:
        console.print(note, highlight=False)
    started = time.perf_counter()
    trainer.fit(task, data, resume_from=ckpt)
    seconds = time.perf_counter() - started
    if cfg.trainer.threads:  # fit put the process's thread count back; evaluate with the run's, as it trained
        torch.set_num_threads(cfg.trainer.threads)
    _stop_if_signalled(stop, rundir, "after training, before the final evaluation")
    val = trainer.evaluate(data.val) if data.val.num_samples else {}
    test = trainer.evaluate(data.test) if data.test.num_samples else {}
    _stop_if_signalled(stop, rundir, "during the final evaluation")
    world = dist.world_size if dist is not None else 1
    weights = trainer.model_state() if dist is not None else None  # FSDP: gathered to rank 0 (every rank calls)
    finish = getattr(task, "on_train_end", None)  # task-specific outputs (language models: samples.txt)
    sharded = dist is not None and dist.mode == "fsdp"  # a sharded model runs forward on every rank together
    if not main:
        if sharded and callable(finish):
            with tempfile.TemporaryDirectory() as scratch:  # the other ranks' part of rank 0's samples
                finish(Path(scratch))
        return
    rundir.save_model(trainer.unwrapped_model, name=cfg.model.name, kwargs=cfg.model.builder_kwargs(),
                      context=context, task=cfg.task.name, task_kwargs=cfg.task.builder_kwargs(), info=data.info,
                      state=weights)
    flops = None if sharded else trainer.step_flops(data.train)  # for the model card's training compute
    if flops is not None:
        flops *= world  # measured on this rank's share of a batch: the global batch is world_size shares
    batches = trainer.epoch * len(data.train) + trainer.batch_in_epoch
    results = {"val": val, "test": test, "seconds": seconds, "train_seconds": trainer.elapsed,
               "epochs_run": trainer.epoch, "stop_reason": trainer.stop_reason, "device": str(trainer.device),
               "precision": trainer.precision, "world_size": world,
               "compute": {"flops_per_batch": flops, "batches": batches,
                           "train_flops": flops * batches if flops is not None else None}}
    if dist is not None:
        results["distributed"] = dist.mode
    if privacy is not None:
        results["privacy"] = privacy.summary()
    rundir.save_results(results)
    if callable(finish):
        finish(rundir.path)


class Run:
    """A finished run directory: its config, model, metrics history and results."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise DeepfoundryError(f"run directory '{self.path}' does not exist")
        meta_path = self.path / "model.json"
        if not meta_path.is_file():
            hint = (" (it has a checkpoint: finish it with 'deepfoundry train --resume " f"{self.path}')"
                    if (self.path / "checkpoints" / "last.safetensors").exists() else "")
            raise DeepfoundryError(f"'{self.path}' is not a finished run directory (no model.json){hint}")
        self.meta: dict[str, Any] = _read_json_object(meta_path)
        _check_keys(self.meta, meta_path, MODEL_JSON_KEYS)
        self.config: RunConfig = validate(read_yaml(self.path / "config.yaml"))
        self.info: dict[str, Any] = self.meta["info"]
        results_path = self.path / "results.json"
        if results_path.exists():  # checked here so that Run.results and every verb reading it can trust it
            _check_keys(_read_json_object(results_path), results_path, RESULTS_JSON_KEYS)
        self._task: Task | None = None

    def __repr__(self) -> str:
        return f"Run('{self.path}')"

    @property
    def task(self) -> Task:
        """The task (owning the model) with the run's final weights, on the CPU, in eval mode."""
        if self._task is None:
            m = self.meta["model"]
            ctx = dict(m["context"])
            # initial-weight sources (transfer learning) are not needed: the run's own weights replace them
            kwargs = {k: v for k, v in m["kwargs"].items() if k not in ("weights", "weights_file", "weights_run")}
            meta_path, weights_path = self.path / "model.json", self.path / "model.safetensors"
            try:  # model.json's values reach the builders as they are: a wrong one is the file's fault
                if "input_size" in ctx:
                    ctx["input_size"] = tuple(ctx["input_size"])
                model = build_model(m["name"], kwargs, ctx)
                if self.config.privacy.enabled:  # trained with DP-SGD: the same layer replacements as in training
                    from .responsible.privacy import make_private_model

                    model = make_private_model(model)
            except (TypeError, ValueError, KeyError, IndexError, OverflowError, RuntimeError) as exc:
                raise DeepfoundryError(f"'{meta_path}' describes a model {m['name']!r} that cannot be built: "
                                       f"{_one_line(exc)}") from exc
            state = load_weights(weights_path)
            try:
                model.load_state_dict(state)
            except RuntimeError as exc:
                raise DeepfoundryError(f"weights in '{weights_path}' do not fit model {m['name']!r}: "
                                       f"{_state_mismatch(model.state_dict(), state) or _one_line(exc)}") from None
            try:
                self._task = build_task(self.config.task, model, self.info).eval()
            except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
                raise DeepfoundryError(f"the task {self.config.task.name!r} cannot be built from '{meta_path}' "
                                       f"(info): {_one_line(exc)}") from exc
        return self._task

    @property
    def model(self) -> nn.Module:
        return self.task.model

    @property
    def history(self) -> list[dict[str, Any]]:
        """Per-epoch records from ``metrics.jsonl``."""
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return []
        return [r for r in read_jsonl(path) if r.get("kind") == "epoch"]

    @property
    def results(self) -> dict[str, Any]:
        path = self.path / "results.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}

    def data(self, data_root: str | None = None) -> DataBundle:
        """Rebuild the run's data (same seed, same splits); ``data_root`` overrides ``data.root``."""
        cfg = self.config.data.model_copy(update={"root": data_root}) if data_root else self.config.data
        data = build_data(cfg, seed=self.config.seed)
        data.info["preprocess"] = self.info.get("preprocess")  # the run's own fitted statistics
        return data

    def evaluate(self, split: str = "test", data_root: str | None = None, device: str = "cpu") -> dict[str, Any]:
        """Metrics of the final model on ``split`` (train, val or test)."""
        loader = self.data(data_root).loader(split)
        trainer = Trainer(self.config.trainer.model_copy(update={"device": device, "compile": False}),
                          run_dir=None)
        return trainer.evaluate(loader, self.task.to(trainer.device))

    @torch.no_grad()
    def predict_proba(self, x: Any) -> np.ndarray:
        """Class probabilities (N, C) for raw inputs (images in [0, 1], raw table rows, strings for text runs)."""
        task = self.task.to("cpu")
        return task.probabilities(task.encode_inputs(x)).numpy()

    @torch.no_grad()
    def predict(self, x: Any) -> np.ndarray:
        """Class indices (classification) or values in the target's units (regression) for raw inputs."""
        task = self.task.to("cpu")
        return task.predictions(task.predict(task.encode_inputs(x)))

    @torch.no_grad()
    def predict_rows(self, x: Any) -> list[dict[str, Any]]:
        """One JSON-ready answer per raw input: ``{"class", "label", "probability", "probabilities"}`` for
        classifiers, ``{"value"}``/``{"values"}`` for regression and forecasts, ``{"translation"}`` ...
        After ``deepfoundry audit RUN --mitigate threshold``, raw rows that carry the sensitive columns also get
        the mitigated decision (``fair_class``, ``fair_label``, ``fair_probability``; docs/responsible.md)."""
        rows = self.task.to("cpu").predict_rows(x)
        thresholds = self.path / "fairness" / "threshold.json"
        if thresholds.is_file():
            from .responsible.fairness import apply_thresholds

            rows = apply_thresholds(thresholds, x, rows)
        return rows

    def predict_files(self, arguments: list[str], out: str | Path | None = None) -> list[dict[str, Any]]:
        """What ``deepfoundry predict RUN INPUT...`` prints: command-line inputs (image files, ``.npy``
        arrays, CSV files of raw rows, texts; whatever the run's input kind reads) answered one row each,
        ``{"input": name, **answer}``. ``out`` writes the rows as CSV (tabular runs: the input columns
        first, then the answer; ``probabilities`` become ``p(<class>)`` columns)."""
        task = self.task.to("cpu")
        read = task.read_inputs(list(arguments))
        answers = self.predict_rows(read.raw)
        rows = [{"input": name, **answer} for name, answer in zip(read.names, answers)]
        if out is not None:
            import pandas as pd

            flat = [{**(read.columns[i] if read.columns else {}), **_flatten_answer(row)}
                    for i, row in enumerate(rows)]
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(flat).to_csv(out, index=False)
        return rows

    def predict_table(self, rows: Any) -> Any:
        """A pandas DataFrame, one row per input: ``prediction`` (the label, or the value) and, for
        classifiers, ``probability`` and a ``p(<class>)`` column per class. Tabular runs take raw rows
        (a DataFrame, a CSV path, a dict or a list of dicts); any run takes what ``predict`` takes."""
        import pandas as pd

        table = []
        for answer in self.predict_rows(rows):
            row = {"prediction": answer.get("label", answer.get("value", answer.get("values")))}
            row.update(_flatten_answer({k: v for k, v in answer.items() if k in ("probability", "probabilities")}))
            table.append(row)
        return pd.DataFrame(table)

    def _capability(self, name: str, needs: str) -> Any:
        method = getattr(self.task, name, None)
        if not callable(method):
            raise DeepfoundryError(f"{name} needs {needs}; '{self.path}' is a {self.task.family} run")
        return method

    def generate(self, prompt: str, tokens: int = 300, temperature: float = 0.8, top_k: int | None = 40,
                 seed: int | None = None) -> str:
        """Language-model runs: the prompt continued by ``tokens`` sampled tokens (see ``tasks/language_model.py``)."""
        self.task.to("cpu")
        return self._capability("generate", "a language-model run (e.g. char-lstm-shakespeare)")(
            prompt, tokens, temperature, top_k, seed)

    def translate(self, texts: str | list[str], beam: int = 1, length_penalty: float | None = None) -> list[str]:
        """Translation runs: detokenised translations of raw source sentences (greedy, or beam search with
        GNMT length penalty ``length_penalty``; see ``tasks/translation.py``)."""
        self.task.to("cpu")
        return self._capability("translate", "a translation run (e.g. seq2seq-attention-multi30k)")(
            texts, beam=beam, length_penalty=length_penalty)

    def play(self, episodes: int = 10, seed: int = 0, record: str | Path | None = None) -> dict[str, Any]:
        """Reinforcement-learning runs: the greedy policy's mean and standard deviation of the return over
        ``episodes`` episodes (seeds ``seed``, ``seed + 1``, ...); ``record`` writes a GIF of the first."""
        return self._capability("play", "a reinforcement-learning run (e.g. dqn-cartpole)")(episodes, seed, record)


# What a run's JSON files must hold (key path -> type), checked when the run is opened so that a damaged
# file is one line naming the file and the key, not a KeyError later.
MODEL_JSON_KEYS: dict[str, Any] = {"model": dict, "model.name": str, "model.kwargs": dict, "model.context": dict,
                                   "info": dict, "info.input_kind?": str, "info.class_names?": list,
                                   "info.num_classes?": int, "info.input_shape?": list,
                                   "info.preprocess?": (dict, None)}
RESULTS_JSON_KEYS: dict[str, Any] = {"test?": dict, "val?": dict, "eval?": dict, "seconds?": (int, float, None)}


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and exc.args:  # str(KeyError('k')) is just "'k'"
        return f"missing key {exc.args[0]!r}"
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def _read_json_object(path: Path) -> dict[str, Any]:
    """A run's JSON file that must hold one object; anything else is a one-line error naming the file."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DeepfoundryError(f"'{path}' is corrupt: {exc}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DeepfoundryError(f"'{path}' is corrupt: {_one_line(exc)}") from None
    except OSError as exc:
        raise DeepfoundryError(f"cannot read '{path}': {exc.strerror or exc}") from None
    if not isinstance(obj, dict):
        raise DeepfoundryError(f"'{path}' must hold a JSON object, received {type(obj).__name__}; the run directory "
                               f"is damaged")
    return obj


def _check_keys(obj: dict[str, Any], path: Path, keys: dict[str, Any]) -> None:
    """Each dotted key of ``keys`` (``?``: optional) is present with its type(s); ``None`` in a tuple allows null."""
    for dotted, kinds in keys.items():
        optional, names = dotted.endswith("?"), dotted.rstrip("?").split(".")
        node: Any = obj
        for name in names[:-1]:
            node = node[name]  # the sections themselves come first in ``keys``
        if names[-1] not in node:
            if optional:
                continue
            raise DeepfoundryError(f"'{path}' lacks the key '{dotted}'; the run directory is damaged (retrain it)")
        value, kinds = node[names[-1]], kinds if isinstance(kinds, tuple) else (kinds,)
        types = tuple(type(None) if k is None else k for k in kinds)
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            expected = " or ".join("null" if k is None else {dict: "an object", list: "a list", str: "a string",
                                                             int: "an integer", float: "a number"}[k] for k in kinds)
            raise DeepfoundryError(f"'{path}': key '{dotted.rstrip('?')}' must be {expected}, received "
                                   f"{type(value).__name__}; the run directory is damaged (retrain it)")


def _state_mismatch(expected: dict[str, Any], found: dict[str, Any], shown: int = 3) -> str:
    """How a state dict differs from what the model holds, in one line: the first few names of each kind."""
    def some(names: list[str]) -> str:
        more = f" and {len(names) - shown} more" if len(names) > shown else ""
        return ", ".join(names[:shown]) + more

    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [f"{k} (file {list(found[k].shape)}, model {list(expected[k].shape)})" for k in expected
              if k in found and tuple(found[k].shape) != tuple(expected[k].shape)]
    parts = [f"{label}: {some(names)}" for label, names in (("missing keys", missing), ("unexpected keys", unexpected),
                                                           ("shape mismatches", shapes)) if names]
    return "; ".join(parts)


def _flatten_answer(row: dict[str, Any]) -> dict[str, Any]:
    """A row for a CSV file: ``probabilities`` become ``p(<class>)`` columns, lists become strings."""
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if key == "probabilities" and isinstance(value, dict):
            flat.update({f"p({name})": p for name, p in value.items()})
        elif isinstance(value, (list, dict)):
            flat[key] = json.dumps(value)
        else:
            flat[key] = value
    return flat


def load_run(path: str | Path) -> Run:
    """Open a finished run directory."""
    return Run(path)


def augment_preview(recipe: str | Path | RunConfig, out: str | Path = "augment-preview.png", n: int = 16,
                    overrides: dict[str, Any] | list[str] | None = None, seed: int = 0) -> dict[str, Any]:
    """Show what ``data.augment`` does to the first ``n`` training samples of a recipe.

    Image data: writes a PNG grid to ``out`` (originals on top, augmented below) and returns
    ``{"kind": "image", "out": ...}``; text data: returns ``{"kind": "text", "examples": [{original,
    augmented}, ...]}``. ``seed`` picks the augmentation draw (see docs/augmentation.md).

    >>> augment_preview("lenet5-digits", "grid.png", overrides={"data.augment": "mnist"})["out"]
    'grid.png'
    """
    from .data.augment import preview
    from .report import save_grid

    cfg = recipe if isinstance(recipe, RunConfig) else load_config(recipe, overrides)
    return preview(cfg, out, n, seed, save_grid=save_grid)
