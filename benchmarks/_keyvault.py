"""The Key Vault cases: envelope over KeyVaultKey layers in a LocalKeyVault that adds latency
to every operation, measured with the data-key and unwrap caches off, then on; and Key Vault
under load: bursts of concurrent tasks, cold and warm, and failover to a layer's other
vault."""

from __future__ import annotations

import asyncio
import os
import ssl
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from azure.keyvault.keys._shared import http_challenge_cache

from envelope import DataKeyCache, Envelope, KeyEncryptionKey, LocalKey, UnwrapCache
from envelope.keyvault import KeyVaultKey

from ._contenders import CONTEXT, Unavailable

__all__ = ["LoadPlan", "cache_options", "keyvault_case", "keyvault_load_case"]


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


# -- Key Vault under load ---------------------------------------------------------------------


@dataclass(frozen=True)
class LoadPlan:
    """The sizes of the under-load case: concurrent tasks per burst, sequential decrypts
    timed after a vault went down, and the settings of the key in the vault that goes down
    (the defaults in the full run: the first failure then costs what it costs a user)."""

    tasks: int
    failover_messages: int
    down_key: dict[str, float]

    @classmethod
    def of(cls, quick: bool) -> LoadPlan:
        if quick:
            return cls(100, 20, {"read_timeout": 1.0, "connect_timeout": 1.0, "timeout": 2.0})
        return cls(1000, 100, {})


LOAD_DATA = 4096


def _percentile(samples: Sequence[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _load_keys(vault: Any, names: Sequence[str], **options: Any) -> list[KeyVaultKey]:
    """New keys with a new credential: no token, no bundle, no connection."""
    credential = vault.get_credential()
    return [
        KeyVaultKey(f"{vault.url}/keys/{name}", credential, tls_policy=vault.tls_policy, **options)
        for name in names
    ]


def _burst(vault: Any, env: Envelope, tasks: int) -> dict[str, Any]:
    """``tasks`` concurrent asyncio tasks, each one 4 KiB message encrypted then decrypted:
    messages/s, Key Vault calls per message, the latency of a round trip, the errors."""
    latencies: list[float] = []

    async def one(n: int) -> None:
        data = os.urandom(LOAD_DATA)
        started = time.perf_counter()
        blob = await env.encrypt_async(data, CONTEXT)
        if await env.decrypt_async(blob, CONTEXT) != data:
            raise AssertionError("Key Vault round trip failed")
        latencies.append(time.perf_counter() - started)

    async def run() -> list[BaseException | None]:
        return await asyncio.gather(*(one(n) for n in range(tasks)), return_exceptions=True)

    vault.reset_counts()
    started = time.perf_counter()
    results = asyncio.run(run())
    elapsed = time.perf_counter() - started
    counts = dict(vault.operation_counts())
    errors = [r for r in results if isinstance(r, BaseException)]
    kinds: dict[str, int] = {}
    for error in errors:
        kind = f"{type(error).__name__}: {str(error)[:160]}"
        kinds[kind] = kinds.get(kind, 0) + 1
    return {
        "tasks": tasks,
        "seconds": elapsed,
        "messages_per_s": (tasks - len(errors)) / elapsed,
        "calls_per_message": _calls(counts) / tasks,
        "operations": counts,
        "p50_s": _percentile(latencies, 0.5) if latencies else None,
        "p99_s": _percentile(latencies, 0.99) if latencies else None,
        "errors": len(errors),
        "error_kinds": kinds,
    }


def _request_cost(vault: Any, requests: int = 300) -> dict[str, float]:
    """What one request costs LocalKeyVault on loopback: sequential unwraps of an oct-HSM
    key over one kept-alive connection (plain httpx, no SDK), median and p95 in ms."""
    import httpx

    from envelope.testing._identity import b64url_encode

    kid = vault.create_key("request-cost", "oct-HSM")
    headers = {"Authorization": f"Bearer {vault.issue_token()}"}
    context = ssl.create_default_context(cafile=vault.ca_file)
    query = "?api-version=7.6"
    with httpx.Client(verify=context) as client:
        wrapped = client.post(
            f"{kid}/wrapkey{query}",
            headers=headers,
            json={"alg": "A256KW", "value": b64url_encode(os.urandom(32))},
        ).json()["value"]
        samples = []
        for _ in range(requests + 20):
            started = time.perf_counter()
            reply = client.post(
                f"{kid}/unwrapkey{query}", headers=headers, json={"alg": "A256KW", "value": wrapped}
            )
            samples.append(time.perf_counter() - started)
            if reply.status_code != 200:
                raise AssertionError(f"LocalKeyVault answered {reply.status_code}")
    measured = samples[20:]  # the first ones warm the connection and the interpreter
    return {
        "median_ms": statistics.median(measured) * 1000,
        "p95_ms": _percentile(measured, 0.95) * 1000,
    }


def _failover(vault: Any, how: str, plan: LoadPlan) -> dict[str, Any]:
    """A layer of two KEKs whose first vault hangs (every request waits until the vault
    closes) or refuses connections: the first decrypt, then ``plan.failover_messages``
    sequential decrypts, each timed."""
    from envelope.testing import LocalKeyVault

    name = f"failover-{how}"
    vault.create_key(name, "RSA")
    with LocalKeyVault() as other:
        other.create_key(name, "RSA")
        down = _load_keys(other, [name], **plan.down_key)[0]
        up = _load_keys(vault, [name])[0]
        try:
            env = Envelope([[down, up], LocalKey.generate()])
            blobs = [env.encrypt(b"failover", CONTEXT) for _ in range(plan.failover_messages + 1)]
            if how == "hung":
                other.inject_fault(latency=60)
            else:
                down.close()  # no kept-alive connection: the next request has to connect
                other.close()
            started = time.perf_counter()
            env.decrypt(blobs[0], CONTEXT)
            first = time.perf_counter() - started
            after = []
            for blob in blobs[1:]:
                started = time.perf_counter()
                env.decrypt(blob, CONTEXT)
                after.append(time.perf_counter() - started)
        finally:
            down.close()
            up.close()
    return {
        "down_key_settings": plan.down_key or "defaults",
        "first_s": first,
        "messages_after": len(after),
        "p50_after_s": _percentile(after, 0.5),
        "p95_after_s": _percentile(after, 0.95),
        "max_after_s": max(after),
    }


def keyvault_load_case(*, quick: bool) -> dict[str, Any]:
    """Bursts of concurrent asyncio tasks over an RSA layer and an oct-HSM layer in a
    ``LocalKeyVault`` (no added latency), cold (new keys, credential and caches) then warm
    (the same again), caches off and on; what one request costs the vault; and failover
    with one of a layer's two vaults hung, then refusing connections."""
    try:
        from envelope.testing import LocalKeyVault
    except ImportError as exc:
        raise Unavailable(f"envelope.testing.LocalKeyVault cannot be imported ({exc})") from exc

    plan = LoadPlan.of(quick)
    names = ("load-rsa", "load-oct")
    arms: dict[str, dict[str, Any]] = {}
    with LocalKeyVault() as vault:
        vault.create_key(names[0], "RSA", 2048)
        vault.create_key(names[1], "oct-HSM", 256)
        for label, options in (("without_cache", dict), ("with_cache", cache_options)):
            http_challenge_cache.clear()
            keys = _load_keys(vault, names)
            try:
                env = Envelope(keys, **options())
                arms[label] = {
                    "cold": _burst(vault, env, plan.tasks),
                    "warm": _burst(vault, env, plan.tasks),
                }
            finally:
                for key in keys:
                    key.close()
        request = _request_cost(vault)
        failover = {how: _failover(vault, how, plan) for how in ("hung", "refusing")}
    return {
        "layers": "RSA-2048 (wraps local, unwraps by the vault) + oct-HSM (both by the vault)",
        "message_bytes": LOAD_DATA,
        "arms": arms,
        "request": request,
        "failover": failover,
    }
