"""The asyncio ``EncryptedBlobClient``, over ``azure.storage.blob.aio.BlobClient``: the I/O
of each verb in the order of the sync client (``blob/_client.py``)."""

from __future__ import annotations

import asyncio
import collections
import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, cast

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob.aio import BlobClient

from ..._inspect import MessageInfo, header_info
from .. import _layout
from .._layout import HEADER_READ, BlobClientBase, BlockUpload, OpenedBlob

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

        async def stages() -> AsyncIterator[Callable[[], Awaitable[Any]]]:
            # Each block is sealed here while the ones before it are staged.
            yield functools.partial(stage, upload.ids[0], header)
            yield functools.partial(stage, *upload.block(first, last))
            async for piece, final in pieces:
                yield functools.partial(stage, *upload.block(piece, final))

        await self._in_turn(stages())
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
        _layout.check_range(offset, length)
        opened = await self.open(context)
        end = _layout.reaches_end(opened.body, offset, length)
        final = await self._final_frame(opened) if end else None
        with _layout.range_output(opened.body, offset, length, final) as (frames, out, sink):
            await self._fetch(self._fetching(opened, frames, sink, final))
        return out

    async def download_to(self, writable: Any, *, context: Mapping[str, str] | None = None) -> int:
        """See :meth:`envelope.blob.EncryptedBlobClient.download_to`."""
        opened = await self.open(context)
        frames = opened.body.frames(0, opened.body.plaintext_length)
        with await self._final_frame(opened) as final, _layout.output_sink(writable) as sink:
            await self._fetch(self._fetching(opened, frames, sink, final))
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
            pinned = _layout.pinned(properties.etag)
            rest = await self._blob.download_blob(
                offset=len(prefix), length=needed - len(prefix), **pinned
            )
            prefix += await rest.readall()
        return _layout.FirstRead(prefix, needed, size, properties)

    async def _final_frame(self, opened: OpenedBlob) -> _layout.FinalFrame:
        """See the sync client's ``_final_frame``."""
        final = _layout.FinalFrame(opened.body)
        with final.opening():
            await self._fetch(self._fetching(opened, final.frames, final.sink))
        return final

    async def _fetch(self, fetch: _layout.Fetch) -> None:
        """See the sync client's ``_fetch``: ranges of about a block, up to
        ``max_concurrency`` at once, opened in order."""

        async def reads() -> AsyncIterator[Callable[[], Awaitable[bytes]]]:
            for offset, length in fetch.ranges:
                yield functools.partial(self._read_range, fetch.opened.etag, offset, length)

        with fetch.running():
            await self._in_turn(reads(), fetch.reader.feed)

    async def _in_turn(
        self,
        calls: AsyncIterator[Callable[[], Awaitable[Any]]],
        consume: Callable[[Any], None] | None = None,
    ) -> None:
        """See the sync client's ``_in_turn``. On a failure the running requests end before
        it is raised (a request cancelled in the middle of its reply would leave its
        connection behind); they are cancelled only when this task is."""
        pending: collections.deque[asyncio.Future[Any]] = collections.deque()
        try:
            async for call in calls:
                pending.append(asyncio.ensure_future(call()))
                if len(pending) >= self._max_concurrency:
                    _layout.deliver(await pending.popleft(), consume)
            while pending:
                _layout.deliver(await pending.popleft(), consume)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                for task in pending:
                    task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            raise

    async def _read_range(self, etag: str, offset: int, length: int) -> bytes:
        pinned = _layout.pinned(etag)
        downloader = await self._blob.download_blob(offset=offset, length=length, **pinned)
        return bytes(await downloader.readall())

    # -- rewrap ---------------------------------------------------------------------------

    async def rewrap(self) -> dict[str, Any]:
        """See :meth:`envelope.blob.EncryptedBlobClient.rewrap`."""
        first = await self._read_header()
        pinned = _layout.pinned(first.properties.etag)
        kept = _layout.kept_properties(first.properties)
        new_header, _ = await self._envelope._rewrap_header_async(memoryview(first.header))
        reuse = _layout.reuse_plan(await self._committed_blocks(), first.header_length)
        if reuse is not None:
            header_id, body_ids = reuse
            await self._blob.stage_block(header_id, new_header)
            blocks = _layout.rewrapped_block_list(header_id, body_ids)
            return dict(await self._blob.commit_block_list(blocks, **pinned, **kept))
        etag, body_length = first.properties.etag, first.size - first.header_length
        if body_length <= self._chunk:
            body = _layout.body_if_read(first)
            if body is None:
                body = await self._read_range(etag, first.header_length, body_length)
            whole = new_header + body
            return dict(await self._blob.upload_blob(whole, overwrite=True, **pinned, **kept))
        rewrite = _layout.rewrite_plan(first.header_length, first.size, self._chunk)
        stage = self._blob.stage_block

        async def copy(block_id: str, offset: int, length: int) -> None:
            await stage(block_id, await self._read_range(etag, offset, length))

        async def copies() -> AsyncIterator[Callable[[], Awaitable[Any]]]:
            yield functools.partial(stage, rewrite.header_id, new_header)
            for block in rewrite.body:
                yield functools.partial(copy, *block)

        await self._in_turn(copies())
        return dict(await self._blob.commit_block_list(rewrite.block_list(), **pinned, **kept))

    async def _committed_blocks(self) -> list[Any]:
        """See the sync client's ``_committed_blocks``."""
        try:
            committed, _ = await self._blob.get_block_list("committed")
        except ValueError:  # base64 or UTF-8 that does not decode
            return []
        return list(committed)


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
