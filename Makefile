# Two commands matter: `make serve` and `make test`. Everything else is a step they call.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test test-unit test-server test-e2e lint typecheck system-deps bench web clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

system-deps:
	./scripts/system-deps.sh

serve: $(STAMP)
	$(BIN)/onward serve

# The whole suite: lint, strict types, unit, real-server, and real-browser tests.
test: $(STAMP) system-deps
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q

test-unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

test-server: $(STAMP)
	$(BIN)/pytest -q tests/server

test-e2e: $(STAMP) system-deps
	$(BIN)/pytest -q tests/e2e

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build dist src/*.egg-info

# --- bench (issue 3): targets below are owned by the benchmark work ---

# --- web (issue 5): targets below are owned by the web UI work ---
