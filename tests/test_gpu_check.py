"""scripts/gpu_check.py without a GPU: the one-line refusal, the matrix, the CPU smoke run of the same code path
(a real recipe in fp32 and bf16, fp16 skipped: it needs CUDA) and the time budget killing the worker."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: run scripts/gpu_check.sh instead")
def test_no_gpu_is_one_line_and_exit_2(gpu_check, capsys, tmp_path):
    assert gpu_check.main(["--out", str(tmp_path / "gpu.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no CUDA GPU here"), err
    assert not (tmp_path / "gpu.json").exists()


def test_matrix_and_bad_names(gpu_check, capsys):
    checks = gpu_check.matrix(["lenet5-digits", "gcn-karate"], ["fp32", "bf16", "fp16", "compile"], "cuda")
    assert [c["name"] for c in checks][:3] == ["lenet5-digits/fp32", "gcn-karate/fp32", "lenet5-digits/bf16"]
    assert len(checks) == 8 and not any("skip" in c for c in checks)
    on_cpu = gpu_check.matrix(["mlp-wine"], ["fp32", "fp16"], "cpu")
    assert "skip" not in on_cpu[0] and "needs CUDA" in on_cpu[1]["skip"]
    assert gpu_check.main(["--dry-run", "--modes", "fp8"]) == 2
    assert "unknown mode or family 'fp8'" in capsys.readouterr().err
    assert gpu_check.main(["--dry-run"]) == 0
    listed = capsys.readouterr().out.split()
    assert len([n for n in listed if "/" in n]) == len(gpu_check.FAMILIES) * 4 + 3  # + torchrun + 2 benchmarks


def test_cpu_smoke_run_writes_the_result(gpu_check, tmp_path, capsys):
    out = tmp_path / "gpu.json"
    code = gpu_check.main(["--device", "cpu", "--steps", "2", "--families", "mlp-wine", "--modes", "fp32,bf16,fp16",
                           "--skip-ddp", "--skip-bench", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    result = json.loads(out.read_text())
    status = {c["name"]: c for c in result["checks"]}
    assert status["mlp-wine/fp32"]["status"] == status["mlp-wine/bf16"]["status"] == "pass"
    assert status["mlp-wine/fp32"]["steps"] >= 2 and status["mlp-wine/fp32"]["device"] == "cpu"
    assert status["mlp-wine/fp16"]["status"] == "skip"
    assert result["counts"] == {"pass": 2, "fail": 0, "timeout": 0, "skip": 1} and result["quick"] is True
    assert result["summary"][0]["met"] is True and result["device"] == "cpu"
    assert "1 skipped" in printed.splitlines()[-1]


def test_the_budget_kills_the_worker_and_says_so(gpu_check, tmp_path):
    out = tmp_path / "gpu.json"
    code = gpu_check.main(["--device", "cpu", "--steps", "2", "--families", "mlp-wine", "--modes", "fp32",
                           "--skip-ddp", "--skip-bench", "--budget", "1", "--out", str(out)])
    check = json.loads(out.read_text())["checks"][0]
    # one second is not enough to import torch: the check was never reached (or is in flight at the kill)
    assert check["status"] in ("skip", "timeout") and "time budget" in check["detail"], check
    assert code == (1 if check["status"] == "timeout" else 0)
