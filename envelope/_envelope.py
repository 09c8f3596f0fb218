"""The public verbs: encrypt, decrypt, streams, files, inspect and rewrap.

``Envelope`` is the only place that sees both the format and the keys. Decryption checks
every key id in the (attacker-written) header against the configured KEKs before any KEK is
asked to unwrap anything.
"""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
import threading
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple, Protocol, TypeVar

from ._cache import DataKeyCache, UnwrapCache
from ._engine import (
    FrameCipher,
    body_size,
    commitments_match,
    derive_layer_key,
    header_digest,
    layer_info,
    new_aead,
    plaintext_size,
)
from ._errors import DecryptionError, EnvelopeError, FormatError, KeyAccessError
from ._files import atomic_output
from ._format import (
    DEFAULT_FRAME_SIZE,
    MAX_FRAME_SIZE,
    MAX_FRAMES,
    MAX_LAYERS,
    MAX_WRAPPED_KEY_BYTES,
    MAX_WRAPPED_KEYS,
    MIN_FRAME_SIZE,
    PREFIX_BYTES,
    SALT_BYTES,
    Aead,
    Context,
    Header,
    LayerHeader,
    Suite,
    WrapAlgorithm,
    WrappedKeyRecord,
    decode_header,
    encode_context,
    encode_header,
    header_length_from_prefix,
    max_header_size,
)
from ._keys import DATA_KEY_BYTES, KeyEncryptionKey, WrappedKey

__all__ = ["Envelope", "LayerInfo", "MessageInfo", "inspect"]

Buffer = bytes | bytearray | memoryview


class Readable(Protocol):
    """A binary source: files, sockets' files, pipes, ``io.BytesIO``, raw streams. Short
    reads are fine; ``readinto`` is used when the object has it."""

    def read(self, size: int, /) -> bytes | None: ...


class Writable(Protocol):
    """A binary sink."""

    def write(self, data: bytes | memoryview, /) -> object: ...


LayerSpec = KeyEncryptionKey | Sequence[KeyEncryptionKey]

#: Default AEAD per layer position: a different mode per layer as far as they go.
_DEFAULT_ALGORITHMS = (Aead.AES_256_GCM, Aead.AES_256_OCB3, Aead.AES_256_GCM_SIV)
_SUITE = Suite.HKDF_SHA256
_T = TypeVar("_T")


class _DataKey(NamedTuple):
    """A layer's data key and its wrapped copies, one per KEK of the layer."""

    key: bytes
    wrapped: tuple[WrappedKeyRecord, ...]


class Envelope:
    """Layered envelope encryption.

    ``layers`` lists the layers from the innermost out; each is one KEK, or a list of KEKs
    that all wrap that layer's data key (for availability: any one of them can decrypt).
    Every layer has its own fresh data key per message, its own KEKs and, by default, its
    own AEAD mode: AES-256-GCM, then AES-256-OCB3, then AES-256-GCM-SIV.

    Decryption accepts only messages with the same number of layers whose every layer
    names a key id one of that layer's KEKs accepts; no other key is ever contacted.

    ``data_key_cache`` (a :class:`~envelope.DataKeyCache`) reuses each layer's wrapped data
    key across one-shot encryptions, ``unwrap_cache`` (an :class:`~envelope.UnwrapCache`)
    skips the unwrap of a wrapped key seen before; both are off by default (see their
    limits). ``encrypt_async``/``decrypt_async`` are the asyncio twins of ``encrypt`` and
    ``decrypt``: they await KEKs that have ``wrap_key_async``/``unwrap_key_async``.
    """

    def __init__(
        self,
        layers: Sequence[LayerSpec],
        *,
        algorithms: Sequence[str] | None = None,
        frame_size: int = DEFAULT_FRAME_SIZE,
        data_key_cache: DataKeyCache | None = None,
        unwrap_cache: UnwrapCache | None = None,
    ) -> None:
        if not isinstance(layers, Sequence):
            raise TypeError("layers must be a sequence of KEKs or of lists of KEKs")
        if not 1 <= len(layers) <= MAX_LAYERS:
            raise ValueError(f"an envelope has 1 to {MAX_LAYERS} layers")
        self._layers: tuple[tuple[KeyEncryptionKey, ...], ...] = tuple(
            _layer_keks(spec, index) for index, spec in enumerate(layers)
        )
        _refuse_shared_keks(self._layers)

        if algorithms is None:
            chosen = tuple(_DEFAULT_ALGORITHMS[i % 3] for i in range(len(self._layers)))
        else:
            if isinstance(algorithms, str) or len(algorithms) != len(self._layers):
                raise ValueError("give one algorithm name per layer")
            chosen = tuple(Aead.from_label(name) for name in algorithms)
        self._algorithms = chosen
        self._infos = tuple(layer_info(_SUITE, i, a) for i, a in enumerate(chosen))

        if not isinstance(frame_size, int) or not MIN_FRAME_SIZE <= frame_size <= MAX_FRAME_SIZE:
            raise ValueError(f"frame_size must be between {MIN_FRAME_SIZE} and {MAX_FRAME_SIZE}")
        self._frame_size = frame_size

        if data_key_cache is not None and not isinstance(data_key_cache, DataKeyCache):
            raise TypeError("data_key_cache must be a DataKeyCache")
        if unwrap_cache is not None and not isinstance(unwrap_cache, UnwrapCache):
            raise TypeError("unwrap_cache must be an UnwrapCache")
        self._data_key_cache = data_key_cache
        self._unwrap_cache = unwrap_cache
        # This envelope's entry in a data-key cache that several envelopes may share.
        self._cache_slot = object()
        # One caller at a time refills the cache; the others wait for its data keys instead
        # of each wrapping their own (a thundering herd of KEK calls at every expiry).
        self._fill_lock = threading.Lock()
        self._pending_fill: asyncio.Future[None] | None = None

    # -- configuration ------------------------------------------------------------------

    @property
    def layers(self) -> tuple[tuple[KeyEncryptionKey, ...], ...]:
        """The KEKs of each layer, innermost first."""
        return self._layers

    @property
    def algorithms(self) -> tuple[str, ...]:
        """The AEAD of each layer new messages use, innermost first."""
        return tuple(a.label for a in self._algorithms)

    @property
    def frame_size(self) -> int:
        return self._frame_size

    def __repr__(self) -> str:
        ids = [[k.key_id for k in layer] for layer in self._layers]
        return f"Envelope(layers={ids!r}, algorithms={self.algorithms!r})"

    # -- encryption ---------------------------------------------------------------------

    def encrypt(self, data: Buffer, context: Mapping[str, str] | None = None) -> bytearray:
        """Encrypt ``data``; returns a new buffer holding the whole message.

        The result is a ``bytearray`` so that large messages are written once, in place,
        instead of being copied into an immutable ``bytes``.
        """
        plaintext = _contiguous(data)
        header_bytes, cipher = self._begin(encode_context(context), len(plaintext))
        return _sealed(header_bytes, cipher, plaintext)

    def max_encrypted_size(
        self, plaintext_length: int, context: Mapping[str, str] | None = None
    ) -> int:
        """An upper bound on the size of a message: how large a buffer
        :meth:`encrypt_into` needs."""
        header = max_header_size(encode_context(context), [len(layer) for layer in self._layers])
        return header + body_size(plaintext_length, *self._shape())

    def encrypt_into(
        self, data: Buffer, out: bytearray | memoryview, context: Mapping[str, str] | None = None
    ) -> int:
        """Encrypt ``data`` into the caller's writable buffer ``out``; returns the message
        length (the message is ``out[:n]``).

        Reusing one buffer avoids the page faults of fresh memory, which cost more than the
        encryption itself for large messages. Size it with :meth:`max_encrypted_size`.
        """
        plaintext = _contiguous(data)
        target = _writable(out)
        header_bytes, cipher = self._begin(encode_context(context), len(plaintext))
        total = len(header_bytes) + body_size(len(plaintext), *self._shape())
        if len(target) < total:
            raise ValueError(f"out holds {len(target)} bytes; this message needs {total}")
        target[: len(header_bytes)] = header_bytes
        cipher.seal_all(plaintext, target[len(header_bytes) : total])
        return total

    def encrypt_stream(
        self, src: Readable, dst: Writable, context: Mapping[str, str] | None = None
    ) -> int:
        """Encrypt everything ``src`` yields into ``dst``, one frame at a time, in constant
        memory. Returns the number of bytes written."""
        # Streams never use the data-key cache: their length is unknown up front.
        header_bytes, cipher = self._begin(encode_context(context), self._frame_size, cache=False)
        dst.write(header_bytes)
        written = len(header_bytes)
        size = self._frame_size
        inbuf = memoryview(bytearray(size))
        outbuf = memoryview(bytearray(size + cipher.overhead))
        index = 0
        while True:
            got = _read_into(src, inbuf)
            final = got < size
            if not final and index >= MAX_FRAMES - 1:
                raise ValueError(
                    f"the input needs more than {MAX_FRAMES} frames of {size} bytes; "
                    "use a larger frame_size"
                )
            sealed = outbuf[: got + cipher.overhead]
            cipher.seal_frame(index, final, inbuf[:got], sealed)
            dst.write(sealed)
            written += len(sealed)
            if final:
                return written
            index += 1

    def encrypt_file(
        self,
        src: str | os.PathLike[str],
        dst: str | os.PathLike[str],
        context: Mapping[str, str] | None = None,
    ) -> int:
        """Encrypt the file ``src`` into ``dst``, atomically (see :meth:`decrypt_file`)."""
        with open(src, "rb") as source, atomic_output(dst) as sink:
            return self.encrypt_stream(source, sink, context)

    # -- decryption ---------------------------------------------------------------------

    def decrypt(self, blob: Buffer, context: Mapping[str, str] | None = None) -> bytearray:
        """Decrypt a whole message. Nothing is returned unless every frame verified.

        Raises :class:`DecryptionError` (or its subclass :class:`FormatError`) for a
        message that does not authenticate under ``context``, and :class:`KeyAccessError`
        when no configured KEK can unwrap a layer.
        """
        view = _contiguous(blob)
        header, header_length, cipher = self._open_header(view, encode_context(context))
        body = view[header_length:]
        return _opened(header, cipher, body)

    def decrypt_into(
        self, blob: Buffer, out: bytearray | memoryview, context: Mapping[str, str] | None = None
    ) -> int:
        """Decrypt into the caller's writable buffer; returns the plaintext length. On
        failure the used part of ``out`` is zeroed, so no unverified plaintext remains."""
        view = _contiguous(blob)
        target = _writable(out)
        header, header_length, cipher = self._open_header(view, encode_context(context))
        body = view[header_length:]
        length = plaintext_size(len(body), header.frame_size, len(header.layers))
        if len(target) < length:
            raise ValueError(f"out holds {len(target)} bytes; the plaintext needs {length}")
        try:
            cipher.open_all(body, target[:length])
        except DecryptionError:
            target[:length] = bytes(length)
            raise
        return length

    def decrypt_stream(
        self, src: Readable, dst: Writable, context: Mapping[str, str] | None = None
    ) -> int:
        """Decrypt a message from ``src`` into ``dst`` in constant memory.

        Only frames whose every tag verified are written. If the input ends before the
        final frame, or anything follows it, this raises after writing the verified frames:
        treat ``dst`` as garbage then (``decrypt_file`` does that for you).

        As ``io`` allows, ``dst.write`` receives a view of a buffer that is reused for the
        next frame (and wiped if that frame fails): a sink copies what it keeps.
        """
        expected = encode_context(context)
        raw = _read_header(src)
        header, _, cipher = self._open_header(raw, expected, largest_frame=MAX_FRAME_SIZE)
        size = header.frame_size
        sealed_size = size + cipher.overhead
        inbuf = memoryview(bytearray(sealed_size + 1))
        outbuf = memoryview(bytearray(size))
        written = 0
        index = 0
        # Read one byte past a full frame: a full frame is never the final one, and a full
        # frame followed by nothing means the final frame was cut off.
        got = _read_into(src, inbuf)
        while got >= sealed_size:
            if index >= MAX_FRAMES - 1:
                raise DecryptionError()
            cipher.open_frame(index, False, inbuf[:sealed_size], outbuf)
            dst.write(outbuf)
            written += size
            if got == sealed_size:
                raise DecryptionError()
            inbuf[0] = inbuf[sealed_size]
            got = 1 + _read_into(src, inbuf[1:])
            index += 1
        if got < cipher.overhead:
            raise DecryptionError()
        plain = outbuf[: got - cipher.overhead]
        cipher.open_frame(index, True, inbuf[:got], plain)
        dst.write(plain)
        return written + len(plain)

    def decrypt_file(
        self,
        src: str | os.PathLike[str],
        dst: str | os.PathLike[str],
        context: Mapping[str, str] | None = None,
    ) -> int:
        """Decrypt the file ``src`` into ``dst``. The plaintext goes to a temporary file
        (mode 0600) in ``dst``'s directory and is renamed to ``dst`` only after the final
        frame verified; on any failure ``dst`` is untouched and the temporary file removed.
        """
        with open(src, "rb") as source, atomic_output(dst) as sink:
            return self.decrypt_stream(source, sink, context)

    # -- key lifecycle ------------------------------------------------------------------

    def rewrap(self, blob: Buffer) -> bytearray:
        """Re-wrap a message's data keys under this envelope's current KEKs (a new key
        version, another vault) without touching the body.

        The data keys are unwrapped with any KEK this envelope accepts and checked against
        their commitments; the body and the encryption context are kept as they are.
        """
        view = _contiguous(blob)
        header, header_length, plan = self._plan(view, None)
        layers = tuple(
            LayerHeader(
                layer.algorithm,
                layer.commitment,
                self._wrap(index, self._unwrap_layer(index, header, pairs)[0]),
            )
            for index, (layer, pairs) in enumerate(zip(header.layers, plan, strict=True))
        )
        new_header = encode_header(
            Header(header.suite, header.frame_size, header.salt, header.context, layers)
        )
        body = view[header_length:]
        out = bytearray(len(new_header) + len(body))
        out[: len(new_header)] = new_header
        out[len(new_header) :] = body
        return out

    # -- internals ----------------------------------------------------------------------

    def _shape(self) -> tuple[int, int]:
        return self._frame_size, len(self._layers)

    def _wrap(self, index: int, data_key: bytes) -> tuple[WrappedKeyRecord, ...]:
        return tuple(_record(kek, kek.wrap_key(data_key)) for kek in self._layers[index])

    def _new_data_keys(self) -> list[_DataKey]:
        """A fresh data key per layer, wrapped under every KEK of its layer."""
        # One call to the OS for every layer's key: at 1 KiB each call is a visible cost.
        pool = secrets.token_bytes(DATA_KEY_BYTES * len(self._layers))
        keys = []
        for index in range(len(self._layers)):
            key = pool[index * DATA_KEY_BYTES : (index + 1) * DATA_KEY_BYTES]
            keys.append(_DataKey(key, self._wrap(index, key)))
        return keys

    def _begin(
        self, context: Context, largest_frame: int, *, cache: bool = True
    ) -> tuple[bytes, FrameCipher]:
        """``largest_frame`` is the plaintext length of a one-shot message (what a cached
        data key is charged), the frame size of a stream (``cache=False``)."""
        if self._data_key_cache is None or not cache:
            return self._begin_with(context, largest_frame, self._new_data_keys(), None)
        return self._begin_with(context, largest_frame, self._cached_data_keys(largest_frame), None)

    def _cached_data_keys(self, nbytes: int) -> list[_DataKey]:
        cache = self._data_key_cache
        assert cache is not None
        keys: list[_DataKey] | None = cache._take(self._cache_slot, nbytes, count_miss=False)
        if keys is None:
            with self._fill_lock:
                keys = cache._take(self._cache_slot, nbytes)
                if keys is None:
                    keys = self._new_data_keys()
                    cache._count_kek_calls(sum(len(layer) for layer in self._layers))
                    cache._put(self._cache_slot, keys, None, nbytes)
        return keys

    async def _cached_data_keys_async(self, cache: DataKeyCache, nbytes: int) -> list[_DataKey]:
        keys: list[_DataKey] | None = cache._take(self._cache_slot, nbytes, count_miss=False)
        if keys is not None:
            return keys
        loop = asyncio.get_running_loop()
        pending = self._pending_fill
        if pending is not None and not pending.done() and pending.get_loop() is loop:
            await asyncio.shield(pending)
        again: list[_DataKey] | None = cache._take(self._cache_slot, nbytes)
        if again is not None:
            return list(again)
        fill: asyncio.Future[None] = loop.create_future()
        self._pending_fill = fill
        try:
            fresh = await self._new_data_keys_async()
            cache._count_kek_calls(sum(len(layer) for layer in self._layers))
            cache._put(self._cache_slot, fresh, None, nbytes)
        finally:
            # Waiters wake either way; after a failed fill each tries its own.
            fill.set_result(None)
            if self._pending_fill is fill:
                self._pending_fill = None
        return fresh

    def _begin_with(
        self,
        context: Context,
        largest_frame: int,
        data_keys: Sequence[_DataKey],
        salt: bytes | None,
    ) -> tuple[bytes, FrameCipher]:
        """The header of a new message and the cipher for its body."""
        salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
        layers = []
        aeads = []
        for algorithm, info, data_key in zip(self._algorithms, self._infos, data_keys, strict=True):
            message_key, commitment = derive_layer_key(data_key.key, info, salt)
            aeads.append(new_aead(algorithm, message_key))
            layers.append(LayerHeader(algorithm, commitment, data_key.wrapped))
        header = Header(_SUITE, self._frame_size, salt, context, tuple(layers))
        cipher = FrameCipher(
            aeads, header_digest(header), self._frame_size, largest_frame=largest_frame
        )
        return encode_header(header), cipher

    def _encrypt_with(
        self,
        data: Buffer,
        context: Mapping[str, str] | None,
        *,
        salt: bytes,
        data_keys: Sequence[tuple[bytes, Sequence[WrappedKey]]],
    ) -> bytearray:
        """Deterministic encryption for test vectors: fixed salt and pre-wrapped keys."""
        plaintext = _contiguous(data)
        keys = [
            _DataKey(key, tuple(_record(None, w) for w in wrapped)) for key, wrapped in data_keys
        ]
        header_bytes, cipher = self._begin_with(encode_context(context), len(plaintext), keys, salt)
        return _sealed(header_bytes, cipher, plaintext)

    def _open_header(
        self, view: memoryview, expected: Context, *, largest_frame: int | None = None
    ) -> tuple[Header, int, FrameCipher]:
        """Parse and check the header, unwrap and verify every layer's data key, and return
        the cipher for the body. ``largest_frame`` sizes the scratch buffers (default: the
        body that follows the header in ``view``)."""
        header, header_length, plan = self._plan(view, expected)
        message_keys = [
            self._unwrap_layer(index, header, pairs)[1] for index, pairs in enumerate(plan)
        ]
        if largest_frame is None:
            largest_frame = len(view) - header_length
        return header, header_length, _body_cipher(header, message_keys, largest_frame)

    def _plan(
        self, view: memoryview, expected: Context | None
    ) -> tuple[Header, int, list[list[tuple[KeyEncryptionKey, WrappedKeyRecord]]]]:
        """Parse the header, check the context (unless ``expected`` is None) and pair each
        layer's wrapped keys with the configured KEKs that accept them.

        Pure: runs before any KEK is used, so a header naming a key this envelope was not
        configured with never causes a connection.
        """
        header, header_length = decode_header(view)
        if expected is not None and header.context != expected:
            raise DecryptionError()
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
            pairs = []
            for kek in keks:
                for record in layer.wrapped_keys:
                    if kek.can_unwrap(record.key_id):
                        pairs.append((kek, record))
                        break
            if not pairs:
                named = _quoted_ids(layer.wrapped_keys)
                raise KeyAccessError(
                    f"layer {index}: no configured key may unwrap this message (it names {named})"
                )
            plan.append(pairs)
        return header, header_length, plan

    def _unwrap_layer(
        self,
        index: int,
        header: Header,
        pairs: Sequence[tuple[KeyEncryptionKey, WrappedKeyRecord]],
    ) -> tuple[bytes, bytes]:
        """Try each accepted (KEK, wrapped key) pair in turn until one yields the data key
        the layer's commitment names; returns ``(data_key, message_key)``."""
        layer = _LayerUnwrap(index, header, self._unwrap_cache)
        for kek, record in pairs:
            found = layer.cached(kek, record)
            if found is None:
                try:
                    data_key = kek.unwrap_key(_wrapped_key(record))
                except (KeyAccessError, DecryptionError) as exc:
                    layer.failed(exc)
                    continue
                found = layer.unwrapped(kek, record, data_key)
            if found is not None:
                return found
        raise layer.error()

    # -- asyncio ------------------------------------------------------------------------

    async def encrypt_async(
        self, data: Buffer, context: Mapping[str, str] | None = None
    ) -> bytearray:
        """The asyncio twin of :meth:`encrypt`. KEKs with ``wrap_key_async`` are awaited,
        all at once; others are called directly (a ``LocalKey`` does not block). The body is
        sealed on the event loop's thread."""
        plaintext = _contiguous(data)
        encoded = encode_context(context)
        cache = self._data_key_cache
        if cache is None:
            keys = await self._new_data_keys_async()
        else:
            keys = await self._cached_data_keys_async(cache, len(plaintext))
        header_bytes, cipher = self._begin_with(encoded, len(plaintext), keys, None)
        return _sealed(header_bytes, cipher, plaintext)

    async def decrypt_async(
        self, blob: Buffer, context: Mapping[str, str] | None = None
    ) -> bytearray:
        """The asyncio twin of :meth:`decrypt`: the header is checked against the
        configured KEKs before any KEK is awaited; the layers are unwrapped concurrently."""
        view = _contiguous(blob)
        header, header_length, plan = self._plan(view, encode_context(context))
        unwrapped = await _gather_all(
            [self._unwrap_layer_async(index, header, pairs) for index, pairs in enumerate(plan)]
        )
        body = view[header_length:]
        cipher = _body_cipher(header, [keys[1] for keys in unwrapped], len(body))
        return _opened(header, cipher, body)

    async def _new_data_keys_async(self) -> list[_DataKey]:
        keys = [secrets.token_bytes(DATA_KEY_BYTES) for _ in self._layers]
        records = await _gather_all(
            [
                _wrap_async(kek, keys[index])
                for index, layer in enumerate(self._layers)
                for kek in layer
            ]
        )
        out = []
        start = 0
        for index, layer in enumerate(self._layers):
            out.append(_DataKey(keys[index], tuple(records[start : start + len(layer)])))
            start += len(layer)
        return out

    async def _unwrap_layer_async(
        self,
        index: int,
        header: Header,
        pairs: Sequence[tuple[KeyEncryptionKey, WrappedKeyRecord]],
    ) -> tuple[bytes, bytes]:
        """The asyncio twin of :meth:`_unwrap_layer` (same order, cache and errors)."""
        layer = _LayerUnwrap(index, header, self._unwrap_cache)
        for kek, record in pairs:
            found = layer.cached(kek, record)
            if found is None:
                unwrap = getattr(kek, "unwrap_key_async", None)
                try:
                    if unwrap is not None:
                        data_key = await unwrap(_wrapped_key(record))
                    else:
                        data_key = kek.unwrap_key(_wrapped_key(record))
                except (KeyAccessError, DecryptionError) as exc:
                    layer.failed(exc)
                    continue
                found = layer.unwrapped(kek, record, data_key)
            if found is not None:
                return found
        raise layer.error()


class _LayerUnwrap:
    """The bookkeeping of unwrapping one layer, shared by the sync and asyncio paths: the
    unwrap cache, the commitment check, and why each candidate KEK failed.

    An integrity failure of any candidate wins over access errors: a tampered header must
    not be reported as an unreachable key service.
    """

    __slots__ = ("_access", "_cache", "_header", "_index", "_integrity")

    def __init__(self, index: int, header: Header, cache: UnwrapCache | None) -> None:
        self._index = index
        self._header = header
        self._cache = cache
        self._access: list[KeyAccessError] = []
        self._integrity = False

    def cached(self, kek: KeyEncryptionKey, record: WrappedKeyRecord) -> tuple[bytes, bytes] | None:
        """``(data_key, message_key)`` from the cache, still checked against the commitment."""
        if self._cache is None:
            return None
        return _cached_unwrap(self._cache, self._header, self._index, kek, record)

    def unwrapped(
        self, kek: KeyEncryptionKey, record: WrappedKeyRecord, data_key: bytes
    ) -> tuple[bytes, bytes] | None:
        """Check a data key a KEK returned; remember it only if it matches the commitment."""
        if self._cache is not None:
            self._cache._count_kek_calls(1)
        message_key = _verify_data_key(self._header, self._index, data_key)
        if message_key is None:
            self._integrity = True
            return None
        if self._cache is not None:
            _remember_unwrap(self._cache, kek, record, data_key)
        return data_key, message_key

    def failed(self, error: KeyAccessError | DecryptionError) -> None:
        if self._cache is not None:
            self._cache._count_kek_calls(1)
        if isinstance(error, KeyAccessError):
            self._access.append(error)
        else:
            self._integrity = True

    def error(self) -> EnvelopeError:
        """The exception for the caller to raise once every candidate failed."""
        if self._integrity or not self._access:
            return DecryptionError()
        if len(self._access) == 1:
            return self._access[0]
        reasons = "; ".join(str(e) for e in self._access)
        combined = KeyAccessError(
            f"layer {self._index}: none of {len(self._access)} keys could unwrap: {reasons}",
            code=self._access[-1].code,
        )
        combined.__cause__ = self._access[-1]
        return combined


def _unwrap_cache_key(kek: KeyEncryptionKey, record: WrappedKeyRecord) -> tuple[object, ...]:
    # The KEK object is part of the key: another envelope whose KEK merely reports the same
    # key id must not be handed this data key. The entry holds the KEK, so its id stays put.
    return (id(kek), record.key_id, record.wrap_algorithm, record.wrapped)


def _cached_unwrap(
    cache: UnwrapCache,
    header: Header,
    index: int,
    kek: KeyEncryptionKey,
    record: WrappedKeyRecord,
) -> tuple[bytes, bytes] | None:
    data_key = cache._take(_unwrap_cache_key(kek, record), 0)
    if data_key is None:
        return None
    message_key = _verify_data_key(header, index, data_key)
    return None if message_key is None else (data_key, message_key)


def _remember_unwrap(
    cache: UnwrapCache, kek: KeyEncryptionKey, record: WrappedKeyRecord, data_key: bytes
) -> None:
    # Only a data key that matched its commitment gets here: a forged header never does.
    cache._put(_unwrap_cache_key(kek, record), bytes(data_key), kek, 0)


async def _wrap_async(kek: KeyEncryptionKey, data_key: bytes) -> WrappedKeyRecord:
    wrap = getattr(kek, "wrap_key_async", None)
    wrapped = await wrap(data_key) if wrap is not None else kek.wrap_key(data_key)
    return _record(kek, wrapped)


async def _gather_all(awaitables: Sequence[Awaitable[_T]]) -> list[_T]:
    """Run every awaitable to completion, then raise the first failure in order, so no
    task is left running, or its error unretrieved, when one fails."""
    results = await asyncio.gather(*awaitables, return_exceptions=True)
    values: list[_T] = []
    for result in results:
        if isinstance(result, BaseException):
            raise result
        values.append(result)
    return values


def _sealed(header_bytes: bytes, cipher: FrameCipher, plaintext: memoryview) -> bytearray:
    """A new message: the header, then the body sealed in place after it."""
    size = body_size(len(plaintext), cipher.frame_size, cipher.layers)
    out = bytearray(len(header_bytes) + size)
    view = memoryview(out)
    view[: len(header_bytes)] = header_bytes
    cipher.seal_all(plaintext, view[len(header_bytes) :])
    return out


def _opened(header: Header, cipher: FrameCipher, body: memoryview) -> bytearray:
    """The whole plaintext, or an exception and no plaintext at all."""
    out = bytearray(plaintext_size(len(body), header.frame_size, len(header.layers)))
    try:
        cipher.open_all(body, memoryview(out))
    except DecryptionError:
        out[:] = bytes(len(out))  # leave no unverified plaintext behind
        raise
    return out


def _wrapped_key(record: WrappedKeyRecord) -> WrappedKey:
    return WrappedKey(record.key_id, record.wrap_algorithm.label, record.wrapped)


def _verify_data_key(header: Header, index: int, data_key: bytes) -> bytes | None:
    """The layer's message key if ``data_key`` matches the layer's commitment, else None."""
    if len(data_key) != DATA_KEY_BYTES:
        return None
    layer = header.layers[index]
    info = layer_info(header.suite, index, layer.algorithm)
    message_key, commitment = derive_layer_key(data_key, info, header.salt)
    return message_key if commitments_match(layer.commitment, commitment) else None


def _body_cipher(header: Header, message_keys: Sequence[bytes], largest_frame: int) -> FrameCipher:
    aeads = [
        new_aead(layer.algorithm, key)
        for layer, key in zip(header.layers, message_keys, strict=True)
    ]
    return FrameCipher(aeads, header_digest(header), header.frame_size, largest_frame=largest_frame)


# -- inspect ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerInfo:
    """What a header says about one layer (unauthenticated until decrypted)."""

    algorithm: str
    key_ids: tuple[str, ...]
    wrap_algorithms: tuple[str, ...]


@dataclass(frozen=True)
class MessageInfo:
    """What a header says, read without any key. Nothing here is authenticated until the
    message is decrypted: treat it as the sender's claim."""

    version: int
    suite: int
    frame_size: int
    context: Mapping[str, str]
    layers: tuple[LayerInfo, ...]
    header_length: int
    plaintext_length: int | None


def inspect(message: Buffer | Readable) -> MessageInfo:
    """Read a message's header without keys. ``message`` is the message's bytes or a
    binary file positioned at its start (only the header is read from a file).

    ``plaintext_length`` is known for bytes whose body length is consistent, else None.
    """
    plaintext_length: int | None = None
    if isinstance(message, (bytes, bytearray, memoryview)):
        view = _contiguous(message)
        header, header_length = decode_header(view)
        try:
            plaintext_length = plaintext_size(
                len(view) - header_length, header.frame_size, len(header.layers)
            )
        except DecryptionError:
            plaintext_length = None
    else:
        header, header_length = decode_header(_read_header(message))
    return MessageInfo(
        version=header.version,
        suite=int(header.suite),
        frame_size=header.frame_size,
        context=MappingProxyType(dict(header.context)),
        layers=tuple(
            LayerInfo(
                algorithm=layer.algorithm.label,
                key_ids=tuple(r.key_id for r in layer.wrapped_keys),
                wrap_algorithms=tuple(r.wrap_algorithm.label for r in layer.wrapped_keys),
            )
            for layer in header.layers
        ),
        header_length=header_length,
        plaintext_length=plaintext_length,
    )


# -- helpers ----------------------------------------------------------------------------


def _layer_keks(spec: LayerSpec, index: int) -> tuple[KeyEncryptionKey, ...]:
    given: object = spec  # checked at run time: callers may pass anything
    if isinstance(given, KeyEncryptionKey):
        keks: tuple[KeyEncryptionKey, ...] = (given,)
    elif isinstance(given, Sequence) and not isinstance(given, (str, bytes, bytearray)):
        keks = tuple(given)
    else:
        raise TypeError(f"layer {index}: expected a KEK or a list of KEKs")
    if not keks:
        raise ValueError(f"layer {index} has no key-encryption key")
    if len(keks) > MAX_WRAPPED_KEYS:
        raise ValueError(f"a layer has at most {MAX_WRAPPED_KEYS} key-encryption keys")
    for kek in keks:
        if not isinstance(kek, KeyEncryptionKey):
            raise TypeError(
                f"layer {index}: {type(kek).__name__} is not a key-encryption key "
                "(needs key_id, can_unwrap, wrap_key, unwrap_key)"
            )
    return keks


def _refuse_shared_keks(layers: Sequence[Sequence[KeyEncryptionKey]]) -> None:
    """The same KEK on two layers would make one key compromise open both."""
    owner: dict[str, int] = {}
    for index, layer in enumerate(layers):
        for kek in layer:
            previous = owner.get(kek.key_id)
            if previous is not None:
                where = "twice in" if previous == index else f"in layers {previous} and"
                raise ValueError(f"key {kek.key_id!r} is used {where} layer {index}")
            owner[kek.key_id] = index
    flat = [kek for layer in layers for kek in layer]
    for i, a in enumerate(flat):
        for b in flat[i + 1 :]:
            if a is b or a.can_unwrap(b.key_id) or b.can_unwrap(a.key_id):
                raise ValueError(f"keys {a.key_id!r} and {b.key_id!r} are the same key")


def _record(kek: KeyEncryptionKey | None, wrapped: WrappedKey) -> WrappedKeyRecord:
    if kek is not None and not kek.can_unwrap(wrapped.key_id):
        raise ValueError(
            f"{kek.key_id!r} returned a wrapped key for {wrapped.key_id!r}, "
            "an id it does not accept"
        )
    if not 0 < len(wrapped.ciphertext) <= MAX_WRAPPED_KEY_BYTES:
        raise ValueError("a KEK returned an empty or oversized wrapped key")
    ciphertext = wrapped.ciphertext
    if type(ciphertext) is not bytes:  # a KEK may hand back a bytearray it still owns
        ciphertext = bytes(ciphertext)
    return WrappedKeyRecord(WrapAlgorithm.from_label(wrapped.algorithm), wrapped.key_id, ciphertext)


def _contiguous(data: Buffer) -> memoryview:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected a bytes-like object, got {type(data).__name__}")
    view = memoryview(data)
    if not view.contiguous:
        raise ValueError("the buffer must be contiguous")
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def _writable(out: bytearray | memoryview) -> memoryview:
    view = _contiguous(out)
    if view.readonly:
        raise TypeError("out must be a writable buffer")
    return view


def _quoted_ids(records: Sequence[WrappedKeyRecord]) -> str:
    """Key ids from an (attacker-written) header for an error message: escaped, and at
    most three of at most 120 characters each."""
    shown = [repr(r.key_id if len(r.key_id) <= 120 else r.key_id[:117] + "...") for r in records]
    more = f" and {len(shown) - 3} more" if len(shown) > 3 else ""
    return ", ".join(shown[:3]) + more


def _read_header(src: Readable) -> memoryview:
    """Read exactly one header from a stream, its length checked before it is read."""
    raw = bytearray(PREFIX_BYTES)
    if _read_into(src, memoryview(raw)) < PREFIX_BYTES:
        raise FormatError("input is shorter than an envelope header")
    header_length = header_length_from_prefix(raw)
    raw.extend(bytes(header_length - PREFIX_BYTES))
    view = memoryview(raw)
    if _read_into(src, view[PREFIX_BYTES:]) < header_length - PREFIX_BYTES:
        raise FormatError("input is shorter than its header")
    return view


def _read_into(src: Readable, buf: memoryview) -> int:
    """Fill ``buf`` from ``src``; returns how much was read (less only at end of input)."""
    filled = 0
    total = len(buf)
    readinto = getattr(src, "readinto", None)
    while filled < total:
        if readinto is not None:
            got = readinto(buf[filled:])
        else:
            chunk = src.read(total - filled)
            got = None if chunk is None else len(chunk)
            if chunk:
                buf[filled : filled + len(chunk)] = chunk
        if got is None:
            # A non-blocking source with nothing ready: that is not the end of the input,
            # and taking it for one would seal a truncated plaintext as a complete message.
            raise BlockingIOError(
                errno.EAGAIN,
                "the source has no data ready; envelope streams need a blocking source",
            )
        if not got:
            break
        filled += got
    return filled
