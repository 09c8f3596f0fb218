# mypy: allow-untyped-defs, allow-incomplete-defs
"""The asyncio API: Envelope.encrypt_async/decrypt_async over KeyVaultKey and LocalKey."""

from __future__ import annotations

import asyncio
import time

import pytest
from azure.core.pipeline.transport import AsyncioRequestsTransport

from envelope import DataKeyCache, Envelope, KeyAccessError, LocalKey, UnwrapCache
from envelope.testing import LocalKeyVault
from tests.conftest import kek

pytestmark = pytest.mark.usefixtures("fresh")


@pytest.fixture(scope="module", autouse=True)
def async_keys(vault: LocalKeyVault) -> None:
    vault.create_key("async-rsa", "RSA")
    vault.create_key("async-oct", "oct-HSM")


@pytest.mark.asyncio
async def test_mixed_envelope_round_trips_between_sync_and_async(vault):
    local = LocalKey.generate()
    async with kek(vault, "async-oct") as remote:
        env = Envelope([local, remote])
        blob = await env.encrypt_async(b"async", context={"k": "v"})
        assert vault.operation_counts()["wrapKey"] == 1
        assert await env.decrypt_async(blob, context={"k": "v"}) == b"async"
        assert env.decrypt(blob, context={"k": "v"}) == b"async"
        assert await env.decrypt_async(env.encrypt(b"sync")) == b"sync"
        remote.close()


@pytest.mark.asyncio
async def test_many_tasks_with_caches(vault):
    async with kek(vault, "async-rsa") as inner, kek(vault, "async-oct") as outer:
        cache, unwraps = DataKeyCache(), UnwrapCache()
        env = Envelope([inner, outer], data_key_cache=cache, unwrap_cache=unwraps)

        async def one(n: int) -> bytes:
            return bytes(await env.decrypt_async(await env.encrypt_async(str(n).encode())))

        results = await asyncio.gather(*(one(n) for n in range(50)))
        assert results == [str(n).encode() for n in range(50)]
        # One task wraps; the 49 others wait for its data keys instead of wrapping too.
        assert vault.operation_counts()["wrapKey"] == 1
        assert cache.stats().misses == 1
        assert cache.stats().hits == 49
        blob = await env.encrypt_async(b"again")
        before = vault.operation_counts().get("unwrapKey", 0)
        for _ in range(5):
            assert await env.decrypt_async(blob) == b"again"
        assert vault.operation_counts().get("unwrapKey", 0) == before
        assert unwraps.stats().hits >= 10


@pytest.mark.asyncio
async def test_foreign_header_makes_no_connection(vault):
    with LocalKeyVault() as other:
        other.create_key("async-rsa")
        async with kek(other, "async-rsa") as foreign, kek(vault, "async-rsa") as ours:
            local = LocalKey.generate()
            forged = await Envelope([foreign, local]).encrypt_async(b"x")
            vault.reset_counts()
            other.reset_counts()
            with pytest.raises(KeyAccessError, match="no configured key"):
                await Envelope([ours, local]).decrypt_async(forged)
            assert vault.operation_counts() == {}
            assert other.operation_counts() == {}


@pytest.mark.asyncio
async def test_down_vault_falls_through_and_storms_recover(vault):
    dead = LocalKeyVault()
    try:
        dead.create_key("gone")
        async with kek(dead, "gone") as down, kek(vault, "async-oct") as up:
            env = Envelope([[down, up], LocalKey.generate()])
            blob = await env.encrypt_async(b"still here")
            dead.close()
            started = time.monotonic()
            assert await env.decrypt_async(blob) == b"still here"
            assert time.monotonic() - started < 5
            vault.inject_fault("unwrapKey", status=429, retry_after=0.02, count=2)
            assert await env.decrypt_async(blob) == b"still here"
    finally:
        dead.close()


@pytest.mark.asyncio
async def test_async_credential_and_disabled_key(vault):
    vault.create_key("async-off", "oct-HSM")
    credential = vault.get_async_credential(
        transport=AsyncioRequestsTransport(connection_verify=vault.ca_file)
    )
    async with credential, kek(vault, "async-off", credential, key_info_ttl=0) as key:
        env = Envelope([key, LocalKey.generate()])
        blob = await env.encrypt_async(b"x")
        with pytest.raises(TypeError, match="async credential"):
            key.wrap_key(bytes(32))
        vault.update_key("async-off", enabled=False)
        with pytest.raises(KeyAccessError) as caught:
            await env.decrypt_async(blob)
        assert caught.value.code == "Forbidden"
        with pytest.raises(KeyAccessError):
            await env.encrypt_async(b"y")
