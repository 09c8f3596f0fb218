"""Fixtures shared by the core tests."""

from __future__ import annotations

import pytest

from envelope import Envelope, LocalKey

SMALL_FRAME = 1024


@pytest.fixture
def inner_key() -> LocalKey:
    return LocalKey.generate()


@pytest.fixture
def outer_key() -> LocalKey:
    return LocalKey.generate()


@pytest.fixture
def env(inner_key: LocalKey, outer_key: LocalKey) -> Envelope:
    """The default two-layer envelope with small frames, so messages have many frames."""
    return Envelope([inner_key, outer_key], frame_size=SMALL_FRAME)
