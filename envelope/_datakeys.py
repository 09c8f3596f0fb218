"""Data keys for new messages: fresh for every message, or reused from a
:class:`~envelope.DataKeyCache`, each wrapped under every KEK of its layer.

This is also the one place where a KEK's :class:`~envelope.WrappedKey` and the header's
:class:`~envelope._format.WrappedKeyRecord` are converted into each other, and where what a
KEK returns is checked before it goes into a header.

The sync and asyncio paths sit side by side, in the same order.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Sequence
from typing import NamedTuple, TypeVar

from ._cache import DataKeyCache
from ._errors import KeyAccessError
from ._format import WrapAlgorithm, WrappedKeyRecord, encode_wrapped_keys
from ._keys import DATA_KEY_BYTES, KeyEncryptionKey, WrappedKey, wrap_needs_secret
from ._limits import MAX_KEY_ID_BYTES, MAX_WRAPPED_KEY_BYTES

__all__ = ["DataKey", "DataKeys", "gather_all", "to_record", "to_wrapped_key"]

_T = TypeVar("_T")

Layers = tuple[tuple[KeyEncryptionKey, ...], ...]


class DataKey(NamedTuple):
    """A layer's data key and its wrapped copies, one per KEK of the layer, also encoded as
    the header holds them (encoded once, however many messages a cached key serves)."""

    key: bytes
    wrapped: tuple[WrappedKeyRecord, ...]
    encoded: bytes

    @classmethod
    def of(cls, key: bytes, wrapped: tuple[WrappedKeyRecord, ...]) -> DataKey:
        return cls(key, wrapped, encode_wrapped_keys(wrapped))


class DataKeys:
    """Where one envelope's data keys come from."""

    __slots__ = ("_cache", "_layers", "_slot", "_wraps")

    def __init__(self, layers: Layers, cache: DataKeyCache | None) -> None:
        self._layers = layers
        self._cache = cache
        self._wraps = sum(len(layer) for layer in layers)
        # This envelope's entry in a cache that several envelopes may share.
        self._slot = object()

    def for_message(self, nbytes: int) -> Sequence[DataKey]:
        """Data keys for a one-shot message of ``nbytes``: from the cache if there is one
        (a miss wraps new ones once, however many threads ask), else fresh."""
        if self._cache is None:
            return self.fresh()
        keys: Sequence[DataKey] | None = self._cache.get_or_fill(
            self._slot, self.fresh, nbytes=nbytes, kek_calls=self._wraps
        )
        assert keys is not None  # a fill of fresh keys returns them or raises
        return keys

    async def for_message_async(self, nbytes: int) -> Sequence[DataKey]:
        """The asyncio twin of :meth:`for_message`."""
        if self._cache is None:
            return await self.fresh_async()
        keys: Sequence[DataKey] | None = await self._cache.get_or_fill_async(
            self._slot, self.fresh_async, nbytes=nbytes, kek_calls=self._wraps
        )
        assert keys is not None
        return keys

    def fresh(self) -> list[DataKey]:
        """A new data key per layer, wrapped under every KEK of its layer."""
        keys = _new_keys(len(self._layers))
        return [DataKey.of(key, self.wrap(index, key)) for index, key in enumerate(keys)]

    async def fresh_async(self) -> list[DataKey]:
        """The asyncio twin of :meth:`fresh`: every wrap is awaited at once."""
        keys = _new_keys(len(self._layers))
        records = await gather_all(
            [
                _wrap_async(kek, keys[index])
                for index, layer in enumerate(self._layers)
                for kek in layer
            ]
        )
        out = []
        start = 0
        for key, layer in zip(keys, self._layers, strict=True):
            out.append(DataKey.of(key, tuple(records[start : start + len(layer)])))
            start += len(layer)
        return out

    def wrap(
        self, index: int, data_key: bytes, *, secret: bool = True
    ) -> tuple[WrappedKeyRecord, ...]:
        """``data_key`` wrapped under every KEK of layer ``index``.

        ``secret`` says whether the data key is known to be secret: fresh, or unwrapped from
        a wrap only a holder of a secret can make. A rewrap passes False for a data key it
        unwrapped from a public-key wrap, which anyone could have made of a key of their
        choosing: such a key is never wrapped under a KEK whose wraps need a secret
        (``wrap_needs_secret``), because that wrap would vouch for it (``docs/RECORDS.md``
        section 5.4). That is a :class:`~envelope.KeyAccessError`."""
        return tuple(
            _vouched(index, kek, kek.wrap_key(data_key), secret) for kek in self._layers[index]
        )

    async def wrap_async(
        self, index: int, data_key: bytes, *, secret: bool = True
    ) -> tuple[WrappedKeyRecord, ...]:
        """The asyncio twin of :meth:`wrap`: the KEKs of the layer are awaited at once."""

        async def one(kek: KeyEncryptionKey) -> WrappedKeyRecord:
            return _vouched(index, kek, await _wrapped_async(kek, data_key), secret)

        return tuple(await gather_all([one(kek) for kek in self._layers[index]]))


def _vouched(
    index: int, kek: KeyEncryptionKey, wrapped: WrappedKey, secret: bool
) -> WrappedKeyRecord:
    """``wrapped`` as the header holds it; a :class:`~envelope.KeyAccessError` if the data
    key is not known to be secret and this wrap would vouch for it (see
    :meth:`DataKeys.wrap`)."""
    if not secret and wrap_needs_secret(kek, wrapped):
        raise KeyAccessError(
            f"layer {index}: its data key came from a public-key wrap, which anyone "
            f"holding the public key can make of a key of their choosing; it is not "
            f"wrapped under {kek.key_id!r}, whose wraps need a secret and would vouch "
            "for it"
        )
    return to_record(kek, wrapped)


def _new_keys(count: int) -> list[bytes]:
    # One call to the OS for every layer's key: at 1 KiB each call is a visible cost.
    pool = secrets.token_bytes(DATA_KEY_BYTES * count)
    return [pool[i * DATA_KEY_BYTES : (i + 1) * DATA_KEY_BYTES] for i in range(count)]


async def _wrapped_async(kek: KeyEncryptionKey, data_key: bytes) -> WrappedKey:
    wrap = getattr(kek, "wrap_key_async", None)
    wrapped: WrappedKey = await wrap(data_key) if wrap is not None else kek.wrap_key(data_key)
    return wrapped


async def _wrap_async(kek: KeyEncryptionKey, data_key: bytes) -> WrappedKeyRecord:
    return to_record(kek, await _wrapped_async(kek, data_key))


def to_record(kek: KeyEncryptionKey | None, wrapped: WrappedKey) -> WrappedKeyRecord:
    """What ``kek`` returned, checked, as the header holds it. ``kek`` is None only for
    test vectors, whose wrapped keys are made in advance."""
    key_id = wrapped.key_id
    if not isinstance(key_id, str) or not 0 < len(key_id.encode("utf-8")) <= MAX_KEY_ID_BYTES:
        raise ValueError(
            f"{_name(kek)} returned a key id that is not 1 to {MAX_KEY_ID_BYTES} UTF-8 bytes"
        )
    if kek is not None and not kek.can_unwrap(key_id):
        raise ValueError(
            f"{_name(kek)} returned a wrapped key for {key_id!r}, an id it does not accept"
        )
    ciphertext = wrapped.ciphertext
    if not 0 < len(ciphertext) <= MAX_WRAPPED_KEY_BYTES:
        raise ValueError(
            f"{_name(kek)} returned a wrapped key of {len(ciphertext)} bytes; a message "
            f"holds 1 to {MAX_WRAPPED_KEY_BYTES}"
        )
    if type(ciphertext) is not bytes:  # a KEK may hand back a bytearray it still owns
        ciphertext = bytes(ciphertext)
    return WrappedKeyRecord(key_id, WrapAlgorithm.from_label(wrapped.algorithm), ciphertext)


def _name(kek: KeyEncryptionKey | None) -> str:
    return "a KEK" if kek is None else repr(kek.key_id)


def to_wrapped_key(record: WrappedKeyRecord) -> WrappedKey:
    """A header's wrapped key as a KEK's ``unwrap_key`` takes it."""
    return WrappedKey(record.key_id, record.algorithm.label, record.ciphertext)


async def gather_all(awaitables: Sequence[Awaitable[_T]]) -> list[_T]:
    """Run every awaitable to completion, then raise the first failure in order, so no
    task is left running, or its error unretrieved, when one fails."""
    results = await asyncio.gather(*awaitables, return_exceptions=True)
    values: list[_T] = []
    for result in results:
        if isinstance(result, BaseException):
            raise result
        values.append(result)
    return values
