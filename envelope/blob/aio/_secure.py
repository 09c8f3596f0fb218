"""The asyncio twins of :func:`envelope.blob.secure_blob_client` and
:func:`envelope.blob.secure_container_client`."""

from __future__ import annotations

from typing import Any

from azure.storage.blob.aio import BlobClient, ContainerClient

from ...transport import AsyncSecureTransport, TLSPolicy
from .._secure import storage_options

__all__ = ["secure_blob_client", "secure_container_client"]


def _options(url: str, credential: Any, tls_policy: TLSPolicy | None, kwargs: Any) -> Any:
    return storage_options(url, credential, tls_policy, kwargs, AsyncSecureTransport, _credential)


def _credential(tls_policy: TLSPolicy | None) -> Any:
    from ...keyvault import AsyncDefaultCredential  # noqa: PLC0415 - azure-identity on use

    return AsyncDefaultCredential(tls_policy)


def secure_blob_client(
    blob_url: str, credential: Any = None, *, tls_policy: TLSPolicy | None = None, **kwargs: Any
) -> BlobClient:
    """An ``azure.storage.blob.aio.BlobClient`` on :class:`~envelope.transport.
    AsyncSecureTransport`; the default credential is
    :class:`envelope.keyvault.AsyncDefaultCredential` (close it yourself)."""
    return BlobClient.from_blob_url(blob_url, **_options(blob_url, credential, tls_policy, kwargs))


def secure_container_client(
    container_url: str,
    credential: Any = None,
    *,
    tls_policy: TLSPolicy | None = None,
    **kwargs: Any,
) -> ContainerClient:
    """The ``ContainerClient`` twin of :func:`secure_blob_client`."""
    options = _options(container_url, credential, tls_policy, kwargs)
    return ContainerClient.from_container_url(container_url, **options)
