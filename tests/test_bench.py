"""``deepfoundry bench``: real subprocess runs of a small benchmarks folder that follows the convention of
benchmarks/_common.py (copied from the checkout), the summary files, --list/--only/--json and the error lines."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"

GOOD = '''"""A tiny benchmark: a sum timed two ways."""
import argparse
import time

from _common import summary_row, write_result

p = argparse.ArgumentParser()
p.add_argument("--quick", action="store_true")
a = p.parse_args()
n = 1000 if a.quick else 100000
t = time.perf_counter(); s = sum(range(n)); ours = time.perf_counter() - t
t = time.perf_counter(); s2 = sum(list(range(n))); peer = time.perf_counter() - t
assert s == s2 == n * (n - 1) // 2
print("summed", n)
write_result("good", {"n": n}, quick=a.quick,
             summary=[summary_row("seconds to sum (lower is better)", ours, peer, "sum(list)", "ratio <= 1", None),
                      summary_row("items", n)])
'''

BAD = '''"""A benchmark that fails."""
import sys
print("about to fail")
sys.exit("boom: this benchmark failed")
'''

SKIP = '''"""A benchmark with no quick version."""
import argparse

from _common import write_skipped, write_result

p = argparse.ArgumentParser()
p.add_argument("--quick", action="store_true")
a = p.parse_args()
if a.quick:
    write_skipped("slow", "no quick version: needs a trained classifier run")
else:
    write_result("slow", {}, summary=[])
'''


def cli(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, cwd: Path, *args: str) -> tuple[int, str, str]:
    """``deepfoundry ARGS`` in this process (the benchmarks still run in subprocesses): exit code, stdout, stderr."""
    from deepfoundry.cli import main

    monkeypatch.chdir(cwd)
    monkeypatch.delenv("DEEPFOUNDRY_BENCH_OUT", raising=False)
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out, err = capsys.readouterr()
    return exc.value.code or 0, out, err


def deepfoundry(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    env.pop("DEEPFOUNDRY_BENCH_OUT", None)
    return subprocess.run([sys.executable, "-m", "deepfoundry", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture()
def checkout(tmp_path: Path) -> Path:
    folder = tmp_path / "benchmarks"
    folder.mkdir()
    shutil.copy(ROOT / "benchmarks" / "_common.py", folder / "_common.py")
    (folder / "good.py").write_text(GOOD)
    (folder / "bad.py").write_text(BAD)
    (folder / "slow.py").write_text(SKIP)
    return tmp_path


def test_list_names_every_script_but_the_private_ones(checkout: Path, capsys, monkeypatch) -> None:
    code, out, err = cli(capsys, monkeypatch, checkout, "bench", "--list")
    assert code == 0, err
    lines = out.splitlines()
    assert [ln.split()[0] for ln in lines] == ["bad", "good", "slow"]
    assert "A tiny benchmark: a sum timed two ways." in lines[1]
    code, out, err = cli(capsys, monkeypatch, checkout, "bench", "--list", "--json", "--only", "slow,good")
    assert json.loads(out.splitlines()[-1]) == [
        {"name": "slow", "description": "A benchmark with no quick version."},
        {"name": "good", "description": "A tiny benchmark: a sum timed two ways."}]


def test_quick_suite_records_ok_failed_and_skipped(checkout: Path) -> None:
    out = checkout / "out"
    r = deepfoundry("bench", "--quick", "--out", str(out), "--json", cwd=checkout)
    assert r.returncode == 1, r.stderr  # one benchmark failed: the suite finished, and says so
    assert "1 of 3 benchmarks did not finish: bad" in r.stderr
    summary = json.loads(r.stdout.splitlines()[-1])
    assert summary == json.loads((out / "summary.json").read_text())
    by = {e["name"]: e for e in summary["benchmarks"]}
    assert [e["name"] for e in summary["benchmarks"]] == ["bad", "good", "slow"]
    assert by["bad"]["status"] == "failed" and by["bad"]["rc"] == 1
    assert "boom: this benchmark failed" in by["bad"]["reason"]
    assert "about to fail" in (out / "bad.log").read_text()
    good = by["good"]
    assert good["status"] == "ok" and good["rc"] == 0 and good["quick"] is True and good["cpu_seconds"] > 0
    result = json.loads((out / "good.json").read_text())
    assert result["n"] == 1000 and result["quick"] is True and result["environment"]["cpu_count"] == os.cpu_count()
    row = good["summary"][0]
    assert row["peer_name"] == "sum(list)" and row["ratio"] == pytest.approx(row["ours"] / row["peer"])
    assert good["summary"][1] == {"metric": "items", "ours": 1000.0, "peer": None, "peer_name": None,
                                  "ratio": None, "target": None, "met": None}
    assert "summed 1000" in (out / "good.log").read_text()
    assert by["slow"]["status"] == "skipped" and "needs a trained classifier" in by["slow"]["reason"]
    assert summary["failed"] == ["bad"] and summary["quick"] is True
    assert summary["complete"] is True and summary["pending"] == []
    md = (out / "SUMMARY.md").read_text()
    table = [ln for ln in md.splitlines() if ln.startswith("| ") and not ln.startswith("| ---")]
    assert table[0] == "| benchmark | metric | ours | peer | ratio | target | met | date | machine |"
    assert len(table) == 1 + 1 + 2 + 1  # header, bad, good's two rows, slow
    assert any(ln.startswith("| good (quick) | seconds to sum") and "(sum(list))" in ln for ln in table)
    assert any(ln.startswith("| slow (quick) | skipped: no quick version") for ln in table)
    assert not (checkout / "benchmarks" / "results").exists()  # --out took everything


def test_only_runs_the_named_ones_into_the_default_folder(checkout: Path, capsys, monkeypatch) -> None:
    code, out, err = cli(capsys, monkeypatch, checkout, "bench", "--only", "good")
    assert code == 0, err
    results = checkout / "benchmarks" / "results"
    assert sorted(p.name for p in results.iterdir()) == ["SUMMARY.md", "good.json", "good.log", "summary.json"]
    assert json.loads((results / "good.json").read_text())["n"] == 100000  # not quick
    assert "| good | seconds to sum" in out


@pytest.mark.parametrize("args, message", [
    (["--only", "good,nope"], "error: unknown benchmark 'nope' in --only; available: bad, good, slow"),
    (["--dir", "elsewhere"], "error: no benchmarks folder at 'elsewhere'"),
])
def test_bad_input_is_one_error_line(checkout: Path, args: list[str], message: str, capsys, monkeypatch) -> None:
    code, out, err = cli(capsys, monkeypatch, checkout, "bench", *args)
    assert code == 2
    assert err.startswith(message) and len(err.strip().splitlines()) == 1


def test_no_benchmarks_folder_in_the_current_directory(tmp_path: Path) -> None:
    r = deepfoundry("bench", "--quick", cwd=tmp_path)  # the real console entry point: one line, exit 2
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: no benchmarks folder at 'benchmarks' (run from a checkout that has benchmarks/, or pass --dir DIR)"]


def test_a_timeout_kills_the_script_and_is_recorded(checkout: Path, capsys, monkeypatch) -> None:
    (checkout / "benchmarks" / "hang.py").write_text('"""Sleeps."""\nimport time\ntime.sleep(60)\n')
    code, out, err = cli(capsys, monkeypatch, checkout, "bench", "--only", "hang", "--timeout", "2", "--out",
                         str(checkout / "o"), "--json")
    assert code == 1
    entry = json.loads(out.splitlines()[-1])["benchmarks"][0]
    assert entry["status"] == "timeout" and entry["seconds"] < 30 and "timed out after 2 s" in entry["reason"]


def test_quick_without_out_keeps_away_from_full_results(checkout: Path, capsys, monkeypatch) -> None:
    (checkout / "elsewhere").mkdir()  # --dir relative to a current directory that is not the checkout
    code, out, err = cli(capsys, monkeypatch, checkout / "elsewhere", "bench", "--quick", "--only", "good",
                         "--dir", "../benchmarks")
    assert code == 0, err
    results = checkout / "benchmarks" / "results"
    assert sorted(p.name for p in results.iterdir()) == ["quick"]
    assert json.loads((results / "quick" / "good.json").read_text())["quick"] is True


def test_the_summary_is_written_after_every_benchmark(checkout: Path) -> None:
    from deepfoundry.bench import run_suite

    seen = []

    def progress(entry: dict) -> None:  # called once the entry is in summary.json
        summary = json.loads((checkout / "o" / "summary.json").read_text())
        seen.append((entry["name"], summary["complete"], summary["pending"]))

    run_suite(checkout / "benchmarks", ["bad", "bad"], checkout / "o", progress=progress)
    assert seen == [("bad", False, ["bad"]), ("bad", True, [])]
    assert "Incomplete" not in (checkout / "o" / "SUMMARY.md").read_text()
