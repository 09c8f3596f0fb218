"""Fixtures shared by the core tests."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import envelope._parallel
from envelope import Envelope, LocalKey, WrappedKey

SMALL_FRAME = 1024


@pytest.fixture
def inner_key() -> LocalKey:
    return LocalKey.generate()


@pytest.fixture
def outer_key() -> LocalKey:
    return LocalKey.generate()


@pytest.fixture(params=[1, 4], ids=["1 worker", "4 workers"])
def workers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """The worker counts the core tests run under. With 4, _parallel's thresholds are
    lowered to one small frame, so that a message of a few frames is already cut into runs
    sealed and opened on several threads."""
    count: int = request.param
    if count > 1:
        monkeypatch.setattr(envelope._parallel, "RUN_BYTES", SMALL_FRAME)
        monkeypatch.setattr(envelope._parallel, "PARALLEL_FRAME_SIZE", SMALL_FRAME)
    return count


@pytest.fixture
def env(inner_key: LocalKey, outer_key: LocalKey, workers: int) -> Envelope:
    """The default two-layer envelope with small frames, so messages have many frames; once
    on one thread and once on four."""
    return Envelope([inner_key, outer_key], frame_size=SMALL_FRAME, workers=workers)


class Counting:
    """A LocalKey that counts its wraps and unwraps (thread-safe), and spends ``delay``
    seconds on each so that concurrent callers really overlap; sync and asyncio."""

    def __init__(self, key_id: str | None = None, *, delay: float = 0.0) -> None:
        self._key = LocalKey.generate(key_id)
        self._lock = threading.Lock()
        self.delay = delay
        self.wraps = 0
        self.unwraps = 0

    @property
    def key_id(self) -> str:
        return self._key.key_id

    def can_unwrap(self, key_id: str) -> bool:
        return self._key.can_unwrap(key_id)

    def wrap_key(self, data_key: bytes) -> WrappedKey:
        self._count("wraps")
        time.sleep(self.delay)
        return self._key.wrap_key(data_key)

    def unwrap_key(self, wrapped: WrappedKey) -> bytes:
        self._count("unwraps")
        time.sleep(self.delay)
        return self._key.unwrap_key(wrapped)

    async def wrap_key_async(self, data_key: bytes) -> WrappedKey:
        self._count("wraps")
        await asyncio.sleep(self.delay)
        return self._key.wrap_key(data_key)

    async def unwrap_key_async(self, wrapped: WrappedKey) -> bytes:
        self._count("unwraps")
        await asyncio.sleep(self.delay)
        return self._key.unwrap_key(wrapped)

    def _count(self, counter: str) -> None:
        with self._lock:
            setattr(self, counter, getattr(self, counter) + 1)
