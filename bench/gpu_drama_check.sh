#!/usr/bin/env bash
# The drama stage's GPU check, one prepared script (run it on a CUDA machine from the repo root):
#   bash bench/gpu_drama_check.sh [OUT_DIR]
# 1. the backend-equality tests, with the mamba-ssm kernel when it is installed (else they skip, said);
# 2. the paper configuration (177 M) for a few hundred bf16 steps of 12 k frames (16 lines of 10 s):
#    step time, peak memory and frames per second, per scan backend available;
# 3. the per-frame step time / memory of the paper config from 5 s to 80 s lines.
# Everything is printed and written under OUT_DIR (default outputs/gpu_drama_check).
set -euo pipefail
OUT=${1:-outputs/gpu_drama_check}
mkdir -p "$OUT"
PY=${PYTHON:-.venv/bin/python}
nvidia-smi | tee "$OUT/nvidia-smi.txt" || true
"$PY" -c "import mamba_ssm; print('mamba-ssm', mamba_ssm.__version__)" 2>&1 | tee "$OUT/mamba_ssm.txt" || true
"$PY" -m pytest -q -rs tests/test_drama_blocks.py -k "scan or mamba or cuda" 2>&1 | tee "$OUT/backend_tests.txt"
"$PY" bench/bench_drama_steps_gpu.py --steps 300 --frames 12000 --out "$OUT/paper_steps.json" 2>&1 | tee "$OUT/paper_steps.txt"
"$PY" bench/bench_drama_step.py --preset base --device cuda --precision bf16 --checkpoint \
    --seconds 5 10 20 40 80 2>&1 | tee "$OUT/paper_per_frame.txt"
