# The README's two commands: `make demo` and `make test`. Both set up .venv on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Which faiss (and, for gpu, which torch build): gpu where nvidia-smi sees a GPU, else cpu; `make install FAISS=cpu`
# overrides. The other build is removed first: both install the same `faiss` package over each other.
FAISS ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
OTHER_FAISS := $(if $(filter gpu,$(FAISS)),faiss-cpu,faiss-gpu-cu12)

.PHONY: install demo test benchmark clean

install: $(STAMP)

# Reinstall when the dependency list changes; -e keeps jobs/ and configs next to the code.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip uninstall --quiet --yes $(OTHER_FAISS)
	$(PY) -m pip install --quiet -e ".[dev,$(FAISS)]"
	touch $(STAMP)

demo: install
	$(PY) jobs/pipeline.py --profile demo

test: install
	$(PY) -m pytest -q --durations=25 $(PYTEST_ARGS)

# Every benchmark at small sizes, one table (a few minutes on 2 cores); README "Benchmarks" has the full sizes.
benchmark: install
	$(PY) jobs/benchmark.py --quick

clean:
	rm -rf runs .pytest_cache
