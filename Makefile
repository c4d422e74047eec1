# callgate: `make run` (demo on the embedded default) and `make test` (the whole suite).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
# auto = the embedded default, plus PostgreSQL+Redis when they answer on 127.0.0.1
CALLGATE_TEST_BACKENDS ?= auto
export CALLGATE_TEST_BACKENDS

.PHONY: setup run test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "callgate needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

run: setup
	$(BIN)/callgate migrate
	$(BIN)/callgate demo
	$(BIN)/callgate serve

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

test: lint
	$(BIN)/pytest -q

bench: setup
	$(BIN)/python -m bench.load --help

clean:
	rm -rf $(VENV) callgate.db* spool .pytest_cache .mypy_cache .ruff_cache
