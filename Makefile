# deeprun -- `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
ARGS   ?=
FMNIST := /usr/share/datasets/fashion-mnist

.DEFAULT_GOAL := help
.PHONY: help install install-bench data run tune lint test test-slow test-all bench clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-22s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

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

tune: install ## Optuna search (ARGS="tune/space=learning_rate tune.n_trials=30"; tune.dir=<folder> resumes)
	$(BIN)/deeprun-tune $(ARGS)

lint: $(STAMP) ## ruff (lint + format check) over src, tests, benchmarks; mypy over src/deeprun
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

test: install lint ## make lint, then the test suite (everything not marked slow)
	$(BIN)/pytest -q -n auto

test-slow: install ## Run only the slow tests (real-data and longer runs)
	$(BIN)/pytest -q -m slow

test-all: install ## Run every test, slow ones included
	$(BIN)/pytest -q -m "slow or not slow"

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install -q -e ".[bench]"
	@touch $(BENCH_STAMP)

install-bench: install $(BENCH_STAMP) ## make install, plus the benchmark peers (Keras 3, PyTorch 2.13.0 CPU build)

bench: install-bench ## Benchmark deeprun against Keras 3/JAX and PyTorch (ARGS="--batch-sizes 256 --repeats 1" ...)
	$(BIN)/python benchmarks/bench.py $(ARGS)

clean: ## Remove outputs, caches and the virtual environment
	rm -rf outputs/runs outputs/sweeps outputs/ch11 outputs/lr_finder outputs/tune outputs/signal multirun .pytest_cache $(VENV)
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# ----- Chapter 11 experiments: each writes outputs/ch11/<experiment>/<time>/ with REPORT.md ---------
CH11_TIME = $(shell date +%Y-%m-%d_%H-%M-%S)
# Every ch11 target trains each of its runs once per seed (fused where it can); `make ch11 SEEDS=42`: one seed.
SEEDS    ?= 42,43,44
comma    := ,
SEED_LIST = $(subst $(comma), ,$(SEEDS))
DEEPRUN   = $(BIN)/deeprun
REPORT    = $(BIN)/deeprun-report --book
.PHONY: ch11-docs ch11 ch11-transfer ch11-figures ch11-clipping ch11-alpha-dropout ch11-cifar10 ch11-batchnorm ch11-optimizers ch11-schedules ch11-1cycle ch11-regularization ch11-selu-vs-relu ch11-lr-finder ch11-mc-dropout ch11-default-tables

# The longest first: make starts them in this order, CH11_JOBS at a time (each sweep also runs its programs
# in worker processes, hydra.launcher.workers); every target's output is printed whole when it ends.
CH11_TARGETS = ch11-default-tables ch11-selu-vs-relu ch11-optimizers ch11-schedules ch11-transfer ch11-regularization ch11-1cycle ch11-alpha-dropout ch11-mc-dropout ch11-clipping ch11-batchnorm ch11-lr-finder ch11-figures
CH11_JOBS ?= $(shell nproc 2>/dev/null || echo 1)
ch11: install ## Every chapter-11 experiment below but CIFAR-10 (SEEDS=42,43,44; CH11_JOBS targets at once); wall time: outputs/ch11/wall_time.json
	@start=$$(date +%s); $(MAKE) --no-print-directory -j$(CH11_JOBS) --output-sync=target $(CH11_TARGETS) SEEDS=$(SEEDS) && mkdir -p outputs/ch11 && \
	  printf '{"wall_s": %s, "seeds": "%s", "jobs": %s, "finished": "%s"}\n' $$(( $$(date +%s) - start )) "$(SEEDS)" "$(CH11_JOBS)" "$$(date -Iseconds)" > outputs/ch11/wall_time.json

ch11-batchnorm: install ## BN after vs before the activation, SGD, 2 epochs (params in sweep_summary); REPORT.md
	$(eval OUT := outputs/ch11/batchnorm/$(CH11_TIME))
	$(DEEPRUN) -m trainer.seed=$(SEEDS) experiment=ch11_batchnorm hydra.sweep.dir=$(OUT)
	$(REPORT) batchnorm $(OUT)

ch11-optimizers: install ## The chapter's optimizers, 10 epochs each, same init; loss curves; REPORT.md
	$(eval OUT := outputs/ch11/optimizers/$(CH11_TIME))
	$(DEEPRUN) -m trainer.seed=$(SEEDS) experiment=ch11_optimizers hydra.sweep.dir=$(OUT)/main
	$(DEEPRUN) -m trainer.seed=$(SEEDS) experiment=ch11_optimizers optimizer=adamw optimizer.weight_decay=0.01 hydra.sweep.dir=$(OUT)/adamw
	$(BIN)/python -m deeprun.commands.figures optimizers $(OUT)
	$(REPORT) optimizers $(OUT)

ch11-schedules: install ## Exponential (per epoch, per step), piecewise + Nadam, performance; 25 epochs; REPORT.md
	$(eval OUT := outputs/ch11/schedules/$(CH11_TIME))
	$(DEEPRUN) -m trainer.seed=$(SEEDS) experiment=ch11_schedules optimizer=sgd schedule=exponential schedule.unit=epoch schedule.decay_steps=20 hydra.sweep.dir=$(OUT)/exponential_epoch
	$(DEEPRUN) -m trainer.seed=$(SEEDS) experiment=ch11_schedules optimizer=sgd schedule=exponential schedule.unit=step schedule.decay_steps=42975 hydra.sweep.dir=$(OUT)/exponential_step
	$(DEEPRUN) -m trainer.seed=$(SEEDS) experiment=ch11_schedules optimizer=nadam schedule=piecewise 'schedule.values=[0.01,0.005,0.001]' hydra.sweep.dir=$(OUT)/piecewise
	$(DEEPRUN) -m trainer.seed=$(SEEDS) experiment=ch11_schedules optimizer=sgd schedule=performance hydra.sweep.dir=$(OUT)/performance
	$(REPORT) schedules $(OUT)

ch11-default-tables: install ## Each default-configuration table as a run, then one table row varied at a time
	$(eval OUT := outputs/ch11/default_tables/$(CH11_TIME))
	$(DEEPRUN) -m trainer.seed=$(SEEDS) preset=ed2_default,ed2_self_normalizing,ed3_default,ed3_self_normalizing,ed2_early_release,ed1_default hydra.sweep.dir=$(OUT)/tables
	$(DEEPRUN) -m trainer.seed=$(SEEDS) preset=ed2_default optimizer=momentum,rmsprop,nadam hydra.sweep.dir=$(OUT)/ed2_default_optimizer_row
	$(DEEPRUN) -m trainer.seed=$(SEEDS) preset=ed3_default schedule=performance,1cycle hydra.sweep.dir=$(OUT)/ed3_default_schedule_row
	$(DEEPRUN) -m trainer.seed=$(SEEDS) preset=ed3_default optimizer=nesterov,adamw hydra.sweep.dir=$(OUT)/ed3_default_optimizer_row
	$(DEEPRUN) -m trainer.seed=$(SEEDS) preset=ed3_default model=deep_mlp model.depth=20 activation=swish normalization=none,batchnorm hydra.sweep.dir=$(OUT)/ed3_deep_normalization_row
	$(BIN)/deeprun-report $(OUT)

ch11-transfer: install ## Per seed: model A, B from scratch, and B-on-A on that seed's A (frozen 4 epochs, then 16); REPORT.md
	$(eval OUT := $(abspath outputs/ch11/transfer/$(CH11_TIME)))
	$(DEEPRUN) -m trainer.seed=$(SEEDS) experiment=ch11_transfer data.task=A name=model_A hydra.sweep.dir=$(OUT)/model_A 'hydra.sweep.subdir=$${trainer.seed}'
	$(DEEPRUN) -m trainer.seed=$(SEEDS) experiment=ch11_transfer data.task=B data.train_limit=200 model.head=sigmoid name=model_B hydra.sweep.dir=$(OUT)/model_B
	$(DEEPRUN) -m trainer.seed=$(SEEDS) experiment=ch11_transfer data.task=B data.train_limit=200 model.head=sigmoid name=model_B_on_A 'model.init_from=$(OUT)/model_A/$${trainer.seed}' 'trainer.phases=[{epochs: 4, freeze: reused}, {epochs: 16}]' hydra.sweep.dir=$(OUT)/model_B_on_A
	$(REPORT) transfer $(OUT)

ch11-figures: install ## The chapter's figures from formulas: activations (Figs 11-1..11-4), schedules, 1cycle
	$(BIN)/python -m deeprun.commands.figures chapter outputs/ch11/figures

ch11-clipping: install ## Gradient clipping: clip_value vs clip_norm (per tensor) vs clip_global_norm, 1 epoch each
	$(eval OUT := outputs/ch11/clipping/$(CH11_TIME))
	$(DEEPRUN) -m trainer.seed=$(SEEDS) experiment=ch11_batchnorm normalization=none trainer.epochs=1 optimizer.clip_value=1.0,null hydra.sweep.dir=$(OUT)/clip_value
	$(DEEPRUN) -m trainer.seed=$(SEEDS) experiment=ch11_batchnorm normalization=none trainer.epochs=1 optimizer.clip_norm=1.0 hydra.sweep.dir=$(OUT)/clip_norm
	$(DEEPRUN) -m trainer.seed=$(SEEDS) experiment=ch11_batchnorm normalization=none trainer.epochs=1 optimizer.clip_global_norm=1.0 hydra.sweep.dir=$(OUT)/clip_global_norm
	$(BIN)/deeprun-report $(OUT)

ch11-alpha-dropout: install ## SELU net (LeCun, standardized) with alpha dropout 0.1, then MC alpha dropout (10 passes)
	$(eval OUT := outputs/ch11/alpha_dropout/$(CH11_TIME))
	$(DEEPRUN) -m trainer.seed=$(SEEDS) experiment=ch11_schedules optimizer=nadam optimizer.learning_rate=0.0005 schedule=constant trainer.epochs=10 initializer=lecun_normal activation=selu data.scaling=standardize regularizer=alpha_dropout hydra.sweep.dir=$(OUT)
	for run in $(OUT)/*/; do $(BIN)/deeprun-eval $$run mc_samples=10 || exit 1; done

ch11-cifar10: install ## Exercise 8 on CIFAR-10 (needs the CIFAR-10 binaries: data.root, DEEPRUN_DATA or download)
	$(eval OUT := outputs/ch11/cifar10/$(CH11_TIME))
	$(DEEPRUN) -m data=cifar10 model=deep_mlp model.depth=20 activation=swish optimizer=nadam optimizer.learning_rate=5e-5 schedule=constant trainer.epochs=100 trainer.early_stopping.patience=20 hydra.sweep.dir=$(OUT)/8b_baseline
	$(DEEPRUN) -m data=cifar10 model=deep_mlp model.depth=20 activation=swish normalization=batchnorm_before optimizer=nadam optimizer.learning_rate=5e-4 schedule=constant trainer.epochs=100 trainer.early_stopping.patience=20 hydra.sweep.dir=$(OUT)/8c_batchnorm
	$(DEEPRUN) -m data=cifar10 data.scaling=standardize model=deep_mlp model.depth=20 initializer=lecun_normal activation=selu optimizer=nadam optimizer.learning_rate=7e-4 schedule=constant trainer.epochs=100 trainer.early_stopping.patience=20 hydra.sweep.dir=$(OUT)/8d_selu
	$(DEEPRUN) data=cifar10 data.scaling=standardize model=deep_mlp model.depth=20 initializer=lecun_normal activation=selu regularizer=alpha_dropout optimizer=nadam optimizer.learning_rate=5e-4 schedule=constant trainer.epochs=100 trainer.early_stopping.patience=20 hydra.run.dir=$(OUT)/8e_alpha_dropout
	$(BIN)/deeprun-eval $(OUT)/8e_alpha_dropout mc_samples=10 split=val
	$(BIN)/deeprun-lr-finder data=cifar10 data.scaling=standardize model=deep_mlp model.depth=20 initializer=lecun_normal activation=selu regularizer=alpha_dropout optimizer=sgd hydra.run.dir=$(OUT)/8f_lr_finder
	$(DEEPRUN) -m data=cifar10 data.scaling=standardize model=deep_mlp model.depth=20 initializer=lecun_normal activation=selu regularizer=alpha_dropout optimizer=sgd schedule=1cycle schedule.max_lr=0.05 trainer.batch_size=128 trainer.epochs=15 trainer.early_stopping.enabled=false hydra.sweep.dir=$(OUT)/8f_1cycle
	$(REPORT) cifar10 $(OUT)

ch11-1cycle: install ## 1cycle, max_lr 0.1, batch 128, 25 epochs; REPORT.md
	$(eval OUT := outputs/ch11/1cycle/$(CH11_TIME))
	$(DEEPRUN) -m trainer.seed=$(SEEDS) experiment=ch11_1cycle hydra.sweep.dir=$(OUT)
	$(REPORT) 1cycle $(OUT)

ch11-regularization: install ## l2 (SGD 0.02, 2 epochs), dropout and max-norm (10 epochs); REPORT.md
	$(eval OUT := outputs/ch11/regularization/$(CH11_TIME))
	$(DEEPRUN) -m trainer.seed=$(SEEDS) experiment=ch11_regularization regularizer=l2 model.output_initializer=he_normal optimizer=sgd optimizer.learning_rate=0.02 trainer.epochs=2 hydra.sweep.dir=$(OUT)/l2
	$(DEEPRUN) -m trainer.seed=$(SEEDS) experiment=ch11_regularization regularizer=dropout,max_norm optimizer=momentum trainer.epochs=10 hydra.sweep.dir=$(OUT)/dropout_max_norm
	$(REPORT) regularization $(OUT)

ch11-selu-vs-relu: install ## 100-layer SELU vs ReLU nets, SGD 0.001, 5 epochs; REPORT.md
	$(eval OUT := outputs/ch11/selu_vs_relu/$(CH11_TIME))
	$(DEEPRUN) -m trainer.seed=$(SEEDS) experiment=ch11_selu_vs_relu initializer=lecun_normal activation=selu hydra.sweep.dir=$(OUT)/selu
	$(DEEPRUN) -m trainer.seed=$(SEEDS) experiment=ch11_selu_vs_relu initializer=he_normal activation=relu hydra.sweep.dir=$(OUT)/relu
	$(REPORT) selu-vs-relu $(OUT)

ch11-lr-finder: install ## LR finder: 1 epoch, batch 128, rate 1e-4 -> 1, loss-vs-rate plot, suggested max rate; REPORT.md
	$(eval OUT := outputs/ch11/lr_finder/$(CH11_TIME))
	for seed in $(SEED_LIST); do $(BIN)/deeprun-lr-finder model.hidden=[100,100,100] activation=relu optimizer=sgd trainer.seed=$$seed hydra.run.dir=$(OUT)/$$seed || exit 1; done
	$(REPORT) lr-finder $(OUT)

ch11-mc-dropout: install ## Dropout model (10 epochs), then MC dropout with 100 passes on the test set; REPORT.md
	$(eval OUT := outputs/ch11/mc_dropout/$(CH11_TIME))
	$(DEEPRUN) -m trainer.seed=$(SEEDS) experiment=ch11_regularization regularizer=dropout optimizer=momentum trainer.epochs=10 hydra.sweep.dir=$(OUT)
	for run in $(OUT)/*/; do $(BIN)/deeprun-eval $$run mc_samples=100 || exit 1; done
	$(REPORT) mc-dropout $(OUT)

ch11-docs: install ## Regenerate docs/reproduction.md from the newest outputs/ch11/<experiment>/ folders
	$(BIN)/python -m deeprun.commands.book outputs docs/reproduction.md
