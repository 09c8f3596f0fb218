"""envelope.blob.aio against Azurite: the asyncio twin keeps every property of the sync
client (round trips, ranged reads, attacks detected, header-only rewrap), also with
hundreds of tasks at once."""

from __future__ import annotations

import asyncio
import io
import os
from typing import Any

import pytest
from azure.core.exceptions import ResourceModifiedError

from envelope import DecryptionError, Envelope, KeyAccessError, LocalKey
from envelope.blob.aio import EncryptedBlobClient

from ..core.conftest import Counting
from .conftest import ATTACKS, BLOCK, F, Rotation, aio_client, blob_name, edges

pytestmark = pytest.mark.asyncio


class AsyncSource:
    """A stream whose read is a coroutine, handing out odd-sized pieces."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    async def read(self, size: int) -> bytes:
        await asyncio.sleep(0)
        return self._data.read(min(size, 1000))


@pytest.mark.parametrize("size", [0, 1, F, F + 1, BLOCK, BLOCK + 1, 3 * BLOCK + 7, 1_000_003])
async def test_round_trip(aio_container, envelope, size) -> None:
    data = os.urandom(size)
    for source in (data, io.BytesIO(data), AsyncSource(data)):
        blob = aio_client(aio_container, envelope)
        await blob.upload(source, context={"tenant": "contoso"})
        assert await blob.download(context={"tenant": "contoso"}) == data
        sink = io.BytesIO()
        assert await blob.download_to(sink, context={"tenant": "contoso"}) == size
        assert sink.getvalue() == data


async def test_64_mib_round_trip(aio_container) -> None:
    envelope = Envelope([LocalKey.generate(), LocalKey.generate()])
    blob = EncryptedBlobClient(aio_container.get_blob_client(blob_name()), envelope)
    data = os.urandom(64 * 1024 * 1024)
    await blob.upload(data)
    assert await blob.download() == data


async def test_ranged_reads_at_frame_edges(aio_container, envelope) -> None:
    size = 3 * F + 100
    data = os.urandom(size)
    blob = aio_client(aio_container, envelope)
    await blob.upload(data)
    for offset in edges(size):
        for length in (0, 1, F - 1, F + 1, None):
            end = size if length is None else min(size, offset + length)
            assert await blob.download(offset=offset, length=length) == data[offset:end]


@pytest.mark.parametrize("attack", ATTACKS, ids=str)
async def test_attack_is_detected_and_releases_nothing(
    container, aio_container, envelope, attack
) -> None:
    size = 4 * BLOCK + 100
    blob, other = aio_client(aio_container, envelope), aio_client(aio_container, envelope)
    await blob.upload(os.urandom(size))
    await other.upload(os.urandom(size))
    sync_blob = container.get_blob_client(blob.blob_client.blob_name)
    ATTACKS[attack](sync_blob, container.get_blob_client(other.blob_client.blob_name))
    with pytest.raises(DecryptionError):
        await blob.download()
    sink = io.BytesIO()
    with pytest.raises(DecryptionError):
        await blob.download_to(sink)
    assert sink.getvalue() == b""


async def test_a_copy_under_another_name_does_not_decrypt(aio_container, envelope) -> None:
    original, copy = aio_client(aio_container, envelope), aio_client(aio_container, envelope)
    await original.upload(os.urandom(2 * BLOCK))
    raw = await (await original.blob_client.download_blob()).readall()
    await copy.blob_client.upload_blob(raw)
    with pytest.raises(DecryptionError, match=r"envelope\.blob\.name"):
        await copy.download()


async def test_rewrap_keeps_the_committed_body_blocks(aio_container) -> None:
    keys = Rotation()
    data = os.urandom(3 * BLOCK + 1)
    writer = aio_client(aio_container, keys.old)
    await writer.upload(data)
    before = (await writer.blob_client.get_block_list("committed"))[0]
    name = writer.blob_client.blob_name
    bridge = EncryptedBlobClient(aio_container.get_blob_client(name), keys.bridge)
    await bridge.rewrap()
    after = (await writer.blob_client.get_block_list("committed"))[0]
    assert [(b.id, b.size) for b in after[1:]] == [(b.id, b.size) for b in before[1:]]
    assert after[0].id != before[0].id
    reader = EncryptedBlobClient(aio_container.get_blob_client(name), keys.new)
    assert await reader.download() == data


@pytest.mark.parametrize("size", [3 * BLOCK + 1, 100])  # the header block alone; whole
async def test_rewrap_from_a_public_wrap_to_a_vouching_key_is_refused(aio_container, size) -> None:
    """The asyncio twin of the sync client's test: a data key from a KEK that counts as
    public is not wrapped under a local key, whose wrap would vouch for it."""
    quiet, outer = Counting(), LocalKey.generate()
    data = os.urandom(size)
    writer = aio_client(aio_container, Envelope([quiet, outer], frame_size=F))
    await writer.upload(data)
    blob = writer.blob_client
    before = ((await blob.get_block_list("committed"))[0], (await blob.get_blob_properties()).etag)
    vouching = Envelope([[LocalKey.generate(), quiet], outer], frame_size=F)
    with pytest.raises(KeyAccessError, match="public-key wrap"):
        await EncryptedBlobClient(aio_container.get_blob_client(blob.blob_name), vouching).rewrap()
    after = ((await blob.get_block_list("committed"))[0], (await blob.get_blob_properties()).etag)
    assert after == before
    assert await writer.download() == data


async def test_a_download_of_a_blob_changed_after_its_header_was_read_fails(
    aio_container, envelope, monkeypatch
) -> None:
    """The asyncio twin of the sync client's test: every read after the header's is pinned
    to its ETag."""
    data = os.urandom(3 * BLOCK)
    writer = aio_client(aio_container, envelope)
    await writer.upload(data)
    blob = writer.blob_client
    download = blob.download_blob

    async def changed_after_the_first(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(blob, "download_blob", download)
        result = await download(*args, **kwargs)
        await blob.set_blob_metadata({"changed": "yes"})  # a new ETag, the same bytes
        return result

    for offset, length in ((0, None), (2 * BLOCK, F)):
        monkeypatch.setattr(blob, "download_blob", changed_after_the_first)
        with pytest.raises(ResourceModifiedError):
            await writer.download(offset=offset, length=length)
    assert await writer.download() == data


async def test_a_small_blob_is_rewritten_whole(aio_container) -> None:
    keys = Rotation()
    writer = aio_client(aio_container, keys.old)
    await writer.upload(b"small")
    name = writer.blob_client.blob_name
    await EncryptedBlobClient(aio_container.get_blob_client(name), keys.bridge).rewrap()
    reader = EncryptedBlobClient(aio_container.get_blob_client(name), keys.new)
    assert await reader.download() == b"small"


async def test_two_hundred_tasks_at_once(aio_container, envelope) -> None:
    async def work(n: int) -> None:
        data = os.urandom(n * 331 % BLOCK)  # one request up, one down
        blob = aio_client(aio_container, envelope, max_concurrency=2)
        await blob.upload(data, context={"n": str(n)})
        assert await blob.download(context={"n": str(n)}) == data

    results = await asyncio.gather(*(work(n) for n in range(200)), return_exceptions=True)
    assert [r for r in results if r is not None] == []


async def test_an_upload_that_fails_commits_nothing(container, aio_container, envelope) -> None:
    class Broken:
        def __init__(self) -> None:
            self.reads = 0

        def read(self, size: int) -> bytes:
            self.reads += 1
            if self.reads > 3:
                raise OSError("the source broke")
            return os.urandom(size)

    blob = aio_client(aio_container, envelope)
    with pytest.raises(OSError, match="broke"):
        await blob.upload(Broken())
    assert not await blob.blob_client.exists()
