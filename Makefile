# `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The oldest supported Django LTS gets a venv of its own for the unit tests.
VENV42 := .venv-django42
STAMP42 := $(VENV42)/.installed

.PHONY: demo test lint typecheck suite django42 faults services bench docs clean

# $(call venv,DIR,EXTRA-REQUIREMENTS): a venv with the project and its dev extras.
define venv
	scripts/mysql-build-deps.sh
	$(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install --quiet --upgrade pip
	$(1)/bin/python -m pip install --quiet -e '.[dev]' $(2)
	touch $(1)/.installed
endef

$(STAMP): pyproject.toml
	$(call venv,$(VENV),)

$(STAMP42): pyproject.toml
	$(call venv,$(VENV42),'Django~=4.2.0')

services:
	@scripts/ensure-services.sh

demo: $(STAMP) services
	$(BIN)/python services/demo.py

lint: $(STAMP)
	$(BIN)/ruff check broadcaster schemas services tests bench docs
	$(BIN)/ruff format --check broadcaster schemas services tests bench docs

typecheck: $(STAMP)
	$(BIN)/mypy broadcaster schemas

suite: $(STAMP) services
	$(BIN)/pytest -m "not faults"

django42: $(STAMP42) services
	$(VENV42)/bin/pytest -m "not faults" --ignore=tests/integration -q

faults: $(STAMP) services
	$(BIN)/pytest -m faults

test: lint typecheck suite django42 faults

# Raw pika baselines and the library in one run; writes bench/results/ (see bench/README.md).
# The bench extra (FastStream, compared against) goes into the venv only for this target.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(STAMP) $(BENCH_STAMP) services
	$(BIN)/python -m bench

# The guide in docs/, with the reference pages generated from the code; fails on any warning.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir build/docs

clean:
	rm -rf $(VENV) $(VENV42) services/.data .mypy_cache .ruff_cache .pytest_cache
