"""The asyncio twins of :mod:`envelope.blob`, over ``azure.storage.blob.aio``."""

from ._client import EncryptedBlobClient
from ._secure import secure_blob_client, secure_container_client

__all__ = ["EncryptedBlobClient", "secure_blob_client", "secure_container_client"]
