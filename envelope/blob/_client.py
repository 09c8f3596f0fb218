"""``EncryptedBlobClient``: envelope messages in Azure block blobs, over a ``BlobClient``.

The I/O of each verb, in the order the asyncio twin (``aio/_client.py``) repeats it; what
needs no I/O is in ``_layout``.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import itertools
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobClient

from .._inspect import MessageInfo, header_info
from . import _layout
from ._layout import HEADER_READ, BlobClientBase, BlockUpload, OpenedBlob

__all__ = ["EncryptedBlobClient", "OpenedBlob"]


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
      reuses the committed body blocks, so the body is never downloaded or uploaded again
      (a blob in another layout is rewritten in this one, a block at a time).

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
            return dict(self._blob.upload_blob(bytes(header) + block, overwrite=overwrite))
        if not overwrite and self._blob.exists():
            raise ResourceExistsError(f"{self._blob.url} exists; pass overwrite=True")
        upload = BlockUpload(header, writer)
        stage = self._blob.stage_block
        # Each block is sealed here while the ones before it are staged.
        body = (
            functools.partial(stage, *upload.block(piece, final))
            for piece, final in itertools.chain([(first, last)], pieces)
        )
        self._in_turn(itertools.chain([functools.partial(stage, upload.ids[0], header)], body))
        conditions = _layout.commit_conditions(overwrite)
        return dict(self._blob.commit_block_list(upload.block_list(), **conditions))

    # -- download -------------------------------------------------------------------------

    def download(
        self,
        *,
        context: Mapping[str, str] | None = None,
        offset: int = 0,
        length: int | None = None,
    ) -> bytearray:
        """The plaintext, or its bytes ``[offset, offset + length)``, once every frame that
        holds them verified; nothing otherwise. A read that reaches the end (or starts past
        it) opens the final frame first: the blob's length is the storage's claim until
        that frame proves it, so nothing is allocated from it before. An offset past the
        proven end is a ``ValueError``; past a claimed end the final frame does not prove,
        a :class:`~envelope.DecryptionError`."""
        _layout.check_range(offset, length)
        opened = self.open(context)
        end = _layout.reaches_end(opened.body, offset, length)
        final = self._final_frame(opened) if end else None
        with _layout.range_output(opened.body, offset, length, final) as (frames, out, sink):
            self._fetch(self._fetching(opened, frames, sink, final))
        return out

    def download_to(self, writable: Any, *, context: Mapping[str, str] | None = None) -> int:
        """Decrypt the whole blob into ``writable``: a path (the file appears, mode 0600,
        only once every frame verified) or a binary stream (only verified frames are
        written, and on failure a seekable stream is cut back to where it started). The
        final frame is opened first, so a blob cut short or extended fails before a byte is
        written. Returns the plaintext's length."""
        opened = self.open(context)
        frames = opened.body.frames(0, opened.body.plaintext_length)
        with self._final_frame(opened) as final, _layout.output_sink(writable) as sink:
            self._fetch(self._fetching(opened, frames, sink, final))
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
                offset=len(prefix), length=needed - len(prefix), **_layout.pinned(properties.etag)
            )
            prefix += rest.readall()
        return _layout.FirstRead(prefix, needed, size, properties)

    def _final_frame(self, opened: OpenedBlob) -> _layout.FinalFrame:
        """The final frame, fetched and opened (as final) before any other: it proves the
        plaintext's length, or fails."""
        final = _layout.FinalFrame(opened.body)
        with final.opening():
            self._fetch(self._fetching(opened, final.frames, final.sink))
        return final

    def _fetch(self, fetch: _layout.Fetch) -> None:
        """Fetch the body bytes of ``fetch``'s frames, in ranges of about a block, up to
        ``max_concurrency`` at once, and open them in order as they come."""
        etag = fetch.opened.etag
        with fetch.running():
            if len(fetch.ranges) == 1:  # no pool for one request
                fetch.reader.feed(self._read_range(etag, *fetch.ranges[0]))
            elif fetch.ranges:
                reads = (functools.partial(self._read_range, etag, *r) for r in fetch.ranges)
                self._in_turn(reads, fetch.reader.feed)

    def _in_turn(
        self, calls: Iterable[Callable[[], Any]], consume: Callable[[Any], None] | None = None
    ) -> None:
        """Run ``calls`` on a pool, at most ``max_concurrency`` at once, and hand their
        results to ``consume`` in order. On a failure, the calls not started are dropped
        and the running ones end before it is raised."""
        pending: collections.deque[concurrent.futures.Future[Any]] = collections.deque()
        with concurrent.futures.ThreadPoolExecutor(self._max_concurrency) as pool:
            try:
                for call in calls:
                    pending.append(pool.submit(call))
                    if len(pending) >= self._max_concurrency:
                        _layout.deliver(pending.popleft().result(), consume)
                while pending:
                    _layout.deliver(pending.popleft().result(), consume)
            finally:
                for future in pending:
                    future.cancel()

    def _read_range(self, etag: str, offset: int, length: int) -> bytes:
        downloader = self._blob.download_blob(offset=offset, length=length, **_layout.pinned(etag))
        return bytes(downloader.readall())

    # -- rewrap ---------------------------------------------------------------------------

    def rewrap(self) -> dict[str, Any]:
        """Re-wrap the message's data keys under the envelope's current KEKs.

        A blob whose header is a block of its own gets a new header block and a block list
        of that block and its committed body blocks, committed only if the blob is still the
        one whose header was read (its ETag). Any other blob is rewritten under the same
        condition: whole when its body fits in one block, else in this library's layout
        (after which a rewrap is header-only), its body copied a block at a time, up to
        ``max_concurrency`` at once, so memory stays bounded whatever the blob's size.
        Content settings and metadata are kept."""
        first = self._read_header()
        pinned = _layout.pinned(first.properties.etag)
        kept = _layout.kept_properties(first.properties)
        new_header, _ = self._envelope._rewrap_header(memoryview(first.header))
        reuse = _layout.reuse_plan(self._committed_blocks(), first.header_length)
        if reuse is not None:
            header_id, body_ids = reuse
            self._blob.stage_block(header_id, new_header)
            blocks = _layout.rewrapped_block_list(header_id, body_ids)
            return dict(self._blob.commit_block_list(blocks, **pinned, **kept))
        body_length = first.size - first.header_length
        if body_length <= self._chunk:
            body = _layout.body_if_read(first)
            if body is None:
                body = self._read_range(first.properties.etag, first.header_length, body_length)
            whole = new_header + body
            return dict(self._blob.upload_blob(whole, overwrite=True, **pinned, **kept))
        rewrite = _layout.rewrite_plan(first.header_length, first.size, self._chunk)
        etag, stage = first.properties.etag, self._blob.stage_block

        def copy(block_id: str, offset: int, length: int) -> None:
            stage(block_id, self._read_range(etag, offset, length))

        header = functools.partial(stage, rewrite.header_id, new_header)
        body_copies = (functools.partial(copy, *block) for block in rewrite.body)
        self._in_turn(itertools.chain([header], body_copies))
        return dict(self._blob.commit_block_list(rewrite.block_list(), **pinned, **kept))

    def _committed_blocks(self) -> list[Any]:
        """The committed block list; empty if the SDK cannot decode its ids (the storage's
        writer chose them): the blob is then rewritten, not reused."""
        try:
            committed, _ = self._blob.get_block_list("committed")
        except ValueError:  # base64 or UTF-8 that does not decode
            return []
        return list(committed)
