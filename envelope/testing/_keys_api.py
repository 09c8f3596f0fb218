"""The Key Vault keys operations: request body in, Key Vault JSON out.

Each handler gets the route, the parsed JSON object of the body and the base URL the client
used (kids are built from it). Bodies are hostile until checked: a wrong type, a bad
base64url string or a value out of range is a ``BadParameter`` reply, never an exception
that escapes.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from ._crypto import key_operation
from ._errors import VaultError, bad_parameter
from ._http import Response, json_response
from ._identity import b64url_decode, b64url_encode
from ._jwk import KeyMaterial, RecordError, check_key_ops, generate_material, parse_jwk
from ._records import MAX_BACKUP_BYTES, open_backup, release_policy_from, seal_backup, tags_from
from ._routes import Route
from ._store import KeyStore, KeyVersion, new_version, new_version_like

__all__ = ["KeysApi", "regenerate"]

MAX_RANDOM_BYTES = 128


def _optional(obj: dict[str, Any], key: str, kind: type, what: str) -> Any:
    value = obj.get(key)
    # bool is an int in Python; a JSON true is not a timestamp or a key size.
    if value is not None and (
        not isinstance(value, kind) or (kind is int and isinstance(value, bool))
    ):
        raise bad_parameter(f"The parameter '{key}' must be {what}.")
    if isinstance(value, int) and not 0 <= value < 2**63:
        raise bad_parameter(f"The parameter '{key}' is out of range.")
    return value


def _attributes(body: dict[str, Any]) -> dict[str, Any]:
    """The attributes a request sets; absent ones are left out (an update keeps them)."""
    attrs = body.get("attributes") or {}
    if not isinstance(attrs, dict):
        raise bad_parameter("The parameter 'attributes' must be an object.")
    found = {
        "enabled": _optional(attrs, "enabled", bool, "a boolean"),
        "nbf": _optional(attrs, "nbf", int, "an integer timestamp"),
        "exp": _optional(attrs, "exp", int, "an integer timestamp"),
        "exportable": _optional(attrs, "exportable", bool, "a boolean"),
    }
    return {name: value for name, value in found.items() if value is not None}


def _key_ops(body: dict[str, Any]) -> tuple[str, ...] | None:
    ops = body.get("key_ops")
    return None if ops is None else check_key_ops(ops)


def _checked(parse: Callable[[Any], Any], value: Any, what: str) -> Any:
    try:
        return parse(value)
    except RecordError as exc:
        raise bad_parameter(f"The parameter '{what}' is not valid: {exc}.") from None


def _extras(body: dict[str, Any]) -> dict[str, Any]:
    """Tags and release policy of a create, import or update request (absent: left out)."""
    extras: dict[str, Any] = {}
    if body.get("tags") is not None:
        extras["tags"] = _checked(tags_from, body["tags"], "tags")
    if body.get("release_policy") is not None:
        extras["release_policy"] = _checked(
            release_policy_from, body["release_policy"], "release_policy"
        )
    return extras


def regenerate(latest: KeyVersion) -> KeyMaterial:
    """New material of the same kind as ``latest``: rotation, by hand or by policy."""
    material = latest.material
    exponent = None
    curve = material.crv
    size = None if curve is not None else material.size
    if isinstance(material.private, rsa.RSAPrivateKey):
        public = material.private.public_key().public_numbers()
        exponent = public.e if public.e in (3, 65537) else 65537
    return generate_material(material.kty, size, curve, exponent)


class KeysApi:
    """The handlers of one vault's keys operations."""

    def __init__(self, store: KeyStore, backup_key: Callable[[], bytes]) -> None:
        self.store = store
        self._backup_key = backup_key

    def now(self) -> int:
        return self.store.clock.seconds()

    def _new_version(
        self, name: str, material: KeyMaterial, body: dict[str, Any], ops: tuple[str, ...] | None
    ) -> KeyVersion:
        attributes = _attributes(body)
        extras = _extras(body)
        if attributes.get("exportable") and "release_policy" not in extras:
            raise bad_parameter("An exportable key needs a release policy.")
        return new_version(name, material, ops, self.now(), **attributes, **extras)

    def create(self, matched: Route, body: dict[str, Any], base: str) -> Response:
        kty = body.get("kty")
        if not isinstance(kty, str):
            raise bad_parameter("The parameter 'kty' is required.")
        size = _optional(body, "key_size", int, "an integer")
        exponent = _optional(body, "public_exponent", int, "an integer")
        curve = _optional(body, "crv", str, "a curve name")
        ops = _key_ops(body)
        _attributes(body)  # a bad request fails before the slow key generation
        material = generate_material(kty, size, curve, exponent)
        version = self.store.add_version(self._new_version(matched.name, material, body, ops))
        return json_response(200, version.bundle(base))

    def import_key(self, matched: Route, body: dict[str, Any], base: str) -> Response:
        jwk = body.get("key")
        hsm = _optional(body, "Hsm", bool, "a boolean") or False
        if not isinstance(jwk, dict):
            raise bad_parameter("The parameter 'key' must be a JSON Web Key object.")
        ops = _key_ops(jwk)
        material = _checked(lambda raw: parse_jwk(raw, hsm=hsm), jwk, "key")
        version = self.store.add_version(self._new_version(matched.name, material, body, ops))
        return json_response(200, version.bundle(base))

    def get(self, matched: Route, body: dict[str, Any], base: str) -> Response:
        key = self.store.find(matched.name, matched.version)
        key.check_usable("get", self.now())
        return json_response(200, key.bundle(base))

    def versions(self, matched: Route, body: dict[str, Any], base: str) -> Response:
        items = [v.item(base) for v in self.store.versions(matched.name)]
        return json_response(200, {"value": items})

    def list_keys(self, matched: Route, body: dict[str, Any], base: str) -> Response:
        items = []
        for latest in self.store.latest_of_each():
            item = latest.item(base)
            item["kid"] = f"{base}/keys/{latest.name}"
            items.append(item)
        return json_response(200, {"value": items})

    def rotate(self, matched: Route, body: dict[str, Any], base: str) -> Response:
        latest = self.store.latest(matched.name)
        version = dataclasses.replace(
            new_version_like(latest, regenerate(latest), self.now()),
            exportable=latest.exportable,
            release_policy=latest.release_policy,
        )
        return json_response(200, self.store.add_version(version).bundle(base))

    def update(self, matched: Route, body: dict[str, Any], base: str) -> Response:
        changes = {**_attributes(body), **_extras(body)}
        ops = _key_ops(body)
        if ops is not None:
            changes["key_ops"] = ops
        key = self.store.update(matched.name, matched.version, **changes)
        return json_response(200, key.bundle(base))

    def _deleted_bundle(self, name: str, base: str) -> dict[str, Any]:
        deleted = self.store.deleted(name)
        latest = deleted.versions[-1]
        bundle = latest.bundle(base)
        bundle.update(
            recoveryId=f"{base}/deletedkeys/{latest.name}",
            deletedDate=deleted.deleted_date,
            scheduledPurgeDate=deleted.scheduled_purge_date,
        )
        return bundle

    def delete(self, matched: Route, body: dict[str, Any], base: str) -> Response:
        self.store.delete(matched.name)
        return json_response(200, self._deleted_bundle(matched.name, base))

    def get_deleted(self, matched: Route, body: dict[str, Any], base: str) -> Response:
        return json_response(200, self._deleted_bundle(matched.name, base))

    def list_deleted(self, matched: Route, body: dict[str, Any], base: str) -> Response:
        items = []
        for deleted in self.store.all_deleted():
            latest = deleted.versions[-1]
            items.append(
                {
                    "kid": f"{base}/keys/{latest.name}",
                    "attributes": latest.attributes(),
                    "tags": dict(latest.tags),
                    "recoveryId": f"{base}/deletedkeys/{latest.name}",
                    "deletedDate": deleted.deleted_date,
                    "scheduledPurgeDate": deleted.scheduled_purge_date,
                }
            )
        return json_response(200, {"value": items})

    def purge(self, matched: Route, body: dict[str, Any], base: str) -> Response:
        self.store.purge(matched.name)
        return Response(204)

    def recover(self, matched: Route, body: dict[str, Any], base: str) -> Response:
        return json_response(200, self.store.recover(matched.name).bundle(base))

    def crypto(self, matched: Route, body: dict[str, Any], base: str) -> Response:
        key = self.store.find(matched.name, matched.version)
        key.check_usable(matched.operation, self.now())
        return json_response(200, key_operation(key, matched.operation, body, base))

    def backup(self, matched: Route, body: dict[str, Any], base: str) -> Response:
        stored = self.store.stored(matched.name)
        try:
            blob = seal_backup(stored, self._backup_key())
        except RecordError as exc:
            raise bad_parameter(f"The key cannot be backed up: {exc}.") from None
        return json_response(200, {"value": b64url_encode(blob)})

    def restore(self, matched: Route, body: dict[str, Any], base: str) -> Response:
        raw = body.get("value")
        if not isinstance(raw, str) or len(raw) > MAX_BACKUP_BYTES * 4 // 3 + 4:
            raise bad_parameter("The parameter 'value' must be a key backup blob.")
        try:
            stored = open_backup(b64url_decode(raw), self._backup_key())
        except ValueError as exc:
            # RecordError, or a blob that is not base64url at all.
            raise bad_parameter(f"The backup blob cannot be restored: {exc}.") from None
        return json_response(200, self.store.restore(stored).bundle(base))

    def random_bytes(self, matched: Route, body: dict[str, Any], base: str) -> Response:
        count = _optional(body, "count", int, "an integer")
        if count is None or not 1 <= count <= MAX_RANDOM_BYTES:
            raise bad_parameter(f"The parameter 'count' must be from 1 to {MAX_RANDOM_BYTES}.")
        return json_response(200, {"value": b64url_encode(os.urandom(count))})

    def _policy_id(self, name: str, base: str) -> str:
        return f"{base}/keys/{self.store.latest(name).name}/rotationpolicy"

    def get_policy(self, matched: Route, body: dict[str, Any], base: str) -> Response:
        policy = self.store.policy(matched.name)
        return json_response(200, policy.to_json(self._policy_id(matched.name, base)))

    def set_policy(self, matched: Route, body: dict[str, Any], base: str) -> Response:
        policy = self.store.set_policy(matched.name, body)
        return json_response(200, policy.to_json(self._policy_id(matched.name, base)))

    def unsupported(self, matched: Route, body: dict[str, Any], base: str) -> Response:
        key = self.store.find(matched.name, matched.version)
        if matched.operation == "release":
            key.check_usable("release", self.now())
            message = (
                "Key release needs an attestation from Azure Attestation, which the local "
                "Key Vault cannot verify; release is not supported."
            )
        else:
            message = (
                "Key attestation carries the HSM vendor's certificates; the local Key Vault "
                "has no HSM and does not provide it."
            )
        raise VaultError(400, "BadParameter", message, "NotSupported")
