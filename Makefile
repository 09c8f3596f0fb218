# The two commands of the README. Each creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: bench bench-quick test lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# The distribution was called "envelope" before it became layered-envelope.
	$(PY) -m pip uninstall --quiet --yes envelope 2>/dev/null || true
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

## make bench: the benchmark suite on the embedded defaults (local keys, local Key Vault)
bench: $(STAMP)
	$(PY) -m benchmarks

bench-quick: $(STAMP)
	$(PY) -m benchmarks --quick

## make test: every check (ruff, ruff format, mypy strict, pytest)
test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m pytest

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
