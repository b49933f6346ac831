# Two entry points do all set-up on a fresh machine:
#   make quickstart   render the built-in dataset, train DisDiff, evaluate, write a report
#   make test         run the test suite
# Both create .venv and install what they need; torch is pinned to 2.13.0 (the CPU wheel).

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
OUT ?= disdiff_quickstart

.PHONY: setup test test-slow quickstart bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $@

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

quickstart: setup
	$(VENV)/bin/disdiff quickstart --out $(OUT) $(if $(SEED),--seed $(SEED))

bench: setup
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache
