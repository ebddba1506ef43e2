# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv (if missing) and install Driftline with its dev extra.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.driftline-installed

.PHONY: demo test bench install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m driftline demo $(DEMO_ARGS)

bench: $(STAMP)
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
