# poolstream: `make serve` runs the server on the embedded model, `make test` runs every test.
# Both set up everything they need first (virtual environment, packages, codegen, toolchains).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
export PATH := $(CURDIR)/$(BIN):$(PATH)

# Python distributions installed (editable) into the venv: the server, the
# built-in plugins and the Python client.
PY_DISTS := . $(dir $(wildcard plugins/*/pyproject.toml clients/python/pyproject.toml))
PY_PROJECTS := pyproject.toml $(wildcard plugins/*/pyproject.toml clients/python/pyproject.toml)
# Test-only plugin distributions go to a separate directory that only the
# tests put on sys.path, so `make serve` never sees their broken entry points.
TEST_PLUGINS := $(VENV)/test-plugins
TEST_PLUGIN_SRC := $(shell find tests/plugin_dists -type f -not -path '*/__pycache__/*' -not -path '*.egg-info*' 2>/dev/null)

.DEFAULT_GOAL := help

help: ## List targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Exact versions from the one lock file (requirements.lock) that the application
# (deploy/install.sh, the images) and CI share; the pyproject files declare ranges.
$(VENV)/.installed: $(BIN)/python $(PY_PROJECTS) requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check -c requirements.lock \
		-e '.[server,otel,dev,test]' $(foreach d,$(filter-out .,$(PY_DISTS)),-e $(d))
	touch $@

lock: setup ## Rewrite requirements.lock from the venv (after changing a dependency range; then re-run make setup)
	{ echo "# The one lock file of the application and CI: exact versions for every package that"; \
	  echo "# make setup, deploy/install.sh and the images install (pip install -c requirements.lock)."; \
	  echo "# Regenerate with \`make lock\`; tests/ops/test_packaging.py checks it against the pyproject ranges."; \
	  $(BIN)/pip freeze --exclude-editable --disable-pip-version-check | sed -e 's/^torch==\([^+]*\)+.*/torch==\1/'; \
	} > requirements.lock.tmp && mv requirements.lock.tmp requirements.lock
.PHONY: lock

$(TEST_PLUGINS)/.installed: $(VENV)/.installed $(TEST_PLUGIN_SRC)
	rm -rf $(TEST_PLUGINS)
	$(BIN)/pip install -q --disable-pip-version-check --no-deps --target $(TEST_PLUGINS) $(dir $(wildcard tests/plugin_dists/*/pyproject.toml))
	touch $@

setup: $(VENV)/.installed $(TEST_PLUGINS)/.installed ## Create .venv and install every Python package
.PHONY: setup

gen: setup ## Regenerate code from protos/ (all languages) and the vendored TEI proto (Python)
	$(BIN)/buf generate
	$(BIN)/buf generate --template buf.gen.tei.yaml
.PHONY: gen

lint: setup ## buf lint + format check, ruff
	$(BIN)/buf lint
	$(BIN)/buf format -d --exit-code protos
	$(BIN)/ruff check service plugins clients/python tests bench
.PHONY: lint

breaking: setup ## buf breaking against the main branch (skipped where main has no protos yet)
	@if git rev-parse -q --verify main >/dev/null && git cat-file -e main:buf.yaml 2>/dev/null; then \
		$(BIN)/buf breaking --against '.git#branch=main'; \
	else echo "buf breaking: main has no buf.yaml yet, nothing to compare"; fi
.PHONY: breaking

serve: setup ## Run the server on the embedded default model (all-MiniLM-L6-v2) on 127.0.0.1:50051
	$(BIN)/poolstream serve --host 127.0.0.1 --port 50051
.PHONY: serve

bench: setup ## Text benchmark (ST reference, direct forward, engine, gRPC) and health latency under load
	$(PY) bench/bench_text.py --save
	$(PY) bench/bench_health.py
.PHONY: bench

gpu-check: setup ## On a CUDA machine: tests/gpu, the GPU benchmark and engine stage timings (bench/gpu_check.sh)
	bench/gpu_check.sh
.PHONY: gpu-check

test: setup client-setup browser-setup lint breaking ## Set up everything and run every test
	$(BIN)/pytest -q
.PHONY: test

-include mk/*.mk
# Client toolchains (Go, Node) hook in through mk/clients.mk, headless Chromium through
# mk/browser.mk; without them, nothing to do.
client-setup::
browser-setup::
.PHONY: client-setup browser-setup
