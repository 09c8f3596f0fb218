"""The review's attacks (``test_blob_review.py``) against ``envelope.blob.aio``: the asyncio
client has the same fixes (bounded header block ids, a bounded rewrite of a blob whose
header shares a block, the final frame before any allocation, a cut end seen as one)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from azure.storage.blob import BlobBlock

from envelope import DecryptionError
from envelope.blob._layout import HEADER_READ

from .conftest import (
    BLOCK,
    CHUNK,
    SEALED,
    F,
    Rotation,
    aio_client,
    header_and_body,
    restage,
    sparse_page_blob,
    split,
    stage_raw,
    written,
)

pytestmark = pytest.mark.asyncio


class AsyncRecorder:
    """Records an aio BlobClient's read lengths and how many were in flight at once."""

    def __init__(self, blob: Any) -> None:
        self.lengths: list[int | None] = []
        self.in_flight = self.most_in_flight = 0
        download = blob.download_blob

        async def download_blob(*args: Any, **kwargs: Any) -> Any:
            self.lengths.append(kwargs.get("length"))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            try:
                downloader = await download(*args, **kwargs)
                await asyncio.sleep(0.001)  # let the others start
                return downloader
            finally:
                self.in_flight -= 1

        blob.download_blob = download_blob


async def test_rewrap_of_one_character_block_ids_ends(container, aio_container) -> None:
    keys = Rotation()
    writer, data, header, body = written(container, keys.old, 4 * BLOCK + 100)
    name = writer.blob_client.blob_name
    blob = container.get_blob_client(name)
    ids = [format(n, "x") for n in range(16)]
    restage(blob, ids, [header, *split(body, 15)])
    before = blob.get_block_list("committed")[0]
    await asyncio.wait_for(aio_client(aio_container, keys.bridge, name).rewrap(), 15)
    after = blob.get_block_list("committed")[0]
    assert [(b.id, b.size) for b in after[1:]] == [(b.id, b.size) for b in before[1:]]
    assert len(after[0].id) == 1
    assert await aio_client(aio_container, keys.new, name).download() == data


async def test_rewrap_of_block_ids_that_are_not_utf8(container, aio_container) -> None:
    keys = Rotation()
    writer, data, header, body = written(container, keys.old, 6 * BLOCK + 5)
    name = writer.blob_client.blob_name
    blob = container.get_blob_client(name)
    raw_ids = [bytes([0xFF, 0xFE, 0, n]) for n in range(8)]
    stage_raw(blob, raw_ids, [header, *split(body, 7)])
    await asyncio.wait_for(aio_client(aio_container, keys.bridge, name).rewrap(), 30)
    assert {len(b.id) for b in blob.get_block_list("committed")[0]} == {29}
    assert await aio_client(aio_container, keys.new, name).download() == data


async def test_rewrap_of_a_regrouped_large_blob_reads_a_block_at_a_time(
    container, aio_container
) -> None:
    keys = Rotation()
    writer, data, header, body = written(container, keys.old, 40 * BLOCK + 100)
    name = writer.blob_client.blob_name
    blob = container.get_blob_client(name)
    committed = blob.get_block_list("committed")[0]
    ids = [block.id for block in committed]
    blob.stage_block("z" * len(ids[0]), header + body[: committed[1].size])
    blob.commit_block_list([BlobBlock("z" * len(ids[0]))] + [BlobBlock(i) for i in ids[2:]])

    bridge = aio_client(aio_container, keys.bridge, name, max_concurrency=3)
    recorder = AsyncRecorder(bridge.blob_client)
    await bridge.rewrap()
    assert all(length is not None for length in recorder.lengths)
    assert max(length or 0 for length in recorder.lengths) <= max(HEADER_READ, CHUNK)
    assert recorder.most_in_flight <= 3
    assert len(recorder.lengths) > 10  # the body was copied in blocks
    assert header_and_body(blob)[1] == body
    assert await aio_client(aio_container, keys.new, name).download() == data


async def test_download_proves_the_length_before_allocating_it(
    container, aio_container, envelope
) -> None:
    sparse = sparse_page_blob(container, envelope)
    encrypted = aio_client(aio_container, envelope, sparse.blob_client.blob_name)
    with pytest.raises(DecryptionError):
        await encrypted.download()  # a bytearray of 1 TiB otherwise
    with pytest.raises(DecryptionError):
        await encrypted.download_to(os.devnull)


async def test_ranges_past_the_end(container, aio_container, envelope) -> None:
    writer, data, header, body = written(container, envelope, 4 * BLOCK + 100)
    name = writer.blob_client.blob_name
    encrypted = aio_client(aio_container, envelope, name)
    with pytest.raises(ValueError, match=f"offset must be 0 to {len(data)}"):
        await encrypted.download(offset=len(data) + 1, length=1)
    blob = container.get_blob_client(name)
    blob.upload_blob(header + body[: 2 * SEALED + 100], overwrite=True)
    with pytest.raises(DecryptionError):
        await encrypted.download(offset=3 * F, length=10)
