"""Fixtures of the blob tests: a container of the module's Azurite (see ``tests/azurite.py``),
sync and asyncio, an envelope with small frames, and unique blob names."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from azure.storage.blob import ContainerClient

from envelope import Envelope, LocalKey
from envelope.blob.aio import secure_container_client

from ..azurite import ACCOUNT, ACCOUNT_KEY, Azurite

__all__ = ["ACCOUNT", "ACCOUNT_KEY", "Azurite", "blob_name"]


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
    return Envelope([LocalKey.generate(), LocalKey.generate()], frame_size=4096)


def blob_name() -> str:
    return f"dir/{uuid.uuid4().hex} name with spaces.bin"
