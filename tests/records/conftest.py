"""Fixtures shared by the records tests: two-layer envelopes over local keys, stores, and a
key store that counts and records what it is asked."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from envelope import Envelope, LocalKey
from envelope.records import MemoryKeyStore, Records, SQLiteKeyStore


@pytest.fixture
def keys() -> tuple[LocalKey, LocalKey]:
    return LocalKey.generate(), LocalKey.generate()


@pytest.fixture
def env(keys: tuple[LocalKey, LocalKey]) -> Envelope:
    return Envelope(list(keys))


@pytest.fixture(params=["memory", "sqlite"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[MemoryKeyStore | SQLiteKeyStore]:
    """Each kind of key store the library ships."""
    if request.param == "memory":
        yield MemoryKeyStore()
        return
    with SQLiteKeyStore(tmp_path / "keys.db") as sqlite:
        yield sqlite


@pytest.fixture
def records(env: Envelope) -> Records:
    return Records(env, MemoryKeyStore())


class DictStore:
    """A key store over a plain dict of documents by id, which a test may rewrite at will
    (the attacker's store); it counts the calls of each method."""

    def __init__(self, documents: dict[int, bytes] | None = None) -> None:
        self.documents: dict[int, Any] = dict(documents or {})
        self.currents: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def _count(self, name: str) -> None:
        with self._lock:
            self.calls[name] = self.calls.get(name, 0) + 1

    def get(self, key_set_id: int) -> Any:
        self._count("get")
        return self.documents.get(key_set_id)

    def current(self, scope: str) -> Any:
        self._count("current")
        key_set_id = self.currents.get(scope)
        return None if key_set_id is None else self.documents.get(key_set_id)

    def add(self, scope: str, key_set_id: int, document: bytes, *, replaces: int | None) -> Any:
        self._count("add")
        with self._lock:
            if self.currents.get(scope) == replaces and key_set_id not in self.documents:
                self.documents[key_set_id] = document
                self.currents[scope] = key_set_id
        return self.current(scope)

    def replace(self, key_set_id: int, old: bytes, new: bytes) -> bool:
        self._count("replace")
        with self._lock:
            if self.documents.get(key_set_id) != old:
                return False
            self.documents[key_set_id] = new
            return True

    def delete_scope(self, scope: str) -> int:
        self._count("delete_scope")
        return 0

    def scan(self, *, after: int | None, limit: int) -> Sequence[tuple[int, Any]]:
        self._count("scan")
        ids = sorted(i for i in self.documents if after is None or i > after)[:limit]
        return [(i, self.documents[i]) for i in ids]


def key_set_id(record: bytes) -> int:
    """The key-set id a record names (bytes 1 to 9)."""
    return int.from_bytes(record[1:9], "big")


def sql(path: Path, statement: str, *args: object) -> None:
    """One statement on a SQLite key store's file, behind the store's back (the attacker)."""
    with sqlite3.connect(path) as connection:
        connection.execute(statement, args)
    connection.close()


def script(source: str, *args: str) -> str:
    """What a Python script printed, run in a process of its own with this checkout's code
    (a hung thread or a raw fork must not take the test process with it)."""
    root = Path(__file__).resolve().parents[2]
    return subprocess.run(
        [sys.executable, "-c", source, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        check=True,
    ).stdout
