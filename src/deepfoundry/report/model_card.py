"""``model_card.md``: what is known about a finished run, as facts only (no placeholders).

The card is the title and the recipe's description, then one Markdown section per function of
:data:`CARD_SECTIONS` (``fn(run) -> (title, markdown)``, or None when it has no facts for this run):
model, data, metrics, training, software. Later parts (fairness, privacy) add their functions to the list.

>>> from deepfoundry import load_run
>>> write_model_card(load_run("runs/lenet5-digits"))
PosixPath('runs/lenet5-digits/model_card.md')
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from ..api import Run

CardSection = Callable[["Run"], "tuple[str, str] | None"]


def _cell(v: Any) -> str:
    text = f"{v:.4f}" if isinstance(v, float) else str(v)
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


def training_section(run: "Run") -> tuple[str, str] | None:
    """Epochs (or environment steps), wall time, training time, stop reason, device, seed."""
    res, cfg = run.results, run.config
    if not res:
        return None
    epochs = res.get("epochs_run")
    seconds = res.get("seconds")
    train_seconds = res.get("train_seconds")
    facts = [("epochs run", f"{epochs} of {cfg.trainer.epochs}" if epochs is not None else None),
             ("environment steps", res.get("env_steps")),
             ("wall time", f"{seconds:.1f} s" if isinstance(seconds, (int, float)) else None),
             ("training time", f"{train_seconds:.1f} s" if isinstance(train_seconds, (int, float)) else None),
             ("stop reason", res.get("stop_reason")), ("device", res.get("device")), ("seed", cfg.seed)]
    return "Training", _facts(facts)


def software_section(run: "Run") -> tuple[str, str] | None:
    """The deepfoundry and torch versions that trained the run (``model.json``)."""
    facts = [("deepfoundry", run.meta.get("deepfoundry_version")), ("torch", run.meta.get("torch_version"))]
    return ("Software", _facts(facts)) if any(v for _, v in facts) else None


CARD_SECTIONS: list[CardSection] = [model_section, data_section, metrics_section, training_section,
                                    software_section]


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
    """Write ``run.path / "model_card.md"`` and return its path."""
    path = run.path / "model_card.md"
    path.write_text(model_card(run), encoding="utf-8")
    return path
