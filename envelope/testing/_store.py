"""Keys, their versions and soft-deleted keys, with the cryptography the vault performs."""

from __future__ import annotations

import os
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap,
    aes_key_unwrap_with_padding,
    aes_key_wrap,
    aes_key_wrap_with_padding,
)

from ._identity import b64url_decode, b64url_encode

__all__ = ["KeyStore", "KeyVersion", "VaultError"]

NAME_PATTERN = re.compile(r"[0-9A-Za-z-]{1,127}")
RSA_SIZES = frozenset({2048, 3072, 4096})
AES_SIZES = frozenset({128, 192, 256})
RSA_TYPES = frozenset({"RSA", "RSA-HSM"})
OCT_TYPES = frozenset({"oct-HSM"})
RSA_OPS = ("encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey")
OCT_OPS = ("encrypt", "decrypt", "wrapKey", "unwrapKey")
ALL_KEY_OPS = frozenset(RSA_OPS) | {"import", "export"}
RECOVERABLE_DAYS = 90
RECOVERY_LEVEL = "Recoverable+Purgeable"
# Outside [nbf, exp) the service refuses the operations that protect new data and still allows
# those that recover old data (Key Vault documentation, "date-time controlled operations").
TIME_CONTROLLED = frozenset({"encrypt", "wrapKey"})
MAX_VALUE_BYTES = 64 * 1024


class VaultError(Exception):
    """An error response: HTTP status and the Key Vault error code and message."""

    def __init__(self, status: int, code: str, message: str, inner: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.inner = inner

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.inner is not None:
            error["innererror"] = {"code": self.inner}
        return {"error": error}


def bad_parameter(message: str) -> VaultError:
    return VaultError(400, "BadParameter", message)


def key_not_found(name: str, version: str = "") -> VaultError:
    which = f"{name}/{version}" if version else name
    return VaultError(
        404,
        "KeyNotFound",
        f"A key with (name/id) {which} was not found in this key vault. If you recently "
        "deleted this key you may be able to recover it using the correct recovery command.",
    )


def deleted_key_not_found(name: str) -> VaultError:
    return VaultError(404, "KeyNotFound", f"Deleted Key not found: {name}")


def check_name(name: str) -> None:
    if not NAME_PATTERN.fullmatch(name):
        raise bad_parameter("The key name must be 1-127 characters of 0-9, a-z, A-Z and '-'.")


def check_key_ops(ops: list[str]) -> None:
    unknown = set(ops) - ALL_KEY_OPS
    if unknown:
        raise bad_parameter(f"Unknown key operations: {', '.join(sorted(unknown))}.")


def _int_b64(value: int) -> str:
    return b64url_encode(value.to_bytes((value.bit_length() + 7) // 8 or 1, "big"))


@dataclass
class KeyVersion:
    """One version of a key: its material and attributes."""

    name: str
    version: str
    kty: str
    key_ops: tuple[str, ...]
    rsa_key: rsa.RSAPrivateKey | None
    secret: bytes | None
    enabled: bool = True
    nbf: int | None = None
    exp: int | None = None
    created: int = field(default_factory=lambda: int(time.time()))
    updated: int = field(default_factory=lambda: int(time.time()))
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def size(self) -> int:
        if self.rsa_key is not None:
            return self.rsa_key.key_size
        assert self.secret is not None
        return len(self.secret) * 8

    def kid(self, base: str) -> str:
        return f"{base}/keys/{self.name}/{self.version}"

    def attributes(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "enabled": self.enabled,
            "created": self.created,
            "updated": self.updated,
            "recoveryLevel": RECOVERY_LEVEL,
            "recoverableDays": RECOVERABLE_DAYS,
        }
        if self.nbf is not None:
            attrs["nbf"] = self.nbf
        if self.exp is not None:
            attrs["exp"] = self.exp
        return attrs

    def bundle(self, base: str) -> dict[str, Any]:
        jwk: dict[str, Any] = {
            "kid": self.kid(base),
            "kty": self.kty,
            "key_ops": list(self.key_ops),
        }
        if self.rsa_key is not None:
            numbers = self.rsa_key.public_key().public_numbers()
            jwk["n"] = _int_b64(numbers.n)
            jwk["e"] = _int_b64(numbers.e)
        # Symmetric material never leaves an HSM: oct-HSM bundles carry no "k".
        return {"key": jwk, "attributes": self.attributes(), "tags": dict(self.tags)}

    def item(self, base: str) -> dict[str, Any]:
        return {"kid": self.kid(base), "attributes": self.attributes(), "tags": dict(self.tags)}

    def check_usable(self, operation: str, permission_name: str) -> None:
        """Refuse an operation the key's state does not allow, as the service does."""
        if not self.enabled:
            raise VaultError(
                403,
                "Forbidden",
                f"Operation {permission_name} is not allowed on a disabled key.",
                "KeyDisabled",
            )
        if operation not in TIME_CONTROLLED:
            return
        now = time.time()
        if self.nbf is not None and now < self.nbf:
            raise VaultError(
                403,
                "Forbidden",
                f"Operation {permission_name} is not allowed on a key that is not yet valid.",
                "KeyNotYetValid",
            )
        if self.exp is not None and now >= self.exp:
            raise VaultError(
                403,
                "Forbidden",
                f"Operation {permission_name} is not allowed on an expired key.",
                "KeyExpired",
            )


@dataclass
class DeletedKey:
    versions: list[KeyVersion]
    deleted_date: int
    scheduled_purge_date: int


def generate_version(
    name: str,
    kty: str,
    size: int | None,
    key_ops: list[str] | None,
    public_exponent: int | None = None,
) -> KeyVersion:
    """New key material; slow for big RSA keys, so callers run it outside the store lock."""
    if key_ops is not None:
        check_key_ops(key_ops)
    version = secrets.token_hex(16)
    if kty in RSA_TYPES:
        bits = 2048 if size is None else size
        if bits not in RSA_SIZES:
            raise bad_parameter(f"RSA key size must be one of {sorted(RSA_SIZES)}.")
        exponent = 65537 if public_exponent is None else public_exponent
        if exponent not in (3, 65537):
            raise bad_parameter("The public exponent must be 65537.")
        private = rsa.generate_private_key(public_exponent=exponent, key_size=bits)
        ops = tuple(RSA_OPS if key_ops is None else key_ops)
        return KeyVersion(name, version, kty, ops, private, None)
    if kty in OCT_TYPES:
        bits = 256 if size is None else size
        if bits not in AES_SIZES:
            raise bad_parameter(f"oct-HSM key size must be one of {sorted(AES_SIZES)}.")
        ops = tuple(OCT_OPS if key_ops is None else key_ops)
        return KeyVersion(name, version, kty, ops, None, os.urandom(bits // 8))
    raise bad_parameter(f"Key type {kty!r} is not supported by the local Key Vault.")


class KeyStore:
    """All keys of one vault. Every method is atomic under one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, list[KeyVersion]] = {}
        self._deleted: dict[str, DeletedKey] = {}

    def add_version(self, version: KeyVersion) -> KeyVersion:
        with self._lock:
            if version.name in self._deleted:
                raise VaultError(
                    409,
                    "Conflict",
                    f"Key {version.name} is currently in a deleted but recoverable state, and "
                    "its name cannot be reused; in this state, the key can only be recovered "
                    "or purged.",
                )
            self._keys.setdefault(version.name, []).append(version)
        return version

    def latest(self, name: str) -> KeyVersion:
        with self._lock:
            versions = self._keys.get(name)
            if not versions:
                raise key_not_found(name)
            return versions[-1]

    def find(self, name: str, version: str) -> KeyVersion:
        """A version by id; an empty id is the latest, as the SDK sends ``/keys/n//op``."""
        if not version:
            return self.latest(name)
        with self._lock:
            for candidate in self._keys.get(name, ()):
                if candidate.version == version:
                    return candidate
        raise key_not_found(name, version)

    def versions(self, name: str) -> list[KeyVersion]:
        with self._lock:
            versions = self._keys.get(name)
            if not versions:
                raise key_not_found(name)
            return list(versions)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._keys)

    def update(
        self,
        name: str,
        version: str,
        *,
        enabled: bool | None = None,
        nbf: int | None = None,
        exp: int | None = None,
        key_ops: list[str] | None = None,
        tags: dict[str, str] | None = None,
    ) -> KeyVersion:
        target = self.find(name, version)
        with self._lock:
            if enabled is not None:
                target.enabled = enabled
            if nbf is not None:
                target.nbf = nbf
            if exp is not None:
                target.exp = exp
            if key_ops is not None:
                target.key_ops = tuple(key_ops)
            if tags is not None:
                target.tags = dict(tags)
            target.updated = int(time.time())
        return target

    def delete(self, name: str) -> DeletedKey:
        with self._lock:
            versions = self._keys.pop(name, None)
            if not versions:
                raise key_not_found(name)
            now = int(time.time())
            deleted = DeletedKey(versions, now, now + RECOVERABLE_DAYS * 86400)
            self._deleted[name] = deleted
            return deleted

    def deleted(self, name: str) -> DeletedKey:
        with self._lock:
            try:
                return self._deleted[name]
            except KeyError:
                raise deleted_key_not_found(name) from None

    def deleted_names(self) -> list[str]:
        with self._lock:
            return sorted(self._deleted)

    def purge(self, name: str) -> None:
        with self._lock:
            if self._deleted.pop(name, None) is None:
                raise deleted_key_not_found(name)

    def recover(self, name: str) -> KeyVersion:
        with self._lock:
            deleted = self._deleted.pop(name, None)
            if deleted is None:
                raise deleted_key_not_found(name)
            self._keys[name] = deleted.versions
            return deleted.versions[-1]


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


def _aes_algorithm_size(algorithm: str) -> int | None:
    match = re.fullmatch(r"A(128|192|256)(KW|GCM)", algorithm)
    return int(match.group(1)) if match else None


def _field(body: dict[str, Any], name: str, *, required: bool = True) -> bytes | None:
    raw = body.get(name)
    if raw is None:
        if required:
            raise bad_parameter(f"The parameter '{name}' is required.")
        return None
    if not isinstance(raw, str):
        raise bad_parameter(f"The parameter '{name}' must be a base64url string.")
    try:
        value = b64url_decode(raw)
    except ValueError:
        raise bad_parameter(f"The parameter '{name}' is not valid base64url.") from None
    if len(value) > MAX_VALUE_BYTES:
        raise bad_parameter(f"The parameter '{name}' is too long.")
    return value


def key_operation(
    key: KeyVersion, operation: str, body: dict[str, Any], base: str
) -> dict[str, Any]:
    """Run encrypt, decrypt, wrapKey or unwrapKey with ``key`` on a request body."""
    algorithm = body.get("alg")
    if not isinstance(algorithm, str):
        raise bad_parameter("The parameter 'alg' is required.")
    if operation not in key.key_ops:
        raise bad_parameter(f"Operation {operation} is not permitted for this key.")
    value = _field(body, "value")
    assert value is not None
    result: dict[str, Any] = {"kid": key.kid(base)}
    if key.rsa_key is not None:
        pad = _oaep(algorithm)
        try:
            if operation in ("encrypt", "wrapKey"):
                out = key.rsa_key.public_key().encrypt(value, pad)
            else:
                out = key.rsa_key.decrypt(value, pad)
        except ValueError:
            raise bad_parameter(f"The {operation} operation failed for the given value.") from None
        result["value"] = b64url_encode(out)
        return result
    secret = key.secret
    assert secret is not None
    size = _aes_algorithm_size(algorithm)
    wrap_family = operation in ("wrapKey", "unwrapKey")
    if algorithm in ("CKM_AES_KEY_WRAP", "CKM_AES_KEY_WRAP_PAD") or (
        size is not None and algorithm.endswith("KW")
    ):
        if not wrap_family:
            raise bad_parameter(f"Algorithm {algorithm} is for wrapKey and unwrapKey only.")
        if size is not None and size != len(secret) * 8:
            raise bad_parameter(f"Algorithm {algorithm} does not match the key size.")
        padded = algorithm == "CKM_AES_KEY_WRAP_PAD"
        try:
            if operation == "wrapKey":
                out = (aes_key_wrap_with_padding if padded else aes_key_wrap)(secret, value)
            else:
                out = (aes_key_unwrap_with_padding if padded else aes_key_unwrap)(secret, value)
        except (ValueError, InvalidUnwrap):
            raise bad_parameter(f"The {operation} operation failed for the given value.") from None
        result["value"] = b64url_encode(out)
        return result
    if size is not None and algorithm.endswith("GCM"):
        if wrap_family:
            raise bad_parameter(f"Algorithm {algorithm} is for encrypt and decrypt only.")
        if size != len(secret) * 8:
            raise bad_parameter(f"Algorithm {algorithm} does not match the key size.")
        aad = _field(body, "aad", required=False)
        cipher = AESGCM(secret)
        if operation == "encrypt":
            if body.get("iv") is not None:
                raise bad_parameter("The service generates the iv for AES-GCM.")
            iv = os.urandom(12)
            sealed = cipher.encrypt(iv, value, aad)
            result.update(
                value=b64url_encode(sealed[:-16]),
                iv=b64url_encode(iv),
                tag=b64url_encode(sealed[-16:]),
            )
        else:
            nonce = _field(body, "iv")
            tag = _field(body, "tag")
            if nonce is None or tag is None or len(nonce) != 12 or len(tag) != 16:
                raise bad_parameter("AES-GCM needs a 12-byte iv and a 16-byte tag.")
            try:
                result["value"] = b64url_encode(cipher.decrypt(nonce, value + tag, aad))
            except InvalidTag:
                raise bad_parameter("The decrypt operation failed for the given value.") from None
            result["iv"] = b64url_encode(nonce)
            result["tag"] = b64url_encode(tag)
        if aad is not None:
            result["aad"] = b64url_encode(aad)
        return result
    raise bad_parameter(f"Algorithm {algorithm} is not supported for {key.kty} keys.")
