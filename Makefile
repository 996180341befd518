PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Touched after a successful install; older than pyproject.toml means reinstall.
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

.PHONY: help venv demo test lint bench clean distclean

help:
	@echo "make demo       run the bridge with a demo portal and LMS (no services needed)"
	@echo "make test       install system packages if missing, then run the tests"
	@echo "                (PYTEST_ARGS='-k token -x' passes options to pytest)"
	@echo "make lint       ruff, mypy and hadolint"
	@echo "make bench      run the benchmarks"
	@echo "make clean      remove caches and build output; distclean also removes $(VENV)"

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev]'
	touch $@

# The demo needs no servers, only a Python that can make a venv (python3-venv on Debian).
demo:
	scripts/install-system-deps.sh --demo
	$(MAKE) --no-print-directory $(STAMP)
	$(BIN)/sso-bridge demo

# The system packages come first: the tests start their own redis-server and PostgreSQL.
test:
	scripts/install-system-deps.sh
	$(MAKE) --no-print-directory $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy sso_bridge
	$(BIN)/hadolint Dockerfile

# The benchmarks start redis-server and PostgreSQL like the tests, and add pysaml2.
bench:
	scripts/install-system-deps.sh
	$(MAKE) --no-print-directory $(STAMP)
	$(BIN)/pip install -q -e '.[dev,bench]'
	$(BIN)/python bench/run.py

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
