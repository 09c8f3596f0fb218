"""The vault's own identity provider: client-secret identities and the tokens it signs.

Tokens are compact JWTs signed with HMAC-SHA-256 under a key that only this vault knows, so a
token issued by one ``LocalKeyVault`` is worthless at another.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "ALL_PERMISSIONS",
    "VAULT_AUDIENCE",
    "Identity",
    "IdentityProvider",
    "TokenError",
    "b64url_decode",
    "b64url_encode",
]

VAULT_AUDIENCE = "https://vault.azure.net"
TOKEN_LIFETIME = 3600
# Clocks of client and vault are the same here; a little skew still keeps boundary tests sane.
CLOCK_SKEW = 5
MAX_TOKEN_CHARS = 8192

# Key permission names as Key Vault access policies spell them.
ALL_PERMISSIONS = frozenset(
    {
        "get",
        "list",
        "create",
        "update",
        "delete",
        "recover",
        "purge",
        "rotate",
        "encrypt",
        "decrypt",
        "wrapKey",
        "unwrapKey",
        "sign",
        "verify",
        "import",
        "backup",
        "restore",
        "release",
        "getrotationpolicy",
        "setrotationpolicy",
    }
)


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode base64url with or without padding; standard base64 is accepted too. Any other
    character is an error (``ValueError``), never silently dropped."""
    cleaned = text.strip().replace("+", "-").replace("/", "_").rstrip("=")
    if len(cleaned) % 4 == 1:
        raise ValueError("invalid base64url length")
    padded = cleaned + "=" * (-len(cleaned) % 4)
    return base64.b64decode(padded, altchars=b"-_", validate=True)


class TokenError(Exception):
    """A bearer token the vault does not accept; the message goes into the 401 body."""


@dataclass(frozen=True)
class Identity:
    """A service principal of the local identity provider."""

    name: str
    client_id: str
    client_secret: str
    permissions: frozenset[str]


class IdentityProvider:
    """Identities of one tenant and the signing key of their tokens."""

    def __init__(self, audience: str = VAULT_AUDIENCE) -> None:
        # The resource of the vault's challenge, and so the audience of its tokens:
        # https://vault.azure.net for a vault, https://managedhsm.azure.net for a Managed HSM.
        # Vaults that share this provider (one tenant) add theirs to ``audiences``.
        self.audience = audience
        self.audiences = {audience}
        self.tenant_id = str(uuid.uuid4())
        self._signing_key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._by_name: dict[str, Identity] = {}
        self._by_client_id: dict[str, Identity] = {}
        # Workload identity: the service-account token a cluster would project into a pod,
        # which the identity accepts as a client assertion, per client id.
        self._assertions: dict[str, str] = {}

    def add(self, name: str, permissions: Iterable[str] | None = None) -> Identity:
        granted = ALL_PERMISSIONS if permissions is None else frozenset(permissions)
        unknown = granted - ALL_PERMISSIONS
        if unknown:
            raise ValueError(f"unknown permissions: {sorted(unknown)}")
        identity = Identity(name, str(uuid.uuid4()), secrets.token_urlsafe(24), granted)
        with self._lock:
            if name in self._by_name:
                raise ValueError(f"identity {name!r} already exists")
            self._by_name[name] = identity
            self._by_client_id[identity.client_id] = identity
        return identity

    def get(self, name: str) -> Identity:
        with self._lock:
            try:
                return self._by_name[name]
            except KeyError:
                raise KeyError(f"no identity named {name!r}") from None

    def by_client_id(self, client_id: str) -> Identity | None:
        with self._lock:
            return self._by_client_id.get(client_id)

    def authenticate(self, client_id: str, client_secret: str) -> Identity | None:
        identity = self.by_client_id(client_id)
        if identity is None:
            return None
        if not hmac.compare_digest(identity.client_secret.encode(), client_secret.encode()):
            return None
        return identity

    def federate(self, name: str) -> str:
        """A client assertion the identity ``name`` accepts in place of its secret, as a
        workload identity federation accepts the pod's service-account token."""
        identity = self.get(name)
        with self._lock:
            return self._assertions.setdefault(identity.client_id, secrets.token_urlsafe(48))

    def authenticate_assertion(self, client_id: str, assertion: str) -> Identity | None:
        identity = self.by_client_id(client_id)
        with self._lock:
            expected = self._assertions.get(client_id)
        if identity is None or expected is None:
            return None
        if not hmac.compare_digest(expected.encode(), assertion.encode()):
            return None
        return identity

    def issue(
        self,
        identity: Identity,
        issuer: str,
        *,
        audience: str | None = None,
        lifetime: int = TOKEN_LIFETIME,
        now: float | None = None,
    ) -> tuple[str, int]:
        """A signed token and its expiry (unix seconds)."""
        audience = self.audience if audience is None else audience
        issued = int(time.time() if now is None else now)
        expires = issued + lifetime
        claims = {
            "aud": audience,
            "iss": issuer,
            "iat": issued,
            "nbf": issued,
            "exp": expires,
            "tid": self.tenant_id,
            "appid": identity.client_id,
            "oid": identity.client_id,
            "sub": identity.client_id,
            "uti": secrets.token_urlsafe(12),
        }
        header = {"alg": "HS256", "typ": "JWT"}
        signing_input = (
            b64url_encode(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + b64url_encode(json.dumps(claims, separators=(",", ":")).encode())
        )
        signature = hmac.new(self._signing_key, signing_input.encode(), hashlib.sha256).digest()
        return signing_input + "." + b64url_encode(signature), expires

    def verify(self, token: str, issuer: str, audience: str | None = None) -> Identity:
        """The identity a token for ``audience`` (default: the provider's own) speaks for,
        or ``TokenError`` saying why it is refused."""
        expected_audience = self.audience if audience is None else audience
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenError("The access token is too long.")
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenError("The access token is malformed.")
        try:
            header = json.loads(b64url_decode(parts[0]))
            claims = json.loads(b64url_decode(parts[1]))
            signature = b64url_decode(parts[2])
        except ValueError:
            raise TokenError("The access token is malformed.") from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise TokenError("The access token is malformed.")
        # Checked before the signature so that an "alg": "none" token is named as unsigned.
        if header.get("alg") != "HS256" or not signature:
            raise TokenError("The access token is not signed by this vault's identity provider.")
        expected = hmac.new(
            self._signing_key, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256
        ).digest()
        if not hmac.compare_digest(expected, signature):
            raise TokenError("The access token signature is invalid.")
        now = time.time()
        exp, nbf = claims.get("exp"), claims.get("nbf")
        if not isinstance(exp, int) or not isinstance(nbf, int):
            raise TokenError("The access token has no validity period.")
        if now >= exp + CLOCK_SKEW:
            raise TokenError("The access token has expired.")
        if now < nbf - CLOCK_SKEW:
            raise TokenError("The access token is not yet valid.")
        found = claims.get("aud")
        if not isinstance(found, str) or found.rstrip("/") != expected_audience:
            raise TokenError(f"Invalid audience. Expected {expected_audience}, found: {found}.")
        if claims.get("iss") != issuer or claims.get("tid") != self.tenant_id:
            raise TokenError("Invalid issuer.")
        subject = claims.get("sub")
        identity = self.by_client_id(subject) if isinstance(subject, str) else None
        if identity is None:
            raise TokenError("The principal of the access token is unknown to this vault.")
        return identity
