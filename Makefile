# Two commands work on a fresh clone: `make demo` (the tiny CPU demo, end to end) and `make test`.
# Each creates .venv and installs what it needs the first time.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch: on this project's machines it lies on disk (PIP_FIND_LINKS).
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test faults lint install clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# The demo's output folder is disposable: each `make demo` starts a fresh run there.
demo: $(VENV)/.installed
	rm -rf outputs/tiny-cpu-demo
	$(VENV)/bin/osstune run tiny-cpu-demo

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

# CI runs the quick fault-injection cases; `make faults` runs all of tests/faults (real tmpfs
# disks, kill -9, signals, resumed runs: several minutes) and the signal/ownership tests beside it.
test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -n auto -m "not (faults and slow)"

faults: $(VENV)/.installed
	$(PY) -m pytest -q -n auto tests/faults tests/test_run_signals.py tests/test_run_ownership.py

clean:
	rm -rf $(VENV) build *.egg-info outputs
