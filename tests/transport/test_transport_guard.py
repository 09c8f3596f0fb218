"""forbid_plaintext: each client library is blocked, an allowed host passes, undo works."""

from __future__ import annotations

import asyncio
import http.client
import ssl
import urllib.parse
import urllib.request
from collections.abc import Callable

import httpx
import pytest
import requests
import urllib3
import urllib3.connection

import envelope
from envelope.transport import _guard, forbid_plaintext
from tests.transport.servers import (
    LOOPBACK,
    ProxyLog,
    forward_proxy,
    issue_certificates,
    serve,
    server_context,
    silent_listener,
)


def _http_client(url: str) -> int:
    parsed = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parsed.hostname or "", parsed.port, timeout=5)
    try:
        connection.request("GET", parsed.path)
        return connection.getresponse().status
    finally:
        connection.close()


def _urllib(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as response:
        return int(response.status)


def _urllib3(url: str) -> int:
    with urllib3.PoolManager(retries=False, timeout=5.0) as pool:
        return pool.request("GET", url).status


def _requests(url: str) -> int:
    with requests.Session() as session:
        return session.get(url, timeout=5).status_code


def _httpx(url: str) -> int:
    with httpx.Client(timeout=5) as client:
        return client.get(url).status_code


def _httpx_async(url: str) -> int:
    async def run() -> int:
        async with httpx.AsyncClient(timeout=5) as client:
            return (await client.get(url)).status_code

    return asyncio.run(run())


LIBRARIES: dict[str, Callable[[str], int]] = {
    "http.client": _http_client,
    "urllib": _urllib,
    "urllib3": _urllib3,
    "requests": _requests,
    "httpx": _httpx,
    "httpx-async": _httpx_async,
}


@pytest.mark.parametrize("library", sorted(LIBRARIES))
def test_each_library_is_blocked_before_connecting(library: str) -> None:
    fetch = LIBRARIES[library]
    with silent_listener() as (port, connected):
        with forbid_plaintext(), pytest.raises(envelope.InsecureTransportError) as excinfo:
            fetch(f"http://127.0.0.1:{port}/")
        assert not connected()
    assert excinfo.value.reason == "plaintext"


@pytest.mark.parametrize("library", sorted(LIBRARIES))
def test_an_allowed_host_passes(library: str) -> None:
    with serve(None) as server, forbid_plaintext(allow_hosts={"127.0.0.1"}):
        assert LIBRARIES[library](server.url("/", scheme="http")) == 200


# --- through a proxy: the target counts, not only the next hop -------------------------------

SECRET = {"Authorization": "Bearer secret-token"}


def _urllib3_via(proxy: str, url: str) -> int:
    with urllib3.ProxyManager(proxy, retries=False, timeout=5.0) as pool:
        return pool.request("GET", url, headers=SECRET).status


def _requests_via(proxy: str, url: str) -> int:
    with requests.Session() as session:
        session.trust_env = False
        proxies = {"http": proxy, "https": proxy}
        return session.get(url, proxies=proxies, headers=SECRET, timeout=5).status_code


def _urllib_via(proxy: str, url: str) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy}))
    with opener.open(urllib.request.Request(url, headers=SECRET), timeout=5) as response:
        return int(response.status)


def _httpx_via(proxy: str, url: str) -> int:
    with httpx.Client(proxy=proxy, trust_env=False, timeout=5) as client:
        return client.get(url, headers=SECRET).status_code


def _http_client_absolute_form_via(proxy: str, url: str) -> int:
    parsed = urllib.parse.urlsplit(proxy)
    connection = http.client.HTTPConnection(parsed.hostname or "", parsed.port, timeout=5)
    try:
        connection.request("GET", url, headers=SECRET)
        return connection.getresponse().status
    finally:
        connection.close()


def _httpx_async_via(proxy: str, url: str) -> int:
    async def run() -> int:
        async with httpx.AsyncClient(proxy=proxy, trust_env=False, timeout=5) as client:
            return (await client.get(url, headers=SECRET)).status_code

    return asyncio.run(run())


def _httpx_target_via(proxy: str, url: str) -> int:
    # httpcore sends the "target" extension as the request line: to a forward proxy, an
    # absolute URL there is a request to forward, whatever host the client connected to.
    with httpx.Client(trust_env=False, timeout=5) as client:
        response = client.get(proxy, headers=SECRET, extensions={"target": url.encode()})
        return response.status_code


def _httpx_async_target_via(proxy: str, url: str) -> int:
    async def run() -> int:
        async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
            extensions = {"target": url.encode()}
            return (await client.get(proxy, headers=SECRET, extensions=extensions)).status_code

    return asyncio.run(run())


VIA_PROXY: dict[str, Callable[[str, str], int]] = {
    "httpx-target": _httpx_target_via,
    "httpx-async-target": _httpx_async_target_via,
    "urllib3": _urllib3_via,
    "requests": _requests_via,
    "urllib": _urllib_via,
    "httpx": _httpx_via,  # the control: httpcore judged the URL before this fix
    "httpx-async": _httpx_async_via,
    "http.client": _http_client_absolute_form_via,
}


def _assert_proxy_saw_nothing(log: ProxyLog) -> None:
    # Read after the proxy joined its threads and drained its accept queue: not a
    # connection, not a request line, not a header.
    assert log.request_lines == []
    assert log.raw == []
    assert log.connections == 0
    assert log.nothing


@pytest.mark.parametrize("library", sorted(VIA_PROXY))
def test_plaintext_through_an_allowed_proxy_to_another_host_is_refused(library: str) -> None:
    with (
        forward_proxy() as (proxy, log),
        forbid_plaintext(allow_hosts={LOOPBACK}),
        pytest.raises(envelope.InsecureTransportError) as excinfo,
    ):
        VIA_PROXY[library](proxy, "http://kv.example.com/keys/k/unwrapkey")
    assert excinfo.value.reason == "plaintext"
    _assert_proxy_saw_nothing(log)


@pytest.mark.parametrize("library", sorted(VIA_PROXY))
def test_a_proxy_that_is_not_allowed_is_refused_even_for_an_allowed_target(
    library: str,
) -> None:
    with (
        forward_proxy() as (proxy, log),
        forbid_plaintext(allow_hosts={"localhost"}),
        pytest.raises(envelope.InsecureTransportError) as excinfo,
    ):
        VIA_PROXY[library](proxy, "http://localhost:9/")
    assert excinfo.value.reason == "plaintext"
    _assert_proxy_saw_nothing(log)


@pytest.mark.parametrize("library", sorted(VIA_PROXY))
def test_an_allowed_target_through_an_allowed_proxy_passes(library: str) -> None:
    with (
        serve(None) as origin,
        forward_proxy() as (proxy, log),
        forbid_plaintext(allow_hosts={LOOPBACK}),
    ):
        assert VIA_PROXY[library](proxy, origin.url("/via-proxy", scheme="http")) == 200
    assert log.request_lines == [f"GET http://{LOOPBACK}:{origin.port}/via-proxy HTTP/1.1"]
    assert [request[1] for request in origin.recorded.requests] == ["/via-proxy"]


def _tunnel(connection: http.client.HTTPConnection, host: str, port: int) -> int:
    try:
        connection.set_tunnel(host, port)
        connection.request("GET", "/through-tunnel", headers=SECRET)
        return connection.getresponse().status
    finally:
        connection.close()


@pytest.mark.parametrize("library", ["http.client", "urllib3"])
def test_a_plaintext_tunnel_through_an_allowed_proxy_to_another_host_is_refused(
    library: str,
) -> None:
    with forward_proxy() as (proxy, log):
        port = urllib.parse.urlsplit(proxy).port
        make: type[http.client.HTTPConnection] = http.client.HTTPConnection
        if library == "urllib3":
            make = urllib3.connection.HTTPConnection
        with forbid_plaintext(allow_hosts={LOOPBACK}):
            with pytest.raises(envelope.InsecureTransportError) as excinfo:
                _tunnel(make(LOOPBACK, port, timeout=5), "kv.example.com", 80)
            assert excinfo.value.reason == "plaintext"
            # Connecting on its own (no request yet) is refused too, before the CONNECT.
            connection = make(LOOPBACK, port, timeout=5)
            connection.set_tunnel("kv.example.com", 80)
            with pytest.raises(envelope.InsecureTransportError):
                connection.connect()
            connection.close()
    _assert_proxy_saw_nothing(log)


def test_a_plaintext_tunnel_to_an_allowed_host_passes() -> None:
    with serve(None) as origin, forward_proxy() as (proxy, log):
        port = urllib.parse.urlsplit(proxy).port
        with forbid_plaintext(allow_hosts={LOOPBACK}):
            connection = http.client.HTTPConnection(LOOPBACK, port, timeout=5)
            assert _tunnel(connection, LOOPBACK, origin.port) == 200
    assert [line.rsplit(" ", 1)[0] for line in log.request_lines] == [
        f"CONNECT {LOOPBACK}:{origin.port}"
    ]
    assert [request[1] for request in origin.recorded.requests] == ["/through-tunnel"]


def test_an_http_url_forwarded_over_tls_is_still_plaintext_beyond_the_proxy() -> None:
    # An https proxy forwarding an http:// URL sends it on in plaintext: refused before
    # the TLS connection to the proxy is even opened (http.client connects lazily).
    with silent_listener() as (port, connected):
        connection = http.client.HTTPSConnection(LOOPBACK, port, timeout=5)
        try:
            with (
                forbid_plaintext(allow_hosts={LOOPBACK}),
                pytest.raises(envelope.InsecureTransportError) as excinfo,
            ):
                connection.request("GET", "http://kv.example.com/", headers=SECRET)
        finally:
            connection.close()
        assert not connected()
    assert excinfo.value.reason == "plaintext"


@pytest.mark.parametrize("scheme", ["http", "HTTP", "ws", "ftp"])
def test_an_absolute_target_sent_over_tls_is_still_plaintext_beyond_the_server(
    scheme: str,
) -> None:
    # The hop is TLS to an allowed host, but a forward proxy there would send the request
    # on, in plaintext, to the host the request line names.
    certs = issue_certificates()
    with serve(server_context(certs.good)) as server:
        context = ssl.create_default_context(cadata=certs.ca_pem.decode())
        target = f"{scheme}://kv.example.com/keys/k/unwrapkey".encode()
        with (
            httpx.Client(verify=context, trust_env=False, timeout=5) as client,
            forbid_plaintext(allow_hosts={LOOPBACK}),
            pytest.raises(envelope.InsecureTransportError) as excinfo,
        ):
            client.get(server.url("/"), headers=SECRET, extensions={"target": target})
    assert excinfo.value.reason == "plaintext"
    assert server.recorded.requests == []


def test_an_https_or_origin_form_target_passes() -> None:
    certs = issue_certificates()
    with serve(server_context(certs.good)) as server:
        context = ssl.create_default_context(cadata=certs.ca_pem.decode())
        with (
            httpx.Client(verify=context, trust_env=False, timeout=5) as client,
            forbid_plaintext(allow_hosts={LOOPBACK}),
        ):
            for target in (b"https://kv.example.com/keys/k", b"/keys/k?x=1", b"*"):
                client.get(server.url("/"), extensions={"target": target})
    assert [request[1] for request in server.recorded.requests] == [
        "https://kv.example.com/keys/k",
        "/keys/k?x=1",
        "*",
    ]


def test_disable_removes_every_patch() -> None:
    patched = [
        (http.client.HTTPConnection, "connect"),
        (http.client.HTTPConnection, "putrequest"),
        (urllib3.connection.HTTPConnection, "connect"),
    ]
    before = [owner.__dict__[name] for owner, name in patched]
    with forbid_plaintext():
        during = [owner.__dict__[name] for owner, name in patched]
        assert all(a is not b for a, b in zip(before, during, strict=True))
        assert set(_guard._originals) >= set(patched)
    assert [owner.__dict__[name] for owner, name in patched] == before
    assert _guard._originals == {}


def test_disable_restores_plaintext_and_nested_guards_all_apply() -> None:
    with serve(None) as server:
        url = server.url("/", scheme="http")
        outer = forbid_plaintext(allow_hosts={"127.0.0.1"})
        try:
            with forbid_plaintext(allow_hosts={"localhost"}) as inner:
                assert inner.enabled
                # Every enabled guard must allow the host.
                with pytest.raises(envelope.InsecureTransportError):
                    _httpx(url)
            assert _httpx(url) == 200
        finally:
            outer.disable()
        assert not outer.enabled
        assert http.client.HTTPConnection.connect.__module__ == "http.client"
        assert _http_client(url) == 200


def test_hosts_are_compared_as_written_without_dns() -> None:
    with silent_listener() as (port, connected):
        with (
            forbid_plaintext(allow_hosts={"LOCALHOST."}),
            pytest.raises(envelope.InsecureTransportError),
        ):
            _httpx(f"http://127.0.0.1:{port}/")
        assert not connected()


def test_allow_hosts_must_not_be_a_bare_string() -> None:
    with pytest.raises(TypeError):
        forbid_plaintext(allow_hosts="127.0.0.1")
