# `make demo` and `make test` do all the set-up on a fresh machine.
#
# Supported pairs, each in a venv of its own (see docs/index.md "Supported versions"):
#   .venv                 Python 3.13 + Django 6.1: lint, types, the whole suite, fault tests
#   .venv-py312-django60  Python 3.12 + Django 6.0: the suite without fault tests
#   .venv-py311-django52  Python 3.11 + Django 5.2: the suite without fault tests
# Interpreters come from PATH or pyenv (installed by pyenv when missing); name one with
# e.g. `make test PYTHON311=/opt/python3.11/bin/python3.11`.
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
VENV312 := .venv-py312-django60
VENV311 := .venv-py311-django52

.PHONY: demo test lint typecheck suite faults suite-py312 suite-py311 services bench docs clean

# $(call venv,DIR,X.Y,DJANGO-REQUIREMENT): a venv on Python X.Y with the project, its dev extras
# and that Django. The interpreter is looked up only when a venv is (re)built.
define venv
	scripts/mysql-build-deps.sh
	-scripts/browser-deps.sh
	rm -rf $(1)
	py='$(PYTHON$(subst .,,$(2)))'; py=$${py:-$$(scripts/find-python.sh $(2))} && $$py -m venv $(1)
	$(1)/bin/python -m pip install --quiet --upgrade pip
	$(1)/bin/python -m pip install --quiet -e '.[dev]' '$(3)'
	touch $(1)/.installed
endef

$(STAMP): pyproject.toml
	$(call venv,$(VENV),3.13,Django~=6.1.0)

# One venv at a time (order-only prerequisites): editable installs write into this tree.
$(VENV312)/.installed: pyproject.toml | $(STAMP)
	$(call venv,$(VENV312),3.12,Django~=6.0.0)

$(VENV311)/.installed: pyproject.toml | $(VENV312)/.installed
	$(call venv,$(VENV311),3.11,Django~=5.2.0)

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
	$(BIN)/pytest -m "not faults" --durations=15

faults: $(STAMP) services
	$(BIN)/pytest -m faults --durations=15

suite-py312: $(VENV312)/.installed services
	$(VENV312)/bin/pytest -m "not faults" -q

suite-py311: $(VENV311)/.installed services
	$(VENV311)/bin/pytest -m "not faults" -q

# The three suites spend most of their time waiting on the broker and the databases, and
# each has test databases and broker names of its own, so they run side by side (each
# one's output is printed whole as it finishes; the older pairs' venvs are built while
# the first suite runs). The fault tests restart RabbitMQ and the cluster tests load the
# machine with three more nodes, so they run after, one at a time.
test:
	$(MAKE) --no-print-directory -j1 lint typecheck
	$(MAKE) --no-print-directory -j3 --output-sync=target suite suite-py312 suite-py311
	$(MAKE) --no-print-directory -j1 faults cluster

# Fault tests on a three-node RabbitMQ cluster (scripts/cluster.sh); the test session starts
# the cluster when it is not running (about half a minute) and stops it afterwards.
.PHONY: cluster
cluster: $(STAMP) services
	$(BIN)/pytest -m cluster --durations=15

# Raw pika baselines, FastStream and the library in one run; writes bench/results/ (see
# bench/README.md; docs/performance.md reads the figures). `make bench BENCH_ARGS=--quick`
# checks in seconds that every scenario runs. The bench extra (FastStream, compared
# against) goes into the venv only for this target.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(STAMP) $(BENCH_STAMP) services
	$(BIN)/python -m bench $(BENCH_ARGS)

# The guide in docs/, with the reference pages generated from the code; fails on any warning.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir build/docs

clean:
	rm -rf $(VENV) $(VENV312) $(VENV311) services/.data .mypy_cache .ruff_cache .pytest_cache
