"""Differentially private training (DP-SGD, Abadi et al. 2016) with opacus.

One DP-SGD step on a Poisson-sampled batch B (each of the N training samples taken with
probability ``q = batch_size / N``):

    g_i      = grad_w loss(x_i, y_i)                        per-sample gradients (opacus GradSampleModule)
    g~_i     = g_i / max(1, ||g_i||_2 / C)                  clipped to norm C = privacy.max_grad_norm
    g        = (sum_i g~_i + N(0, sigma^2 C^2 I)) / (q N)   Gaussian noise, sigma = noise multiplier
    w       <- optimizer step with g                        (DPOptimizer wraps the recipe's optimizer)

The accountant (Renyi DP by default, Mironov et al. 2019) composes the subsampled Gaussian mechanism
over the steps taken and converts to (epsilon, delta)-DP. With ``privacy.epsilon`` the noise multiplier
is calibrated so that ``epochs * ceil(N / batch_size)`` steps spend exactly that budget
(``opacus.accountants.utils.get_noise_multiplier``); with ``privacy.noise_multiplier`` the spent
epsilon is what it is. Every epoch record of ``metrics.jsonl`` carries the epsilon spent so far;
checkpoints carry the accountant's history, so a resumed run reports the same budget.

>>> from deepfoundry import train
>>> run = train("lenet5-mnist-dp", overrides={"data.root": "mnist-t10k"})  # doctest: +SKIP
>>> privacy_summary(run)["epsilon"] <= 3.0                                 # doctest: +SKIP
True
"""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

from ..config import PrivacyConfig
from ..errors import DeepfoundryError

if TYPE_CHECKING:
    from ..engine.contracts import Loader, TrainableTask

EXTRA = "pip install 'deepfoundry[responsible]'"


def _opacus() -> Any:
    try:
        import opacus
    except ImportError:
        raise DeepfoundryError(f"differential privacy needs opacus; install it with {EXTRA}") from None
    return opacus


def make_private_model(model: nn.Module, notice: Callable[[str], None] | None = None) -> nn.Module:
    """The model with the layers DP-SGD cannot use replaced (``opacus.validators.ModuleValidator.fix``):
    BatchNorm mixes samples of a batch (no per-sample gradient) -> GroupNorm; ``nn.LSTM`` -> opacus' DPLSTM.
    ``notice`` gets one line naming what changed. The same function rebuilds a saved private run's model.
    """
    _opacus()
    from opacus.validators import ModuleValidator

    before = [type(m).__name__ for m in model.modules()]
    if not ModuleValidator.validate(model, strict=False):
        return model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fixed = ModuleValidator.fix(model)
    after = [type(m).__name__ for m in fixed.modules()]
    changed = sorted({f"{b} -> {a}" for b, a in zip(before, after) if b != a})
    problems = ModuleValidator.validate(fixed, strict=False)
    if problems:
        raise DeepfoundryError(f"the model cannot be trained with DP-SGD: {str(problems[0]).splitlines()[0]}")
    if notice is not None and changed:
        notice(f"privacy: replaced {', '.join(changed)} (per-sample gradients need layers that see one sample)")
    return fixed


class DPSGD:
    """DP-SGD for the Trainer (it implements :class:`deepfoundry.engine.contracts.PrivacyHook`).

    >>> trainer = Trainer(cfg.trainer, cfg.optim, privacy=DPSGD(cfg.privacy))   # doctest: +SKIP
    """

    def __init__(self, config: PrivacyConfig, planned_epochs: int | None = None) -> None:
        _opacus()
        if not config.enabled:
            raise DeepfoundryError("DPSGD needs an enabled privacy section (privacy.epsilon=... or "
                                   "privacy.noise_multiplier=...)")
        from opacus.accountants import create_accountant

        self.config = config
        self.accountant = create_accountant(config.accountant)
        self.noise_multiplier: float | None = config.noise_multiplier
        self.sample_rate = 0.0
        self.steps_planned = 0
        self.num_samples = 0
        self._module: Any = None
        self._optimizer: Any = None
        self.planned_epochs = planned_epochs  # federated clients: rounds x local epochs, over several fits

    @staticmethod
    def check(task: Any, config: Any = None, loader: Any = None) -> None:
        """Refuse what DP-SGD cannot train: tasks that step their own optimizers (GANs); with the trainer's
        ``config`` gradient accumulation, mixed precision and torch.compile; a ``loader`` without Poisson sampling."""
        if getattr(task, "manual_optimization", False):
            raise DeepfoundryError(f"privacy (DP-SGD) cannot train {type(task).__name__}: it steps its own "
                                   "optimizers (GANs); drop the privacy.* keys")
        if config is not None:
            for key, ok, why in (("trainer.accumulate", config.accumulate == 1, "1"),
                                 ("trainer.precision", config.precision == "32", "32"),
                                 ("trainer.compile", not config.compile, "false")):
                if not ok:
                    raise DeepfoundryError(f"privacy (DP-SGD) needs {key}={why}, received "
                                           f"{getattr(config, key.split('.')[1])!r}")
        if loader is not None and getattr(loader, "use_poisson_sampling", None) is None:
            raise DeepfoundryError(f"privacy (DP-SGD) needs Poisson-sampled batches; this data set's loader "
                                   f"({type(loader).__name__}) cannot draw them")

    def attach(self, task: "TrainableTask", optimizer: torch.optim.Optimizer, loader: "Loader", epochs: int,
               config: Any) -> torch.optim.Optimizer:
        from opacus import GradSampleModule
        from opacus.accountants.utils import get_noise_multiplier
        from opacus.optimizers import DPOptimizer

        self.check(task, config, loader)
        self.sample_rate = float(loader.use_poisson_sampling())
        self.num_samples = int(loader.num_samples)
        self.steps_planned = (self.planned_epochs or epochs) * len(loader)
        c = self.config
        if self.noise_multiplier is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.noise_multiplier = float(get_noise_multiplier(
                    target_epsilon=c.epsilon, target_delta=c.delta, sample_rate=self.sample_rate,
                    steps=self.steps_planned, accountant=c.accountant, epsilon_tolerance=0.005))
        # opacus' hooks fire on the first layer, whose input needs no gradient: torch's notice about it is noise
        warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._module = GradSampleModule(task.model, batch_first=True, loss_reduction="mean")
        task.model = self._module
        expected = max(1, round(self.sample_rate * self.num_samples))
        dp = DPOptimizer(optimizer, noise_multiplier=self.noise_multiplier, max_grad_norm=c.max_grad_norm,
                         expected_batch_size=expected, loss_reduction="mean", secure_mode=c.secure_mode)
        self._optimizer = dp
        dp.attach_step_hook(self.accountant.get_optimizer_hook_fn(sample_rate=self.sample_rate))
        # a draw that took no sample is still a step of the mechanism: the accountant counts it
        loader.on_empty_draw = lambda: self.accountant.step(noise_multiplier=self.noise_multiplier,
                                                            sample_rate=self.sample_rate)
        return dp

    def detach(self, task: "TrainableTask") -> None:
        if self._module is not None:
            task.model = self._module._module
            self._module._close()
            self._module = None

    @property
    def steps(self) -> int:
        return int(sum(n for _, _, n in self.accountant.history))

    def spent(self) -> dict[str, float]:
        """``{"epsilon": spent so far, "delta": delta}`` (epsilon 0 before the first step)."""
        eps = self.accountant.get_epsilon(delta=self.config.delta) if self.accountant.history else 0.0
        return {"epsilon": float(eps), "delta": float(self.config.delta)}

    def summary(self) -> dict[str, Any]:
        """What ``results.json`` keeps under ``privacy``: the budget spent and how it was spent."""
        c = self.config
        return {**self.spent(), "target_epsilon": c.epsilon, "noise_multiplier": self.noise_multiplier,
                "max_grad_norm": c.max_grad_norm, "sampling": "poisson", "sample_rate": self.sample_rate,
                "steps": self.steps, "num_samples": self.num_samples, "accountant": c.accountant,
                "secure_mode": c.secure_mode}

    def state_dict(self) -> dict[str, Any]:
        return {"history": [list(h) for h in self.accountant.history], "noise_multiplier": self.noise_multiplier}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.accountant.history = [tuple(h) for h in state.get("history", [])]
        saved = state.get("noise_multiplier")
        if saved is not None:  # a resume keeps the noise the run started with (not one recalibrated to new epochs)
            self.noise_multiplier = float(saved)
            if self._optimizer is not None:
                self._optimizer.noise_multiplier = float(saved)


def privacy_summary(run_or_results: Any) -> dict[str, Any] | None:
    """The privacy facts of a run (a :class:`~deepfoundry.api.Run` or its ``results`` dict) for a model card:
    ``epsilon`` spent, ``delta``, ``noise_multiplier``, ``max_grad_norm``, ``sampling`` ...; None when the run
    was not trained with DP-SGD. Federated runs give their clients' largest epsilon."""
    results = run_or_results if isinstance(run_or_results, dict) else getattr(run_or_results, "results", {})
    found = results.get("privacy") if isinstance(results, dict) else None
    return dict(found) if isinstance(found, dict) else None
