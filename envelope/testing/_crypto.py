"""The cryptography the vault performs for encrypt, decrypt, wrapKey, unwrapKey, sign and
verify, on a request body that may be hostile: every field is type-checked, decoded strictly
and bounded, and every failure is a Key Vault ``BadParameter`` reply."""

from __future__ import annotations

import os
import re
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import padding as block_padding
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap,
    aes_key_unwrap_with_padding,
    aes_key_wrap,
    aes_key_wrap_with_padding,
)

from ._errors import bad_parameter
from ._identity import b64url_decode, b64url_encode
from ._jwk import CURVES
from ._store import KeyVersion

__all__ = ["key_operation"]

MAX_VALUE_BYTES = 64 * 1024
BLOCK = 16
# Signature algorithm -> (hash, RSA padding or the EC curve it needs).
SIGNATURES: dict[str, tuple[hashes.HashAlgorithm, str]] = {
    "RS256": (hashes.SHA256(), "pkcs1"),
    "RS384": (hashes.SHA384(), "pkcs1"),
    "RS512": (hashes.SHA512(), "pkcs1"),
    "PS256": (hashes.SHA256(), "pss"),
    "PS384": (hashes.SHA384(), "pss"),
    "PS512": (hashes.SHA512(), "pss"),
    "ES256": (hashes.SHA256(), "P-256"),
    "ES384": (hashes.SHA384(), "P-384"),
    "ES512": (hashes.SHA512(), "P-521"),
    "ES256K": (hashes.SHA256(), "P-256K"),
}
_AES = re.compile(r"A(128|192|256)(KW|GCM|CBC|CBCPAD)")


def field(body: dict[str, Any], name: str, *, required: bool = True) -> bytes | None:
    raw = body.get(name)
    if raw is None:
        if required:
            raise bad_parameter(f"The parameter '{name}' is required.")
        return None
    if not isinstance(raw, str):
        raise bad_parameter(f"The parameter '{name}' must be a base64url string.")
    if len(raw) > MAX_VALUE_BYTES * 2:
        raise bad_parameter(f"The parameter '{name}' is too long.")
    try:
        value = b64url_decode(raw)
    except ValueError:
        raise bad_parameter(f"The parameter '{name}' is not valid base64url.") from None
    if len(value) > MAX_VALUE_BYTES:
        raise bad_parameter(f"The parameter '{name}' is too long.")
    return value


def _required(body: dict[str, Any], name: str) -> bytes:
    value = field(body, name)
    assert value is not None
    return value


def _failed(operation: str) -> Exception:
    return bad_parameter(f"The {operation} operation failed for the given value.")


def _oaep(algorithm: str) -> padding.AsymmetricPadding:
    if algorithm == "RSA-OAEP":
        return padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)  # noqa: S303 - RSA-OAEP is SHA-1 by definition (RFC 7518)
    if algorithm == "RSA-OAEP-256":
        return padding.OAEP(
            mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None
        )
    if algorithm == "RSA1_5":
        return padding.PKCS1v15()
    raise bad_parameter(f"Algorithm {algorithm} is not supported for RSA keys.")


def _rsa_cipher(private: rsa.RSAPrivateKey, operation: str, algorithm: str, value: bytes) -> bytes:
    pad = _oaep(algorithm)
    try:
        if operation in ("encrypt", "wrapKey"):
            return private.public_key().encrypt(value, pad)
        return private.decrypt(value, pad)
    except ValueError:
        raise _failed(operation) from None


def _key_wrap(secret: bytes, operation: str, algorithm: str, value: bytes) -> dict[str, Any]:
    padded = algorithm == "CKM_AES_KEY_WRAP_PAD"
    try:
        if operation == "wrapKey":
            out = (aes_key_wrap_with_padding if padded else aes_key_wrap)(secret, value)
        else:
            out = (aes_key_unwrap_with_padding if padded else aes_key_unwrap)(secret, value)
    except (ValueError, InvalidUnwrap):
        raise _failed(operation) from None
    return {"value": b64url_encode(out)}


def _gcm(secret: bytes, operation: str, body: dict[str, Any], value: bytes) -> dict[str, Any]:
    aad = field(body, "aad", required=False)
    cipher = AESGCM(secret)
    result: dict[str, Any] = {}
    if operation == "encrypt":
        if body.get("iv") is not None:
            raise bad_parameter("The service generates the iv for AES-GCM.")
        iv = os.urandom(12)
        sealed = cipher.encrypt(iv, value, aad)
        result.update(value=sealed[:-16], iv=iv, tag=sealed[-16:])
    else:
        nonce, tag = field(body, "iv"), field(body, "tag")
        if nonce is None or tag is None or len(nonce) != 12 or len(tag) != 16:
            raise bad_parameter("AES-GCM needs a 12-byte iv and a 16-byte tag.")
        try:
            result.update(value=cipher.decrypt(nonce, value + tag, aad), iv=nonce, tag=tag)
        except InvalidTag:
            raise _failed(operation) from None
    if aad is not None:
        result["aad"] = aad
    return {name: b64url_encode(data) for name, data in result.items()}


def _cbc(
    secret: bytes, operation: str, body: dict[str, Any], value: bytes, *, pkcs7: bool
) -> dict[str, Any]:
    iv = field(body, "iv", required=operation == "decrypt")
    if iv is None:
        iv = os.urandom(BLOCK)
    if len(iv) != BLOCK:
        raise bad_parameter("AES-CBC needs a 16-byte iv.")
    cipher = Cipher(algorithms.AES(secret), modes.CBC(iv))
    if operation == "encrypt":
        if pkcs7:
            padder = block_padding.PKCS7(128).padder()
            value = padder.update(value) + padder.finalize()
        else:
            # Plain CBC on the service zero-fills the last block, as Managed HSM does.
            value += b"\0" * (-len(value) % BLOCK)
        encryptor = cipher.encryptor()
        out = encryptor.update(value) + encryptor.finalize()
    else:
        if not value or len(value) % BLOCK:
            raise _failed(operation)
        decryptor = cipher.decryptor()
        out = decryptor.update(value) + decryptor.finalize()
        if pkcs7:
            unpadder = block_padding.PKCS7(128).unpadder()
            try:
                out = unpadder.update(out) + unpadder.finalize()
            except ValueError:
                raise _failed(operation) from None
    return {"value": b64url_encode(out), "iv": b64url_encode(iv)}


def _symmetric(
    secret: bytes, operation: str, algorithm: str, body: dict[str, Any], value: bytes
) -> dict[str, Any]:
    wrap_family = operation in ("wrapKey", "unwrapKey")
    match = _AES.fullmatch(algorithm)
    if algorithm in ("CKM_AES_KEY_WRAP", "CKM_AES_KEY_WRAP_PAD"):
        mode = "KW"
    elif match is not None:
        mode = match.group(2)
        if int(match.group(1)) != len(secret) * 8:
            raise bad_parameter(f"Algorithm {algorithm} does not match the key size.")
    else:
        raise bad_parameter(f"Algorithm {algorithm} is not supported for symmetric keys.")
    if (mode == "KW") != wrap_family:
        raise bad_parameter(
            f"Algorithm {algorithm} is for "
            + ("wrapKey and unwrapKey" if mode == "KW" else "encrypt and decrypt")
            + " only."
        )
    if mode == "KW":
        return _key_wrap(secret, operation, algorithm, value)
    if mode == "GCM":
        return _gcm(secret, operation, body, value)
    return _cbc(secret, operation, body, value, pkcs7=mode == "CBCPAD")


def _signature(key: KeyVersion, algorithm: str) -> tuple[hashes.HashAlgorithm, str]:
    if algorithm not in SIGNATURES:
        raise bad_parameter(f"Algorithm {algorithm} is not a supported signature algorithm.")
    digest, scheme = SIGNATURES[algorithm]
    family = key.material.family
    if scheme in ("pkcs1", "pss") and family != "RSA":
        raise bad_parameter(f"Algorithm {algorithm} needs an RSA key.")
    if scheme in CURVES and key.material.crv != scheme:
        raise bad_parameter(f"Algorithm {algorithm} needs an EC key on curve {scheme}.")
    return digest, scheme


def _rsa_padding(scheme: str, digest: hashes.HashAlgorithm) -> padding.AsymmetricPadding:
    if scheme == "pss":
        # The salt is as long as the digest (RFC 7518, section 3.5), as the SDK verifies.
        return padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
    return padding.PKCS1v15()


def _checked_digest(
    body: dict[str, Any], name: str, digest: hashes.HashAlgorithm, alg: str
) -> bytes:
    value = _required(body, name)
    # The service signs a digest, not a message: its length must match the algorithm.
    if len(value) != digest.digest_size:
        raise bad_parameter(
            f"Algorithm {alg} signs a {digest.digest_size}-byte {digest.name.upper()} digest; "
            f"the digest given has {len(value)} bytes."
        )
    return value


def _sign(key: KeyVersion, algorithm: str, body: dict[str, Any]) -> dict[str, Any]:
    digest, scheme = _signature(key, algorithm)
    value = _checked_digest(body, "value", digest, algorithm)
    private = key.material.private
    if isinstance(private, rsa.RSAPrivateKey):
        signature = private.sign(value, _rsa_padding(scheme, digest), utils.Prehashed(digest))
    else:
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        r, s = utils.decode_dss_signature(private.sign(value, ec.ECDSA(utils.Prehashed(digest))))
        length = CURVES[scheme][1]
        signature = r.to_bytes(length, "big") + s.to_bytes(length, "big")
    return {"value": b64url_encode(signature)}


def _verify(key: KeyVersion, algorithm: str, body: dict[str, Any]) -> dict[str, Any]:
    digest, scheme = _signature(key, algorithm)
    value = _checked_digest(body, "digest", digest, algorithm)
    signature = _required(body, "value")
    private = key.material.private
    try:
        if isinstance(private, rsa.RSAPrivateKey):
            private.public_key().verify(
                signature, value, _rsa_padding(scheme, digest), utils.Prehashed(digest)
            )
        else:
            assert isinstance(private, ec.EllipticCurvePrivateKey)
            length = CURVES[scheme][1]
            if len(signature) != 2 * length:
                return {"value": False}
            der = utils.encode_dss_signature(
                int.from_bytes(signature[:length], "big"), int.from_bytes(signature[length:], "big")
            )
            private.public_key().verify(der, value, ec.ECDSA(utils.Prehashed(digest)))
    except InvalidSignature:
        return {"value": False}
    return {"value": True}


def key_operation(
    key: KeyVersion, operation: str, body: dict[str, Any], base: str
) -> dict[str, Any]:
    """Run one cryptographic operation with ``key`` on a request body."""
    algorithm = body.get("alg")
    if not isinstance(algorithm, str):
        raise bad_parameter("The parameter 'alg' is required.")
    if operation not in key.key_ops:
        raise bad_parameter(f"Operation {operation} is not permitted for this key.")
    if operation == "sign":
        return {"kid": key.kid(base), **_sign(key, algorithm, body)}
    if operation == "verify":
        return _verify(key, algorithm, body)
    value = _required(body, "value")
    private = key.material.private
    if isinstance(private, ec.EllipticCurvePrivateKey):
        raise bad_parameter(f"Algorithm {algorithm} is not supported for EC keys.")
    result: dict[str, Any] = {"kid": key.kid(base)}
    if isinstance(private, rsa.RSAPrivateKey):
        result["value"] = b64url_encode(_rsa_cipher(private, operation, algorithm, value))
        return result
    assert key.material.secret is not None
    result.update(_symmetric(key.material.secret, operation, algorithm, body, value))
    return result
