"""HTTP/1.1 over TLS on loopback: stdlib ``ThreadingHTTPServer``, one thread per connection."""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from ._errors import VaultError
from ._http import Request, Response, json_response

if TYPE_CHECKING:
    import ssl

    from ._service import Service

__all__ = ["TLSServer"]

logger = logging.getLogger("envelope.testing")

MAX_BODY_BYTES = 1024 * 1024
# A body up to this size is read and dropped before the 413; a bigger one is not read at all.
MAX_DRAIN_BYTES = 8 * 1024 * 1024
_PHRASES = frozenset(status.value for status in HTTPStatus)
# Connections waiting to be accepted: a burst of clients must not be refused.
LISTEN_BACKLOG = 1024
HANDSHAKE_TIMEOUT = 10.0
# Idle keep-alive connections are closed after this; close() does not wait for it.
IDLE_TIMEOUT = 30.0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "envelope-local-keyvault"
    sys_version = ""
    # Garbage request lines are answered with a status line and a JSON body, not HTTP/0.9.
    default_request_version = "HTTP/1.1"
    server: TLSServer

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PATCH = do_DELETE = do_PUT = do_HEAD = do_OPTIONS = do_GET

    def _serve(self) -> None:
        body, error = self._read_body()
        if error is not None:
            self.close_connection = True
            self._send(error, close=True)
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        request = Request(self.command, self.path, headers, body)
        response = self.server.service.handle(request)
        if response.drop:
            self.close_connection = True
            # A zero linger makes the close a reset, as from a crashed frontend: the client
            # gets a connection error and no HTTP response at all.
            with contextlib.suppress(OSError):
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            return
        self._send(response)

    def _read_body(self) -> tuple[bytes, Response | None]:
        if self.headers.get("Transfer-Encoding"):
            return b"", json_response(
                411, VaultError(411, "LengthRequired", "Send a Content-Length.").body()
            )
        raw = self.headers.get("Content-Length", "0").strip() or "0"
        if not (raw.isascii() and raw.isdigit()):
            return b"", json_response(
                400, VaultError(400, "BadParameter", "Invalid Content-Length.").body()
            )
        length = int(raw) if len(raw) <= 18 else MAX_DRAIN_BYTES + 1
        if length > MAX_BODY_BYTES:
            if length <= MAX_DRAIN_BYTES:
                # Read what the client is sending anyway, so that it gets the 413 reply
                # instead of a connection reset in the middle of its upload.
                self._discard(length)
            return b"", json_response(
                413,
                VaultError(
                    413, "RequestEntityTooLarge", f"The body exceeds {MAX_BODY_BYTES} bytes."
                ).body(),
            )
        body = self.rfile.read(length) if length else b""
        if len(body) != length:
            return b"", Response(400, drop=True)
        return body, None

    def _discard(self, length: int) -> None:
        while length > 0:
            chunk = self.rfile.read(min(length, 64 * 1024))
            if not chunk:
                return
            length -= len(chunk)

    def _send(self, response: Response, *, close: bool = False) -> None:
        self.log_request(response.status)
        phrase = HTTPStatus(response.status).phrase if response.status in _PHRASES else ""
        lines = [f"{self.protocol_version} {response.status} {phrase}"]
        headers = {
            "Server": self.server_version,
            "Date": self.date_time_string(),
            **response.headers,
            "x-ms-request-id": str(uuid.uuid4()),
        }
        if response.status != 204:
            headers["Content-Length"] = str(len(response.body))
        if close:
            headers["Connection"] = "close"
        lines += [f"{name}: {value}" for name, value in headers.items()]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "strict")
        body = response.body if response.status != 204 and self.command != "HEAD" else b""
        # One write: a status line, headers and body in separate segments would each wait
        # for the client's delayed ACK (Nagle), adding ~40 ms to every request.
        self.wfile.write(head + body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The stdlib's own protocol errors, as Key Vault error bodies."""
        self.close_connection = True
        status = HTTPStatus(code)
        error = VaultError(code, status.phrase.replace(" ", ""), message or status.phrase)
        self._send(json_response(code, error.body()), close=True)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)


class TLSServer(ThreadingHTTPServer):
    """Accepts on 127.0.0.1, does the TLS handshake in the connection's own thread."""

    daemon_threads = True
    block_on_close = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, port: int, context: ssl.SSLContext, service: Service) -> None:
        self.context = context
        self.service = service
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        raw: socket.socket = request
        self._track(raw)
        try:
            with contextlib.suppress(OSError):
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            raw.settimeout(HANDSHAKE_TIMEOUT)
            try:
                tls = self.context.wrap_socket(raw, server_side=True)
            except (OSError, ValueError):
                return
        finally:
            self._untrack(raw)
        self._track(tls)
        try:
            tls.settimeout(IDLE_TIMEOUT)
            _Handler(tls, client_address, self)
        except (OSError, ValueError):
            # The peer went away mid-request; nothing to answer.
            pass
        finally:
            self._untrack(tls)
            tls.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("local Key Vault: connection error from %s", client_address, exc_info=True)

    def _track(self, sock: socket.socket) -> None:
        with self._open_lock:
            self._open.add(sock)

    def _untrack(self, sock: socket.socket) -> None:
        with self._open_lock:
            self._open.discard(sock)

    def close_connections(self) -> None:
        """Unblock every connection thread so that ``server_close`` can join them at once."""
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
