# Two commands matter: `make serve` and `make test`. Everything else is a step they call.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test test-unit test-server test-integration test-e2e lint typecheck system-deps bench web clean openapi

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

system-deps:
	./scripts/system-deps.sh

# bubblewrap is the command sandbox; without it Onward still serves one user (unsandboxed, with a warning).
serve: $(STAMP)
	@./scripts/system-deps.sh bubblewrap || echo "warning: bubblewrap is missing: commands will run WITHOUT a sandbox (single user only)"
	$(BIN)/onward serve

# The whole suite: lint, strict types, unit, real-server, real-Postgres and real-browser tests.
# The browser suite runs in its own pytest process: Playwright's sync API keeps an event loop
# running in the main thread, which the asyncio tests must not inherit.
test: $(STAMP) system-deps
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q tests/e2e
	./scripts/services.sh
	$(BIN)/pytest -q tests/unit tests/server tests/integration

test-unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

test-server: $(STAMP)
	$(BIN)/pytest -q tests/server

# The store against a real Postgres (services.sh starts Postgres and Redis when they are down).
test-integration: $(STAMP)
	./scripts/services.sh
	$(BIN)/pytest -q tests/integration

test-e2e: $(STAMP) system-deps
	$(BIN)/pytest -q tests/e2e

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

# The OpenAPI schema committed at docs/openapi.json (tests/unit/test_docs.py keeps it current).
openapi: $(STAMP)
	$(BIN)/python scripts/openapi.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info

# --- bench (issue 3): targets below are owned by the benchmark work ---
# `make bench`: every scenario against a real `onward serve` (< 10 min) → bench/results/latest.json,
# a dated copy, latest.png and the table in docs/performance.md. `BENCH_QUICK=1 make bench`: reduced
# sizes (< 1 min on a quiet machine), written to bench/results/latest-quick.*, docs untouched.
# BENCH_ARGS passes more options, e.g. BENCH_ARGS="--only stop --profile /tmp/prof".
BENCH_STAMP := $(VENV)/.installed-bench
BENCH_QUICK ?=

$(BENCH_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.run $(if $(filter 1 yes true,$(BENCH_QUICK)),--quick) $(BENCH_ARGS)

# Redraw bench/results/latest.png and the docs table from bench/results/latest.json.
bench-report: $(BENCH_STAMP)
	$(BIN)/python -m bench.report bench/results/latest.json --doc

.PHONY: bench-report

# --- web (issue 5): targets below are owned by the web UI work ---
# `make web` rebuilds the committed bundle in src/onward/web/ from frontend/ (npm ci from the lock
# file, vue-tsc, vite) and runs the unit tests of the front end (vitest). The build is deterministic:
# .ci/web-check.sh rebuilds and fails when the committed bundle differs from the source.
.PHONY: web web-dev web-check web-screenshots

web:
	cd frontend && npm ci --no-audit --no-fund && npm run build && npm test

# Vite's dev server on :5173 with the API proxied to a running `make serve` (ONWARD_DEV_BACKEND to change).
web-dev:
	cd frontend && npm ci --no-audit --no-fund && npm run dev

web-check:
	./.ci/web-check.sh

# Refresh the README screenshots (docs/screenshots/) from the e2e suite.
web-screenshots: $(STAMP) system-deps
	ONWARD_UPDATE_SCREENSHOTS=1 $(BIN)/pytest -q tests/e2e
