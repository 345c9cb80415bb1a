# Two entry points for a fresh clone: `make demo` and `make test`. Both build .venv by themselves.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo demo-engine test test-fast lint bench clean

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU build of torch first, pinned: a bare requirement would pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'  # dev pulls in the engine extra
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) -m worker.demo

demo-engine: install
	$(PY) -m maze_engine.examples.engine_demo

test: install
	$(PY) -m pytest -q -ra

test-fast: install
	$(PY) -m pytest -q -ra -m "not slow and not integration"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy maze_engine worker

bench: install
	for script in benchmarks/*.py; do $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) outputs .pytest_cache .mypy_cache .ruff_cache
