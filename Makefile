# Every target installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install browser demo run test test-unit test-integration test-faults fuzz lint bench clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Debian's Chromium for the dashboard's browser test (never a downloaded browser).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "make: installing Debian's chromium for the browser test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "make: the browser test needs Chromium: run 'sudo apt-get install chromium' first"; exit 1; \
	  fi; }

## The main job on embedded defaults: whole system, one 25-order batch, then stop.
demo: $(STAMP)
	$(BIN)/python -m orchestrator.local.demo

## The same system (plus Flower) kept running until Ctrl-C; prints the URLs and an API token.
run: $(STAMP)
	$(BIN)/python -m orchestrator.local.demo --run

## The whole suite: lint, unit tests (SQLite and PostgreSQL), integration tests on real processes,
## the fault suite, in two processes (pytest-xdist, each with a redis-server of its own; a test
## module stays on one worker, so its running stack serves all its tests). PYTEST_WORKERS=0: in one.
PYTEST_WORKERS ?= 2
test: $(STAMP) browser lint
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadscope

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

test-integration: $(STAMP) browser
	$(BIN)/python -m pytest tests/integration

## The fault suite alone (docs/reliability.md); `make test` runs it too.
test-faults: $(STAMP)
	$(BIN)/python -m pytest tests/faults

## The property-based and schema-driven tests (marker `hypothesis`) with fresh randomness and
## six times the examples of `make test` (profile "fuzz", tests/conftest.py); about 10 minutes,
## stopped after 15 whatever happens.
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz timeout --signal=INT 900 $(BIN)/python -m pytest -m hypothesis -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
