# Batch-size research suite. `make setup`, then a figure target, and `make test`.
# Presets: PRESET=smoke (seconds), quick (default; minutes on a 2-core CPU), paper (GPU).

PYTHON_SYS ?= python3
VENV       ?= .venv
PYTHON     := $(VENV)/bin/python
PRESET     ?= quick
GPU        ?= 0
DATA_DIR   ?= data
DATA_MIRROR ?= ../shared/data
export DATA_DIR DATA_MIRROR
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED = 1
# TensorFlow's oneDNN kernels, off by default on x86 CPUs without AVX-512, are
# ~1.6x faster here (make bench-throughput); a value you set wins.
# reproduce/runs/settings.py sets the same default for `python -m reproduce.*`.
ifeq ($(shell uname -m),x86_64)
export TF_ENABLE_ONEDNN_OPTS ?= 1
endif

# Scaling out (README "Scaling out"), read from the environment by every figure target:
#   RAY_ADDRESS=local|auto|ray://head:10001  each run of the sweep a Ray task
#   DEVICES=n                                each run data parallel over n devices
#   DRY_RUN=1                                2 updates of each kind of run, and the plan's cost
# ENGINE=fit trains with model.fit instead of the fast engine (same results).
ENGINE     ?=
FIGURE_ARGS = --preset $(PRESET) $(if $(ENGINE),--engine $(ENGINE))
# Batches above this go through gradient accumulation (fig-dont-decay); empty: the preset's.
export MAX_DEVICE_BATCH
# fig-generalization-gap and fig-sharp-minima: NETWORK=F1 trains that network's part
# of the preset. JOBS=n runs at once (1: one by one), THREADS=n a run's thread budget,
# RUNS_PER_GPU=n runs sharing a GPU (README "Runs side by side").
export NETWORK JOBS THREADS RUNS_PER_GPU
# Every run writes TensorBoard curves under results/<figure>/tensorboard/ (0: none);
# `make tensorboard [FIGURE=small_batch]` serves them.
export TENSORBOARD
FIGURE ?=
KAGGLE_ARGS ?=

# The figure targets, one per module in reproduce/registry.py (the one list of figures):
# today fig-small-batch fig-dont-decay fig-generalization-gap fig-sharp-minima
# fig-mnist-batch-size fig-lr-scaling fig-critical-batch (`python -m reproduce.registry`).
FIGURES := $(shell $(PYTHON_SYS) -m reproduce.registry)

.PHONY: setup test test-fast settings clean help figures figures-cpu figures-cpu-paper check-claims readme-tables $(FIGURES) kaggle-data-from-mnist kaggle-submission \
	tensorboard bench-pipeline bench-accumulation bench-throughput bench-sweep bench-tensorboard

help:
	@echo "make setup [GPU=1]            create $(VENV), install the locked requirements and the library (editable)"
	@echo "make test                     run the test suite (the library tests on TF and JAX)"
	@echo "make test-fast                the unit tests without the figure smoke runs (< 1 min)"
	@echo "make settings                 the backend and oneDNN setting the targets run with"
	@echo "make <figure> [PRESET=smoke|quick|cpu|paper], <figure> one of:"
	@echo "     $(FIGURES)"
	@echo "     (fig-dont-decay: [MAX_DEVICE_BATCH=n])"
	@echo "     [RAY_ADDRESS=local|auto|ray://host:10001] [DEVICES=n] [DRY_RUN=1]"
	@echo "make figures                  every figure target's quick preset in a row"
	@echo "make figures-cpu              the cpu presets (Smith, Masters & Luschi, Hoffer CIFAR), dry runs first"
	@echo "make figures-cpu-paper        the paper presets that fit a CPU, each dry run's estimate first"
	@echo "make check-claims [PRESET=...] each paper's claims checked over the figures' CSVs"
	@echo "make readme-tables            figures/README.md's tables and claims from the CSVs"
	@echo "make tensorboard [FIGURE=...] every run's curves, live while they train (TENSORBOARD=0: none)"
	@echo "make kaggle-data-from-mnist   MNIST stand-in for the Kaggle Digit Recognizer files"
	@echo "make kaggle-submission [KAGGLE_ARGS='--full --norm group ...']"
	@echo "     [ENGINE=fit]                model.fit instead of the fast engine"
	@echo "make bench-pipeline | bench-accumulation | bench-throughput | bench-sweep | bench-tensorboard"
	@echo "make clean                    remove results/ and caches (figures stay)"

$(PYTHON):
	$(PYTHON_SYS) -m venv $(VENV)

setup: $(PYTHON)
	$(PYTHON) -m pip install --upgrade pip
ifeq ($(shell uname -m),x86_64)
	$(PYTHON) -m pip install -r requirements.lock
endif
	$(PYTHON) -m pip install -r requirements.txt
	$(PYTHON) -m pip install --no-deps -e .
ifeq ($(GPU),1)
	$(PYTHON) -m pip uninstall -y tensorflow-cpu
	$(PYTHON) -m pip install "tensorflow[and-cuda]>=2.17,<2.22" "jax[cuda12]>=0.4.30"
endif

# The library tests run on every backend they support (a backend matrix);
# the rest (figures, Kaggle, the runner) on TensorFlow, the default. The engine
# tests also run with oneDNN off, where fit and the fast engine use the same
# kernels and agree to round-off for every optimizer (tests/test_engine.py).
LIBRARY_TESTS = tests/test_accumulation.py tests/test_engine.py tests/test_layers.py \
	tests/test_measures.py tests/test_schedules.py tests/test_devices.py \
	tests/test_batch_statistics.py
# pytest-xdist workers: a TensorFlow test process keeps ~0.8 of a core busy, so 3
# workers fill the 2 cores here (README "Tests" has the timings).
TEST_WORKERS ?= 3

# --dist loadgroup: the tests marked xdist_group("ray") share one worker.
PYTEST = $(PYTHON) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

# The slowest tests are listed (--durations), for the next round that trims them.
# The library tests on JAX, then the engine tests with oneDNN off, run beside
# the TensorFlow tests in one worker: the TensorFlow run leaves about a fifth of
# the two cores idle (waits on subprocesses and Ray). Their output follows the
# TensorFlow run's.
BESIDE_TESTS = KERAS_BACKEND=jax $(PYTHON) -m pytest -q -n 1 $(LIBRARY_TESTS); jax=$$?; \
	TF_ENABLE_ONEDNN_OPTS=0 $(PYTHON) -m pytest -q -n 1 tests/test_engine.py; onednn=$$?; \
	[ $$jax -eq 0 ] && [ $$onednn -eq 0 ]

test:
	$(PYTHON) -m ruff check .
	@beside_log=$$(mktemp); \
	( $(BESIDE_TESTS) ) > $$beside_log 2>&1 & beside=$$!; \
	echo "$(PYTEST) tests  (beside it: the library tests on JAX, then tests/test_engine.py with oneDNN off)"; \
	$(PYTEST) --durations=8 tests; tf=$$?; wait $$beside; others=$$?; \
	echo "KERAS_BACKEND=jax: the library tests; TF_ENABLE_ONEDNN_OPTS=0: tests/test_engine.py"; \
	cat $$beside_log; rm -f $$beside_log; \
	[ $$tf -eq 0 ] && [ $$others -eq 0 ]

# The edit-test loop: the unit tests without the figure smoke runs (< 1 min).
test-fast:
	$(PYTEST) -m "not slow" tests

# The settings in force in a process a target starts (reproduce/runs/settings.py).
settings:
	$(PYTHON) -m reproduce

# fig-small-batch -> python -m reproduce.papers.small_batch, and so on for every figure.
$(FIGURES):
	$(PYTHON) -m reproduce.papers.$(subst -,_,$(patsubst fig-%,%,$@)) $(FIGURE_ARGS)

figures:
	for target in $(FIGURES); do $(MAKE) --no-print-directory $$target PRESET=quick || exit 1; done
	$(PYTHON) -m reproduce.tools.report
	$(PYTHON) -m reproduce.tools.check_claims --preset quick
	$(PYTHON) -m reproduce.tools.report --readme figures/README.md

# The paper presets that run to the end on a 2-core CPU (reproduce/registry.py CPU_PAPER):
# every dry run first, each with this machine's time estimate, then the runs (hours; resumable).
# Each word is figure:network (figure: for the whole preset).
CPU_PAPER := $(shell $(PYTHON_SYS) -m reproduce.registry cpu-paper)
figures-cpu-paper:
	for f in $(CPU_PAPER); do DRY_RUN=1 NETWORK=$${f#*:} $(PYTHON) -m reproduce.papers.$${f%:*} \
		--preset paper | grep -E "paper|plan:|this machine" || exit 1; done
	for f in $(CPU_PAPER); do NETWORK=$${f#*:} $(PYTHON) -m reproduce.papers.$${f%:*} --preset paper \
		|| exit 1; done
	$(PYTHON) -m reproduce.tools.check_claims --preset paper

# The cpu presets (reproduce/registry.py CPU): each dry run's estimate for this machine
# first, then the runs (hours; resumable: a rerun trains only what the store lacks).
CPU_FIGURES := $(shell $(PYTHON_SYS) -m reproduce.registry cpu)
figures-cpu:
	for f in $(CPU_FIGURES); do DRY_RUN=1 $(PYTHON) -m reproduce.papers.$$f --preset cpu \
		| grep -E "cpu|plan:|this machine" || exit 1; done
	for f in $(CPU_FIGURES); do $(PYTHON) -m reproduce.papers.$$f --preset cpu || exit 1; done
	$(PYTHON) -m reproduce.tools.check_claims --preset cpu

# Each paper's headline claims as PASS/FAIL over the figures' CSVs (reproduce/tools/check_claims.py, the statistics in reproduce/claims.py):
# every preset whose CSVs are in figures/, or only $(PRESET) if you name it on the command
# line; the exit status is 1 if a claim expected to hold at that preset fails.
check-claims:
	$(PYTHON) -m reproduce.tools.check_claims $(if $(filter command line,$(origin PRESET)),--preset $(PRESET))

# figures/README.md's tables and claims, written from the CSVs (no hand-copied number).
readme-tables:
	$(PYTHON) -m reproduce.tools.report --readme figures/README.md

tensorboard:
	$(PYTHON) -m reproduce.runs.tensorboard $(if $(FIGURE),--figure $(FIGURE))

kaggle-data-from-mnist:
	$(PYTHON) -m reproduce.tools.kaggle data-from-mnist

kaggle-submission:
	$(PYTHON) -m reproduce.tools.kaggle submit $(if $(ENGINE),--engine $(ENGINE)) $(KAGGLE_ARGS)

bench-pipeline:
	$(PYTHON) -m reproduce.tools.bench pipeline

bench-accumulation:
	$(PYTHON) -m reproduce.tools.bench accumulation

bench-throughput:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -r requirements-bench.txt
	$(PYTHON) -m reproduce.tools.bench throughput

# BENCH_SWEEP_ARGS='--models f1 --batches 4,32 --no-figure' for a shorter run.
bench-sweep:
	$(PYTHON) -m reproduce.tools.bench sweep $(BENCH_SWEEP_ARGS)

bench-tensorboard:
	$(PYTHON) -m reproduce.tools.bench tensorboard

clean:
	rm -rf results .pytest_cache
	find . -name __pycache__ -type d -not -path "./$(VENV)/*" -exec rm -rf {} +
