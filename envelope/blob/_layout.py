"""How an envelope message lies in a block blob, and everything about it that needs no I/O:
the context that binds the blob's name, block ids, the blocks of an upload, the frames a
ranged read needs, and the loop that opens frames as the download's chunks arrive. The sync
and asyncio clients (``_client``, ``aio._client``) do only the I/O, side by side.

Layout of a blob written by :meth:`EncryptedBlobClient.upload`::

    block 0        the header, alone
    block 1 … n    the body: whole frames, ``frames_per_block`` of them per block; the last
                   block ends with the final frame (an empty final frame rides in the last
                   full block when the plaintext ends on a block boundary)

A message whose plaintext fits in one block is written in one piece (Put Blob). Because
the header has a block of its own, a rewrap stages a new header block and commits a block
list that names it and then the committed body blocks as they are. A blob in another layout
(its header sharing a block, or block ids that cannot be named back or leave no new id
free: the storage's writer chose them) is rewritten: whole if its body fits in a block,
else into this layout, a block at a time.

Everything the storage says is a claim: its block ids, and its length, which the final
frame proves before anything is allocated from it.
"""

from __future__ import annotations

import base64
import contextlib
import io
import itertools
import os
import re
import secrets
import string
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobBlock, BlockState, ContentSettings

from .._bodies import BodyWriter, StoredBody
from .._buffers import contiguous, fresh_output, wipe
from .._envelope import Envelope
from .._errors import DecryptionError, FormatError, InsecureTransportError
from .._files import atomic_output
from .._format import PREFIX_BYTES, TAG_BYTES, header_length_from_prefix
from .._streams import Readable, read_into
from ._names import BlobIdentity, blob_identity, check_account_name

__all__ = [
    "ACCOUNT_KEY",
    "CONTAINER_KEY",
    "DEFAULT_BLOCK_SIZE",
    "HEADER_READ",
    "NAME_KEY",
    "RESERVED_KEYS",
    "FrameReader",
    "Sink",
    "block_id",
    "blob_context",
    "check_https",
    "frames_per_block",
    "header_block_id",
    "header_length_needed",
    "total_size",
]

#: The context keys that bind a message to its blob (FORMAT.md has no notion of blobs: these
#: are ordinary context entries, authenticated by every frame like any other).
ACCOUNT_KEY = "envelope.blob.account"
CONTAINER_KEY = "envelope.blob.container"
NAME_KEY = "envelope.blob.name"
RESERVED_KEYS = frozenset({ACCOUNT_KEY, CONTAINER_KEY, NAME_KEY})

#: Plaintext per body block, rounded down to whole frames: large enough that a block's
#: request overhead is small, small enough to upload several at once in constant memory.
DEFAULT_BLOCK_SIZE = 4 * 1024 * 1024
#: Bytes asked for when a blob's header is read: every real header fits (two layers with two
#: RSA-4096 wraps each are under 3 KiB); a larger one costs a second request.
HEADER_READ = 16 * 1024
#: Azure's limit on the blocks of one blob.
MAX_BLOCKS = 50_000

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
# Block ids of one blob must all have the same length: a kind, a 10-digit index and a
# token of the upload, "h-0000000000-<16 hex>" (29 characters).
_TOKEN_BYTES = 8
#: The symbols of a header block id made to fit another writer's ids, and how many random
#: ones are tried before the ordered search.
_ID_SYMBOLS = string.ascii_letters + string.digits + "-_"
_RANDOM_ID_TRIES = 8


def check_https(url: str) -> None:
    """Refuse a storage URL that is not https, before any request."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme != "https":
        raise InsecureTransportError(
            f"refused a {scheme or 'scheme-less'} storage URL; only https is allowed",
            reason="plaintext",
        )


def blob_context(
    identity: BlobIdentity | None, context: Mapping[str, str] | None
) -> dict[str, str]:
    """The context a message in this blob is written and read with: the caller's, and (when
    the blob is bound, ``identity``) the blob's account, container and name under
    :data:`RESERVED_KEYS`."""
    merged = dict(context or {})
    reserved = sorted(RESERVED_KEYS & set(merged))
    if reserved:
        raise ValueError(f"context keys {reserved} are reserved for the blob's identity")
    if identity is not None:
        merged[ACCOUNT_KEY] = identity.account
        merged[CONTAINER_KEY] = identity.container
        merged[NAME_KEY] = identity.name
    return merged


def frames_per_block(frame_size: int, block_size: int) -> int:
    if not isinstance(block_size, int) or block_size <= 0:
        raise ValueError("block_size must be a positive integer")
    return max(1, block_size // frame_size)


def new_token() -> str:
    return secrets.token_hex(_TOKEN_BYTES)


def block_id(kind: str, index: int, token: str) -> str:
    """The id of block ``index`` of an upload: ``kind`` is ``h`` (header) or ``b`` (body)."""
    return f"{kind}-{index:010d}-{token}"


def header_block_id(existing: Sequence[str]) -> str | None:
    """A new header block id for a rewrap that keeps the blocks ``existing``: as many bytes
    long as theirs (Azure wants one length for the block ids of a blob) and equal to none of
    them; None if the blob's ids leave none free.

    The ids are the storage writer's choice, so the search is bounded: this library's own
    form, then a few random ids (from 64 symbols: any length of 4 or more has 16 million,
    more than the 50,000 blocks a blob may have), then the first free id in a fixed order
    among as many candidates as there are ids, plus one (one of them is free whenever the
    id space is that large)."""
    lengths = {len(existing_id.encode("utf-8")) for existing_id in existing}
    if len(lengths) > 1:
        return None
    ours = block_id("h", 0, new_token())
    length = lengths.pop() if lengths else len(ours)
    taken = set(existing)
    if len(ours) == length and ours not in taken:
        return ours
    for _ in range(_RANDOM_ID_TRIES):
        candidate = "".join(secrets.choice(_ID_SYMBOLS) for _ in range(length))
        if candidate not in taken:
            return candidate
    ordered = itertools.product(_ID_SYMBOLS, repeat=length)
    for symbols in itertools.islice(ordered, len(taken) + 1):
        candidate = "".join(symbols)
        if candidate not in taken:
            return candidate
    return None


def sent_as_listed(block_id: str) -> bool:
    """Whether the Storage SDK names ``block_id`` (an id of its ``get_block_list``) to the
    service as the service listed it. It lists ids base64-encoded and decodes them as UTF-8;
    an id that is not UTF-8 it hands over as the base64 text itself, which ``BlobBlock``
    would then encode again: a block that does not exist. Such ids look like base64 of
    bytes that are not UTF-8 (an id that merely looks like that is refused too: the blob is
    then rewritten in this library's layout)."""
    try:
        raw = base64.b64decode(block_id, validate=True)
    except ValueError:
        return True
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def total_size(content_range: str | None, received: int) -> int:
    """The blob's whole size, from a ranged reply's ``Content-Range`` (``bytes a-b/total``);
    a reply without one held the whole blob."""
    if not content_range:
        return received
    match = _CONTENT_RANGE.fullmatch(content_range.strip())
    if match is None:
        raise DecryptionError()
    return int(match[3])


@contextlib.contextmanager
def empty_blob_is_no_message() -> Iterator[None]:
    """A ranged read of an empty blob is refused (416): that blob holds no message."""
    try:
        yield
    except HttpResponseError as exc:
        if exc.status_code == 416:
            raise FormatError("the blob is empty, not an envelope message") from None
        raise


def header_length_needed(prefix: bytes | bytearray | memoryview, blob_size: int) -> int:
    """How many bytes from the start of the blob hold its header (checked against the limit
    before anything is read or allocated). A blob shorter than that fails here."""
    if blob_size < PREFIX_BYTES or len(prefix) < PREFIX_BYTES:
        raise FormatError("the blob is shorter than an envelope header")
    length = header_length_from_prefix(contiguous(prefix)[:PREFIX_BYTES])
    if length > blob_size:
        raise FormatError("the blob is shorter than its header")
    return length


class FirstRead(NamedTuple):
    """What the first read of a blob brought: its first bytes (the whole header among
    them), the header's length, the blob's size and its properties (the ETag pins every
    later request to this version)."""

    prefix: bytes
    header_length: int
    size: int
    properties: Any

    @property
    def header(self) -> bytes:
        return self.prefix[: self.header_length]


@dataclass(frozen=True)
class OpenedBlob:
    """A blob's header read and its keys unwrapped: its body, ready to fetch and open."""

    body: StoredBody
    header_length: int
    etag: str
    #: The blob's first bytes as read with the header: a small blob's body is among them.
    prefix: bytes = b""

    def ranges(self, start: int, stop: int, chunk: int) -> list[tuple[int, int]]:
        """Body bytes ``[start, stop)`` as ``(blob offset, length)`` reads of ``chunk``."""
        return [
            (self.header_length + at, min(chunk, stop - at)) for at in range(start, stop, chunk)
        ]

    def cached(self, start: int, stop: int) -> bytes | None:
        """Body bytes ``[start, stop)`` if the first read brought them, else None."""
        begin, end = self.header_length + start, self.header_length + stop
        return self.prefix[begin:end] if end <= len(self.prefix) else None


class Fetch:
    """One fetch of frames ``frames`` of an opened blob: the reader that opens them as their
    bytes come, and the reads that bring them (none if the first read brought them). The
    final frame, if ``final`` holds it already, is not fetched again but emitted last."""

    def __init__(
        self,
        opened: OpenedBlob,
        frames: range,
        sink: Sink,
        final: FinalFrame | None,
        batch: int,
        chunk: int,
    ) -> None:
        self.opened = opened
        self._frames, self._sink, self._final = frames, sink, final
        fetched = frames if final is None else final.before(frames)
        self.reader = FrameReader(opened.body, fetched, sink, batch)
        start, stop = opened.body.body_span(fetched)
        self._cached = opened.cached(start, stop)
        self.ranges = [] if self._cached is not None else opened.ranges(start, stop, chunk)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Around the reads: every byte must come and every frame open; the reader's
        buffers are wiped on any failure."""
        try:
            if self._cached is not None:
                self.reader.feed(self._cached)
            yield
            self.reader.finish()
            if self._final is not None:
                self._final.emit_into(self._frames, self._sink)
        except BaseException:
            self.reader.wipe()
            raise


class BlobClientBase:
    """What the sync and asyncio clients share: the configuration, and the context."""

    def __init__(
        self,
        blob_client: Any,
        envelope: Envelope,
        *,
        bind_to_blob: bool = True,
        account_name: str | None = None,
        block_size: int = DEFAULT_BLOCK_SIZE,
        max_concurrency: int = 4,
    ) -> None:
        check_https(blob_client.url)
        if not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ValueError("max_concurrency must be a positive integer")
        if account_name is not None:
            check_account_name(account_name)
        self._blob = blob_client
        self._envelope = envelope
        self._identity = blob_identity(blob_client, account_name) if bind_to_blob else None
        self._frames_per_block = frames_per_block(envelope.frame_size, block_size)
        self._block_plaintext = self._frames_per_block * envelope.frame_size
        # A download reads the body in ranges of a block's sealed frames.
        sealed_frame = envelope.frame_size + TAG_BYTES * len(envelope.layers)
        self._chunk = self._frames_per_block * sealed_frame
        self._max_concurrency = max_concurrency

    @property
    def envelope(self) -> Envelope:
        return self._envelope

    def _fetching(
        self, opened: OpenedBlob, frames: range, sink: Sink, final: FinalFrame | None = None
    ) -> Fetch:
        return Fetch(opened, frames, sink, final, self._frames_per_block, self._chunk)

    def context(self, context: Mapping[str, str] | None = None) -> dict[str, str]:
        """The whole encryption context of a message in this blob: ``context`` and, when
        bound, the blob's identity."""
        return blob_context(self._identity, context)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._blob.url!r}, {self._envelope!r})"


class BlockUpload:
    """The blocks of one staged upload as they are sealed: the header block, then body
    blocks, each id unique to this upload."""

    def __init__(self, header: bytes, writer: BodyWriter) -> None:
        self._token = new_token()
        self._writer = writer
        self.ids = [block_id("h", 0, self._token)]
        self.header = header

    def block(self, plaintext: memoryview, final: bool) -> tuple[str, bytes]:
        """The next body block: its id and content."""
        index = len(self.ids)
        check_block_count(index)
        content = bytes(seal_block(self._writer, plaintext, final))
        self.ids.append(block_id("b", index, self._token))
        return self.ids[-1], content

    def block_list(self) -> list[BlobBlock]:
        return [BlobBlock(block_id) for block_id in self.ids]


class Sink(Protocol):
    def __call__(self, plaintext: memoryview, /) -> None: ...


class FrameReader:
    """Opens frames as the bytes of a ranged download arrive, in order, in chunks of any
    size: whole batches of frames are opened from one reused buffer and handed to
    ``emit`` (a view, valid until the next call; wiped if a later frame fails)."""

    def __init__(self, body: StoredBody, frames: range, emit: Sink, batch: int) -> None:
        self._body = body
        self._emit = emit
        self._next = frames.start
        self._stop = frames.stop
        start, stop = body.body_span(frames)
        self._expected = stop - start
        self._received = 0
        per_batch = max(1, batch)
        self._batch = per_batch
        self._sealed = memoryview(bytearray(min(per_batch * body.sealed_frame, self._expected)))
        plain = body.plaintext_span(range(frames.start, min(frames.stop, frames.start + per_batch)))
        self._plain = memoryview(bytearray(plain[1] - plain[0]))
        self._filled = 0

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        view = memoryview(chunk).cast("B")
        self._received += len(view)
        if self._received > self._expected:
            raise DecryptionError()  # the store sent more than the range holds
        while view:
            room = len(self._sealed) - self._filled
            taken = view[:room]
            self._sealed[self._filled : self._filled + len(taken)] = taken
            self._filled += len(taken)
            view = view[len(taken) :]
            if self._filled == len(self._sealed) and self._filled:
                self._open_batch()

    def finish(self) -> None:
        """Open what is left; fail unless every byte of the range came."""
        if self._received != self._expected:
            raise DecryptionError()
        if self._filled:
            self._open_batch()
        if self._next != self._stop:
            raise DecryptionError()

    def wipe(self) -> None:
        wipe(self._plain)
        wipe(self._sealed)

    def _open_batch(self) -> None:
        frames = range(self._next, min(self._stop, self._next + self._batch))
        start, stop = self._body.plaintext_span(frames)
        sealed_start, sealed_stop = self._body.body_span(frames)
        sealed = self._sealed[: sealed_stop - sealed_start]
        if self._filled != len(sealed):
            raise DecryptionError()
        out = self._plain[: stop - start]
        self._body.open(frames, sealed, out)
        self._emit(out)
        self._next = frames.stop
        self._filled = 0


class BufferSink:
    """The part of the verified plaintext a ranged read asked for, copied into one output
    buffer: the frames' first ``skip`` bytes are not asked for, nor what follows ``out``."""

    def __init__(self, out: bytearray, skip: int) -> None:
        self._out = memoryview(out)
        self._skip = skip
        self._position = 0

    @property
    def full(self) -> bool:
        return self._position == len(self._out)

    def __call__(self, plaintext: memoryview, /) -> None:
        if self._skip:
            dropped = min(self._skip, len(plaintext))
            plaintext = plaintext[dropped:]
            self._skip -= dropped
        taken = plaintext[: len(self._out) - self._position]
        self._out[self._position : self._position + len(taken)] = taken
        self._position += len(taken)


@contextlib.contextmanager
def buffer_output(size: int, skip: int) -> Iterator[tuple[bytearray, Sink]]:
    """A buffer for ``size`` bytes of plaintext and the sink that fills it, every byte of
    it (a large one is not zeroed first); wiped if the block fails or leaves a byte
    unwritten, so no plaintext of a failed download, nor stale memory, remains.

    ``size`` is a length the caller asked for or one the final frame proved, never one the
    storage merely claims."""
    out = fresh_output(size)
    sink = BufferSink(out, skip)
    try:
        yield out, sink
        if not sink.full:
            raise DecryptionError()
    except BaseException:
        wipe(out)
        raise


class FinalFrame:
    """The final frame's plaintext, opened first: its flag and index prove the plaintext's
    length before anything is allocated from it, or a cut or extended blob fails before any
    other frame is fetched. Emitted after the other frames, then wiped."""

    def __init__(self, body: StoredBody) -> None:
        self.frames = range(body.frame_count - 1, body.frame_count)
        start, stop = body.plaintext_span(self.frames)
        self.plaintext = bytearray(stop - start)
        self.sink = BufferSink(self.plaintext, 0)

    def before(self, frames: range) -> range:
        """``frames`` without the final one (which is emitted from here)."""
        return range(frames.start, min(frames.stop, self.frames.start))

    def emit_into(self, frames: range, sink: Sink) -> None:
        if frames.stop == self.frames.stop:
            sink(memoryview(self.plaintext))

    @contextlib.contextmanager
    def opening(self) -> Iterator[None]:
        """Around the fetch of the final frame: its whole plaintext must come; wiped if not."""
        try:
            yield
            if not self.sink.full:
                raise DecryptionError()
        except BaseException:
            self.wipe()
            raise

    def wipe(self) -> None:
        wipe(self.plaintext)

    def __enter__(self) -> FinalFrame:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.wipe()


@contextlib.contextmanager
def range_output(
    body: StoredBody, offset: int, length: int | None, final: FinalFrame | None
) -> Iterator[tuple[range, bytearray, Sink]]:
    """The frames of a ranged read, its output buffer and the sink that fills it (see
    :func:`plan_range`, :func:`buffer_output`); ``final``, if opened, is wiped after."""
    with final or contextlib.nullcontext():
        frames, skip, size = plan_range(body, offset, length)
        with buffer_output(size, skip) as (out, sink):
            yield frames, out, sink


@contextlib.contextmanager
def output_sink(writable: Any) -> Iterator[Sink]:
    """The sink of ``download_to``: a path gets crash-safe file output (the file appears
    once every frame verified); a stream gets verified frames, and is cut back to where it
    stood if the download fails (when it is seekable)."""
    if isinstance(writable, (str, os.PathLike)):
        with atomic_output(writable) as handle:
            yield StreamSink(handle)
        return
    stream = StreamSink(writable)
    try:
        yield stream
    except BaseException:
        stream.roll_back()
        raise


def check_range(offset: Any, length: Any) -> None:
    if not isinstance(offset, int) or offset < 0:
        raise ValueError("offset must be a non-negative integer")
    if length is not None and (not isinstance(length, int) or length < 0):
        raise ValueError("length must be a non-negative integer or None")


def reaches_end(body: StoredBody, offset: int, length: int | None) -> bool:
    """Whether bytes ``[offset, offset + length)`` reach the end the storage claims (or lie
    beyond it): then the final frame must prove that end first."""
    return length is None or offset + length >= body.plaintext_length


def plan_range(body: StoredBody, offset: int, length: int | None) -> tuple[range, int, int]:
    """For plaintext bytes ``[offset, offset + length)`` (``length`` None: to the end):
    the frames to fetch and open, how many of their first plaintext bytes to skip, and how
    many bytes the caller gets, for an ``offset`` and ``length`` that passed
    :func:`check_range`. An offset past the end is the caller's mistake only once the final
    frame proved that end (see :func:`reaches_end`)."""
    if offset > body.plaintext_length:
        raise ValueError(f"offset must be 0 to {body.plaintext_length} (the plaintext's length)")
    if length is None:
        length = body.plaintext_length - offset
    length = min(length, body.plaintext_length - offset)
    frames = body.frames(offset, length)
    return frames, offset - body.plaintext_span(frames)[0], length


def seal_block(writer: BodyWriter, plaintext: memoryview, final: bool) -> bytearray:
    """One body block: ``plaintext`` (whole frames unless ``final``) sealed."""
    block = bytearray(writer.sealed_size(len(plaintext), final=final))
    writer.seal(plaintext, memoryview(block), final=final)
    return block


def check_block_count(index: int) -> None:
    if index >= MAX_BLOCKS:
        raise ValueError(
            f"the upload needs more than {MAX_BLOCKS} blocks (Azure's limit): use a larger "
            "block_size"
        )


def reuse_plan(committed: Sequence[Any], header_length: int) -> tuple[str, list[str]] | None:
    """For a header-only rewrap: the new header block's id and the ids of the committed body
    blocks it keeps. None when the committed list does not have the header in a block of
    its own, or has ids the SDK cannot name back or that leave no new id free: the blob is
    then rewritten (:func:`rewrite_plan`)."""
    if len(committed) < 2 or committed[0].size != header_length:
        return None
    ids = [block.id for block in committed]
    if not all(isinstance(block_id, str) and sent_as_listed(block_id) for block_id in ids):
        return None
    new_id = header_block_id(ids)
    return None if new_id is None else (new_id, ids[1:])


def body_if_read(first: FirstRead) -> bytes | None:
    """The body, if the first read brought the whole blob."""
    return first.prefix[first.header_length :] if len(first.prefix) == first.size else None


def deliver(result: Any, consume: Callable[[Any], None] | None) -> None:
    if consume is not None:
        consume(result)


class Rewrite(NamedTuple):
    """A blob rewritten in this library's layout by a rewrap that cannot keep its blocks:
    the ids of the new header block and of the body blocks, and the blob range each body
    block copies (the body is the same bytes; only the header changes)."""

    header_id: str
    body: list[tuple[str, int, int]]

    def block_list(self) -> list[BlobBlock]:
        return [BlobBlock(self.header_id)] + [BlobBlock(block_id) for block_id, _, _ in self.body]


def rewrite_plan(header_length: int, size: int, chunk: int) -> Rewrite:
    """The blocks that rewrite a blob of ``size`` bytes whose header is ``header_length``
    long: body ranges of ``chunk`` bytes (a block's sealed frames), copied a few at a time,
    so a rewrap never holds more than that many blocks, whatever the blob's size."""
    token = new_token()
    ranges = range(header_length, size, chunk)
    check_block_count(len(ranges))
    body = [
        (block_id("b", index, token), start, min(chunk, size - start))
        for index, start in enumerate(ranges, start=1)
    ]
    return Rewrite(block_id("h", 0, token), body)


def rewrapped_block_list(header_id: str, body_ids: Sequence[str]) -> list[BlobBlock]:
    """The new header block, then the body blocks as they are committed."""
    blocks = [BlobBlock(header_id, BlockState.UNCOMMITTED)]
    return blocks + [BlobBlock(block_id, BlockState.COMMITTED) for block_id in body_ids]


def pinned(etag: str) -> dict[str, Any]:
    """The condition that a request applies to the version of the blob whose ETag is
    ``etag``: a blob replaced in between fails the request instead of mixing versions."""
    return {"etag": etag, "match_condition": MatchConditions.IfNotModified}


def kept_properties(properties: Any) -> dict[str, Any]:
    """What a rewrite of the blob keeps: its content settings (but not the old content's
    MD5, which the new content would not match) and its metadata."""
    settings = properties.content_settings
    return {
        "content_settings": ContentSettings(
            content_type=settings.content_type,
            content_encoding=settings.content_encoding,
            content_language=settings.content_language,
            content_disposition=settings.content_disposition,
            cache_control=settings.cache_control,
        ),
        "metadata": dict(properties.metadata or {}),
    }


def commit_conditions(overwrite: bool) -> dict[str, Any]:
    """Without ``overwrite`` the commit succeeds only if no blob of that name exists."""
    return {} if overwrite else {"etag": "*", "match_condition": MatchConditions.IfMissing}


def chunks(data: Any, size: int) -> Iterator[tuple[memoryview, bool]]:
    """``data`` (a bytes-like object, or a binary stream with ``read``) in pieces of ``size``
    bytes, each with whether it is the last; one piece is read ahead to know that."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        view = contiguous(data)
        for start in range(0, max(len(view), 1), size):
            yield view[start : start + size], start + size >= len(view)
        return
    if getattr(data, "read", None) is None:
        raise TypeError("data must be a bytes-like object or a binary stream with read()")
    current = read_piece(data, size)
    while True:
        following = read_piece(data, size) if len(current) == size else memoryview(b"")
        yield current, not following
        if not following:
            return
        current = following


class StreamSink:
    """Verified plaintext written to a caller's binary stream. On failure, a seekable stream
    is cut back to where it stood, so it keeps nothing of this download."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._start: int | None = None
        try:
            if stream.seekable():
                self._start = stream.tell()
        except (AttributeError, OSError, io.UnsupportedOperation):
            self._start = None

    def __call__(self, plaintext: memoryview, /) -> None:
        self._stream.write(plaintext)

    def roll_back(self) -> None:
        if self._start is None:
            return
        self._stream.seek(self._start)
        self._stream.truncate()


def read_piece(source: Readable, size: int) -> memoryview:
    """Up to ``size`` bytes of a sync binary stream, read into a buffer of their own; fewer
    only at the end of the input. A source with nothing ready is refused (``BlockingIOError``):
    that is not the end of the input."""
    piece = memoryview(bytearray(size))
    return piece[: read_into(source, piece)]
