# mypy: allow-untyped-defs, allow-incomplete-defs
"""EC keys, signatures and AES-CBC through the unmodified azure-keyvault-keys SDK: exact
JWKs, every signature algorithm, the digest-length and key-type checks, the vault's own
verify endpoint, and signatures the vault makes checked by cryptography independently."""

from __future__ import annotations

import hashlib
import os

import pytest
from azure.core.exceptions import HttpResponseError
from azure.keyvault.keys import KeyCurveName, KeyType
from azure.keyvault.keys.crypto import (
    CryptographyClient,
    EncryptionAlgorithm,
    SignatureAlgorithm,
)
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils

from tests.conftest import key_client, run_threads
from tests.testing.kv import b64url, crypto_client, jwk, remote, unb64url

CURVES = {
    "P-256": (ec.SECP256R1(), 32, SignatureAlgorithm.es256, hashlib.sha256, hashes.SHA256()),
    "P-384": (ec.SECP384R1(), 48, SignatureAlgorithm.es384, hashlib.sha384, hashes.SHA384()),
    "P-521": (ec.SECP521R1(), 66, SignatureAlgorithm.es512, hashlib.sha512, hashes.SHA512()),
    "P-256K": (ec.SECP256K1(), 32, SignatureAlgorithm.es256_k, hashlib.sha256, hashes.SHA256()),
}
RSA_ALGORITHMS = {
    SignatureAlgorithm.rs256: (hashlib.sha256, hashes.SHA256(), False),
    SignatureAlgorithm.rs384: (hashlib.sha384, hashes.SHA384(), False),
    SignatureAlgorithm.rs512: (hashlib.sha512, hashes.SHA512(), False),
    SignatureAlgorithm.ps256: (hashlib.sha256, hashes.SHA256(), True),
    SignatureAlgorithm.ps384: (hashlib.sha384, hashes.SHA384(), True),
    SignatureAlgorithm.ps512: (hashlib.sha512, hashes.SHA512(), True),
}


def _public_key(key) -> ec.EllipticCurvePublicKey:
    curve = CURVES[key.key.crv][0]
    numbers = ec.EllipticCurvePublicNumbers(
        int.from_bytes(jwk(key).x, "big"), int.from_bytes(jwk(key).y, "big"), curve
    )
    return numbers.public_key()


@pytest.mark.covers("KeyClient.create_ec_key", "KeyClient.create_key", "KeyClient.get_key")
@pytest.mark.parametrize("curve", list(CURVES))
@pytest.mark.parametrize("hsm", [False, True])
def test_ec_keys_have_exact_jwks(vault, curve, hsm):
    _, length, *_ = CURVES[curve]
    with key_client(vault) as client:
        name = f"ec-{curve.replace('-', '')}-{hsm}"
        created = client.create_ec_key(name, curve=curve, hardware_protected=hsm)
        assert created.key_type == (KeyType.ec_hsm if hsm else KeyType.ec)
        assert jwk(created).crv == curve
        # Fixed-length coordinates, whatever their value: many keys, so that some have a
        # leading zero byte that a minimal encoding would drop.
        for index in range(12):
            key = client.create_key(f"{name}-{index}", "EC-HSM" if hsm else "EC", curve=curve)
            assert len(jwk(key).x) == length
            assert len(jwk(key).y) == length
            assert jwk(key).d is None
            assert sorted(jwk(key).key_ops) == ["sign", "verify"]
            _public_key(key)  # the point is on the curve
        fetched = client.get_key(name)
        assert (jwk(fetched).x, jwk(fetched).y) == (jwk(created).x, jwk(created).y)


def test_ec_defaults_and_bad_curves(vault):
    with key_client(vault) as client:
        assert jwk(client.create_ec_key("ec-default")).crv == "P-256"
        for body in (
            {"kty": "EC", "crv": "P-192"},
            {"kty": "EC", "crv": 256},
            {"kty": "EC", "crv": "P-256", "key_size": 384},
            {"kty": "RSA", "crv": "P-256"},
            {"kty": "EC", "public_exponent": 3},
        ):
            response = remote(client, "POST", "/keys/ec-bad/create", body)
            assert response.status_code == 400, body
            assert response.json()["error"]["code"] == "BadParameter"


@pytest.mark.covers("CryptographyClient.sign", "CryptographyClient.verify")
@pytest.mark.parametrize("curve", list(CURVES))
def test_ec_sign_verify_all_curves(vault, curve):
    _, length, algorithm, hash_function, digest_algorithm = CURVES[curve]
    with key_client(vault) as client:
        key = client.create_ec_key(f"sign-{curve.replace('-', '')}", curve=curve)
    digest = hash_function(b"message").digest()
    with crypto_client(vault, key.id) as crypto:
        signed = crypto.sign(algorithm, digest)
        assert signed.key_id == key.id
        assert len(signed.signature) == 2 * length
        assert crypto.verify(algorithm, digest, signed.signature).is_valid
        assert not crypto.verify(
            algorithm, hash_function(b"other").digest(), signed.signature
        ).is_valid
    # cryptography, not the SDK, judges the signature: raw r||s of fixed length.
    r = int.from_bytes(signed.signature[:length], "big")
    s = int.from_bytes(signed.signature[length:], "big")
    _public_key(key).verify(
        utils.encode_dss_signature(r, s), b"message", ec.ECDSA(digest_algorithm)
    )
    assert vault.operation_counts()["sign"] == 1


@pytest.mark.parametrize("algorithm", list(RSA_ALGORITHMS))
def test_rsa_sign_all_algorithms(vault, algorithm):
    hash_function, digest_algorithm, pss = RSA_ALGORITHMS[algorithm]
    kid = vault.create_key("rsa-sign", size=3072)
    digest = hash_function(b"message").digest()
    with crypto_client(vault, kid) as crypto:
        signed = crypto.sign(algorithm, digest)
        assert crypto.verify(algorithm, digest, signed.signature).is_valid
        public = crypto.create_rsa_public_key().public_numbers().public_key()
    pad = (
        padding.PSS(padding.MGF1(digest_algorithm), digest_algorithm.digest_size)
        if pss
        else padding.PKCS1v15()
    )
    public.verify(signed.signature, b"message", pad, digest_algorithm)
    with pytest.raises(InvalidSignature):
        public.verify(signed.signature, b"tampered", pad, digest_algorithm)


def test_the_vault_verify_endpoint(vault):
    """The SDK verifies locally with the public key; the vault's own verify answers too."""
    kid = vault.create_key("verify-remote", "EC", curve="P-384")
    version = kid.rsplit("/", 1)[1]
    digest = hashlib.sha384(b"m").digest()
    with key_client(vault) as client:
        signed = remote(
            client,
            "POST",
            f"/keys/verify-remote/{version}/sign",
            {"alg": "ES384", "value": b64url(digest)},
        ).json()
        assert signed["kid"] == kid
        signature = unb64url(signed["value"])
        good = {"alg": "ES384", "digest": b64url(digest), "value": b64url(signature)}
        assert remote(client, "POST", "/keys/verify-remote//verify", good).json() == {"value": True}
        flipped = bytearray(signature)
        flipped[-1] ^= 1
        for bad in (
            {**good, "value": b64url(bytes(flipped))},
            {**good, "value": b64url(signature[:-1])},
            {**good, "value": b64url(b"")},
            {**good, "digest": b64url(hashlib.sha384(b"n").digest())},
        ):
            response = remote(client, "POST", "/keys/verify-remote//verify", bad)
            assert response.status_code in (200, 400)
            if response.status_code == 200:
                assert response.json() == {"value": False}
    assert vault.operation_counts()["verify"] == 5


@pytest.mark.parametrize(
    ("kty", "curve", "algorithm", "digest_size", "message"),
    [
        ("RSA", None, "RS256", 20, "32-byte SHA256 digest"),
        ("RSA", None, "PS512", 32, "64-byte SHA512 digest"),
        ("EC", "P-256", "ES256", 48, "32-byte SHA256 digest"),
        ("EC", "P-256", "ES384", 48, "needs an EC key on curve P-384"),
        ("EC", "P-256K", "ES256", 32, "needs an EC key on curve P-256"),
        ("EC", "P-256", "RS256", 32, "needs an RSA key"),
        ("RSA", None, "ES256", 32, "needs an EC key"),
        ("oct-HSM", None, "RS256", 32, "needs an RSA key"),
        ("RSA", None, "HS256", 32, "not a supported signature algorithm"),
    ],
)
def test_sign_refuses_wrong_digest_length_key_and_algorithm(
    vault, kty, curve, algorithm, digest_size, message
):
    kid = vault.create_key("sign-checks", kty, curve=curve, key_ops=["sign", "verify"])
    with key_client(vault) as client:
        for operation, body in (
            ("sign", {"alg": algorithm, "value": b64url(os.urandom(digest_size))}),
            (
                "verify",
                {"alg": algorithm, "digest": b64url(os.urandom(digest_size)), "value": "AA"},
            ),
        ):
            response = remote(client, "POST", f"{kid.split(vault.url)[1]}/{operation}", body)
            assert response.status_code == 400, (operation, response.json())
            assert message in response.json()["error"]["message"]


def test_sign_needs_the_sign_operation_and_a_valid_key(vault):
    import time

    no_sign = vault.create_key("no-sign", "EC", key_ops=["verify"])
    expired = vault.create_key("expired-sign", "EC", expires_on=int(time.time()) - 10)
    digest = b64url(hashlib.sha256(b"x").digest())
    with key_client(vault) as client:
        refused = remote(
            client, "POST", f"{no_sign.split(vault.url)[1]}/sign", {"alg": "ES256", "value": digest}
        )
        assert refused.status_code == 400
        # Signing protects new data, so it is date-controlled; verifying old data is not.
        late = remote(
            client, "POST", f"{expired.split(vault.url)[1]}/sign", {"alg": "ES256", "value": digest}
        )
        assert late.status_code == 403
        assert late.json()["error"]["innererror"]["code"] == "KeyExpired"
        check = {"alg": "ES256", "digest": digest, "value": b64url(bytes(64))}
        assert remote(client, "POST", f"{expired.split(vault.url)[1]}/verify", check).json() == {
            "value": False
        }


@pytest.mark.covers("CryptographyClient.from_jwk", "KeyClient.get_cryptography_client")
def test_local_client_from_the_vaults_jwk_verifies_vault_signatures(vault):
    with key_client(vault) as client:
        key = client.create_ec_key("from-jwk", curve=KeyCurveName.p_521)
        digest = hashlib.sha512(b"payload").digest()
        with client.get_cryptography_client("from-jwk") as crypto:
            signed = crypto.sign(SignatureAlgorithm.es512, digest)
    local = CryptographyClient.from_jwk(key.key)
    assert local.verify(SignatureAlgorithm.es512, digest, signed.signature).is_valid
    with pytest.raises(NotImplementedError):
        local.sign(SignatureAlgorithm.es512, digest)  # a public JWK cannot sign


@pytest.mark.covers(
    "CryptographyClient.create_rsa_private_key", "CryptographyClient.create_rsa_public_key"
)
def test_rsa_key_objects_backed_by_the_vault(vault):
    kid = vault.create_key("rsa-objects", size=2048)
    with crypto_client(vault, kid) as crypto:
        private = crypto.create_rsa_private_key()
        public = crypto.create_rsa_public_key()
        signature = private.sign(b"data", padding.PKCS1v15(), hashes.SHA256())
        public.verify(signature, b"data", padding.PKCS1v15(), hashes.SHA256())
        oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
        assert private.decrypt(public.encrypt(b"secret", oaep), oaep) == b"secret"
    counts = vault.operation_counts()
    assert counts["sign"] == 1
    assert counts["decrypt"] == 1


@pytest.mark.covers("CryptographyClient.encrypt", "CryptographyClient.decrypt")
@pytest.mark.parametrize("size", [128, 192, 256])
def test_aes_cbc_and_cbcpad(vault, size):
    reader = vault.add_identity(f"cbc-{size}", permissions={"encrypt", "decrypt"})
    vault.create_key(f"cbc-{size}", "oct-HSM", size)
    iv = os.urandom(16)
    plaintext = b"exactly 32 bytes of plaintext!!!"
    # Without keys/get the SDK cannot build its local provider (which would encrypt CBCPAD
    # with a random key of its own): every call goes to the vault.
    with crypto_client(vault, f"{vault.url}/keys/cbc-{size}", reader) as crypto:
        padded = getattr(EncryptionAlgorithm, f"a{size}_cbcpad")
        sealed = crypto.encrypt(padded, b"short", iv=iv)
        assert sealed.iv == iv
        assert len(sealed.ciphertext) == 16
        assert crypto.decrypt(padded, sealed.ciphertext, iv=iv).plaintext == b"short"
        plain_cbc = getattr(EncryptionAlgorithm, f"a{size}_cbc")
        sealed = crypto.encrypt(plain_cbc, plaintext, iv=iv)
        assert len(sealed.ciphertext) == 32
        assert crypto.decrypt(plain_cbc, sealed.ciphertext, iv=iv).plaintext == plaintext
        # Plain CBC fills a partial last block with zeros, as Managed HSM does.
        sealed = crypto.encrypt(plain_cbc, b"abc", iv=iv)
        assert crypto.decrypt(plain_cbc, sealed.ciphertext, iv=iv).plaintext == b"abc" + bytes(13)
        with pytest.raises(HttpResponseError) as wrong_iv:
            crypto.decrypt(padded, sealed.ciphertext, iv=os.urandom(16))
        assert wrong_iv.value.status_code == 400
    assert vault.operation_counts()["encrypt"] == 3


def test_aes_cbc_refuses_bad_requests(vault):
    kid = vault.create_key("cbc-bad", "oct-HSM", 256)
    path = kid.split(vault.url)[1]
    with key_client(vault) as client:
        for operation, body in (
            ("encrypt", {"alg": "A128CBC", "value": "AAAA", "iv": b64url(bytes(16))}),
            ("encrypt", {"alg": "A256CBC", "value": "AAAA", "iv": b64url(bytes(8))}),
            ("decrypt", {"alg": "A256CBC", "value": b64url(bytes(16))}),
            ("decrypt", {"alg": "A256CBC", "value": b64url(bytes(15)), "iv": b64url(bytes(16))}),
            ("decrypt", {"alg": "A256CBCPAD", "value": b64url(bytes(16)), "iv": b64url(bytes(16))}),
            ("wrapkey", {"alg": "A256CBC", "value": b64url(bytes(32))}),
            ("encrypt", {"alg": "A256KW", "value": b64url(bytes(32))}),
        ):
            response = remote(client, "POST", f"{path}/{operation}", body)
            assert response.status_code == 400, body
            assert response.json()["error"]["code"] == "BadParameter"
        # The service makes an iv when the caller gives none, and returns it.
        made = remote(client, "POST", f"{path}/encrypt", {"alg": "A256CBCPAD", "value": "AAAA"})
        assert len(unb64url(made.json()["iv"])) == 16


def test_ec_keys_neither_encrypt_nor_wrap(vault):
    kid = vault.create_key("ec-no-encrypt", "EC", key_ops=["sign", "verify", "encrypt", "wrapKey"])
    with key_client(vault) as client:
        for operation in ("encrypt", "wrapkey"):
            response = remote(
                client,
                "POST",
                f"{kid.split(vault.url)[1]}/{operation}",
                {"alg": "RSA-OAEP", "value": "AAAA"},
            )
            assert response.status_code == 400
            assert response.json()["error"]["code"] == "BadParameter"


def test_hundreds_of_concurrent_signatures(vault):
    kid = vault.create_key("busy-signer", "EC", curve="P-256")
    digest = hashlib.sha256(b"concurrent").digest()
    # One client, one connection pool, many threads.
    with crypto_client(vault, kid) as crypto:
        results, errors = run_threads(
            200, lambda n: crypto.sign(SignatureAlgorithm.es256, digest).signature
        )
    assert errors == []
    assert len(set(results)) == 200  # ECDSA is randomized: 200 distinct signatures
    with crypto_client(vault, kid) as crypto:
        assert all(
            crypto.verify(SignatureAlgorithm.es256, digest, s).is_valid for s in results[:20]
        )
