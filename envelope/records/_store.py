"""Key stores: where key-set documents live (``docs/RECORDS.md`` section 9).

:class:`KeyStore` is the protocol a store implements, so users can keep key sets in their own
database; :class:`MemoryKeyStore` is the in-process one. Stores hold documents as opaque bytes
and are not trusted: everything they return is parsed and checked by the caller.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from . import _fork

__all__ = ["KeyStore", "MemoryKeyStore"]


@runtime_checkable
class KeyStore(Protocol):
    """Where :class:`~envelope.records.Records` keeps its key-set documents.

    A store keeps documents (``bytes``, stored verbatim) by key-set id, a positive integer
    below 2^63 unique in the store, and one *current* key set per scope. Each method is
    atomic; several processes may share a store. Any exception a method raises reaches the
    caller of ``Records`` as a :class:`~envelope.KeyAccessError` whose ``__cause__`` it is.

    In SQL terms: a table ``key_sets(id BIGINT PRIMARY KEY, scope TEXT, document BYTEA)``
    with an index on ``scope``, and a table ``scopes(scope TEXT PRIMARY KEY, current BIGINT)``;
    ``add`` is one transaction that reads the scope's row ``FOR UPDATE`` (or runs
    serializable), checks it, inserts the key set and upserts the scope.
    """

    def get(self, key_set_id: int) -> bytes | None:
        """The document stored under ``key_set_id``, or None."""
        ...

    def current(self, scope: str) -> bytes | None:
        """The document of ``scope``'s current key set, or None if it has none."""
        ...

    def add(
        self, scope: str, key_set_id: int, document: bytes, *, replaces: int | None
    ) -> bytes | None:
        """Store ``document`` under ``key_set_id`` as ``scope``'s new current key set, if the
        scope's current key set has the id ``replaces`` (None: the scope has none) and no
        document of the store has ``key_set_id``; otherwise store nothing. Either way,
        return the scope's current document after the call (None if it has none)."""
        ...

    def replace(self, key_set_id: int, old: bytes, new: bytes) -> bool:
        """Replace the document under ``key_set_id`` by ``new`` if it is exactly ``old``;
        return whether it did."""
        ...

    def delete_scope(self, scope: str) -> int:
        """Delete every document of ``scope`` and its current key set; return how many
        documents were deleted. A store on disk should overwrite the deleted bytes."""
        ...

    def scan(self, *, after: int | None, limit: int) -> Sequence[tuple[int, bytes]]:
        """Up to ``limit`` ``(key_set_id, document)`` pairs with ids greater than ``after``
        (all ids if None), in increasing id order."""
        ...


class MemoryKeyStore:
    """A :class:`KeyStore` in this process's memory: for tests, and for data that lives no
    longer than the process. Thread-safe."""

    def __init__(self) -> None:
        self._documents: dict[int, tuple[str, bytes]] = {}
        self._current: dict[str, int] = {}
        self._lock = threading.Lock()
        _fork.register(self)

    def get(self, key_set_id: int) -> bytes | None:
        with self._lock:
            found = self._documents.get(key_set_id)
            return None if found is None else found[1]

    def current(self, scope: str) -> bytes | None:
        with self._lock:
            return self._current_document(scope)

    def add(
        self, scope: str, key_set_id: int, document: bytes, *, replaces: int | None
    ) -> bytes | None:
        with self._lock:
            if self._current.get(scope) == replaces and key_set_id not in self._documents:
                self._documents[key_set_id] = (scope, bytes(document))
                self._current[scope] = key_set_id
            return self._current_document(scope)

    def replace(self, key_set_id: int, old: bytes, new: bytes) -> bool:
        with self._lock:
            found = self._documents.get(key_set_id)
            if found is None or found[1] != old:
                return False
            self._documents[key_set_id] = (found[0], bytes(new))
            return True

    def delete_scope(self, scope: str) -> int:
        with self._lock:
            doomed = [i for i, (owner, _) in self._documents.items() if owner == scope]
            for key_set_id in doomed:
                del self._documents[key_set_id]
            self._current.pop(scope, None)
            return len(doomed)

    def scan(self, *, after: int | None, limit: int) -> list[tuple[int, bytes]]:
        with self._lock:
            ids = sorted(i for i in self._documents if after is None or i > after)[:limit]
            return [(i, self._documents[i][1]) for i in ids]

    def __len__(self) -> int:
        with self._lock:
            return len(self._documents)

    def _after_fork(self) -> None:
        # In a forked child, where no other thread exists: a parent thread may have held it.
        self._lock = threading.Lock()

    def _current_document(self, scope: str) -> bytes | None:
        key_set_id = self._current.get(scope)
        return None if key_set_id is None else self._documents[key_set_id][1]

    def __repr__(self) -> str:
        return f"MemoryKeyStore({len(self)} key sets)"
