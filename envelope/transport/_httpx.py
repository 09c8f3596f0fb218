"""httpx clients that speak only verified TLS under a :class:`TLSPolicy`.

How a refusal happens, in the order a request meets them::

    secure_client(verify=...)        verify=False / a weaker SSLContext   -> at construction
    transport, before the pool       an http:// URL, or a redirect to one  -> no socket opened
    httpcore "connect_tcp.complete"  the contexts weakened since           -> no handshake
    OpenSSL handshake                protocol, suites, chain, expiry, host -> no request byte sent
    httpcore "start_tls.complete"    the contexts (again), a verified peer, -> no request byte sent
                                     SPKI pin, negotiated version/suite

Handshakes use a **private copy** of the SSL context, built from the policy when the client
is made and held by nobody else. A caller's ``verify=`` context is checked at construction
and copied (its trust anchors and any stricter setting carry over); the caller still holds
the original, so it is checked again before every handshake and a weakening refuses the
connection, but no change to it, however timed, can reach a handshake: a thread that
switches verification off and on again cannot slip an unverified connection past the
checks. (Python's ``getpeercert()`` answers from the context's *current* verify mode, not
the one the connection was made with, so checking a shared context after the handshake
would not be enough.)

The checks around the handshake use httpcore's public ``trace`` extension: the hooks run
after the TCP connection is made and after the handshake, before the connection is handed to
HTTP/1.1 or HTTP/2, so an impostor holding a publicly trusted certificate for the right name
never sees a header, let alone a token. A stream whose TLS state cannot be read is refused,
not waved through.

The private context makes ``DeadlineSSLSocket`` objects, so a ``with deadline(...)`` block
bounds every read, write and handshake of a sync client.
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
from ._deadline import DeadlineSSLSocket
from ._policy import TLSPolicy, check_ssl_context, create_ssl_context, private_copy, spki_pin

__all__ = [
    "InsecureRequestError",
    "secure_async_client",
    "secure_client",
]

# Set on a request's extensions once it has passed this transport. httpx copies extensions
# into the request it builds for a redirect, so seeing the mark on an http:// request means
# a server redirected us off https.
_PASSED_MARK = "envelope.transport.passed"
_TCP_DONE_EVENT = "connect_tcp.complete"
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
    """What is checked on a fresh connection: before its TLS handshake, the contexts; after
    it, the connection itself, before it carries a request.

    ``context`` is the client's private context, the one every handshake uses; ``source``
    the caller's ``verify=`` context it was copied from, if any.
    """

    def __init__(
        self, policy: TLSPolicy, context: ssl.SSLContext, source: ssl.SSLContext | None = None
    ) -> None:
        self._policy = policy
        self._context = context
        self._source = source
        self._pins = frozenset(policy.pins)
        self._versions = frozenset(
            {"TLSv1.3"}
            if policy.minimum_version is ssl.TLSVersion.TLSv1_3
            else {"TLSv1.2", "TLSv1.3"}
        )
        self._suites = frozenset(cipher["name"] for cipher in context.get_ciphers())

    def context_problem(self, context: ssl.SSLContext | None = None) -> tuple[str, str] | None:
        """Whether ``context`` (default: the caller's context, then the private one) is
        still as strict as the policy.

        The private context cannot be weakened by the caller; the caller's context can, and
        a caller who weakens it gets a refusal rather than silence. The private one is
        checked too: nothing but this module should hold it, but that is not a proof.
        """
        contexts = [context] if context is not None else [self._source, self._context]
        for candidate in contexts:
            if candidate is None:
                continue
            try:
                check_ssl_context(candidate, self._policy)
            except InsecureTransportError as exc:
                return exc.reason, str(exc)
        return None

    def problem(self, stream: Any) -> tuple[str, str] | None:
        ssl_object = stream.get_extra_info("ssl_object")
        if ssl_object is None:
            # A "TLS" stream that cannot show its TLS state cannot show it was verified.
            return "verification-disabled", "the TLS stream exposes no SSL object to check"
        # Only connections made with the private context are ours to judge; the hop to an
        # https proxy has its own context and its own certificate.
        if ssl_object.context is not self._context:
            return None
        problem = self.context_problem()
        if problem is not None:
            return problem
        host = ssl_object.server_hostname
        # The private context verified the chain and the host name during the handshake,
        # and nobody else can have switched that off; getpeercert() is {} when it did not.
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


def _problem_at(check: _HandshakeCheck, event: str, info: dict[str, Any]) -> tuple[str, str] | None:
    """The refusal due at a trace event: the contexts once a connection is open (before any
    handshake on it), the connection once its handshake is done."""
    if event.endswith(_TCP_DONE_EVENT):
        return check.context_problem()
    if event.endswith(_TLS_DONE_EVENT):
        return check.problem(info["return_value"])
    return None


TraceHook = Callable[[str, dict[str, Any]], None]
AsyncTraceHook = Callable[[str, dict[str, Any]], Awaitable[None]]


class _SyncTrace:
    def __init__(self, check: _HandshakeCheck, inner: TraceHook | None) -> None:
        self.check = check
        self.inner = inner

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        problem = _problem_at(self.check, event, info)
        if problem is not None:
            # httpcore drops a stream whose setup raised without closing it.
            info["return_value"].close()
            raise InsecureRequestError(problem[1], reason=problem[0])
        if self.inner is not None:
            self.inner(event, info)


class _AsyncTrace:
    def __init__(self, check: _HandshakeCheck, inner: AsyncTraceHook | None) -> None:
        self.check = check
        self.inner = inner

    async def __call__(self, event: str, info: dict[str, Any]) -> None:
        problem = _problem_at(self.check, event, info)
        if problem is not None:
            await info["return_value"].aclose()
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


def _resolve_context(
    policy: TLSPolicy, kwargs: dict[str, Any]
) -> tuple[ssl.SSLContext, ssl.SSLContext | None]:
    """The private context every handshake of a new client uses, and the caller's
    ``verify=`` context it was copied from (None when the policy's own is used)."""
    for name in ("transport", "mounts", "app"):
        if kwargs.get(name) is not None:
            raise TypeError(
                f"secure clients build their own transports; {name}= would bypass the policy"
            )
    verify = kwargs.pop("verify", True)
    source: ssl.SSLContext | None = None
    if verify is True:
        context = create_ssl_context(policy)
    elif isinstance(verify, ssl.SSLContext):
        check_ssl_context(verify, policy)
        context, source = private_copy(verify, policy), verify
    elif verify is False:
        raise InsecureTransportError(
            "verify=False is refused: certificates are always verified",
            reason="verification-disabled",
        )
    else:
        raise TypeError(
            "verify must be True or an ssl.SSLContext at least as strict as the policy; "
            "to trust a private CA use TLSPolicy(ca_file=...) or TLSPolicy(ca_data=...)"
        )
    cert = kwargs.pop("cert", None)
    if cert is not None:
        _load_client_certificate(context, cert)
    context.sslsocket_class = DeadlineSSLSocket
    # httpcore's own choice for this client, set before any connection (see _ClientContext).
    context.set_alpn_protocols(["http/1.1", "h2"] if kwargs.get("http2") else ["http/1.1"])
    return context, source


def _load_client_certificate(context: ssl.SSLContext, cert: object) -> None:
    """httpx's ``cert=`` forms: a PEM file with key and certificate, or (certfile, keyfile)
    or (certfile, keyfile, password)."""
    if isinstance(cert, str):
        context.load_cert_chain(cert)
    elif isinstance(cert, tuple) and len(cert) in (2, 3):
        context.load_cert_chain(*cert)
    else:
        raise TypeError("cert must be a path, (certfile, keyfile) or (certfile, keyfile, password)")


def _is_guarded(transport: object) -> bool:
    return transport is None or isinstance(transport, (_GuardedTransport, _AsyncGuardedTransport))


def secure_client(policy: TLSPolicy | None = None, **httpx_kwargs: Any) -> httpx.Client:
    """An ``httpx.Client`` that only speaks TLS under ``policy`` (default ``TLSPolicy()``).

    Every other keyword goes to ``httpx.Client`` unchanged: timeouts, limits, event hooks,
    ``http2=True`` (with ``h2`` installed), ``proxy=`` and environment proxies (https
    requests travel through a CONNECT tunnel, so TLS and the pins stay end to end), auth,
    headers. ``verify`` may only be ``True`` or an ``ssl.SSLContext`` at least as strict as
    the policy in every property :func:`check_ssl_context` compares. Such a context is
    copied, once, into a private context that every handshake uses (trust anchors and
    stricter settings carry over); it is checked again before every handshake, so a change
    that weakens it later refuses the connection before a request byte is sent, and no change
    to it reaches a handshake. A client certificate cannot be copied out of a context: give
    it as ``cert="client.pem"`` or ``cert=(certfile, keyfile[, password])``.
    ``transport=`` and ``mounts=`` are refused: they would bypass the checks.

    Raises :class:`InsecureRequestError` (an :class:`envelope.InsecureTransportError`) for
    each refusal; see the module docstring of ``envelope.transport`` for the list.
    """
    policy = TLSPolicy() if policy is None else policy
    context, source = _resolve_context(policy, httpx_kwargs)
    client = httpx.Client(verify=context, **httpx_kwargs)
    check = _HandshakeCheck(policy, context, source)
    # httpx builds the default and the proxy transports from the same arguments; wrapping
    # what it built keeps all of that (limits, http2, proxies from the environment) intact.
    wrap_httpx_client_transports(client, lambda inner: _GuardedTransport(inner, check))
    return client


def secure_async_client(policy: TLSPolicy | None = None, **httpx_kwargs: Any) -> httpx.AsyncClient:
    """The ``httpx.AsyncClient`` twin of :func:`secure_client`, with the same rules."""
    policy = TLSPolicy() if policy is None else policy
    context, source = _resolve_context(policy, httpx_kwargs)
    client = httpx.AsyncClient(verify=context, **httpx_kwargs)
    check = _HandshakeCheck(policy, context, source)
    wrap_httpx_client_transports(client, lambda inner: _AsyncGuardedTransport(inner, check))
    return client


def is_secure_client(client: httpx.Client | httpx.AsyncClient) -> bool:
    """Whether ``client`` was built by :func:`secure_client` / :func:`secure_async_client`,
    still routes every request through the policy checks, and the ``verify=`` context it was
    given is still as strict as the policy (weakening it after construction makes this
    False, and the client refuses every new connection)."""
    transport = httpx_client_transport(client)
    return (
        isinstance(transport, (_GuardedTransport, _AsyncGuardedTransport))
        and transport._check.context_problem() is None
        and all(_is_guarded(mounted) for mounted in httpx_client_mounted_transports(client))
    )
