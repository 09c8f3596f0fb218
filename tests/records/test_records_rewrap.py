"""Rewrap: every stored key set re-wrapped under the envelope's current KEKs without touching
a record (RECORDS.md 5.4): resumable, with progress, paced, failures reported and the rest
done; and 10,000 key sets after a key rotation in LocalKeyVault."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from envelope import Envelope, LocalKey
from envelope.records import MemoryKeyStore, Records, RewrapProgress, SQLiteKeyStore
from envelope.records._format import parse_key_set
from tests.conftest import kek
from tests.records._vault_process import VaultProcess
from tests.records.conftest import DictStore


def _table(path: Path, rows: list[tuple[str, bytes]]) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE cards (scope TEXT, pan BLOB)")
        db.executemany("INSERT INTO cards VALUES (?, ?)", rows)


def _digest(path: Path) -> str:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT scope, pan FROM cards ORDER BY rowid").fetchall()
    return hashlib.sha256(repr(rows).encode()).hexdigest()


def _key_ids(store: Any, layer: int) -> set[str]:
    ids = set()
    for _, document in store.scan(after=None, limit=10**6):
        ids |= {w.key_id for w in parse_key_set(document).layers[layer].wrapped_keys}
    return ids


def test_rewrap_to_a_new_kek_without_touching_a_record(tmp_path: Path):
    old, outer, new = LocalKey.generate(), LocalKey.generate(), LocalKey.generate()
    store = SQLiteKeyStore(tmp_path / "keys.db")
    records = Records(Envelope([old, outer]), store)
    rows = [(f"tenant-{i}", records.encrypt(b"%d" % i, scope=f"tenant-{i}")) for i in range(50)]
    _table(tmp_path / "app.db", rows)
    before = _digest(tmp_path / "app.db")
    seen: list[RewrapProgress] = []
    bridge = Records(Envelope([[new, old], outer]), store)
    report = bridge.rewrap(batch_size=7, kek_calls_per_second=None, progress=seen.append)
    assert (report.rewrapped, report.unchanged, report.failed, report.done) == (50, 0, (), True)
    assert report.kek_calls == 50 * (2 + 3)  # two unwraps, three wraps per key set
    assert len(seen) == 8
    assert [p.rewrapped for p in seen] == [7, 14, 21, 28, 35, 42, 49, 50]
    assert seen[-1] == report
    assert report.cursor == max(i for i, _ in store.scan(after=None, limit=100))
    assert _key_ids(store, 0) == {new.key_id, old.key_id}
    # The records did not change, and the new KEK alone (with the outer one) opens them.
    assert _digest(tmp_path / "app.db") == before
    reader = Records(Envelope([new, outer]), store)
    for scope, record in rows:
        assert reader.decrypt(record, scope=scope) == scope.split("-")[1].encode()


def test_rewrap_is_resumable(tmp_path: Path):
    keys = [LocalKey.generate(), LocalKey.generate()]
    store = MemoryKeyStore()
    records = Records(Envelope(keys), store)
    for i in range(30):
        records.encrypt(b"v", scope=f"s{i}")
    stops: list[RewrapProgress] = []

    def crash(progress: RewrapProgress) -> None:
        stops.append(progress)
        if len(stops) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        records.rewrap(batch_size=10, kek_calls_per_second=None, progress=crash)
    assert stops[-1].rewrapped == 20
    assert not stops[-1].done
    rest = records.rewrap(after=stops[-1].cursor, batch_size=10, kek_calls_per_second=None)
    assert (rest.rewrapped, rest.done) == (10, True)
    again = records.rewrap(kek_calls_per_second=None)  # harmless to do twice
    assert again.rewrapped == 30


def test_a_bad_key_set_is_reported_and_the_rest_rewrapped(env):
    writer = Records(env, MemoryKeyStore())
    records = [writer.encrypt(b"v", scope=f"s{i}") for i in range(5)]
    documents = dict(writer.store.scan(after=None, limit=10))
    ids = sorted(documents)
    documents[ids[1]] = documents[ids[1]][:-1]  # malformed
    documents[ids[3]] = documents[ids[2]]  # another key set's document under this id
    store = DictStore(documents)
    report = Records(env, store).rewrap(kek_calls_per_second=None)
    assert report.rewrapped == 3
    assert [key_set_id for key_set_id, _ in report.failed] == [ids[1], ids[3]]
    assert "FormatError" in report.failed[0][1]
    assert "names key set" in report.failed[1][1]
    assert records


def test_a_key_set_changed_meanwhile_is_left_alone(env):
    class Racing(DictStore):
        def replace(self, key_set_id: int, old: bytes, new: bytes) -> bool:
            return False  # someone else re-wrapped or shredded it first

    writer = Records(env, MemoryKeyStore())
    writer.encrypt(b"v", scope="s")
    report = Records(env, Racing(dict(writer.store.scan(after=None, limit=10)))).rewrap()
    assert (report.rewrapped, report.unchanged, report.failed) == (0, 1, ())


def test_a_key_set_no_kek_accepts_is_reported_without_a_call(env):
    writer = Records(env, MemoryKeyStore())
    writer.encrypt(b"v", scope="s")
    stranger = Records(Envelope([LocalKey.generate(), LocalKey.generate()]), writer.store)
    report = stranger.rewrap()
    assert report.rewrapped == 0
    assert report.kek_calls == 0
    assert "KeyAccessError" in report.failed[0][1]


def test_rewrap_paces_kek_calls(env):
    writer = Records(env, MemoryKeyStore())
    for i in range(10):
        writer.encrypt(b"v", scope=f"s{i}")
    start = time.monotonic()
    report = writer.rewrap(kek_calls_per_second=100.0, workers=3)
    elapsed = time.monotonic() - start
    assert report.kek_calls == 40
    assert elapsed >= 0.3  # 40 calls at 100 a second, the first batch's slots booked at once


@pytest.mark.parametrize(
    "options",
    [
        {"workers": 0},
        {"batch_size": 0},
        {"kek_calls_per_second": 0.0},
        {"kek_calls_per_second": -1},
    ],
)
def test_bad_rewrap_options(records, options):
    with pytest.raises(ValueError):
        records.rewrap(**options)


def test_a_store_that_cannot_list_is_a_key_access_error(env):
    from envelope import KeyAccessError

    class Broken(DictStore):
        def scan(self, *, after: int | None, limit: int) -> Any:
            raise OSError("gone")

    with pytest.raises(KeyAccessError, match="list"):
        Records(env, Broken()).rewrap()


# 10,000 RSA unwraps by a vault in another process, four at a time: on a loaded machine one
# of them may wait longer than the tests' usual 5 s read timeout (and the vault be marked
# down). This test is about the rewrap, not time bounds, which have tests of their own.
PATIENT: dict[str, float] = {"read_timeout": 60.0, "timeout": 120.0}


@pytest.mark.slow
def test_rewrap_of_10000_key_sets_against_local_key_vault(tmp_path: Path) -> None:
    """A KEK rotated in the vault: every key set re-wrapped under its new version, with the
    records in an application table untouched, and readable with the new version alone.

    The vault runs in a process of its own, as a real one runs on its own machine: in this
    process its request handling would share the interpreter with the client's, and the
    10,000 calls would cost the sum of both."""
    count = 10_000
    with VaultProcess() as vault:
        name = "records-rewrap"
        first_version = vault.create_key(name, "RSA", 2048)
        outer = LocalKey.generate()
        with kek(vault, name, **PATIENT) as versionless:
            store = MemoryKeyStore()
            records = Records(Envelope([versionless, outer]), store)
            values = [(f"tenant-{i}", b"%016d" % i) for i in range(count)]
            rows = [(scope, records.encrypt(value, scope=scope)) for scope, value in values]
            assert len(store) == count
            _table(tmp_path / "app.db", rows)
            before = _digest(tmp_path / "app.db")
            assert _key_ids(store, 0) == {first_version}

            second_version = vault.create_key(name, "RSA", 2048)  # the rotation
        with kek(vault, name, **PATIENT) as current:
            vault.reset_counts()
            started = time.monotonic()
            report = Records(Envelope([current, outer]), store).rewrap(
                batch_size=500, workers=4, kek_calls_per_second=None
            )
            elapsed = time.monotonic() - started
            assert (report.rewrapped, report.unchanged, report.failed) == (count, 0, ())
            counts = vault.operation_counts()
            assert counts["unwrapKey"] == count  # one vault call per key set; wraps are local
        assert _key_ids(store, 0) == {second_version}
        assert _digest(tmp_path / "app.db") == before
        # The new version alone (a versioned id accepts nothing else) opens the records.
        with kek(vault, second_version, **PATIENT) as pinned:
            reader = Records(Envelope([pinned, outer]), store)
            for scope, record in rows[:: count // 100]:
                assert reader.decrypt(record, scope=scope) == values[int(scope.split("-")[1])][1]
    print(f"rewrap of {count} key sets: {elapsed:.1f} s, {count / elapsed:.0f} key sets/s")
