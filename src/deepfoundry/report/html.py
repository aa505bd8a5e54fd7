"""The page and its pieces: the CSS, figures embedded as base64 PNGs, tables.

Every figure is saved under ``plots/`` and inlined in the page, so ``report.html`` stands alone.
"""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

NO_DATA = "<p class='no-data'>no data</p>"
CSS = ("body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}"
       "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
       "th:first-child,td:first-child{text-align:left}pre{background:#f5f5f5;padding:1em;overflow:auto}"
       "img{max-width:100%}.no-data{color:#888;font-style:italic}")


def embed_figure(fig: plt.Figure, plots_dir: Path, name: str) -> str:
    """Save ``fig`` as ``plots_dir/name.png``, close it, and return an ``<img>`` tag with the PNG inline."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    png = buf.getvalue()
    (plots_dir / f"{name}.png").write_bytes(png)
    return f"<img alt='{html.escape(name)}' src='data:image/png;base64,{base64.b64encode(png).decode('ascii')}'>"


def html_table(header: list[str], rows: list[list[Any]], css_class: str = "", footer: list[Any] | None = None) -> str:
    """An HTML table; floats as ``.4f``; no ``<thead>`` when every header cell is empty.

    >>> html_table(["k", "v"], [["a", 0.5]], "scores")
    "<table class='scores'><thead><tr><th>k</th><th>v</th></tr></thead><tbody><tr><td>a</td><td>0.5000</td>..."
    """
    def cell(v: Any, tag: str = "td") -> str:
        text = f"{v:.4f}" if isinstance(v, float) else str(v)
        return f"<{tag}>{html.escape(text)}</{tag}>"

    head = "<thead><tr>" + "".join(cell(h, "th") for h in header) + "</tr></thead>" if any(header) else ""
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    foot = "<tfoot><tr>" + "".join(cell(v) for v in footer) + "</tr></tfoot>" if footer else ""
    return f"<table class='{css_class}'>{head}<tbody>{body}</tbody>{foot}</table>"


def render_page(title: str, sections: list[tuple[str, str]]) -> str:
    """The whole page: ``title`` and one ``<section>`` per ``(heading, html)``."""
    title = html.escape(title)
    body = "".join(f"<section><h2>{html.escape(name)}</h2>{content}</section>" for name, content in sections)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title><style>{CSS}</style>"
            f"</head><body><h1>{title}</h1>{body}</body></html>\n")
