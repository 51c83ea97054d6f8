# Everything a fresh machine needs: `make demo` runs the main flow, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROTOS := $(wildcard protos/workbench/v1/*.proto)

.PHONY: setup demo test lint up down status clean

setup: $(VENV)/.installed node_modules/.installed

# Re-installing regenerates the gRPC stubs whenever a contract changes.
$(VENV)/.installed: pyproject.toml sdk/python/pyproject.toml sdk/python/setup.py runtime/python/pyproject.toml $(PROTOS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ./sdk/python -e ./runtime/python -e '.[test,local]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

# Contracts: buf's STANDARD lint, and no breaking change against the previous commit.
lint: setup
	cd protos && ../node_modules/.bin/buf lint
	cd protos && ../node_modules/.bin/buf breaking --against '../.git#ref=HEAD~1,subdir=protos'

test: setup lint
	$(PY) -m pytest

demo: setup
	$(VENV)/bin/workbench-dev demo

up down status: setup
	$(VENV)/bin/workbench-dev $@

clean:
	rm -rf $(VENV) node_modules sdk/python/src/workbench/v1 build
