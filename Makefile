# The README's two commands: `make demo` and `make test`. Both set up .venv on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install demo test benchmark clean

install: $(STAMP)

# Reinstall when the dependency list changes; -e keeps jobs/ and configs next to the code.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: install
	$(PY) jobs/pipeline.py --profile demo

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Every benchmark at small sizes, one table (a few minutes on 2 cores); README "Benchmarks" has the full sizes.
benchmark: install
	$(PY) jobs/benchmark.py --quick

clean:
	rm -rf runs .pytest_cache
