# Two commands set up a fresh machine and run everything:
#   make quickstart   the main job
#   make test         lint + the whole test suite (what CI runs)
# Set-up is a dependency of both: a virtual environment in .venv with the CPU build of torch
# (installed first, so no dependency pulls a CUDA build), then lossweep and its dev extra.

VENV  ?= .venv
BIN    = $(VENV)/bin
TORCH ?= torch==2.13.0
DATA  ?= ../shared/data
PYTEST_ARGS ?=
# Two test processes: a Ray trial leaves about half of 2 cores idle (start-up, imports, polling).
# tests/conftest.py orders the tests and keeps those sharing a fixture in one process.
TEST_WORKERS ?= 2
# Tests and the quickstart call the lossweep, ray and mlflow commands of this environment.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install quickstart sweep test lint bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

quickstart: install
	LOSSWEEP_DATA_DIR=$(DATA) $(BIN)/lossweep sweep experiments/quickstart.yaml --resume

# Any shipped experiment, set-up included: make sweep SPEC=experiments/cranfield-compare.yaml
SPEC ?= experiments/quickstart.yaml
sweep: install
	LOSSWEEP_DATA_DIR=$(DATA) $(BIN)/lossweep sweep $(SPEC) --resume

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	LOSSWEEP_DATA_DIR=$(DATA) $(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

# Each benchmark prints its table and writes bench/results/<name>.json (see BENCHMARKS.md).
BENCHMARKS = ray_overhead trial_overhead gather_exact eval_dims memory search_efficiency data_passes adaptive_seeds train_vs_st lora_vs_full eval_memory sampled_eval encode_cluster
bench: install
	cd bench && for b in $(BENCHMARKS); do LOSSWEEP_DATA_DIR=$(abspath $(DATA)) ../$(BIN)/python $$b.py || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
