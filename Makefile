# Fresh machine: `make train` (set up + train the default agent + record a lap) or `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup train test bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	# torch first and pinned: a bare `torch` would pull the multi-GB CUDA build here
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[dev,bench,ray]"
	touch $(STAMP)

setup: $(STAMP)

train: $(STAMP)
	$(PY) -m kartsim quickstart

# the checks first (seconds), then the tests: lint (ruff: errors, unused names, complexity), dead code
# (vulture), the architecture (import-linter contracts in pyproject.toml: layers, no cycles)
test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m vulture
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/env_speed.py

clean:
	rm -rf $(VENV) build *.egg-info
