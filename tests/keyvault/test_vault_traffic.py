# mypy: allow-untyped-defs, allow-incomplete-defs
"""How KeyVaultKeys share a vault: one bundle fetch for many callers, at most
``max_connections`` requests in flight to a vault (threads and event loops together), queued
callers that never time out, errors that say where a request stopped, and a circuit breaker
that fails over to a layer's next KEK at once."""

from __future__ import annotations

import asyncio
import functools
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from envelope import Envelope, InsecureTransportError, KeyAccessError, LocalKey
from envelope.keyvault import KeyVaultKey
from envelope.testing import LocalKeyVault
from envelope.transport import TLSPolicy
from tests.conftest import kek, run_threads
from tests.keyvault.conftest import unique
from tests.keyvault.hostile import Reply, ScriptedVault


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[-1]


# -- one bundle fetch ---------------------------------------------------------------------


def test_threads_and_tasks_that_need_a_bundle_share_one_fetch(vault):
    name = unique("oct")
    vault.create_key(name, "oct-HSM")
    vault.inject_fault("getKey", latency=0.3)  # everybody arrives while it is on its way
    with kek(vault, name) as key:
        release = threading.Barrier(2)

        def tasks() -> list[Any]:
            async def all_of_them() -> list[Any]:
                release.wait()
                return await asyncio.gather(
                    *(key.wrap_key_async(os.urandom(32)) for _ in range(200))
                )

            return asyncio.run(all_of_them())

        def threads() -> list[BaseException]:
            release.wait()
            return run_threads(50, lambda n: key.wrap_key(os.urandom(32)))[1]

        results, errors = run_threads(2, lambda n: tasks() if n == 0 else threads())
        assert errors == []
        assert [] in results  # the threads' errors
        counts = vault.operation_counts()
        assert counts["getKey"] == 1
        assert counts["wrapKey"] == 250


def test_a_failed_fetch_fails_its_waiters_with_the_same_error_and_is_not_kept(vault):
    name = unique("oct")
    vault.create_key(name, "oct-HSM")
    wrap_only = vault.add_identity(unique("no-get"), ["wrapKey", "unwrapKey"])
    vault.inject_fault("getKey", latency=0.3)
    with kek(vault, name, wrap_only) as key:

        async def all_of_them() -> list[Any]:
            wraps = (key.wrap_key_async(os.urandom(32)) for _ in range(100))
            return await asyncio.gather(*wraps, return_exceptions=True)

        errors = asyncio.run(all_of_them())
        assert all(isinstance(e, KeyAccessError) and e.code == "Forbidden" for e in errors)
        assert len({id(e) for e in errors}) == 100  # each caller raises an error of its own
        assert vault.operation_counts()["getKey"] == 1
        # The failure was not remembered: the next caller asks again.
        with pytest.raises(KeyAccessError):
            key.wrap_key(os.urandom(32))
        assert vault.operation_counts()["getKey"] == 2


# -- turns: at most max_connections in flight to a vault ------------------------------------


class InFlight:
    """A script that holds each request ``hold`` seconds and records how many were held at
    once, before the vault answers it as usual; ``entered`` is set once a request is held."""

    def __init__(self, server: ScriptedVault, hold: float) -> None:
        self.server = server
        self.hold = hold
        self.now = self.most = 0
        self.entered = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, handler: Any, body: bytes) -> Reply:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)
        self.entered.set()
        time.sleep(self.hold)
        with self._lock:
            self.now -= 1
        return self.server._serve("unwrapKey", "k" if "/keys/k/" in handler.path else "o", body)


def test_requests_in_flight_to_a_vault_stay_within_max_connections(hostile):
    """Two keys of one vault, 12 threads and 60 tasks of a loop in another thread: never
    more than 3 requests at the vault at once, and nobody times out while queued (60
    requests of 0.1 s, 3 at a time, take 2 s or more; the time bound is 1 s)."""
    counter = InFlight(hostile, hold=0.1)
    hostile.scripts["unwrapKey"] = counter
    options = {"max_connections": 3, "timeout": 1.0, "read_timeout": 1.0}
    rsa_key, oct_key = hostile.kek("k", **options), hostile.kek("o", **options)
    wrapped = [rsa_key.wrap_key(os.urandom(32)), oct_key.wrap_key(os.urandom(32))]
    keys = [rsa_key, oct_key]

    def in_threads() -> list[BaseException]:
        return run_threads(
            12, lambda n: [keys[n % 2].unwrap_key(wrapped[n % 2]) for _ in range(2)]
        )[1]

    def in_tasks() -> list[Any]:
        async def all_of_them() -> list[Any]:
            calls = (keys[n % 2].unwrap_key_async(wrapped[n % 2]) for n in range(36))
            # The loop's end closes the keys' clients of this loop (not the threads' ones).
            return await asyncio.gather(*calls, return_exceptions=True)

        return asyncio.run(all_of_them())

    started = time.monotonic()
    results, errors = run_threads(2, lambda n: in_threads() if n == 0 else in_tasks())
    elapsed = time.monotonic() - started
    assert errors == []
    assert [r for result in results for r in result if isinstance(r, BaseException)] == []
    assert counter.most == 3
    assert elapsed >= 60 * 0.1 / 3
    for key in keys:
        key.close()


def test_a_sync_call_inside_a_running_loop_is_not_queued_and_a_pool_wait_says_so(hostile):
    """Its turn may be held by the very loop it blocks: it goes ahead at once. Here the
    key's one connection is busy in another thread, so it waits for the pool, and its
    error says so: a pool wait, not an unreachable vault, and the vault stays up."""
    hold = InFlight(hostile, hold=1.5)
    hostile.scripts["unwrapKey"] = hold
    key = hostile.kek("k", max_connections=1, connect_timeout=0.3)
    wrapped = key.wrap_key(os.urandom(32))
    busy = threading.Thread(target=key.unwrap_key, args=(wrapped,))
    busy.start()
    assert hold.entered.wait(10)

    async def inside_a_loop() -> KeyAccessError:
        with pytest.raises(KeyAccessError) as caught:
            key.unwrap_key(wrapped)
        return caught.value

    error = asyncio.run(inside_a_loop())
    busy.join()
    assert "(pool wait)" in str(error)
    assert "nothing was sent" in str(error)
    assert "unreachable" not in str(error)
    assert not key._vault.is_down()
    key.close()


# -- errors say where a request stopped ----------------------------------------------------


def test_a_refused_connection_is_a_connect_error(vault):
    dead = LocalKeyVault()
    dead.create_key("gone")
    key = kek(dead, "gone", retry_total=0)
    wrapped = key.wrap_key(os.urandom(32))
    dead.close()
    with pytest.raises(KeyAccessError) as caught:
        key.unwrap_key(wrapped)
    assert "unreachable" in str(caught.value)
    assert "(connect)" in str(caught.value)
    assert caught.value.code is None
    key.close()


def test_no_reply_is_a_read_error_and_throttling_says_so(vault):
    name = unique("oct")
    vault.create_key(name, "oct-HSM")
    with kek(vault, name, read_timeout=0.3, retry_total=0, down_time=0) as key:
        wrapped = key.wrap_key(os.urandom(32))
        fault = vault.inject_fault("unwrapKey", latency=2)
        with pytest.raises(KeyAccessError) as hung:
            key.unwrap_key(wrapped)
        assert "(read)" in str(hung.value)
        assert "unreachable" not in str(hung.value)
        fault.remove()
        vault.inject_fault("unwrapKey", status=429, retry_after=30)
        with pytest.raises(KeyAccessError) as throttled:
            key.unwrap_key(wrapped)
        assert throttled.value.code == "Throttled"
        assert "throttled unwrapKey" in str(throttled.value)


def test_a_vault_the_tls_policy_refuses_is_reported_as_such(vault):
    name = unique("rsa")
    vault.create_key(name)
    with LocalKeyVault() as other:  # another CA: the certificate does not verify
        policy = TLSPolicy(ca_data=other.ca_pem.decode("ascii"))
        key = KeyVaultKey(f"{vault.url}/keys/{name}", vault.credential, tls_policy=policy)
        with pytest.raises(InsecureTransportError) as caught:
            key.wrap_key(os.urandom(32))
        assert caught.value.reason == "certificate"
        assert not key._vault.is_down()
        key.close()


# -- the circuit breaker -------------------------------------------------------------------


def test_a_failed_vault_is_marked_down_for_every_key_of_it_and_probed_once(vault):
    first, second = unique("oct"), unique("oct")
    vault.create_key(first, "oct-HSM")
    vault.create_key(second, "oct-HSM")
    with kek(vault, first, down_time=1.0) as a, kek(vault, second, down_time=1.0) as b:
        wrapped_a, wrapped_b = a.wrap_key(os.urandom(32)), b.wrap_key(os.urandom(32))
        vault.inject_fault("unwrapKey", status=503)
        vault.reset_counts()
        with pytest.raises(KeyAccessError) as failed:
            a.unwrap_key(wrapped_a)
        assert failed.value.code == "ServiceUnavailable"
        assert vault.operation_counts()["unwrapKey"] == 4  # the SDK's retries
        # Down: the other key of that vault fails at once, with the code of the failure.
        started = time.monotonic()
        with pytest.raises(KeyAccessError, match="marked down") as down:
            b.unwrap_key(wrapped_b)
        assert time.monotonic() - started < 0.1
        assert down.value.code == "ServiceUnavailable"
        assert down.value.key_id == b.key_id
        assert vault.operation_counts()["unwrapKey"] == 4
        # After the down time, one probe, of one attempt; it fails: down for twice as long.
        time.sleep(1.05)
        with pytest.raises(KeyAccessError, match="ServiceUnavailable"):
            b.unwrap_key(wrapped_b)
        assert vault.operation_counts()["unwrapKey"] == 5
        time.sleep(1.05)  # past the first down time, well within the second (2 s)
        with pytest.raises(KeyAccessError, match="marked down"):
            a.unwrap_key(wrapped_a)
        assert vault.operation_counts()["unwrapKey"] == 5
        # Mended: the next probe finds it up, and everything flows again.
        vault.clear_faults()
        time.sleep(1.0)
        assert b.unwrap_key(wrapped_b)
        assert a.unwrap_key(wrapped_a)
        assert vault.operation_counts()["unwrapKey"] == 7


def test_while_a_probe_is_out_the_others_do_not_wait_for_it(vault):
    name = unique("oct")
    vault.create_key(name, "oct-HSM")
    with kek(vault, name, down_time=0.2, read_timeout=1.0) as key:
        wrapped = key.wrap_key(os.urandom(32))
        vault.inject_fault("unwrapKey", status=503, count=4)
        with pytest.raises(KeyAccessError):
            key.unwrap_key(wrapped)
        time.sleep(0.25)
        slow = vault.inject_fault("unwrapKey", latency=0.6, count=1)  # a slow but good probe
        probe = threading.Thread(target=key.unwrap_key, args=(wrapped,))
        probe.start()
        deadline = time.monotonic() + 10
        while slow.triggered == 0 and time.monotonic() < deadline:
            time.sleep(0.01)  # until the vault holds the probe
        assert slow.triggered == 1
        with pytest.raises(KeyAccessError, match="probe"):
            key.unwrap_key(wrapped)
        # It failed without waiting for the probe, which the vault still holds.
        assert probe.is_alive()
        probe.join()
        assert key.unwrap_key(wrapped)  # the probe found it up


def test_down_time_zero_turns_the_breaker_off_and_reset_forgets(vault):
    name = unique("oct")
    vault.create_key(name, "oct-HSM")
    with kek(vault, name, down_time=0) as patient, kek(vault, name) as quick:
        wrapped = patient.wrap_key(os.urandom(32))
        vault.inject_fault("unwrapKey", status=503, count=4)
        with pytest.raises(KeyAccessError):
            patient.unwrap_key(wrapped)
        assert patient.unwrap_key(wrapped)  # not marked down: sent, and served
        vault.inject_fault("unwrapKey", status=503, count=4)
        with pytest.raises(KeyAccessError):
            quick.unwrap_key(wrapped)
        with pytest.raises(KeyAccessError, match="marked down"):
            quick.unwrap_key(wrapped)
        # The patient key ignores the mark; the vault's answer to it shows it is up.
        assert patient.unwrap_key(wrapped)
        assert quick.unwrap_key(wrapped)
        vault.inject_fault("unwrapKey", status=503, count=4)
        with pytest.raises(KeyAccessError):
            quick.unwrap_key(wrapped)
        KeyVaultKey.reset_breakers(vault.url)
        assert quick.unwrap_key(wrapped)


def test_breaker_settings_are_checked():
    with pytest.raises(ValueError, match="down_time"):
        KeyVaultKey("https://v.vault.azure.net/keys/k", down_time=-1)
    with pytest.raises(ValueError, match="down_time"):
        KeyVaultKey("https://v.vault.azure.net/keys/k", down_time=5, max_down_time=1)
    with pytest.raises(ValueError, match="max_connections"):
        KeyVaultKey("https://v.vault.azure.net/keys/k", max_connections=0)


# -- failover: a layer's other KEK at once ---------------------------------------------------

MESSAGES = 60
# Bounds of the first failure: an unwrap (a POST, not retried after a read timeout) waits
# read_timeout for a hung vault; a refused connection fails at once. The vault stays marked
# down for the whole test, so that no half-open probe (which waits out read_timeout against
# a hung vault; probes have tests of their own above) lands among the timed decrypts: how
# many would depends on how fast this machine decrypts.
DOWN_VAULT = {"read_timeout": 1.0, "connect_timeout": 1.0, "timeout": 2.0, "down_time": 30.0}


@pytest.fixture
def spare(vault: LocalKeyVault) -> Iterator[tuple[Envelope, LocalKeyVault]]:
    """An envelope whose first layer has a KEK in another vault, then one in ``vault``."""
    name = unique("rsa")
    vault.create_key(name)
    other = LocalKeyVault()
    other.create_key(name)
    down, up = kek(other, name, **DOWN_VAULT), kek(vault, name)
    try:
        yield Envelope([[down, up], LocalKey.generate()]), other
    finally:
        down.close()
        up.close()
        other.close()
        KeyVaultKey.reset_breakers(other.url)  # its port may serve another vault later


def break_down(env: Envelope, other: LocalKeyVault, how: str) -> None:
    if how == "hung":
        other.inject_fault(latency=60)  # every request waits until the vault closes
    else:
        down = env.layers[0][0]
        assert isinstance(down, KeyVaultKey)
        down.close()  # no kept-alive connection left: the next request has to connect
        other.close()  # connections refused from now on


def timed(call: Callable[[], object]) -> float:
    started = time.monotonic()
    call()
    return time.monotonic() - started


async def timed_async(call: Callable[[], Any]) -> float:
    started = time.monotonic()
    await call()
    return time.monotonic() - started


@pytest.mark.parametrize("how", ["hung", "refusing"])
def test_after_the_first_failure_decrypts_go_to_the_other_vault_at_once(spare, how):
    env, other = spare
    blobs = [env.encrypt(f"m{n}".encode()) for n in range(MESSAGES)]
    break_down(env, other, how)
    assert timed(lambda: env.decrypt(blobs[0])) < DOWN_VAULT["timeout"] + 1.0
    after = [timed(functools.partial(env.decrypt, blob)) for blob in blobs[1:]]
    assert p95(after) <= 0.5, sorted(after)[-5:]


@pytest.mark.parametrize("how", ["hung", "refusing"])
def test_after_the_first_failure_async_decrypts_go_to_the_other_vault_at_once(spare, how):
    env, other = spare

    async def run() -> tuple[float, list[float], list[Any]]:
        blobs = [await env.encrypt_async(f"m{n}".encode()) for n in range(MESSAGES)]
        break_down(env, other, how)
        first = await timed_async(lambda: env.decrypt_async(blobs[0]))
        after = [await timed_async(functools.partial(env.decrypt_async, b)) for b in blobs[1:]]
        # And a burst at once: every message opens, through the other vault.
        opened = await asyncio.gather(*(env.decrypt_async(b) for b in blobs))
        return first, after, opened

    first, after, opened = asyncio.run(run())
    assert first < DOWN_VAULT["timeout"] + 1.0
    assert p95(after) <= 0.5, sorted(after)[-5:]
    assert opened == [f"m{n}".encode() for n in range(MESSAGES)]
