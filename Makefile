# One-command set-up: every target builds .venv/ from nothing when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SCALE ?= 3

.PHONY: venv test test-browser lint format demo airflow bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

test: venv
	$(BIN)/python -m pytest tests

# the trigger form in headless Chromium (Debian's `chromium` package) on `make airflow`'s stack
test-browser: venv
	$(BIN)/python -m pytest -m browser tests/browser

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

demo: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m scalingo_staging_sync.testing.demo

airflow: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m scalingo_staging_sync.testing.demo --standalone

bench: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/run.py --scale $(SCALE)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
