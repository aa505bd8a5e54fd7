"""``model_card.md``: what is known about a run, from measured facts only (no placeholders).

Every ``train`` (and ``federate``) writes the card; ``audit`` and ``explain`` rewrite it with what they
measured; ``export`` copies it into bundles. The card is the title and the recipe's description, then one
Markdown section per function of :data:`CARD_SECTIONS` (``fn(run) -> (title, markdown)``, or ``None`` when
the run has no facts for it), after Mitchell et al. (2019), "Model Cards for Model Reporting":

intended use, model, data, metrics, fairness (per group, from ``audit``), privacy (the DP-SGD budget
spent), federated training, explanations (from ``explain``), training compute (wall time, device and
FLOPs: one training step counted by ``FlopCounterMode`` x the steps run), limitations, software.

>>> from deepfoundry import load_run
>>> write_model_card(load_run("runs/lenet5-digits"))
PosixPath('runs/lenet5-digits/model_card.md')
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..engine.checkpoint import atomic_write

if TYPE_CHECKING:
    from ..api import Run

CardSection = Callable[["Run"], "tuple[str, str] | None"]


def _cell(v: Any) -> str:
    text = f"{v:.4f}" if isinstance(v, float) else "" if v is None else str(v)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A GitHub-flavoured Markdown table; floats as ``.4f``.

    >>> print(markdown_table(["metric", "test"], [["accuracy", 0.5]]))
    | metric | test |
    | --- | --- |
    | accuracy | 0.5000 |
    """
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _facts(pairs: list[tuple[str, Any]]) -> str:
    return "\n".join(f"- {name}: {value}" for name, value in pairs if value is not None and value != "")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def wilson_interval(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``p`` measured on ``n`` examples (95% for ``z = 1.96``):
    ``(p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)``.

    >>> [round(x, 3) for x in wilson_interval(0.9, 100)]
    [0.826, 0.945]
    """
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _si(x: float) -> str:
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g} "


# ---------------------------------------------------------------------------------------------- sections
def intended_use_section(run: "Run") -> tuple[str, str]:
    """What the model is for: the recipe's task and input, its outputs (labels), how to call it."""
    info, cfg = run.info, run.config
    labels = info.get("class_names")
    shown = None
    if labels:
        shown = ", ".join(f"`{c}`" for c in labels[:20]) + (f" and {len(labels) - 20} more" if len(labels) > 20 else "")
    facts = [("task", f"`{cfg.task.name}` ({info.get('task_type', run.task.family)})"),
             ("input", info.get("input_kind") and f"{info['input_kind']}"
              + (f", shape {tuple(info['input_shape'])}" if info.get("input_shape") else "")),
             ("outputs", f"{len(labels)} classes: {shown}" if labels else None),
             ("environment", info.get("env_id")),
             ("trained on", f"`{cfg.data.name}`" + (f" ({info['split_note'].split(':')[0]})"
                                                   if info.get("split_note") else "")),
             ("use", f"`deepfoundry predict {run.path} INPUT...`, `deepfoundry.load_run(path).predict_rows(...)`, "
                     f"or an exported bundle (`deepfoundry export`, `deepfoundry serve`)"),
             ("out of scope", "inputs unlike the training data above (other sources, sizes, populations); "
                              "decisions about people without the fairness audit below")]
    return "Intended use", _facts(facts)


def model_section(run: "Run") -> tuple[str, str]:
    """Registry name, task, parameter count and the builder's arguments."""
    m = run.meta["model"]
    params = sum(p.numel() for p in run.model.parameters())
    kwargs = ", ".join(f"{k}={v!r}" for k, v in m.get("kwargs", {}).items())
    return "Model", _facts([("architecture", f"`{m['name']}`"), ("task", f"`{run.config.task.name}`"),
                            ("parameters", f"{params:,}"), ("arguments", kwargs or None)])


def data_section(run: "Run") -> tuple[str, str]:
    """Data set name, split sizes (where the data layer recorded them) and how the splits were made."""
    info = run.info
    sizes = [(f"{split} examples", info.get(f"num_{split}")) for split in ("train", "val", "test")]
    facts = [("dataset", f"`{run.config.data.name}`"), ("environment", info.get("env_id")), *sizes,
             ("split", info.get("split_note"))]
    return "Data", _facts(facts)


def metrics_section(run: "Run") -> tuple[str, str] | None:
    """Every scalar metric of the final evaluation, one column per split (``results.json``)."""
    res = run.results
    splits = [s for s in ("val", "test", "eval") if isinstance(res.get(s), dict) and res[s]]
    names = list(dict.fromkeys(k for s in splits for k, v in res[s].items()
                               if isinstance(v, (int, float)) and not isinstance(v, bool)))
    if not names:
        return None
    rows = [[k] + [res[s].get(k, "") for s in splits] for k in names]
    return "Metrics", markdown_table(["metric", *splits], rows)


def fairness_section(run: "Run") -> tuple[str, str] | None:
    """Per-group metrics and the fairness gaps from ``deepfoundry audit`` (before and after mitigation)."""
    from .fairness import fairness_summary

    s = fairness_summary(run)
    if s is None:
        return None
    before, after = s.get("unmitigated") or {}, s.get("mitigated")
    keys = ["accuracy", "demographic_parity_difference", "demographic_parity_ratio", "equalized_odds_difference"]
    header = ["measure", "model"] + ([f"mitigated ({after.get('method')})"] if after else [])
    rows = [[k.replace("_", " "), before.get(k)] + ([after.get(k)] if after else []) for k in keys]
    parts = [f"Audited on the {s.get('split') or 'test'} split by {', '.join(s.get('sensitive') or [])} "
             f"(`deepfoundry audit`):", markdown_table(header, rows)]
    groups = before.get("groups") or []
    if groups:
        cols = ["count", "selection_rate", "accuracy", "tpr", "fpr"]
        parts.append(markdown_table(["group", *cols], [[_group(g), *[g.get(c) for c in cols]] for g in groups]))
    if s.get("plot"):
        parts.append(f"![per-group metrics]({_relative(run, s['plot'])})")
    return "Fairness", "\n\n".join(parts)


def _group(row: dict[str, Any]) -> str:
    group = row.get("group")
    if isinstance(group, dict):
        return ", ".join(str(v) for v in group.values())
    return str(group)


def privacy_section(run: "Run") -> tuple[str, str] | None:
    """The differential-privacy budget spent by DP-SGD (``privacy.*``)."""
    from .privacy import privacy_summary

    s = privacy_summary(run)
    if not s:
        return None
    facts = [(k.replace("_", " "), f"{v:.4g}" if isinstance(v, float) else v) for k, v in s.items()
             if not isinstance(v, (dict, list))]
    return "Privacy", "Trained with DP-SGD (opacus; RDP accountant):\n\n" + _facts(facts)


def federated_section(run: "Run") -> tuple[str, str] | None:
    """Clients, rounds, partition and strategy of a ``deepfoundry federate`` run, and its round curve."""
    from .federated import federated_summary

    s = federated_summary(run)
    if not s:
        return None
    facts = [(k.replace("_", " "), v) for k, v in s.items() if not isinstance(v, (dict, list))]
    sizes = s.get("client_sizes")
    if isinstance(sizes, list):
        facts.append(("client examples", ", ".join(str(n) for n in sizes)))
    rounds = s.get("rounds_val") or []
    text = _facts(facts)
    if rounds:
        cols = [c for c in ("val_accuracy", "val_loss", "epsilon") if any(c in r for r in rounds)]
        text += "\n\n" + markdown_table(["round", *cols], [[r.get("round"), *[r.get(c) for c in cols]]
                                                          for r in rounds])
    return "Federated training", text


def explanations_section(run: "Run") -> tuple[str, str] | None:
    """What ``deepfoundry explain`` computed: methods, IG's completeness error, the sanity check, images."""
    from .explain import explanation_summary

    s = explanation_summary(run)
    if not s:
        return None
    facts = [("methods", ", ".join(s.get("methods") or [s.get("method")])),
             ("last run", f"{s.get('method')} on {len(s.get('inputs') or [])} input(s)"),
             ("integrated-gradients completeness error (relative, worst input)",
              f"{s['completeness_error']:.2e}" if _number(s.get("completeness_error")) else None)]
    sanity = s.get("sanity") or []
    if sanity:
        last = sanity[-1]
        facts.append(("sanity check (cascading randomisation)",
                      f"Spearman rank correlation {last.get('spearman'):.3f} with every layer randomised"
                      if _number(last.get("spearman")) else "run"))
    images = [f for f in s.get("files") or [] if str(f).endswith(".png")][:4]
    text = _facts(facts)
    if images:
        text += "\n\n" + "\n".join(f"![{Path(f).stem}]({_relative(run, f)})" for f in images)
    return "Explanations", text


def compute_section(run: "Run") -> tuple[str, str] | None:
    """Epochs (or environment steps), wall time, training time, device, seed, and the training FLOPs:
    one step counted by ``torch.utils.flop_counter.FlopCounterMode`` times the batches run."""
    res, cfg = run.results, run.config
    if not res:
        return None
    epochs, seconds, train_seconds = res.get("epochs_run"), res.get("seconds"), res.get("train_seconds")
    compute = res.get("compute") or {}
    flops = compute.get("train_flops")
    facts = [("epochs run", f"{epochs} of {cfg.trainer.epochs}" if epochs is not None else None),
             ("environment steps", res.get("env_steps")),
             ("wall time", f"{seconds:.1f} s" if _number(seconds) else None),
             ("training time", f"{train_seconds:.1f} s" if _number(train_seconds) else None),
             ("stop reason", res.get("stop_reason")), ("device", res.get("device")), ("seed", cfg.seed),
             ("training FLOPs", f"{_si(flops)}FLOP ({_si(compute['flops_per_batch'])}FLOP per batch x "
                                f"{compute['batches']:,} batches; matrix products, convolutions and attention "
                                f"counted by FlopCounterMode)" if _number(flops) else None)]
    return "Training compute", _facts(facts)


def limitations_section(run: "Run") -> tuple[str, str] | None:
    """Limits the measurements themselves show: the uncertainty of the test metric from the test set's
    size (a 95% Wilson interval), the training stop, what was not measured (fairness, privacy)."""
    res, info = run.results, run.info
    lines = []
    test = res.get("test") if isinstance(res.get("test"), dict) else {}
    n = info.get("num_test")
    if _number(test.get("accuracy")) and isinstance(n, int) and n > 0:
        lo, hi = wilson_interval(float(test["accuracy"]), n)
        lines.append(f"Test accuracy {test['accuracy']:.4f} is measured on {n:,} examples: its 95% interval is "
                     f"[{lo:.4f}, {hi:.4f}]; other data may differ more.")
    elif isinstance(n, int) and n > 0:
        lines.append(f"Test metrics are measured on {n:,} examples of `{run.config.data.name}` only.")
    if res.get("stop_reason") and res.get("stop_reason") not in ("max_epochs", "completed"):
        lines.append(f"Training stopped early ({res['stop_reason']}).")
    from .fairness import fairness_summary
    from .privacy import privacy_summary

    fair = fairness_summary(run)
    if fair is None:
        lines.append("Not audited for fairness across groups of people (`deepfoundry audit RUN --sensitive COL`).")
    else:
        gap = (fair.get("unmitigated") or {}).get("demographic_parity_difference")
        if _number(gap):
            lines.append(f"Selection rates differ across {', '.join(fair.get('sensitive') or [])} groups by "
                         f"{gap:.3f} (demographic parity difference) before mitigation.")
    if privacy_summary(run) is None:
        lines.append("Trained without differential privacy: the weights may reveal facts about training "
                     "examples (membership inference).")
    return ("Limitations", "\n".join(f"- {line}" for line in lines)) if lines else None


def software_section(run: "Run") -> tuple[str, str] | None:
    """The deepfoundry and torch versions that trained the run (``model.json``)."""
    facts = [("deepfoundry", run.meta.get("deepfoundry_version")), ("torch", run.meta.get("torch_version"))]
    return ("Software", _facts(facts)) if any(v for _, v in facts) else None


def _relative(run: "Run", path: str | Path) -> str:
    return os.path.relpath(Path(path), run.path)


CARD_SECTIONS: list[CardSection] = [intended_use_section, model_section, data_section, metrics_section,
                                    fairness_section, privacy_section, federated_section, explanations_section,
                                    compute_section, limitations_section, software_section]


def model_card(run: "Run") -> str:
    """The card's Markdown text."""
    parts = [f"# Model card: {run.config.name}"]
    if run.config.description:
        parts.append(run.config.description)
    for section in CARD_SECTIONS:
        built = section(run)
        if built is not None and built[1]:
            parts.append(f"## {built[0]}\n\n{built[1]}")
    return "\n\n".join(parts) + "\n"


def write_model_card(run: "Run") -> Path:
    """Write ``run.path / "model_card.md"`` (atomically) and return its path."""
    path = run.path / "model_card.md"
    text = model_card(run)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return path
