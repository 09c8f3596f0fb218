"""The embedded key store: key-set documents in a SQLite file (stdlib ``sqlite3``).

Several processes may share one file: every change is one ``BEGIN IMMEDIATE`` transaction,
so a scope's first key set and a rotation are agreed on by all of them (``docs/RECORDS.md``
section 5.3), and readers wait for a writer's lock up to ``timeout`` seconds. Deleted
documents are overwritten in the file (``PRAGMA secure_delete``), so that a shredded scope's
wrapped data keys do not linger in its free pages (what that does not reach: RECORDS.md
section 6.4). The file is created with mode 0600.

The file is as untrusted as the documents in it: a value is read only after SQL has said it
is a blob of a length a document may have (``typeof``, ``length``), so a row rewritten to
hold text, a number or a huge blob costs nothing to refuse.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .._limits import MAX_KEY_SET_BYTES
from . import _fork

__all__ = ["SQLiteKeyStore"]

_SCHEMA_VERSION = 1
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS envelope_key_sets "
    "(id INTEGER PRIMARY KEY, scope TEXT NOT NULL, document BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS envelope_key_sets_by_scope ON envelope_key_sets (scope)",
    "CREATE TABLE IF NOT EXISTS envelope_scopes (scope TEXT PRIMARY KEY, current INTEGER NOT NULL)",
)
#: Every query that reads a document takes ``substr(document, 1, ?)`` with this bound and
#: ``typeof(document)``: the blob cut one byte past the longest a document may be (the reader
#: sees that it is too long, and SQLite hands over no more), and its SQL type, checked
#: before the value is used.
_CUT = MAX_KEY_SET_BYTES + 1
#: Connections of a parent process, kept from being closed by a forked child.
_INHERITED: list[sqlite3.Connection] = []


class SQLiteKeyStore:
    """A :class:`~envelope.records.KeyStore` in the SQLite database at ``path`` (created if
    missing, mode 0600). Thread-safe: each thread uses its own connection; safe for several
    processes on one file (a forked child opens its own connections)."""

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        self._path = Path(path)
        self._timeout = float(timeout)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()
        _fork.register(self)
        if not self._path.exists():
            # Created here with 0600 rather than by SQLite with the umask's mode: the file
            # holds wrapped data keys and the scopes' names.
            with contextlib.suppress(FileExistsError):  # another process was first
                os.close(os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        with self._transaction() as connection:
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, _SCHEMA_VERSION):
                raise ValueError(f"{self._path}: unknown key store schema version {version}")
            for statement in _SCHEMA:
                connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

    @property
    def path(self) -> Path:
        return self._path

    def get(self, key_set_id: int) -> bytes | None:
        row = (
            self._connection()
            .execute(
                "SELECT substr(document, 1, ?), typeof(document) FROM envelope_key_sets "
                "WHERE id = ?",
                (_CUT, _sql_id(key_set_id)),
            )
            .fetchone()
        )
        return None if row is None else _blob(*row)

    def current(self, scope: str) -> bytes | None:
        return _current(self._connection(), scope)

    def add(
        self, scope: str, key_set_id: int, document: bytes, *, replaces: int | None
    ) -> bytes | None:
        with self._transaction() as connection:
            row = connection.execute(
                "SELECT current FROM envelope_scopes WHERE scope = ?", (scope,)
            ).fetchone()
            current = None if row is None else _id(row[0])
            taken = connection.execute(
                "SELECT 1 FROM envelope_key_sets WHERE id = ?", (_sql_id(key_set_id),)
            ).fetchone()
            if current == replaces and taken is None:
                connection.execute(
                    "INSERT INTO envelope_key_sets (id, scope, document) VALUES (?, ?, ?)",
                    (_sql_id(key_set_id), scope, bytes(document)),
                )
                connection.execute(
                    "INSERT INTO envelope_scopes (scope, current) VALUES (?, ?) "
                    "ON CONFLICT (scope) DO UPDATE SET current = excluded.current",
                    (scope, _sql_id(key_set_id)),
                )
            return _current(connection, scope)

    def replace(self, key_set_id: int, old: bytes, new: bytes) -> bool:
        with self._transaction() as connection:
            changed = connection.execute(
                "UPDATE envelope_key_sets SET document = ? WHERE id = ? AND document = ?",
                (bytes(new), _sql_id(key_set_id), bytes(old)),
            ).rowcount
            return bool(changed == 1)

    def delete_scope(self, scope: str) -> int:
        with self._transaction() as connection:
            deleted = connection.execute(
                "DELETE FROM envelope_key_sets WHERE scope = ?", (scope,)
            ).rowcount
            connection.execute("DELETE FROM envelope_scopes WHERE scope = ?", (scope,))
            return int(deleted)

    def scan(self, *, after: int | None, limit: int) -> list[tuple[int, bytes]]:
        start = 0 if after is None else _sql_id(after)
        rows = (
            self._connection()
            .execute(
                "SELECT id, substr(document, 1, ?), typeof(document) FROM envelope_key_sets "
                "WHERE id > ? ORDER BY id LIMIT ?",
                (_CUT, start, limit),
            )
            .fetchall()
        )
        return [(_id(key_set_id), _blob(document, kind)) for key_set_id, document, kind in rows]

    def close(self) -> None:
        """Close every connection this store opened in this process."""
        with self._lock:
            connections, self._connections = self._connections, []
        if self._pid == os.getpid():
            for connection in connections:
                connection.close()
        self._local = threading.local()

    def __enter__(self) -> SQLiteKeyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SQLiteKeyStore({str(self._path)!r})"

    # -- connections ----------------------------------------------------------------------

    def _after_fork(self) -> None:
        # In a forked child (no other thread exists): a new lock (a parent thread may have
        # held this one), and no connection of the parent's.
        self._lock = threading.Lock()
        self._forget_connections()

    def _forget_connections(self) -> None:
        """A connection must not cross a fork: the child starts afresh and leaves the
        parent's connections open, untouched, to the parent."""
        _INHERITED.extend(self._connections)
        self._pid = os.getpid()
        self._connections = []
        self._local = threading.local()

    def _connection(self) -> sqlite3.Connection:
        if self._pid != os.getpid():  # a copy of the process that ran no fork hook
            with self._lock:
                self._forget_connections()
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(
                self._path, timeout=self._timeout, isolation_level=None, check_same_thread=False
            )
            connection.execute("PRAGMA secure_delete = ON")
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        connection = self._connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")


def _current(connection: sqlite3.Connection, scope: str) -> bytes | None:
    row = connection.execute(
        "SELECT substr(k.document, 1, ?), typeof(k.document) FROM envelope_scopes AS s "
        "JOIN envelope_key_sets AS k ON k.id = s.current WHERE s.scope = ?",
        (_CUT, scope),
    ).fetchone()
    return None if row is None else _blob(*row)


def _blob(document: object, kind: object) -> bytes:
    """A document column's value, which SQL said is of type ``kind``: bytes if a blob."""
    if kind != "blob" or not isinstance(document, bytes):
        raise TypeError(f"the key store holds a document that is not a blob (but {kind})")
    return document


def _sql_id(key_set_id: int) -> int:
    """Key-set ids are below 2^63, so they are SQLite integers as they are."""
    if not isinstance(key_set_id, int) or not 0 < key_set_id < 2**63:
        raise ValueError(f"a key-set id is 1 to 2^63 - 1, not {key_set_id!r}")
    return key_set_id


def _id(value: object) -> int:
    if not isinstance(value, int):
        raise TypeError(f"the key store holds a key-set id that is not an integer: {value!r}")
    return value
