"""Run a checkout's benchmark suite (``benchmarks/*.py``) and gather one summary.

Each script still runs alone (``python benchmarks/NAME.py [--quick]``); this module only runs them one
after another in subprocesses of the same Python, with ``$DEEPFOUNDRY_BENCH_OUT`` set to the output
folder, and reads back the ``NAME.json`` each one writes there (the convention of
``benchmarks/_common.py``: top-level ``quick`` and ``summary`` rows of ``metric, ours, peer,
peer_name, ratio, target, met``). A script that fails is recorded with its exit code and log; the
suite goes on. The output folder then holds ``NAME.json`` and ``NAME.log`` per benchmark,
``summary.json`` and ``SUMMARY.md`` (one table: per headline figure ours, the peer, ratio = ours /
peer, target, met, date, machine).

>>> names = discover("benchmarks")                                # doctest: +SKIP
>>> summary = run_suite("benchmarks", names, "/tmp/out", quick=True)  # doctest: +SKIP
"""
from __future__ import annotations

import ast
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from .engine.rundir import write_json
from .errors import DeepfoundryError

OUT_ENV = "DEEPFOUNDRY_BENCH_OUT"


def discover(folder: str | Path) -> list[str]:
    """The benchmark names in ``folder``: every ``*.py`` not starting with ``_``, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DeepfoundryError(f"no benchmarks folder at '{folder}' (run from a checkout that has benchmarks/, "
                               "or pass --dir DIR)")
    names = sorted(p.stem for p in folder.glob("*.py") if not p.name.startswith("_"))
    if not names:
        raise DeepfoundryError(f"no benchmark scripts (*.py) in '{folder}'")
    return names


def select(names: list[str], only: str | None) -> list[str]:
    """``names`` limited to the comma-separated ``only`` (in its order); an unknown name is an error."""
    if not only:
        return names
    wanted = [n.strip().removesuffix(".py") for n in only.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise DeepfoundryError(f"unknown benchmark {', '.join(repr(n) for n in unknown)} in --only; "
                               f"available: {', '.join(names)}")
    if not wanted:
        raise DeepfoundryError("--only names no benchmark; give NAME[,NAME...] (deepfoundry bench --list)")
    return list(dict.fromkeys(wanted))


def describe(folder: str | Path, name: str) -> str:
    """The first line of ``folder/name.py``'s module docstring (read with ``ast``, not imported)."""
    try:
        doc = ast.get_docstring(ast.parse(Path(folder, f"{name}.py").read_text(encoding="utf-8")))
    except (OSError, SyntaxError, ValueError):
        return ""
    return doc.strip().splitlines()[0] if doc else ""


def machine() -> dict[str, Any]:
    """What this suite ran on: CPU model, cores, OS and Python (the scripts add torch and threads)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "machine": platform.machine(), "system": platform.system(),
            "python": platform.python_version()}


def _machine_text(env: dict[str, Any]) -> str:
    text = f"{env.get('cpu') or env.get('machine', '?')}, {env.get('cpu_count', '?')} cores"
    if env.get("threads"):
        text += f", {env['threads']} torch threads"
    return text


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def run_one(folder: Path, name: str, out: Path, *, quick: bool, timeout: float | None) -> dict[str, Any]:
    """Run ``folder/name.py`` in its own process group, log to ``out/name.log``; its entry of summary.json.

    ``seconds`` is its wall time, ``cpu_seconds`` the CPU time of its process tree (user + system).
    ``status`` is ``ok`` (exit 0 and a fresh ``name.json``), ``skipped`` (the script recorded a reason
    for not running, e.g. no quick version), ``failed`` (non-zero exit), ``timeout`` or ``no result``
    (exit 0 but no fresh JSON)."""
    script = (folder / f"{name}.py").resolve()  # absolute: the script runs with the checkout as its cwd
    cmd = [sys.executable, str(script)] + (["--quick"] if quick else [])
    env = {**os.environ, OUT_ENV: str(out), "PYTHONUNBUFFERED": "1"}
    log = out / f"{name}.log"
    result_path = out / f"{name}.json"
    started = time.time()
    t0 = time.perf_counter()
    cpu0 = _children_cpu()
    status = None
    with open(log, "w", encoding="utf-8") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.Popen(cmd, cwd=folder.resolve().parent, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            rc, status = proc.returncode, "timeout"
        except BaseException:  # Ctrl-C / SIGTERM of the suite: take the benchmark's processes down too
            _kill_group(proc)
            raise
    seconds = time.perf_counter() - t0
    entry: dict[str, Any] = {"name": name, "rc": rc, "seconds": round(seconds, 2),
                             "cpu_seconds": round(_children_cpu() - cpu0, 2), "log": log.name,
                             "result": None, "quick": quick, "summary": []}
    fresh = result_path.is_file() and result_path.stat().st_mtime >= started - 1
    if fresh:
        try:
            data = json.loads(result_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            data, status = {}, status or "failed"
            entry["reason"] = f"unreadable {result_path.name}: {exc}"
        entry["result"] = result_path.name
        entry["quick"] = bool(data.get("quick", quick))
        entry["summary"] = [r for r in data.get("summary") or [] if isinstance(r, dict)]
        entry["environment"] = data.get("environment") or {}
        if data.get("skipped"):
            status, entry["reason"] = status or "skipped", str(data["skipped"])
    if status is None:
        status = "failed" if rc != 0 else ("ok" if fresh else "no result")
    if status in ("failed", "timeout") and "reason" not in entry:
        entry["reason"] = (f"timed out after {timeout:g} s" if status == "timeout"
                           else f"exit code {rc}: {_last_line(log)}")
    elif status == "no result":
        entry["reason"] = f"exit 0 but no {result_path.name} written"
    entry["status"] = status
    return entry


def _children_cpu() -> float:
    """User + system CPU seconds of the finished (waited-for) child processes so far: what a benchmark cost
    the machine, whatever else was running (its wall time on a shared machine says little); 0 where the
    ``resource`` module is missing (Windows)."""
    try:
        import resource
    except ImportError:
        return 0.0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _last_line(log: Path) -> str:
    lines = [ln.strip() for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "(no output)"


def run_suite(folder: str | Path, names: list[str], out: str | Path, *, quick: bool = False,
              timeout: float | None = None,
              progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run ``names`` of ``folder`` one after another; write ``summary.json`` and ``SUMMARY.md`` in ``out``.

    Both files are rewritten after every benchmark (``complete`` false until the last one), so a suite
    that is stopped part-way still leaves the summary of what finished."""
    folder, out = Path(folder), Path(out).resolve()  # absolute: the scripts run with the checkout as cwd
    out.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    entries: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    for i, name in enumerate(names):
        entry = run_one(folder, name, out, quick=quick, timeout=timeout)
        entries.append(entry)
        summary = {"started": started, "seconds": round(time.perf_counter() - t0, 2), "quick": quick,
                   "machine": machine(), "folder": str(folder), "complete": i == len(names) - 1,
                   "pending": names[i + 1:], "benchmarks": entries,
                   "failed": [e["name"] for e in entries if e["status"] not in ("ok", "skipped")]}
        write_summary(out, summary)
        if progress:
            progress(entry)
    return summary


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    """``summary.json`` and ``SUMMARY.md`` in ``out``, each written atomically."""
    write_json(out / "summary.json", summary)
    tmp = out / ".SUMMARY.md.tmp"
    tmp.write_text(summary_markdown(summary), encoding="utf-8")
    os.replace(tmp, out / "SUMMARY.md")


def _num(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        if isinstance(v, float) and not math.isfinite(v):
            return str(v)
        return f"{v:.4g}"
    return str(v)


def _cell(v: Any) -> str:
    return _num(v).replace("|", "\\|").replace("\n", " ")


def summary_markdown(summary: dict[str, Any]) -> str:
    """``SUMMARY.md``: one table, one row per headline figure (or per benchmark that failed or skipped)."""
    m = summary["machine"]
    kind = "quick (small sizes: smoke figures, not results)" if summary["quick"] else "full"
    lines = [
        "# Benchmark summary", "",
        f"`deepfoundry bench{' --quick' if summary['quick'] else ''}`, {kind}; started {summary['started']}, "
        f"{summary['seconds']:.0f} s in all, on {_machine_text(m)} ({m['system']}, Python {m['python']}).",
        "ratio = ours / peer in the direction the metric states."
        + (f" Incomplete: not run yet: {', '.join(summary['pending'])}." if summary.get("pending") else ""), "",
        "| benchmark | metric | ours | peer | ratio | target | met | date | machine |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for e in summary["benchmarks"]:
        env = e.get("environment") or {}
        date = str(env.get("date", summary["started"]))[:10]
        where = _machine_text(env) if env else _machine_text(m)
        name = e["name"] + (" (quick)" if e.get("quick") else "")
        if e["status"] != "ok" or not e["summary"]:
            what = {"ok": "no summary rows", "skipped": "skipped"}.get(e["status"], e["status"])
            reason = f": {e['reason']}" if e.get("reason") else ""
            lines.append(f"| {_cell(name)} | {_cell(what + reason)} (log {e['log']}) | – | – | – | – | – | "
                         f"{date} | {_cell(where)} |")
            continue
        for r in e["summary"]:
            peer = _num(r.get("peer"))
            if r.get("peer_name"):
                peer = f"{peer} ({r['peer_name']})" if r.get("peer") is not None else f"– ({r['peer_name']})"
            lines.append("| " + " | ".join(_cell(v) for v in (
                name, r.get("metric"), r.get("ours"), peer, r.get("ratio"), r.get("target"), r.get("met"),
                date, where)) + " |")
    return "\n".join(lines) + "\n"
