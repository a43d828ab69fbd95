# Two commands for a fresh machine (both set up .venv first, idempotently):
#   make run    the main job on the embedded default config (offline, CPU)
#   make test   the test suite
# Extra arguments: make run ARGS="-n"   make test PYTEST_ARGS="-k tasks"

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch first: a bare `torch` requirement would pull GBs of CUDA wheels.
TORCH ?= torch==2.13.0
CORES ?= 2

.PHONY: setup run test

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

run: setup
	$(BIN)/python -m snakemake --cores $(CORES) $(ARGS)

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)
