"""Fixtures of the LocalKeyVault emulator tests: each module has one vault (``vault``,
tests/conftest.py), put back to a clean state before every test, which counts its operations
or injects faults."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.testing.sdk_surface import claims_checked


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "covers(*methods): SDK client methods (e.g. 'aio.KeyClient.get_key') the test calls "
        "against LocalKeyVault; checked while it runs",
    )


@pytest.fixture(autouse=True)
def _fresh_vault(fresh: None) -> None:
    pass


@pytest.fixture(autouse=True)
def _covered_methods_are_called(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """A test that claims to cover an SDK method must call it: the claim is checked."""
    names = [name for mark in request.node.iter_markers("covers") for name in mark.args]
    with claims_checked(names, monkeypatch):
        yield
