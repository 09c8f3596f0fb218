"""Fixtures of the KeyVaultKey tests: the module's LocalKeyVault (``vault``, tests/conftest.py)
is put back to a clean state before every test, which counts its operations or injects faults;
``hostile`` is a vault a test scripts (tests/keyvault/hostile.py), new for every test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from tests.keyvault.hostile import ScriptedVault, scripted_vault
from tests.transport.servers import Certificates, issue_certificates

#: Every variable that names a credential to azure-identity's DefaultAzureCredential.
IDENTITY_VARIABLES = (
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
)

#: One counter for every module that imports ``unique``: a name is never drawn twice.
_names = itertools.count()


def unique(prefix: str) -> str:
    """A key or identity name that no other test of the process has used."""
    return f"{prefix}-{next(_names)}"


@pytest.fixture
def no_identity(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """An environment naming no credential at all."""
    for name in IDENTITY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


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
