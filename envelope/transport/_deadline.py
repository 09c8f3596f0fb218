"""Wall-clock deadlines for the secure transports.

httpx's timeouts bound each network operation, not their sum: a server that sends one byte
just before every read timeout holds a request for as long as it likes. Inside
``with deadline(seconds):`` every read, write and TLS handshake of the secure clients ends
by that time, however the bytes trickle, and the azure-core transports refuse to start an
attempt or to sleep past it.

Sync connections enforce it in the socket: the secure clients' private SSL context makes
``DeadlineSSLSocket`` objects (``SSLContext.sslsocket_class``), which shorten each
operation's timeout to what is left. Asyncio and trio code enforces it with a cancel scope
(``anyio.fail_after(remaining())``) around the awaited work.

Deadlines nest (the earliest applies) and live in a context variable, so threads and
asyncio tasks each see their own.
"""

from __future__ import annotations

import contextlib
import contextvars
import ssl
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["DeadlineExceeded", "DeadlineSSLSocket", "deadline", "remaining"]

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "envelope_transport_deadline", default=None
)


class DeadlineExceeded(TimeoutError):
    """The work of a ``with deadline(...)`` block would run past its end.

    Deliberately not an ``AzureError``: azure-core's retry policy lets it through at once.
    """


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Within the block, the secure transports' network work ends ``seconds`` from now (or
    at an enclosing block's end, if that comes first)."""
    end = time.monotonic() + seconds
    outer = _deadline.get()
    token = _deadline.set(end if outer is None else min(end, outer))
    try:
        yield
    finally:
        _deadline.reset(token)


def remaining() -> float | None:
    """Seconds left before the current deadline (zero or less once it passed); None
    outside any ``with deadline(...)`` block."""
    end = _deadline.get()
    return None if end is None else end - time.monotonic()


class DeadlineSSLSocket(ssl.SSLSocket):
    """An ``ssl.SSLSocket`` whose every operation ends by the current deadline.

    Each handshake, read and write gets the timeout its caller set (httpcore sets one before
    each operation) shortened to the time left; once none is left, the operation raises
    ``TimeoutError`` (``socket.timeout``), which httpcore reports as a read, write or
    connect timeout.
    """

    _requested: float | None = None

    def settimeout(self, value: float | None) -> None:
        self._requested = value
        super().settimeout(value)

    def _bound(self) -> None:
        left = remaining()
        if left is None:
            return
        if left <= 0:
            raise TimeoutError("the deadline passed")
        requested = self._requested
        if requested == 0.0:
            return  # non-blocking: nothing waits
        super().settimeout(left if requested is None else min(requested, left))

    def do_handshake(self, block: bool = False) -> None:
        requested = self._requested
        self._bound()
        try:
            super().do_handshake(block)
        finally:
            # SSLSocket.do_handshake puts back the timeout it found: the shortened one.
            self.settimeout(requested)

    # Every I/O method is bounded itself, not only the ones the others happen to call today.

    def read(self, len: int = 1024, buffer: Any = None) -> Any:
        self._bound()
        return super().read(len, buffer)

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        self._bound()
        return super().recv(buflen, flags)

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        self._bound()
        return super().recv_into(buffer, nbytes, flags)

    def write(self, data: Any) -> int:
        self._bound()
        return super().write(data)

    def send(self, data: Any, flags: int = 0) -> int:
        self._bound()
        return super().send(data, flags)

    def sendall(self, data: Any, flags: int = 0) -> None:
        self._bound()
        super().sendall(data, flags)
