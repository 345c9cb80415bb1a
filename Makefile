# Two entry points for a fresh clone: `make demo` and `make test`. Both build .venv by themselves and find or
# provision RabbitMQ (unless MAZE_AMQP_URL names one): the local install, started and its consistent-hash
# plugin enabled, else a Docker container, else one message with the ways to get one
# (worker/broker/provision.py).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install broker demo demo-engine test test-fast lint bench clean

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU build of torch first, pinned: a bare requirement would pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'  # dev pulls in the engine extra
	touch $(STAMP)

install: $(STAMP)

broker: install
	$(PY) -m worker.broker.provision

demo: install
	$(PY) -m worker.demo

demo-engine: install
	$(PY) -m maze_engine.examples.engine_demo

# The broker tests never skip here: no broker to be had stops the run with the message saying how to get one.
test: install
	MAZE_REQUIRE_BROKER=1 $(PY) -m pytest -q -ra

test-fast: install
	$(PY) -m pytest -q -ra -m "not slow and not integration"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy maze_engine worker

bench: install
	for script in benchmarks/*.py; do $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) outputs .pytest_cache .mypy_cache .ruff_cache
