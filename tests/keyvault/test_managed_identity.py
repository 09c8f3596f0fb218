"""Managed identity with the default credential: a plain-http token endpoint on 127.0.0.1
(App Service style through IDENTITY_ENDPOINT / IDENTITY_HEADER, IMDS style through the
AZURE_POD_IDENTITY_AUTHORITY_HOST override) handing out tokens of the LocalKeyVault, which
KeyVaultKey uses with no credential given. Everything else stays TLS-only: an http vault, an
http URL on the same host that is not the endpoint, a redirect, and an endpoint the
environment names anywhere but loopback or IMDS's 169.254.169.254 (any other link-local
address included), which is refused before connecting
(the test process's tripwire records every connection attempt and name lookup)."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from azure.core.rest import HttpRequest

from envelope import Envelope, InsecureTransportError, KeyAccessError, LocalKey
from envelope.keyvault import DefaultCredential, KeyVaultKey
from envelope.testing import LocalKeyVault
from envelope.transport._identity import IdentityTransport, identity_endpoints

from ..conftest import FAST, NetworkLog
from ..transport.servers import Recorded, serve

SECRET = "app-service-identity-header"
APP_SERVICE_PATH = "/msi/token"
IMDS_PATH = "/metadata/identity/oauth2/token"


class TokenEndpoint:
    """A managed-identity endpoint over plain http on 127.0.0.1 (``tests/transport/servers.py``),
    serving the vault's tokens the way App Service and IMDS do, or what ``answer`` says."""

    def __init__(self, vault: LocalKeyVault) -> None:
        self.vault = vault
        self.answer: Callable[[str], tuple[int, dict[str, str], bytes]] | None = None
        self.port = 0  # and ``recorded``: the running server's (token_endpoint)
        self.recorded = Recorded()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[tuple[str, dict[str, str]]]:
        """Each request's path and headers (their names lower-cased), in order."""
        with self.recorded.lock:
            return [(path, headers) for _, path, headers, _ in self.recorded.requests]

    def reply(
        self, handler: http.server.BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        path, headers = handler.path, handler.headers
        if self.answer is not None:
            return self.answer(path)
        url = urllib.parse.urlsplit(path)
        query = dict(urllib.parse.parse_qsl(url.query))
        if url.path == APP_SERVICE_PATH and headers.get("X-IDENTITY-HEADER") != SECRET:
            return 401, {}, b'{"error":"unauthorized"}'
        if url.path == IMDS_PATH and headers.get("Metadata") != "true":
            return 400, {}, b'{"error":"invalid_request"}'
        if url.path not in (APP_SERVICE_PATH, IMDS_PATH):
            return 404, {}, b"{}"
        token = self.vault.issue_token()
        expires = int(time.time()) + 3600
        reply = {
            "access_token": token,
            "expires_on": str(expires),
            "expires_in": "3600",
            "resource": query.get("resource", ""),
            "token_type": "Bearer",
        }
        return 200, {"Content-Type": "application/json"}, json.dumps(reply).encode()


@contextmanager
def token_endpoint(vault: LocalKeyVault) -> Iterator[TokenEndpoint]:
    """A :class:`TokenEndpoint` of ``vault``; its server and workers are joined on exit."""
    endpoint = TokenEndpoint(vault)
    with serve(None, endpoint.reply) as server:
        endpoint.port, endpoint.recorded = server.port, server.recorded
        yield endpoint


@pytest.fixture
def endpoint(vault: LocalKeyVault, fresh: None) -> Iterator[TokenEndpoint]:
    with token_endpoint(vault) as server:
        yield server


def app_service(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("IDENTITY_ENDPOINT", url)
    monkeypatch.setenv("IDENTITY_HEADER", SECRET)


def default_key(vault: LocalKeyVault, name: str, **options: Any) -> KeyVaultKey:
    """A KeyVaultKey with no credential (the library's default one), with the small backoffs
    and short timeouts of ``FAST`` unless ``options`` say else."""
    settings: dict[str, Any] = {**FAST, **options}
    return KeyVaultKey(f"{vault.url}/keys/{name}", tls_policy=vault.tls_policy, **settings)


def connections(log: NetworkLog, mark: int) -> set[str]:
    return {host for kind, host in log.since(mark) if kind == "connect"}


def round_trip(vault: LocalKeyVault) -> None:
    inner = default_key(vault, "mi-inner")
    with inner:
        env = Envelope([inner, LocalKey.generate()])
        assert env.decrypt(env.encrypt(b"managed", {"t": "1"}), {"t": "1"}) == b"managed"


@pytest.fixture(scope="module", autouse=True)
def keys(vault: LocalKeyVault) -> None:
    vault.create_key("mi-inner", "RSA")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_app_service_endpoint_on_loopback_with_the_default_credential(
    vault, endpoint, no_identity, network_log, host
) -> None:
    app_service(no_identity, f"http://{host}:{endpoint.port}{APP_SERVICE_PATH}")
    mark = network_log.mark()
    round_trip(vault)
    assert endpoint.requests, "the token came from the managed-identity endpoint"
    path, headers = endpoint.requests[0]
    assert path.startswith(APP_SERVICE_PATH + "?")
    assert headers["x-identity-header"] == SECRET
    assert connections(network_log, mark) <= {"127.0.0.1", "::1"}


def test_imds_through_its_environment_override(vault, endpoint, no_identity, network_log) -> None:
    no_identity.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", endpoint.origin)
    mark = network_log.mark()
    round_trip(vault)
    path, headers = endpoint.requests[0]
    assert path.startswith(IMDS_PATH + "?")
    assert headers["metadata"] == "true"
    assert connections(network_log, mark) == {"127.0.0.1"}


async def _async_round_trip(vault: LocalKeyVault) -> None:
    inner = default_key(vault, "mi-inner")
    async with inner:
        env = Envelope([inner, LocalKey.generate()])
        blob = await env.encrypt_async(b"managed")
        assert await env.decrypt_async(blob) == b"managed"


def test_the_async_default_credential_too(vault, endpoint, no_identity) -> None:
    app_service(no_identity, f"{endpoint.origin}{APP_SERVICE_PATH}")
    asyncio.run(_async_round_trip(vault))
    assert endpoint.requests


def test_many_threads_share_the_default_credential(vault, endpoint, no_identity) -> None:
    from ..conftest import run_threads

    app_service(no_identity, f"{endpoint.origin}{APP_SERVICE_PATH}")
    inner = default_key(vault, "mi-inner")
    with inner:
        env = Envelope([inner, LocalKey.generate()])

        def work(n: int) -> None:
            data = str(n).encode()
            assert env.decrypt(env.encrypt(data)) == data

        _, errors = run_threads(50, work)
    assert errors == []


def test_workload_identity_keeps_working_over_https(
    vault, no_identity, network_log, tmp_path
) -> None:
    # AKS: a projected service-account token, exchanged at Microsoft Entra ID over TLS (the
    # local vault's identity provider here, trusted through the key's TLS policy).
    token_file = tmp_path / "token"
    token_file.write_text(vault.federated_token())
    no_identity.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
    no_identity.setenv("AZURE_CLIENT_ID", vault.identity().client_id)
    no_identity.setenv("AZURE_TENANT_ID", vault.tenant_id)
    no_identity.setenv("AZURE_AUTHORITY_HOST", vault.url)
    mark = network_log.mark()
    round_trip(vault)
    assert vault.operation_counts()["token"] >= 1
    assert connections(network_log, mark) == {"127.0.0.1"}


def test_a_wrong_workload_token_names_the_credential(vault, no_identity, tmp_path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("not the projected token")
    no_identity.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
    no_identity.setenv("AZURE_CLIENT_ID", vault.identity().client_id)
    no_identity.setenv("AZURE_TENANT_ID", vault.tenant_id)
    no_identity.setenv("AZURE_AUTHORITY_HOST", vault.url)
    with default_key(vault, "mi-inner") as key, pytest.raises(KeyAccessError) as caught:
        key.wrap_key(bytes(32))
    assert "WorkloadIdentityCredential (AZURE_FEDERATED_TOKEN_FILE" in str(caught.value)


# -- what stays refused -----------------------------------------------------------------------


def test_a_vault_url_over_http_is_still_refused(vault, endpoint, no_identity, network_log) -> None:
    app_service(no_identity, f"{endpoint.origin}{APP_SERVICE_PATH}")
    with pytest.raises(ValueError, match="https"):
        KeyVaultKey(f"{endpoint.origin}/keys/k")
    # The credential's own transport sends plain http only to the endpoint itself: not to
    # another path or port of the same host, where an http "vault" could listen.
    mark = network_log.mark()
    with DefaultCredential(vault.tls_policy) as credential:
        transport = credential._transport
        for url in (
            f"{endpoint.origin}/keys/k/{'0' * 32}/unwrapkey",
            f"http://127.0.0.1:{endpoint.port + 1}{APP_SERVICE_PATH}",
            f"http://127.0.0.2:{endpoint.port}{APP_SERVICE_PATH}",
        ):
            with pytest.raises(InsecureTransportError) as caught:
                transport.send(HttpRequest("POST", url))
            assert caught.value.reason == "plaintext"
    assert endpoint.requests == []
    assert connections(network_log, mark) == set()


@pytest.mark.parametrize(
    ("variable", "value", "host"),
    [
        ("IDENTITY_ENDPOINT", "http://203.0.113.7:8081/msi/token", "203.0.113.7"),
        ("IDENTITY_ENDPOINT", "http://identity.example.com/msi/token", "identity.example.com"),
        ("IDENTITY_ENDPOINT", "http://10.0.0.4:8081/msi/token", "10.0.0.4"),
        ("AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://192.168.1.20", "192.168.1.20"),
        ("MSI_ENDPOINT", "http://203.0.113.9/msi", "203.0.113.9"),
        # Link-local hosts other than IMDS (169.254.169.254): a neighbour on the link or a
        # container runtime's metadata service, reached without TLS, would be handed the
        # request's secret header and the token in clear. Once allowed; refused since.
        ("IDENTITY_ENDPOINT", "http://169.254.10.20/msi/token", "169.254.10.20"),
        ("IDENTITY_ENDPOINT", "http://[fe80::1]/msi/token", "fe80::1"),
    ],
)
def test_an_endpoint_beyond_loopback_or_link_local_is_refused_before_connecting(
    vault, no_identity, network_log, variable, value, host
) -> None:
    no_identity.setenv(variable, value)
    if variable == "IDENTITY_ENDPOINT":
        no_identity.setenv("IDENTITY_HEADER", SECRET)
    if variable == "MSI_ENDPOINT":
        no_identity.setenv("MSI_SECRET", SECRET)
    mark = network_log.mark()
    with default_key(vault, "mi-inner") as key, pytest.raises(InsecureTransportError) as caught:
        key.wrap_key(bytes(32))
    assert caught.value.reason == "plaintext"
    assert variable in str(caught.value)
    # Nothing went towards that host: no connection attempt, not even a name lookup.
    assert ("connect", host) not in network_log.since(mark)
    assert ("getaddrinfo", host) not in network_log.since(mark)
    assert connections(network_log, mark) <= {"127.0.0.1"}  # the vault, for its challenge


def test_a_redirect_from_the_endpoint_is_refused(vault, endpoint, no_identity) -> None:
    with token_endpoint(vault) as other:
        target = f"{other.origin}{APP_SERVICE_PATH}"
        endpoint.answer = lambda path: (302, {"Location": target}, b"")
        app_service(no_identity, f"{endpoint.origin}{APP_SERVICE_PATH}")
        with default_key(vault, "mi-inner") as key, pytest.raises(InsecureTransportError) as caught:
            key.wrap_key(bytes(32))
        assert caught.value.reason == "redirect"
        assert other.requests == []


def test_a_trickling_endpoint_cannot_hold_a_call_past_its_time_limit(vault, no_identity) -> None:
    # Headers, then one byte of the body every 0.2 s, for ever: each read returns in time,
    # so only the wall-clock bound of the call ends it.
    stop = threading.Event()

    def trickle(
        handler: http.server.BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, dict[str, str], Iterator[bytes]]:
        def chunks() -> Iterator[bytes]:
            while not stop.wait(0.2):
                yield b"{"

        return 200, {"Content-Length": "60000"}, chunks()

    with serve(None, trickle) as server:
        try:
            app_service(no_identity, f"http://127.0.0.1:{server.port}{APP_SERVICE_PATH}")
            key = default_key(vault, "mi-inner", read_timeout=1.0, timeout=3.0)
            started = time.monotonic()
            with key, pytest.raises(KeyAccessError) as caught:
                key.wrap_key(bytes(32))
            assert time.monotonic() - started < 3.0 + 1.5
            # Ended by the call's wall-clock deadline, not by a failure of another kind.
            message = str(caught.value)
            assert any(
                reason in message
                for reason in ("no complete reply within", "within the call", "past the deadline")
            ), message
        finally:
            stop.set()  # the server's exit joins its workers: end the trickle first
    assert server.recorded.requests, "the call reached the trickling endpoint"


def test_a_failing_endpoint_names_the_credential_and_what_to_do(
    vault, endpoint, no_identity
) -> None:
    endpoint.answer = lambda path: (
        400,
        {"Content-Type": "application/json"},
        b'{"error":"invalid_request","error_description":"Identity not found"}',
    )
    app_service(no_identity, f"{endpoint.origin}{APP_SERVICE_PATH}")
    with default_key(vault, "mi-inner") as key, pytest.raises(KeyAccessError) as caught:
        key.wrap_key(bytes(32))
    message = str(caught.value)
    assert "ManagedIdentityCredential (IDENTITY_ENDPOINT=" in message
    assert "managed identity" in message
    assert "AZURE_CLIENT_ID" in message


def test_the_endpoints_the_environment_names() -> None:
    found = identity_endpoints(
        {
            "IDENTITY_ENDPOINT": "http://127.0.0.1:41741/msi/token/",
            "MSI_ENDPOINT": "not a url at all \x00",
            "AZURE_POD_IDENTITY_AUTHORITY_HOST": "http://169.254.169.254/",
        }
    )
    assert [(str(e.url), e.source) for e in found] == [
        ("http://127.0.0.1:41741/msi/token/", "IDENTITY_ENDPOINT"),
        (
            "http://169.254.169.254/metadata/identity/oauth2/token",
            "AZURE_POD_IDENTITY_AUTHORITY_HOST",
        ),
        ("http://169.254.169.254/metadata/identity/oauth2/token", "IMDS"),
        ("http://localhost:40342/metadata/identity/oauth2/token", "Azure Arc"),
    ]


def test_https_goes_through_the_tls_policy(vault, no_identity) -> None:
    # The identity transport sends https through the secure transport: the vault's own CA
    # is trusted by its policy, and not by the default one.
    with IdentityTransport(vault.tls_policy) as transport:
        response = transport.send(HttpRequest("GET", f"{vault.url}/keys?api-version=7.4"))
        assert response.status_code == 401
    with IdentityTransport() as transport, pytest.raises(InsecureTransportError) as caught:
        transport.send(HttpRequest("GET", f"{vault.url}/keys?api-version=7.4"))
    assert caught.value.reason == "certificate"
