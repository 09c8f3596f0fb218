"""The Key Vault case: envelope over KeyVaultKey layers in a LocalKeyVault that adds latency
to every operation, measured with the data-key and unwrap caches off, then on."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from envelope import DataKeyCache, Envelope, KeyEncryptionKey, UnwrapCache
from envelope.keyvault import KeyVaultKey

from ._contenders import CONTEXT, Unavailable

__all__ = ["cache_options", "keyvault_case"]


def cache_options() -> dict[str, Any]:
    """The ``Envelope(...)`` keyword arguments that turn both caches on, with new caches."""
    return {"data_key_cache": DataKeyCache(), "unwrap_cache": UnwrapCache()}


def _calls(counts: dict[str, int]) -> int:
    """Key Vault REST calls, token requests excluded (they are counted apart)."""
    return sum(value for name, value in counts.items() if name != "token")


def _run_arm(
    vault: Any,
    keys: Sequence[KeyEncryptionKey],
    options: Callable[[], dict[str, Any]],
    messages: int,
    budget_s: float,
) -> dict[str, Any]:
    """Encrypt up to ``messages`` 1 KiB messages (stopping early after ``budget_s``), then
    decrypt the same number, counting the vault's operations for each phase."""
    env = Envelope(keys, **options())
    data = os.urandom(1024)
    blobs: list[bytearray] = []
    vault.reset_counts()
    start = time.perf_counter()
    while len(blobs) < messages:
        blobs.append(env.encrypt(data, CONTEXT))
        if time.perf_counter() - start > budget_s:
            break
    encrypt_s = time.perf_counter() - start
    encrypt_counts = dict(vault.operation_counts())
    vault.reset_counts()
    # The receiver is another envelope (its own caches): a decrypt must not profit from
    # what the sender's cache holds.
    receiver = Envelope(keys, **options())
    start = time.perf_counter()
    for blob in blobs:
        if receiver.decrypt(blob, CONTEXT) != data:
            raise AssertionError("Key Vault round trip failed")
    decrypt_s = time.perf_counter() - start
    decrypt_counts = dict(vault.operation_counts())
    count = len(blobs)
    encrypt_calls = _calls(encrypt_counts)
    decrypt_calls = _calls(decrypt_counts)
    return {
        "messages": count,
        "messages_requested": messages,
        "encrypt_s": encrypt_s,
        "decrypt_s": decrypt_s,
        "encrypt_messages_per_s": count / encrypt_s,
        "decrypt_messages_per_s": count / decrypt_s,
        "round_trips_per_s": count / (encrypt_s + decrypt_s),
        "encrypt_calls_per_message": encrypt_calls / count,
        "decrypt_calls_per_message": decrypt_calls / count,
        "calls_per_message": (encrypt_calls + decrypt_calls) / count,
        "encrypt_operations": encrypt_counts,
        "decrypt_operations": decrypt_counts,
    }


def keyvault_case(
    *, cached_messages: int, uncached_messages: int, latency_s: float, budget_s: float
) -> dict[str, Any]:
    """Two RSA-2048 layers in a ``LocalKeyVault`` with ``latency_s`` added to every Key
    Vault operation: 1 KiB messages encrypted then decrypted, caches off, then on."""
    try:
        from envelope.testing import LocalKeyVault
    except ImportError as exc:
        raise Unavailable(f"envelope.testing.LocalKeyVault cannot be imported ({exc})") from exc

    with LocalKeyVault() as vault:
        kids = [vault.create_key(f"benchmark-layer-{i}", "RSA", 2048) for i in range(2)]
        keys = [KeyVaultKey(kid, vault.credential, tls_policy=vault.tls_policy) for kid in kids]
        try:
            # Warm up outside the measurement: a token, the key bundles, the TLS sessions.
            warm = Envelope(keys)
            warm.decrypt(warm.encrypt(b"warm-up", CONTEXT), CONTEXT)
            fault = vault.inject_fault(latency=latency_s)
            try:
                uncached = _run_arm(vault, keys, dict, uncached_messages, budget_s)
                cached = _run_arm(vault, keys, cache_options, cached_messages, budget_s * 20)
            finally:
                fault.remove()
        finally:
            for key in keys:
                key.close()
    ratio = (
        cached["calls_per_message"] / uncached["calls_per_message"]
        if uncached["calls_per_message"]
        else None
    )
    return {
        "latency_s": latency_s,
        "layers": "2 x RSA-2048 (RSA-OAEP-256)",
        "without_cache": uncached,
        "with_cache": cached,
        "calls_ratio": ratio,
        "speedup": cached["round_trips_per_s"] / uncached["round_trips_per_s"],
    }
