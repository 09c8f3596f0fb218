"""httpx clients that speak only verified TLS under a :class:`TLSPolicy`.

How a refusal happens, in the order a request meets them::

    secure_client(verify=...)        verify=False / a weaker SSLContext   -> at construction
    transport, before the pool       an http:// URL, or a redirect to one  -> no socket opened
    OpenSSL handshake                protocol, suites, chain, expiry, host -> no request byte sent
    httpcore "start_tls.complete"    the context (again), a verified peer, -> no request byte sent
                                     SPKI pin, negotiated version/suite

The last step uses httpcore's public ``trace`` extension: the hook runs after the handshake
and before the connection is handed to HTTP/1.1 or HTTP/2, so an impostor holding a
publicly trusted certificate for the right name never sees a header, let alone a token.
It also re-checks the SSL context itself: a caller's ``verify=`` context is checked at
construction, but the caller still holds it, and switching its verification off later
must not quietly apply to the next connection. A stream whose TLS state cannot be read
is refused, not waved through.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx

from .._compat import (
    httpx_client_mounted_transports,
    httpx_client_transport,
    wrap_httpx_client_transports,
)
from .._errors import InsecureTransportError
from ._policy import TLSPolicy, check_ssl_context, create_ssl_context, spki_pin

__all__ = [
    "InsecureRequestError",
    "secure_async_client",
    "secure_client",
]

# Set on a request's extensions once it has passed this transport. httpx copies extensions
# into the request it builds for a redirect, so seeing the mark on an http:// request means
# a server redirected us off https.
_PASSED_MARK = "envelope.transport.passed"
_TLS_DONE_EVENT = "start_tls.complete"

# OpenSSL reasons that mean "the peer cannot meet our protocol floor".
_PROTOCOL_REASONS = frozenset(
    {
        "UNSUPPORTED_PROTOCOL",
        "TLSV1_ALERT_PROTOCOL_VERSION",
        "NO_PROTOCOLS_AVAILABLE",
        "WRONG_SSL_VERSION",
        "WRONG_VERSION_NUMBER",
    }
)
# OpenSSL reasons that mean "the peer offers none of our suites".
_CIPHER_REASONS = frozenset(
    {
        "SSLV3_ALERT_HANDSHAKE_FAILURE",
        "NO_SHARED_CIPHER",
        "NO_CIPHERS_AVAILABLE",
        "TLSV1_ALERT_INSUFFICIENT_SECURITY",
    }
)


class InsecureRequestError(InsecureTransportError, httpx.TransportError):
    """A request refused by the TLS policy.

    It is an :class:`envelope.InsecureTransportError` (catch that) and also an
    ``httpx.TransportError``, so code written for httpx sees a transport failure it already
    handles; ``reason`` says which rule refused it.
    """

    def __init__(self, message: str, *, reason: str, request: httpx.Request | None = None) -> None:
        # Through the MRO this also runs httpx's RequestError.__init__, which sets no request.
        InsecureTransportError.__init__(self, message, reason=reason)
        if request is not None:
            self.request = request


def _find_ssl_error(exc: BaseException) -> ssl.SSLError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _classify(error: ssl.SSLError) -> tuple[str, str] | None:
    """(reason, message) for a handshake failure the policy caused, None for plain network
    trouble (a reset, an EOF) that a retry may cure."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return "certificate", f"certificate verification failed: {error.verify_message}"
    reason = getattr(error, "reason", None) or ""
    if reason in _PROTOCOL_REASONS:
        return "protocol", f"the server does not speak an allowed TLS version ({reason})"
    if reason in _CIPHER_REASONS:
        return "cipher", f"the server offers no ECDHE + AEAD suite ({reason})"
    return None


@contextlib.contextmanager
def _translate_tls_errors(request: httpx.Request) -> Iterator[None]:
    try:
        yield
    except httpx.ConnectError as exc:
        ssl_error = _find_ssl_error(exc)
        classified = None if ssl_error is None else _classify(ssl_error)
        if classified is None:
            raise
        reason, message = classified
        raise InsecureRequestError(
            f"{message}: {request.url.host}", reason=reason, request=request
        ) from exc


def _refuse_plaintext(request: httpx.Request) -> None:
    if request.url.scheme == "https":
        return
    if request.extensions.get(_PASSED_MARK):
        raise InsecureRequestError(
            f"refused a redirect off https to {request.url.scheme}://{request.url.host}",
            reason="redirect",
            request=request,
        )
    raise InsecureRequestError(
        f"refused a {request.url.scheme or 'scheme-less'} URL; only https is allowed",
        reason="plaintext",
        request=request,
    )


class _HandshakeCheck:
    """What is checked on a fresh TLS connection before it carries a request."""

    def __init__(self, policy: TLSPolicy, context: ssl.SSLContext) -> None:
        self._policy = policy
        self._context = context
        self._pins = frozenset(policy.pins)
        self._versions = frozenset(
            {"TLSv1.3"}
            if policy.minimum_version is ssl.TLSVersion.TLSv1_3
            else {"TLSv1.2", "TLSv1.3"}
        )
        self._suites = frozenset(cipher["name"] for cipher in context.get_ciphers())

    def context_problem(self, context: ssl.SSLContext | None = None) -> tuple[str, str] | None:
        """Whether ``context`` (default: the client's) is still as strict as the policy.

        A caller's context is checked at construction, but it is a mutable object the
        caller keeps: ``verify_mode = CERT_NONE`` set afterwards would silently apply to
        every later handshake, so it is checked again on each new connection.
        """
        try:
            check_ssl_context(self._context if context is None else context, self._policy)
        except InsecureTransportError as exc:
            return exc.reason, str(exc)
        return None

    def problem(self, stream: Any) -> tuple[str, str] | None:
        ssl_object = stream.get_extra_info("ssl_object")
        if ssl_object is None:
            # A "TLS" stream that cannot show its TLS state cannot show it was verified.
            return "verification-disabled", "the TLS stream exposes no SSL object to check"
        # Only connections made with the policy's context are ours to judge; the hop to an
        # https proxy has its own context and its own certificate.
        if ssl_object.context is not self._context:
            return None
        problem = self.context_problem(ssl_object.context)
        if problem is not None:
            return problem
        host = ssl_object.server_hostname
        # getpeercert() is {} when the peer certificate was not verified (CERT_NONE).
        if not ssl_object.getpeercert():
            return "certificate", f"the certificate of {host} was not verified"
        version = ssl_object.version()
        if version not in self._versions:
            return "protocol", f"negotiated {version}, below the policy"
        cipher = ssl_object.cipher()
        if cipher is None or cipher[0] not in self._suites:
            return "cipher", f"negotiated a suite outside the policy: {cipher}"
        if self._pins:
            certificate = ssl_object.getpeercert(True)
            if certificate is None or spki_pin(certificate) not in self._pins:
                return "pin", f"the certificate of {host} matches none of the pinned keys"
        return None


TraceHook = Callable[[str, dict[str, Any]], None]
AsyncTraceHook = Callable[[str, dict[str, Any]], Awaitable[None]]


class _SyncTrace:
    def __init__(self, check: _HandshakeCheck, inner: TraceHook | None) -> None:
        self.check = check
        self.inner = inner

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event.endswith(_TLS_DONE_EVENT):
            stream = info["return_value"]
            problem = self.check.problem(stream)
            if problem is not None:
                # httpcore drops a stream whose setup raised without closing it.
                stream.close()
                raise InsecureRequestError(problem[1], reason=problem[0])
        if self.inner is not None:
            self.inner(event, info)


class _AsyncTrace:
    def __init__(self, check: _HandshakeCheck, inner: AsyncTraceHook | None) -> None:
        self.check = check
        self.inner = inner

    async def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event.endswith(_TLS_DONE_EVENT):
            stream = info["return_value"]
            problem = self.check.problem(stream)
            if problem is not None:
                await stream.aclose()
                raise InsecureRequestError(problem[1], reason=problem[0])
        if self.inner is not None:
            await self.inner(event, info)


class _GuardedTransport(httpx.BaseTransport):
    def __init__(self, inner: httpx.BaseTransport, check: _HandshakeCheck) -> None:
        self._inner = inner
        self._check = check

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        _refuse_plaintext(request)
        request.extensions[_PASSED_MARK] = True
        user_trace = request.extensions.get("trace")
        if isinstance(user_trace, _SyncTrace):
            user_trace = user_trace.inner
        request.extensions["trace"] = _SyncTrace(self._check, user_trace)
        try:
            with _translate_tls_errors(request):
                return self._inner.handle_request(request)
        finally:
            _restore(request.extensions, "trace", user_trace)

    def close(self) -> None:
        self._inner.close()


class _AsyncGuardedTransport(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport, check: _HandshakeCheck) -> None:
        self._inner = inner
        self._check = check

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        _refuse_plaintext(request)
        request.extensions[_PASSED_MARK] = True
        user_trace = request.extensions.get("trace")
        if isinstance(user_trace, _AsyncTrace):
            user_trace = user_trace.inner
        request.extensions["trace"] = _AsyncTrace(self._check, user_trace)
        try:
            with _translate_tls_errors(request):
                return await self._inner.handle_async_request(request)
        finally:
            _restore(request.extensions, "trace", user_trace)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _restore(extensions: dict[str, Any], key: str, value: object) -> None:
    if value is None:
        extensions.pop(key, None)
    else:
        extensions[key] = value


def _resolve_context(policy: TLSPolicy, kwargs: dict[str, Any]) -> ssl.SSLContext:
    for name in ("transport", "mounts", "app"):
        if kwargs.get(name) is not None:
            raise TypeError(
                f"secure clients build their own transports; {name}= would bypass the policy"
            )
    verify = kwargs.pop("verify", True)
    if verify is True:
        return create_ssl_context(policy)
    if isinstance(verify, ssl.SSLContext):
        check_ssl_context(verify, policy)
        return verify
    if verify is False:
        raise InsecureTransportError(
            "verify=False is refused: certificates are always verified",
            reason="verification-disabled",
        )
    raise TypeError(
        "verify must be True or an ssl.SSLContext at least as strict as the policy; "
        "to trust a private CA use TLSPolicy(ca_file=...) or TLSPolicy(ca_data=...)"
    )


def _is_guarded(transport: object) -> bool:
    return transport is None or isinstance(transport, (_GuardedTransport, _AsyncGuardedTransport))


def secure_client(policy: TLSPolicy | None = None, **httpx_kwargs: Any) -> httpx.Client:
    """An ``httpx.Client`` that only speaks TLS under ``policy`` (default ``TLSPolicy()``).

    Every other keyword goes to ``httpx.Client`` unchanged: timeouts, limits, event hooks,
    ``http2=True`` (with ``h2`` installed), ``proxy=`` and environment proxies (https
    requests travel through a CONNECT tunnel, so TLS and the pins stay end to end), auth,
    headers. ``verify`` may only be ``True`` or an ``ssl.SSLContext`` at least as strict as
    the policy (for instance ``create_ssl_context(policy)`` with a client certificate
    loaded); it is checked again after every handshake, so a change that weakens it later
    refuses the connection before a request byte is sent. ``transport=`` and ``mounts=``
    are refused: they would bypass the checks.

    Raises :class:`InsecureRequestError` (an :class:`envelope.InsecureTransportError`) for
    each refusal; see the module docstring of ``envelope.transport`` for the list.
    """
    policy = TLSPolicy() if policy is None else policy
    context = _resolve_context(policy, httpx_kwargs)
    client = httpx.Client(verify=context, **httpx_kwargs)
    check = _HandshakeCheck(policy, context)
    # httpx builds the default and the proxy transports from the same arguments; wrapping
    # what it built keeps all of that (limits, http2, proxies from the environment) intact.
    wrap_httpx_client_transports(client, lambda inner: _GuardedTransport(inner, check))
    return client


def secure_async_client(policy: TLSPolicy | None = None, **httpx_kwargs: Any) -> httpx.AsyncClient:
    """The ``httpx.AsyncClient`` twin of :func:`secure_client`, with the same rules."""
    policy = TLSPolicy() if policy is None else policy
    context = _resolve_context(policy, httpx_kwargs)
    client = httpx.AsyncClient(verify=context, **httpx_kwargs)
    check = _HandshakeCheck(policy, context)
    wrap_httpx_client_transports(client, lambda inner: _AsyncGuardedTransport(inner, check))
    return client


def is_secure_client(client: httpx.Client | httpx.AsyncClient) -> bool:
    """Whether ``client`` was built by :func:`secure_client` / :func:`secure_async_client`,
    still routes every request through the policy checks, and its SSL context is still as
    strict as the policy (a context changed after construction makes this False)."""
    transport = httpx_client_transport(client)
    return (
        isinstance(transport, (_GuardedTransport, _AsyncGuardedTransport))
        and transport._check.context_problem() is None
        and all(_is_guarded(mounted) for mounted in httpx_client_mounted_transports(client))
    )
