"""Compact records: field-level encryption with stored key sets, scopes and shredding.

Each value is sealed by every layer of an :class:`~envelope.Envelope`, but the wrapped data
keys live once per *key set* in a :class:`KeyStore` instead of in every value, so a record
adds 61 bytes with two layers::

    import os, tempfile
    from envelope import Envelope, LocalKey
    from envelope.records import Records, SQLiteKeyStore

    keys = os.path.join(tempfile.mkdtemp(), "keys.db")
    records = Records(Envelope([LocalKey.generate(), LocalKey.generate()]), SQLiteKeyStore(keys))
    token = records.encrypt(b"4111 1111 1111 1111", scope="tenant-42", context={"column": "pan"})
    assert records.decrypt(token, scope="tenant-42", context={"column": "pan"}) == (
        b"4111 1111 1111 1111"
    )

The format, the key-set documents and the key store's contract are specified in
``docs/RECORDS.md``.
"""

from ._cache import KeySetCache
from ._format import from_text, to_text
from ._records import Records, RotationPolicy
from ._rewrap import RewrapProgress
from ._sqlite import SQLiteKeyStore
from ._store import KeyStore, MemoryKeyStore

__all__ = [
    "KeySetCache",
    "KeyStore",
    "MemoryKeyStore",
    "Records",
    "RewrapProgress",
    "RotationPolicy",
    "SQLiteKeyStore",
    "from_text",
    "to_text",
]
