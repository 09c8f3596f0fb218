"""The azure-core transports: the real Key Vault and identity SDKs over loopback TLS."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import gzip
import http.server
import json
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseTimeoutError,
)
from azure.identity import ClientSecretCredential
from azure.identity.aio import ClientSecretCredential as AsyncClientSecretCredential
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys._shared import http_challenge_cache
from azure.keyvault.keys.aio import KeyClient as AsyncKeyClient
from cryptography.hazmat.primitives.asymmetric import rsa

import envelope
from envelope.transport import (
    AsyncSecureTransport,
    SecureTransport,
    TLSPolicy,
    create_ssl_context,
    secure_async_client,
    secure_client,
)
from envelope.transport._deadline import DeadlineExceeded, deadline
from tests.conftest import StaticToken
from tests.transport.servers import (
    Certificates,
    RunningServer,
    serve,
    server_context,
    silent_listener,
)

TOKEN = "token-for-the-real-vault"
VERSION = "0" * 31 + "1"


def _b64url(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


_PUBLIC = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()


def vault_responder(
    handler: http.server.BaseHTTPRequestHandler, body: bytes
) -> tuple[int, dict[str, str], bytes]:
    """Just enough of Key Vault and Entra ID: the 401 challenge, one key, tokens."""
    base = f"https://{handler.headers['Host']}"
    json_type = {"Content-Type": "application/json"}
    if handler.path.startswith("/tenant/v2.0/.well-known/openid-configuration"):
        document = {
            "token_endpoint": f"{base}/tenant/oauth2/v2.0/token",
            "authorization_endpoint": f"{base}/tenant/oauth2/v2.0/authorize",
            "issuer": f"{base}/tenant/v2.0",
        }
        return 200, json_type, json.dumps(document).encode()
    if handler.path.startswith("/tenant/oauth2/v2.0/token"):
        token = {"access_token": TOKEN, "expires_in": 3600, "token_type": "Bearer"}
        return 200, json_type, json.dumps(token).encode()
    if handler.headers.get("Authorization") != f"Bearer {TOKEN}":
        challenge = (
            'Bearer authorization="https://login.microsoftonline.com/tenant", '
            'resource="https://vault.azure.net"'
        )
        return 401, {"WWW-Authenticate": challenge}, b""
    if handler.path.startswith("/keys/k1/"):
        numbers = _PUBLIC.public_numbers()
        bundle = {
            "key": {
                "kid": f"{base}/keys/k1/{VERSION}",
                "kty": "RSA",
                "key_ops": ["wrapKey", "unwrapKey"],
                "n": _b64url(numbers.n),
                "e": _b64url(numbers.e),
            },
            "attributes": {"enabled": True, "created": 1700000000, "updated": 1700000000},
        }
        return 200, json_type, json.dumps(bundle).encode()
    error = {"error": {"code": "KeyNotFound", "message": "no such key"}}
    return 404, json_type, json.dumps(error).encode()


StaticCredential = functools.partial(StaticToken, TOKEN)


class AsyncStaticCredential:
    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(TOKEN, int(time.time()) + 3600)

    async def close(self) -> None:
        """Nothing to release."""

    async def __aenter__(self) -> AsyncStaticCredential:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Nothing to release."""


@pytest.fixture
def policy(policy: TLSPolicy) -> TLSPolicy:
    # The shared policy (tests/transport/conftest.py), held to the TLS 1.3 that every server
    # of this module speaks.
    return dataclasses.replace(policy, minimum_version=ssl.TLSVersion.TLSv1_3)


@pytest.fixture
def vault(certs: Certificates) -> Iterator[RunningServer]:
    http_challenge_cache.clear()
    context = server_context(certs.good, minimum=ssl.TLSVersion.TLSv1_3)
    with serve(context, vault_responder) as server:
        yield server
    http_challenge_cache.clear()


def test_key_client_gets_a_key_through_the_secure_transport(
    vault: RunningServer, policy: TLSPolicy
) -> None:
    with KeyClient(
        vault.url(""),
        StaticCredential(),
        transport=SecureTransport(policy),
        verify_challenge_resource=False,
    ) as client:
        key = client.get_key("k1")
    assert key.id == vault.url(f"/keys/k1/{VERSION}")
    assert key.key_type == "RSA"
    methods_and_auth = [(r[0], r[1], r[2].get("authorization")) for r in vault.recorded.requests]
    assert methods_and_auth[0][2] is None  # the challenge probe carries no token
    assert methods_and_auth[-1][2] == f"Bearer {TOKEN}"


@pytest.mark.asyncio
async def test_async_key_client_gets_a_key_through_the_secure_transport(
    vault: RunningServer, policy: TLSPolicy
) -> None:
    async with AsyncKeyClient(
        vault.url(""),
        AsyncStaticCredential(),
        transport=AsyncSecureTransport(policy),
        verify_challenge_resource=False,
    ) as client:
        key = await client.get_key("k1")
        with pytest.raises(Exception, match="KeyNotFound"):
            await client.get_key("missing")
    assert key.id == vault.url(f"/keys/k1/{VERSION}")


def test_client_secret_credential_and_key_client_share_the_policy(
    vault: RunningServer, policy: TLSPolicy
) -> None:
    with (
        ClientSecretCredential(
            "tenant",
            "client-id",
            "client-secret",
            authority=vault.url(""),
            disable_instance_discovery=True,
            transport=SecureTransport(policy),
        ) as credential,
        KeyClient(
            vault.url(""),
            credential,
            transport=SecureTransport(policy),
            verify_challenge_resource=False,
        ) as client,
    ):
        assert client.get_key("k1").name == "k1"
    paths = [request[1].split("?")[0] for request in vault.recorded.requests]
    assert "/tenant/oauth2/v2.0/token" in paths


@pytest.mark.asyncio
async def test_async_client_secret_credential_over_the_secure_transport(
    vault: RunningServer, policy: TLSPolicy
) -> None:
    async with AsyncClientSecretCredential(
        "tenant",
        "client-id",
        "client-secret",
        authority=vault.url(""),
        disable_instance_discovery=True,
        transport=AsyncSecureTransport(policy),
    ) as credential:
        token = await credential.get_token("https://vault.azure.net/.default")
    assert token.token == TOKEN


def test_client_secret_never_reaches_an_impostor(certs: Certificates) -> None:
    impostor_policy = TLSPolicy(ca_data=certs.ca_pem, pins=(certs.pin(certs.other_ca),))
    context = server_context(certs.good, minimum=ssl.TLSVersion.TLSv1_3)
    with (
        serve(context, vault_responder) as server,
        ClientSecretCredential(
            "tenant",
            "client-id",
            "client-secret",
            authority=server.url(""),
            disable_instance_discovery=True,
            transport=SecureTransport(impostor_policy),
        ) as credential,
        pytest.raises(ClientAuthenticationError) as excinfo,
    ):
        credential.get_token("https://vault.azure.net/.default")
    # azure-identity wraps every failure in ClientAuthenticationError; the refusal is the
    # cause, with its reason intact.
    cause = excinfo.value.__cause__
    assert isinstance(cause, envelope.InsecureTransportError)
    assert cause.reason == "pin"
    assert server.recorded.requests == []
    assert b"client-secret" not in server.recorded.all_bytes


def test_pin_mismatch_through_key_client_sends_nothing_and_is_not_retried(
    certs: Certificates,
) -> None:
    http_challenge_cache.clear()
    impostor_policy = TLSPolicy(ca_data=certs.ca_pem, pins=(certs.pin(certs.other_ca),))
    context = server_context(certs.good, minimum=ssl.TLSVersion.TLSv1_3)
    with (
        serve(context, vault_responder) as server,
        KeyClient(
            server.url(""),
            StaticCredential(),
            transport=SecureTransport(impostor_policy),
            verify_challenge_resource=False,
        ) as client,
        pytest.raises(envelope.InsecureTransportError) as excinfo,
    ):
        client.get_key("k1")
    assert excinfo.value.reason == "pin"
    assert server.recorded.raw == [b""]  # one handshake, no retry, not one byte
    assert server.recorded.requests == []


def _switch_verification_off(context: ssl.SSLContext) -> None:
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE


def test_a_client_context_weakened_after_the_transport_was_built_sends_nothing(
    certs: Certificates, policy: TLSPolicy
) -> None:
    http_challenge_cache.clear()
    context = create_ssl_context(policy)
    impostor = server_context(certs.other_ca, minimum=ssl.TLSVersion.TLSv1_3)
    with (
        serve(impostor, vault_responder) as server,
        secure_client(policy, verify=context) as secure,
        KeyClient(
            server.url(""),
            StaticCredential(),
            transport=SecureTransport(client=secure),
            verify_challenge_resource=False,
        ) as client,
    ):
        _switch_verification_off(context)
        with pytest.raises(envelope.InsecureTransportError) as excinfo:
            client.get_key("k1")
        # A transport built now, from the weakened client, is refused outright.
        with pytest.raises(envelope.InsecureTransportError):
            SecureTransport(client=secure)
    assert excinfo.value.reason == "verification-disabled"
    assert server.recorded.raw == [b""]  # one connection, no retry, not one byte
    assert server.recorded.requests == []


@pytest.mark.asyncio
async def test_an_async_client_context_weakened_after_the_transport_was_built_sends_nothing(
    certs: Certificates, policy: TLSPolicy
) -> None:
    http_challenge_cache.clear()
    context = create_ssl_context(policy)
    impostor = server_context(certs.other_ca, minimum=ssl.TLSVersion.TLSv1_3)
    with serve(impostor, vault_responder) as server:
        async with (
            secure_async_client(policy, verify=context) as secure,
            AsyncKeyClient(
                server.url(""),
                AsyncStaticCredential(),
                transport=AsyncSecureTransport(client=secure),
                verify_challenge_resource=False,
            ) as client,
        ):
            _switch_verification_off(context)
            with pytest.raises(envelope.InsecureTransportError) as excinfo:
                await client.get_key("k1")
            with pytest.raises(envelope.InsecureTransportError):
                AsyncSecureTransport(client=secure)
    assert excinfo.value.reason == "verification-disabled"
    assert server.recorded.raw == [b""]
    assert server.recorded.requests == []


def test_connection_failures_map_to_azure_errors_and_are_retried(policy: TLSPolicy) -> None:
    with silent_listener() as (port, _):
        pass  # nothing listens there any more
    with SecureTransport(policy) as transport:
        client = KeyClient(
            f"https://127.0.0.1:{port}",
            StaticCredential(),
            transport=transport,
            verify_challenge_resource=False,
            retry_total=1,
            retry_backoff_factor=0,
        )
        with pytest.raises(ServiceRequestError):
            client.get_key("k1")


def test_connection_verify_false_per_request_is_refused(
    vault: RunningServer, policy: TLSPolicy
) -> None:
    with (
        KeyClient(
            vault.url(""),
            StaticCredential(),
            transport=SecureTransport(policy),
            verify_challenge_resource=False,
        ) as client,
        pytest.raises(envelope.InsecureTransportError) as excinfo,
    ):
        client.get_key("k1", connection_verify=False)
    assert excinfo.value.reason == "verification-disabled"
    assert vault.recorded.requests == []


def test_plain_http_vault_url_is_refused_before_connecting(policy: TLSPolicy) -> None:
    with silent_listener() as (port, connected):
        with SecureTransport(policy) as transport:
            from azure.core.rest import HttpRequest

            with pytest.raises(envelope.InsecureTransportError) as excinfo:
                transport.send(HttpRequest("GET", f"http://127.0.0.1:{port}/keys/k1/"))
        assert not connected()
    assert excinfo.value.reason == "plaintext"


def test_a_plain_httpx_client_is_refused(policy: TLSPolicy) -> None:
    with httpx.Client() as plain, pytest.raises(envelope.InsecureTransportError):
        SecureTransport(client=plain)
    with secure_client(policy) as secure, SecureTransport(client=secure) as transport:
        assert transport is not None
    with secure_client(policy) as secure, pytest.raises(ValueError, match="not both"):
        SecureTransport(policy, client=secure)


@pytest.mark.asyncio
async def test_a_plain_async_httpx_client_is_refused(policy: TLSPolicy) -> None:
    async with httpx.AsyncClient() as plain:
        with pytest.raises(envelope.InsecureTransportError):
            AsyncSecureTransport(client=plain)
    async with secure_async_client(policy) as secure:
        async with AsyncSecureTransport(client=secure):
            pass
        assert not secure.is_closed  # the caller owns a client it passed in


def test_streamed_download_and_timeouts_pass_through(
    vault: RunningServer, policy: TLSPolicy
) -> None:
    from azure.core.rest import HttpRequest

    with SecureTransport(policy) as transport:
        response = transport.send(
            HttpRequest("GET", vault.url("/keys/k1/")),
            stream=True,
            connection_timeout=5,
            read_timeout=5,
        )
        assert response.status_code == 401
        assert "authorization=" in response.headers["www-authenticate"]
        assert b"".join(response.iter_bytes()) == b""
        response.close()


def test_an_identity_credential_closes_its_secure_transport():
    """azure-identity closes its pipeline's transport with a bare ``__exit__()``."""
    from envelope.testing import LocalKeyVault

    with LocalKeyVault() as vault:
        transport = SecureTransport(vault.tls_policy)
        credential = vault.add_identity("closer", transport=transport)
        assert credential.get_token("https://vault.azure.net/.default").token
        credential.close()
        transport.__exit__()  # the form azure-identity uses; must not raise


@pytest.mark.asyncio
async def test_an_async_identity_credential_closes_its_secure_transport():
    from envelope.testing import LocalKeyVault

    with LocalKeyVault() as vault:
        credential = vault.get_async_credential(transport=AsyncSecureTransport(vault.tls_policy))
        async with credential:
            token = await credential.get_token("https://vault.azure.net/.default")
            assert token.token


# --- bounds on time and size, whatever the server does ------------------------------------

TRANSPORTS = pytest.mark.parametrize("mode", ["sync", "async"])


def _send(policy: TLSPolicy, mode: str, url: str, **options: Any) -> Any:
    """One non-stream GET through a fresh SecureTransport or AsyncSecureTransport."""
    from azure.core.rest import HttpRequest

    limit = options.pop("max_response_bytes", None)
    if mode == "sync":
        with SecureTransport(policy, max_response_bytes=limit) as transport:
            return transport.send(HttpRequest("GET", url), **options)

    async def run() -> Any:
        async with AsyncSecureTransport(policy, max_response_bytes=limit) as transport:
            return await transport.send(HttpRequest("GET", url), **options)

    return asyncio.run(run())


def _trickle(
    handler: http.server.BaseHTTPRequestHandler, body: bytes
) -> tuple[int, dict[str, str], Any]:
    def drip() -> Iterator[bytes]:
        for _ in range(100):
            yield b"x"
            time.sleep(0.05)

    return 200, {"Content-Length": "100"}, drip()


@TRANSPORTS
def test_an_attempt_ends_within_its_read_timeout_however_slowly_the_reply_trickles(
    certs: Certificates, policy: TLSPolicy, mode: str
) -> None:
    context = server_context(certs.good, minimum=ssl.TLSVersion.TLSv1_3)
    with serve(context, _trickle) as server:
        started = time.monotonic()
        with pytest.raises(ServiceResponseTimeoutError):
            _send(policy, mode, server.url("/slow"), read_timeout=0.5)
        elapsed = time.monotonic() - started
    # Each byte came well within the read timeout; the whole reply would take 5 s.
    assert elapsed < 0.5 + 0.5


def _big(kind: str) -> Callable[..., tuple[int, dict[str, str], Any]]:
    def respond(
        handler: http.server.BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, dict[str, str], Any]:
        block = b"x" * 4096
        if kind == "gzip":
            return 200, {"Content-Encoding": "gzip"}, gzip.compress(block * 256)
        headers = {"Content-Length": str(len(block) * 256)} if kind == "content-length" else {}
        return 200, headers, iter([block] * 256)

    return respond


@TRANSPORTS
@pytest.mark.parametrize("kind", ["content-length", "chunked", "gzip"])
def test_a_reply_over_max_response_bytes_is_refused(
    certs: Certificates, policy: TLSPolicy, mode: str, kind: str
) -> None:
    context = server_context(certs.good, minimum=ssl.TLSVersion.TLSv1_3)
    with serve(context, _big(kind)) as server:
        with pytest.raises(HttpResponseError, match="reply"):
            _send(policy, mode, server.url("/big"), max_response_bytes=65536)
        # The same reply is read in full without a cap (gzip is decoded as usual).
        response = _send(policy, mode, server.url("/big"))
        assert len(response.content) == 4096 * 256
    requested = [request[2].get("accept-encoding") for request in server.recorded.requests]
    assert requested[0] == "identity"  # a capped reply is asked for uncompressed
    assert requested[1] != "identity"


def test_max_response_bytes_must_be_positive(policy: TLSPolicy) -> None:
    for bad in (0, -1, 1.5, "64k"):
        with pytest.raises(ValueError, match="max_response_bytes"):
            SecureTransport(policy, max_response_bytes=bad)  # type: ignore[arg-type]


@TRANSPORTS
def test_inside_a_deadline_no_attempt_starts_and_no_retry_waits_past_it(
    vault: RunningServer, policy: TLSPolicy, mode: str
) -> None:
    from azure.core.rest import HttpRequest

    async def waits(transport: AsyncSecureTransport, seconds: float) -> None:
        await transport.sleep(seconds)

    # The deadline's clock starts once the transport is made: making it (loading the trust
    # store) is no part of what is timed.
    if mode == "sync":
        with SecureTransport(policy) as transport, deadline(0.3):
            with pytest.raises(DeadlineExceeded, match="Retry-After"):
                transport.sleep(1.0)
            transport.sleep(0.01)
            time.sleep(0.3)
            with pytest.raises(DeadlineExceeded):
                transport.send(HttpRequest("GET", vault.url("/keys/k1/")))
    else:

        async def run() -> None:
            async with AsyncSecureTransport(policy) as transport:
                with deadline(0.3):
                    with pytest.raises(DeadlineExceeded, match="Retry-After"):
                        await waits(transport, 1.0)
                    await waits(transport, 0.01)
                    await asyncio.sleep(0.3)
                    with pytest.raises(DeadlineExceeded):
                        await transport.send(HttpRequest("GET", vault.url("/keys/k1/")))

        asyncio.run(run())
    assert vault.recorded.requests == []


def test_a_deadline_bounds_every_read_of_a_sync_secure_client(
    certs: Certificates, policy: TLSPolicy
) -> None:
    context = server_context(certs.good, minimum=ssl.TLSVersion.TLSv1_3)
    with serve(context, _trickle) as server, secure_client(policy, timeout=5.0) as client:
        started = time.monotonic()
        with deadline(0.5), pytest.raises(httpx.ReadTimeout):
            client.get(server.url("/slow"))
        assert time.monotonic() - started < 0.5 + 0.5
        # Outside the block, reads are bounded per operation only, as httpx does.
        response = client.get(server.url("/slow"))
        assert len(response.content) == 100
