"""Loopback servers for the transport tests: real TLS (trustme certificates), real sockets,
and a record of every byte each server received so a test can prove what never left."""

from __future__ import annotations

import contextlib
import datetime
import http.server
import io
import ipaddress
import pathlib
import select
import socket
import socketserver
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

LOOPBACK = "127.0.0.1"
HANDLER_TIMEOUT = 5.0


@dataclass
class Recorded:
    """What one server saw: raw bytes per connection and parsed requests."""

    raw: list[bytes] = field(default_factory=list)
    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def all_bytes(self) -> bytes:
        with self.lock:
            return b"".join(self.raw)


class _TeeReader(io.RawIOBase):
    """Reads from the connection's buffered reader and keeps a copy of every byte."""

    def __init__(self, inner: io.BufferedIOBase, sink: bytearray) -> None:
        self._inner = inner
        self._sink = sink

    def readable(self) -> bool:
        return True

    def readline(self, size: int | None = -1) -> bytes:
        data = self._inner.readline(-1 if size is None else size)
        self._sink += data
        return data

    def read(self, size: int | None = -1) -> bytes:
        data = self._inner.read(-1 if size is None else size)
        self._sink += data
        return data

    def close(self) -> None:
        self._inner.close()
        super().close()


#: A reply body: bytes, sent with a Content-Length; or chunks, streamed as they come (the
#: server flushes each one, so a generator that sleeps between chunks trickles), with
#: chunked transfer encoding unless the headers give a Content-Length. With status ``RAW``
#: the chunks are the whole reply, status line and headers included.
Body = bytes | Iterable[bytes]
Responder = Callable[[http.server.BaseHTTPRequestHandler, bytes], tuple[int, dict[str, str], Body]]
RAW = 0


def ok_responder(
    handler: http.server.BaseHTTPRequestHandler, body: bytes
) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "text/plain"}, b"hello over tls"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = HANDLER_TIMEOUT
    server: _Server

    def setup(self) -> None:
        super().setup()
        self._sink = bytearray()
        self.rfile = _TeeReader(self.rfile, self._sink)  # type: ignore[assignment]

    def finish(self) -> None:
        with self.server.recorded.lock:
            self.server.recorded.raw.append(bytes(self._sink))
        super().finish()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {key.lower(): value for key, value in self.headers.items()}
        with self.server.recorded.lock:
            self.server.recorded.requests.append((self.command, self.path, headers, body))
        status, reply_headers, reply = self.server.responder(self, body)
        if isinstance(reply, bytes):
            self.send_response(status)
            for key, value in reply_headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply)
            return
        self._stream(status, reply_headers, reply)

    def _stream(self, status: int, headers: dict[str, str], chunks: Iterable[bytes]) -> None:
        chunked = status != RAW and "content-length" not in {key.lower() for key in headers}
        if status != RAW:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
        # Until the client hangs up: the point of a streamed reply is usually that it does.
        self.close_connection = True
        with contextlib.suppress(OSError):
            for chunk in chunks:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                self.wfile.flush()
            if chunked:
                self.wfile.write(b"0\r\n\r\n")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the tests assert on ``recorded`` instead."""


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = False
    block_on_close = True
    allow_reuse_address = False
    # socketserver's default backlog is 5: more clients connecting at once than that could be
    # refused or stalled by the test server itself, not by what a test exercises.
    request_queue_size = 128

    def __init__(
        self, context: ssl.SSLContext | None, responder: Responder, recorded: Recorded
    ) -> None:
        self.context = context
        self.responder = responder
        self.recorded = recorded
        super().__init__((LOOPBACK, 0), _Handler)

    def finish_request(self, request, client_address) -> None:
        if self.context is None:
            super().finish_request(request, client_address)
            return
        # The handshake runs here, in the worker thread, so a stalled client cannot block
        # the accept loop.
        request.settimeout(HANDLER_TIMEOUT)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            # The client refused us (the point of most tests): record an empty connection
            # so that "nothing was received" can be asserted.
            with self.recorded.lock:
                self.recorded.raw.append(b"")
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            # wrap_socket moved the descriptor into ``tls``; shutdown_request only closes
            # the original, now empty, socket object.
            tls.close()

    def handle_error(self, request, client_address) -> None:
        """Client aborts are expected here; the tests assert on ``recorded``."""


@dataclass
class RunningServer:
    host: str
    port: int
    recorded: Recorded

    def url(self, path: str = "/", *, host: str | None = None, scheme: str = "https") -> str:
        return f"{scheme}://{host or self.host}:{self.port}{path}"


@contextmanager
def serve(
    context: ssl.SSLContext | None, responder: Responder = ok_responder
) -> Iterator[RunningServer]:
    """Run an HTTP(S) server on 127.0.0.1 in a thread; join it and its workers on exit."""
    recorded = Recorded()
    server = _Server(context, responder, recorded)
    with _running(server):
        yield RunningServer(LOOPBACK, server.server_address[1], recorded)


@contextmanager
def _running(server: socketserver.TCPServer) -> Iterator[None]:
    """Serve in a thread; on exit stop, then serve what is still queued, then close, which
    joins the workers."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        thread.join(timeout=10)
        _drain(server)
        server.server_close()


def _drain(server: socketserver.TCPServer) -> None:
    """Serve whatever is still in the accept queue, so that a connection the client made
    (and perhaps dropped) just before the test ended is recorded too, not lost on close."""
    server.socket.setblocking(False)
    while True:
        try:
            request, client_address = server.socket.accept()
        except BlockingIOError:
            return
        request.setblocking(True)
        if server.verify_request(request, client_address):
            server.process_request(request, client_address)


@contextmanager
def silent_listener() -> Iterator[tuple[int, Callable[[], bool]]]:
    """A listening socket nobody serves. Yields the port and a function that says whether
    any client has connected (a pending accept) so far."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((LOOPBACK, 0))
        sock.listen(8)

        def connected() -> bool:
            readable, _, _ = select.select([sock], [], [], 0.05)
            return bool(readable)

        yield sock.getsockname()[1], connected
    finally:
        sock.close()


def server_context(
    cert: trustme.LeafCert,
    *,
    minimum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
    maximum: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
    ciphers: str | None = None,
) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = minimum
    context.maximum_version = maximum
    if ciphers is not None:
        context.set_ciphers(ciphers)
    cert.configure_cert(context)
    return context


def self_signed_pem(host: str = "localhost") -> tuple[bytes, bytes]:
    """A self-signed certificate and key for ``host`` (nothing trusts it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert_pem, key_pem


@dataclass(frozen=True)
class Certificates:
    """Everything the transport tests serve, issued once per session."""

    ca: trustme.CA
    good: trustme.LeafCert  # localhost and 127.0.0.1, ECDSA
    good_rsa: trustme.LeafCert  # for the RSA-key-exchange suites
    other_ca: trustme.LeafCert  # right names, a CA the client does not trust
    expired: trustme.LeafCert  # right names and CA, validity ended yesterday
    wrong_host: trustme.LeafCert  # right CA, names that are not 127.0.0.1

    @property
    def ca_pem(self) -> bytes:
        return self.ca.cert_pem.bytes()

    def pin(self, leaf: trustme.LeafCert) -> str:
        from envelope.transport import spki_pin

        return spki_pin(leaf.cert_chain_pems[0].bytes())


def issue_certificates() -> Certificates:
    ca = trustme.CA()
    now = datetime.datetime.now(datetime.timezone.utc)
    return Certificates(
        ca=ca,
        good=ca.issue_cert("localhost", LOOPBACK),
        good_rsa=ca.issue_cert("localhost", LOOPBACK, key_type=trustme.KeyType.RSA),
        other_ca=trustme.CA().issue_cert("localhost", LOOPBACK),
        expired=ca.issue_cert(
            "localhost",
            LOOPBACK,
            not_before=now - datetime.timedelta(days=10),
            not_after=now - datetime.timedelta(days=1),
        ),
        wrong_host=ca.issue_cert("vault.example.test"),
    )


def _relay(first: socket.socket, second: socket.socket) -> None:
    """Copy bytes both ways until either side closes or both are idle for
    ``HANDLER_TIMEOUT``."""
    peers = {first: second, second: first}
    while True:
        readable, _, _ = select.select(list(peers), [], [], HANDLER_TIMEOUT)
        if not readable:
            return
        for sock in readable:
            data = sock.recv(65536)
            if not data:
                return
            peers[sock].sendall(data)


class _TunnelHandler(socketserver.BaseRequestHandler):
    server: _TunnelServer

    def handle(self) -> None:
        client = self.request
        client.settimeout(HANDLER_TIMEOUT)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk:
                return
            head += chunk
        request_line = head.split(b"\r\n", 1)[0].decode("ascii")
        method, target, _ = request_line.split(" ", 2)
        host, _, port = target.rpartition(":")
        with self.server.lock:
            self.server.connects.append(request_line)
        if method != "CONNECT" or host != LOOPBACK:
            client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        with socket.create_connection((host, int(port)), timeout=HANDLER_TIMEOUT) as upstream:
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            _relay(client, upstream)


class _TunnelServer(socketserver.ThreadingTCPServer):
    daemon_threads = False
    block_on_close = True

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connects: list[str] = []
        super().__init__((LOOPBACK, 0), _TunnelHandler)


@contextmanager
def connect_proxy() -> Iterator[tuple[str, list[str]]]:
    """A CONNECT-only HTTP proxy that tunnels to 127.0.0.1; yields its URL and the CONNECT
    request lines it saw."""
    server = _TunnelServer()
    with _running(server):
        yield f"http://{LOOPBACK}:{server.server_address[1]}", server.connects


@dataclass
class ProxyLog:
    """What a forward proxy saw: connections accepted, the raw bytes of each, and the
    request lines (``GET http://host/path HTTP/1.1``, ``CONNECT host:port HTTP/1.1``)."""

    connections: int = 0
    raw: list[bytes] = field(default_factory=list)
    request_lines: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def nothing(self) -> bool:
        with self.lock:
            return self.connections == 0 and not self.raw and not self.request_lines


class _ForwardHandler(socketserver.BaseRequestHandler):
    server: _ForwardServer

    def handle(self) -> None:
        log = self.server.log
        client = self.request
        client.settimeout(HANDLER_TIMEOUT)
        head = b""
        try:
            while b"\r\n\r\n" not in head:
                chunk = client.recv(4096)
                if not chunk:
                    break
                head += chunk
        finally:
            with log.lock:
                log.raw.append(head)
        if b"\r\n\r\n" not in head:
            return
        request_line, _, rest = head.partition(b"\r\n")
        with log.lock:
            log.request_lines.append(request_line.decode("latin-1"))
        method, target, version = request_line.decode("latin-1").split(" ", 2)
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            if host != LOOPBACK:
                client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            with socket.create_connection((host, int(port)), HANDLER_TIMEOUT) as upstream:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                _relay(client, upstream)
            return
        parsed = urllib.parse.urlsplit(target)
        if parsed.hostname != LOOPBACK or parsed.port is None:
            # Where a real proxy would go on to the internet in plaintext: answer, so a
            # leak shows up as a success rather than as an error.
            client.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nleaked!"
            )
            return
        # Forward to a loopback origin in origin-form, one request per connection.
        path = parsed.path or "/"
        if parsed.query:
            path += f"?{parsed.query}"
        headers = [
            line
            for line in rest.split(b"\r\n")
            if line and not line.lower().startswith((b"connection:", b"proxy-"))
        ]
        forwarded = b"\r\n".join(
            [f"{method} {path} {version}".encode("latin-1"), *headers, b"Connection: close"]
        )
        with socket.create_connection((LOOPBACK, parsed.port), HANDLER_TIMEOUT) as upstream:
            upstream.sendall(forwarded + b"\r\n\r\n")
            while data := upstream.recv(65536):
                client.sendall(data)


class _ForwardServer(socketserver.ThreadingTCPServer):
    daemon_threads = False
    block_on_close = True

    def __init__(self) -> None:
        self.log = ProxyLog()
        super().__init__((LOOPBACK, 0), _ForwardHandler)

    def verify_request(self, request, client_address) -> bool:
        with self.log.lock:
            self.log.connections += 1
        return True

    def handle_error(self, request, client_address) -> None:
        """Client aborts are expected here; the tests assert on ``log``."""


@contextmanager
def forward_proxy() -> Iterator[tuple[str, ProxyLog]]:
    """A plaintext forward proxy on 127.0.0.1: it records everything, forwards absolute-form
    ``http://127.0.0.1:port/...`` requests and tunnels ``CONNECT 127.0.0.1:port``, and
    answers any other host itself (a real proxy would go there in plaintext). Yields its URL
    and its log, complete once the block has exited."""
    server = _ForwardServer()
    with _running(server):
        yield f"http://{LOOPBACK}:{server.server_address[1]}", server.log


def weak_rsa_leaf(ca: trustme.CA, host: str = LOOPBACK, bits: int = 1024) -> tuple[bytes, bytes]:
    """A leaf certificate for ``host`` with an RSA key of ``bits`` bits, signed by ``ca`` (which
    trustme issues with 2048 bits at least): PEM certificate and PEM key."""
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    now = datetime.datetime.now(datetime.timezone.utc)
    names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(host))]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return (
        certificate.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def pem_server_context(
    directory: pathlib.Path, cert_pem: bytes, key_pem: bytes, *, security_level: int | None = None
) -> ssl.SSLContext:
    """A server context for a PEM certificate and key (written to ``directory``), optionally
    at a lower OpenSSL security level, so that it can serve a weak key at all."""
    (directory / "server-cert.pem").write_bytes(cert_pem)
    (directory / "server-key.pem").write_bytes(key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if security_level is not None:
        context.set_ciphers(f"DEFAULT:@SECLEVEL={security_level}")
    context.load_cert_chain(directory / "server-cert.pem", directory / "server-key.pem")
    return context
