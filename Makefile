# One entry point for people, CI (.ci/run) and hooks. `make help` lists the targets.
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.DEFAULT_GOAL := help
.PHONY: help setup develop demo test lint test-rust test-py fuzz-props bench wheel clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.deps: requirements-dev.lock
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check uv
	$(UV) pip install -q --python $(PY) -r requirements-dev.lock
	touch $@

setup: $(VENV)/.deps develop ## create .venv with the locked dev dependencies and build the extension

develop: $(VENV)/.deps ## (re)build the native extension into the venv, in release mode
	rm -f python/ferrule/_native*.so
	VIRTUAL_ENV=$(CURDIR)/$(VENV) $(VENV)/bin/maturin develop --release --uv -q

demo: setup ## offline demo: simulated Anthropic + Ferrule + the openai SDK
	$(VENV)/bin/ferrule demo

lint: $(VENV)/.deps ## rustfmt, clippy, ruff, mypy
	cargo fmt --check
	cargo clippy --all-targets -q -- -D warnings
	cargo clippy --all-targets --features python -q -- -D warnings
	$(VENV)/bin/ruff check python tests benches
	$(VENV)/bin/ruff format --check python tests benches
	$(VENV)/bin/mypy
	$(PY) -m mypy.stubtest ferrule._native

test-rust: ## cargo test on the pure-Rust core
	cargo test -q

test-py: setup ## pytest, every test on both backends
	$(PY) -m pytest -q

test: setup lint test-rust test-py ## everything CI checks (the README's test command)

fuzz-props: ## property tests with random seeds, new examples each run (CI's are fixed)
	HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest -q -p no:cacheprovider \
		tests/test_compress_tokens.py tests/test_compress_properties.py \
		tests/test_kernels_differential.py tests/test_responses_stream_differential.py \
		tests/test_fuzz_requests.py tests/test_breakpoints.py

bench: setup ## backend micro-benchmarks (pytest-benchmark), native and Python side by side
	$(PY) -m pytest benches -q --benchmark-only --benchmark-group-by=group --benchmark-columns=mean,median,ops

wheel: ## one abi3 wheel in dist/
	$(VENV)/bin/maturin build --release -o dist

clean: ## remove build products (keeps .venv)
	rm -rf target dist python/ferrule/_native*.so
