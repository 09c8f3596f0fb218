# The two commands of the README. Each creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: bench bench-quick test lint clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# The distribution was called "envelope" before it became layered-envelope.
	$(PY) -m pip uninstall --quiet --yes envelope 2>/dev/null || true
	$(PY) -m pip install --quiet -e '.[dev,bench,blob]'
	touch $(STAMP)

## make bench: the benchmark suite on the embedded defaults (local keys, local Key Vault)
bench: $(STAMP)
	ENVELOPE_AZURITE="$$(.ci/install-azurite)" $(PY) -m benchmarks

bench-quick: $(STAMP)
	ENVELOPE_AZURITE="$$(.ci/install-azurite)" $(PY) -m benchmarks --quick

## make test: every check (ruff, ruff format, mypy strict, pytest); the blob tests run
## Azurite, which .ci/install-azurite installs (pinned, into a cache) on first use
test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	ENVELOPE_AZURITE="$$(.ci/install-azurite)" $(PY) -m pytest

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
