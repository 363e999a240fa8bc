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

FIGURE_ARGS = --preset $(PRESET)

.PHONY: setup test clean fig-small-batch bench-pipeline bench-accumulation help

help:
	@echo "make setup [GPU=1]            create $(VENV) and install requirements"
	@echo "make test                     run the test suite"
	@echo "make fig-small-batch [PRESET=smoke|quick|paper]"
	@echo "make bench-pipeline | bench-accumulation"
	@echo "make clean                    remove results/ and caches (figures stay)"

$(PYTHON):
	$(PYTHON_SYS) -m venv $(VENV)

setup: $(PYTHON)
	$(PYTHON) -m pip install --upgrade pip
	$(PYTHON) -m pip install -r requirements.txt
ifeq ($(GPU),1)
	$(PYTHON) -m pip uninstall -y tensorflow-cpu
	$(PYTHON) -m pip install "tensorflow[and-cuda]>=2.17,<2.22" "jax[cuda12]>=0.4.30"
endif

test:
	$(PYTHON) -m pytest -q tests

fig-small-batch:
	$(PYTHON) -m reproduce.small_batch $(FIGURE_ARGS)

bench-pipeline:
	$(PYTHON) -m reproduce.bench pipeline

bench-accumulation:
	$(PYTHON) -m reproduce.bench accumulation

clean:
	rm -rf results .pytest_cache
	find . -name __pycache__ -type d -not -path "./$(VENV)/*" -exec rm -rf {} +
