"""forbid_plaintext: each client library is blocked, an allowed host passes, undo works."""

from __future__ import annotations

import asyncio
import http.client
import urllib.parse
import urllib.request
from collections.abc import Callable

import httpx
import pytest
import requests
import urllib3

import envelope
from envelope.transport import forbid_plaintext
from tests.transport_servers import serve, silent_listener


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
