"""Fixtures and helpers shared by several areas: the LocalKeyVault of a test module (core's
cache and asyncio tests, keyvault, testing), clients and KEKs over it with small backoffs and
short timeouts, so that failure paths stay fast, a credential with a fixed token (testing,
transport), and round trips from many threads at once (core, keyvault)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys._shared import http_challenge_cache

from envelope import Envelope
from envelope.keyvault import KeyVaultKey
from envelope.testing import LocalKeyVault

TIMEOUTS = {"connection_timeout": 5, "read_timeout": 10}

FAST = {
    "retry_backoff_factor": 0.01,
    "retry_backoff_max": 0.05,
    "connect_timeout": 2.0,
    "read_timeout": 5.0,
    "timeout": 10.0,
}


@pytest.fixture(scope="module")
def vault() -> Iterator[LocalKeyVault]:
    # One per module: tests of different modules create keys with the same names.
    with LocalKeyVault() as local:
        yield local


@pytest.fixture
def fresh(vault: LocalKeyVault) -> Iterator[None]:
    """The module's vault without faults, counts or challenges left by an earlier test."""
    # The SDK's challenge cache is process-global and keyed by host:port.
    http_challenge_cache.clear()
    vault.clear_faults()
    vault.reset_counts()
    yield
    vault.clear_faults()


class StaticToken:
    """A credential that presents one fixed token: for tokens the vault must refuse."""

    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3600)


def key_client(vault: LocalKeyVault, credential: Any = None, **kwargs: Any) -> KeyClient:
    """An SDK KeyClient of ``vault`` (its full-permission identity unless ``credential``)."""
    kwargs.setdefault("retry_backoff_factor", 0.01)
    return KeyClient(
        vault.url,
        credential or vault.credential,
        verify_challenge_resource=False,
        connection_verify=vault.ca_file,
        **TIMEOUTS,
        **kwargs,
    )


def kek(vault: LocalKeyVault, key_id: str, credential: Any = None, **options: Any) -> KeyVaultKey:
    """A KeyVaultKey for ``key_id`` (a versioned kid, or a name for the versionless id)."""
    if not key_id.startswith("https://"):
        key_id = f"{vault.url}/keys/{key_id}"
    settings = {**FAST, **options}
    return KeyVaultKey(
        key_id, credential or vault.credential, tls_policy=vault.tls_policy, **settings
    )


def round_trips_in_threads(
    env: Envelope, *, threads: int, messages: int
) -> tuple[list[threading.Thread], list[BaseException]]:
    """Each of ``threads`` threads encrypts and decrypts ``messages`` distinct messages
    through ``env``, checking each round trip. Returns the threads (joined, 30 s each) and
    whatever they raised."""
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(messages):
                data = f"{n}:{i}".encode()
                assert env.decrypt(env.encrypt(data)) == data
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    return workers, errors
