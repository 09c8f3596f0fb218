"""Key sets: their derivations (``docs/RECORDS.md`` section 4), a new key set's document,
and an unwrapped key set with the per-prefix subkeys its records are sealed under.

Data keys are made and wrapped by the envelope's own :class:`~envelope._datakeys.DataKeys`,
and unwrapped, checked against the configuration and against their commitments by its own
:class:`~envelope._unwrap.Unwrapper`; this module adds what differs for key sets: the
derivation input and what follows from the layer keys.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from .. import _limits
from .._datakeys import DataKey
from .._engine import AeadPrimitive, derive_layer_key, new_aead
from .._errors import DecryptionError
from .._format import Aead, LayerHeader, Suite
from .._unwrap import LayerKeys
from ._format import (
    FIXED_BYTES,
    HEAD_BYTES,
    SALT_BYTES,
    TAG_BYTES,
    KeySetDocument,
    encode_key_set,
    key_set_fields,
    parse_key_set,
    record_head,
)

__all__ = [
    "Committing",
    "KeySet",
    "Sealer",
    "key_set_digest",
    "key_set_info",
    "new_key_set",
    "subkey",
]

Buffer = bytes | bytearray | memoryview
_KEY_SET_LABEL = b"envelope/records/v1 key set\x00"
_DIGEST_LABEL = b"envelope/records/v1 key set digest\x00"
_SUBKEY_LABEL = b"envelope/records/v1 subkey\x00"
#: Subkeys a reader keeps per key set, one per prefix it has seen; the oldest goes first.
MAX_PREFIXES_PER_KEY_SET = 256


@functools.lru_cache(maxsize=64)
def key_set_info(suite: Suite, layer: int, algorithm: Aead) -> bytes:
    """The constant part of a key-set layer's derivation input (section 4.1);
    ``key_set_fields`` follows it."""
    return _KEY_SET_LABEL + bytes((suite, layer, algorithm))


def key_set_digest(authenticated: bytes) -> bytes:
    """Section 4.2, from a document's ``authenticated`` bytes."""
    return hashlib.sha256(_DIGEST_LABEL + authenticated).digest()


def _hkdf_32(key: bytes, info: bytes) -> bytes:
    return HKDFExpand(hashes.SHA256(), 32, info).derive(key)


def _blake2b_32(key: bytes, info: bytes) -> bytes:
    return hashlib.blake2b(info, key=key, digest_size=32).digest()


_KDF_32 = {Suite.HKDF_SHA256: _hkdf_32, Suite.BLAKE2B: _blake2b_32}


def subkey(suite: Suite, layer_key: bytes, layer: int, prefix: bytes) -> bytes:
    """``subkey_j(p)`` of section 4.3."""
    return _KDF_32[suite](layer_key, _SUBKEY_LABEL + bytes((layer,)) + prefix)


class Committing(NamedTuple):
    """A key-set document as the unwrapper takes it: its ``key_set_fields`` are the variable
    part of every layer's derivation input, where a message has its salt."""

    suite: Suite
    salt: bytes
    layers: tuple[LayerHeader, ...]

    @classmethod
    def of(cls, document: KeySetDocument) -> Committing:
        return cls(document.suite, document.fields, document.layers)


class Sealer:
    """Seals and opens the records of one prefix of one key set (sections 4.4 and 4.5):
    each layer's AEAD under its subkey, the record head, and the associated data up to the
    context, all made once. It carries its key set's scope and cache deadline, so that a
    reader may keep it by record head."""

    __slots__ = (
        "aad_head",
        "aeads",
        "head",
        "load_mark",
        "min_length",
        "open",
        "openers",
        "overhead",
        "scope",
        "seal",
        "valid_until",
    )

    def __init__(self, key_set: KeySet, aeads: tuple[AeadPrimitive, ...], head: bytes) -> None:
        self.aeads = aeads  # innermost first
        self.openers = aeads[::-1]
        self.head = head
        self.aad_head = head + key_set.digest
        self.overhead = TAG_BYTES * len(aeads)
        #: The shortest record of this many layers.
        self.min_length = FIXED_BYTES + self.overhead
        self.scope = key_set.scope
        self.valid_until = key_set.valid_until
        self.load_mark = key_set.load_mark
        #: ``open(record, aad)``: the plaintext of ``record`` (whose head is this sealer's),
        #: or a :class:`~envelope.DecryptionError`; nothing is released unless every tag
        #: verified. ``aad`` is ``aad_head`` followed by the encoded context. Two layers, the
        #: default, get a loop-free version: at 1 KiB the loop is a visible share.
        self.open: Callable[[bytes, bytes], bytes] = (
            self._open_two if len(aeads) == 2 else self._open_layers
        )
        #: ``seal(nonce, plaintext, aad)``: a record of ``plaintext`` under ``nonce``, with
        #: ``aad`` as for ``open`` (a batch makes it once).
        self.seal: Callable[[bytes, Buffer, bytes], bytes] = (
            self._seal_two if len(aeads) == 2 else self._seal_layers
        )

    def _seal_layers(self, nonce: bytes, plaintext: Buffer, aad: bytes) -> bytes:
        sealed = plaintext
        for aead in self.aeads:
            sealed = aead.encrypt(nonce, sealed, aad)
        return self.head + nonce + sealed

    def _seal_two(self, nonce: bytes, plaintext: Buffer, aad: bytes) -> bytes:
        inner, outer = self.aeads
        return self.head + nonce + outer.encrypt(nonce, inner.encrypt(nonce, plaintext, aad), aad)

    def _open_layers(self, record: bytes, aad: bytes) -> bytes:
        if len(record) < self.min_length:
            raise DecryptionError()
        nonce = record[HEAD_BYTES:FIXED_BYTES]
        sealed = record[FIXED_BYTES:]
        try:
            for aead in self.openers:
                sealed = aead.decrypt(nonce, sealed, aad)
        except InvalidTag:
            raise DecryptionError() from None
        return sealed

    def _open_two(self, record: bytes, aad: bytes) -> bytes:
        if len(record) < self.min_length:
            raise DecryptionError()
        nonce = record[HEAD_BYTES:FIXED_BYTES]
        outer, inner = self.openers
        try:
            return inner.decrypt(nonce, outer.decrypt(nonce, record[FIXED_BYTES:], aad), aad)
        except InvalidTag:
            raise DecryptionError() from None


class KeySet:
    """A key set whose data keys were unwrapped and checked (or just made): its id, scope,
    digest and layer keys. Thread-safe; subkeys are derived once per prefix and kept.

    ``vouched``: whether every data key is known to be secret: each came from a wrap only a
    holder of its KEK's secret can make (or the key set was just made here). A writer
    adopts a stored key set only if so (``docs/RECORDS.md`` section 5.5)."""

    __slots__ = (
        "_layer_keys",
        "_lock",
        "algorithms",
        "created",
        "digest",
        "document",
        "key_set_id",
        "load_mark",
        "scope",
        "sealers",
        "suite",
        "valid_until",
        "vouched",
    )

    def __init__(
        self,
        document: bytes,
        parsed: KeySetDocument,
        keys: Sequence[LayerKeys],
        *,
        load_mark: int,
        valid_until: float,
    ) -> None:
        self.document = document
        self.key_set_id = parsed.key_set_id
        self.scope = parsed.scope
        self.suite = parsed.suite
        self.created = parsed.created
        self.algorithms = tuple(layer.algorithm for layer in parsed.layers)
        self.digest = key_set_digest(parsed.authenticated)
        # The second half of each layer's output (the commitment) was checked by the
        # unwrapper; the first half keys the subkey derivation and nothing else.
        self._layer_keys = tuple(k.message_key for k in keys)
        self.vouched = all(k.secret for k in keys)
        #: The sealers of the prefixes seen, by prefix (read without a lock).
        self.sealers: dict[bytes, Sealer] = {}
        self._lock = threading.Lock()
        #: Until when a cache may serve it, and the cache's mark from before its load.
        self.valid_until = valid_until
        self.load_mark = load_mark

    @property
    def layers(self) -> int:
        return len(self._layer_keys)

    def sealer(self, prefix: bytes) -> Sealer:
        """The sealer of ``prefix``, derived once and kept."""
        found = self.sealers.get(prefix)
        return found if found is not None else self._remember(prefix, self._derive(prefix))

    def open(self, record: bytes, context: bytes) -> bytes:
        """The plaintext of ``record``, a record of this key set. The subkeys of a prefix
        not seen before are kept only once a record of it opened, so that records with
        forged prefixes cannot crowd out the real ones."""
        prefix = record[HEAD_BYTES - 8 : HEAD_BYTES]
        found = self.sealers.get(prefix)
        if found is not None:
            return found.open(record, found.aad_head + context)
        made = self._derive(prefix)
        plaintext = made.open(record, made.aad_head + context)
        self._remember(prefix, made)
        return plaintext

    def _derive(self, prefix: bytes) -> Sealer:
        aeads = tuple(
            new_aead(algorithm, subkey(self.suite, key, index, prefix))
            for index, (algorithm, key) in enumerate(
                zip(self.algorithms, self._layer_keys, strict=True)
            )
        )
        return Sealer(self, aeads, record_head(self.key_set_id, prefix))

    def _remember(self, prefix: bytes, sealer: Sealer) -> Sealer:
        with self._lock:
            # A reader that meets many prefixes (records of many writers) keeps the newest.
            while len(self.sealers) >= MAX_PREFIXES_PER_KEY_SET:
                del self.sealers[next(iter(self.sealers))]
            return self.sealers.setdefault(prefix, sealer)

    def __repr__(self) -> str:
        return f"KeySet(key_set_id={self.key_set_id}, scope={self.scope!r})"


def new_key_set(
    suite: Suite,
    scope: bytes,
    algorithms: Sequence[Aead],
    data_keys: Sequence[DataKey],
    *,
    load_mark: int,
    valid_until: float,
    key_set_id: int | None = None,
    created: int | None = None,
    salt: bytes | None = None,
) -> KeySet:
    """A key set made of fresh ``data_keys`` (wrapped under every KEK of their layers), with
    a random id and salt unless a test vector fixes them."""
    if key_set_id is None:
        key_set_id = secrets.randbelow(_limits.MAX_KEY_SET_ID) + 1
    if created is None:
        created = int(time.time())
    if salt is None:
        salt = secrets.token_bytes(SALT_BYTES)
    fields = key_set_fields(key_set_id, created, salt, scope)
    keys = []
    layers = []
    for index, (algorithm, data_key) in enumerate(zip(algorithms, data_keys, strict=True)):
        layer_key, commitment = derive_layer_key(
            suite, data_key.key, key_set_info(suite, index, algorithm), fields
        )
        keys.append(LayerKeys(data_key.key, layer_key))
        layers.append((algorithm, commitment, data_key.encoded))
    document = encode_key_set(suite, fields, layers)
    return KeySet(
        document, parse_key_set(document), keys, load_mark=load_mark, valid_until=valid_until
    )
