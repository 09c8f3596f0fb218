"""Which REST operation a request names, and the access-policy permission it needs."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PERMISSIONS", "Route", "route"]

CRYPTO_PATHS = {
    "wrapkey": "wrapKey",
    "unwrapkey": "unwrapKey",
    "encrypt": "encrypt",
    "decrypt": "decrypt",
    "sign": "sign",
    "verify": "verify",
    "release": "release",
}
# Key permission names as Key Vault access policies spell them; None: any authenticated caller.
PERMISSIONS: dict[str, str | None] = {
    "createKey": "create",
    "importKey": "import",
    "getKey": "get",
    "getKeys": "list",
    "getKeyVersions": "list",
    "rotateKey": "rotate",
    "updateKey": "update",
    "deleteKey": "delete",
    "getDeletedKey": "get",
    "getDeletedKeys": "list",
    "purgeDeletedKey": "purge",
    "recoverDeletedKey": "recover",
    "backupKey": "backup",
    "restoreKey": "restore",
    "getKeyRotationPolicy": "getrotationpolicy",
    "updateKeyRotationPolicy": "setrotationpolicy",
    "getKeyAttestation": "get",
    "wrapKey": "wrapKey",
    "unwrapKey": "unwrapKey",
    "encrypt": "encrypt",
    "decrypt": "decrypt",
    "sign": "sign",
    "verify": "verify",
    "release": "release",
    # Managed HSM grants random bytes to any caller of the data plane.
    "getRandomBytes": None,
}
KEY_ACTIONS = {
    ("POST", "create"): "createKey",
    ("POST", "rotate"): "rotateKey",
    ("POST", "backup"): "backupKey",
    ("GET", "versions"): "getKeyVersions",
    ("GET", "rotationpolicy"): "getKeyRotationPolicy",
    ("PUT", "rotationpolicy"): "updateKeyRotationPolicy",
}


@dataclass(frozen=True)
class Route:
    operation: str
    name: str = ""
    version: str = ""


def route(method: str, path: str) -> Route | None:
    """The REST operation a request names, or None for an unknown path or method."""
    parts = path.split("/")[1:]
    if not parts:
        return None
    head, rest = parts[0], parts[1:]
    if head == "keys":
        return _route_keys(method, rest)
    if head == "deletedkeys":
        return _route_deleted(method, rest)
    if head == "rng" and rest in ([], [""]):
        return Route("getRandomBytes") if method == "POST" else None
    if len(parts) == 4 and parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
        return Route("openidConfiguration", head) if method == "GET" else None
    if len(parts) == 4 and parts[1:] == ["discovery", "v2.0", "keys"]:
        return Route("signingKeys", head) if method == "GET" else None
    if len(parts) == 4 and parts[1:] == ["oauth2", "v2.0", "token"]:
        return Route("token", head) if method == "POST" else None
    return None


def _route_keys(method: str, rest: list[str]) -> Route | None:
    if rest in ([], [""]):
        return Route("getKeys") if method == "GET" else None
    if rest == ["restore"] and method == "POST":
        return Route("restoreKey")
    name, tail = rest[0], rest[1:]
    if len(tail) == 1 and (method, tail[0].lower()) in KEY_ACTIONS:
        return Route(KEY_ACTIONS[method, tail[0].lower()], name)
    if tail in ([], [""]):
        if method == "PUT":
            return Route("importKey", name)
        if method == "DELETE":
            return Route("deleteKey", name)
    if method in ("GET", "PATCH") and len(tail) <= 1:
        version = tail[0] if tail else ""
        return Route("getKey" if method == "GET" else "updateKey", name, version)
    if len(tail) == 2:
        action = tail[1].lower()
        if method == "POST" and action in CRYPTO_PATHS:
            return Route(CRYPTO_PATHS[action], name, tail[0])
        if method == "GET" and action == "attestation":
            return Route("getKeyAttestation", name, tail[0])
    return None


def _route_deleted(method: str, rest: list[str]) -> Route | None:
    if rest in ([], [""]):
        return Route("getDeletedKeys") if method == "GET" else None
    name, tail = rest[0], rest[1:]
    if tail in ([], [""]):
        if method == "GET":
            return Route("getDeletedKey", name)
        if method == "DELETE":
            return Route("purgeDeletedKey", name)
    if method == "POST" and tail == ["recover"]:
        return Route("recoverDeletedKey", name)
    return None
