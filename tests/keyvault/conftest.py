"""Fixtures of the KeyVaultKey tests: the module's LocalKeyVault (``vault``, tests/conftest.py)
is put back to a clean state before every test, which counts its operations or injects faults;
``hostile`` is a vault a test scripts (tests/keyvault/hostile.py), new for every test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.keyvault.hostile import ScriptedVault, scripted_vault
from tests.transport.servers import Certificates, issue_certificates


@pytest.fixture(autouse=True)
def _fresh_vault(fresh: None) -> None:
    pass


@pytest.fixture(scope="module")
def certs() -> Certificates:
    return issue_certificates()


@pytest.fixture
def hostile(certs: Certificates) -> Iterator[ScriptedVault]:
    with scripted_vault(certs) as vault:
        yield vault
