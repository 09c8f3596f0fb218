"""Helpers of the LocalKeyVault tests: SDK clients of a vault (sync and asyncio), requests
through a client's own pipeline (to force remote cryptography), base64url, error fields."""

from __future__ import annotations

import base64
import socket
import ssl
from typing import Any

from azure.core.exceptions import HttpResponseError
from azure.core.pipeline.transport import AsyncioRequestsTransport
from azure.core.rest import HttpRequest
from azure.keyvault.keys import KeyClient, KeyVaultKey
from azure.keyvault.keys.aio import KeyClient as AsyncKeyClient
from azure.keyvault.keys.crypto import CryptographyClient
from azure.keyvault.keys.crypto.aio import CryptographyClient as AsyncCryptographyClient

from envelope.testing import LocalKeyVault
from tests.conftest import TIMEOUTS

API = "api-version=7.6"


def code_of(error: HttpResponseError) -> str:
    assert error.error is not None
    return str(error.error.code)


def inner_code(error: HttpResponseError) -> str:
    assert error.error is not None
    return str(error.error.innererror["code"])


def span(properties: Any) -> Any:
    """``expires_on - created_on`` of a key version's properties."""
    assert properties.expires_on is not None
    assert properties.created_on is not None
    return properties.expires_on - properties.created_on


def headers_of(error: HttpResponseError) -> Any:
    assert error.response is not None
    return error.response.headers  # type: ignore[attr-defined]


def jwk(key: KeyVaultKey) -> Any:
    # JsonWebKey's fields are set dynamically; the stubs do not list them.
    return key.key


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def crypto_client(vault: LocalKeyVault, key_id: str, credential: Any = None) -> CryptographyClient:
    return CryptographyClient(
        key_id,
        credential or vault.credential,
        verify_challenge_resource=False,
        connection_verify=vault.ca_file,
        retry_backoff_factor=0.01,
        **TIMEOUTS,
    )


def remote(client: KeyClient, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """A request through the client's own auth and retry pipeline; forces remote crypto."""
    request = HttpRequest(method, f"{path}?{API}", json=body)
    return client.send_request(request)


def transport(vault: LocalKeyVault) -> Any:
    # aiohttp is only a test extra; azure-core's asyncio-over-requests transport needs none.
    return AsyncioRequestsTransport(connection_verify=vault.ca_file)


def async_key_client(vault: LocalKeyVault, credential: Any, **kwargs: Any) -> AsyncKeyClient:
    return AsyncKeyClient(
        vault.url,
        credential,
        verify_challenge_resource=False,
        transport=transport(vault),
        retry_backoff_factor=0.01,
        **TIMEOUTS,
        **kwargs,
    )


def async_crypto_client(
    vault: LocalKeyVault, key_id: str, credential: Any
) -> AsyncCryptographyClient:
    return AsyncCryptographyClient(
        key_id,
        credential,
        verify_challenge_resource=False,
        transport=transport(vault),
        retry_backoff_factor=0.01,
        **TIMEOUTS,
    )


def raw_exchange(vault: LocalKeyVault, payload: bytes) -> bytes:
    """Bytes that no HTTP client would send, over TLS; everything the vault answers."""
    context = ssl.create_default_context(cafile=vault.ca_file)
    with (
        socket.create_connection(("127.0.0.1", vault.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(payload)
        chunks = []
        while chunk := tls.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)
