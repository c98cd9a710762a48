# One entry point for set-up, lint and tests.  `make test` works on a fresh clone:
# it creates .venv, installs the package with its test and cluster (Ray) extras, then lints
# and tests.
#
# pip runs with --isolated so that it takes the package index's default torch build
# and a torchvision built against it, whatever local pip settings prefer.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

# Data root: an explicit BALANCE_DATA wins; a project checkout with ../shared/data uses it;
# otherwise the library's default (a user cache folder, downloading when online).
ifeq ($(origin BALANCE_DATA), undefined)
ifneq ($(wildcard ../shared/data),)
export BALANCE_DATA := $(abspath ../shared/data)
endif
endif

.PHONY: install test lint sweep figures bench
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --isolated --disable-pip-version-check -q -e ".[test,cluster]"
	touch $@

lint: install
	$(PY) -m ruff check balance experiments proofs_checks paper_figures benchmarks tests

test: lint
	$(PY) -m pytest

sweep: install
	$(PY) experiments/kappa_sweep.py

figures: install
	$(PY) -m paper_figures

bench: install
	$(PY) -m benchmarks
