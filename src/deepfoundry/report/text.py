"""Text sections: samples of a language model (``"text_samples"``), and the attention heatmaps and BLEU by
source length of a translation model (``"translation"``)."""
from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt

from ..errors import DeepfoundryError
from ..tasks.translation import bleu_by_length
from .html import embed_figure, html_table
from .sections import SECTIONS

if TYPE_CHECKING:
    from ..api import Run


@SECTIONS.register("text_samples")
def text_samples(run: "Run", plots: Path, data_root: str | None) -> list[tuple[str, str]]:
    """The validation loss / perplexity / bits per character and the samples of ``samples.txt`` (drawn anew
    with the task's sample settings when the file is missing)."""
    path = Path(run.path) / "samples.txt"
    text = path.read_text(encoding="utf-8") if path.exists() else "\n\n".join(run.task.samples())
    metrics = run.results.get("val", {})
    rows = [[k, v] for k, v in metrics.items() if k in ("loss", "perplexity", "bpc")]
    table = html_table(["validation", "value"], rows) if rows else ""
    return [("Samples", f"{table}<pre style='white-space: pre-wrap'>{html.escape(text)}</pre>")]


@SECTIONS.register("translation")
def translation(run: "Run", plots: Path, data_root: str | None) -> list[tuple[str, str]]:
    """Attention heatmaps for a few test sentences, and BLEU by source-length bucket on the test split."""
    task = run.task
    sections = []
    examples = [s for s, _ in task.info.get("examples", [])][:task.heatmaps]
    if getattr(task.model, "uses_attention", False) and examples:
        parts = []
        for n, text in enumerate(examples):
            src_tok, out_tok, weights = task.attention_map(text)
            if weights is None:
                continue
            fig, ax = plt.subplots(figsize=(max(4, 0.35 * len(src_tok) + 2), max(3, 0.3 * len(out_tok) + 1.5)))
            ax.imshow(weights.numpy(), cmap="viridis", aspect="auto", vmin=0.0)
            ax.set_xticks(range(len(src_tok)), src_tok, rotation=90, fontsize=7)
            ax.set_yticks(range(len(out_tok)), out_tok, fontsize=7)
            ax.set_xlabel("source")
            ax.set_ylabel("output")
            fig.tight_layout()
            parts.append(f"<p>{html.escape(text)}</p>" + embed_figure(fig, plots, f"attention_{n}"))
        sections.append(("Attention (source x output)", "".join(parts)))
    try:
        test = run.data(data_root).test
    except DeepfoundryError as exc:
        sections.append(("BLEU by source length", f"<p class='no-data'>test data unavailable: "
                                                    f"{html.escape(str(exc))}</p>"))
        return sections
    rows = bleu_by_length(task, test.sources, test.references, task.bleu_tokenize)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar([r["bucket"] for r in rows], [r["bleu"] for r in rows], color="#4c72b0")
    ax.set_xlabel("source length (tokens with <eos>)")
    ax.set_ylabel("BLEU (greedy)")
    fig.tight_layout()
    table = html_table(["source tokens", "sentences", "BLEU"], [[r["bucket"], r["n"], r["bleu"]] for r in rows])
    note = ("<p>Without attention every source sentence is squeezed into one fixed vector: BLEU falls "
            "faster with length than with attention.</p>")
    sections.append(("BLEU by source length", note + table + embed_figure(fig, plots, "bleu_by_length")))
    return sections
