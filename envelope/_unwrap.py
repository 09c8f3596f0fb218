"""Unwrapping a message's data keys.

1. **The plan**, made from the (attacker-written) header without any I/O: each layer's
   wrapped keys are paired with the configured KEKs that accept their key ids, at most one
   per KEK. A header naming no key of ours is refused here, before any key service is
   contacted.
2. **Per layer, fall-through**: the KEKs of the plan are tried in turn until one yields a
   data key that matches the layer's commitment; through the
   :class:`~envelope.UnwrapCache` when there is one, which asks each KEK once for many
   concurrent callers and remembers only data keys that matched.
3. **Errors**: an integrity failure of any candidate wins over access errors (a tampered
   header must not be reported as an unreachable key service); when every KEK failed to
   answer, one :class:`~envelope.KeyAccessError` keeps each one's error.

The sync and asyncio paths sit side by side, in the same order; what does no I/O lives once,
in :class:`_LayerAttempt`.

The layers come from a message header (``docs/FORMAT.md``) or from a key-set document
(``docs/RECORDS.md``): anything with a suite, a salt and layers, whose commitments an
``info`` function's derivation input gives (``kdf_info`` for messages).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType
from typing import NamedTuple, Protocol

from ._cache import UnwrapCache
from ._datakeys import Layers, gather_all, to_wrapped_key
from ._engine import commitments_match, derive_layer_key, kdf_info, suite_available
from ._errors import DecryptionError, EnvelopeError, FormatError, KeyAccessError
from ._format import Aead, LayerHeader, Suite, WrappedKeyRecord
from ._keys import DATA_KEY_BYTES, KeyEncryptionKey, WrappedKey, wrap_needs_secret

__all__ = ["Committed", "LayerKeys", "Unwrapper", "check_suite"]

#: The (KEK, wrapped key) pairs to try for one layer, in order.
Candidates = tuple[tuple[KeyEncryptionKey, WrappedKeyRecord], ...]


class Committed(Protocol):
    """What unwrapping needs of a message header or a key-set document: each layer's
    algorithm, commitment and wrapped keys, and the suite and salt its derivation takes."""

    @property
    def suite(self) -> Suite: ...

    @property
    def salt(self) -> bytes: ...

    @property
    def layers(self) -> tuple[LayerHeader, ...]: ...


class LayerKeys(NamedTuple):
    """A layer's data key, verified against its commitment, and its message key; for an
    unwrapped one, the KEK and the wrapped key it came from."""

    data_key: bytes
    message_key: bytes
    kek: KeyEncryptionKey | None = None
    record: WrappedKeyRecord | None = None

    @property
    def secret(self) -> bool:
        """Whether the data key came from a wrapped key that only a holder of its KEK's
        secret can make (``wrap_needs_secret``), as opposed to a public-key wrap, which
        anyone can make of a data key of their choosing. A fresh data key counts as secret.
        Asked only by rewraps and records' writers, so a decryption does not pay for it."""
        if self.kek is None or self.record is None:
            return True
        return wrap_needs_secret(self.kek, to_wrapped_key(self.record))


class Unwrapper:
    """Recovers the data keys of messages for one envelope's layers."""

    __slots__ = ("_cache", "_info", "_layers")

    def __init__(
        self,
        layers: Layers,
        cache: UnwrapCache | None,
        *,
        info: Callable[[Suite, int, Aead], bytes] = kdf_info,
    ) -> None:
        """``info(suite, index, algorithm)`` is the constant part of a layer's derivation
        input, the salt its variable part: messages' ``kdf_info`` unless told otherwise."""
        self._layers = layers
        self._cache = cache
        self._info = info

    def plan(self, header: Committed) -> list[Candidates]:
        """Each layer's candidates. Pure: no KEK is used, so a header naming a key this
        envelope was not configured with never causes a connection."""
        check_suite(header.suite)
        if len(header.layers) != len(self._layers):
            raise KeyAccessError(
                f"message has {len(header.layers)} layer(s); this envelope is configured "
                f"for {len(self._layers)}"
            )
        plan = []
        for index, (layer, keks) in enumerate(zip(header.layers, self._layers, strict=True)):
            # Each configured KEK tries at most one wrapped key of the layer (the first it
            # accepts): a legitimate message has one per KEK, and a forged header listing
            # many versions of our key must not turn one decrypt into many vault calls.
            candidates = []
            for kek in keks:
                for record in layer.wrapped_keys:
                    if kek.can_unwrap(record.key_id):
                        candidates.append((kek, record))
                        break
            if not candidates:
                named = _quoted_ids(layer.wrapped_keys)
                raise KeyAccessError(
                    f"layer {index}: no configured key may unwrap this message (it names {named})"
                )
            plan.append(tuple(candidates))
        return plan

    def unwrap(self, header: Committed) -> list[LayerKeys]:
        """Every layer's keys, the layers one after the other."""
        plan = self.plan(header)
        return [self._unwrap_layer(index, header, pairs) for index, pairs in enumerate(plan)]

    async def unwrap_async(self, header: Committed) -> list[LayerKeys]:
        """The asyncio twin of :meth:`unwrap`: the layers are unwrapped concurrently."""
        plan = self.plan(header)
        return await gather_all(
            [self._unwrap_layer_async(index, header, pairs) for index, pairs in enumerate(plan)]
        )

    def _unwrap_layer(self, index: int, header: Committed, candidates: Candidates) -> LayerKeys:
        attempt = _LayerAttempt(index, header, self._info)
        for kek, record in candidates:
            with attempt:
                if found := attempt.keys(self._data_key(attempt, kek, record), kek, record):
                    return found
        raise attempt.error()

    async def _unwrap_layer_async(
        self, index: int, header: Committed, candidates: Candidates
    ) -> LayerKeys:
        attempt = _LayerAttempt(index, header, self._info)
        for kek, record in candidates:
            with attempt:
                data_key = await self._data_key_async(attempt, kek, record)
                if found := attempt.keys(data_key, kek, record):
                    return found
        raise attempt.error()

    def _data_key(
        self, attempt: _LayerAttempt, kek: KeyEncryptionKey, record: WrappedKeyRecord
    ) -> bytes | None:
        """What ``kek`` unwraps ``record`` to, or None for a data key the cache refused."""
        if self._cache is None:
            return kek.unwrap_key(to_wrapped_key(record))
        return self._cache.get_or_fill(
            _cache_key(kek, record),
            lambda: attempt.committed(kek.unwrap_key(to_wrapped_key(record))),
            owner=kek,
        )

    async def _data_key_async(
        self, attempt: _LayerAttempt, kek: KeyEncryptionKey, record: WrappedKeyRecord
    ) -> bytes | None:
        if self._cache is None:
            return await _unwrap_async(kek, to_wrapped_key(record))

        async def fill() -> bytes | None:
            return attempt.committed(await _unwrap_async(kek, to_wrapped_key(record)))

        return await self._cache.get_or_fill_async(_cache_key(kek, record), fill, owner=kek)


class _LayerAttempt:
    """The bookkeeping of unwrapping one layer: the commitment check, and why each
    candidate KEK failed (each candidate is tried inside ``with attempt:``, which notes a
    ``KeyAccessError`` or ``DecryptionError`` and lets the loop go on)."""

    __slots__ = ("_access", "_index", "_info", "_integrity", "_layer", "_salt", "_suite")

    def __init__(
        self, index: int, header: Committed, info: Callable[[Suite, int, Aead], bytes]
    ) -> None:
        self._index = index
        self._layer = header.layers[index]
        self._suite = header.suite
        self._info = info(header.suite, index, self._layer.algorithm)
        self._salt = header.salt
        self._access: list[KeyAccessError] = []
        self._integrity = False

    def keys(
        self, data_key: bytes | None, kek: KeyEncryptionKey, record: WrappedKeyRecord
    ) -> LayerKeys | None:
        """The layer's keys if ``data_key`` (what ``kek`` unwrapped ``record`` to) matches its
        commitment; otherwise the failure is noted as an integrity failure and None
        returned."""
        if data_key is not None:
            message_key = self._message_key(data_key)
            if message_key is not None:
                return LayerKeys(data_key, message_key, kek, record)
        self._integrity = True
        return None

    def committed(self, data_key: bytes) -> bytes | None:
        """``data_key`` if it matches the commitment, else None: only a data key that
        matched is ever remembered, so a forged header never enters a cache."""
        return bytes(data_key) if self._message_key(data_key) is not None else None

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        """Around one candidate: why it failed is noted, and the next candidate is tried."""
        if isinstance(error, KeyAccessError):
            self._access.append(error)
            return True
        if isinstance(error, DecryptionError):
            self._integrity = True
            return True
        return False

    def error(self) -> EnvelopeError:
        """The exception for the caller once every candidate failed."""
        if self._integrity or not self._access:
            return DecryptionError()
        if len(self._access) == 1:
            return self._access[0]
        reasons = "; ".join(str(e) for e in self._access)
        combined = KeyAccessError(
            f"layer {self._index}: none of {len(self._access)} keys could unwrap: {reasons}",
            code=self._access[-1].code,
            errors=tuple(self._access),
        )
        combined.__cause__ = self._access[-1]
        return combined

    def _message_key(self, data_key: bytes) -> bytes | None:
        if len(data_key) != DATA_KEY_BYTES:
            return None
        message_key, commitment = derive_layer_key(self._suite, data_key, self._info, self._salt)
        return message_key if commitments_match(self._layer.commitment, commitment) else None


def check_suite(suite: Suite, what: str = "message") -> None:
    """A :class:`~envelope.FormatError` for a suite this Python cannot compute: it is
    reported before anything else is done with the ``what`` (a message's header, a key-set
    document) that names it."""
    if not suite_available(suite):
        raise FormatError(
            f"this {what} uses suite {int(suite)} (keyed BLAKE2b, FORMAT.md section 5.2), "
            "which this Python cannot compute (a FIPS build, or one without CPython's "
            "BLAKE2); decrypt it where keyed BLAKE2b is available"
        )


async def _unwrap_async(kek: KeyEncryptionKey, wrapped: WrappedKey) -> bytes:
    # A KEK without an async twin (a LocalKey-like object) does not block: call it directly.
    unwrap = getattr(kek, "unwrap_key_async", None)
    return await unwrap(wrapped) if unwrap is not None else kek.unwrap_key(wrapped)


def _cache_key(kek: KeyEncryptionKey, record: WrappedKeyRecord) -> tuple[object, ...]:
    # The KEK object is part of the key: another envelope whose KEK merely reports the same
    # key id must not be handed this data key. The entry holds the KEK, so its id stays put.
    return (id(kek), record.key_id, record.algorithm, record.ciphertext)


def _quoted_ids(records: Sequence[WrappedKeyRecord]) -> str:
    """Key ids from an (attacker-written) header for an error message: escaped, and at
    most three of at most 120 characters each."""
    shown = [repr(r.key_id if len(r.key_id) <= 120 else r.key_id[:117] + "...") for r in records]
    more = f" and {len(shown) - 3} more" if len(shown) > 3 else ""
    return ", ".join(shown[:3]) + more
