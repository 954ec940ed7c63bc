# faasd-py: `make run` starts the platform with a sample function; `make test` runs every test.
# Both set up everything they need first (a venv in .venv with the project installed).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint typecheck unit bench-warm bench-crosscheck clean

$(STAMP): pyproject.toml
	@echo "==> creating $(VENV) and installing faasd-py with its dev extra"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(STAMP)

run: install
	$(BIN)/faasd-py up --deploy examples/stack.yml

lint: install
	$(BIN)/ruff check faasd_py tests bench
	$(BIN)/ruff format --check faasd_py tests bench

typecheck: install
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest

bench-warm: install
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/warm.py

bench-crosscheck: install
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/crosscheck.py

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache
