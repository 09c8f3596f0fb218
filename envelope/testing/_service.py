"""The Key Vault keys REST API and the identity endpoints, as request -> response functions.

No sockets here: ``_server`` parses HTTP and calls :meth:`Service.handle`; every exception a
handler raises becomes an error response, never a dropped connection.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._faults import FAULT_ERRORS, FaultSet
from ._identity import VAULT_AUDIENCE, Identity, IdentityProvider, TokenError
from ._store import (
    KeyStore,
    VaultError,
    bad_parameter,
    check_key_ops,
    check_name,
    generate_version,
    key_operation,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["Request", "Response", "Service"]

#: The client-assertion type of workload identity federation (RFC 7523).
_JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

logger = logging.getLogger("envelope.testing")

MAX_PAGE = 25
MAX_TAGS = 15
HOST_PATTERN = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
CRYPTO_PATHS = {
    "wrapkey": "wrapKey",
    "unwrapkey": "unwrapKey",
    "encrypt": "encrypt",
    "decrypt": "decrypt",
}
PERMISSIONS = {
    "createKey": "create",
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
    "wrapKey": "wrapKey",
    "unwrapKey": "unwrapKey",
    "encrypt": "encrypt",
    "decrypt": "decrypt",
}


@dataclass(frozen=True)
class Request:
    """A parsed request; header names are lower case."""

    method: str
    target: str
    headers: Mapping[str, str]
    body: bytes


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    all_headers = {"Content-Type": "application/json; charset=utf-8"}
    all_headers.update(headers or {})
    return Response(status, json.dumps(payload).encode(), all_headers)


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
    if len(parts) == 4 and parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
        return Route("openidConfiguration", head) if method == "GET" else None
    if len(parts) == 4 and parts[1:] == ["oauth2", "v2.0", "token"]:
        return Route("token", head) if method == "POST" else None
    return None


def _route_keys(method: str, rest: list[str]) -> Route | None:
    if rest in ([], [""]):
        return Route("getKeys") if method == "GET" else None
    name = rest[0]
    tail = rest[1:]
    if method == "POST" and tail == ["create"]:
        return Route("createKey", name)
    if method == "POST" and tail == ["rotate"]:
        return Route("rotateKey", name)
    if method == "GET" and tail == ["versions"]:
        return Route("getKeyVersions", name)
    if method == "DELETE" and tail in ([], [""]):
        return Route("deleteKey", name)
    if method in ("GET", "PATCH") and len(tail) <= 1:
        version = tail[0] if tail else ""
        return Route("getKey" if method == "GET" else "updateKey", name, version)
    if method == "POST" and len(tail) == 2 and tail[1].lower() in CRYPTO_PATHS:
        return Route(CRYPTO_PATHS[tail[1].lower()], name, tail[0])
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


def _object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise bad_parameter("The request body is not valid JSON.") from None
    if not isinstance(parsed, dict):
        raise bad_parameter("The request body must be a JSON object.")
    return parsed


def _optional(obj: Mapping[str, Any], key: str, kind: type, what: str) -> Any:
    value = obj.get(key)
    # bool is an int in Python; a JSON true is not a timestamp or a key size.
    if value is not None and (
        not isinstance(value, kind) or (kind is int and isinstance(value, bool))
    ):
        raise bad_parameter(f"The parameter '{key}' must be {what}.")
    return value


def _attributes(body: Mapping[str, Any]) -> tuple[bool | None, int | None, int | None]:
    attrs = body.get("attributes") or {}
    if not isinstance(attrs, dict):
        raise bad_parameter("The parameter 'attributes' must be an object.")
    enabled = _optional(attrs, "enabled", bool, "a boolean")
    nbf = _optional(attrs, "nbf", int, "an integer timestamp")
    exp = _optional(attrs, "exp", int, "an integer timestamp")
    return enabled, nbf, exp


def _key_ops(body: Mapping[str, Any]) -> list[str] | None:
    ops = body.get("key_ops")
    if ops is None:
        return None
    if not isinstance(ops, list) or not all(isinstance(op, str) for op in ops):
        raise bad_parameter("The parameter 'key_ops' must be a list of strings.")
    return list(ops)


def _tags(body: Mapping[str, Any]) -> dict[str, str] | None:
    tags = body.get("tags")
    if tags is None:
        return None
    if (
        not isinstance(tags, dict)
        or len(tags) > MAX_TAGS
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items())
    ):
        raise bad_parameter(f"The parameter 'tags' must map at most {MAX_TAGS} strings.")
    return dict(tags)


class _Challenge(VaultError):
    """A 401 that carries the WWW-Authenticate challenge, as every Key Vault 401 does."""

    def __init__(self, message: str) -> None:
        super().__init__(401, "Unauthorized", message)


class Service:
    """One vault's behaviour: identity provider, key store, faults and counters."""

    def __init__(self, url: str, stop: threading.Event) -> None:
        self.url = url
        self.identities = IdentityProvider()
        self.store = KeyStore()
        self.faults = FaultSet()
        self._stop = stop
        self._counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()
        self._handlers: dict[str, Callable[[Route, dict[str, Any], str, str], Response]] = {
            "createKey": self._create,
            "getKey": self._get,
            "getKeys": self._list_keys,
            "getKeyVersions": self._versions,
            "rotateKey": self._rotate,
            "updateKey": self._update,
            "deleteKey": self._delete,
            "getDeletedKey": self._get_deleted,
            "getDeletedKeys": self._list_deleted,
            "purgeDeletedKey": self._purge,
            "recoverDeletedKey": self._recover,
            "wrapKey": self._crypto,
            "unwrapKey": self._crypto,
            "encrypt": self._crypto,
            "decrypt": self._crypto,
        }

    @property
    def issuer(self) -> str:
        return f"{self.url}/{self.identities.tenant_id}/v2.0"

    @property
    def challenge(self) -> str:
        return (
            f'Bearer authorization="{self.url}/{self.identities.tenant_id}", '
            f'resource="{VAULT_AUDIENCE}"'
        )

    # counters

    def count(self, operation: str) -> None:
        with self._counts_lock:
            self._counts[operation] += 1

    def counts(self) -> dict[str, int]:
        with self._counts_lock:
            return dict(self._counts)

    def reset_counts(self) -> None:
        with self._counts_lock:
            self._counts.clear()

    # dispatch

    def handle(self, request: Request) -> Response:
        try:
            return self._handle(request)
        except _Challenge as exc:
            return json_response(exc.status, exc.body(), {"WWW-Authenticate": self.challenge})
        except VaultError as exc:
            return json_response(exc.status, exc.body())
        except Exception:
            logger.exception("local Key Vault: unexpected error for %s", request.target[:200])
            return json_response(
                500, VaultError(500, "InternalServerError", "Internal server error.").body()
            )

    def _handle(self, request: Request) -> Response:
        split = urllib.parse.urlsplit(request.target)
        matched = route(request.method, split.path)
        if matched is None:
            raise VaultError(
                404, "NotFound", f"No operation matches {request.method} {split.path}."
            )
        query = urllib.parse.parse_qs(split.query, keep_blank_values=True)
        if matched.operation == "openidConfiguration":
            return self._openid_configuration(matched)
        if matched.operation == "token":
            return self._token(matched, request)
        identity = self._authenticate(request)
        self.count(matched.operation)
        faulted = self._fault(matched.operation)
        if faulted is not None:
            return faulted
        api_version = query.get("api-version", [""])[0]
        if not api_version:
            raise bad_parameter("The 'api-version' query parameter is missing.")
        self._authorize(identity, matched.operation)
        if matched.name:
            check_name(matched.name)
        body = _object(request.body)
        base = self._base(request)
        response = self._handlers[matched.operation](matched, body, base, api_version)
        page = query.get("maxresults", [None])[0], query.get("$skiptoken", [None])[0]
        if matched.operation in ("getKeys", "getKeyVersions", "getDeletedKeys"):
            return self._page(response, page, base, split.path, api_version)
        return response

    def _base(self, request: Request) -> str:
        host = request.headers.get("host", "")
        if len(host) <= 255 and HOST_PATTERN.fullmatch(host):
            return f"https://{host}"
        return self.url

    def _fault(self, operation: str) -> Response | None:
        action = self.faults.take(operation)
        if action is None:
            return None
        if action.latency:
            # An Event, not time.sleep, so that closing the vault does not wait out the delay.
            self._stop.wait(action.latency)
        if action.drop:
            return Response(0, drop=True)
        if action.status is None:
            return None
        code, message = FAULT_ERRORS[action.status]
        headers = {}
        if action.retry_after is not None:
            headers["Retry-After"] = f"{action.retry_after:g}"
        if operation == "token":
            return json_response(
                action.status,
                {"error": "temporarily_unavailable", "error_description": message},
                headers,
            )
        return json_response(
            action.status, VaultError(action.status, code, message).body(), headers
        )

    # identity

    def _authenticate(self, request: Request) -> Identity:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            raise _Challenge("AKV10000: Request is missing a Bearer or PoP token.")
        if scheme.lower() != "bearer" or not token.strip():
            raise _Challenge("The Authorization header is not a Bearer token.")
        try:
            return self.identities.verify(token.strip(), self.issuer)
        except TokenError as exc:
            raise _Challenge(str(exc)) from None

    def _authorize(self, identity: Identity, operation: str) -> None:
        permission = PERMISSIONS[operation]
        if permission not in identity.permissions:
            raise VaultError(
                403,
                "Forbidden",
                f"The user, group or application 'appid={identity.client_id};"
                f"iss={self.issuer}' does not have keys {permission} permission on key vault "
                f"'{self.url}'.",
                "AccessDenied",
            )

    def _openid_configuration(self, matched: Route) -> Response:
        if matched.name != self.identities.tenant_id:
            return json_response(
                400,
                {"error": "invalid_tenant", "error_description": "Tenant not found."},
            )
        base = f"{self.url}/{matched.name}"
        return json_response(
            200,
            {
                "issuer": self.issuer,
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
                "response_types_supported": ["token"],
                "tenant_region_scope": "local",
            },
        )

    def _token(self, matched: Route, request: Request) -> Response:
        self.count("token")
        faulted = self._fault("token")
        if faulted is not None:
            return faulted

        def refuse(status: int, error: str, description: str) -> Response:
            return json_response(status, {"error": error, "error_description": description})

        if matched.name != self.identities.tenant_id:
            return refuse(400, "invalid_tenant", f"Tenant '{matched.name}' not found.")
        try:
            form = urllib.parse.parse_qs(request.body.decode("ascii"), strict_parsing=False)
        except UnicodeDecodeError:
            return refuse(400, "invalid_request", "The request body must be a form.")
        fields = {key: values[0] for key, values in form.items() if values}
        if fields.get("grant_type") != "client_credentials":
            return refuse(400, "unsupported_grant_type", "Only client_credentials is supported.")
        if fields.get("client_assertion_type") == _JWT_BEARER:
            identity = self.identities.authenticate_assertion(
                fields.get("client_id", ""), fields.get("client_assertion", "")
            )
        else:
            identity = self.identities.authenticate(
                fields.get("client_id", ""), fields.get("client_secret", "")
            )
        if identity is None:
            return refuse(401, "invalid_client", "Invalid client credential or unknown client.")
        scopes = fields.get("scope", "").split()
        if f"{VAULT_AUDIENCE}/.default" not in scopes:
            return refuse(400, "invalid_scope", f"Only {VAULT_AUDIENCE}/.default is issued here.")
        token, _ = self.identities.issue(identity, self.issuer)
        return json_response(
            200,
            {
                "token_type": "Bearer",
                "expires_in": 3600,
                "ext_expires_in": 3600,
                "access_token": token,
            },
        )

    # keys

    def _create(self, matched: Route, body: dict[str, Any], base: str, _: str) -> Response:
        kty = body.get("kty")
        if not isinstance(kty, str):
            raise bad_parameter("The parameter 'kty' is required.")
        size = _optional(body, "key_size", int, "an integer")
        exponent = _optional(body, "public_exponent", int, "an integer")
        enabled, nbf, exp = _attributes(body)
        version = generate_version(matched.name, kty, size, _key_ops(body), exponent)
        version.enabled = True if enabled is None else enabled
        version.nbf, version.exp = nbf, exp
        version.tags = _tags(body) or {}
        self.store.add_version(version)
        return json_response(200, version.bundle(base))

    def _get(self, matched: Route, body: dict[str, Any], base: str, _: str) -> Response:
        key = self.store.find(matched.name, matched.version)
        key.check_usable("getKey", "get")
        return json_response(200, key.bundle(base))

    def _versions(self, matched: Route, body: dict[str, Any], base: str, _: str) -> Response:
        items = [v.item(base) for v in self.store.versions(matched.name)]
        return json_response(200, {"value": items})

    def _list_keys(self, matched: Route, body: dict[str, Any], base: str, _: str) -> Response:
        items = []
        for name in self.store.names():
            try:
                latest = self.store.latest(name)
            except VaultError:
                continue
            item = latest.item(base)
            item["kid"] = f"{base}/keys/{name}"
            items.append(item)
        return json_response(200, {"value": items})

    def _rotate(self, matched: Route, body: dict[str, Any], base: str, _: str) -> Response:
        latest = self.store.latest(matched.name)
        version = generate_version(
            matched.name, latest.kty, latest.size, list(latest.key_ops), None
        )
        version.tags = dict(latest.tags)
        self.store.add_version(version)
        return json_response(200, version.bundle(base))

    def _update(self, matched: Route, body: dict[str, Any], base: str, _: str) -> Response:
        enabled, nbf, exp = _attributes(body)
        ops = _key_ops(body)
        if ops is not None:
            check_key_ops(ops)
        key = self.store.update(
            matched.name,
            matched.version,
            enabled=enabled,
            nbf=nbf,
            exp=exp,
            key_ops=ops,
            tags=_tags(body),
        )
        return json_response(200, key.bundle(base))

    def _deleted_bundle(self, name: str, base: str) -> dict[str, Any]:
        deleted = self.store.deleted(name)
        bundle = deleted.versions[-1].bundle(base)
        bundle.update(
            recoveryId=f"{base}/deletedkeys/{name}",
            deletedDate=deleted.deleted_date,
            scheduledPurgeDate=deleted.scheduled_purge_date,
        )
        return bundle

    def _delete(self, matched: Route, body: dict[str, Any], base: str, _: str) -> Response:
        self.store.delete(matched.name)
        return json_response(200, self._deleted_bundle(matched.name, base))

    def _get_deleted(self, matched: Route, body: dict[str, Any], base: str, _: str) -> Response:
        return json_response(200, self._deleted_bundle(matched.name, base))

    def _list_deleted(self, matched: Route, body: dict[str, Any], base: str, _: str) -> Response:
        items = []
        for name in self.store.deleted_names():
            try:
                bundle = self._deleted_bundle(name, base)
            except VaultError:
                continue
            items.append(
                {
                    "kid": f"{base}/keys/{name}",
                    "attributes": bundle["attributes"],
                    "tags": bundle["tags"],
                    "recoveryId": bundle["recoveryId"],
                    "deletedDate": bundle["deletedDate"],
                    "scheduledPurgeDate": bundle["scheduledPurgeDate"],
                }
            )
        return json_response(200, {"value": items})

    def _purge(self, matched: Route, body: dict[str, Any], base: str, _: str) -> Response:
        self.store.purge(matched.name)
        return Response(204)

    def _recover(self, matched: Route, body: dict[str, Any], base: str, _: str) -> Response:
        key = self.store.recover(matched.name)
        return json_response(200, key.bundle(base))

    def _crypto(self, matched: Route, body: dict[str, Any], base: str, _: str) -> Response:
        key = self.store.find(matched.name, matched.version)
        key.check_usable(matched.operation, matched.operation)
        return json_response(200, key_operation(key, matched.operation, body, base))

    def _page(
        self,
        response: Response,
        page: tuple[str | None, str | None],
        base: str,
        path: str,
        api_version: str,
    ) -> Response:
        raw_max, raw_skip = page
        try:
            size = MAX_PAGE if raw_max is None else int(raw_max)
            skip = 0 if raw_skip is None else int(raw_skip)
        except ValueError:
            raise bad_parameter("maxresults and $skiptoken must be integers.") from None
        if not 1 <= size <= MAX_PAGE:
            raise bad_parameter(f"maxresults must be between 1 and {MAX_PAGE}.")
        if skip < 0:
            raise bad_parameter("$skiptoken must not be negative.")
        items = json.loads(response.body)["value"]
        chosen = items[skip : skip + size]
        next_link = None
        if skip + size < len(items):
            query = urllib.parse.urlencode(
                {"api-version": api_version, "maxresults": size, "$skiptoken": skip + size}
            )
            next_link = f"{base}{path}?{query}"
        return json_response(200, {"value": chosen, "nextLink": next_link})
