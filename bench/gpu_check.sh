#!/usr/bin/env bash
# Everything to check on a CUDA machine, in one go (about 8 minutes on one H100):
#   1. tests/gpu: the engine and the server on CUDA (float32 against
#      sentence-transformers, float16/bfloat16 closeness, batching, abort, the
#      queue bound, cancellation, health under load, geotiff segmentation), with
#      the figures each test prints;
#   2. bench/gpu.sh: the text benchmark with --device cuda --dtype float16;
#   3. bench/engine_stages.py: the engine core's stage timings and profiles;
#   4. bench/bench_frontends.py: direct forward (a) against gRPC with one process and
#      with 2, 4 and 8 front ends (--api-server-count), single-text calls at 64 and 256
#      in flight and 32-sentence calls, from the Go load client (a static binary:
#      clients/go/bin/poolstream-go-load, built here by `make client-build`; carry it).
#
#   bench/gpu_check.sh                          # the embedded model, .venv/bin/python
#   PYTHON=python3 POOLSTREAM_TEST_MODEL_DIR=/models/minilm bench/gpu_check.sh
#
# Logs go to $LOG_DIR (default bench/results); the benchmark also saves its table there.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
LOG_DIR=${LOG_DIR:-bench/results}
mkdir -p "$LOG_DIR"
stamp=$(date +%Y%m%d-%H%M%S)
model_args=()
[[ -n "${POOLSTREAM_TEST_MODEL_DIR:-}" ]] && model_args=(--model "$POOLSTREAM_TEST_MODEL_DIR")

"$PY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "device",
          torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)'
# -rs: a skip (no CUDA) must show, not pass silently.
timeout 200 "$PY" -m pytest tests/gpu -q -s -rs -p no:cacheprovider 2>&1 \
    | grep -v '^Loading weights' | tee "$LOG_DIR/$stamp-gpu-tests.log"
tests_rc=${PIPESTATUS[0]}
PYTHON=$PY bash bench/gpu.sh "${model_args[@]}" 2>&1 | tee "$LOG_DIR/$stamp-gpu-bench.log"
bench_rc=${PIPESTATUS[0]}
# Where the engine's time goes on this GPU: stage timings, cProfile and a torch.profiler
# trace of the core thread (README, "On a GPU": one batch in ten launched slowly on an H100).
timeout 120 "$PY" bench/engine_stages.py --device cuda "${model_args[@]}" --n 4096 --profile 25 \
    --torch-profile "$LOG_DIR/$stamp-engine-trace.json" 2>&1 | grep -v '^Loading weights' \
    > "$LOG_DIR/$stamp-engine-stages.md"
# Front ends on this card (README, "Process layout"): ~3 minutes.
fe_model=${POOLSTREAM_TEST_MODEL_DIR:-$("$PY" -c 'from poolstream.config import default_model_path; print(default_model_path())')}
timeout 330 "$PY" bench/bench_frontends.py --model "$fe_model" --device cuda --dtype float16 \
    --layouts 0,2,4,8 --shapes 1x64,1x256,32x8 --seconds 8 --warmup 2 --direct --save 2>&1 \
    | grep -v '^Loading weights' | tee "$LOG_DIR/$stamp-frontends.log"
fe_rc=${PIPESTATUS[0]}
echo "gpu_check: tests exit $tests_rc, benchmark exit $bench_rc, front ends exit $fe_rc"
exit $(( tests_rc || bench_rc || fe_rc ))
