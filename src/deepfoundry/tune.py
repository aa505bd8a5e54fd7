"""Hyperparameter search with Optuna: ``deepfoundry tune RECIPE --space space.yaml --trials N``.

A *space file* maps dotted config keys to distributions::

    optim.lr:           {type: float, low: 1.0e-4, high: 1.0e-1, log: true}
    model.dropout:      {type: float, low: 0.0, high: 0.5, step: 0.05}
    data.batch_size:    {type: int, low: 32, high: 256, step: 32}
    model.hidden_sizes: {type: categorical, choices: [[128], [256, 128]]}

Each trial samples one value per key (TPE or random search, seeded), trains the recipe with those
overrides as a normal run directory (``OUT/trials/trial-0007``) and returns its final validation
metric (the best epoch's: runs restore their best checkpoint). After every epoch the trial reports
``val_<metric>`` to Optuna; when the pruner judges it worse than its peers at that epoch (median:
below the median of earlier trials at the same epoch; Hyperband: outside the top ``1/eta`` of its
successive-halving rung) the run stops cleanly through the Trainer's ``should_stop`` and the trial
is recorded as pruned.

The study lives in a database (SQLite ``OUT/study.db`` by default, any SQLAlchemy URL otherwise):
rerunning the same command continues it, and several processes (``--workers N`` on this machine,
or the same command on other machines given one database URL) work on one study. ``--trials N`` is
the number of finished trials the study should hold in total.

>>> import deepfoundry
>>> result = deepfoundry.tune("mlp-digits", "mlp-digits", trials=20)   # a shipped space, or a file
>>> result.best_params, result.best_value, result.best_recipe          # OUT/best.yaml trains as a recipe

(``deepfoundry.tune`` is this module's :func:`tune`; import helpers with ``from deepfoundry.tune import ...``.)
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .config import DataConfig, ModelConfig, TaskConfig, apply_overrides, flatten_keys, load_raw, validate
from .engine.callbacks import Callback, monitored
from .errors import DeepfoundryError

TYPES = {"float": ("low", "high", "log", "step"), "int": ("low", "high", "log", "step"), "categorical": ("choices",)}
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "hyperband", "none")
MINIMIZE = ("loss", "mse", "rmse", "mae", "perplexity", "nll", "ece")
_SCALAR = (type(None), bool, int, float, str)
_OPEN = {"data": DataConfig, "model": ModelConfig, "task": TaskConfig}


# ----------------------------------------------------------------------------- the search space
@dataclass(frozen=True)
class Param:
    """One searched config key: ``float``/``int`` in ``[low, high]`` (``log`` scale or a ``step``
    grid) or ``categorical`` among ``choices`` (lists and mappings travel as JSON text)."""

    key: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    @property
    def encoded(self) -> bool:
        return any(not isinstance(c, _SCALAR) for c in self.choices)

    def suggest(self, trial: Any) -> Any:
        """Sample this key's value in an Optuna trial (the config value, decoded)."""
        if self.type == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return self.decode(trial.suggest_categorical(self.key, [self.encode(c) for c in self.choices]))

    def encode(self, value: Any) -> Any:
        return json.dumps(value) if self.encoded else value

    def decode(self, value: Any) -> Any:
        return json.loads(value) if self.encoded else value

    def values(self) -> list[Any]:
        """The values checked against the config before the study starts (bounds, or every choice)."""
        return list(self.choices) if self.type == "categorical" else [self.low, self.high]


def _number(value: Any, integer: bool) -> bool:
    ok = (int,) if integer else (int, float)
    return isinstance(value, ok) and not isinstance(value, bool) and math.isfinite(value)


def _parse_param(key: str, spec: Any, where: str) -> Param:
    at = f"{where}: parameter '{key}'"
    if not isinstance(spec, dict) or "type" not in spec:
        raise DeepfoundryError(f"{at}: expected a mapping with a type, e.g. {{type: float, low: 1e-4, high: 1e-1, "
                               f"log: true}}, received {spec!r}")
    kind = spec["type"]
    if kind not in TYPES:
        raise DeepfoundryError(f"{at}: unknown type {kind!r}; expected one of {', '.join(TYPES)}")
    extra = sorted(set(spec) - {"type", *TYPES[kind]})
    if extra:
        raise DeepfoundryError(f"{at}: unknown field {extra[0]!r} for type {kind}; accepted: {', '.join(TYPES[kind])}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise DeepfoundryError(f"{at}: categorical needs a non-empty list of choices, received {choices!r}")
        return Param(key, kind, choices=tuple(choices))
    low, high, log, step = spec.get("low"), spec.get("high"), spec.get("log", False), spec.get("step")
    for name, value in (("low", low), ("high", high)) + ((("step", step),) if step is not None else ()):
        if not _number(value, kind == "int"):
            raise DeepfoundryError(f"{at}: {name} must be {'an integer' if kind == 'int' else 'a number'}, "
                                   f"received {value!r}")
    if not isinstance(log, bool):
        raise DeepfoundryError(f"{at}: log must be true or false, received {log!r}")
    if low >= high:
        raise DeepfoundryError(f"{at}: low must be below high, received low={low!r}, high={high!r}")
    if log and low <= 0:
        raise DeepfoundryError(f"{at}: a log scale needs low > 0, received low={low!r}")
    if log and step is not None:
        raise DeepfoundryError(f"{at}: log and step cannot be combined; drop one")
    if step is not None and step <= 0:
        raise DeepfoundryError(f"{at}: step must be positive, received {step!r}")
    return Param(key, kind, low=low, high=high, log=log, step=step)


def shipped_spaces() -> list[str]:
    folder = resources.files("deepfoundry") / "recipes" / "spaces"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml")) if folder.is_dir() else []


def load_space(space: str | Path | dict[str, Any]) -> list[Param]:
    """A space file (or a shipped space's name, or a mapping) -> its :class:`Param` list."""
    if isinstance(space, dict):
        where, raw = "space", space
    else:
        path = Path(space)
        if not path.is_file() and str(space) in shipped_spaces():
            path = Path(str(resources.files("deepfoundry") / "recipes" / "spaces" / f"{space}.yaml"))
        if not path.is_file():
            names = ", ".join(shipped_spaces()) or "none"
            raise DeepfoundryError(f"space file '{space}' does not exist (shipped spaces: {names})")
        where = f"space file '{space}'"
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise DeepfoundryError(f"{where} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict) or not raw:
        raise DeepfoundryError(f"{where} must map config keys to distributions, e.g. "
                               f"'optim.lr: {{type: float, low: 1e-4, high: 1e-1, log: true}}'")
    return [_parse_param(str(k), v, where) for k, v in raw.items()]


def check_space(params: list[Param], raw: dict[str, Any], where: str = "space") -> None:
    """Every key must be a config key the recipe accepts, and every bound or choice a valid value:
    strict sections through the config schema, ``data``/``model``/``task`` extras through the
    registered builder's signature. Raises a one-line :class:`DeepfoundryError` naming the key."""
    import inspect

    from .registry import DATASETS, MODELS, TASKS

    registries = {"data": DATASETS, "model": MODELS, "task": TASKS}
    keys = {p.key for p in params}
    for p in params:
        at = f"{where}: parameter '{p.key}'"
        for value in p.values():
            try:
                cfg = validate(apply_overrides(raw, {p.key: value}))
            except DeepfoundryError as exc:
                raise DeepfoundryError(f"{at}: {exc}") from None
        section, _, rest = p.key.partition(".")
        arg = rest.split(".")[0]
        if section in _OPEN and arg and arg not in _OPEN[section].model_fields and f"{section}.name" not in keys:
            name = getattr(cfg, section).name
            sig = inspect.signature(registries[section].get(name)).parameters
            if arg not in sig and not any(s.kind is inspect.Parameter.VAR_KEYWORD for s in sig.values()):
                raise DeepfoundryError(f"{at}: unknown config key '{section}.{arg}' for {section} {name!r}; "
                                       f"accepted: {', '.join(sig)}")


# ----------------------------------------------------------------------------- settings and study
@dataclass
class TuneSettings:
    """Everything a worker process needs (picklable, so ``--workers`` can spawn processes)."""

    recipe: str
    overrides: dict[str, Any]
    params: list[Param]
    metric: str                  # validation metric name, e.g. "accuracy" (reported as val_accuracy)
    direction: str               # maximize | minimize
    storage: str
    study_name: str
    out: str
    trials: int
    sampler: str = "tpe"
    pruner: Any = "median"       # a name, or an optuna BasePruner instance (Python API)
    seed: int = 0
    epochs: int = 10
    timeout: float | None = None
    verbose: bool = False
    fingerprint: str = ""
    prune_after: int | None = None  # epochs a trial runs before it can be pruned

    def sampler_for(self, worker: int, finished_before: int) -> Any:
        """A sampler seeded by ``seed``, the worker and the study's size, so a fresh study repeats
        exactly and a resumed one (or a second worker) does not redraw the same points."""
        import optuna

        seed = self.seed + 7919 * worker + finished_before
        if self.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed)

    def make_pruner(self) -> Any:
        import optuna

        if not isinstance(self.pruner, str):
            return self.pruner
        if self.pruner == "median":  # prune below the median of earlier trials at the same epoch
            warmup = self.prune_after if self.prune_after is not None else max(1, self.epochs // 10)
            return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=warmup)
        if self.pruner == "hyperband":
            tuned_epochs = any(p.key == "trainer.epochs" for p in self.params)
            return optuna.pruners.HyperbandPruner(min_resource=self.prune_after or 1, reduction_factor=3,
                                                  max_resource="auto" if tuned_epochs else self.epochs)
        return optuna.pruners.NopPruner()


def _quiet_optuna() -> None:
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # trials are reported by _objective, one line each
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _storage(url: str) -> Any:
    import optuna
    import sqlalchemy.exc

    _quiet_optuna()
    engine: dict[str, Any] = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    try:  # heartbeats let a later run fail (and replace) trials whose process was killed
        return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=10, grace_period=30)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as exc:
        raise DeepfoundryError(f"cannot open study storage '{url}': {str(exc).splitlines()[0]}") from None


def open_study(s: TuneSettings, worker: int = 0) -> Any:
    """Create or load the study; refuse one made for another recipe, space, metric or direction."""
    import optuna

    storage = _storage(s.storage)
    try:
        study = optuna.create_study(storage=storage, study_name=s.study_name, direction=s.direction,
                                    pruner=s.make_pruner(), load_if_exists=True)
    except ValueError as exc:
        raise DeepfoundryError(f"study '{s.study_name}' in '{s.storage}': {exc}") from None
    if study.direction.name.lower() != s.direction:
        raise DeepfoundryError(f"study '{s.study_name}' in '{s.storage}' was created to "
                               f"{study.direction.name.lower()}; pass --direction {study.direction.name.lower()} "
                               f"or another --study-name")
    saved = study.user_attrs.get("fingerprint")
    if saved is None:
        study.set_user_attr("fingerprint", s.fingerprint)
    elif saved != s.fingerprint:
        mine = json.loads(s.fingerprint)
        differ = [k for k, v in json.loads(saved).items() if mine.get(k) != v]
        raise DeepfoundryError(f"study '{s.study_name}' in '{s.storage}' was run with another "
                               f"{' and '.join(differ) or 'setup'}; use another --study-name or --out")
    study.sampler = s.sampler_for(worker, len(study.get_trials(deepcopy=False)))
    return study


def _finished(study: Any) -> int:
    """Trials that count towards ``--trials``: complete, pruned, diverged, and those still running
    in other workers (trials of killed processes are failed by their stale heartbeat, not counted)."""
    from optuna.trial import TrialState

    n = 0
    for t in study.get_trials(deepcopy=False):
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
            n += 1
        elif t.state == TrialState.FAIL and "error" in t.user_attrs:
            n += 1
    return n


# ----------------------------------------------------------------------------- one trial
class OptunaPruning(Callback):
    """Reports ``monitor`` to the Optuna trial after every epoch (step = epoch number) and stops
    the run cleanly (``trainer.should_stop``) when the study's pruner says the trial is behind."""

    def __init__(self, trial: Any, monitor: str) -> None:
        self.trial, self.monitor = trial, monitor
        self.pruned_at: int | None = None
        self.reason = ""

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        value = monitored(record, self.monitor)
        self.trial.report(value, record["epoch"])
        if self.trial.should_prune():
            self.pruned_at = record["epoch"]
            trainer.should_stop = True
            self.reason = f"pruned by optuna after epoch {record['epoch']} ({self.monitor} {value:.4f})"
            trainer.stop_reason = self.reason


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _objective(trial: Any, s: TuneSettings) -> float:
    import optuna

    from .api import train
    from .engine.trainer import TrainingDiverged

    params = {p.key: p.suggest(trial) for p in s.params}
    run_dir = Path(s.out) / "trials" / f"trial-{trial.number:04d}"
    trial.set_user_attr("run", str(run_dir))
    trial.set_user_attr("pid", os.getpid())
    pruning = OptunaPruning(trial, f"val_{s.metric}")
    shown = "  ".join(f"{k}={_short(v)}" for k, v in params.items())
    try:  # one line per trial; --verbose keeps each run's epoch lines (stderr)
        with contextlib.nullcontext() if s.verbose else contextlib.redirect_stderr(io.StringIO()):
            run = train(s.recipe, overrides={"trainer.report": False, **s.overrides, **params}, out=run_dir,
                        callbacks=[pruning])  # trials skip report.html and the card unless the user sets it
    except TrainingDiverged as exc:
        trial.set_user_attr("error", str(exc))
        _say(f"trial {trial.number:>3}  diverged    {shown}")
        raise
    res = run.results
    val, test = _scalars(res.get("val", {})), _scalars(res.get("test", {}))
    trial.set_user_attr("val", val)
    trial.set_user_attr("test", test)
    trial.set_user_attr("epochs_run", res.get("epochs_run"))
    trial.set_user_attr("seconds", res.get("seconds"))
    if s.metric not in val:
        raise DeepfoundryError(f"metric 'val.{s.metric}' is not among the run's validation metrics; available: "
                               f"{', '.join('val.' + k for k in val)}")
    state = f"pruned@{pruning.pruned_at:<3}" if pruning.pruned_at else "complete   "
    _say(f"trial {trial.number:>3}  {state} val.{s.metric} {val[s.metric]:.4f}  {res.get('seconds', 0):5.1f}s  {shown}")
    if pruning.pruned_at is not None:
        raise optuna.TrialPruned(pruning.reason)
    return val[s.metric]


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else json.dumps(v) if isinstance(v, (list, dict)) else str(v)


def _say(line: str) -> None:
    from rich.console import Console

    Console(stderr=True, soft_wrap=True).print(line, highlight=False)


def work(s: TuneSettings, worker: int = 0) -> None:
    """One worker: run trials until the study holds ``s.trials`` finished ones (or the timeout)."""
    import optuna

    from .engine.trainer import TrainingDiverged

    study = open_study(s, worker)
    deadline = time.monotonic() + s.timeout if s.timeout else None
    while True:
        optuna.storages.fail_stale_trials(study)
        if _finished(study) >= s.trials or (deadline is not None and time.monotonic() >= deadline):
            return
        study.optimize(lambda trial: _objective(trial, s), n_trials=1, catch=(TrainingDiverged,))


def _worker_main(s: TuneSettings, worker: int, threads: int) -> None:
    """Entry point of a ``--workers`` process: its share of the CPU threads, one-line errors."""
    import sys

    import torch

    torch.set_num_threads(threads)
    try:
        work(s, worker)
    except DeepfoundryError as exc:
        print(f"error: worker {worker}: {exc}", file=sys.stderr)
        sys.exit(2)


def _run_workers(s: TuneSettings, workers: int) -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools
    threads = max(1, (os.cpu_count() or 1) // workers)
    procs = [ctx.Process(target=_worker_main, args=(s, k, threads), name=f"deepfoundry-tune-{k}")
             for k in range(workers)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        raise
    failed = [k for k, p in enumerate(procs) if p.exitcode != 0]
    if failed:
        raise DeepfoundryError(f"{len(failed)} of {workers} tuning workers failed (their errors are printed above)")


# ----------------------------------------------------------------------------- results
@dataclass
class TuneResult:
    """What a study produced; ``summary()`` is what ``deepfoundry tune`` prints."""

    study_name: str
    storage: str
    out: str
    metric: str
    direction: str
    counts: dict[str, int]
    wall_seconds: float
    best_trial: int | None = None
    best_value: float | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    best_run: str | None = None
    best_test: dict[str, float] = field(default_factory=dict)
    best_recipe: str | None = None
    importances: dict[str, float] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    trials: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        c = self.counts
        lines = [f"study '{self.study_name}' ({self.storage}): {c.get('complete', 0)} complete, {c.get('pruned', 0)} "
                 f"pruned, {c.get('fail', 0)} failed, {c.get('running', 0)} running; {self.wall_seconds:.1f}s this run"]
        if self.best_trial is None:
            lines.append("no completed trial yet")
        else:
            lines.append(f"best trial {self.best_trial}: val.{self.metric} {self.best_value:.4f} ({self.direction})"
                         + (f", test.{self.metric} {self.best_test[self.metric]:.4f}" if self.metric in self.best_test
                            else ""))
            lines += [f"  {k} = {_short(v)}" for k, v in self.best_params.items()]
            lines.append(f"best run: {self.best_run}")
            lines.append(f"best config as a recipe: {self.best_recipe}  (deepfoundry train {self.best_recipe})")
        if self.importances:
            lines.append("parameter importance: " + ", ".join(f"{k} {v:.2f}" for k, v in self.importances.items()))
        lines += [f"{name}: {path}" for name, path in self.files.items() if name != "best_recipe"]
        return "\n".join(lines)


def _trial_rows(study: Any, s: TuneSettings) -> list[dict[str, Any]]:
    by_key = {p.key: p for p in s.params}
    rows = []
    for t in study.get_trials(deepcopy=False):
        u = t.user_attrs
        rows.append({"number": t.number, "state": t.state.name.lower(), "value": t.value,
                     "params": {k: by_key[k].decode(v) if k in by_key else v for k, v in t.params.items()},
                     "epochs_run": u.get("epochs_run"), "seconds": u.get("seconds"),
                     "val": u.get("val", {}), "test": u.get("test", {}), "run": u.get("run"), "pid": u.get("pid"),
                     "error": u.get("error")})
    return rows


def _write_tables(rows: list[dict[str, Any]], s: TuneSettings, out: Path) -> tuple[Path, Path]:
    json_path, csv_path = out / "trials.json", out / "trials.csv"
    json_path.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    keys = [p.key for p in s.params]
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["number", "state", f"val_{s.metric}", *keys, "epochs_run", "seconds", f"test_{s.metric}", "run"])
        for r in rows:
            w.writerow([r["number"], r["state"], r["value"], *(_short(r["params"].get(k, "")) for k in keys),
                        r["epochs_run"], r["seconds"], r["test"].get(s.metric), r["run"]])
    return csv_path, json_path


def _write_best_recipe(s: TuneSettings, best: dict[str, Any], out: Path) -> Path:
    """The recipe with the best trial's values: ``deepfoundry train OUT/best.yaml`` retrains it."""
    raw = apply_overrides(load_raw(s.recipe), {**s.overrides, **best["params"]})
    base = raw.get("name") or Path(s.recipe).stem
    raw["name"] = f"{base}-tuned"
    raw["description"] = (f"{base} tuned by deepfoundry tune (study {s.study_name}, trial {best['number']}: "
                          f"val.{s.metric} {best['value']:.4f})")
    validate(raw)
    path = out / "best.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def _plots(study: Any, out: Path) -> tuple[dict[str, str], dict[str, float]]:
    """Optimisation history and parameter importance (fANOVA) as PNGs, with matplotlib."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.importance import FanovaImportanceEvaluator
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as vis

    folder = out / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    importances: dict[str, float] = {}
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    with warnings.catch_warnings(), matplotlib.rc_context():  # optuna's plots switch the global style to ggplot
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if complete:
            ax = vis.plot_optimization_history(study)
            path = folder / "optimization_history.png"
            ax.figure.savefig(path, dpi=110, bbox_inches="tight")
            plt.close(ax.figure)
            files["optimization_history"] = str(path)
        if len(complete) >= 2 and any(len({repr(t.params.get(k)) for t in complete}) > 1 for k in complete[0].params):
            evaluator = FanovaImportanceEvaluator(seed=0)
            importances = {k: float(v) for k, v in
                           optuna.importance.get_param_importances(study, evaluator=evaluator).items()}
            ax = vis.plot_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0))
            path = folder / "param_importances.png"
            ax.figure.savefig(path, dpi=110, bbox_inches="tight")
            plt.close(ax.figure)
            files["param_importances"] = str(path)
    return files, importances


def collect(study: Any, s: TuneSettings, wall: float) -> TuneResult:
    """Write ``trials.csv``/``trials.json``, ``best.yaml``, the plots and ``summary.json`` into OUT."""
    out = Path(s.out)
    rows = _trial_rows(study, s)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    csv_path, json_path = _write_tables(rows, s, out)
    result = TuneResult(s.study_name, s.storage, str(out), s.metric, s.direction, counts, wall, trials=rows,
                        files={"trials_csv": str(csv_path), "trials_json": str(json_path)})
    complete = [r for r in rows if r["state"] == "complete"]
    if complete:
        sign = 1 if s.direction == "maximize" else -1
        best = max(complete, key=lambda r: (sign * r["value"], -r["number"]))
        result.best_trial, result.best_value, result.best_params = best["number"], best["value"], best["params"]
        result.best_run, result.best_test = best["run"], best["test"]
        result.best_recipe = str(_write_best_recipe(s, best, out))
        result.files["best_recipe"] = result.best_recipe
    plots, result.importances = _plots(study, out)
    result.files.update(plots)
    result.files["summary"] = str(out / "summary.json")
    (out / "summary.json").write_text(json.dumps({k: v for k, v in result.to_dict().items() if k != "trials"},
                                                 indent=2) + "\n", encoding="utf-8")
    return result


# ----------------------------------------------------------------------------- the entry point
def parse_metric(metric: str | None, direction: str | None, monitor: str, mode: str) -> tuple[str, str]:
    """``val.accuracy`` -> (``accuracy``, direction). Default: the recipe's ``trainer.monitor`` and mode
    when it is a validation metric, else ``val.loss``; a loss-like name minimises, others maximise."""
    if metric is None:
        if monitor.startswith("val_"):
            metric, direction = f"val.{monitor[4:]}", direction or ("maximize" if mode == "max" else "minimize")
        else:
            metric = "val.loss"
    split, _, name = metric.partition(".")
    if split != "val" or not name:
        raise DeepfoundryError(f"metric {metric!r} must be a validation metric such as val.accuracy or val.loss "
                               f"(tuning on the test split would leak it into the choice)")
    if direction is None:
        direction = "minimize" if name in MINIMIZE or name.endswith("loss") else "maximize"
    if direction not in ("maximize", "minimize"):
        raise DeepfoundryError(f"direction {direction!r} must be maximize or minimize")
    return name, direction


def tune(recipe: str | Path, space: str | Path | dict[str, Any], trials: int = 20, *, sampler: str = "tpe",
         pruner: Any = "median", metric: str | None = None, direction: str | None = None,
         storage: str | None = None, study_name: str | None = None, workers: int = 1,
         timeout: float | None = None, overrides: dict[str, Any] | list[str] | None = None,
         out: str | Path | None = None, seed: int | None = None, verbose: bool = False,
         prune_after: int | None = None) -> TuneResult:
    """Search ``space`` for the recipe's best validation ``metric`` with Optuna; return a :class:`TuneResult`.

    ``trials`` is the study's total of finished trials (a rerun continues up to it). ``sampler``:
    ``tpe`` or ``random`` (seeded by ``seed``, default the recipe's). ``pruner``: ``median``,
    ``hyperband``, ``none`` or an ``optuna.pruners.BasePruner``. ``storage``: a SQLAlchemy URL
    (default ``sqlite:///OUT/study.db``; OUT defaults to ``runs/tune-<recipe>``). ``workers``:
    parallel processes on this machine sharing the storage. ``timeout``: seconds after which no
    new trial starts. ``prune_after``: epochs before a trial can be pruned (median default
    ``max(1, epochs // 10)``, Hyperband's ``min_resource``, default 1). Writes OUT/best.yaml, trials.csv, trials.json, plots/ and summary.json.
    """
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise DeepfoundryError(f"trials must be a positive integer, received {trials!r}")
    if not isinstance(workers, int) or workers < 1:
        raise DeepfoundryError(f"workers must be a positive integer, received {workers!r}")
    if timeout is not None and not timeout > 0:
        raise DeepfoundryError(f"timeout must be a positive number of seconds, received {timeout!r}")
    if prune_after is not None and (not isinstance(prune_after, int) or prune_after < 1):
        raise DeepfoundryError(f"prune_after must be a positive number of epochs, received {prune_after!r}")
    if sampler not in SAMPLERS:
        raise DeepfoundryError(f"sampler {sampler!r} is not one of {', '.join(SAMPLERS)}")
    if isinstance(pruner, str) and pruner not in PRUNERS:
        raise DeepfoundryError(f"pruner {pruner!r} is not one of {', '.join(PRUNERS)}")
    overrides = flatten_keys(apply_overrides({}, overrides))  # key=value strings or a dict -> flat dotted keys
    raw = apply_overrides(load_raw(recipe), overrides)
    cfg = validate(raw)
    params = load_space(space)
    check_space(params, raw, "space" if isinstance(space, dict) else f"space file '{space}'")
    name, direction = parse_metric(metric, direction, cfg.trainer.monitor, cfg.trainer.mode)
    out = Path(out) if out is not None else Path("runs") / f"tune-{cfg.name}"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DeepfoundryError(f"cannot create the tuning folder '{out}': {exc.strerror}") from None
    fingerprint = json.dumps({"recipe": str(recipe), "overrides": overrides, "metric": name,
                              "space": sorted((asdict(p) for p in params), key=lambda d: d["key"])},
                             sort_keys=True, default=str)
    s = TuneSettings(str(recipe), overrides, params, name, direction,
                     storage or f"sqlite:///{(out / 'study.db').resolve()}", study_name or cfg.name, str(out), trials,
                     sampler, pruner, cfg.seed if seed is None else seed, cfg.trainer.epochs, timeout, verbose,
                     fingerprint, prune_after)
    started = time.perf_counter()
    if workers == 1:
        work(s)
    else:
        open_study(s)  # create the study (and its tables) once, before the workers race to
        _run_workers(s, workers)
    wall = time.perf_counter() - started
    return collect(open_study(s), s, wall)
