"""Helpers (no tests) for the Key Vault, cache and asyncio tests: KEKs over LocalKeyVault
with small backoffs and short timeouts, so that failure paths stay fast, and round trips
from many threads at once."""

from __future__ import annotations

import threading
from typing import Any

from azure.keyvault.keys import KeyClient

from envelope import Envelope
from envelope.keyvault import KeyVaultKey
from envelope.testing import LocalKeyVault

FAST = {
    "retry_backoff_factor": 0.01,
    "retry_backoff_max": 0.05,
    "connect_timeout": 2.0,
    "read_timeout": 5.0,
    "timeout": 10.0,
}


def kek(vault: LocalKeyVault, key_id: str, credential: Any = None, **options: Any) -> KeyVaultKey:
    """A KeyVaultKey for ``key_id`` (a versioned kid, or a name for the versionless id)."""
    if not key_id.startswith("https://"):
        key_id = f"{vault.url}/keys/{key_id}"
    settings = {**FAST, **options}
    return KeyVaultKey(
        key_id, credential or vault.credential, tls_policy=vault.tls_policy, **settings
    )


def admin(vault: LocalKeyVault) -> KeyClient:
    """An SDK client for lifecycle operations the tests perform (delete, rotate)."""
    return KeyClient(
        vault.url,
        vault.credential,
        verify_challenge_resource=False,
        connection_verify=vault.ca_file,
        retry_backoff_factor=0.01,
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
