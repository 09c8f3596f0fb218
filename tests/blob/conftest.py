"""Fixtures and helpers of the blob tests, sync and asyncio: a container of the module's
Azurite (see ``tests/azurite.py``), an envelope with small frames, unique blob names, clients
with small blocks, a KEK rotation, a recorder of what a client sends, and the attacks on
stored blocks that both clients must detect."""

from __future__ import annotations

import base64
import io
import os
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio
from azure.storage.blob import BlobBlock, BlobClient, ContainerClient
from azure.storage.blob._generated.models import BlockLookupList
from azure.storage.blob.aio import ContainerClient as AsyncContainerClient

from envelope import Envelope, LocalKey
from envelope.blob import EncryptedBlobClient
from envelope.blob.aio import EncryptedBlobClient as AsyncEncryptedBlobClient
from envelope.blob.aio import secure_container_client

from ..azurite import ACCOUNT, ACCOUNT_KEY, Azurite

__all__ = ["ACCOUNT", "ACCOUNT_KEY", "Azurite", "blob_name"]

F = 4096  # the module envelope's frame size
BLOCK = 4 * F  # four frames per body block
SEALED = F + 2 * 16  # a sealed frame of the two-layer module envelope
CHUNK = 4 * SEALED  # a body block's sealed frames: what a rewrite copies at a time


@pytest.fixture(scope="module")
def container(azurite: Azurite) -> Iterator[ContainerClient]:
    client = azurite.container()
    yield client
    client.close()


@pytest_asyncio.fixture
async def aio_container(azurite: Azurite, container: ContainerClient) -> AsyncIterator[Any]:
    """The module's container through an asyncio client (on the TLS-only transport)."""
    client = secure_container_client(
        container.url, azurite.credential, tls_policy=azurite.tls_policy
    )
    async with client:
        yield client


@pytest.fixture(scope="module")
def envelope() -> Envelope:
    """Two local layers with a small frame size, so that frame and block edges are cheap."""
    return Envelope([LocalKey.generate(), LocalKey.generate()], frame_size=F)


def blob_name() -> str:
    return f"dir/{uuid.uuid4().hex} name with spaces.bin"


def client(
    container: ContainerClient, envelope: Envelope, name: str | None = None, **options: Any
) -> EncryptedBlobClient:
    """A client of ``name`` (a new blob unless given) with body blocks of ``BLOCK``."""
    options.setdefault("block_size", BLOCK)
    blob = container.get_blob_client(name or blob_name())
    return EncryptedBlobClient(blob, envelope, **options)


def aio_client(
    container: AsyncContainerClient, envelope: Envelope, name: str | None = None, **options: Any
) -> AsyncEncryptedBlobClient:
    """The asyncio twin of :func:`client`."""
    options.setdefault("block_size", BLOCK)
    blob = container.get_blob_client(name or blob_name())
    return AsyncEncryptedBlobClient(blob, envelope, **options)


def written(
    container: ContainerClient, envelope: Envelope, size: int
) -> tuple[EncryptedBlobClient, bytes, bytes, bytes]:
    """A blob ``envelope`` wrote: its client, its plaintext, its header and its body."""
    encrypted = client(container, envelope)
    data = os.urandom(size)
    encrypted.upload(data)
    return encrypted, data, *header_and_body(encrypted.blob_client)


def header_and_body(blob: BlobClient) -> tuple[bytes, bytes]:
    header_size = blob.get_block_list("committed")[0][0].size
    raw = blob.download_blob().readall()
    return raw[:header_size], raw[header_size:]


class Rotation:
    """An outer KEK replaced: the old envelope, the bridge that rewraps, the new one."""

    def __init__(self) -> None:
        inner, outer, new_outer = LocalKey.generate(), LocalKey.generate(), LocalKey.generate()
        self.old = Envelope([inner, outer], frame_size=F)
        self.bridge = Envelope([inner, [new_outer, outer]], frame_size=F)
        self.new = Envelope([inner, new_outer], frame_size=F)


class Recorder:
    """Wraps a BlobClient's reads, staged blocks and whole uploads to record what went over
    the wire: each read's offset and length, how many reads were in flight at once, each
    staged block's length, and how many whole uploads."""

    def __init__(self, blob: BlobClient) -> None:
        self.downloads: list[tuple[int | None, int | None]] = []
        self.staged: list[int] = []
        self.puts = 0
        self.in_flight = self.most_in_flight = 0
        lock = threading.Lock()
        download, stage, put = blob.download_blob, blob.stage_block, blob.upload_blob

        def download_blob(*args: Any, **kwargs: Any) -> Any:
            with lock:
                self.downloads.append((kwargs.get("offset"), kwargs.get("length")))
                self.in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self.in_flight)
            try:
                return download(*args, **kwargs)
            finally:
                with lock:
                    self.in_flight -= 1

        def stage_block(block_id: str, data: Any, *args: Any, **kwargs: Any) -> Any:
            with lock:
                self.staged.append(len(data))
            return stage(block_id, data, *args, **kwargs)

        def upload_blob(*args: Any, **kwargs: Any) -> Any:
            with lock:
                self.puts += 1
            return put(*args, **kwargs)

        blob.download_blob = download_blob  # type: ignore[method-assign]
        blob.stage_block = stage_block  # type: ignore[method-assign]
        blob.upload_blob = upload_blob  # type: ignore[method-assign]

    @property
    def lengths(self) -> list[int | None]:
        """The length of each read (None: to the end)."""
        return [length for _, length in self.downloads]


def restage(blob: BlobClient, ids: list[str], pieces: list[bytes]) -> None:
    for block_id, piece in zip(ids, pieces, strict=True):
        blob.stage_block(block_id, piece)
    blob.commit_block_list([BlobBlock(block_id) for block_id in ids])


def split(body: bytes, parts: int) -> list[bytes]:
    step = -(-len(body) // parts)
    return [body[start : start + step] for start in range(0, len(body), step)]


def stage_raw(blob: BlobClient, raw_ids: list[bytes], pieces: list[bytes]) -> None:
    """Block ids as the REST API takes them (base64 of any bytes), past the SDK, which
    encodes text ids as UTF-8."""
    names = [base64.b64encode(raw).decode() for raw in raw_ids]
    generated = blob._client.block_blob
    for name, piece in zip(names, pieces, strict=True):
        generated.stage_block(block_id=name, content_length=len(piece), body=io.BytesIO(piece))
    generated.commit_block_list(blocks=BlockLookupList(latest=names))


def sparse_page_blob(container: ContainerClient, envelope: Envelope) -> EncryptedBlobClient:
    """A blob replaced by a sparse page blob of 1 TiB (free to create) that starts with the
    blob's own header, so the binding and key ids check out."""
    encrypted = client(container, envelope)
    encrypted.upload(os.urandom(3 * BLOCK))
    blob = encrypted.blob_client
    header, _ = header_and_body(blob)
    blob.delete_blob()
    size = 2**40
    while (size - len(header)) % SEALED < 32:
        size += 512
    blob.create_page_blob(size)
    page = header + bytes(-len(header) % 512)
    blob.upload_page(page, offset=0, length=len(page))
    assert blob.get_blob_properties().size == size
    return encrypted


def edges(size: int) -> list[int]:
    points = {0, size}
    for boundary in range(0, size + 1, F):
        points.update({boundary - 1, boundary, boundary + 1})
    return sorted(p for p in points if 0 <= p <= size)


# -- attacks on the stored blocks: each must be detected by both clients ------------------


def _ids(blob: BlobClient) -> list[str]:
    committed, _ = blob.get_block_list("committed")
    return [block.id for block in committed]


def _commit(blob: BlobClient, ids: list[str]) -> None:
    blob.commit_block_list([BlobBlock(block_id) for block_id in ids])


def _replace_block(blob: BlobClient, other: BlobClient) -> None:
    ids = _ids(blob)
    # The same block of another message of the same envelope, staged here under a new id.
    raw = other.download_blob().readall()
    sizes = [b.size for b in other.get_block_list("committed")[0]]
    start = sizes[0]
    blob.stage_block("x" * len(ids[1]), raw[start : start + sizes[1]])
    _commit(blob, [ids[0], "x" * len(ids[1]), *ids[2:]])


def _drop_block(blob: BlobClient, other: BlobClient) -> None:
    ids = _ids(blob)
    _commit(blob, [ids[0], ids[1], *ids[3:]])


def _drop_first_body_block(blob: BlobClient, other: BlobClient) -> None:
    ids = _ids(blob)
    _commit(blob, [ids[0], *ids[2:]])


def _reorder_blocks(blob: BlobClient, other: BlobClient) -> None:
    ids = _ids(blob)
    _commit(blob, [ids[0], ids[2], ids[1], *ids[3:]])


def _truncate_at_a_block_boundary(blob: BlobClient, other: BlobClient) -> None:
    _commit(blob, _ids(blob)[:-1])


def _truncate_to_the_full_blocks(blob: BlobClient, other: BlobClient) -> None:
    _commit(blob, _ids(blob)[:3])


def _header_from_another_blob(blob: BlobClient, other: BlobClient) -> None:
    ids = _ids(blob)
    header = other.download_blob(offset=0, length=other.get_block_list("committed")[0][0].size)
    blob.stage_block("y" * len(ids[0]), header.readall())
    _commit(blob, ["y" * len(ids[0]), *ids[1:]])


def _cut_inside_a_frame(blob: BlobClient, other: BlobClient) -> None:
    raw = blob.download_blob().readall()
    blob.upload_blob(raw[:-5], overwrite=True)


def _duplicate_a_block(blob: BlobClient, other: BlobClient) -> None:
    ids = _ids(blob)
    _commit(blob, [ids[0], ids[1], ids[1], *ids[2:]])


def _append_a_block(blob: BlobClient, other: BlobClient) -> None:
    ids = _ids(blob)
    _commit(blob, [*ids, ids[1]])


ATTACKS: dict[str, Callable[[BlobClient, BlobClient], None]] = {
    "a body block replaced": _replace_block,
    "a block dropped": _drop_block,
    "the first body block dropped": _drop_first_body_block,
    "blocks reordered": _reorder_blocks,
    "truncated at a block boundary": _truncate_at_a_block_boundary,
    "truncated to its full blocks": _truncate_to_the_full_blocks,
    "a header from another blob": _header_from_another_blob,
    "cut inside a frame": _cut_inside_a_frame,
    "a block duplicated": _duplicate_a_block,
    "a block appended": _append_a_block,
}
