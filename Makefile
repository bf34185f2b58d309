# `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit faults services bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

services:
	@scripts/ensure-services.sh

demo: $(STAMP) services
	$(BIN)/python services/demo.py

lint: $(STAMP)
	$(BIN)/ruff check broadcaster schemas services tests scripts
	$(BIN)/ruff format --check broadcaster schemas services tests scripts

typecheck: $(STAMP)
	$(BIN)/mypy broadcaster schemas

unit: $(STAMP) services
	$(BIN)/pytest -m "not faults"

faults: $(STAMP) services
	$(BIN)/pytest -m faults

test: lint typecheck unit faults

clean:
	rm -rf $(VENV) services/.data .mypy_cache .ruff_cache .pytest_cache
