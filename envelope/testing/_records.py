"""Keys as records: the JSON that backups and the vault file carry, and the sealed backup blob.

A record holds private key material, so it is read as hostile input: a fixed schema, every
field type-checked and bounded, names and versions matched against their patterns, and key
material through the same parser as an import. Anything else is a :class:`RecordError`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ._errors import VaultError
from ._identity import b64url_decode
from ._jwk import ALL_KEY_OPS, RecordError, parse_jwk
from ._rotation import RotationPolicy
from ._store import (
    NAME_PATTERN,
    VERSION_PATTERN,
    DeletedKey,
    KeyVersion,
    ReleasePolicy,
    StoredKey,
)

__all__ = [
    "MAX_BACKUP_BYTES",
    "deleted_from_record",
    "deleted_record",
    "key_from_record",
    "key_record",
    "open_backup",
    "seal_backup",
]

BACKUP_MAGIC = b"LKVB\x01"
BACKUP_INFO = b"envelope local Key Vault backup v1"
NONCE_BYTES = 12
# A restore request body is at most 1 MiB; the blob travels base64url-encoded inside it.
MAX_BACKUP_BYTES = 700 * 1024
MAX_VERSIONS = 10_000
MAX_TAGS = 15
MAX_TAG_CHARS = 512
MAX_TIMESTAMP = 253402300799  # 9999-12-31T23:59:59Z
MAX_POLICY_CHARS = 16 * 1024


def _need(condition: bool, message: str) -> None:
    if not condition:
        raise RecordError(message)


def _timestamp(value: Any, what: str, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    _need(
        isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TIMESTAMP,
        f"'{what}' must be a unix timestamp",
    )
    return int(value)


def tags_from(value: Any) -> dict[str, str]:
    _need(
        isinstance(value, dict)
        and len(value) <= MAX_TAGS
        and all(
            isinstance(k, str) and isinstance(v, str) and len(k) + len(v) <= MAX_TAG_CHARS
            for k, v in value.items()
        ),
        f"'tags' must map at most {MAX_TAGS} short strings to strings",
    )
    return dict(value)


def release_policy_from(value: Any) -> ReleasePolicy:
    _need(isinstance(value, dict), "'release_policy' must be an object")
    content_type = value.get("contentType", "application/json; charset=utf-8")
    data = value.get("data")
    immutable = value.get("immutable", False)
    _need(
        isinstance(content_type, str) and len(content_type) <= 256,
        "'release_policy.contentType' must be a short string",
    )
    _need(
        isinstance(data, str) and 0 < len(data) <= MAX_POLICY_CHARS,
        "'release_policy.data' must be base64url text",
    )
    _need(isinstance(immutable, bool), "'release_policy.immutable' must be a boolean")
    assert isinstance(data, str)
    try:
        policy = json.loads(b64url_decode(data))
    except (ValueError, RecursionError):
        raise RecordError("'release_policy.data' is not base64url of a JSON policy") from None
    _need(isinstance(policy, dict), "'release_policy.data' must hold a JSON object")
    return ReleasePolicy(content_type, data, immutable)


def version_record(version: KeyVersion) -> dict[str, Any]:
    return {
        "version": version.version,
        "key": {**version.material.private_jwk(), "key_ops": list(version.key_ops)},
        "attributes": {
            "enabled": version.enabled,
            "nbf": version.nbf,
            "exp": version.exp,
            "created": version.created,
            "updated": version.updated,
            "exportable": version.exportable,
        },
        "tags": dict(version.tags),
        "release_policy": None
        if version.release_policy is None
        else version.release_policy.to_json(),
    }


def version_from_record(name: str, record: Any) -> KeyVersion:
    _need(isinstance(record, dict), "a version must be an object")
    version = record.get("version")
    _need(
        isinstance(version, str) and VERSION_PATTERN.fullmatch(version) is not None,
        "a version id must be 32 lower-case hex digits",
    )
    jwk = record.get("key")
    material = parse_jwk(jwk)
    assert isinstance(jwk, Mapping)
    ops = jwk.get("key_ops")
    _need(
        isinstance(ops, list) and all(isinstance(op, str) and op in ALL_KEY_OPS for op in ops),
        "'key_ops' must list known key operations",
    )
    attributes = record.get("attributes")
    _need(isinstance(attributes, dict), "'attributes' must be an object")
    enabled, exportable = attributes.get("enabled"), attributes.get("exportable", False)
    _need(isinstance(enabled, bool), "'enabled' must be a boolean")
    _need(isinstance(exportable, bool), "'exportable' must be a boolean")
    policy = record.get("release_policy")
    created = _timestamp(attributes.get("created"), "created")
    updated = _timestamp(attributes.get("updated"), "updated")
    assert created is not None
    assert updated is not None
    assert isinstance(version, str)
    assert isinstance(ops, list)
    return KeyVersion(
        name=name,
        version=version,
        material=material,
        key_ops=tuple(ops),
        created=created,
        updated=updated,
        enabled=bool(enabled),
        nbf=_timestamp(attributes.get("nbf"), "nbf", optional=True),
        exp=_timestamp(attributes.get("exp"), "exp", optional=True),
        tags=tags_from(record.get("tags", {})),
        exportable=bool(exportable),
        release_policy=None if policy is None else release_policy_from(policy),
    )


def policy_record(policy: RotationPolicy | None) -> dict[str, Any] | None:
    return None if policy is None else policy.to_json("")


def policy_from_record(record: Any) -> RotationPolicy | None:
    if record is None:
        return None
    _need(isinstance(record, dict), "'rotation_policy' must be an object")
    attributes = record.get("attributes")
    _need(isinstance(attributes, dict), "'rotation_policy.attributes' must be an object")
    created = _timestamp(attributes.get("created"), "rotation_policy.created")
    updated = _timestamp(attributes.get("updated"), "rotation_policy.updated")
    assert created is not None
    try:
        policy = RotationPolicy.parse(record, created, None)
    except VaultError as exc:
        raise RecordError(f"rotation policy: {exc.message}") from None
    return RotationPolicy(policy.actions, policy.expiry, created, updated)


def key_record(stored: StoredKey) -> dict[str, Any]:
    return {
        "name": stored.versions[0].name,
        "versions": [version_record(version) for version in stored.versions],
        "rotation_policy": policy_record(stored.policy),
    }


def key_from_record(record: Any) -> StoredKey:
    _need(isinstance(record, dict), "a key must be an object")
    name = record.get("name")
    _need(
        isinstance(name, str) and NAME_PATTERN.fullmatch(name) is not None,
        "a key name must be 1-127 characters of 0-9, a-z, A-Z and '-'",
    )
    assert isinstance(name, str)
    raw_versions = record.get("versions")
    _need(
        isinstance(raw_versions, list) and 0 < len(raw_versions) <= MAX_VERSIONS,
        f"a key must have 1 to {MAX_VERSIONS} versions",
    )
    assert isinstance(raw_versions, list)
    try:
        versions = tuple(version_from_record(name, raw) for raw in raw_versions)
    except RecordError as exc:
        raise RecordError(f"key {name}: {exc}") from None
    _need(
        len({v.version for v in versions}) == len(versions),
        f"key {name}: two versions share an id",
    )
    return StoredKey(versions, policy_from_record(record.get("rotation_policy")))


def deleted_record(deleted: DeletedKey) -> dict[str, Any]:
    return {
        "key": key_record(StoredKey(deleted.versions, deleted.policy)),
        "deletedDate": deleted.deleted_date,
        "scheduledPurgeDate": deleted.scheduled_purge_date,
    }


def deleted_from_record(record: Any) -> DeletedKey:
    _need(isinstance(record, dict), "a deleted key must be an object")
    stored = key_from_record(record.get("key"))
    deleted_date = _timestamp(record.get("deletedDate"), "deletedDate")
    purge_date = _timestamp(record.get("scheduledPurgeDate"), "scheduledPurgeDate")
    assert deleted_date is not None
    assert purge_date is not None
    return DeletedKey(stored.versions, stored.policy, deleted_date, purge_date)


# backups


def _backup_cipher(backup_key: bytes) -> AESGCM:
    derived = HKDF(hashes.SHA256(), 32, salt=None, info=BACKUP_INFO).derive(backup_key)
    return AESGCM(derived)


def seal_backup(stored: StoredKey, backup_key: bytes) -> bytes:
    """An opaque blob: the key record under AES-256-GCM with a key derived from the
    vault's backup key, so only a vault sharing that key can open it."""
    payload = json.dumps(key_record(stored), separators=(",", ":")).encode()
    nonce = os.urandom(NONCE_BYTES)
    blob = BACKUP_MAGIC + nonce + _backup_cipher(backup_key).encrypt(nonce, payload, BACKUP_MAGIC)
    if len(blob) > MAX_BACKUP_BYTES:
        raise RecordError(
            f"the backup would be {len(blob)} bytes, more than a restore accepts "
            f"({MAX_BACKUP_BYTES}); the key has too many versions"
        )
    return blob


def open_backup(blob: bytes, backup_key: bytes) -> StoredKey:
    """The key of a blob from :func:`seal_backup`; a blob that was altered, truncated or
    sealed under another backup key is refused without saying which."""
    header = len(BACKUP_MAGIC) + NONCE_BYTES
    if len(blob) > MAX_BACKUP_BYTES or len(blob) < header + 16 or not blob.startswith(BACKUP_MAGIC):
        raise RecordError("the backup blob is not a key backup of this vault's subscription")
    nonce = blob[len(BACKUP_MAGIC) : header]
    try:
        payload = _backup_cipher(backup_key).decrypt(nonce, blob[header:], BACKUP_MAGIC)
    except InvalidTag:
        raise RecordError(
            "the backup blob is not a key backup of this vault's subscription"
        ) from None
    try:
        record = json.loads(payload)
    except (ValueError, RecursionError):
        raise RecordError("the backup blob holds no key record") from None
    return key_from_record(record)
