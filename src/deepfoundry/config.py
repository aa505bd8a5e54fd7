"""Run configuration: pydantic models, YAML recipes, dotted overrides.

A run is described by one :class:`RunConfig`::

    name: lenet5-digits
    seed: 0
    data:    {name: digits, batch_size: 64}
    model:   {name: lenet5, dropout: 0.0}          # extra keys go to the model builder
    task:    {name: classification, label_smoothing: 0.0}
    optim:   {name: adam, lr: 0.001, scheduler: {name: onecycle}}
    trainer: {epochs: 20, device: auto}

Unknown keys and wrong types raise :class:`~deepfoundry.errors.DeepfoundryError` with one line
naming the key, e.g. ``config key 'trainer.epochs': expected an integer, received 'ten'``.
"""
from __future__ import annotations

import copy
import math
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import DeepfoundryError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class _Open(BaseModel):
    """A section whose extra keys are passed to a registered builder (which checks them)."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    def builder_kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class DataConfig(_Open):
    name: str = Field("digits", description="registered dataset name (deepfoundry list datasets)")
    root: str | None = Field(None, description="folder holding a local copy / where downloads go")
    download: bool = Field(False, description="download the standard source into root when it is missing")
    batch_size: int = Field(64, gt=0, description="training batch size")
    eval_batch_size: int = Field(1024, gt=0, description="batch size for validation, test and predict")
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share of the training data held out for validation")
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="share held out for test when the data set has no test split")
    normalize: bool = Field(True, description="standardise inputs with statistics of the training split")
    augment: str | list[Any] | dict[str, Any] | None = Field(
        None, description="training-only augmentation: a preset (light, standard, strong, cifar, mnist; eda for "
                          "text) or a list of {name: RandomRotation, degrees: 10} entries (docs/augmentation.md)")


class ModelConfig(_Open):
    name: str = Field("mlp", description="registered model name (deepfoundry list models)")


class TaskConfig(_Open):
    name: str = Field("classification", description="registered task name")


class _Switch(_Strict):
    """A section with an ``enabled`` switch that setting any other of its keys turns on."""

    @model_validator(mode="before")
    @classmethod
    def _enable_when_configured(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and raw and "enabled" not in raw:
            return {**raw, "enabled": True}
        return raw


class SchedulerConfig(_Strict):
    name: Literal["none", "step", "cosine", "wsd", "onecycle", "plateau"] = Field("none",
                                                                                description="learning-rate schedule")
    warmup_epochs: float = Field(0.0, ge=0.0, description="linear warm-up length in epochs (step, cosine, wsd, none)")
    step_size: int = Field(10, gt=0, description="step: epochs between decays")
    gamma: float = Field(0.1, gt=0.0, description="step/plateau: decay factor")
    patience: int = Field(5, ge=0, description="plateau: epochs without improvement before decaying")
    min_lr: float = Field(0.0, ge=0.0, description="cosine/wsd/plateau: lowest learning rate")
    decay_fraction: float = Field(0.2, gt=0.0, le=1.0, description="wsd: share of the steps spent decaying to min_lr")
    pct_start: float = Field(0.25, gt=0.0, lt=1.0, description="onecycle: share of steps spent warming up")
    div_factor: float = Field(25.0, gt=0.0, description="onecycle: initial lr = lr / div_factor")
    final_div_factor: float = Field(1e4, gt=0.0, description="onecycle: final lr = initial lr / final_div_factor")


class OptimConfig(_Strict):
    name: Literal["sgd", "adam", "adamw", "rmsprop", "adagrad", "muon"] = Field("adam", description="optimizer")
    lr: float = Field(1e-3, gt=0.0, description="(peak) learning rate (muon: of the parameters AdamW steps)")
    muon_lr: float = Field(0.02, gt=0.0, description="muon: (peak) learning rate of the hidden weight matrices")
    muon_momentum: float = Field(0.95, ge=0.0, lt=1.0, description="muon: Nesterov momentum of the hidden matrices")
    weight_decay: float = Field(0.0, ge=0.0, description="L2 penalty (decoupled for adamw)")
    momentum: float = Field(0.0, ge=0.0, lt=1.0, description="sgd/rmsprop momentum")
    nesterov: bool = Field(False, description="sgd: Nesterov momentum")
    betas: tuple[float, float] = Field((0.9, 0.999), description="adam/adamw/muon betas (muon: of its AdamW part)")
    eps: float = Field(1e-8, gt=0.0, description="numerical stabiliser of adaptive optimizers")
    fused: bool = Field(False, description="adam/adamw: one fused kernel per step (same update, less overhead)")
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)


class EarlyStoppingConfig(_Switch):
    """Setting any key but ``enabled`` (``trainer.early_stopping.patience=3``) switches it on."""

    enabled: bool = Field(False, description="stop when the monitored metric stops improving")
    monitor: str | None = Field(None, description="metric to watch (default trainer.monitor), e.g. val_loss")
    mode: Literal["min", "max"] | None = Field(None, description="min or max (default trainer.mode)")
    patience: int = Field(5, ge=1, description="epochs without improvement before stopping")
    min_delta: float = Field(0.0, ge=0.0, description="smallest change that counts as an improvement")
    restore_best: bool = Field(True, description="when it stops, put back the weights of the best epoch")
    also: str | None = Field(None, description="a second metric (e.g. val_accuracy with monitor val_loss): an epoch "
                                               "as good as the best of either resets the patience, the kept weights "
                                               "are the last epoch as good as the best of both (Velickovic et al.'s GAT)")
    also_mode: Literal["min", "max"] | None = Field(None, description="min or max for also (default: the opposite "
                                                                      "of mode)")


class TrainerConfig(_Strict):
    epochs: int = Field(10, ge=1, description="number of epochs")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps")
    precision: Literal["32", "bf16", "fp16", "auto"] = Field(
        "32", description="mixed precision (bf16/fp16 autocast); auto: bf16 where the device multiplies in it "
                          "natively (Ampere+ GPUs, CPUs with AVX512-BF16/AMX), else 32")
    compile: bool = Field(False, description="wrap the model in torch.compile")
    channels_last: bool = Field(False, description="NHWC memory format for conv nets")
    grad_clip: float | None = Field(None, gt=0.0, description="clip the global gradient norm to this value")
    accumulate: int = Field(1, ge=1, description="gradient accumulation: batches per optimizer step")
    monitor: str = Field("val_loss", description="metric that picks the best checkpoint and drives early stopping")
    mode: Literal["min", "max"] = Field("min", description="whether the monitored metric should go down or up")
    restore_best: bool = Field(True, description="the run's final weights are the best checkpoint's")
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    checkpoint_every_steps: int | None = Field(None, gt=0, description="also write checkpoints/last every N steps")
    log_every_steps: int = Field(50, gt=0, description="steps between step-level log records and NaN checks on accelerators")
    divergence: Literal["warn", "stop", "off"] = Field(
        "warn", description="a finite blow-up (loss above divergence_factor x its running median): warn once, "
                            "stop or off")
    divergence_factor: float = Field(1e3, gt=1.0, description="how many times its running median the loss may reach "
                                                              "before it counts as diverged")
    grad_norms: bool = Field(False, description="log per-layer gradient norms (vanishing/exploding gradients)")
    tensorboard: bool = Field(True, description="write TensorBoard event files into the run directory")
    mlflow: bool = Field(False, description="also log to MLflow: config as params, records as metrics, the run "
                                            "directory as artifacts (the track extra; docs/trainer.md)")
    mlflow_uri: str | None = Field(None, description="MLflow tracking URI (setting it switches trainer.mlflow on; "
                                                     "default sqlite:///<cwd>/mlruns/mlflow.db)")
    progress: bool = Field(True, description="show a progress bar")
    report: bool = Field(True, description="write report.html and model_card.md into the run directory at the end")
    deterministic: bool = Field(False, description="torch.use_deterministic_algorithms(True)")
    threads: int | None = Field(None, gt=0, description="CPU threads for torch (default: torch's choice)")
    distributed: Literal["ddp", "fsdp"] = Field("ddp", description="under torchrun: DistributedDataParallel or "
                                                                   "FSDP (fully_shard) (docs/distributed.md)")

    @model_validator(mode="before")
    @classmethod
    def _divergence_off_is_not_false(cls, raw: Any) -> Any:
        """YAML reads a bare ``off`` as false: ``trainer.divergence: off`` (or ``=off``) means ``"off"``."""
        if isinstance(raw, dict) and raw.get("divergence") is False:
            return {**raw, "divergence": "off"}
        return raw

    @model_validator(mode="before")
    @classmethod
    def _precision_as_text(cls, raw: Any) -> Any:
        """YAML reads ``precision: 32`` (or ``--set trainer.precision=32``) as the number 32: it means ``"32"``."""
        value = raw.get("precision") if isinstance(raw, dict) else None
        if isinstance(value, int) and not isinstance(value, bool):
            return {**raw, "precision": str(value)}
        return raw

    @model_validator(mode="before")
    @classmethod
    def _mlflow_uri_switches_on(cls, raw: Any) -> Any:
        """``trainer.mlflow_uri=URI`` alone means ``trainer.mlflow: true``; with an explicit false it is refused."""
        if isinstance(raw, dict) and raw.get("mlflow_uri") not in (None, ""):
            if raw.get("mlflow") is False or str(raw.get("mlflow")).lower() == "false":
                raise ValueError("trainer.mlflow_uri is set but trainer.mlflow is false; drop trainer.mlflow_uri "
                                 "or set trainer.mlflow=true")
            return {**raw, "mlflow": True}
        return raw


class FairnessConfig(_Strict):
    """Fairness mitigation while training (docs/responsible.md); the audit itself is 'deepfoundry audit'."""

    sensitive: list[str] = Field(default_factory=list, description="sensitive columns of the raw rows (tabular "
                                                                   "runs), e.g. [sex] or [sex, race]")
    reweigh: bool = Field(False, description="Kamiran-Calders reweighing: loss weight P(g)P(y)/P(g,y) per "
                                             "training sample (needs fairness.sensitive)")

    @model_validator(mode="before")
    @classmethod
    def _comma_separated(cls, raw: Any) -> Any:
        """``--set fairness.sensitive=sex,race`` (a string) means the list ``[sex, race]``."""
        if isinstance(raw, dict) and isinstance(raw.get("sensitive"), str):
            return {**raw, "sensitive": [s.strip() for s in raw["sensitive"].split(",") if s.strip()]}
        return raw

    @model_validator(mode="after")
    def _reweigh_needs_columns(self) -> "FairnessConfig":
        if self.reweigh and not self.sensitive:
            raise ValueError("fairness.reweigh needs fairness.sensitive, e.g. --set fairness.sensitive=[sex]")
        return self


class PrivacyConfig(_Switch):
    """DP-SGD (docs/privacy.md). Setting any key but ``enabled`` (``privacy.epsilon=3``) switches it on."""

    enabled: bool = Field(False, description="train with DP-SGD: per-sample clipping, Gaussian noise, Poisson batches")
    epsilon: float | None = Field(None, gt=0.0, description="privacy budget to spend by the last epoch (the noise "
                                                            "multiplier is calibrated to it)")
    delta: float = Field(1e-5, gt=0.0, lt=1.0, description="delta of (epsilon, delta)-DP; well below 1/N")
    noise_multiplier: float | None = Field(None, gt=0.0, description="noise std / max_grad_norm, instead of epsilon "
                                                                     "(epsilon is then what it spends)")
    max_grad_norm: float = Field(1.0, gt=0.0, description="per-sample gradient clipping bound C")
    accountant: Literal["rdp", "prv", "gdp"] = Field("rdp", description="privacy accountant (opacus)")
    secure_mode: bool = Field(False, description="cryptographically safe noise (opacus secure_mode; slower, "
                                                 "not reproducible)")

    @model_validator(mode="after")
    def _one_budget(self) -> "PrivacyConfig":
        if self.enabled and (self.epsilon is None) == (self.noise_multiplier is None):
            raise ValueError("privacy needs exactly one of privacy.epsilon (a budget) or privacy.noise_multiplier")
        return self


class RunConfig(_Strict):
    name: str = Field("run", description="recipe or run name")
    description: str = Field("", description="one line shown by 'deepfoundry list recipes'")
    seed: int = Field(0, ge=0, lt=2**32, description="seed of every random generator (0 to 2**32 - 1)")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    task: TaskConfig = Field(default_factory=TaskConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    fairness: FairnessConfig = Field(default_factory=FairnessConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)


def _shown(key: Any) -> str:
    """A key as an error message shows it: on one line (``\\n`` and other control characters escaped)."""
    text = str(key)
    return text if text.isprintable() else repr(text)[1:-1]


def _format_validation_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    key = _shown(".".join(str(p) for p in err["loc"]))
    if err["type"] == "extra_forbidden":
        return f"unknown config key '{key}'"
    received = repr(err.get("input"))
    if len(received) > 80:
        received = received[:77] + "..."
    return f"config key '{key}': {err['msg'][0].lower()}{err['msg'][1:]}, received {received}"


def _check_values(tree: Any, prefix: str = "", inside: tuple[int, ...] = ()) -> None:
    """Refuse NaN and infinite numbers anywhere in a raw config (builder keys included; nothing takes them and a
    YAML round trip would not keep them) and values that contain themselves (a YAML alias inside its anchor)."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for k, v in items:
        key = f"{prefix}{_shown(k)}"
        if isinstance(v, float) and not math.isfinite(v):
            raise DeepfoundryError(f"config key '{key}': expected a finite number, received {v!r}")
        if isinstance(v, (dict, list)):
            if id(v) in inside:
                raise DeepfoundryError(f"config key '{key}' contains itself (a YAML alias inside its own anchor)")
            _check_values(v, f"{key}.", (*inside, id(v)))


def validate(raw: dict[str, Any]) -> RunConfig:
    """A raw mapping -> :class:`RunConfig`; unknown keys, wrong types and non-finite numbers are one-line errors."""
    if not isinstance(raw, dict):
        raise DeepfoundryError(f"a config must be a mapping, received {type(raw).__name__}")
    _check_values(raw, inside=(id(raw),))
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise DeepfoundryError(_format_validation_error(exc)) from None


def recipe_names() -> list[str]:
    folder = resources.files("deepfoundry") / "recipes"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def recipe_path(name: str) -> Path:
    return Path(str(resources.files("deepfoundry") / "recipes" / f"{name}.yaml"))


def _kind(value: Any) -> str:
    """What a YAML value is, in words: ``a list``, ``a string``, ``a number`` ..."""
    kinds = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean"}
    return kinds.get(type(value), f"a {type(value).__name__}")


def _yaml_error(exc: yaml.YAMLError, text: str) -> str:
    """Where a YAML error is (line and column, from 1) and what it is, in one line."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if isinstance(exc, yaml.MarkedYAMLError):
        what = " ".join(str(p) for p in (exc.problem, exc.context and f"({exc.context})") if p)
    elif isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow (control characters)
        before = text[:exc.position]
        line, column = before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1
        char = chr(exc.character) if isinstance(exc.character, int) else str(exc.character)
        return f"at line {line}, column {column}: character {char!r} is not allowed in YAML"
    else:
        what = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    where = f"at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "in it"
    return f"{where}: {' '.join(what.split())}"


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping at the top of a YAML file. A directory, a missing, unreadable, empty or invalid file, or
    one whose top level is not a mapping is a one-line :class:`DeepfoundryError` (with the line and column
    of a syntax error)."""
    path, what = Path(path), "config file"
    if path.is_dir():
        raise DeepfoundryError(f"{what} '{path}' is a directory, not a YAML file")
    if not path.is_file():
        raise DeepfoundryError(f"{what} '{path}' does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start:exc.start + 1]
        raise DeepfoundryError(f"{what} '{path}' is not UTF-8 text (byte {exc.start} is {byte!r})") from None
    except OSError as exc:
        raise DeepfoundryError(f"cannot read {what} '{path}': {exc.strerror or exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DeepfoundryError(f"{what} '{path}' is not valid YAML {_yaml_error(exc, text)}") from None
    except (ValueError, OverflowError) as exc:  # a value YAML recognises but Python cannot build: 2001-02-30
        raise DeepfoundryError(f"{what} '{path}' holds a value that cannot be read: {exc}") from None
    except RecursionError:
        raise DeepfoundryError(f"{what} '{path}' nests lists or mappings too deeply to be a config") from None
    if raw is None:
        raise DeepfoundryError(f"{what} '{path}' is empty; a config needs at least the keys it changes "
                               f"(see 'deepfoundry list recipes' for complete ones)")
    if not isinstance(raw, dict):
        raise DeepfoundryError(f"{what} '{path}' must be a mapping of config keys (name: ..., data: {{...}}, ...), "
                               f"received {_kind(raw)}")
    return raw


def load_raw(recipe_or_path: str | Path) -> dict[str, Any]:
    """The raw mapping of a recipe name or a YAML file."""
    text = str(recipe_or_path)
    if text.endswith((".yaml", ".yml")) or Path(text).is_file():
        return read_yaml(text)
    if text in recipe_names():
        raw = read_yaml(recipe_path(text))
        raw.setdefault("name", text)
        return raw
    if Path(text).is_dir():
        raise DeepfoundryError(f"'{text}' is a directory, not a recipe name or a config file (CONFIG.yaml)")
    import difflib

    close = difflib.get_close_matches(text, recipe_names(), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else "; see 'deepfoundry list recipes'"
    raise DeepfoundryError(f"recipe {text!r} is not a recipe name or a config file{hint}")


def parse_value(text: str) -> Any:
    """YAML scalar parsing of an override value: ``3`` -> 3, ``1e-3`` -> 0.001, ``true`` -> True."""
    try:
        value = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError, OverflowError, RecursionError):  # ValueError: a date like 2001-02-30
        return text
    if isinstance(value, str):
        try:  # YAML 1.1 reads '1e-3' as a string
            return float(value)
        except ValueError:
            return value
    return value


def flatten_keys(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 0.1}}`` -> ``{"optim.lr": 0.1}`` (empty dicts stay values)."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out.update(flatten_keys(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any] | list[str] | None) -> dict[str, Any]:
    """Set dotted keys (``optim.lr=0.01``) in a copy of ``raw``. Strings in a list are ``key=value``."""
    if not isinstance(raw, dict):
        raise DeepfoundryError(f"a config must be a mapping, received {type(raw).__name__}")
    out = copy.deepcopy(raw)
    if not overrides:
        return out
    if isinstance(overrides, list):
        pairs = {}
        for item in overrides:
            if "=" not in item:
                raise DeepfoundryError(f"override {item!r} must look like key=value, e.g. optim.lr=0.01")
            k, v = item.split("=", 1)
            pairs[k.strip()] = parse_value(v.strip())
        overrides = pairs
    for dotted, value in overrides.items():
        node = out
        parts = str(dotted).split(".")
        if not all(parts):
            raise DeepfoundryError(f"config key {dotted!r} has an empty part; keys look like optim.lr")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise DeepfoundryError(f"config key '{_shown(dotted)}': '{_shown(part)}' is a value, not a section")
            node = child
        node[parts[-1]] = value
    return out


def load_config(recipe_or_path: str | Path, overrides: dict[str, Any] | list[str] | None = None) -> RunConfig:
    """Recipe name or YAML path + dotted overrides -> validated :class:`RunConfig`."""
    return validate(apply_overrides(load_raw(recipe_or_path), overrides))


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
