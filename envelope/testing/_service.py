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
from collections.abc import Callable
from typing import Any

from ._errors import VaultError, bad_parameter
from ._faults import FAULT_ERRORS, FaultSet
from ._http import Request, Response, json_response
from ._identity import Identity, IdentityProvider, TokenError
from ._keys_api import KeysApi, regenerate
from ._routes import PERMISSIONS, Route, route
from ._store import KeyStore, check_name, sweep_rotations

__all__ = ["Request", "Response", "Service", "json_response"]

#: The client-assertion type of workload identity federation (RFC 7523).
_JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

logger = logging.getLogger("envelope.testing")

MAX_PAGE = 25
HOST_PATTERN = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
PAGED = frozenset({"getKeys", "getKeyVersions", "getDeletedKeys"})
Handler = Callable[[Route, dict[str, Any], str], Response]


def _object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise bad_parameter("The request body is not valid JSON.") from None
    if not isinstance(parsed, dict):
        raise bad_parameter("The request body must be a JSON object.")
    return parsed


class _Challenge(VaultError):
    """A 401 that carries the WWW-Authenticate challenge, as every Key Vault 401 does."""

    def __init__(self, message: str) -> None:
        super().__init__(401, "Unauthorized", message)


class Service:
    """One vault's behaviour: identity provider, key store, faults and counters."""

    def __init__(
        self,
        url: str,
        stop: threading.Event,
        store: KeyStore,
        backup_key: Callable[[], bytes],
        audience: str,
        authority: Service | None = None,
    ) -> None:
        self.url = url
        self.audience = audience
        # A vault that shares another's tenant takes its identity provider and token
        # endpoint, as vaults of one Microsoft Entra tenant share login.microsoftonline.com.
        self._authority = authority
        if authority is None:
            self.identities = IdentityProvider(audience)
        else:
            self.identities = authority.identities
            self.identities.audiences.add(audience)
        self.store = store
        self.keys = KeysApi(store, backup_key)
        self.faults = FaultSet()
        self._stop = stop
        self._counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()
        self._sweep_lock = threading.Lock()
        keys = self.keys
        self._handlers: dict[str, Handler] = {
            "createKey": keys.create,
            "importKey": keys.import_key,
            "getKey": keys.get,
            "getKeys": keys.list_keys,
            "getKeyVersions": keys.versions,
            "rotateKey": keys.rotate,
            "updateKey": keys.update,
            "deleteKey": keys.delete,
            "getDeletedKey": keys.get_deleted,
            "getDeletedKeys": keys.list_deleted,
            "purgeDeletedKey": keys.purge,
            "recoverDeletedKey": keys.recover,
            "backupKey": keys.backup,
            "restoreKey": keys.restore,
            "getRandomBytes": keys.random_bytes,
            "getKeyRotationPolicy": keys.get_policy,
            "updateKeyRotationPolicy": keys.set_policy,
            "getKeyAttestation": keys.unsupported,
            "release": keys.unsupported,
            "wrapKey": keys.crypto,
            "unwrapKey": keys.crypto,
            "encrypt": keys.crypto,
            "decrypt": keys.crypto,
            "sign": keys.crypto,
            "verify": keys.crypto,
        }

    @property
    def authority_url(self) -> str:
        """Where the tenant's token endpoint is: this vault, or the vault it shares."""
        return self.url if self._authority is None else self._authority.url

    @property
    def issuer(self) -> str:
        return f"{self.authority_url}/{self.identities.tenant_id}/v2.0"

    @property
    def challenge(self) -> str:
        return (
            f'Bearer authorization="{self.authority_url}/{self.identities.tenant_id}", '
            f'resource="{self.audience}"'
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

    # rotation policies

    def sweep_rotations(self) -> int:
        """Rotate every key whose policy fell due on the vault's clock."""
        with self._sweep_lock:
            return sweep_rotations(self.store, self.store.clock.now(), regenerate)

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
        if matched.operation == "signingKeys":
            # Tokens are MACed with a key only the vault holds: there is no public key to show.
            return json_response(200, {"keys": []})
        if matched.operation == "token":
            return self._token(matched, request)
        identity = self._authenticate(request)
        self.count(matched.operation)
        faulted = self._fault(matched.operation)
        if faulted is not None:
            return faulted
        # Any value is accepted: clients move to new (preview) versions faster than any
        # emulator, and the keys API has kept its shape across them.
        api_version = query.get("api-version", [""])[0]
        if not api_version:
            raise bad_parameter("The 'api-version' query parameter is missing.")
        self._authorize(identity, matched.operation)
        if matched.name:
            check_name(matched.name)
        body = _object(request.body)
        due = self.store.next_rotation
        if due is not None and self.store.clock.now() >= due:
            self.sweep_rotations()
        base = self._base(request)
        response = self._handlers[matched.operation](matched, body, base)
        if matched.operation in PAGED:
            page = query.get("maxresults", [None])[0], query.get("$skiptoken", [None])[0]
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
            return self.identities.verify(token.strip(), self.issuer, self.audience)
        except TokenError as exc:
            raise _Challenge(str(exc)) from None

    def _authorize(self, identity: Identity, operation: str) -> None:
        permission = PERMISSIONS[operation]
        if permission is not None and permission not in identity.permissions:
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
        base = f"{self.authority_url}/{matched.name}"
        return json_response(
            200,
            {
                "issuer": self.issuer,
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "jwks_uri": f"{base}/discovery/v2.0/keys",
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
        audiences = sorted(self.identities.audiences)
        wanted = [aud for aud in audiences if f"{aud}/.default" in scopes]
        if not wanted:
            allowed = ", ".join(f"{aud}/.default" for aud in audiences)
            return refuse(400, "invalid_scope", f"Only {allowed} is issued here.")
        token, _ = self.identities.issue(identity, self.issuer, audience=wanted[0])
        return json_response(
            200,
            {
                "token_type": "Bearer",
                "expires_in": 3600,
                "ext_expires_in": 3600,
                "access_token": token,
            },
        )

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
