"""Blob clients on the TLS-only transport, with the library's default credential."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from azure.storage.blob import BlobClient, ContainerClient

from ..transport import SecureTransport, TLSPolicy
from ._layout import check_https

__all__ = [
    "STORAGE_CLIENT",
    "has_sas",
    "secure_blob_client",
    "secure_container_client",
    "storage_options",
    "uses_default_credential",
]

#: The storage clients' httpx settings: a block (a few MiB) may take its time; many
#: concurrent requests queue for one of the pool's connections rather than fail, and the
#: connections stay open for the next ones (a TLS handshake costs more than a small block).
STORAGE_CLIENT = {
    "timeout": httpx.Timeout(120.0, connect=10.0),
    "limits": httpx.Limits(max_connections=64, max_keepalive_connections=64),
}


def has_sas(url: str) -> bool:
    """Whether ``url`` carries a shared access signature (which then is the credential)."""
    return "sig=" in url.partition("?")[2]


def uses_default_credential(url: str, credential: Any) -> bool:
    """Whether a storage client for ``url`` given ``credential`` gets the library's default
    credential (made for it, so closed by whoever closes the client)."""
    return credential is None and not has_sas(url)


def storage_options(
    url: str,
    credential: Any,
    tls_policy: TLSPolicy | None,
    kwargs: dict[str, Any],
    make_transport: Callable[..., Any],
    make_default_credential: Callable[[TLSPolicy | None], Any],
) -> dict[str, Any]:
    """The keywords of a storage client: the URL checked, the keywords that would weaken or
    bypass TLS refused, and only then the transport (``make_transport(tls_policy,
    client_options=STORAGE_CLIENT)``) and, when no credential is given, the default one
    made, so a refused client leaves nothing open behind it."""
    check_https(url)
    for name in ("transport", "connection_verify", "connection_cert"):
        if name in kwargs:
            raise TypeError(f"{name}= would bypass the TLS policy; give tls_policy= instead")
    if uses_default_credential(url, credential):
        credential = make_default_credential(tls_policy)
    transport = make_transport(tls_policy, client_options=STORAGE_CLIENT)
    return {"credential": credential, "transport": transport, **kwargs}


def secure_blob_client(
    blob_url: str,
    credential: Any = None,
    *,
    tls_policy: TLSPolicy | None = None,
    **kwargs: Any,
) -> BlobClient:
    """A ``BlobClient`` for ``blob_url`` (``https://ACCOUNT.blob.core.windows.net/CONTAINER/
    NAME``) whose every request goes through :class:`~envelope.transport.SecureTransport`
    under ``tls_policy``. ``credential`` is any credential the SDK takes (a token credential,
    an account key; none for a URL with a SAS); the default is
    :class:`envelope.keyvault.DefaultCredential` (managed identity included), which the
    caller closes (``client.credential.close()``). Other keywords go to
    ``BlobClient.from_blob_url``."""
    return BlobClient.from_blob_url(
        blob_url, **_sync_options(blob_url, credential, tls_policy, kwargs)
    )


def secure_container_client(
    container_url: str,
    credential: Any = None,
    *,
    tls_policy: TLSPolicy | None = None,
    **kwargs: Any,
) -> ContainerClient:
    """The ``ContainerClient`` twin of :func:`secure_blob_client` (its blob clients share
    its transport)."""
    options = _sync_options(container_url, credential, tls_policy, kwargs)
    return ContainerClient.from_container_url(container_url, **options)


def _sync_options(
    url: str, credential: Any, tls_policy: TLSPolicy | None, kwargs: dict[str, Any]
) -> dict[str, Any]:
    return storage_options(url, credential, tls_policy, kwargs, SecureTransport, _credential)


def _credential(tls_policy: TLSPolicy | None) -> Any:
    from ..keyvault import DefaultCredential  # noqa: PLC0415 - azure-identity on use

    return DefaultCredential(tls_policy)
