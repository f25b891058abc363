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

test: lint
	$(PY) -m pytest

# ruff, mypy and the import contracts. mypy and import-linter read packages from the file
# system, so they check a mirror of the adaptd.* namespace (.ci/lint_tree.py).
lint: install
	$(VENV)/bin/ruff check daemon streams adapters tui tests bench .ci
	$(PY) .ci/lint_tree.py build/lint >/dev/null
	cd build/lint && $(CURDIR)/$(VENV)/bin/mypy --config-file $(CURDIR)/pyproject.toml -p adaptd
	PYTHONPATH=build/lint $(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) .adaptd .pytest_cache build
