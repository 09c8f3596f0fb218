"""``Envelope``: the configuration and the public verbs, each handed to the module that owns
its concept.

======================  ==================================================================
``_config``             checks of the layers, algorithms, frame size and caches
``_datakeys``           data keys for new messages: fresh or cached, wrapped per layer
``_unwrap``             the unwrap plan (no I/O), fall-through per layer, commitments
``_message``            header ‖ body in one piece: new headers, body ciphers, rewrap
``_streams``            frame loops in constant memory
``_files``              crash-safe file output, header-only rewrite of a file
``_bodies``             a body in pieces: sealed into buffers, opened by frame index
``_inspect``            a header read without keys
======================  ==================================================================

``Envelope`` is the only place that sees both the format and the keys. Decryption checks
every key id in the (attacker-written) header against the configured KEKs before any KEK is
asked to unwrap anything.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from ._bodies import BodyWriter, StoredBody
from ._buffers import Buffer, contiguous, fresh_output, writable
from ._cache import DataKeyCache, UnwrapCache
from ._config import LayerSpec, check_frame_size, check_optional, layer_algorithms, layer_keks
from ._datakeys import DataKey, DataKeys, to_record
from ._engine import FrameCipher, body_size, plaintext_size
from ._files import atomic_output, replace_header
from ._format import Context, Header, Suite, decode_header, encode_context, max_header_size
from ._keys import KeyEncryptionKey, WrappedKey
from ._limits import DEFAULT_FRAME_SIZE, MAX_FRAME_SIZE
from ._message import (
    MessageWriter,
    body_cipher,
    open_verified,
    opened,
    parse_header,
    rewrapped_header,
    sealed,
)
from ._parallel import check_workers, frame_size_for, seal_body
from ._streams import Readable, Writable, decrypt_frames, encrypt_frames, read_header_bytes
from ._unwrap import LayerKeys, Unwrapper

__all__ = ["Envelope"]


class Envelope:
    """Layered envelope encryption.

    ``layers`` lists the layers from the innermost out; each is one KEK, or a list of KEKs
    that all wrap that layer's data key (for availability: any one of them can decrypt).
    Every layer has its own fresh data key per message and its own KEKs. The default AEAD
    modes are AES-256-GCM, then AES-256-OCB3, then AES-256-GCM-SIV, then AES-256-GCM again.

    Decryption accepts only messages with the same number of layers whose every layer
    names a key id one of that layer's KEKs accepts; no other key is ever contacted.

    ``data_key_cache`` (a :class:`~envelope.DataKeyCache`) reuses each layer's wrapped data
    key across one-shot encryptions, ``unwrap_cache`` (an :class:`~envelope.UnwrapCache`)
    skips the unwrap of a wrapped key seen before; both are off by default (see their
    limits). ``encrypt_async``/``decrypt_async`` are the asyncio twins of ``encrypt`` and
    ``decrypt``: they await KEKs that have ``wrap_key_async``/``unwrap_key_async``.

    ``workers`` is how many threads work on one large message (default: every CPU this
    process may use; ``1``: only the caller's thread). A one-shot message of at least
    8 MiB is sealed and opened in contiguous runs of frames on a shared pool, and written
    with frames of at least 1 MiB so that each AEAD call outweighs the hand-over of the GIL;
    smaller messages never touch the pool. Streams and files write their output on a thread
    of their own while the next frames are read and sealed or opened.
    """

    def __init__(
        self,
        layers: Sequence[LayerSpec],
        *,
        algorithms: Sequence[str] | None = None,
        frame_size: int = DEFAULT_FRAME_SIZE,
        data_key_cache: DataKeyCache | None = None,
        unwrap_cache: UnwrapCache | None = None,
        workers: int | None = None,
    ) -> None:
        self._layers = layer_keks(layers)
        self._algorithms = layer_algorithms(algorithms, len(self._layers))
        self._frame_size = check_frame_size(frame_size)
        self._workers = check_workers(workers)
        self._writer = MessageWriter(self._algorithms, self._frame_size)
        # Large one-shot messages sealed on several threads get larger frames (_parallel).
        self._writers = {self._frame_size: self._writer}
        self._data_keys = DataKeys(
            self._layers, check_optional(data_key_cache, DataKeyCache, "data_key_cache")
        )
        self._unwrapper = Unwrapper(
            self._layers, check_optional(unwrap_cache, UnwrapCache, "unwrap_cache")
        )

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

    @property
    def workers(self) -> int:
        """Threads that seal and open the frames of one large message."""
        return self._workers

    def __repr__(self) -> str:
        ids = [[k.key_id for k in layer] for layer in self._layers]
        return f"Envelope(layers={ids!r}, algorithms={self.algorithms!r})"

    # -- encryption ---------------------------------------------------------------------

    def encrypt(self, data: Buffer, context: Mapping[str, str] | None = None) -> bytearray:
        """Encrypt ``data``; returns a new buffer holding the whole message.

        The result is a ``bytearray`` so that large messages are written once, in place,
        instead of being copied into an immutable ``bytes``.
        """
        plaintext = contiguous(data)
        data_keys = self._data_keys.for_message(len(plaintext))
        header, cipher = self._one_shot(encode_context(context), data_keys, len(plaintext))
        return sealed(header, cipher, plaintext, self._workers)

    async def encrypt_async(
        self, data: Buffer, context: Mapping[str, str] | None = None
    ) -> bytearray:
        """The asyncio twin of :meth:`encrypt`. KEKs with ``wrap_key_async`` are awaited,
        all at once; others are called directly (a ``LocalKey`` does not block). The body is
        sealed on the event loop's thread."""
        plaintext = contiguous(data)
        encoded = encode_context(context)
        data_keys = await self._data_keys.for_message_async(len(plaintext))
        header, cipher = self._one_shot(encoded, data_keys, len(plaintext))
        return sealed(header, cipher, plaintext, self._workers)

    def max_encrypted_size(
        self, plaintext_length: int, context: Mapping[str, str] | None = None
    ) -> int:
        """An upper bound on the size of a message: how large a buffer
        :meth:`encrypt_into` needs."""
        header = max_header_size(encode_context(context), [len(layer) for layer in self._layers])
        return header + body_size(plaintext_length, self._frame_size, len(self._layers))

    def encrypt_into(
        self, data: Buffer, out: bytearray | memoryview, context: Mapping[str, str] | None = None
    ) -> int:
        """Encrypt ``data`` into the caller's writable buffer ``out``; returns the message
        length (the message is ``out[:n]``).

        Reusing one buffer avoids the page faults of fresh memory, which cost more than the
        encryption itself for large messages. Size it with :meth:`max_encrypted_size`.
        """
        plaintext = contiguous(data)
        target = writable(out)
        data_keys = self._data_keys.for_message(len(plaintext))
        header, cipher = self._one_shot(encode_context(context), data_keys, len(plaintext))
        total = len(header) + body_size(len(plaintext), cipher.frame_size, len(self._layers))
        if len(target) < total:
            raise ValueError(f"out holds {len(target)} bytes; this message needs {total}")
        target[: len(header)] = header
        seal_body(cipher, plaintext, target[len(header) : total], self._workers)
        return total

    def encrypt_stream(
        self, src: Readable, dst: Writable, context: Mapping[str, str] | None = None
    ) -> int:
        """Encrypt everything ``src`` yields into ``dst``, one frame at a time, in constant
        memory. Returns the number of bytes written."""
        return self._encrypt_stream(src, dst, encode_context(context), self._frame_size)

    def encrypt_file(
        self,
        src: str | os.PathLike[str],
        dst: str | os.PathLike[str],
        context: Mapping[str, str] | None = None,
    ) -> int:
        """Encrypt the file ``src`` into ``dst``, atomically (see :meth:`decrypt_file`). A
        file large enough to be sealed by several workers gets frames of at least 1 MiB, as
        a one-shot message does."""
        encoded = encode_context(context)
        with open(src, "rb") as source, atomic_output(dst) as sink:
            size = os.fstat(source.fileno()).st_size
            frame_size = frame_size_for(self._frame_size, size, self._workers)
            return self._encrypt_stream(source, sink, encoded, frame_size)

    # -- decryption ---------------------------------------------------------------------

    def decrypt(self, blob: Buffer, context: Mapping[str, str] | None = None) -> bytearray:
        """Decrypt a whole message. Nothing is returned unless every frame verified.

        Raises :class:`DecryptionError` (or its subclass :class:`FormatError`) for a
        message that does not authenticate under ``context``, and :class:`KeyAccessError`
        when no configured KEK can unwrap a layer.
        """
        view = contiguous(blob)
        header, header_length, authenticated = parse_header(view, encode_context(context))
        keys = self._unwrapper.unwrap(header)
        body = view[header_length:]
        return opened(_cipher(header, authenticated, keys, len(body)), body, self._workers)

    async def decrypt_async(
        self, blob: Buffer, context: Mapping[str, str] | None = None
    ) -> bytearray:
        """The asyncio twin of :meth:`decrypt`: the header is checked against the
        configured KEKs before any KEK is awaited; the layers are unwrapped concurrently."""
        view = contiguous(blob)
        header, header_length, authenticated = parse_header(view, encode_context(context))
        keys = await self._unwrapper.unwrap_async(header)
        body = view[header_length:]
        return opened(_cipher(header, authenticated, keys, len(body)), body, self._workers)

    def decrypt_into(
        self, blob: Buffer, out: bytearray | memoryview, context: Mapping[str, str] | None = None
    ) -> int:
        """Decrypt into the caller's writable buffer; returns the plaintext length. On
        failure the used part of ``out`` is zeroed, so no unverified plaintext remains."""
        view = contiguous(blob)
        target = writable(out)
        header, header_length, authenticated = parse_header(view, encode_context(context))
        keys = self._unwrapper.unwrap(header)
        body = view[header_length:]
        cipher = _cipher(header, authenticated, keys, len(body))
        length = plaintext_size(len(body), header.frame_size, len(header.layers))
        if len(target) < length:
            raise ValueError(f"out holds {len(target)} bytes; the plaintext needs {length}")
        open_verified(cipher, body, target[:length], self._workers)
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
        header, _, authenticated = parse_header(read_header_bytes(src), expected)
        keys = self._unwrapper.unwrap(header)
        cipher = _cipher(header, authenticated, keys, MAX_FRAME_SIZE)
        return decrypt_frames(cipher, src, dst, self._workers)

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
        their commitments; the body and the encryption context are kept as they are. A data
        key unwrapped from a public-key (RSA) wrap is not wrapped under a KEK whose wraps
        need a secret (a :class:`LocalKey`, a Key Vault ``oct-HSM`` key): anyone holding the
        public key could have chosen it, and that wrap would vouch for it (``FORMAT.md``
        section 7). That is a :class:`KeyAccessError`.
        """
        view = contiguous(blob)
        new_header, header_length = self._rewrap_header(view)
        body = view[header_length:]
        out = fresh_output(len(new_header) + len(body))
        out[: len(new_header)] = new_header
        out[len(new_header) :] = body
        return out

    def rewrap_file(self, path: str | os.PathLike[str]) -> None:
        """:meth:`rewrap` the message in the file ``path``, in place: only the header
        changes. The new file is complete and synced before it replaces the old one, so a
        crash at any moment leaves either; it keeps the old file's permission bits."""
        replace_header(path, read_header_bytes, lambda old: self._rewrap_header(old)[0])

    # -- a message in pieces, for storage back ends (envelope.blob) -----------------------

    def _begin_body(self, context: Mapping[str, str] | None) -> tuple[bytes, BodyWriter]:
        """The header of a new message with fresh data keys, and the writer of its body."""
        encoded = encode_context(context)
        header, cipher = self._writer.begin(encoded, self._data_keys.fresh(), self._frame_size)
        return header, BodyWriter(cipher)

    async def _begin_body_async(
        self, context: Mapping[str, str] | None
    ) -> tuple[bytes, BodyWriter]:
        """The asyncio twin of :meth:`_begin_body`."""
        encoded = encode_context(context)
        data_keys = await self._data_keys.fresh_async()
        header, cipher = self._writer.begin(encoded, data_keys, self._frame_size)
        return header, BodyWriter(cipher)

    def _open_body(
        self, header: Buffer, message_length: int, context: Mapping[str, str] | None
    ) -> tuple[StoredBody, int]:
        """The body of a stored message of ``message_length`` bytes whose first bytes (at
        least its header) are ``header``, ready to open by frame index; and the header's
        length. The context and key ids are checked, then the data keys unwrapped."""
        parsed, header_length, authenticated = parse_header(
            contiguous(header), encode_context(context)
        )
        keys = self._unwrapper.unwrap(parsed)
        return _stored(parsed, authenticated, keys, message_length - header_length), header_length

    async def _open_body_async(
        self, header: Buffer, message_length: int, context: Mapping[str, str] | None
    ) -> tuple[StoredBody, int]:
        """The asyncio twin of :meth:`_open_body`."""
        parsed, header_length, authenticated = parse_header(
            contiguous(header), encode_context(context)
        )
        keys = await self._unwrapper.unwrap_async(parsed)
        return _stored(parsed, authenticated, keys, message_length - header_length), header_length

    def _rewrap_header(self, view: memoryview) -> tuple[bytes, int]:
        """The header at the start of ``view`` with its data keys wrapped under this
        envelope's KEKs, and the old header's length."""
        header, header_length = decode_header(view)
        keys = self._unwrapper.unwrap(header)
        wrapped = [
            self._data_keys.wrap(index, k.data_key, secret=k.secret) for index, k in enumerate(keys)
        ]
        return rewrapped_header(header, wrapped), header_length

    async def _rewrap_header_async(self, view: memoryview) -> tuple[bytes, int]:
        """The asyncio twin of :meth:`_rewrap_header`: every KEK is awaited."""
        header, header_length = decode_header(view)
        keys = await self._unwrapper.unwrap_async(header)
        wrapped = [
            await self._data_keys.wrap_async(index, k.data_key, secret=k.secret)
            for index, k in enumerate(keys)
        ]
        return rewrapped_header(header, wrapped), header_length

    # -- internals ----------------------------------------------------------------------

    def _one_shot(
        self, context: Context, data_keys: Sequence[DataKey], nbytes: int
    ) -> tuple[bytes, FrameCipher]:
        """The header and body cipher of a one-shot message of ``nbytes``: with larger
        frames when it is large enough to be sealed on several threads."""
        frame_size = frame_size_for(self._frame_size, nbytes, self._workers)
        return self._writer_for(frame_size).begin(context, data_keys, nbytes)

    def _encrypt_stream(
        self, src: Readable, dst: Writable, context: Context, frame_size: int
    ) -> int:
        # Streams never use the data-key cache: their length is unknown up front.
        data_keys = self._data_keys.fresh()
        header, cipher = self._writer_for(frame_size).begin(context, data_keys, frame_size)
        dst.write(header)
        return len(header) + encrypt_frames(cipher, src, dst, self._workers)

    def _writer_for(self, frame_size: int) -> MessageWriter:
        writer = self._writers.get(frame_size)
        if writer is None:
            writer = self._writers[frame_size] = MessageWriter(self._algorithms, frame_size)
        return writer

    def _encrypt_with(
        self,
        data: Buffer,
        context: Mapping[str, str] | None,
        *,
        salt: bytes,
        data_keys: Sequence[tuple[bytes, Sequence[WrappedKey]]],
        suite: Suite | None = None,
    ) -> bytearray:
        """Deterministic encryption for test vectors: fixed salt, pre-wrapped keys and a
        chosen suite."""
        plaintext = contiguous(data)
        keys = [
            DataKey.of(key, tuple(to_record(None, w) for w in wrapped))
            for key, wrapped in data_keys
        ]
        writer = MessageWriter(self._algorithms, self._frame_size, suite)
        header, cipher = writer.begin(encode_context(context), keys, len(plaintext), salt)
        return sealed(header, cipher, plaintext)


def _cipher(
    header: Header, authenticated: bytes, keys: Sequence[LayerKeys], largest_frame: int
) -> FrameCipher:
    """The cipher for a body under ``header`` once every layer's keys are unwrapped."""
    return body_cipher(header, authenticated, [k.message_key for k in keys], largest_frame)


def _stored(
    header: Header, authenticated: bytes, keys: Sequence[LayerKeys], body_length: int
) -> StoredBody:
    return StoredBody(_cipher(header, authenticated, keys, MAX_FRAME_SIZE), body_length)
