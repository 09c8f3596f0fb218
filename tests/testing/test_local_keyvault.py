# mypy: allow-untyped-defs, allow-incomplete-defs
"""LocalKeyVault through the real azure-keyvault-keys SDK and azure-identity, over TLS."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.transport import RequestsTransport
from azure.core.rest import HttpRequest
from azure.keyvault.keys import KeyClient, KeyType
from azure.keyvault.keys._shared import http_challenge_cache
from azure.keyvault.keys.crypto import (
    EncryptionAlgorithm,
    KeyWrapAlgorithm,
)

import envelope.testing
from envelope.testing import LocalKeyVault
from tests.conftest import TIMEOUTS, StaticToken, key_client
from tests.testing.kv import (
    API,
    b64url,
    code_of,
    crypto_client,
    headers_of,
    jwk,
    raw_exchange,
    remote,
    unb64url,
)


def test_public_surface():
    assert envelope.testing.__all__ == ["Azurite", "Fault", "Identity", "LocalKeyVault"]


def test_key_lifecycle(vault):
    with key_client(vault) as client:
        first = client.create_rsa_key("life", size=2048)
        assert first.key_type == KeyType.rsa
        assert first.id.startswith(f"{vault.url}/keys/life/")
        assert len(first.properties.version or "") == 32
        assert jwk(first).n
        assert jwk(first).e
        assert jwk(first).d is None

        latest = client.get_key("life")
        assert latest.id == first.id
        assert client.get_key("life", first.properties.version).id == first.id

        rotated = client.rotate_key("life")
        assert rotated.properties.version != first.properties.version
        assert client.get_key("life").id == rotated.id
        client.create_rsa_key("life", size=2048)

        vault.reset_counts()
        versions = list(client.list_properties_of_key_versions("life", max_page_size=1))
        assert len(versions) == 3
        assert vault.operation_counts()["getKeyVersions"] == 3  # one request per page

        expires = int(time.time()) + 86400
        from datetime import datetime, timezone

        updated = client.update_key_properties(
            "life",
            first.properties.version,
            enabled=False,
            expires_on=datetime.fromtimestamp(expires, tz=timezone.utc),
        )
        assert updated.properties.enabled is False
        assert updated.properties.expires_on is not None
        assert updated.properties.expires_on.timestamp() == expires
        assert client.get_key("life").properties.enabled is True  # other versions untouched

        deleted = client.begin_delete_key("life", _polling_interval=0.01).result()
        assert deleted.recovery_id == f"{vault.url}/deletedkeys/life"
        assert deleted.deleted_date is not None
        assert deleted.scheduled_purge_date is not None
        assert deleted.scheduled_purge_date > deleted.deleted_date
        assert client.get_deleted_key("life").name == "life"
        with pytest.raises(ResourceNotFoundError):
            client.get_key("life")
        with pytest.raises(ResourceExistsError) as conflict:
            client.create_rsa_key("life")
        assert conflict.value.status_code == 409

        response = remote(client, "DELETE", "/deletedkeys/life")
        assert response.status_code == 204
        with pytest.raises(ResourceNotFoundError):
            client.get_deleted_key("life")
        assert client.create_rsa_key("life").name == "life"  # the name is free again

    counts = vault.operation_counts()
    for operation in ("getKey", "updateKey", "deleteKey", "getDeletedKey", "purgeDeletedKey"):
        assert counts[operation] >= 1


def test_recover_deleted_key(vault):
    with key_client(vault) as client:
        kid = client.create_rsa_key("phoenix").id
        client.begin_delete_key("phoenix", _polling_interval=0.01).result()
        recovered = client.begin_recover_deleted_key("phoenix", _polling_interval=0.01).result()
        assert recovered.id == kid


@pytest.mark.parametrize(
    ("kty", "size", "hsm"),
    [("RSA", 3072, False), ("RSA", 4096, False), ("RSA-HSM", 2048, True)],
)
def test_create_rsa_sizes(vault, kty, size, hsm):
    with key_client(vault) as client:
        key = client.create_rsa_key(f"rsa-{size}-{hsm}", size=size, hardware_protected=hsm)
    assert key.key_type == kty
    assert len(jwk(key).n) * 8 == size


def test_oct_hsm_never_returns_k(vault):
    with key_client(vault) as client:
        key = client.create_oct_key("aes", size=256, hardware_protected=True)
        assert key.key_type == KeyType.oct_hsm
        assert jwk(key).k is None
        assert jwk(client.get_key("aes")).k is None


def test_invalid_create_is_bad_parameter(vault):
    with key_client(vault) as client:
        with pytest.raises(HttpResponseError) as bad_size:
            client.create_rsa_key("odd", size=1024)
        assert bad_size.value.status_code == 400
        assert code_of(bad_size.value) == "BadParameter"
        with pytest.raises(HttpResponseError) as bad_name:
            client.create_rsa_key("no_underscores")
        assert code_of(bad_name.value) == "BadParameter"


@pytest.mark.parametrize("algorithm", [KeyWrapAlgorithm.rsa_oaep, KeyWrapAlgorithm.rsa_oaep_256])
def test_rsa_wrap_unwrap_through_cryptography_client(vault, algorithm):
    kid = vault.create_key("rsa-wrap")
    dek = os.urandom(32)
    with crypto_client(vault, kid) as crypto:
        wrapped = crypto.wrap_key(algorithm, dek)
        assert crypto.unwrap_key(algorithm, wrapped.encrypted_key).key == dek
    counts = vault.operation_counts()
    # The SDK wraps RSA locally with the public key; only the unwrap reaches the vault.
    assert counts.get("wrapKey", 0) == 0
    assert counts["unwrapKey"] == 1


@pytest.mark.parametrize(
    ("kty", "algorithm"),
    [
        ("RSA", "RSA-OAEP-256"),
        ("RSA", "RSA-OAEP"),
        ("oct-HSM", "A256KW"),
        ("oct-HSM", "CKM_AES_KEY_WRAP_PAD"),
    ],
)
def test_remote_wrap_and_unwrap(vault, kty, algorithm):
    kid = vault.create_key("remote-wrap", kty)
    version = kid.rsplit("/", 1)[1]
    dek = os.urandom(32)
    with key_client(vault) as client:
        wrapped = remote(
            client,
            "POST",
            f"/keys/remote-wrap/{version}/wrapkey",
            {"alg": algorithm, "value": b64url(dek)},
        )
        assert wrapped.status_code == 200
        assert wrapped.json()["kid"] == kid
        # An empty version means the latest, as the SDK sends when it could not GET the key.
        unwrapped = remote(
            client,
            "POST",
            "/keys/remote-wrap//unwrapkey",
            {"alg": algorithm, "value": wrapped.json()["value"]},
        )
        assert unwrapped.status_code == 200
        assert unb64url(unwrapped.json()["value"]) == dek
        tampered = bytearray(unb64url(wrapped.json()["value"]))
        tampered[5] ^= 1
        refused = remote(
            client,
            "POST",
            f"/keys/remote-wrap/{version}/unwrapkey",
            {"alg": algorithm, "value": b64url(bytes(tampered))},
        )
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "BadParameter"
    assert vault.operation_counts()["wrapKey"] == 1


def test_aes_key_wrap_pad_through_cryptography_client(vault):
    # The SDK has no local CKM_* support, so this goes to the vault both ways.
    kid = vault.create_key("hsm-pad", "oct-HSM", 256)
    dek = os.urandom(32)
    with crypto_client(vault, kid) as crypto:
        wrapped = crypto.wrap_key(KeyWrapAlgorithm.ckm_aes_key_wrap_pad, dek)
        assert (
            crypto.unwrap_key(KeyWrapAlgorithm.ckm_aes_key_wrap_pad, wrapped.encrypted_key).key
            == dek
        )
    assert vault.operation_counts()["wrapKey"] == 1
    assert vault.operation_counts()["unwrapKey"] == 1


def test_aes_gcm_round_trip(vault):
    kid = vault.create_key("hsm-gcm", "oct-HSM", 256)
    with crypto_client(vault, kid) as crypto:
        sealed = crypto.encrypt(
            EncryptionAlgorithm.a256_gcm, b"plaintext", additional_authenticated_data=b"ctx"
        )
        assert len(sealed.iv) == 12
        assert len(sealed.tag) == 16
        assert sealed.aad == b"ctx"
        assert sealed.ciphertext != b"plaintext"
        opened = crypto.decrypt(
            EncryptionAlgorithm.a256_gcm,
            sealed.ciphertext,
            iv=sealed.iv,
            authentication_tag=sealed.tag,
            additional_authenticated_data=b"ctx",
        )
        assert opened.plaintext == b"plaintext"
        with pytest.raises(HttpResponseError) as wrong_aad:
            crypto.decrypt(
                EncryptionAlgorithm.a256_gcm,
                sealed.ciphertext,
                iv=sealed.iv,
                authentication_tag=sealed.tag,
                additional_authenticated_data=b"other",
            )
        assert wrong_aad.value.status_code == 400


def test_rsa_encrypt_decrypt(vault):
    kid = vault.create_key("rsa-enc")
    with crypto_client(vault, kid) as crypto:
        sealed = crypto.encrypt(EncryptionAlgorithm.rsa_oaep_256, b"secret")
        assert crypto.decrypt(EncryptionAlgorithm.rsa_oaep_256, sealed.ciphertext).plaintext == (
            b"secret"
        )
    assert vault.operation_counts()["decrypt"] == 1


def test_disabled_key_is_forbidden(vault):
    kid = vault.create_key("off")
    version = kid.rsplit("/", 1)[1]
    vault.update_key("off", enabled=False)
    with key_client(vault) as client:
        with pytest.raises(HttpResponseError) as get:
            client.get_key("off")
        assert get.value.status_code == 403
        assert code_of(get.value) == "Forbidden"
        assert "disabled" in get.value.message
        for operation in ("wrapkey", "unwrapkey"):
            response = remote(
                client,
                "POST",
                f"/keys/off/{version}/{operation}",
                {"alg": "RSA-OAEP-256", "value": b64url(b"x" * 32)},
            )
            assert response.status_code == 403
            assert response.json()["error"]["innererror"]["code"] == "KeyDisabled"


def test_validity_period_blocks_protecting_operations_only(vault):
    now = int(time.time())
    expired = vault.create_key("old", expires_on=now - 60)
    early = vault.create_key("early", not_before=now + 3600)
    dek = os.urandom(32)
    with key_client(vault) as client:
        for kid, inner in ((expired, "KeyExpired"), (early, "KeyNotYetValid")):
            name, version = kid.split("/")[-2:]
            response = remote(
                client,
                "POST",
                f"/keys/{name}/{version}/wrapkey",
                {"alg": "RSA-OAEP-256", "value": b64url(dek)},
            )
            assert response.status_code == 403
            assert response.json()["error"]["innererror"]["code"] == inner
        # Data wrapped before expiry must stay recoverable: unwrap is not date-controlled.
        with crypto_client(vault, expired) as crypto:
            wrapped = crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, dek)  # local, public key
            assert (
                crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key).key == dek
            )


def test_not_found_has_key_vault_error_code(vault):
    with key_client(vault) as client:
        with pytest.raises(ResourceNotFoundError) as missing:
            client.get_key("nope")
        assert code_of(missing.value) == "KeyNotFound"
        vault.create_key("there")
        with pytest.raises(ResourceNotFoundError) as version:
            client.get_key("there", "0" * 32)
        assert code_of(version.value) == "KeyNotFound"


def test_restricted_identity_gets_403_and_can_use_what_it_may(vault):
    reader = vault.add_identity("reader", permissions={"get", "unwrapKey"})
    kid = vault.create_key("shared")
    dek = os.urandom(32)
    with key_client(vault, reader) as client:
        assert client.get_key("shared").id == kid
        with pytest.raises(HttpResponseError) as denied:
            client.create_rsa_key("mine")
        assert denied.value.status_code == 403
        assert code_of(denied.value) == "Forbidden"
        assert "create" in denied.value.message
    with crypto_client(vault, kid, reader) as crypto:
        wrapped = crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, dek)
        assert crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key).key == dek


def test_identity_without_get_goes_remote_with_empty_version(vault):
    unwrapper = vault.add_identity("unwrapper", permissions={"wrapKey", "unwrapKey"})
    vault.create_key("blind", "oct-HSM", 256)
    dek = os.urandom(32)
    # A versionless key id and no get permission: the SDK cannot fetch the key, so every
    # operation is remote, on /keys/blind//wrapkey.
    with crypto_client(vault, f"{vault.url}/keys/blind", unwrapper) as crypto:
        wrapped = crypto.wrap_key(KeyWrapAlgorithm.aes_256, dek)
        assert crypto.unwrap_key(KeyWrapAlgorithm.aes_256, wrapped.encrypted_key).key == dek
    counts = vault.operation_counts()
    assert counts["getKey"] == 1
    assert counts["wrapKey"] == 1
    assert counts["unwrapKey"] == 1


def test_unauthenticated_request_gets_challenge(vault):
    context = ssl.create_default_context(cafile=vault.ca_file)
    response = httpx.get(f"{vault.url}/keys/any/?{API}", verify=context)
    assert response.status_code == 401
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'authorization="{vault.url}/{vault.tenant_id}"' in challenge
    assert 'resource="https://vault.azure.net"' in challenge
    assert response.json()["error"]["code"] == "Unauthorized"
    assert vault.operation_counts() == {}


def _unsigned(token: str) -> str:
    header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{token.split('.')[1]}."


def _tampered(token: str) -> str:
    head, claims, signature = token.split(".")
    flipped = bytearray(unb64url(signature))
    flipped[0] ^= 1
    return f"{head}.{claims}.{b64url(bytes(flipped))}"


@pytest.mark.parametrize(
    ("make_token", "reason"),
    [
        (lambda v: v.issue_token(issued_at=time.time() - 7200), "expired"),
        (lambda v: v.issue_token(audience="https://storage.azure.com"), "audience"),
        (lambda v: _tampered(v.issue_token()), "signature"),
        (lambda v: _unsigned(v.issue_token()), "not signed"),
        (lambda v: "not-a-jwt", "malformed"),
    ],
)
def test_bad_tokens_are_refused(vault, make_token, reason):
    vault.create_key("guarded")
    with (
        key_client(vault, StaticToken(make_token(vault))) as client,
        pytest.raises(ClientAuthenticationError) as refused,
    ):
        client.get_key("guarded")
    assert refused.value.status_code == 401
    assert code_of(refused.value) == "Unauthorized"
    assert reason in refused.value.message
    assert "getKey" not in vault.operation_counts()


def test_issued_token_is_accepted(vault):
    vault.create_key("good-token")
    with key_client(vault, StaticToken(vault.issue_token())) as client:
        assert client.get_key("good-token").name == "good-token"


def test_throttling_with_retry_after_is_retried(vault):
    vault.create_key("busy")
    fault = vault.inject_fault("getKey", status=429, retry_after=0.05, count=2)
    with key_client(vault) as client:
        assert client.get_key("busy").name == "busy"
    assert fault.triggered == 2
    assert vault.operation_counts()["getKey"] == 3


def test_throttling_response_shape(vault):
    vault.create_key("busy2")
    vault.inject_fault("getKey", status=429, retry_after=7)
    with key_client(vault, retry_total=0) as client, pytest.raises(HttpResponseError) as throttled:
        client.get_key("busy2")
    assert throttled.value.status_code == 429
    assert headers_of(throttled.value)["Retry-After"] == "7"
    assert code_of(throttled.value) == "Throttled"


def test_unavailable_post_is_retried_and_has_no_retry_after(vault):
    kid = vault.create_key("flaky")
    dek = os.urandom(32)
    with crypto_client(vault, kid) as crypto:
        wrapped = crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, dek)
        fault = vault.inject_fault("unwrapKey", status=503, count=2)
        assert crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key).key == dek
        assert fault.triggered == 2
        fault.remove()
        vault.inject_fault("unwrapKey", status=500)
        with pytest.raises(HttpResponseError) as failed:
            crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key)
    assert failed.value.status_code == 500
    assert "Retry-After" not in headers_of(failed.value)
    assert vault.operation_counts()["unwrapKey"] == 3 + 4  # 1 + retry_status(3) attempts


def test_dropped_connection(vault):
    vault.create_key("drop")
    with key_client(vault) as client:
        # A GET is retried after a connection error ...
        fault = vault.inject_fault("getKey", drop=True, count=1)
        assert client.get_key("drop").name == "drop"
        assert fault.triggered == 1
        # ... a POST is not: the SDK cannot know whether it was applied.
        vault.inject_fault("wrapKey", drop=True)
        with pytest.raises(ServiceResponseError):
            remote(
                client,
                "POST",
                "/keys/drop//wrapkey",
                {"alg": "RSA-OAEP-256", "value": b64url(b"k" * 32)},
            )
    # The vault keeps serving after dropping connections.
    with key_client(vault) as client:
        assert client.get_key("drop").name == "drop"


def test_latency(vault):
    vault.create_key("slow")
    with key_client(vault) as client:
        client.get_key("slow")
        vault.inject_fault("getKey", latency=0.3)
        started = time.monotonic()
        client.get_key("slow")
        assert time.monotonic() - started >= 0.3


def test_probabilistic_fault_and_removal(vault):
    vault.create_key("dice")
    fault = vault.inject_fault("getKey", status=503, probability=0.5, seed=7)
    with key_client(vault, retry_total=0) as client:
        outcomes = []
        for _ in range(20):
            try:
                client.get_key("dice")
                outcomes.append(True)
            except HttpResponseError:
                outcomes.append(False)
        assert 0 < fault.triggered < 20
        assert outcomes.count(False) == fault.triggered
        fault.remove()
        assert client.get_key("dice").name == "dice"


def test_fault_spec_validation(vault):
    with pytest.raises(ValueError, match="429"):
        vault.inject_fault("getKey", status=503, retry_after=1)
    with pytest.raises(ValueError, match="status"):
        vault.inject_fault("getKey", status=418)
    with pytest.raises(ValueError, match="needs"):
        vault.inject_fault("getKey")


def test_token_requests_are_counted_and_pass_through_a_custom_transport(vault):
    sent = []

    class RecordingTransport(RequestsTransport):  # type: ignore[misc]
        def send(self, request, **kwargs):
            sent.append(request.url)
            return super().send(request, **kwargs)

    # A custom transport carries its own CA; the credential cannot hand it one.
    credential = vault.get_credential(transport=RecordingTransport(connection_verify=vault.ca_file))
    vault.create_key("via-transport")
    with key_client(vault, credential) as client:
        client.get_key("via-transport")
    assert any(url.endswith("/oauth2/v2.0/token") for url in sent)
    assert vault.operation_counts()["token"] >= 1


def test_two_vaults_are_isolated(vault):
    vault.create_key("only-here")
    with LocalKeyVault() as other:
        assert other.url != vault.url
        assert other.tenant_id != vault.tenant_id
        assert Path(other.ca_file).read_bytes() != Path(vault.ca_file).read_bytes()
        other.create_key("elsewhere")
        # A token from one vault's identity provider is worthless at the other.
        with (
            key_client(other, StaticToken(vault.issue_token())) as client,
            pytest.raises(ClientAuthenticationError),
        ):
            client.get_key("elsewhere")
        # The credential of one vault refuses the other's tenant in the challenge.
        with (
            key_client(other, vault.credential) as client,
            pytest.raises(ClientAuthenticationError),
        ):
            client.get_key("elsewhere")
        with key_client(other) as client:
            with pytest.raises(ResourceNotFoundError):
                client.get_key("only-here")
            assert client.get_key("elsewhere").name == "elsewhere"
        # Each vault has its own CA: the other's certificate does not verify.
        with (
            KeyClient(
                vault.url,
                vault.credential,
                verify_challenge_resource=False,
                connection_verify=other.ca_file,
                retry_total=0,
                **TIMEOUTS,
            ) as client,
            pytest.raises(ServiceRequestError),
        ):
            client.get_key("only-here")
        assert "getKey" not in vault.operation_counts()


def test_oversized_and_garbage_requests(vault):
    oversized = raw_exchange(
        vault,
        b"POST /keys/big/create?api-version=7.6 HTTP/1.1\r\nHost: x\r\n"
        b"Content-Length: 1000000000\r\nConnection: close\r\n\r\n",
    )
    assert oversized.startswith(b"HTTP/1.1 413")
    garbage = raw_exchange(vault, b"\x00\xffGARBAGE\r\n\r\n")
    assert garbage.startswith(b"HTTP/1.1 400")
    assert b'"code": "BadRequest"' in garbage
    with key_client(vault) as client:
        bad_json = client.send_request(
            HttpRequest(
                "POST",
                f"/keys/bad/create?{API}",
                content=b"{not json",
                headers={"Content-Type": "application/json"},
            )
        )
        assert bad_json.status_code == 400
        assert bad_json.json()["error"]["code"] == "BadParameter"
        assert remote(client, "GET", "/keys/bad/").status_code == 404
        no_version = httpx.get(
            f"{vault.url}/keys/bad/",
            headers={"Authorization": f"Bearer {vault.issue_token()}"},
            verify=ssl.create_default_context(cafile=vault.ca_file),
        )
        assert no_version.status_code == 400
        assert "api-version" in no_version.json()["error"]["message"]
        unknown = client.send_request(HttpRequest("GET", f"/secrets/x?{API}"))
        assert unknown.status_code == 404
        bad_alg = remote(client, "POST", "/keys/bad//wrapkey", {"alg": 5, "value": "!!"})
        assert bad_alg.status_code in (400, 404)


def test_kid_follows_host_header(vault):
    with KeyClient(
        vault.url.replace("127.0.0.1", "localhost"),
        vault.credential,
        verify_challenge_resource=False,
        connection_verify=vault.ca_file,
        **TIMEOUTS,
    ) as client:
        key = client.create_rsa_key("hosted")
    assert key.id.startswith(vault.url.replace("127.0.0.1", "localhost") + "/keys/hosted/")


def test_tls_policy_trusts_the_vault_ca(vault):
    policy = vault.tls_policy
    assert policy.ca_data == vault.ca_pem.decode()


def test_standalone_module_prints_url_and_ca_and_stops_on_ctrl_c():
    process = subprocess.Popen(
        [sys.executable, "-m", "envelope.testing.keyvault", "--key", "kek:RSA:2048"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line or line.startswith("Press Ctrl-C"):
                break
            lines.append(line)
        text = "".join(lines)
        url = text.split("listening on ", 1)[1].split()[0]
        ca_file = text.split("CA certificate", 1)[1].split()[0]
        assert url.startswith("https://127.0.0.1:")
        assert os.path.exists(ca_file)
        assert "/keys/kek/" in text
        context = ssl.create_default_context(cafile=ca_file)
        assert httpx.get(f"{url}/keys/kek/?{API}", verify=context).status_code == 401
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=15) == 0
        assert not os.path.exists(ca_file)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def test_list_keys_and_deleted_keys():
    http_challenge_cache.clear()
    with LocalKeyVault() as own:
        for index in range(3):
            own.create_key(f"listed-{index}")
        with key_client(own) as client:
            names = sorted(p.name for p in client.list_properties_of_keys(max_page_size=2))
            assert names == ["listed-0", "listed-1", "listed-2"]
            assert own.operation_counts()["getKeys"] == 2
            client.begin_delete_key("listed-1", _polling_interval=0.01).result()
            deleted = list(client.list_deleted_keys())
            assert [d.name for d in deleted] == ["listed-1"]
            assert deleted[0].recovery_id == f"{own.url}/deletedkeys/listed-1"


def test_identity_names_are_unique(vault):
    vault.add_identity("twin", permissions={"get"})
    with pytest.raises(ValueError, match="exists"):
        vault.add_identity("twin")
    with pytest.raises(ValueError, match="unknown permissions"):
        vault.add_identity("typo", permissions={"unwrap"})


def test_token_endpoint_faults_are_retried_by_azure_identity(vault):
    vault.create_key("token-fault")
    fault = vault.inject_fault("token", status=503, count=1)
    credential = vault.get_credential(retry_backoff_factor=0.01)
    with key_client(vault, credential) as client:
        assert client.get_key("token-fault").name == "token-fault"
    assert fault.triggered == 1
    assert vault.operation_counts()["token"] >= 2
