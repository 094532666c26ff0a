# The two commands a new user runs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch is pinned on the same pip line as everything that depends on it, so pip
# keeps the local CPU wheel instead of swapping in a multi-GB CUDA build.
TORCH  ?= torch==2.13.0

.PHONY: install demo test test-openclip lint clean

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
	$(VENV)/bin/mypy

test: install lint
	$(VENV)/bin/pytest -q

# open_clip, dictionary_learning and saev need torchvision, which cannot load beside the CPU
# torch wheel above: their tests run in a second environment (about 7 GB and 1.5 min from the
# local wheels), where they must not skip.
OPENCLIP_VENV  ?= .venv-openclip
OPENCLIP_TORCH ?= torch==2.14.1 torchvision==0.29.1
OPENCLIP_TESTS := tests/test_encoders_openclip.py tests/test_interop_torchvision.py

$(OPENCLIP_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(OPENCLIP_VENV)
	$(OPENCLIP_VENV)/bin/python -m pip install -q --upgrade pip
	$(OPENCLIP_VENV)/bin/python -m pip install -q $(OPENCLIP_TORCH) -e '.[test,test-torchvision]'
	touch $@

test-openclip: $(OPENCLIP_VENV)/.installed
	MONOSCOPE_REQUIRE_EXTRAS=1 $(OPENCLIP_VENV)/bin/pytest -q $(OPENCLIP_TESTS)

clean:
	rm -rf $(VENV) $(OPENCLIP_VENV) runs .pytest_cache .ruff_cache .mypy_cache
