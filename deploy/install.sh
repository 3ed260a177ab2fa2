#!/usr/bin/env bash
# Install the poolstream server (with its built-in plugins) into a fresh virtual environment,
# at the exact versions of requirements.lock. The Dockerfiles run this script, and
# tests/ops/test_install.py runs it into a temporary venv and serves from the result, so
# what the images contain is what the test proved.
#
#   deploy/install.sh [--venv DIR] [--variant cpu|cuda] [--src DIR] [--plugins "NAME ..."] [--python PYTHON]
#
#   --venv     where to create the environment (default /opt/poolstream)
#   --variant  cpu: torch's CPU build, from $TORCH_INDEX_URL when set (the CPU image sets
#              PyTorch's CPU wheel index), else whatever build pip finds for torch==<lock>;
#              cuda: torch from the default index (PyPI's Linux torch is the CUDA build)
#   --src      the repository checkout to install from (default: this script's repository)
#   --plugins  built-in plugins under plugins/ to install (default: every one)
#   --python   interpreter for the venv (default python3; 3.11 or newer)
#
# Environment: TORCH_INDEX_URL (see --variant), PIP_* (pip's own settings) pass through.
set -euo pipefail

venv=/opt/poolstream
variant=cpu
src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
plugins=""
python=python3

while [ $# -gt 0 ]; do
  case "$1" in
    --venv) venv="$2"; shift 2 ;;
    --variant) variant="$2"; shift 2 ;;
    --src) src="$2"; shift 2 ;;
    --plugins) plugins="$2"; shift 2 ;;
    --python) python="$2"; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

case "$variant" in
  cpu|cuda) ;;
  *) echo "install.sh: --variant must be cpu or cuda, not $variant" >&2; exit 2 ;;
esac
lock="$src/requirements.lock"
[ -f "$lock" ] || { echo "install.sh: $lock not found" >&2; exit 1; }
if [ -z "$plugins" ]; then
  for d in "$src"/plugins/*/pyproject.toml; do plugins="$plugins $(basename "$(dirname "$d")")"; done
fi

"$python" -m venv "$venv"
pip=("$venv/bin/pip" --disable-pip-version-check --no-input)
"${pip[@]}" install -q --upgrade "pip>=23.2"

index=()
if [ "$variant" = cpu ] && [ -n "${TORCH_INDEX_URL:-}" ]; then
  index=(--extra-index-url "$TORCH_INDEX_URL")
fi

targets=("$src[server,otel]")
for p in $plugins; do
  [ -f "$src/plugins/$p/pyproject.toml" ] || { echo "install.sh: no plugin $p under $src/plugins" >&2; exit 1; }
  targets+=("$src/plugins/$p")
done

# Non-editable installs (wheels built from the checkout); every version from the lock.
"${pip[@]}" install -q --no-cache-dir "${index[@]}" -c "$lock" "${targets[@]}"
"${pip[@]}" check

# Smoke test: the command line loads, and torch is the build this variant asked for.
"$venv/bin/poolstream" serve --help >/dev/null
"$venv/bin/python" - "$variant" <<'PY'
import sys

import torch

variant = sys.argv[1]
cuda = torch.version.cuda
if variant == "cpu" and cuda:
    sys.exit(f"install.sh: --variant cpu installed a CUDA build of torch ({torch.__version__}, CUDA {cuda}); "
             "set TORCH_INDEX_URL to a CPU wheel index")
if variant == "cuda" and not cuda:
    sys.exit(f"install.sh: --variant cuda installed a CPU-only torch ({torch.__version__})")
print(f"poolstream installed in {sys.prefix}: torch {torch.__version__} ({variant})")
PY
