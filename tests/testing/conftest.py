"""Fixtures of the LocalKeyVault emulator tests: each module has one vault (``vault``,
tests/conftest.py), put back to a clean state before every test, which counts its operations
or injects faults."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _fresh_vault(fresh: None) -> None:
    pass
