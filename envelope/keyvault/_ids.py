"""Key Vault key identifiers: parsing and the exact-match rule ``can_unwrap`` relies on.

A key id is ``https://{vault-host}[:port]/keys/{name}[/{version}]``. Everything that decides
where a bearer token is sent comes from the *configured* id; a header's id only ever
contributes a version, and only after it matched the configured vault and name exactly.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

__all__ = ["KeyId", "is_loopback", "parse_key_id"]

# The whole grammar, matched against the id exactly as written: "https" in lower case, a
# host (a DNS name or a bracketed IPv6 address), an optional port in plain decimal without
# leading zeros, "/keys/", a name of 1-127 letters, digits and dashes, and an optional
# 32-hex-digit version (or a trailing slash, which means "latest" as in the SDK). No
# whitespace, control characters, user info, query or fragment anywhere: a URL parser's
# normalisation (stripping spaces and tabs, folding the scheme, reading "0443" as 443) is
# exactly what must not decide whether a header names our key.
_KEY_ID = re.compile(
    r"https://"
    r"(?P<host>[0-9A-Za-z.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])"
    r"(?::(?P<port>[1-9][0-9]{0,4}))?"
    r"/keys/(?P<name>[0-9A-Za-z-]{1,127})"
    r"(?:/(?P<version>[0-9A-Fa-f]{32})?)?"
)
_MAX_ID_CHARS = 1024
_MAX_PORT = 65535


@dataclass(frozen=True)
class KeyId:
    """A parsed key id. ``host`` is lower case, ``port`` explicit (443 by default), ``name``
    as given (Key Vault names are case-insensitive; comparisons fold case)."""

    host: str
    port: int
    name: str
    version: str | None

    @property
    def vault_url(self) -> str:
        netloc = self.host if self.port == 443 else f"{self.host}:{self.port}"
        return f"https://{netloc}"

    @property
    def versionless(self) -> str:
        return f"{self.vault_url}/keys/{self.name}"

    def __str__(self) -> str:
        return self.versionless if self.version is None else f"{self.versionless}/{self.version}"

    def same_key(self, other: KeyId) -> bool:
        """Same vault (host and port) and same key name."""
        return (
            self.host == other.host
            and self.port == other.port
            and self.name.lower() == other.name.lower()
        )


def parse_key_id(key_id: str) -> KeyId | None:
    """The parts of a Key Vault key id, or None if ``key_id`` is not one (pure, no I/O).

    Exact on purpose: the whole string must be ``https://{host}[:{port}]/keys/{name}`` with
    an optional ``/{32-hex-digit version}`` (or a trailing slash), nothing around it and
    nothing a URL parser would have to normalise. Host names fold case (DNS does); an
    explicit ``:443`` is the default port.
    """
    if not isinstance(key_id, str) or not 0 < len(key_id) <= _MAX_ID_CHARS:
        return None
    match = _KEY_ID.fullmatch(key_id)
    if match is None:
        return None
    port = 443 if match["port"] is None else int(match["port"])
    if port > _MAX_PORT:
        return None
    return KeyId(match["host"].lower(), port, match["name"], match["version"])


def is_loopback(host: str) -> bool:
    """Whether ``host`` (as in a KeyId) names this machine; only such vaults may skip the
    SDK's challenge-resource check, which a server on loopback cannot pass."""
    bare = host[1:-1] if host.startswith("[") else host
    if bare == "localhost":
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False
