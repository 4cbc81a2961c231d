# Two commands on a fresh machine (Python 3.11 + make): `make demo`, `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-unit test-integration lint bench clean down

$(BIN)/python:
	$(PY) -m venv $(VENV) || python3 -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,postgres]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/corral demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy corral cluster deployments pipelines explain monitoring serving
	$(BIN)/pytest -x --timeout 600 -q tests/unit tests/integration tests/e2e

test-unit: $(STAMP)
	$(BIN)/pytest -x --timeout 120 -q tests/unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy corral cluster deployments pipelines explain monitoring serving

bench: $(STAMP)
	$(BIN)/python -m benchmarks.core

down: $(STAMP)
	$(BIN)/corral down

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
