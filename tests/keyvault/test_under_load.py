# mypy: allow-untyped-defs, allow-incomplete-defs
"""KeyVaultKey under concurrent load, against LocalKeyVault (real TLS, the real SDK): cold
bursts of 1,000 asyncio tasks and of 16 threads x 200 messages, with the caches and without,
then with faults injected during the burst, and event loops that come and go."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from azure.keyvault.keys._shared import http_challenge_cache

from envelope import DataKeyCache, Envelope, KeyAccessError, UnwrapCache
from envelope.keyvault import KeyVaultKey
from envelope.testing import LocalKeyVault
from tests.conftest import round_trips_in_threads, run_threads

TASKS = 1000
THREADS, PER_THREAD = 16, 200
# Without the caches every message costs three requests to the in-process vault (~5 ms of
# CPU each here, all under one GIL): 16 x 200 would take about a minute, 16 x 50 the same
# concurrency in a quarter of it.
PER_THREAD_UNCACHED = 50
DATA = os.urandom(4096)
# Long enough that no bundle goes stale during a burst: getKey counts are then exact.
NO_REFRESH = 600.0


@pytest.fixture(scope="module")
def layers(vault: LocalKeyVault) -> tuple[str, str]:
    """An RSA layer (wrapped locally, unwrapped by the vault) and an oct-HSM layer (both by
    the vault), as a new user would set them up."""
    vault.create_key("load-rsa", "RSA")
    vault.create_key("load-oct", "oct-HSM")
    return "load-rsa", "load-oct"


class Cold:
    """A cold start: new keys with a new credential (no token, no bundle, no connection),
    the SDK's challenge cache empty, new caches if any."""

    def __init__(self, vault: LocalKeyVault, names: tuple[str, ...], caches: bool, **options):
        http_challenge_cache.clear()
        vault.reset_counts()
        credential = vault.get_credential()
        self.keys = [
            KeyVaultKey(
                f"{vault.url}/keys/{name}",
                credential,
                tls_policy=vault.tls_policy,
                key_info_ttl=NO_REFRESH,
                **options,
            )
            for name in names
        ]
        cache_options: dict[str, Any] = {}
        if caches:
            cache_options = {"data_key_cache": DataKeyCache(), "unwrap_cache": UnwrapCache()}
        self.env = Envelope(self.keys, **cache_options)

    def close(self) -> None:
        for key in self.keys:
            key.close()


@pytest.fixture
def cold(vault: LocalKeyVault, layers: tuple[str, str]) -> Iterator[Any]:
    made: list[Cold] = []

    def make(caches: bool, **options: Any) -> Cold:
        made.append(Cold(vault, layers, caches, **options))
        return made[-1]

    yield make
    for start in made:
        start.close()


async def burst(env: Envelope, tasks: int) -> list[bytes | BaseException]:
    """``tasks`` concurrent round trips of distinct messages; what each gave back."""

    async def one(n: int) -> bytes:
        data = DATA + n.to_bytes(4, "big")
        blob = await env.encrypt_async(data)
        opened = bytes(await env.decrypt_async(blob))
        assert opened == data
        return opened

    return await asyncio.gather(*(one(n) for n in range(tasks)), return_exceptions=True)


def assert_calls(vault: LocalKeyVault, *, messages: int, caches: bool) -> None:
    counts = vault.operation_counts()
    # One bundle fetch per key however many callers needed it at once.
    assert counts["getKey"] == 2
    if caches:
        # One wrap under the oct-HSM key, one unwrap per distinct wrapped key (one data key
        # per layer served every message).
        assert counts["wrapKey"] == 1
        assert counts["unwrapKey"] == 2
    else:
        assert counts["wrapKey"] == messages
        assert counts["unwrapKey"] == 2 * messages


@pytest.mark.parametrize("caches", [True, False], ids=["caches", "no caches"])
def test_a_thousand_cold_tasks_all_succeed(vault, cold, caches):
    start = cold(caches)
    results = asyncio.run(burst(start.env, TASKS))
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert len(results) == TASKS
    assert_calls(vault, messages=TASKS, caches=caches)


@pytest.mark.parametrize("caches", [True, False], ids=["caches", "no caches"])
def test_sixteen_threads_of_cold_messages_all_succeed(vault, cold, caches):
    start = cold(caches)
    messages = PER_THREAD if caches else PER_THREAD_UNCACHED
    errors = round_trips_in_threads(start.env, threads=THREADS, messages=messages, prefix=DATA)
    assert errors == []
    assert_calls(vault, messages=THREADS * messages, caches=caches)


# -- faults during a burst ----------------------------------------------------------------

# The SDK's retries without its default backoff (0, 1 and 2 s); every other setting is the
# default one, the time bound of 20 s included.
QUICK_RETRIES = {"retry_backoff_factor": 0.05, "retry_backoff_max": 0.2}
FAULTS = [
    pytest.param({"status": 429, "retry_after": 0.05}, "Throttled", id="429 storm"),
    pytest.param({"status": 429, "retry_after": 30}, "Throttled", id="429 beyond the time"),
    pytest.param({"status": 503}, "ServiceUnavailable", id="503 storm"),
    pytest.param({"drop": True}, None, id="dropped connections"),
]


def outcomes(results: list[Any], expected: list[bytes]) -> list[BaseException]:
    """The failures of a burst, after checking that every message came back intact or
    failed: none is lost, none comes back altered."""
    assert len(results) == len(expected)
    failures = []
    for result, data in zip(results, expected, strict=True):
        if isinstance(result, BaseException):
            failures.append(result)
        else:
            assert result == data
    return failures


@pytest.mark.parametrize(("fault", "code"), FAULTS)
def test_faults_during_a_burst_of_tasks_fail_messages_only_with_their_code(
    vault, cold, fault, code
):
    start = cold(False, **QUICK_RETRIES)
    expected = [DATA + n.to_bytes(4, "big") for n in range(150)]
    blobs = asyncio.run(_encrypt_all(start.env, expected))
    # A storm: half the requests to the vault fail from now on.
    vault.inject_fault("unwrapKey", probability=0.5, seed=10, **fault)
    results = asyncio.run(_decrypt_all(start.env, blobs))
    failures = outcomes(results, expected)
    assert failures, "the storm failed no message"
    for failure in failures:
        assert isinstance(failure, KeyAccessError), repr(failure)
        assert failure.code == code, failure
    vault.clear_faults()
    KeyVaultKey.reset_breakers()
    # The storm is over: every message opens again.
    assert outcomes(asyncio.run(_decrypt_all(start.env, blobs)), expected) == []


@pytest.mark.parametrize(("fault", "code"), FAULTS)
def test_faults_during_a_burst_of_threads_fail_messages_only_with_their_code(
    vault, cold, fault, code
):
    start = cold(False, **QUICK_RETRIES)
    expected = [DATA + n.to_bytes(4, "big") for n in range(96)]
    blobs = [start.env.encrypt(data) for data in expected]
    vault.inject_fault("unwrapKey", probability=0.5, seed=20, **fault)
    results: list[Any] = [None] * len(blobs)

    def work(n: int) -> None:
        for index in range(n, len(blobs), 16):
            try:
                results[index] = bytes(start.env.decrypt(blobs[index]))
            except Exception as exc:  # each message's outcome is checked below
                results[index] = exc

    assert run_threads(16, work)[1] == []
    failures = outcomes(results, expected)
    assert failures, "the storm failed no message"
    for failure in failures:
        assert isinstance(failure, KeyAccessError), repr(failure)
        assert failure.code == code, failure


async def _encrypt_all(env: Envelope, messages: list[bytes]) -> list[bytearray]:
    return list(await asyncio.gather(*(env.encrypt_async(m) for m in messages)))


async def _decrypt_all(env: Envelope, blobs: list[bytearray]) -> list[Any]:
    async def one(blob: bytearray) -> bytes:
        return bytes(await env.decrypt_async(blob))

    return await asyncio.gather(*(one(b) for b in blobs), return_exceptions=True)


# -- event loops come and go ----------------------------------------------------------------


def test_the_same_keys_serve_several_asyncio_runs_and_loops_in_threads(vault, cold):
    start = cold(False)

    async def round_trip(n: int) -> bytes:
        data = DATA + n.to_bytes(4, "big")
        return bytes(await start.env.decrypt_async(await start.env.encrypt_async(data)))

    for n in range(3):  # each run ends its loop; the next one gets a client of its own
        assert asyncio.run(round_trip(n)) == DATA + n.to_bytes(4, "big")

    def in_a_thread(n: int) -> bytes:
        return asyncio.run(round_trip(n))

    results, errors = run_threads(8, in_a_thread)
    assert errors == []
    assert sorted(results) == sorted(DATA + n.to_bytes(4, "big") for n in range(8))
    # Every loop's client was closed with its loop; the sync side still works too.
    assert all(key._async == {} for key in start.keys)
    assert start.env.decrypt(start.env.encrypt(b"sync")) == b"sync"


def test_a_loop_closed_by_hand_leaves_nothing_behind(vault, cold):
    start = cold(False)
    loop = asyncio.new_event_loop()
    try:
        blob = loop.run_until_complete(start.env.encrypt_async(b"by hand"))
        assert loop.run_until_complete(start.env.decrypt_async(blob)) == b"by hand"
    finally:
        # What asyncio.run does: generators (and with them the key's clients) closed first.
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    assert all(key._async == {} for key in start.keys)
    assert asyncio.run(start.env.decrypt_async(blob)) == b"by hand"


def test_aclose_closes_the_running_loops_client_only(vault, cold):
    start = cold(False)
    started, release = threading.Event(), threading.Event()

    def other_loop() -> None:
        async def hold() -> None:
            await start.env.decrypt_async(await start.env.encrypt_async(b"other"))
            started.set()
            await asyncio.to_thread(release.wait)
            assert await start.env.decrypt_async(await start.env.encrypt_async(b"x")) == b"x"

        asyncio.run(hold())

    thread = threading.Thread(target=other_loop)
    thread.start()
    assert started.wait(30)

    async def here() -> None:
        await start.env.decrypt_async(await start.env.encrypt_async(b"here"))
        for key in start.keys:
            await key.aclose()
            assert len(key._async) == 1  # the other thread's loop keeps its client

    asyncio.run(here())
    release.set()
    thread.join(30)
    assert not thread.is_alive()
