# adaptd developer entry points. `make run` and `make test` set everything up first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install run demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# Start the daemon in embedded mode (file log + DuckDB under ./.adaptd).
run: install
	$(VENV)/bin/adaptd up

# The whole loop in one terminal: a daemon, a mock provider, three DSPy programs and a
# scripted story of faults, shown in the dashboard (`adaptd demo --headless` prints it).
demo: install
	$(VENV)/bin/adaptd demo

test: install
	$(PY) -m pytest

lint: install
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) .adaptd .pytest_cache
