# mypy: allow-untyped-defs, allow-incomplete-defs
"""Import, backup and restore through the SDK, and every way an import or a backup blob can
be wrong: inconsistent or partial key material, tampered, truncated or foreign blobs. A refused
request stores nothing."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.keyvault.keys import JsonWebKey, KeyRotationLifetimeAction, KeyRotationPolicy
from azure.keyvault.keys.crypto import KeyWrapAlgorithm, SignatureAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap

from envelope.testing import LocalKeyVault
from tests.conftest import key_client
from tests.testing.kv import b64url, code_of, crypto_client, jwk, remote, unb64url

CURVES = {
    "P-256": ec.SECP256R1(),
    "P-384": ec.SECP384R1(),
    "P-521": ec.SECP521R1(),
    "P-256K": ec.SECP256K1(),
}


def _octets(value: int, length: int | None = None) -> bytes:
    return value.to_bytes(length or max(1, (value.bit_length() + 7) // 8), "big")


def rsa_jwk(key: rsa.RSAPrivateKey, *, crt: bool = True, **overrides: Any) -> dict[str, Any]:
    numbers = key.private_numbers()
    fields = {
        "kty": "RSA",
        "n": numbers.public_numbers.n,
        "e": numbers.public_numbers.e,
        "d": numbers.d,
        "p": numbers.p,
        "q": numbers.q,
    }
    if crt:
        fields.update(dp=numbers.dmp1, dq=numbers.dmq1, qi=numbers.iqmp)
    fields.update(overrides)
    return {k: b64url(_octets(v)) if isinstance(v, int) else v for k, v in fields.items()}


def ec_jwk(key: ec.EllipticCurvePrivateKey, crv: str, **overrides: Any) -> dict[str, Any]:
    numbers = key.private_numbers()
    fields = {
        "kty": "EC",
        "crv": crv,
        "x": numbers.public_numbers.x,
        "y": numbers.public_numbers.y,
        "d": numbers.private_value,
    }
    fields.update(overrides)
    return {k: b64url(_octets(v)) if isinstance(v, int) else v for k, v in fields.items()}


@pytest.mark.covers("KeyClient.import_key")
@pytest.mark.parametrize("hsm", [False, True])
def test_import_rsa_and_use_it(vault, hsm):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = private.private_numbers()
    key = JsonWebKey(
        kty="RSA",
        n=_octets(numbers.public_numbers.n),
        e=_octets(numbers.public_numbers.e),
        d=_octets(numbers.d),
        p=_octets(numbers.p),
        q=_octets(numbers.q),
        key_ops=["unwrapKey", "sign", "verify", "wrapKey"],
    )
    with key_client(vault) as client:
        imported = client.import_key(f"imported-rsa-{hsm}", key, hardware_protected=hsm)
        assert imported.key_type == ("RSA-HSM" if hsm else "RSA")
        assert jwk(imported).d is None
        assert jwk(imported).n == _octets(numbers.public_numbers.n)
        assert sorted(imported.key_operations) == ["sign", "unwrapKey", "verify", "wrapKey"]
    dek = os.urandom(32)
    oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
    with crypto_client(vault, imported.id) as crypto:
        wrapped = private.public_key().encrypt(dek, oaep)
        assert crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped).key == dek
        digest = hashlib.sha256(b"imported").digest()
        signature = crypto.sign(SignatureAlgorithm.ps256, digest).signature
    private.public_key().verify(
        signature, b"imported", padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256()
    )


@pytest.mark.parametrize("crv", list(CURVES))
def test_import_ec_and_sign(vault, crv):
    private = ec.generate_private_key(CURVES[crv])
    with key_client(vault) as client:
        response = remote(client, "PUT", f"/keys/imported-{crv}", {"key": ec_jwk(private, crv)})
        assert response.status_code == 200
        assert response.json()["key"]["crv"] == crv
    kid = response.json()["key"]["kid"]
    digest_algorithm = {"P-384": hashes.SHA384(), "P-521": hashes.SHA512()}.get(
        crv, hashes.SHA256()
    )
    algorithm = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512", "P-256K": "ES256K"}[crv]
    digest = hashes.Hash(digest_algorithm)
    digest.update(b"m")
    with crypto_client(vault, kid) as crypto:
        raw = crypto.sign(SignatureAlgorithm(algorithm), digest.finalize()).signature
    half = len(raw) // 2
    der = utils.encode_dss_signature(
        int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
    )
    private.public_key().verify(der, b"m", ec.ECDSA(digest_algorithm))


def test_import_accepts_short_coordinates_and_answers_fixed_length(vault):
    # Some encoders drop leading zero bytes; the vault accepts that and answers exact JWKs.
    # Drawn until one has an x below 2**248 (1 in 256 do; 4,096 draws all miss with p < 1e-6).
    private = ec.generate_private_key(ec.SECP256R1())
    for _ in range(4096):
        if private.public_key().public_numbers().x < 1 << 248:
            break
        private = ec.generate_private_key(ec.SECP256R1())
    assert private.public_key().public_numbers().x < 1 << 248
    with key_client(vault) as client:
        response = remote(client, "PUT", "/keys/short-x", {"key": ec_jwk(private, "P-256")})
        assert response.status_code == 200
        assert len(jwk(client.get_key("short-x")).x) == 32


def test_import_symmetric_key_never_returns_k(vault):
    secret = os.urandom(32)
    with key_client(vault) as client:
        imported = client.import_key("imported-aes", JsonWebKey(kty="oct-HSM", k=secret))
        assert jwk(imported).k is None
        body = {"alg": "A256KW", "value": b64url(b"k" * 32)}
        wrapped = remote(client, "POST", "/keys/imported-aes//wrapkey", body)
    # The vault wrapped with exactly the imported key (RFC 3394, checked by cryptography).
    assert aes_key_unwrap(secret, unb64url(wrapped.json()["value"])) == b"k" * 32


def _bad_imports() -> list[tuple[str, dict[str, Any]]]:
    r = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_numbers()
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    e = ec.generate_private_key(ec.SECP256R1())
    n = r.private_numbers()
    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    good_rsa = rsa_jwk(r)
    return [
        ("public RSA only", {k: good_rsa[k] for k in ("kty", "n", "e")}),
        ("RSA without q", {k: v for k, v in good_rsa.items() if k != "q"}),
        ("p*q != n", rsa_jwk(r, p=other.p)),
        ("wrong d", rsa_jwk(r, crt=False, d=n.d + 2)),
        ("wrong dp", rsa_jwk(r, dp=n.dmp1 + 1)),
        ("1024-bit modulus", rsa_jwk(small)),
        ("even exponent", rsa_jwk(r, e=65538)),
        ("modulus too long", {**good_rsa, "n": b64url(os.urandom(1024))}),
        ("EC point not of d", ec_jwk(e, "P-256", d=e.private_numbers().private_value ^ 1)),
        ("EC d = 0", ec_jwk(e, "P-256", d=b64url(b"\0" * 32))),
        ("EC d = order", ec_jwk(e, "P-256", d=order)),
        ("EC x too long", ec_jwk(e, "P-256", x=b64url(os.urandom(33)))),
        ("EC unknown curve", ec_jwk(e, "P-192")),
        ("EC public only", {k: v for k, v in ec_jwk(e, "P-256").items() if k != "d"}),
        ("AES 512-bit", {"kty": "oct-HSM", "k": b64url(os.urandom(64))}),
        ("AES 40-bit", {"kty": "oct", "k": b64url(os.urandom(5))}),
        ("bad base64", {**good_rsa, "d": "!!not base64!!"}),
        ("number for n", {**good_rsa, "n": 12345}),
        ("unknown kty", {**good_rsa, "kty": "DSA"}),
        ("unknown key_ops", {**good_rsa, "key_ops": ["encrypt", "fly"]}),
        ("key_ops not a list", {**good_rsa, "key_ops": "encrypt"}),
    ]


@pytest.mark.parametrize(("case", "key"), _bad_imports(), ids=[c for c, _ in _bad_imports()])
def test_import_refuses_bad_key_material(vault, case, key):
    with key_client(vault) as client:
        response = remote(client, "PUT", "/keys/bad-import", {"key": key})
        assert response.status_code == 400, case
        assert response.json()["error"]["code"] == "BadParameter"
        with pytest.raises(ResourceNotFoundError):
            client.get_key("bad-import")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"key": "RSA"},
        {"key": {"kty": "RSA"}, "Hsm": "yes"},
        {"key": {"kty": "oct", "k": "AAAA"}, "tags": ["a"]},
        {"key": {"kty": "oct-HSM", "k": b64url(bytes(32))}, "attributes": {"exportable": True}},
    ],
)
def test_import_refuses_bad_requests(vault, body):
    with key_client(vault) as client:
        response = remote(client, "PUT", "/keys/bad-import-request", body)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "BadParameter"


@pytest.mark.covers("KeyClient.backup_key", "KeyClient.restore_key_backup")
def test_backup_restores_every_version_into_another_vault(vault):
    with key_client(vault) as client:
        first = client.create_rsa_key("Backed-Up", size=2048, tags={"v": "1"})
        second = client.rotate_key("backed-up")
        client.update_key_properties("backed-up", first.properties.version, enabled=False)
        actions = [KeyRotationLifetimeAction("Rotate", time_after_create="P30D")]
        client.update_key_rotation_policy(
            "backed-up", KeyRotationPolicy(lifetime_actions=actions, expires_in="P90D")
        )
        blob = client.backup_key("BACKED-UP")
    # Opaque: neither the name, nor the JSON, nor the modulus is visible.
    assert b"Backed-Up" not in blob
    assert not blob.startswith(b"{")
    assert b'"versions"' not in blob
    assert jwk(first).n[:16] not in blob
    dek = os.urandom(32)
    with crypto_client(vault, second.id) as crypto:
        wrapped = crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, dek)
    with LocalKeyVault() as other, key_client(other) as client:
        restored = client.restore_key_backup(blob)
        assert restored.name == "Backed-Up"
        assert restored.id == f"{other.url}/keys/Backed-Up/{second.properties.version}"
        versions = {v.version: v for v in client.list_properties_of_key_versions("backed-up")}
        assert set(versions) == {first.properties.version, second.properties.version}
        assert versions[first.properties.version].enabled is False
        assert versions[first.properties.version].tags == {"v": "1"}
        assert versions[second.properties.version].created_on == second.properties.created_on
        assert client.get_key_rotation_policy("backed-up").expires_in == "P90D"
        with crypto_client(other, restored.id) as crypto:
            assert (
                crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key).key == dek
            )
        # The name is taken now: a second restore conflicts, as in the service.
        with pytest.raises(ResourceExistsError):
            client.restore_key_backup(blob)


def test_restore_refuses_a_deleted_but_recoverable_name(vault):
    with key_client(vault) as client:
        client.create_ec_key("soft-deleted")
        blob = client.backup_key("soft-deleted")
        client.begin_delete_key("soft-deleted", _polling_interval=0.01).result()
        with pytest.raises(ResourceExistsError):
            client.restore_key_backup(blob)
        client.purge_deleted_key("soft-deleted")
        assert client.restore_key_backup(blob).name == "soft-deleted"


def _tampered(blob: bytes) -> list[tuple[str, bytes]]:
    cases = [
        ("empty", b""),
        ("truncated", blob[:-1]),
        ("extended", blob + b"\0"),
        ("header only", blob[:17]),
    ]
    regions = {"magic": 0, "nonce": 6, "ciphertext": len(blob) // 2, "tag": len(blob) - 1}
    for region, offset in regions.items():
        flipped = bytearray(blob)
        flipped[offset] ^= 0x01
        cases.append((f"flipped {region}", bytes(flipped)))
    return cases


def test_tampered_and_foreign_blobs_are_refused(vault):
    with key_client(vault) as client:
        client.create_oct_key("precious", size=256, hardware_protected=True)
        blob = client.backup_key("precious")
        client.begin_delete_key("precious", _polling_interval=0.01).result()
        client.purge_deleted_key("precious")
        for case, bad in _tampered(blob):
            response = remote(client, "POST", "/keys/restore", {"value": b64url(bad)})
            assert response.status_code == 400, case
            assert response.json()["error"]["code"] == "BadParameter"
        for value in ("!!!", 42, None, "A" * 2_000_000):
            response = remote(client, "POST", "/keys/restore", {"value": value})
            assert response.status_code in (400, 413), value
        with pytest.raises(ResourceNotFoundError):
            client.get_key("precious")
    # A vault of another "subscription" (another backup key) cannot open the blob.
    with LocalKeyVault(backup_key=os.urandom(32)) as foreign, key_client(foreign) as client:
        with pytest.raises(HttpResponseError) as refused:
            client.restore_key_backup(blob)
        assert refused.value.status_code == 400
        assert code_of(refused.value) == "BadParameter"
        own = client.backup_key(client.create_ec_key("own").name)
    # ... and the other way round; the same key on both sides opens both.
    with key_client(vault) as client, pytest.raises(HttpResponseError):
        client.restore_key_backup(own)
    key = os.urandom(32)
    with LocalKeyVault(backup_key=key) as one, LocalKeyVault(backup_key=key) as two:
        one.create_key("shared", "EC")
        with key_client(one) as source, key_client(two) as target:
            assert target.restore_key_backup(source.backup_key("shared")).name == "shared"


def test_backup_needs_an_existing_key_and_the_permission(vault):
    vault.create_key("guarded-backup", "EC")
    limited = vault.add_identity("no-backup", permissions={"get", "list"})
    with key_client(vault) as client, pytest.raises(ResourceNotFoundError):
        client.backup_key("missing")
    with key_client(vault, limited) as client, pytest.raises(HttpResponseError) as denied:
        client.backup_key("guarded-backup")
    assert denied.value.status_code == 403


def test_backup_key_argument_is_checked():
    with pytest.raises(ValueError, match="32 bytes"):
        LocalKeyVault(backup_key=b"short")


def test_key_names_are_case_insensitive(vault):
    with key_client(vault) as client:
        created = client.create_ec_key("MixedCase-Name")
        assert client.get_key("mixedcase-name").id == created.id
        again = client.create_ec_key("MIXEDCASE-NAME")
        assert again.name == "MixedCase-Name"  # a key keeps the spelling it was made with
        versions = list(client.list_properties_of_key_versions("mixedCASE-name"))
        assert len(versions) == 2
        version = str(created.properties.version)
        assert client.get_key("MIXEDCASE-NAME", version.upper()).id == created.id
        client.begin_delete_key("mixedcase-NAME", _polling_interval=0.01).result()
        with pytest.raises(ResourceExistsError):
            client.create_ec_key("Mixedcase-Name")
        assert client.get_deleted_key("MIXEDCASE-name").name == "MixedCase-Name"
        client.purge_deleted_key("mixedcase-name")
        assert client.create_ec_key("mixedcase-NAME").name == "mixedcase-NAME"


def test_exportable_needs_a_release_policy_and_an_immutable_one_stays(vault):
    import json

    policy = {"anyOf": [{"anyOf": [{"claim": "x", "equals": True}], "authority": "https://a/"}]}
    data = b64url(json.dumps(policy).encode())
    with key_client(vault) as client:
        body = {"kty": "RSA-HSM", "attributes": {"exportable": True}}
        assert remote(client, "POST", "/keys/exportable/create", body).status_code == 400
        body["release_policy"] = {"data": data, "immutable": True}
        created = remote(client, "POST", "/keys/exportable/create", body)
        assert created.status_code == 200
        assert created.json()["release_policy"]["immutable"] is True
        other = {"data": b64url(b'{"anyOf": []}'), "immutable": True}
        changed = remote(client, "PATCH", "/keys/exportable/", {"release_policy": other})
        assert changed.status_code == 400
        vault.create_key("plain-key", "RSA")
        made_exportable = remote(
            client, "PATCH", "/keys/plain-key/", {"attributes": {"exportable": True}}
        )
        assert made_exportable.status_code == 400
        bad_policy = {"release_policy": {"data": b64url(b"not json")}}
        assert remote(client, "PATCH", "/keys/plain-key/", bad_policy).status_code == 400
