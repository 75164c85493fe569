# One entry point for people, CI (.ci/run) and hooks. `make help` lists the targets.
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.DEFAULT_GOAL := help
.PHONY: help setup develop demo test lint test-rust test-py fuzz-props bench wheel wheels clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.deps: requirements-dev.lock
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check uv
	$(UV) pip install -q --python $(PY) -r requirements-dev.lock
	touch $@

# The extension is a file target: built again only when a source it is made from changed (or
# the venv is new), so a second `make demo` or `make test` does not spend 20 s relinking it.
NATIVE := python/ferrule/_native.abi3.so
NATIVE_SOURCES := $(shell find rust -name '*.rs') Cargo.toml Cargo.lock pyproject.toml

setup: $(VENV)/.deps $(NATIVE) ## create .venv with the locked dev dependencies and build the extension

$(NATIVE): $(VENV)/.deps $(NATIVE_SOURCES)
	rm -f python/ferrule/_native*.so
	VIRTUAL_ENV=$(CURDIR)/$(VENV) $(VENV)/bin/maturin develop --release --uv -q
	touch $@

develop: $(VENV)/.deps ## rebuild the native extension into the venv, in release mode, even if unchanged
	rm -f $(NATIVE)
	$(MAKE) --no-print-directory $(NATIVE)

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

test-py: setup ## pytest, every test on both backends (a line per file, then the 30 slowest)
	$(PY) -m pytest --durations=30

test: setup lint test-rust test-py ## everything CI checks (the README's test command)

fuzz-props: ## property tests with random seeds, new examples each run (CI's are fixed)
	HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest -q -p no:cacheprovider \
		tests/test_compress_tokens.py tests/test_compress_properties.py \
		tests/test_kernels_differential.py tests/test_responses_stream_differential.py \
		tests/test_fuzz_requests.py tests/test_breakpoints.py tests/test_answer_differential.py

bench: setup ## backend micro-benchmarks (pytest-benchmark), native and Python side by side
	$(PY) -m pytest benches -q --benchmark-only --benchmark-group-by=group --benchmark-columns=mean,median,ops

wheel: ## one abi3 wheel in dist/
	$(VENV)/bin/maturin build --release -o dist

# Cross-built with zig (the ziglang package in the venv), for glibc >= 2.17 whatever this machine
# has; tests/test_wheel.py uses dist/ when it is newer than the sources. DIST=folder to put them
# elsewhere, WHEEL_TARGETS=... for a subset.
DIST ?= dist
WHEEL_TARGETS ?= x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu
wheels: $(VENV)/.deps ## sdist + abi3 manylinux wheels (x86_64, aarch64) in dist/, auditwheel-checked
	mkdir -p $(DIST) && rm -f $(DIST)/ferrule-*.whl $(DIST)/ferrule-*.tar.gz
	$(VENV)/bin/maturin sdist -o $(DIST)
	for t in $(WHEEL_TARGETS); do \
	  rustup target list --installed | grep -qx $$t || rustup target add $$t || exit 1; \
	  $(VENV)/bin/maturin build --release --locked --zig --target $$t \
	    --compatibility manylinux_2_17 -o $(DIST) || exit 1; \
	done
	for w in $(DIST)/ferrule-*.whl; do \
	  tag=$$(basename $$w .whl); tag=$${tag##*.}; \
	  $(VENV)/bin/auditwheel show $$w | tr -s ' \n' ' ' \
	    | grep -q "consistent with the following platform tag: \"$$tag\"" \
	    || { echo "auditwheel: $$w is not $$tag"; exit 1; }; \
	done
	ls -l $(DIST)

clean: ## remove build products (keeps .venv)
	rm -rf target dist python/ferrule/_native*.so
