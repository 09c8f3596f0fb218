"""The public methods of the Azure SDK's key clients, sync and asyncio, by qualified name:
``KeyClient.get_key``, ``aio.KeyClient.get_key``, ``CryptographyClient.sign`` ...

Tests say which they exercise with ``@pytest.mark.covers("KeyClient.get_key", ...)``;
``conftest.py`` checks at run time that each named method was really called, and
``test_sdk_coverage.py`` that every method is covered or excluded."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.aio import KeyClient as AsyncKeyClient
from azure.keyvault.keys.crypto import CryptographyClient
from azure.keyvault.keys.crypto.aio import CryptographyClient as AsyncCryptographyClient

CLIENTS: dict[str, type] = {
    "KeyClient": KeyClient,
    "aio.KeyClient": AsyncKeyClient,
    "CryptographyClient": CryptographyClient,
    "aio.CryptographyClient": AsyncCryptographyClient,
}


def public_methods() -> list[str]:
    """Every public method (functions, class and static methods; not properties)."""
    names = []
    for prefix, cls in CLIENTS.items():
        for name in dir(cls):
            if name.startswith("_"):
                continue
            if callable(inspect.getattr_static(cls, name)) or isinstance(
                inspect.getattr_static(cls, name), (classmethod, staticmethod)
            ):
                names.append(f"{prefix}.{name}")
    return sorted(names)


def resolve(qualified: str) -> tuple[type, str]:
    prefix, _, name = qualified.rpartition(".")
    if prefix not in CLIENTS or not hasattr(CLIENTS[prefix], name):
        raise LookupError(f"{qualified} is not a method of the SDK's key clients")
    return CLIENTS[prefix], name


def recording(original: Any, name: str, calls: set[str]) -> Any:
    """``original`` (a function, classmethod or staticmethod) that also notes its calls."""
    if isinstance(original, (classmethod, staticmethod)):
        inner = original.__func__

        def wrapped_descriptor(*args: Any, **kwargs: Any) -> Any:
            calls.add(name)
            return inner(*args, **kwargs)

        return type(original)(wrapped_descriptor)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        calls.add(name)
        return original(*args, **kwargs)

    return wrapped


@contextlib.contextmanager
def claims_checked(names: Iterable[str], monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Record calls of the named methods while the block runs; fail if one was never
    called. The originals come back when ``monkeypatch`` undoes its changes."""
    claimed = list(names)
    calls: set[str] = set()
    for name in claimed:
        cls, method = resolve(name)
        monkeypatch.setattr(
            cls, method, recording(inspect.getattr_static(cls, method), name, calls)
        )
    yield
    missing = sorted(set(claimed) - calls)
    assert missing == [], f"marked as covered but never called: {missing}"
