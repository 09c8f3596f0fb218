"""Envelope messages in Azure Blob Storage (needs the ``blob`` extra: ``azure-storage-blob``).

::

    from envelope import Envelope
    from envelope.blob import EncryptedBlobClient, secure_blob_client

    blob = secure_blob_client("https://contoso.blob.core.windows.net/reports/2026/q4.pdf")
    encrypted = EncryptedBlobClient(blob, Envelope([inner, outer]))
    encrypted.upload(open("q4.pdf", "rb"), context={"tenant": "contoso"})
    page = encrypted.download(context={"tenant": "contoso"}, offset=4096, length=4096)
    encrypted.rewrap()  # after a key rotation: the header block only

``envelope.blob.aio`` has the asyncio twins over ``azure.storage.blob.aio``.
"""

from ._client import EncryptedBlobClient, OpenedBlob
from ._layout import ACCOUNT_KEY, CONTAINER_KEY, NAME_KEY
from ._secure import secure_blob_client, secure_container_client

__all__ = [
    "ACCOUNT_KEY",
    "CONTAINER_KEY",
    "NAME_KEY",
    "EncryptedBlobClient",
    "OpenedBlob",
    "secure_blob_client",
    "secure_container_client",
]
