"""The Blob Storage case: envelope.blob against azure-storage-blob's own client-side
encryption (v2) and against no encryption, on the same data, against Azurite over TLS on
loopback (both through envelope's TLS-only transport, four requests at a time); then the
time of a header-only rewrap against that of a re-upload.

Azurite keeps blobs in memory and is itself the slowest part of the path on this machine:
the "no encryption" contender is the ceiling the other two are read against.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap

from envelope import Envelope, LocalKey

from ._contenders import CONTEXT, Unavailable

__all__ = [
    "CSE_V2",
    "ENVELOPE_BLOB",
    "PLAIN",
    "REUPLOAD",
    "REWRAP",
    "blob_contenders",
]

ENVELOPE_BLOB = "envelope.blob (2 layers)"
CSE_V2 = "azure-storage-blob client-side encryption v2"
PLAIN = "no encryption (Azurite's ceiling)"
REWRAP = "envelope.blob rewrap (header block only)"
REUPLOAD = "re-upload (envelope.blob upload of the plaintext)"
CSE_REENCRYPT = "CSE v2 re-encryption (download, then upload)"
CONCURRENCY = 4


class _LocalKek:
    """The key-encryption key azure-storage-blob's client-side encryption asks for: AES key
    wrap (RFC 3394) under a local 256-bit key, as its own samples do."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    def wrap_key(self, key: bytes) -> bytes:
        return aes_key_wrap(self._key, key)

    def unwrap_key(self, key: bytes, algorithm: str) -> bytes:
        return aes_key_unwrap(self._key, key)

    def get_key_wrap_algorithm(self) -> str:
        return "A256KW"

    def get_kid(self) -> str:
        return "local:benchmark-kek"


@contextmanager
def blob_contenders(size: int) -> Iterator[dict[str, dict[str, Callable[[], object]]]]:
    """Azurite running, one blob per contender written once, and the calls to time:
    ``{"upload": {...}, "download": {...}, "rotate": {...}}``."""
    try:
        from azure.storage.blob import BlobClient  # noqa: F401

        from envelope.blob import EncryptedBlobClient, secure_blob_client
        from envelope.testing import Azurite
        from envelope.testing._azurite import AzuriteNotFound
    except ImportError as exc:
        raise Unavailable(f"the blob extra is not installed ({exc})") from exc
    try:
        azurite = Azurite()
    except AzuriteNotFound as exc:
        raise Unavailable(str(exc)) from exc
    with azurite:
        container = azurite.container()
        data = os.urandom(size)

        def client(**options: Any) -> Any:
            url = f"{container.url}/{uuid.uuid4().hex}"
            return secure_blob_client(
                url, azurite.credential, tls_policy=azurite.tls_policy, **options
            )

        envelope = Envelope([LocalKey.generate(), LocalKey.generate()])
        ours = EncryptedBlobClient(client(), envelope, max_concurrency=CONCURRENCY)
        theirs = client(
            require_encryption=True, encryption_version="2.0", key_encryption_key=_LocalKek()
        )
        plain = client()
        clients = [ours.blob_client, theirs, plain]
        try:
            ours.upload(data, context=CONTEXT)
            theirs.upload_blob(data, max_concurrency=CONCURRENCY)
            plain.upload_blob(data, max_concurrency=CONCURRENCY)

            def check(got: bytes | bytearray) -> None:
                if got != data:
                    raise AssertionError("a blob round trip returned other bytes")

            check(ours.download(context=CONTEXT))
            check(theirs.download_blob(max_concurrency=CONCURRENCY).readall())
            yield {
                "upload": {
                    ENVELOPE_BLOB: lambda: ours.upload(data, context=CONTEXT, overwrite=True),
                    CSE_V2: lambda: theirs.upload_blob(
                        data, overwrite=True, max_concurrency=CONCURRENCY
                    ),
                    PLAIN: lambda: plain.upload_blob(
                        data, overwrite=True, max_concurrency=CONCURRENCY
                    ),
                },
                "download": {
                    ENVELOPE_BLOB: lambda: ours.download(context=CONTEXT),
                    CSE_V2: lambda: theirs.download_blob(max_concurrency=CONCURRENCY).readall(),
                    PLAIN: lambda: plain.download_blob(max_concurrency=CONCURRENCY).readall(),
                },
                "rotate": {
                    REWRAP: ours.rewrap,
                    REUPLOAD: lambda: ours.upload(data, context=CONTEXT, overwrite=True),
                    CSE_REENCRYPT: lambda: theirs.upload_blob(
                        theirs.download_blob(max_concurrency=CONCURRENCY).readall(),
                        overwrite=True,
                        max_concurrency=CONCURRENCY,
                    ),
                },
            }
        finally:
            for blob in clients:
                blob.close()
            container.close()
