# Two set-up commands: `make demo` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint venv clean

venv: $(STAMP)

# torch is pinned to the local CPU wheel first, so that `torch>=2.4` in
# pyproject.toml is already satisfied and pip never fetches CUDA packages.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP) lint
	$(VENV)/bin/mlip lammps build
	$(VENV)/bin/pytest -q tests

demo: $(STAMP)
	$(VENV)/bin/mlip lammps build
	$(VENV)/bin/mlip demo

clean:
	rm -rf $(VENV) build *.egg-info
