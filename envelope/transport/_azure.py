"""azure-core transports over the secure httpx clients.

azure-core 1.41 ships no httpx transport, and the experimental one never reads non-stream
bodies in its async form. These two are small: build an httpx request from the azure-core
one, send it through a secure client, wrap the response, and translate httpx exceptions in
one place so azure-core's retry policy sees the errors it knows. Policy refusals are not
translated: an :class:`envelope.InsecureTransportError` is not an ``AzureError``, so the
pipeline neither retries nor rewraps it.

Time and size are bounded per attempt, whatever the server does:

* an attempt (connecting, the request, and the reply's headers, and its whole body unless
  it is streamed) ends within the read timeout, by the wall clock: httpx's timeouts bound
  each read, so a server sending a byte at a time could otherwise hold it for ever;
* inside a ``with deadline(...)`` block (``envelope.transport._deadline``) no attempt
  starts, and no retry waits, past the block's end: :class:`DeadlineExceeded` instead;
* with ``max_response_bytes``, a larger reply is refused: by its Content-Length before
  the body is read, or once that many bytes have arrived (chunked replies), and a
  compressed reply is refused outright (identity encoding is asked for), since a few KiB
  of gzip can inflate to gigabytes in one read.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import anyio
import httpx
from azure.core.exceptions import (
    DecodeError,
    HttpResponseError,
    IncompleteReadError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.core.pipeline.transport import AsyncHttpTransport, HttpTransport
from azure.core.rest import HttpRequest
from azure.core.utils import CaseInsensitiveDict

from .._compat import AsyncHttpResponseImpl, HttpResponseImpl, mark_azure_response_closed
from .._errors import InsecureTransportError
from ._deadline import DeadlineExceeded, deadline, remaining
from ._httpx import is_secure_client, secure_async_client, secure_client
from ._policy import TLSPolicy

__all__ = [
    "AsyncSecureTransport",
    "SecureTransport",
    "close_shielded",
    "send_through",
    "send_through_async",
]

_BLOCK_SIZE = 64 * 1024


@contextlib.contextmanager
def _azure_errors() -> Iterator[None]:
    """The one place httpx errors become azure-core errors."""
    try:
        yield
    except InsecureTransportError:
        raise
    except (httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        raise ServiceRequestTimeoutError(str(exc), error=exc) from exc
    except httpx.ConnectError as exc:
        raise ServiceRequestError(str(exc), error=exc) from exc
    except (httpx.ReadTimeout, httpx.WriteTimeout) as exc:
        raise ServiceResponseTimeoutError(str(exc), error=exc) from exc
    except httpx.DecodingError as exc:
        raise DecodeError(str(exc), error=exc) from exc
    except httpx.RemoteProtocolError as exc:
        if "incomplete" in str(exc).lower():
            raise IncompleteReadError(str(exc), error=exc) from exc
        raise ServiceResponseError(str(exc), error=exc) from exc
    except httpx.TransportError as exc:
        raise ServiceResponseError(str(exc), error=exc) from exc


def _send_options(
    client: httpx.Client | httpx.AsyncClient, kwargs: dict[str, Any]
) -> tuple[bool, httpx.Timeout]:
    """Apply azure-core's per-request keywords; refuse the ones that would weaken TLS."""
    stream = bool(kwargs.pop("stream", False))
    verify = kwargs.pop("connection_verify", None)
    if verify is False:
        raise InsecureTransportError(
            "connection_verify=False is refused: certificates are always verified",
            reason="verification-disabled",
        )
    if verify not in (None, True):
        raise ValueError(
            "connection_verify cannot change trust per request; put the CA in the TLSPolicy"
        )
    if kwargs.pop("connection_cert", None) is not None:
        raise ValueError(
            "connection_cert is not supported per request; give the client certificate to "
            "secure_client(policy, cert=...) and pass that client to the transport"
        )
    if kwargs.pop("proxies", None):
        raise ValueError("proxies are configured on the httpx client (proxy= or environment)")
    timeout = client.timeout
    connect = kwargs.pop("connection_timeout", None)
    read = kwargs.pop("read_timeout", None)
    if connect is not None or read is not None:
        timeout = httpx.Timeout(
            connect=timeout.connect if connect is None else connect,
            read=timeout.read if read is None else read,
            write=timeout.write,
            pool=timeout.pool,
        )
    # Whatever else azure-core forwards (there is normally nothing) has no httpx meaning.
    return stream, timeout


def _attempt_limit(timeout: httpx.Timeout) -> float | None:
    """Seconds this attempt may take by the wall clock: the read timeout, or what is left
    of the enclosing deadline if that is less. None when neither applies."""
    left = remaining()
    if left is not None and left <= 0:
        raise DeadlineExceeded("the deadline passed before the attempt started")
    limits = [limit for limit in (timeout.read, left) if limit is not None]
    return min(limits) if limits else None


def _within(timeout: httpx.Timeout, limit: float | None) -> httpx.Timeout:
    """``timeout`` with no operation allowed longer than the whole attempt."""
    if limit is None:
        return timeout

    def bounded(value: float | None) -> float:
        return limit if value is None else min(value, limit)

    return httpx.Timeout(
        connect=bounded(timeout.connect),
        read=bounded(timeout.read),
        write=bounded(timeout.write),
        pool=bounded(timeout.pool),
    )


def _sleep_allowed(duration: float) -> None:
    """Refuse to wait past the deadline: the attempt after the wait could not finish."""
    left = remaining()
    if left is not None and duration >= left:
        raise DeadlineExceeded(
            f"the next attempt would start after a {duration:g} s wait (the server's "
            f"Retry-After or the backoff), past the deadline {max(left, 0):.1f} s away"
        )


def _attempt_timed_out(limit: float | None) -> ServiceResponseTimeoutError:
    return ServiceResponseTimeoutError(f"no complete reply within {limit:g} s")


def _build_request(
    client: httpx.Client | httpx.AsyncClient,
    request: Any,
    timeout: httpx.Timeout,
    max_response_bytes: int | None,
) -> httpx.Request:
    # Both azure-core request types (azure.core.rest and the legacy pipeline one) expose the
    # body as .data (bytes, str, a form dict, a stream) and multipart parts as .files.
    data = request.data
    files = request.files
    body: dict[str, Any] = {}
    if files:
        body["files"] = files
        if isinstance(data, dict):
            body["data"] = data
    elif isinstance(data, dict):
        body["data"] = data
    elif data is not None:
        body["content"] = data
    headers = dict(request.headers)
    if max_response_bytes is not None:
        # A capped reply must not be compressed: the cap counts what arrives.
        headers["Accept-Encoding"] = "identity"
    return client.build_request(
        request.method, request.url, headers=headers, timeout=timeout, **body
    )


def _check_reply_size(response: httpx.Response, max_response_bytes: int | None) -> None:
    """Refuse, before reading it, a reply that announces more than the cap or is encoded."""
    if max_response_bytes is None:
        return
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise _too_large(response, f"the reply is compressed ({encoding}); identity was asked")
    length = response.headers.get("content-length")
    if length is not None and int(length) > max_response_bytes:
        raise _too_large(
            response, f"the reply announces {length} bytes, over the {max_response_bytes} allowed"
        )


def _too_large(response: httpx.Response, message: str) -> HttpResponseError:
    return HttpResponseError(message=f"{message}: {response.request.url.host}")


class _ReplyBudget:
    """Counts the bytes of a capped reply as they arrive."""

    def __init__(self, response: httpx.Response, limit: int | None) -> None:
        self._response = response
        self._limit = limit
        self._seen = 0

    def count(self, chunk: bytes) -> bytes:
        self._seen += len(chunk)
        if self._limit is not None and self._seen > self._limit:
            raise _too_large(
                self._response, f"the reply is larger than the {self._limit} bytes allowed"
            )
        return chunk


def _announced_length(response: httpx.Response) -> int:
    """The reply's Content-Length, 0 when it announces none (or nothing a number)."""
    value = response.headers.get("content-length", "")
    return int(value) if value.isdigit() else 0


def _headers(response: httpx.Response) -> CaseInsensitiveDict:
    return CaseInsensitiveDict(response.headers.items())


class _StreamDownload:
    def __init__(
        self, pipeline: Any, response: _SecureTransportResponse, *, decompress: bool = True
    ) -> None:
        self.pipeline = pipeline
        self.response = response
        internal: httpx.Response = response.internal_response
        self._chunks = (
            internal.iter_bytes(_BLOCK_SIZE) if decompress else internal.iter_raw(_BLOCK_SIZE)
        )
        self._budget = _ReplyBudget(internal, response.max_bytes)
        # What azure-core's own download generators expose, and azure-storage-blob reads.
        self.content_length = _announced_length(internal)

    def __len__(self) -> int:
        return self.content_length

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        internal: httpx.Response = self.response.internal_response
        try:
            with _azure_errors():
                return self._budget.count(next(self._chunks))
        except BaseException:
            internal.close()
            raise


class _AsyncStreamDownload:
    def __init__(
        self, pipeline: Any, response: _AsyncSecureTransportResponse, *, decompress: bool = True
    ) -> None:
        self.pipeline = pipeline
        self.response = response
        internal: httpx.Response = response.internal_response
        self._chunks = (
            internal.aiter_bytes(_BLOCK_SIZE) if decompress else internal.aiter_raw(_BLOCK_SIZE)
        )
        self._budget = _ReplyBudget(internal, response.max_bytes)
        self.content_length = _announced_length(internal)

    def __len__(self) -> int:
        return self.content_length

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        internal: httpx.Response = self.response.internal_response
        try:
            with _azure_errors():
                return self._budget.count(await self._chunks.__anext__())
        except BaseException:
            with anyio.CancelScope(shield=True):
                await internal.aclose()
            raise


class _SecureTransportResponse(HttpResponseImpl):
    def __init__(self, request: Any, internal: httpx.Response, max_bytes: int | None) -> None:
        self.max_bytes = max_bytes
        super().__init__(
            request=request,
            internal_response=internal,
            block_size=_BLOCK_SIZE,
            status_code=internal.status_code,
            reason=internal.reason_phrase,
            content_type=internal.headers.get("content-type"),
            headers=_headers(internal),
            stream_download_generator=_StreamDownload,
        )


class _AsyncSecureTransportResponse(AsyncHttpResponseImpl):
    def __init__(self, request: Any, internal: httpx.Response, max_bytes: int | None) -> None:
        self.max_bytes = max_bytes
        super().__init__(
            request=request,
            internal_response=internal,
            block_size=_BLOCK_SIZE,
            status_code=internal.status_code,
            reason=internal.reason_phrase,
            content_type=internal.headers.get("content-type"),
            headers=_headers(internal),
            stream_download_generator=_AsyncStreamDownload,
        )

    async def close(self) -> None:
        # The base class awaits internal_response.close(), which httpx reserves for sync.
        if not self.is_closed:
            mark_azure_response_closed(self)
            await self.internal_response.aclose()


def _checked_client(client: httpx.Client | httpx.AsyncClient, policy: TLSPolicy | None) -> None:
    if policy is not None:
        raise ValueError("give a policy or a client built from one, not both")
    if not is_secure_client(client):
        raise InsecureTransportError(
            "the client was not built by secure_client()/secure_async_client()",
            reason="verification-disabled",
        )


def _own_options(client: object, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The keywords of the client a transport builds itself (``secure_client`` refuses any
    that would weaken or bypass the policy)."""
    if not options:
        return {}
    if client is not None:
        raise ValueError("give client_options= or a client built with them, not both")
    return dict(options)


def _check_limit(max_response_bytes: int | None) -> None:
    if max_response_bytes is not None and (
        not isinstance(max_response_bytes, int) or max_response_bytes <= 0
    ):
        raise ValueError("max_response_bytes must be a positive integer or None")


class SecureTransport(HttpTransport):  # type: ignore[type-arg]
    """An azure-core ``HttpTransport`` that sends through :func:`secure_client`.

    Pass it as ``transport=`` to ``KeyClient``, ``CryptographyClient`` or an azure-identity
    credential. With ``client=`` (built by :func:`secure_client`, e.g. for timeouts or a
    proxy) the caller keeps ownership and closes it; otherwise the transport owns its client.
    Per-request ``connection_verify=False`` is refused; ``connection_timeout`` and
    ``read_timeout`` are honoured, the read timeout as a wall-clock bound on the whole
    attempt (a reply trickled a byte at a time cannot stretch it). ``client_options`` are
    keywords of the client the transport builds itself (``timeout``, ``limits`` ...), as
    :func:`secure_client` takes them. ``max_response_bytes``
    caps a reply's body (see the module docstring); a larger one is an
    ``azure.core.exceptions.HttpResponseError``.
    """

    def __init__(
        self,
        policy: TLSPolicy | None = None,
        *,
        client: httpx.Client | None = None,
        max_response_bytes: int | None = None,
        client_options: Mapping[str, Any] | None = None,
    ):
        if client is not None:
            _checked_client(client, policy)
        _check_limit(max_response_bytes)
        self._policy = policy
        self._client_options = _own_options(client, client_options)
        self._owns_client = client is None
        self._client = secure_client(policy, **self._client_options) if client is None else client
        self._max_response_bytes = max_response_bytes

    def open(self) -> None:
        # azure-core reopens a transport after close() when a client is used again.
        if self._owns_client and self._client.is_closed:
            self._client = secure_client(self._policy, **self._client_options)

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> SecureTransport:
        self.open()
        return self

    # azure-identity closes its pipelines with a bare ``__exit__()``: accept both forms.
    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def sleep(self, duration: float) -> None:
        _sleep_allowed(duration)
        time.sleep(duration)

    def send(self, request: HttpRequest, **kwargs: Any) -> _SecureTransportResponse:
        self.open()
        return send_through(self._client, request, kwargs, self._max_response_bytes)


class AsyncSecureTransport(AsyncHttpTransport):  # type: ignore[type-arg]
    """The ``AsyncHttpTransport`` twin of :class:`SecureTransport`, over
    :func:`secure_async_client`; works under asyncio and trio (sleeps through anyio)."""

    def __init__(
        self,
        policy: TLSPolicy | None = None,
        *,
        client: httpx.AsyncClient | None = None,
        max_response_bytes: int | None = None,
        client_options: Mapping[str, Any] | None = None,
    ):
        if client is not None:
            _checked_client(client, policy)
        _check_limit(max_response_bytes)
        self._policy = policy
        self._client_options = _own_options(client, client_options)
        self._owns_client = client is None
        self._client = (
            secure_async_client(policy, **self._client_options) if client is None else client
        )
        self._max_response_bytes = max_response_bytes

    async def open(self) -> None:
        if self._owns_client and self._client.is_closed:
            self._client = secure_async_client(self._policy, **self._client_options)

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> AsyncSecureTransport:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def sleep(self, duration: float) -> None:
        _sleep_allowed(duration)
        await anyio.sleep(duration)

    async def send(self, request: HttpRequest, **kwargs: Any) -> _AsyncSecureTransportResponse:
        await self.open()
        return await send_through_async(self._client, request, kwargs, self._max_response_bytes)


def send_through(
    client: httpx.Client, request: HttpRequest, kwargs: dict[str, Any], max_bytes: int | None
) -> _SecureTransportResponse:
    """One attempt of an azure-core request through an httpx client built here (the secure
    client, or the managed-identity one of ``_identity``), bounded in time and size."""
    stream, timeout = _send_options(client, kwargs)
    limit = _attempt_limit(timeout)
    outgoing = _build_request(client, request, _within(timeout, limit), max_bytes)
    # The sockets of the clients built here end every operation by this deadline.
    with deadline(math.inf if limit is None else limit):
        with _azure_errors():
            internal = client.send(outgoing, stream=True, follow_redirects=False)
        response = _SecureTransportResponse(request, internal, max_bytes)
        try:
            _check_reply_size(internal, max_bytes)
            if not stream:
                # azure-core's non-stream contract: the body is loaded, the connection freed.
                response.read()
        except BaseException:
            response.close()
            raise
    return response


async def send_through_async(
    client: httpx.AsyncClient, request: HttpRequest, kwargs: dict[str, Any], max_bytes: int | None
) -> _AsyncSecureTransportResponse:
    """The asyncio twin of :func:`send_through`."""
    stream, timeout = _send_options(client, kwargs)
    limit = _attempt_limit(timeout)
    outgoing = _build_request(client, request, _within(timeout, limit), max_bytes)
    response = None
    with anyio.move_on_after(math.inf if limit is None else limit) as attempt:
        with _azure_errors():
            internal = await client.send(outgoing, stream=True, follow_redirects=False)
        response = _AsyncSecureTransportResponse(request, internal, max_bytes)
        try:
            _check_reply_size(internal, max_bytes)
            if not stream:
                await response.read()
        except BaseException:
            await close_shielded(response)
            raise
    if attempt.cancelled_caught:
        if response is not None:
            await close_shielded(response)
        raise _attempt_timed_out(limit)
    assert response is not None
    return response


async def close_shielded(response: _AsyncSecureTransportResponse) -> None:
    # Also when the attempt's time is up: a connection is never left half-read.
    with anyio.CancelScope(shield=True):
        await response.close()
