"""``EncryptedBlobClient``: envelope messages in Azure block blobs, over a ``BlobClient``.

The I/O of each verb, in the order the asyncio twin (``aio/_client.py``) repeats it; what
needs no I/O is in ``_layout``.
"""

from __future__ import annotations

import collections
import concurrent.futures
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobClient

from .._bodies import StoredBody
from .._inspect import MessageInfo, header_info
from . import _layout
from ._layout import HEADER_READ, BlobClientBase, BlockUpload, FrameReader

__all__ = ["EncryptedBlobClient"]


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


class EncryptedBlobClient(BlobClientBase):
    """Envelope messages in one Azure block blob, through ``blob_client`` (an
    ``azure.storage.blob.BlobClient``) and ``envelope`` (the layers and keys).

    * :meth:`upload` streams in constant memory: the header in a block of its own, the body
      in blocks of whole frames (``block_size`` bytes of plaintext, rounded down to whole
      frames), up to ``max_concurrency`` of them uploaded at once, then one commit; a
      message that fits in one block is written in one request.
    * :meth:`download` and :meth:`download_to` release only verified plaintext; a ranged
      read fetches only the frames that hold the range and verifies them, the final frame
      (and its flag) included whenever the range reaches the end.
    * :meth:`rewrap` rewrites the header only: a new header block and a block list that
      reuses the committed body blocks, so the body is never downloaded or uploaded again.

    By default (``bind_to_blob=True``) the blob's account, container and name are bound
    into the message's encryption context (the reserved keys ``envelope.blob.account``,
    ``envelope.blob.container`` and ``envelope.blob.name``): a blob copied or renamed fails
    to decrypt. Pass ``bind_to_blob=False`` for messages meant to move between blobs. The
    account is read from the blob's URL, the same for every spelling of Azure's host names
    (any case, private link, DNS zone, secondary) and path-style URLs; for a host that does
    not name it (a custom domain) pass ``account_name=``, or the client is refused
    (``ValueError``) when it is made. The binding names the blob, not a version of it.

    An ``http://`` storage URL is refused (:class:`~envelope.InsecureTransportError`).
    Storage failures (a missing blob, a refused credential, a blob changed during a read)
    are the Azure SDK's own exceptions; every integrity failure is a
    :class:`~envelope.DecryptionError`.
    """

    @property
    def blob_client(self) -> BlobClient:
        return cast("BlobClient", self._blob)

    # -- upload ---------------------------------------------------------------------------

    def upload(
        self, data: Any, *, context: Mapping[str, str] | None = None, overwrite: bool = False
    ) -> dict[str, Any]:
        """Encrypt ``data`` (a bytes-like object or a binary stream) into the blob; returns
        the service's reply (``etag``, ``last_modified`` ...). Nothing is visible in the
        blob until the last block is committed. Without ``overwrite`` an existing blob is
        left alone (``ResourceExistsError``)."""
        header, writer = self._envelope._begin_body(self.context(context))
        pieces = _layout.chunks(data, self._block_plaintext)
        first, last = next(pieces)
        if last:
            block = _layout.seal_block(writer, first, True)
            return _reply(self._blob.upload_blob(bytes(header) + block, overwrite=overwrite))
        if not overwrite and self._blob.exists():
            raise ResourceExistsError(f"{self._blob.url} exists; pass overwrite=True")
        upload = BlockUpload(header, writer)
        with concurrent.futures.ThreadPoolExecutor(self._max_concurrency) as pool:
            stage = self._blob.stage_block
            pending = collections.deque([pool.submit(stage, upload.ids[0], header)])
            try:
                for piece, final in _with_first(first, last, pieces):
                    block_id, content = upload.block(piece, final)
                    pending.append(pool.submit(stage, block_id, content))
                    while len(pending) > self._max_concurrency:
                        pending.popleft().result()
                while pending:
                    pending.popleft().result()
            finally:
                for future in pending:
                    future.cancel()
        conditions = _layout.commit_conditions(overwrite)
        return _reply(self._blob.commit_block_list(upload.block_list(), **conditions))

    # -- download -------------------------------------------------------------------------

    def download(
        self,
        *,
        context: Mapping[str, str] | None = None,
        offset: int = 0,
        length: int | None = None,
    ) -> bytearray:
        """The plaintext, or its bytes ``[offset, offset + length)``, once every frame that
        holds them verified; nothing otherwise."""
        opened = self.open(context)
        frames, skip, size = _layout.plan_range(opened.body, offset, length)
        with _layout.buffer_output(size, skip) as (out, sink):
            self._fetch(opened, frames, sink)
        return out

    def download_to(self, writable: Any, *, context: Mapping[str, str] | None = None) -> int:
        """Decrypt the whole blob into ``writable``: a path (the file appears, mode 0600,
        only once every frame verified) or a binary stream (only verified frames are
        written, and on failure a seekable stream is cut back to where it started). Returns
        the plaintext's length."""
        opened = self.open(context)
        with _layout.output_sink(writable) as sink:
            self._fetch(opened, opened.body.frames(0, opened.body.plaintext_length), sink)
        return opened.body.plaintext_length

    def inspect(self) -> MessageInfo:
        """What the blob's header says, read without keys (one small read): version, frame
        size, context, each layer's key ids, the plaintext's length. Nothing in it is
        authenticated until the blob is decrypted."""
        first = self._read_header()
        return header_info(first.header, first.size)

    def open(self, context: Mapping[str, str] | None = None) -> OpenedBlob:
        """Read the blob's header, check its context and key ids, unwrap its data keys."""
        first = self._read_header()
        body, header_length = self._envelope._open_body(
            first.header, first.size, self.context(context)
        )
        return OpenedBlob(body, header_length, first.properties.etag, first.prefix)

    def _read_header(self) -> _layout.FirstRead:
        """The blob's first bytes (its header whole, and whatever else the first read
        brought); its size; its properties.
        Every later read and write is conditional on this version (its ETag)."""
        with _layout.empty_blob_is_no_message():
            downloader = self._blob.download_blob(offset=0, length=HEADER_READ)
        prefix = downloader.readall()
        properties = downloader.properties
        size = _layout.total_size(properties.content_range, len(prefix))
        needed = _layout.header_length_needed(prefix, size)
        if needed > len(prefix):
            rest = self._blob.download_blob(
                offset=len(prefix), length=needed - len(prefix), **_layout.pinned(properties)
            )
            prefix += rest.readall()
        return _layout.FirstRead(prefix, needed, size, properties)

    def _fetch(self, opened: OpenedBlob, frames: range, sink: _layout.Sink) -> None:
        """Fetch the body bytes of ``frames``, in ranges of about a block, up to
        ``max_concurrency`` at once, and open them in order as they come."""
        reader = FrameReader(opened.body, frames, sink, self._frames_per_block)
        start, stop = opened.body.body_span(frames)
        cached = opened.cached(start, stop)
        ranges = [] if cached is not None else opened.ranges(start, stop, self._chunk)
        try:
            if cached is not None:
                reader.feed(cached)
            if len(ranges) == 1:
                reader.feed(self._read_range(opened.etag, *ranges[0]))
            elif ranges:
                with concurrent.futures.ThreadPoolExecutor(self._max_concurrency) as pool:
                    pending: collections.deque[concurrent.futures.Future[bytes]]
                    pending = collections.deque()
                    try:
                        for offset, length in ranges:
                            pending.append(
                                pool.submit(self._read_range, opened.etag, offset, length)
                            )
                            if len(pending) >= self._max_concurrency:
                                reader.feed(pending.popleft().result())
                        while pending:
                            reader.feed(pending.popleft().result())
                    finally:
                        for future in pending:
                            future.cancel()
            reader.finish()
        except BaseException:
            reader.wipe()
            raise

    def _read_range(self, etag: str, offset: int, length: int) -> bytes:
        downloader = self._blob.download_blob(
            offset=offset, length=length, etag=etag, match_condition=MatchConditions.IfNotModified
        )
        return bytes(downloader.readall())

    # -- rewrap ---------------------------------------------------------------------------

    def rewrap(self) -> dict[str, Any]:
        """Re-wrap the message's data keys under the envelope's current KEKs.

        A blob written in blocks gets a new header block and a block list of that block and
        its committed body blocks, committed only if the blob is still the one whose header
        was read (its ETag); a blob written in one piece is rewritten whole under the same
        condition. Content settings and metadata are kept."""
        first = self._read_header()
        header, properties = first.header, first.properties
        pinned = _layout.pinned(properties)
        kept = _layout.kept_properties(properties)
        committed, _ = self._blob.get_block_list("committed")
        body_ids = _layout.body_blocks(committed, len(header))
        if body_ids is None:
            message = self._envelope.rewrap(self._blob.download_blob(**pinned).readall())
            return _reply(self._blob.upload_blob(bytes(message), overwrite=True, **pinned, **kept))
        new_header, _ = self._envelope._rewrap_header(memoryview(header))
        new_id = _layout.header_block_id([block.id for block in committed])
        self._blob.stage_block(new_id, new_header)
        blocks = _layout.rewrapped_block_list(new_id, body_ids)
        return _reply(self._blob.commit_block_list(blocks, **pinned, **kept))


def _reply(reply: Any) -> dict[str, Any]:
    """The service's reply to a write, as the SDK returns it."""
    return dict(reply)


def _with_first(first: Any, last: bool, rest: Any) -> Any:
    yield first, last
    yield from rest
