"""The one exception to TLS-only: managed-identity token requests to the host's own endpoint.

Azure's managed-identity endpoints are plain http on the host by design: IMDS at the
link-local 169.254.169.254 (or the address of ``AZURE_POD_IDENTITY_AUTHORITY_HOST``), App
Service, Functions and Container Apps at ``IDENTITY_ENDPOINT`` on loopback, Azure ML and
Cloud Shell at ``MSI_ENDPOINT``, Azure Arc on localhost. :class:`IdentityTransport` (and its
asyncio twin) is the transport of the credential the library builds: it sends a plain-http
request only when

* its URL is exactly one of those endpoints (scheme, host, port and path; the query is the
  credential's), as the environment names it when the transport is made, and
* that endpoint's host is loopback (``127.0.0.0/8``, ``::1``, ``localhost``) or exactly IMDS's
  address, ``169.254.169.254``: an endpoint named anywhere else is refused before any socket
  opens, the rest of the link-local ranges (``169.254.0.0/16``, ``fe80::/10``) included, since
  another host on the link (a neighbour, a container runtime's metadata service) would get the
  request's secret header and the token in clear; ``localhost`` is resolved from the hosts
  file and connected to only if it names loopback.

Such a request goes through a client of its own: no proxy (the environment's proxies are
ignored: a token request is for the host, not for a proxy to see), no redirect (a 3xx reply
is refused, reason ``redirect``), the same time bound, reply cap and timeouts as the secure
transports. Everything else, https to Microsoft Entra ID (workload identity included) and
every other URL, goes through :class:`SecureTransport` and its TLS policy, unchanged: an
``http://`` vault, or any plain-http URL that is not one of those endpoints, is refused as
before. Vault and storage clients never use this transport.
"""

from __future__ import annotations

import contextvars
import ipaddress
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx
from azure.core.pipeline.transport import AsyncHttpTransport, HttpTransport
from azure.core.rest import HttpRequest

from .._compat import httpx_transport_network_backend
from .._errors import InsecureTransportError
from ._azure import (
    AsyncSecureTransport,
    SecureTransport,
    close_shielded,
    send_through,
    send_through_async,
)
from ._deadline import remaining
from ._httpx import secure_async_client, secure_client
from ._policy import TLSPolicy

__all__ = [
    "REFUSED",
    "AsyncIdentityTransport",
    "IdentityEndpoint",
    "IdentityTransport",
    "identity_endpoints",
    "is_host_local",
]

#: The one address beyond loopback a plain-http token request may go to: IMDS's.
IMDS_ADDRESS = ipaddress.IPv4Address("169.254.169.254")

#: The last refusal of an identity transport in this thread or task: azure-identity's
#: credential chain reports a failure in a new exception of its own, without the cause.
REFUSED: contextvars.ContextVar[InsecureTransportError | None] = contextvars.ContextVar(
    "envelope_identity_refused", default=None
)

#: IMDS, and the path its override (``AZURE_POD_IDENTITY_AUTHORITY_HOST``) is given.
IMDS_ENDPOINT = "http://169.254.169.254/metadata/identity/oauth2/token"
_IMDS_PATH = "/metadata/identity/oauth2/token"
#: Where the Azure Arc agent answers (MSAL's default when the agent is installed).
ARC_ENDPOINT = "http://localhost:40342/metadata/identity/oauth2/token"


@dataclass(frozen=True)
class IdentityEndpoint:
    """A managed-identity token endpoint and what named it (an environment variable, or
    ``IMDS`` / ``Azure Arc`` for the fixed ones)."""

    url: httpx.URL
    source: str

    @property
    def origin(self) -> str:
        return f"{self.url.scheme}://{self.url.netloc.decode('ascii', 'replace')}"

    def matches(self, url: httpx.URL) -> bool:
        return (
            url.scheme == self.url.scheme
            and url.host == self.url.host
            and _port(url) == _port(self.url)
            and url.path == self.url.path
        )


def _port(url: httpx.URL) -> int:
    return url.port if url.port is not None else 80


def identity_endpoints(environ: Mapping[str, str] | None = None) -> tuple[IdentityEndpoint, ...]:
    """The managed-identity endpoints ``environ`` (default: ``os.environ``) names, then the
    fixed ones; values that are not URLs are left out (the credential then fails on them)."""
    env = os.environ if environ is None else environ
    named = [
        (env.get("IDENTITY_ENDPOINT"), "IDENTITY_ENDPOINT"),
        (env.get("MSI_ENDPOINT"), "MSI_ENDPOINT"),
    ]
    override = env.get("AZURE_POD_IDENTITY_AUTHORITY_HOST")
    if override:
        named.append((override.strip("/") + _IMDS_PATH, "AZURE_POD_IDENTITY_AUTHORITY_HOST"))
    named += [(IMDS_ENDPOINT, "IMDS"), (ARC_ENDPOINT, "Azure Arc")]
    endpoints = []
    for value, source in named:
        if not value:
            continue
        try:
            url = httpx.URL(value.strip())
        except (httpx.InvalidURL, TypeError):
            continue
        if url.scheme == "http" and url.host:
            endpoints.append(IdentityEndpoint(url, source))
    return tuple(endpoints)


def is_host_local(host: str) -> bool:
    """Whether ``host`` (as written, no DNS) may get a plain-http token request: a loopback
    IP literal, ``localhost``, or exactly IMDS's address (no other link-local one)."""
    bare = host.strip("[]").lower()
    if bare == "localhost":
        return True
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        return False
    return address.is_loopback or address == IMDS_ADDRESS


def _local_addresses(host: str, port: int) -> list[str]:
    """The addresses to connect to for ``host``: a loopback or IMDS IP literal as it is;
    ``localhost`` as the hosts file resolves it, every address checked; nothing else."""
    if not is_host_local(host):
        raise _not_local(host)
    bare = host.strip("[]").lower()
    if bare != "localhost":
        return [bare]
    addresses = []
    for *_, sockaddr in socket.getaddrinfo(bare, port, type=socket.SOCK_STREAM):
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if not address.is_loopback:
            raise _not_local(f"{host} (resolved to {address})")
        addresses.append(str(address))
    return addresses


def _not_local(host: str) -> InsecureTransportError:
    return InsecureTransportError(
        f"refused a plain-http connection to {host}: only a managed-identity endpoint on this "
        "host (loopback) or IMDS (169.254.169.254) may be reached without TLS",
        reason="plaintext",
    )


def _bounded(timeout: float | None) -> float | None:
    """``timeout`` shortened to what is left of the current deadline."""
    left = remaining()
    if left is None:
        return timeout
    if left <= 0:
        raise httpcore.ReadTimeout("the deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A plain stream whose every read and write ends by the current deadline (the secure
    clients get the same from their SSL sockets)."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _bounded(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _bounded(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        raise _not_local("a TLS upgrade of a plain managed-identity connection")

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _LocalBackend(httpcore.NetworkBackend):
    """Connects only to loopback addresses and IMDS's, checked before connecting."""

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, *args: Any, **options: Any
    ) -> httpcore.NetworkStream:
        failure: Exception = httpcore.ConnectError(f"cannot connect to {host}")
        for address in _local_addresses(host, port):
            try:
                stream = self._inner.connect_tcp(address, port, _bounded(timeout), *args, **options)
            except httpcore.ConnectError as exc:
                failure = exc
            else:
                return _DeadlineStream(stream)
        raise failure

    def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        raise _not_local("a unix socket")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _AsyncLocalBackend(httpcore.AsyncNetworkBackend):
    """The asyncio twin of :class:`_LocalBackend` (the attempt's cancel scope bounds time)."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, *args: Any, **options: Any
    ) -> httpcore.AsyncNetworkStream:
        failure: Exception = httpcore.ConnectError(f"cannot connect to {host}")
        for address in _local_addresses(host, port):
            try:
                return await self._inner.connect_tcp(address, port, timeout, *args, **options)
            except httpcore.ConnectError as exc:
                failure = exc
        raise failure

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        raise _not_local("a unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _plain_client(timeout: httpx.Timeout) -> httpx.Client:
    transport = httpx.HTTPTransport()
    httpx_transport_network_backend(transport, _LocalBackend())
    return httpx.Client(transport=transport, trust_env=False, timeout=timeout)


def _plain_async_client(timeout: httpx.Timeout) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport()
    httpx_transport_network_backend(transport, _AsyncLocalBackend())
    return httpx.AsyncClient(transport=transport, trust_env=False, timeout=timeout)


class _Routes:
    """Which way a request goes: the endpoints the environment named when the transport
    was made, and the check that refuses a plain-http one that is not local."""

    def __init__(self, endpoints: Iterable[IdentityEndpoint] | None) -> None:
        self.endpoints = tuple(identity_endpoints() if endpoints is None else endpoints)

    def plain(self, request: HttpRequest) -> bool:
        """True to send ``request`` over plain http; False for the secure transport (which
        refuses any other http URL)."""
        url = httpx.URL(request.url)
        if url.scheme != "http":
            return False
        for endpoint in self.endpoints:
            if endpoint.matches(url):
                if not is_host_local(endpoint.url.host):
                    raise InsecureTransportError(
                        f"{endpoint.source} names the managed-identity endpoint "
                        f"{endpoint.origin}, which is neither on this host (loopback) nor "
                        "IMDS (169.254.169.254): a token request over plain http may go only "
                        f"there, so nothing was sent. Correct {endpoint.source}, or give the "
                        "library a credential of your own",
                        reason="plaintext",
                    )
                return True
        return False


class _Settings:
    """What an identity transport is made with: its clients' timeouts, the reply cap, and
    the routes of the endpoints (default: those the environment names now)."""

    def __init__(
        self,
        timeout: httpx.Timeout | None = None,
        max_response_bytes: int | None = None,
        endpoints: Iterable[IdentityEndpoint] | None = None,
    ) -> None:
        self.timeout = timeout if timeout is not None else httpx.Timeout(10.0, connect=3.0)
        self.max_response_bytes = max_response_bytes
        self.routes = _Routes(endpoints)


def _refuse_redirect(status: int, request: HttpRequest) -> None:
    if 300 <= status < 400:
        raise InsecureTransportError(
            f"the managed-identity endpoint {httpx.URL(request.url).host} answered with a "
            f"redirect (HTTP {status}): a plain-http token request is never redirected",
            reason="redirect",
        )


class IdentityTransport(HttpTransport):  # type: ignore[type-arg]
    """The azure-core transport of the library's own credential: :class:`SecureTransport`
    under ``policy`` for everything, except the managed-identity token requests the module
    docstring describes. ``endpoints`` defaults to what the environment names now."""

    def __init__(
        self,
        policy: TLSPolicy | None = None,
        *,
        timeout: httpx.Timeout | None = None,
        max_response_bytes: int | None = None,
        endpoints: Iterable[IdentityEndpoint] | None = None,
    ) -> None:
        settings = _Settings(timeout, max_response_bytes, endpoints)
        self._timeout, self._max_response_bytes = settings.timeout, max_response_bytes
        self._routes = settings.routes
        self._http = secure_client(policy, timeout=self._timeout)
        self._secure = SecureTransport(client=self._http, max_response_bytes=max_response_bytes)
        self._plain: httpx.Client | None = None

    def open(self) -> None:
        self._secure.open()

    def close(self) -> None:
        self._secure.close()
        self._http.close()
        if self._plain is not None:
            self._plain.close()

    def __enter__(self) -> IdentityTransport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def sleep(self, duration: float) -> None:
        self._secure.sleep(duration)

    def send(self, request: HttpRequest, **kwargs: Any) -> Any:
        try:
            if not self._routes.plain(request):
                return self._secure.send(request, **kwargs)
            if self._plain is None:
                self._plain = _plain_client(self._timeout)
            response = send_through(self._plain, request, kwargs, self._max_response_bytes)
            try:
                _refuse_redirect(response.status_code, request)
            except BaseException:
                response.close()
                raise
            return response
        except InsecureTransportError as exc:
            REFUSED.set(exc)
            raise


class AsyncIdentityTransport(AsyncHttpTransport):  # type: ignore[type-arg]
    """The asyncio twin of :class:`IdentityTransport`, with the same keywords."""

    def __init__(self, policy: TLSPolicy | None = None, **options: Any) -> None:
        settings = _Settings(**options)
        self._timeout, self._max_response_bytes = settings.timeout, settings.max_response_bytes
        self._routes = settings.routes
        self._http = secure_async_client(policy, timeout=self._timeout)
        self._secure = AsyncSecureTransport(
            client=self._http, max_response_bytes=self._max_response_bytes
        )
        self._plain: httpx.AsyncClient | None = None

    async def open(self) -> None:
        await self._secure.open()

    async def close(self) -> None:
        await self._secure.close()
        await self._http.aclose()
        if self._plain is not None:
            await self._plain.aclose()

    async def __aenter__(self) -> AsyncIdentityTransport:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def sleep(self, duration: float) -> None:
        await self._secure.sleep(duration)

    async def send(self, request: HttpRequest, **kwargs: Any) -> Any:
        try:
            if not self._routes.plain(request):
                return await self._secure.send(request, **kwargs)
            if self._plain is None:
                self._plain = _plain_async_client(self._timeout)
            response = await send_through_async(
                self._plain, request, kwargs, self._max_response_bytes
            )
            try:
                _refuse_redirect(response.status_code, request)
            except BaseException:
                await close_shielded(response)
                raise
            return response
        except InsecureTransportError as exc:
            REFUSED.set(exc)
            raise
