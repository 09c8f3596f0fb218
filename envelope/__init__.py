"""envelope: layered AES-256 envelope encryption."""

from ._errors import (
    DecryptionError,
    EnvelopeError,
    FormatError,
    InsecureTransportError,
    KeyAccessError,
)
from ._keys import KeyEncryptionKey, LocalKey, WrappedKey

__all__ = [
    "DecryptionError",
    "EnvelopeError",
    "FormatError",
    "InsecureTransportError",
    "KeyAccessError",
    "KeyEncryptionKey",
    "LocalKey",
    "WrappedKey",
]
