# deeprun -- `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
ARGS   ?=
FMNIST := /usr/share/datasets/fashion-mnist

.DEFAULT_GOAL := help
.PHONY: help install install-bench data run test test-slow test-all bench clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP) data ## Create .venv, install deeprun (+dev extras) and the Fashion-MNIST data

data: ## Install Fashion-MNIST (Debian package dataset-fashion-mnist when root; else the first run downloads it)
	@if [ -d $(FMNIST) ]; then \
		echo "Fashion-MNIST: $(FMNIST)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; } || \
		echo "apt-get could not install dataset-fashion-mnist; deeprun will download the data on first use"; \
	else \
		echo "Not root: deeprun will download Fashion-MNIST into ~/.cache/deeprun on first use"; \
	fi

run: install ## Train the default configuration (pass overrides with ARGS="optimizer=nadam ...")
	$(BIN)/deeprun $(ARGS)

test: install ## Run the test suite (everything not marked slow)
	$(BIN)/pytest -q -n auto

test-slow: install ## Run only the slow tests (real-data and longer runs)
	$(BIN)/pytest -q -m slow

test-all: install ## Run every test, slow ones included
	$(BIN)/pytest -q -m "slow or not slow"

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install -q -e ".[bench]"
	@touch $(BENCH_STAMP)

install-bench: install $(BENCH_STAMP) ## make install, plus the benchmark peers (Keras 3, PyTorch CPU)

bench: install-bench ## Benchmark deeprun against Keras 3/JAX and PyTorch (ARGS="--batch-sizes 256 --repeats 1" ...)
	$(BIN)/python benchmarks/bench.py $(ARGS)

clean: ## Remove outputs, caches and the virtual environment
	rm -rf outputs/runs outputs/sweeps multirun .pytest_cache $(VENV)
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
