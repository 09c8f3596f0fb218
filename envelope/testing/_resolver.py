"""In-process name resolution for vaults served under a real-looking name.

``LocalKeyVault(host="myvault.vault.azure.net")`` registers its name here. While any name is
registered, ``socket.getaddrinfo`` is wrapped: a registered name resolves to 127.0.0.1 and
its port 443 to the port the vault listens on, so ``https://myvault.vault.azure.net`` reaches
the vault from requests, urllib3, httpx, aiohttp and asyncio alike. Every other lookup is
passed through untouched, unless loopback-only mode is on (the Microsoft test recipe uses it
so that no byte can leave the machine).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from typing import Any

__all__ = ["loopback_only", "release_name", "serve_name"]

HTTPS_PORTS = (None, 443, "443", b"443", "https", b"https")


class _Resolver:
    """The process's registered names; owns the getaddrinfo wrapper while it is needed."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.names: dict[str, int] = {}
        self.loopback_only = False
        self.original: Any = None

    def install(self) -> None:
        """Under the lock: wrap getaddrinfo while names are registered or loopback-only is on."""
        wanted = bool(self.names) or self.loopback_only
        if wanted and self.original is None:
            self.original = socket.getaddrinfo
            socket.getaddrinfo = _getaddrinfo
        elif not wanted and self.original is not None:
            if socket.getaddrinfo is _getaddrinfo:
                socket.getaddrinfo = self.original
            self.original = None


_resolver = _Resolver()


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return value if isinstance(value, str) else None


def _is_loopback(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def _port_number(port: Any) -> int:
    if isinstance(port, int):
        return port
    text = _text(port) or ""
    try:
        return int(text)
    except ValueError:
        try:
            return socket.getservbyname(text, "tcp")
        except OSError:
            raise socket.gaierror(socket.EAI_SERVICE, f"unknown service {text!r}") from None


def _getaddrinfo(
    host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
) -> Any:
    name = _text(host)
    key = None if name is None else name.lower().rstrip(".")
    with _resolver.lock:
        vault_port = _resolver.names.get(key) if key is not None else None
        strict = _resolver.loopback_only
        original = _resolver.original
    if vault_port is None:
        if strict and key is not None and not _is_loopback(key):
            raise socket.gaierror(
                socket.EAI_NONAME, f"{name}: blocked, only loopback is reachable in this run"
            )
        return (original or socket.getaddrinfo)(host, port, family, type, proto, flags)
    if family not in (socket.AF_UNSPEC, socket.AF_INET):
        raise socket.gaierror(socket.EAI_FAMILY, f"{name} is served on 127.0.0.1 only")
    target = vault_port if port in HTTPS_PORTS else _port_number(port)
    socktype = type or socket.SOCK_STREAM
    protocol = proto or (socket.IPPROTO_TCP if socktype == socket.SOCK_STREAM else 0)
    return [(socket.AF_INET, socktype, protocol, "", ("127.0.0.1", target))]


def serve_name(host: str, port: int) -> None:
    """Resolve ``host`` (any port; 443 becomes ``port``) to 127.0.0.1 in this process."""
    with _resolver.lock:
        if host in _resolver.names:
            raise ValueError(f"{host} is already served by another LocalKeyVault")
        _resolver.names[host] = port
        _resolver.install()


def release_name(host: str) -> None:
    with _resolver.lock:
        _resolver.names.pop(host, None)
        _resolver.install()


def loopback_only(enabled: bool) -> None:
    """Refuse to resolve any name that is neither a vault's nor a loopback address."""
    with _resolver.lock:
        _resolver.loopback_only = enabled
        _resolver.install()
