"""envelope: layered AES-256 envelope encryption.

Seal data under two or more independent AES-256 layers, each with its own data key wrapped
by its own key-encryption key (local, or in Azure Key Vault: see ``envelope.keyvault``)::

    from envelope import Envelope, LocalKey

    env = Envelope([LocalKey.generate(), LocalKey.generate()])
    blob = env.encrypt(b"secret", context={"tenant": "contoso"})
    assert env.decrypt(blob, context={"tenant": "contoso"}) == b"secret"

The message format is specified in ``docs/FORMAT.md``.
"""

from ._cache import CacheStats, DataKeyCache, UnwrapCache
from ._envelope import Envelope
from ._errors import (
    DecryptionError,
    EnvelopeError,
    FormatError,
    InsecureTransportError,
    KeyAccessError,
)
from ._inspect import LayerInfo, MessageInfo, inspect
from ._keys import KeyEncryptionKey, LocalKey, WrappedKey

__version__ = "0.1.0"

__all__ = [
    "CacheStats",
    "DataKeyCache",
    "DecryptionError",
    "Envelope",
    "EnvelopeError",
    "FormatError",
    "InsecureTransportError",
    "KeyAccessError",
    "KeyEncryptionKey",
    "LayerInfo",
    "LocalKey",
    "MessageInfo",
    "UnwrapCache",
    "WrappedKey",
    "inspect",
]
