# The two commands a new user runs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch is pinned on the same pip line as everything that depends on it, so pip
# keeps the local CPU wheel instead of swapping in a multi-GB CUDA build.
TORCH  ?= torch==2.13.0

.PHONY: install demo test lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH) -e '.[test,dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/monoscope demo --studies --out runs/demo

lint: install
	$(VENV)/bin/ruff check src tests scripts benchmarks
	$(VENV)/bin/ruff format --check src tests scripts benchmarks

test: install lint
	$(VENV)/bin/pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
