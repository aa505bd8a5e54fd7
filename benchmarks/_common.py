"""Shared bits of the benchmarks: where results go, the summary rows, and a plain table printer.

The result convention (read by ``deepfoundry bench``): every ``benchmarks/<name>.py`` runs alone, accepts
``--quick`` (a small version, the whole suite in <= 15 minutes on 2 cores) and writes ``<name>.json``
through :func:`write_result` into the results folder: ``$DEEPFOUNDRY_BENCH_OUT`` when set, else
``benchmarks/results/`` (a quick run without the variable goes to ``benchmarks/results/quick/``, so
it never overwrites a full result). The JSON has top-level ``"quick": bool`` and ``"summary"``: one
:func:`summary_row` per headline figure.
"""
from __future__ import annotations

import json
import math
import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
OUT_ENV = "DEEPFOUNDRY_BENCH_OUT"
RESULTS = Path(os.environ[OUT_ENV]) if os.environ.get(OUT_ENV) else HERE / "results"
SHARED = Path(os.environ.get("DEEPFOUNDRY_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def results_dir(quick: bool = False) -> Path:
    """The folder results go to: ``$DEEPFOUNDRY_BENCH_OUT``, else ``results/`` (``results/quick/`` if quick)."""
    if os.environ.get(OUT_ENV):
        return RESULTS
    return RESULTS / "quick" if quick else RESULTS


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "machine": platform.machine(), "cpu": cpu_name(), "python": platform.python_version(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def summary_row(metric: str, ours: float | None, peer: float | None = None, peer_name: str | None = None,
                target: str | None = None, met: bool | None = None, ratio: float | None = None) -> dict[str, Any]:
    """One headline figure: ``ratio = ours / peer`` unless given (e.g. a time ratio of a throughput).

    ``metric`` names the unit and direction (``"samples/s"``, ``"s to 98% (lower is better)"``);
    ``target`` is the goal in words (``"ratio <= 1.03"``) and ``met`` whether this run reached it
    (None: no target or not measurable in this run).
    """
    def num(v: Any) -> float | None:
        return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else float(v)

    ours, peer = num(ours), num(peer)
    if ratio is None and ours is not None and peer:
        ratio = ours / peer
    return {"metric": metric, "ours": ours, "peer": peer, "peer_name": peer_name, "ratio": num(ratio),
            "target": target, "met": None if met is None else bool(met)}


def write_result(name: str, result: dict[str, Any], *, quick: bool | None = None,
                 summary: list[dict[str, Any]] | None = None) -> Path:
    """Write ``<results>/<name>.json`` atomically with the environment, ``quick`` and ``summary``.

    ``quick`` and ``summary`` may come as keywords or inside ``result``; absent, they are ``False``
    and ``[]`` (a result with no headline figure)."""
    body = dict(result)
    if quick is not None:
        body["quick"] = bool(quick)
    if summary is not None:
        body["summary"] = summary
    body.setdefault("quick", False)
    body.setdefault("summary", [])
    folder = results_dir(body["quick"])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps({**body, "environment": environment()}, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path


def write_skipped(name: str, reason: str, *, quick: bool = True) -> Path:
    """Record that this benchmark did not run (e.g. no quick version), with the reason, for the summary."""
    return write_result(name, {"skipped": reason}, quick=quick, summary=[])


def print_table(rows: list[dict[str, Any]]) -> None:
    keys = list(rows[0])
    width = {k: max(len(k), *(len(_fmt(r[k])) for r in rows)) for k in keys}
    print("  ".join(k.ljust(width[k]) for k in keys))
    for r in rows:
        print("  ".join(_fmt(r[k]).ljust(width[k]) for k in keys))


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
