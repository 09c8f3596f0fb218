"""The key stores against the contract of RECORDS.md section 9 (MemoryKeyStore and
SQLiteKeyStore alike), and what only the SQLite store promises: its file's mode, several
processes and connections on one file, a fork, and deleted documents overwritten."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from envelope import Envelope, KeyAccessError, LocalKey
from envelope.records import KeyStore, MemoryKeyStore, Records, SQLiteKeyStore


def test_both_stores_are_key_stores(store):
    assert isinstance(store, KeyStore)
    assert repr(store)


def test_add_is_conditional_on_the_current_key_set(store):
    assert store.current("s") is None
    assert store.add("s", 1, b"one", replaces=None) == b"one"
    assert store.current("s") == b"one"
    # A second first key set, or one that replaces a key set that is not current: refused.
    assert store.add("s", 2, b"two", replaces=None) == b"one"
    assert store.add("s", 2, b"two", replaces=7) == b"one"
    assert store.get(2) is None
    assert store.add("s", 2, b"two", replaces=1) == b"two"
    assert store.get(1) == b"one"  # old key sets stay
    assert store.current("s") == b"two"


def test_add_refuses_an_id_the_store_has(store):
    store.add("s", 5, b"five", replaces=None)
    assert store.add("t", 5, b"other", replaces=None) is None  # t has no key set
    assert store.add("s", 5, b"again", replaces=5) == b"five"
    assert store.get(5) == b"five"
    assert store.current("t") is None


def test_replace_only_the_expected_document(store):
    store.add("s", 1, b"one", replaces=None)
    assert store.replace(1, b"not it", b"new") is False
    assert store.replace(2, b"one", b"new") is False
    assert store.get(1) == b"one"
    assert store.replace(1, b"one", b"new") is True
    assert store.get(1) == b"new"
    assert store.current("s") == b"new"


def test_delete_scope_touches_no_other_scope(store):
    store.add("s", 1, b"1", replaces=None)
    store.add("s", 2, b"2", replaces=1)
    store.add("t", 3, b"3", replaces=None)
    assert store.delete_scope("s") == 2
    assert store.delete_scope("s") == 0
    assert store.get(1) is None
    assert store.get(2) is None
    assert store.current("s") is None
    assert store.get(3) == b"3"
    assert store.current("t") == b"3"
    assert store.add("s", 4, b"4", replaces=None) == b"4"  # a scope starts afresh


def test_scan_pages_in_id_order(store):
    ids = [9, 2**63 - 1, 1, 77, 5, 2**40]
    for key_set_id in ids:
        store.add(f"s{key_set_id}", key_set_id, b"d%d" % key_set_id, replaces=None)
    assert [i for i, _ in store.scan(after=None, limit=100)] == sorted(ids)
    pages, after = [], None
    while page := store.scan(after=after, limit=2):
        pages.append([i for i, _ in page])
        after = page[-1][0]
    assert pages == [[1, 5], [9, 77], [2**40, 2**63 - 1]]
    assert dict(store.scan(after=None, limit=100))[77] == b"d77"


def test_scopes_are_compared_exactly(store):
    for index, scope in enumerate(["", "a", "A", "a ", "\u00e9", "e\u0301"]):
        assert store.add(scope, index + 1, scope.encode() or b"-", replaces=None) is not None
    assert store.current("\u00e9") == "\u00e9".encode()
    assert store.current("e\u0301") == "e\u0301".encode()
    assert store.current("") == b"-"


# -- SQLite ---------------------------------------------------------------------------------


def test_the_file_is_created_0600(tmp_path: Path):
    path = tmp_path / "keys.db"
    with SQLiteKeyStore(path) as store:
        store.add("s", 1, b"d", replaces=None)
        assert store.path == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_existing_file_is_used_as_it_is(tmp_path: Path):
    path = tmp_path / "keys.db"
    with SQLiteKeyStore(path) as first:
        first.add("s", 1, b"d", replaces=None)
    os.chmod(path, 0o640)
    with SQLiteKeyStore(path) as second:
        assert second.get(1) == b"d"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_an_unknown_schema_version_is_refused(tmp_path: Path):
    path = tmp_path / "keys.db"
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA user_version = 9")
    connection.close()
    with pytest.raises(ValueError, match="schema version 9"):
        SQLiteKeyStore(path)


def test_two_stores_on_one_file_see_each_other(tmp_path: Path):
    path = tmp_path / "keys.db"
    with SQLiteKeyStore(path) as one, SQLiteKeyStore(path) as two:
        assert one.add("s", 1, b"one", replaces=None) == b"one"
        assert two.add("s", 2, b"two", replaces=None) == b"one"
        assert two.current("s") == b"one"
        assert two.delete_scope("s") == 1
        assert one.get(1) is None


def test_deleted_documents_are_overwritten_in_the_file(tmp_path: Path):
    path = tmp_path / "keys.db"
    secret = os.urandom(48)
    with SQLiteKeyStore(path) as store:
        store.add("shred-me", 1, b"document" + secret, replaces=None)
        store.add("keep-me", 2, b"document" + os.urandom(48), replaces=None)
        assert secret in path.read_bytes()
        assert store.delete_scope("shred-me") == 1
        assert secret not in path.read_bytes()
        assert store.get(2) is not None


def test_shredding_through_records_leaves_no_wrapped_key_in_the_file(tmp_path: Path):
    path = tmp_path / "keys.db"
    records = Records(Envelope([LocalKey.generate(), LocalKey.generate()]), SQLiteKeyStore(path))
    record = records.encrypt(b"v", scope="tenant-42")
    document = records.store.get(int.from_bytes(record[1:9], "big"))
    assert isinstance(document, bytes)
    wrapped = document[-60:]  # the outer layer's wrapped data key
    assert wrapped in path.read_bytes()
    records.shred("tenant-42")
    assert wrapped not in path.read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name != "keys.db"]  # no journal left


def test_threads_use_their_own_connections(tmp_path: Path):
    from tests.conftest import run_threads

    with SQLiteKeyStore(tmp_path / "keys.db") as store:
        results, errors = run_threads(
            16, lambda n: store.add(f"s{n}", n + 1, b"%d" % n, replaces=None)
        )
        assert errors == []
        assert sorted(results) == sorted(b"%d" % n for n in range(16))  # type: ignore[type-var]


def test_a_forked_child_opens_its_own_connection(tmp_path: Path):
    with SQLiteKeyStore(tmp_path / "keys.db") as store:
        store.add("s", 1, b"parent", replaces=None)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                if store.get(1) == b"parent" and store.add("t", 2, b"child", replaces=None):
                    code = 0
            finally:
                os._exit(code)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        assert store.get(2) == b"child"  # the parent's connection still works
        assert store.current("s") == b"parent"


def test_a_locked_database_is_a_key_access_error(tmp_path: Path):
    path = tmp_path / "keys.db"
    records = Records(Envelope([LocalKey.generate()]), SQLiteKeyStore(path, timeout=0.1))
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(KeyAccessError, match="locked") as caught:
            records.encrypt(b"v", scope="s")
        assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert records.decrypt(records.encrypt(b"v", scope="s"), scope="s") == b"v"


def test_memory_store_length():
    store = MemoryKeyStore()
    store.add("s", 1, b"d", replaces=None)
    assert len(store) == 1
