"""Concurrency is part of correctness: a scope's first use from many threads and from two
processes at once, shredding from another process, single flight of key-set loads for
threads and asyncio tasks, a shred racing a load in flight, and a fork's nonces."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
import time
from pathlib import Path

import pytest

from envelope import Envelope, KeyAccessError, LocalKey, WrappedKey
from envelope.records import MemoryKeyStore, Records, SQLiteKeyStore, from_text
from tests.conftest import run_threads
from tests.core.conftest import Counting
from tests.records import _workers


def _id(record: bytes) -> int:
    return int.from_bytes(record[1:9], "big")


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    for index in range(2):
        LocalKey.generate().save(tmp_path / f"layer-{index}.key")
    return tmp_path


def test_first_use_from_threads_makes_one_key_set(store):
    inner, outer = Counting(delay=0.05), Counting()
    records = Records(Envelope([inner, outer]), store)
    results, errors = run_threads(8, lambda n: records.encrypt(b"%d" % n, scope="new"))
    assert errors == []
    assert len({_id(r) for r in results}) == 1
    assert inner.wraps == outer.wraps == 1  # one key set made, one wrap per KEK
    assert len(store.scan(after=None, limit=10)) == 1
    assert sorted(records.decrypt(r, scope="new") for r in results) == sorted(
        b"%d" % n for n in range(8)
    )


def test_first_use_from_two_processes_and_8_threads_each_agrees_on_one(key_dir: Path):
    context = multiprocessing.get_context("spawn")
    barrier, meet = context.Barrier(2), context.Barrier(2)
    children = [
        context.Process(target=_workers.first_use, args=(str(key_dir), name, barrier, meet, 8))
        for name in ("one", "two")
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(120)
        assert child.exitcode == 0
    texts = [
        line
        for name in ("one", "two")
        for line in (key_dir / f"{name}.txt").read_text().splitlines()
    ]
    assert len(texts) == 16
    # Each process made a key set of its own (one per process: single flight among its
    # threads), and the store took one of them.
    assert [(key_dir / f"{n}.wraps").read_text() for n in ("one", "two")] == ["1", "1"]
    with SQLiteKeyStore(key_dir / "keys.db") as store:
        stored = store.scan(after=None, limit=10)
        assert len(stored) == 1  # both processes ended up with one key set
        assert {_id(from_text(t)) for t in texts} == {stored[0][0]}
        reader = _workers.records_for(str(key_dir))
        opened = sorted(reader.decrypt(t, scope="first-use").decode() for t in texts)
        assert opened == sorted(f"{name}-{n}" for name in ("one", "two") for n in range(8))


def test_a_scope_shredded_from_a_second_process(key_dir: Path):
    records = _workers.records_for(str(key_dir), max_age=1.0)
    gone = records.encrypt_text(b"gone", scope="gone")
    kept = records.encrypt_text(b"kept", scope="kept")
    assert records.decrypt(gone, scope="gone") == b"gone"  # warm
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        assert pool.apply(_workers.shred, (str(key_dir), "gone", gone)) == "1 KeyAccessError"
        # A third process: the shredded scope fails, the other scope is untouched.
        assert pool.apply(_workers.decrypt, (str(key_dir), "gone", gone)) == "KeyAccessError"
        assert pool.apply(_workers.decrypt, (str(key_dir), "kept", kept)) == "kept"
    # This process's cache may still serve the key set for its max age, then it must not.
    deadline = time.monotonic() + 1.0 + 0.5
    while time.monotonic() < deadline:
        try:
            records.decrypt(gone, scope="gone")
        except KeyAccessError:
            break
        time.sleep(0.05)
    with pytest.raises(KeyAccessError):
        records.decrypt(gone, scope="gone")
    assert records.decrypt(kept, scope="kept") == b"kept"


def test_concurrent_first_reads_unwrap_once_per_layer():
    inner, outer = Counting(delay=0.05), Counting(delay=0.05)
    writer = Records(Envelope([inner, outer]), MemoryKeyStore())
    record = writer.encrypt(b"v", scope="s")
    reader = Records(Envelope([inner, outer]), writer.store)
    results, errors = run_threads(100, lambda _: reader.decrypt(record, scope="s"))
    assert errors == []
    assert results == [b"v"] * 100
    assert inner.unwraps == outer.unwraps == 1
    stats = reader.cache.stats()
    assert stats.misses == 1
    assert stats.kek_calls == 2


def test_concurrent_first_reads_from_asyncio_tasks_unwrap_once_per_layer():
    inner, outer = Counting(delay=0.05), Counting(delay=0.05)
    writer = Records(Envelope([inner, outer]), MemoryKeyStore())
    record = writer.encrypt(b"v", scope="s")
    reader = Records(Envelope([inner, outer]), writer.store)

    async def main() -> list[bytes]:
        return list(
            await asyncio.gather(*(reader.decrypt_async(record, scope="s") for _ in range(100)))
        )

    assert asyncio.run(main()) == [b"v"] * 100
    assert inner.unwraps == outer.unwraps == 1


def test_first_use_from_asyncio_tasks_makes_one_key_set():
    inner, outer = Counting(delay=0.05), Counting()
    records = Records(Envelope([inner, outer]), MemoryKeyStore())

    async def main() -> list[bytes]:
        return list(
            await asyncio.gather(
                *(records.encrypt_async(b"%d" % i, scope="new") for i in range(50))
            )
        )

    sealed = asyncio.run(main())
    assert len({_id(r) for r in sealed}) == 1
    assert inner.wraps == 1


def test_cold_decrypt_many_of_10000_records_unwraps_once_per_layer():
    inner, outer = Counting(), Counting()
    writer = Records(Envelope([inner, outer]), MemoryKeyStore())
    values = [os.urandom(16) for _ in range(10_000)]
    sealed = writer.encrypt_many(values, scope="tenant")
    reader = Records(Envelope([inner, outer]), writer.store)
    assert reader.decrypt_many(sealed, scope="tenant") == values
    assert inner.unwraps == outer.unwraps == 1


class _Held(Counting):
    """Counts like :class:`Counting`; each unwrap says it began (``entered``), then waits
    for ``release``."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def unwrap_key(self, wrapped: WrappedKey) -> bytes:
        self._count("unwraps")
        self.entered.set()
        assert self.release.wait(10)
        return self._key.unwrap_key(wrapped)


def test_a_shred_while_a_load_is_in_flight(env):
    inner, outer = _Held(), Counting()
    writer = Records(Envelope([inner, outer]), MemoryKeyStore())
    record = writer.encrypt(b"v", scope="s")
    reader = Records(Envelope([inner, outer]), writer.store)
    outcome: list[object] = []

    def read() -> None:
        try:
            outcome.append(reader.decrypt(record, scope="s"))
        except KeyAccessError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=read)
    thread.start()
    assert inner.entered.wait(10)  # the reader has the document and is unwrapping
    assert inner.unwraps == 1
    assert reader.shred("s") == 1
    inner.release.set()
    thread.join(10)
    # The load that began before the shred lands after it: refused, and loaded again, it
    # finds nothing.
    assert len(outcome) == 1
    assert isinstance(outcome[0], KeyAccessError)
    with pytest.raises(KeyAccessError):
        reader.decrypt(record, scope="s")
    assert reader.cache.stats().entries == 0


def test_hundreds_of_threads_over_many_scopes(records):
    def work(n: int) -> None:
        scope = f"tenant-{n % 17}"
        for i in range(20):
            value = b"%d:%d" % (n, i)
            record = records.encrypt(value, scope=scope, context={"row": str(i)})
            assert records.decrypt(record, scope=scope, context={"row": str(i)}) == value
        batch = records.encrypt_many([b"x"] * 50, scope=scope)
        assert records.decrypt_many(batch, scope=scope) == [b"x"] * 50

    _, errors = run_threads(200, work)
    assert errors == []
    assert len(records.store.scan(after=None, limit=100)) == 17


def test_a_forked_child_draws_its_own_prefix_and_nonces(records):
    parent_first = records.encrypt(b"before the fork")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one record, back through the pipe
        try:
            os.write(write, records.encrypt(b"child"))
        finally:
            os._exit(0)
    os.close(write)
    child = b""
    while chunk := os.read(read, 4096):
        child += chunk
    os.close(read)
    assert os.waitpid(pid, 0)[1] == 0
    parent_next = records.encrypt(b"after the fork")
    assert parent_first[9:17] == parent_next[9:17]  # the parent keeps its epoch
    assert child[9:17] != parent_first[9:17]  # the child has a prefix of its own
    assert child[17:29] not in (parent_first[17:29], parent_next[17:29])
    assert records.decrypt(child) == b"child"
