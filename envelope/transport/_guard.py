"""An opt-in, process-wide refusal of plaintext HTTP.

What it catches: a plaintext HTTP connection or request made through

* ``http.client.HTTPConnection`` (so ``urllib.request``, ``xmlrpc.client`` and anything
  else built on it),
* ``urllib3.connection.HTTPConnection`` (so ``requests`` and azure-core's requests
  transport),
* ``httpcore`` connection pools, sync and async (so every ``httpx`` client, secure or not,
  including http:// requests forwarded by a proxy).

Each raises :class:`envelope.InsecureTransportError` with ``reason="plaintext"`` before a
request byte is written, and before the socket opens (except when urllib3 forwards through
an https proxy: it connects to the proxy first), unless the host is in ``allow_hosts``.

Through a proxy the host judged is the *target*, not only the next hop: a plaintext proxy
must be allowed, and so must the host of an ``http://`` URL it is asked to forward
(urllib3 ``ProxyManager``, ``requests`` with ``proxies=``, ``urllib``'s ``ProxyHandler``,
httpx's ``proxy=``, an absolute URL written as the request line, such as httpx's
``extensions={"target": b"http://host/"}`` or ``http.client``'s ``request("GET",
"http://host/")``; over a TLS hop too, since the proxy sends it on in plaintext) and the
host of a ``set_tunnel()`` over a plaintext connection. ``https://`` through a proxy passes.

What it cannot catch, by construction:

* raw sockets, ``asyncio`` streams, and HTTP stacks that do not sit on the three above
  (``aiohttp``, ``pycurl``, ``grpc``, websockets libraries, C extensions, subprocesses);
* the *quality* of TLS: an ``https`` connection made with ``verify=False`` elsewhere is not
  plaintext and passes; use the secure clients for that guarantee;
* a library that imported a private copy of these classes or patched them itself after
  the guard was installed;
* hosts are compared as written in the URL, without DNS: allowing ``localhost`` does not
  allow ``127.0.0.1``, and a name that resolves to an allowed address is not allowed;
* what an allowed host does with an ordinary request: a reverse proxy or gateway there
  that routes by ``Host`` header or path, or a ``CONNECT`` written by hand and then used
  as a raw socket, is trusted like the allowed host itself.
"""

from __future__ import annotations

import functools
import http.client
import importlib
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from .._compat import http_connection_tunnel_host, httpcore_pool_proxy_url
from .._errors import InsecureTransportError

__all__ = ["PlaintextGuard", "forbid_plaintext"]

_PLAIN_SCHEMES = frozenset({b"http", b"ws"})

_lock = threading.Lock()
_guards: list[PlaintextGuard] = []
# (owner class, attribute) -> the original function, while the patches are installed.
_originals: dict[tuple[type, str], Any] = {}


def _normalize(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


class PlaintextGuard:
    """The handle :func:`forbid_plaintext` returns: a context manager, or call
    :meth:`disable`. While any guard is enabled, a plaintext request is refused unless
    *every* enabled guard allows its host."""

    def __init__(self, allow_hosts: Iterable[str]) -> None:
        if isinstance(allow_hosts, str):
            raise TypeError("allow_hosts must be an iterable of host names, not one string")
        self.allow_hosts = frozenset(_normalize(host) for host in allow_hosts)
        self._enabled = False

    @property
    def enabled(self) -> bool:
        return self._enabled

    def allows(self, host: str) -> bool:
        return _normalize(host) in self.allow_hosts

    def enable(self) -> PlaintextGuard:
        with _lock:
            if not self._enabled:
                if not _guards:
                    _install()
                _guards.append(self)
                self._enabled = True
        return self

    def disable(self) -> None:
        with _lock:
            if self._enabled:
                _guards.remove(self)
                self._enabled = False
                if not _guards:
                    _uninstall()

    def __enter__(self) -> PlaintextGuard:
        return self.enable()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.disable()

    def __repr__(self) -> str:
        state = "enabled" if self._enabled else "disabled"
        return f"<PlaintextGuard {state} allow_hosts={sorted(self.allow_hosts)}>"


def forbid_plaintext(allow_hosts: Iterable[str] = ()) -> PlaintextGuard:
    """Refuse plaintext HTTP process-wide, except to ``allow_hosts`` (e.g. a loopback
    test server). Enabled on return; undo with ``guard.disable()``, or use it as a
    context manager::

        with forbid_plaintext(allow_hosts={"127.0.0.1"}):
            ...

    See this module's docstring for exactly what is and is not caught.
    """
    return PlaintextGuard(allow_hosts).enable()


def _refuse(host: str, library: str) -> None:
    with _lock:
        blocking = [guard for guard in _guards if not guard.allows(host)]
    if blocking:
        raise InsecureTransportError(
            f"plaintext HTTP to {host!r} through {library} refused by forbid_plaintext()",
            reason="plaintext",
        )


def _patch(owner: type, name: str, make: Callable[[Any], Any]) -> None:
    original = owner.__dict__[name]
    _originals[(owner, name)] = original
    setattr(owner, name, functools.wraps(original)(make(original)))


_ABSOLUTE_FORM = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _forwarded_target(url: str) -> tuple[str, str] | None:
    """(scheme, host) when ``url`` is an absolute-form request target (what a client sends
    to a forward proxy: ``GET http://host/path``); None for the usual ``/path`` form."""
    if not _ABSOLUTE_FORM.match(url):
        return None
    scheme = url.split(":", 1)[0].lower()
    try:
        host = urllib.parse.urlsplit(url).hostname or ""
    except ValueError:
        host = ""  # unparseable: no host can be allowed, so it is refused
    return scheme, host


def _install() -> None:
    tls_classes: list[type] = [http.client.HTTPSConnection]
    try:
        urllib3_connection = importlib.import_module("urllib3.connection")
    except ImportError:
        urllib3_connection = None
    if urllib3_connection is not None:
        tls_classes.append(urllib3_connection.HTTPSConnection)
    tls = tuple(tls_classes)

    def library_of(connection: object) -> str:
        if urllib3_connection is not None and isinstance(
            connection, urllib3_connection.HTTPConnection
        ):
            return "urllib3"
        return "http.client"

    def refuse_plain_hop(connection: Any, library: str) -> None:
        """The next hop, and the target of a tunnel through it: both carry plaintext."""
        _refuse(connection.host, library)
        tunnel_host = http_connection_tunnel_host(connection)
        if tunnel_host:
            _refuse(tunnel_host, f"{library} (a tunnel through {connection.host})")

    def http_client_connect(original: Any) -> Any:
        def connect(self: http.client.HTTPConnection) -> None:
            # HTTPSConnection.connect calls this one before wrapping the socket.
            if not isinstance(self, tls):
                refuse_plain_hop(self, "http.client")
            original(self)

        return connect

    def http_client_putrequest(original: Any) -> Any:
        # Runs before any byte of a request is written, and, for http.client, before the
        # socket is even opened. urllib3 (hence requests) goes through it via super().
        def putrequest(
            self: http.client.HTTPConnection,
            method: str,
            url: str,
            skip_host: bool = False,
            skip_accept_encoding: bool = False,
        ) -> None:
            library = library_of(self)
            if not isinstance(self, tls):
                refuse_plain_hop(self, library)
            target = _forwarded_target(url) if isinstance(url, str) else None
            if target is not None and target[0] != "https":
                # Forwarded by a proxy: whatever the hop to the proxy, the proxy sends this
                # request on in plaintext to the host in the URL, not to self.host.
                _refuse(target[1], f"{library} (a proxy at {self.host})")
            original(self, method, url, skip_host, skip_accept_encoding)

        return putrequest

    _patch(http.client.HTTPConnection, "connect", http_client_connect)
    _patch(http.client.HTTPConnection, "putrequest", http_client_putrequest)

    if urllib3_connection is not None:
        urllib3_tls = urllib3_connection.HTTPSConnection

        def urllib3_connect(original: Any) -> Any:
            def connect(self: Any) -> None:
                if not isinstance(self, urllib3_tls):
                    refuse_plain_hop(self, "urllib3")
                original(self)

            return connect

        _patch(urllib3_connection.HTTPConnection, "connect", urllib3_connect)

    try:
        httpcore = importlib.import_module("httpcore")
    except ImportError:
        httpcore = None
    if httpcore is not None:

        def refuse_httpcore(pool: Any, request: Any) -> None:
            # The request line httpcore will send: the URL's path, or whatever a "target"
            # extension put there. An absolute URL in it is a request for the server at
            # the other end to forward, in plaintext unless it says https, whether the hop
            # to that server is plaintext or TLS.
            url = request.url
            host = url.host.decode("ascii", "replace")
            forwarded = _forwarded_target(url.target.decode("ascii", "replace"))
            if forwarded is not None and forwarded[0] != "https":
                _refuse(forwarded[1], f"httpcore/httpx (a request target forwarded by {host})")
            if url.scheme not in _PLAIN_SCHEMES:
                return
            _refuse(host, "httpcore/httpx")
            # An HTTPProxy/SOCKSProxy pool: the plaintext request also travels, in the
            # clear, to the proxy itself unless that hop is TLS.
            proxy_url = httpcore_pool_proxy_url(pool)
            if proxy_url is not None and proxy_url.scheme != b"https":
                proxy_host = proxy_url.host.decode("ascii")
                _refuse(proxy_host, f"httpcore/httpx (a proxy at {proxy_host})")

        def pool_request(original: Any) -> Any:
            def handle_request(self: Any, request: Any) -> Any:
                refuse_httpcore(self, request)
                return original(self, request)

            return handle_request

        def async_pool_request(original: Any) -> Any:
            async def handle_async_request(self: Any, request: Any) -> Any:
                refuse_httpcore(self, request)
                return await original(self, request)

            return handle_async_request

        _patch(httpcore.ConnectionPool, "handle_request", pool_request)
        _patch(httpcore.AsyncConnectionPool, "handle_async_request", async_pool_request)


def _uninstall() -> None:
    for (owner, name), original in _originals.items():
        setattr(owner, name, original)
    _originals.clear()
