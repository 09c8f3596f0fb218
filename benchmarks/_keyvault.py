"""The Key Vault case and the data-key cache, through whatever the library offers.

The Key Vault key-encryption key (``envelope.keyvault.KeyVaultKey``) and the caches are
being built alongside this suite. Both are looked up at run time; until they exist the
cases that need them are reported as skipped, with the reason.
"""

from __future__ import annotations

import importlib
import inspect as pyinspect
import os
import time
from collections.abc import Callable
from typing import Any

from envelope import Envelope, KeyEncryptionKey

from ._contenders import CONTEXT, Unavailable

__all__ = ["cached_envelope_options", "keyvault_case"]

_CACHE_MODULES = ("envelope", "envelope._cache", "envelope.cache", "envelope.keyvault")


def _find_class(names: tuple[str, ...]) -> Any | None:
    for module_name in _CACHE_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        for name in names:
            found = getattr(module, name, None)
            if found is not None:
                return found
    return None


def cached_envelope_options() -> Callable[[], dict[str, Any]]:
    """A factory of the ``Envelope(...)`` keyword arguments that turn the data-key cache
    (and the unwrap cache, when there is one) on, each call making new caches.

    Raises :class:`Unavailable` when the library has no cache yet."""
    parameters = pyinspect.signature(Envelope.__init__).parameters
    data_key_cache = _find_class(("DataKeyCache",))
    unwrap_cache = _find_class(("UnwrapCache", "UnwrappedKeyCache", "DecryptCache"))
    if data_key_cache is None:
        raise Unavailable(
            "envelope has no DataKeyCache yet (looked in "
            + ", ".join(_CACHE_MODULES)
            + "; the Key Vault issue adds it)"
        )
    cache_parameters = [name for name in parameters if "cache" in name]
    data_key_parameter = next(
        (n for n in cache_parameters if "data" in n or n in {"cache", "key_cache"}), None
    )
    unwrap_parameter = next((n for n in cache_parameters if "unwrap" in n), None)
    if data_key_parameter is None:
        raise Unavailable(
            f"Envelope() takes no cache argument yet (parameters: {', '.join(parameters)})"
        )

    def options() -> dict[str, Any]:
        chosen: dict[str, Any] = {data_key_parameter: data_key_cache()}
        if unwrap_parameter is not None and unwrap_cache is not None:
            chosen[unwrap_parameter] = unwrap_cache()
        return chosen

    return options


def _keyvault_key_class() -> Any:
    try:
        module = importlib.import_module("envelope.keyvault")
    except ImportError as exc:
        raise Unavailable(f"envelope.keyvault does not exist yet ({exc})") from exc
    key_class = getattr(module, "KeyVaultKey", None)
    if key_class is None:
        raise Unavailable("envelope.keyvault has no KeyVaultKey yet")
    return key_class


def _calls(counts: dict[str, int]) -> int:
    """Key Vault REST calls, token requests excluded (they are counted apart)."""
    return sum(value for name, value in counts.items() if name != "token")


def _run_arm(
    vault: Any,
    keys: list[KeyEncryptionKey],
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
    key_class = _keyvault_key_class()
    options = cached_envelope_options()
    try:
        from envelope.testing import LocalKeyVault
    except ImportError as exc:
        raise Unavailable(f"envelope.testing.LocalKeyVault cannot be imported ({exc})") from exc

    with LocalKeyVault() as vault:
        kids = [vault.create_key(f"benchmark-layer-{i}", "RSA", 2048) for i in range(2)]
        keys = [key_class(kid, vault.credential, tls_policy=vault.tls_policy) for kid in kids]
        try:
            # Warm up outside the measurement: a token, the key bundles, the TLS sessions.
            warm = Envelope(keys)
            warm.decrypt(warm.encrypt(b"warm-up", CONTEXT), CONTEXT)
            fault = vault.inject_fault(latency=latency_s)
            try:
                uncached = _run_arm(vault, keys, dict, uncached_messages, budget_s)
                cached = _run_arm(vault, keys, options, cached_messages, budget_s * 20)
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
