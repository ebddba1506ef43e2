# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv (if missing); `make demo` installs Driftline with what the
# demo needs (the demo extra), `make test` with everything (the dev extra,
# which includes every other extra).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_STAMP := $(VENV)/.driftline-demo-installed
DEV_STAMP := $(VENV)/.driftline-dev-installed

.PHONY: demo test bench install clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(DEMO_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[demo]'
	touch $(DEMO_STAMP)

# dev includes demo: one install serves both targets
$(DEV_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(DEV_STAMP) $(DEMO_STAMP)

install: $(DEV_STAMP)

# Two pytest processes (pytest-xdist), each with its own broker: most tests
# wait on brokers and child processes, not on the CPU (about 10 min against 20).
TEST_WORKERS ?= 2

test: $(DEV_STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

demo: $(DEMO_STAMP)
	$(PY) -m driftline demo $(DEMO_ARGS)

bench: $(DEV_STAMP)
	$(PY) bench/contract.py
	$(PY) bench/registry.py
	$(PY) bench/worker.py
	$(PY) bench/worker_window.py
	$(PY) bench/monitor_detectors.py
	$(PY) bench/faust_batch.py
	$(PY) bench/monitor.py
	$(PY) bench/monitor_estimation.py
	$(PY) bench/serving.py

clean:
	rm -rf $(VENV) .pytest_cache .driftline
