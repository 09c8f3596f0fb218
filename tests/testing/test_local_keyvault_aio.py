# mypy: allow-untyped-defs, allow-incomplete-defs
"""LocalKeyVault through the asyncio clients of azure-keyvault-keys and azure-identity."""

from __future__ import annotations

import asyncio
import os

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.keyvault.keys import KeyType
from azure.keyvault.keys.crypto import EncryptionAlgorithm, KeyWrapAlgorithm

from tests.testing.kv import async_crypto_client, async_key_client, transport


@pytest.mark.asyncio
async def test_async_lifecycle_and_errors(vault):
    async with (
        vault.get_async_credential(transport=transport(vault)) as credential,
        async_key_client(vault, credential) as client,
    ):
        created = await client.create_rsa_key("async-rsa", size=2048)
        assert created.key_type == KeyType.rsa
        assert (await client.get_key("async-rsa")).id == created.id
        rotated = await client.rotate_key("async-rsa")
        versions = [v async for v in client.list_properties_of_key_versions("async-rsa")]
        assert {v.version for v in versions} == {
            created.properties.version,
            rotated.properties.version,
        }
        with pytest.raises(ResourceNotFoundError):
            await client.get_key("missing")
        deleted = await client.delete_key("async-rsa")
        assert deleted.recovery_id == f"{vault.url}/deletedkeys/async-rsa"
        await client.purge_deleted_key("async-rsa")
    assert vault.operation_counts()["purgeDeletedKey"] == 1
    assert vault.operation_counts()["token"] >= 1


@pytest.mark.asyncio
async def test_async_crypto_round_trips(vault):
    rsa_kid = vault.create_key("async-wrap")
    aes_kid = vault.create_key("async-gcm", "oct-HSM", 256)
    dek = os.urandom(32)
    async with vault.get_async_credential(transport=transport(vault)) as credential:
        async with async_crypto_client(vault, rsa_kid, credential) as crypto:
            wrapped = await crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, dek)
            unwrapped = await crypto.unwrap_key(
                KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key
            )
            assert unwrapped.key == dek
        async with async_crypto_client(vault, aes_kid, credential) as crypto:
            sealed = await crypto.encrypt(
                EncryptionAlgorithm.a256_gcm, b"async", additional_authenticated_data=b"aad"
            )
            opened = await crypto.decrypt(
                EncryptionAlgorithm.a256_gcm,
                sealed.ciphertext,
                iv=sealed.iv,
                authentication_tag=sealed.tag,
                additional_authenticated_data=b"aad",
            )
            assert opened.plaintext == b"async"
    counts = vault.operation_counts()
    assert counts["unwrapKey"] == 1
    assert counts["encrypt"] == 1
    assert counts["decrypt"] == 1


@pytest.mark.asyncio
async def test_async_concurrent_unwraps_with_throttling(vault):
    kid = vault.create_key("async-busy")
    dek = os.urandom(32)
    async with (
        vault.get_async_credential(transport=transport(vault)) as credential,
        async_crypto_client(vault, kid, credential) as crypto,
    ):
        wrapped = await crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, dek)
        fault = vault.inject_fault("unwrapKey", status=429, retry_after=0.05, count=3)
        results = await asyncio.gather(
            *(
                crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key)
                for _ in range(8)
            )
        )
    assert all(result.key == dek for result in results)
    assert fault.triggered == 3
    assert vault.operation_counts()["unwrapKey"] == 8 + 3


@pytest.mark.asyncio
async def test_async_restricted_identity(vault):
    vault.add_identity("async-reader", permissions={"get"})
    vault.create_key("async-guarded")
    async with (
        vault.get_async_credential("async-reader", transport=transport(vault)) as credential,
        async_key_client(vault, credential) as client,
    ):
        assert (await client.get_key("async-guarded")).name == "async-guarded"
        with pytest.raises(HttpResponseError) as denied:
            await client.create_rsa_key("nope")
    assert denied.value.status_code == 403
