# mypy: allow-untyped-defs, allow-incomplete-defs
"""The SDK's remaining key client methods against LocalKeyVault, sync and asyncio, so that
every public method of KeyClient and CryptographyClient has a test (test_sdk_coverage.py):
the whole lifecycle, random bytes, requests of one's own, and the two operations the vault
refuses with a clear error (key release and key attestation)."""

from __future__ import annotations

import hashlib
import os
import ssl

import httpx
import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.core.rest import HttpRequest
from azure.keyvault.keys import JsonWebKey, KeyRotationLifetimeAction, KeyRotationPolicy
from azure.keyvault.keys.crypto import EncryptionAlgorithm, KeyWrapAlgorithm, SignatureAlgorithm
from azure.keyvault.keys.crypto.aio import CryptographyClient as AsyncCryptographyClient

from tests.conftest import key_client
from tests.testing.kv import (
    API,
    async_crypto_client,
    async_key_client,
    code_of,
    crypto_client,
    inner_code,
    jwk,
    transport,
)

UNSUPPORTED = "NotSupported"


@pytest.mark.covers(
    "KeyClient.create_rsa_key",
    "KeyClient.create_oct_key",
    "KeyClient.rotate_key",
    "KeyClient.update_key_properties",
    "KeyClient.list_properties_of_keys",
    "KeyClient.list_properties_of_key_versions",
    "KeyClient.begin_delete_key",
    "KeyClient.get_deleted_key",
    "KeyClient.list_deleted_keys",
    "KeyClient.begin_recover_deleted_key",
    "KeyClient.purge_deleted_key",
    "KeyClient.get_random_bytes",
    "KeyClient.send_request",
    "KeyClient.close",
)
def test_key_client_lifecycle(vault):
    client = key_client(vault)
    rsa = client.create_rsa_key("sync-life", size=2048, tags={"t": "1"})
    aes = client.create_oct_key("sync-aes", size=128, hardware_protected=True)
    assert aes.key_type == "oct-HSM"
    rotated = client.rotate_key("sync-life")
    updated = client.update_key_properties("sync-life", rotated.properties.version, tags={"t": "2"})
    assert updated.properties.tags == {"t": "2"}
    assert {p.name for p in client.list_properties_of_keys()} >= {"sync-life", "sync-aes"}
    assert len(list(client.list_properties_of_key_versions("sync-life"))) == 2
    # Versions of a key that does not exist: an empty list, as the service answers.
    assert list(client.list_properties_of_key_versions("never-made")) == []
    client.begin_delete_key("sync-aes", _polling_interval=0.01).result()
    assert client.get_deleted_key("sync-aes").name == "sync-aes"
    assert "sync-aes" in {d.name for d in client.list_deleted_keys()}
    recovered = client.begin_recover_deleted_key("sync-aes", _polling_interval=0.01).result()
    assert recovered.id == aes.id
    client.begin_delete_key("sync-aes", _polling_interval=0.01).result()
    client.purge_deleted_key("sync-aes")
    with pytest.raises(ResourceNotFoundError):
        client.get_deleted_key("sync-aes")
    draws = {client.get_random_bytes(32) for _ in range(8)}
    assert len(draws) == 8
    assert all(len(draw) == 32 for draw in draws)
    for count in (0, 129):
        response = client.send_request(HttpRequest("POST", f"/rng?{API}", json={"count": count}))
        assert response.status_code == 400
    latest = client.send_request(HttpRequest("GET", f"/keys/sync-life/?{API}")).json()
    assert latest["key"]["kid"] == rotated.id != rsa.id
    client.close()


@pytest.mark.covers(
    "CryptographyClient.wrap_key",
    "CryptographyClient.unwrap_key",
    "CryptographyClient.send_request",
    "CryptographyClient.close",
)
def test_cryptography_client_requests_and_close(vault):
    kid = vault.create_key("sync-crypto", "oct-HSM", 256)
    crypto = crypto_client(vault, kid)
    dek = os.urandom(32)
    wrapped = crypto.wrap_key(KeyWrapAlgorithm.ckm_aes_key_wrap_pad, dek)
    assert (
        crypto.unwrap_key(KeyWrapAlgorithm.ckm_aes_key_wrap_pad, wrapped.encrypted_key).key == dek
    )
    version = kid.rsplit("/", 1)[1]
    response = crypto.send_request(HttpRequest("GET", f"/keys/sync-crypto/{version}?{API}"))
    assert response.json()["key"]["kid"] == kid
    crypto.close()


@pytest.mark.covers("KeyClient.release_key", "KeyClient.get_key_attestation")
def test_release_and_attestation_are_refused_clearly(vault):
    with key_client(vault) as client:
        client.create_rsa_key("not-released", hardware_protected=True)
        for call in (
            lambda: client.release_key("not-released", "attestation-token"),
            lambda: client.get_key_attestation("not-released"),
        ):
            with pytest.raises(HttpResponseError) as refused:
                call()
            assert refused.value.status_code == 400
            assert code_of(refused.value) == "BadParameter"
            assert inner_code(refused.value) == UNSUPPORTED
        with pytest.raises(ResourceNotFoundError):
            client.release_key("missing", "attestation-token")


@pytest.mark.asyncio
@pytest.mark.covers(
    "aio.KeyClient.create_rsa_key",
    "aio.KeyClient.create_ec_key",
    "aio.KeyClient.create_oct_key",
    "aio.KeyClient.create_key",
    "aio.KeyClient.import_key",
    "aio.KeyClient.get_key",
    "aio.KeyClient.rotate_key",
    "aio.KeyClient.update_key_properties",
    "aio.KeyClient.list_properties_of_keys",
    "aio.KeyClient.list_properties_of_key_versions",
    "aio.KeyClient.delete_key",
    "aio.KeyClient.get_deleted_key",
    "aio.KeyClient.list_deleted_keys",
    "aio.KeyClient.recover_deleted_key",
    "aio.KeyClient.purge_deleted_key",
    "aio.KeyClient.backup_key",
    "aio.KeyClient.restore_key_backup",
    "aio.KeyClient.get_random_bytes",
    "aio.KeyClient.get_key_rotation_policy",
    "aio.KeyClient.update_key_rotation_policy",
    "aio.KeyClient.send_request",
    "aio.KeyClient.release_key",
    "aio.KeyClient.get_key_attestation",
    "aio.KeyClient.close",
)
async def test_async_key_client_everything(vault):
    async with vault.get_async_credential(transport=transport(vault)) as credential:
        client = async_key_client(vault, credential)
        rsa = await client.create_rsa_key("aio-rsa", size=2048)
        ec = await client.create_ec_key("aio-ec", curve="P-384", hardware_protected=True)
        assert ec.key_type == "EC-HSM"
        await client.create_oct_key("aio-oct", hardware_protected=True)
        await client.create_key("aio-generic", "EC", curve="P-256K")
        imported = await client.import_key(
            "aio-imported", JsonWebKey(kty="oct-HSM", k=os.urandom(16))
        )
        assert jwk(imported).k is None
        assert (await client.get_key("aio-ec")).id == ec.id
        rotated = await client.rotate_key("aio-rsa")
        await client.update_key_properties("aio-rsa", enabled=False)
        names = {p.name async for p in client.list_properties_of_keys()}
        assert names >= {"aio-rsa", "aio-ec", "aio-oct", "aio-generic", "aio-imported"}
        versions = {v.version async for v in client.list_properties_of_key_versions("aio-rsa")}
        assert versions == {rsa.properties.version, rotated.properties.version}
        blob = await client.backup_key("aio-ec")
        await client.delete_key("aio-ec")
        assert (await client.get_deleted_key("aio-ec")).name == "aio-ec"
        assert "aio-ec" in {d.name async for d in client.list_deleted_keys()}
        assert (await client.recover_deleted_key("aio-ec")).id == ec.id
        await client.delete_key("aio-ec")
        await client.purge_deleted_key("aio-ec")
        assert (await client.restore_key_backup(blob)).id == ec.id
        assert len(await client.get_random_bytes(64)) == 64
        actions = [KeyRotationLifetimeAction("Rotate", time_after_create="P60D")]
        policy = KeyRotationPolicy(lifetime_actions=actions, expires_in="P1Y")
        assert (await client.update_key_rotation_policy("aio-ec", policy)).expires_in == "P1Y"
        assert (await client.get_key_rotation_policy("aio-ec")).expires_in == "P1Y"
        response = await client.send_request(HttpRequest("GET", f"/keys/aio-ec/?{API}"))
        assert response.status_code == 200
        for call in (client.release_key("aio-ec", "token"), client.get_key_attestation("aio-ec")):
            with pytest.raises(HttpResponseError) as refused:
                await call
            assert inner_code(refused.value) == UNSUPPORTED
        await client.close()


@pytest.mark.asyncio
@pytest.mark.covers(
    "aio.KeyClient.get_cryptography_client",
    "aio.CryptographyClient.encrypt",
    "aio.CryptographyClient.decrypt",
    "aio.CryptographyClient.wrap_key",
    "aio.CryptographyClient.unwrap_key",
    "aio.CryptographyClient.sign",
    "aio.CryptographyClient.verify",
    "aio.CryptographyClient.from_jwk",
    "aio.CryptographyClient.send_request",
    "aio.CryptographyClient.close",
)
async def test_async_cryptography_client_everything(vault):
    rsa_kid = vault.create_key("aio-crypto-rsa")
    ec_kid = vault.create_key("aio-crypto-ec", "EC", curve="P-521")
    dek = os.urandom(32)
    async with vault.get_async_credential(transport=transport(vault)) as credential:
        async with async_key_client(vault, credential) as client:
            crypto = client.get_cryptography_client("aio-crypto-rsa")
            sealed = await crypto.encrypt(EncryptionAlgorithm.rsa_oaep, b"aio")
            assert (
                await crypto.decrypt(EncryptionAlgorithm.rsa_oaep, sealed.ciphertext)
            ).plaintext == b"aio"
            wrapped = await crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, dek)
            unwrapped = await crypto.unwrap_key(
                KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key
            )
            assert unwrapped.key == dek
        ec = async_crypto_client(vault, ec_kid, credential)
        digest = hashlib.sha512(b"aio").digest()
        signed = await ec.sign(SignatureAlgorithm.es512, digest)
        assert (await ec.verify(SignatureAlgorithm.es512, digest, signed.signature)).is_valid
        version = ec_kid.rsplit("/", 1)[1]
        response = await ec.send_request(HttpRequest("GET", f"/keys/aio-crypto-ec/{version}?{API}"))
        assert response.json()["key"]["kid"] == ec_kid
        await ec.close()
        async with async_key_client(vault, credential) as client:
            public = (await client.get_key("aio-crypto-ec")).key
    local = AsyncCryptographyClient.from_jwk(public)
    assert (await local.verify(SignatureAlgorithm.es512, digest, signed.signature)).is_valid
    counts = vault.operation_counts()
    assert counts["sign"] == 1
    assert counts["unwrapKey"] == 1
    assert rsa_kid.startswith(vault.url)


@pytest.mark.parametrize(
    "api_version", ["2025-07-01", "7.0", "2016-10-01", "2099-12-31-preview", "x"]
)
def test_any_api_version_is_accepted(vault, api_version):
    vault.create_key("versioned-api", "EC")
    context = ssl.create_default_context(cafile=vault.ca_file)
    headers = {"Authorization": f"Bearer {vault.issue_token()}"}
    with httpx.Client(base_url=vault.url, verify=context, headers=headers) as http:
        response = http.get("/keys/versioned-api/", params={"api-version": api_version})
        assert response.status_code == 200
        assert response.json()["key"]["crv"] == "P-256"
        assert http.get("/keys/versioned-api/").status_code == 400  # none at all is an error
