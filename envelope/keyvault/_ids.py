"""Key Vault key identifiers: parsing and the exact-match rule ``can_unwrap`` relies on.

A key id is ``https://{vault-host}[:port]/keys/{name}[/{version}]``. Everything that decides
where a bearer token is sent comes from the *configured* id; a header's id only ever
contributes a version, and only after it matched the configured vault and name exactly.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["KeyId", "is_loopback", "parse_key_id"]

# Key Vault names: 1-127 of letters, digits and dashes. Versions: 32 hex digits.
_NAME = re.compile(r"[0-9A-Za-z-]{1,127}")
_VERSION = re.compile(r"[0-9A-Fa-f]{32}")
_HOST = re.compile(r"[0-9A-Za-z.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]")
_MAX_ID_CHARS = 1024


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

    Strict on purpose: https only, no user info, query or fragment, exactly ``/keys/name`` or
    ``/keys/name/version`` with a 32-hex-digit version.
    """
    if not isinstance(key_id, str) or not 0 < len(key_id) <= _MAX_ID_CHARS:
        return None
    try:
        parts = urlsplit(key_id)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme != "https" or parts.query or parts.fragment or "@" in parts.netloc:
        return None
    host = (parts.hostname or "").lower()
    display_host = f"[{host}]" if ":" in host else host
    if not _HOST.fullmatch(display_host):
        return None
    segments = parts.path.split("/")
    # "/keys/n" -> ["", "keys", "n"]; a trailing slash means the latest version, as in the SDK.
    if len(segments) == 4 and segments[3] == "":
        segments = segments[:3]
    if len(segments) not in (3, 4) or segments[0] != "" or segments[1] != "keys":
        return None
    name = segments[2]
    version = segments[3] if len(segments) == 4 else None
    if not _NAME.fullmatch(name) or (version is not None and not _VERSION.fullmatch(version)):
        return None
    return KeyId(display_host, 443 if port is None else port, name, version)


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
