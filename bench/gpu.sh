#!/usr/bin/env bash
# The text benchmark on a CUDA machine: (ref) sentence-transformers, (a) direct
# forward, (b) AsyncEngine, (c) gRPC server, all with --device cuda --dtype float16.
# Needs a Python with a CUDA build of torch (PYTHON=... to pick it; default
# .venv/bin/python, else python3). bench/gpu_check.sh runs this after tests/gpu.
# Finishes in well under 5 minutes on one H100/A100-class GPU.
#
#   bench/gpu.sh                 # defaults below
#   bench/gpu.sh --n 16384       # extra arguments go to bench_text.py
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[[ -x "$PY" ]] || PY=python3

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "bench/gpu.sh: torch in $PY sees no CUDA device ($("$PY" -c 'import torch; print(torch.__version__)'))" >&2
    exit 2
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

# 8192 sentences: large enough that GPU throughput is not dominated by start-up,
# small enough that 3 rounds of 5 paths plus latency fit in ~2-3 minutes.
exec timeout 290 "$PY" bench/bench_text.py --device cuda --dtype float16 \
    --n 8192 --concurrency 64 --batch-concurrency 8 --rounds 3 --latency-n 100 --save "$@"
