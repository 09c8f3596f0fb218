"""The asyncio ``EncryptedBlobClient``, over ``azure.storage.blob.aio.BlobClient``: the I/O
of each verb in the order of the sync client (``blob/_client.py``)."""

from __future__ import annotations

import asyncio
import collections
import inspect
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob.aio import BlobClient

from ..._inspect import MessageInfo, header_info
from .. import _layout
from .._client import OpenedBlob
from .._layout import HEADER_READ, BlobClientBase, BlockUpload, FrameReader

__all__ = ["EncryptedBlobClient"]


class EncryptedBlobClient(BlobClientBase):
    """The asyncio twin of :class:`envelope.blob.EncryptedBlobClient`, with the same
    layout, checks and options. KEKs are awaited (``unwrap_key_async``); frames are sealed
    and opened on the event loop's thread, a block (``block_size``) at a time. ``upload``
    also takes a stream whose ``read`` is a coroutine; ``download_to`` a path or a stream
    with a plain ``write``."""

    @property
    def blob_client(self) -> BlobClient:
        return cast("BlobClient", self._blob)

    # -- upload ---------------------------------------------------------------------------

    async def upload(
        self, data: Any, *, context: Mapping[str, str] | None = None, overwrite: bool = False
    ) -> dict[str, Any]:
        """See :meth:`envelope.blob.EncryptedBlobClient.upload`."""
        header, writer = await self._envelope._begin_body_async(self.context(context))
        pieces = _pieces(data, self._block_plaintext)
        first, last = await anext(pieces)
        if last:
            block = _layout.seal_block(writer, first, True)
            return dict(await self._blob.upload_blob(bytes(header) + block, overwrite=overwrite))
        if not overwrite and await self._blob.exists():
            raise ResourceExistsError(f"{self._blob.url} exists; pass overwrite=True")
        upload = BlockUpload(header, writer)
        stage = self._blob.stage_block
        pending = collections.deque([asyncio.ensure_future(stage(upload.ids[0], header))])
        try:
            piece: memoryview = first
            final: bool = last
            while True:
                block_id, content = upload.block(piece, final)
                pending.append(asyncio.ensure_future(stage(block_id, content)))
                while len(pending) > self._max_concurrency:
                    await pending.popleft()
                if final:
                    break
                piece, final = await anext(pieces)
            while pending:
                await pending.popleft()
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        conditions = _layout.commit_conditions(overwrite)
        return dict(await self._blob.commit_block_list(upload.block_list(), **conditions))

    # -- download -------------------------------------------------------------------------

    async def download(
        self,
        *,
        context: Mapping[str, str] | None = None,
        offset: int = 0,
        length: int | None = None,
    ) -> bytearray:
        """See :meth:`envelope.blob.EncryptedBlobClient.download`."""
        opened = await self.open(context)
        frames, skip, size = _layout.plan_range(opened.body, offset, length)
        with _layout.buffer_output(size, skip) as (out, sink):
            await self._fetch(opened, frames, sink)
        return out

    async def download_to(self, writable: Any, *, context: Mapping[str, str] | None = None) -> int:
        """See :meth:`envelope.blob.EncryptedBlobClient.download_to`."""
        opened = await self.open(context)
        with _layout.output_sink(writable) as sink:
            await self._fetch(opened, opened.body.frames(0, opened.body.plaintext_length), sink)
        return opened.body.plaintext_length

    async def inspect(self) -> MessageInfo:
        """See :meth:`envelope.blob.EncryptedBlobClient.inspect`."""
        first = await self._read_header()
        return header_info(first.header, first.size)

    async def open(self, context: Mapping[str, str] | None = None) -> OpenedBlob:
        """See :meth:`envelope.blob.EncryptedBlobClient.open`."""
        first = await self._read_header()
        context = self.context(context)
        body, header_length = await self._envelope._open_body_async(
            first.header, first.size, context
        )
        return OpenedBlob(body, header_length, first.properties.etag, first.prefix)

    async def _read_header(self) -> _layout.FirstRead:
        with _layout.empty_blob_is_no_message():
            downloader = await self._blob.download_blob(offset=0, length=HEADER_READ)
        prefix = await downloader.readall()
        properties = downloader.properties
        size = _layout.total_size(properties.content_range, len(prefix))
        needed = _layout.header_length_needed(prefix, size)
        if needed > len(prefix):
            pinned = _layout.pinned(properties)
            rest = await self._blob.download_blob(
                offset=len(prefix), length=needed - len(prefix), **pinned
            )
            prefix += await rest.readall()
        return _layout.FirstRead(prefix, needed, size, properties)

    async def _fetch(self, opened: OpenedBlob, frames: range, sink: _layout.Sink) -> None:
        """See the sync client's ``_fetch``: ranges of about a block, up to
        ``max_concurrency`` at once, opened in order."""
        reader = FrameReader(opened.body, frames, sink, self._frames_per_block)
        start, stop = opened.body.body_span(frames)
        cached = opened.cached(start, stop)
        ranges = [] if cached is not None else opened.ranges(start, stop, self._chunk)
        pending: collections.deque[asyncio.Future[bytes]] = collections.deque()
        try:
            if cached is not None:
                reader.feed(cached)
            for offset, length in ranges:
                pending.append(asyncio.ensure_future(self._read_range(opened.etag, offset, length)))
                if len(pending) >= self._max_concurrency:
                    reader.feed(await pending.popleft())
            while pending:
                reader.feed(await pending.popleft())
            reader.finish()
        except BaseException:
            reader.wipe()
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            raise

    async def _read_range(self, etag: str, offset: int, length: int) -> bytes:
        downloader = await self._blob.download_blob(
            offset=offset, length=length, etag=etag, match_condition=MatchConditions.IfNotModified
        )
        return bytes(await downloader.readall())

    # -- rewrap ---------------------------------------------------------------------------

    async def rewrap(self) -> dict[str, Any]:
        """See :meth:`envelope.blob.EncryptedBlobClient.rewrap`."""
        first = await self._read_header()
        header, properties = first.header, first.properties
        pinned = _layout.pinned(properties)
        kept = _layout.kept_properties(properties)
        committed, _ = await self._blob.get_block_list("committed")
        body_ids = _layout.body_blocks(committed, len(header))
        if body_ids is None:
            whole = await (await self._blob.download_blob(**pinned)).readall()
            rewrapped, old_length = await self._envelope._rewrap_header_async(memoryview(whole))
            message = rewrapped + whole[old_length:]
            reply = await self._blob.upload_blob(message, overwrite=True, **pinned, **kept)
            return dict(reply)
        new_header, _ = await self._envelope._rewrap_header_async(memoryview(header))
        new_id = _layout.header_block_id([block.id for block in committed])
        await self._blob.stage_block(new_id, new_header)
        blocks = _layout.rewrapped_block_list(new_id, body_ids)
        return dict(await self._blob.commit_block_list(blocks, **pinned, **kept))


async def _pieces(data: Any, size: int) -> AsyncIterator[tuple[memoryview, bool]]:
    """:func:`envelope.blob._layout.chunks`, also for a stream whose ``read`` is a
    coroutine."""
    read = getattr(data, "read", None)
    if read is None or not inspect.iscoroutinefunction(read):
        for piece in _layout.chunks(data, size):
            yield piece
        return
    current = await _read_up_to(read, size)
    while True:
        following = await _read_up_to(read, size) if len(current) == size else b""
        yield memoryview(current), not following
        if not following:
            return
        current = following


async def _read_up_to(read: Any, size: int) -> bytes:
    parts: list[bytes] = []
    wanted = size
    while wanted > 0:
        chunk = await read(wanted)
        if not chunk:
            break
        parts.append(bytes(chunk))
        wanted -= len(chunk)
    return b"".join(parts)
