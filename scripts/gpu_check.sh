#!/usr/bin/env bash
# The GPU check (scripts/gpu_check.py): every family's recipe on CUDA in fp32, bf16, fp16 and with torch.compile,
# DDP on one GPU through torchrun, the trainer-overhead and MFU benchmarks; at most 8 minutes on one GPU.
# Writes benchmarks/results/gpu.json. Without a CUDA GPU it prints one error line and exits 2.
# Extra arguments go to gpu_check.py (e.g. --steps 200, --budget 420, --modes fp32,bf16).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
exec timeout --kill-after=10 500 "$PYTHON" scripts/gpu_check.py "$@"
