"""What the child processes of the records concurrency tests run (importable by ``spawn``)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from envelope import Envelope, LocalKey, WrappedKey
from envelope.records import KeySetCache, Records, SQLiteKeyStore


class MeetingWrap(LocalKey):
    """A LocalKey that counts its wraps. With ``meet`` (a barrier shared with another
    process) its first wrap waits there: each process has then read the store, found the
    scope empty and made a key set before either adds one."""

    __slots__ = ("meet", "wraps")
    meet: Any
    wraps: int

    def wrap_key(self, data_key: bytes) -> WrappedKey:
        self.wraps = getattr(self, "wraps", 0) + 1
        meet = getattr(self, "meet", None)
        if meet is not None and self.wraps == 1:
            meet.wait(timeout=60)
        return super().wrap_key(data_key)


def records_for(directory: str, *, max_age: float = 60.0, meet: Any = None) -> Records:
    counted = MeetingWrap.load(Path(directory) / "layer-0.key")
    assert isinstance(counted, MeetingWrap)
    counted.meet = meet
    env = Envelope([counted, LocalKey.load(Path(directory) / "layer-1.key")])
    store = SQLiteKeyStore(Path(directory) / "keys.db")
    return Records(env, store, cache=KeySetCache(max_age=max_age))


def first_use(directory: str, name: str, barrier: Any, meet: Any, threads: int) -> None:
    """``threads`` threads of this process encrypt in a new scope at once, just after the
    other process is ready too; the records go to ``{name}.txt``, one text per line, and
    the number of key sets this process made (its wraps) to ``{name}.wraps``. Each
    process's key set is wrapped only once both found the scope empty (``meet``)."""
    records = records_for(directory, meet=meet)
    out: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def work(n: int) -> None:
        start.wait()
        text = records.encrypt_text(f"{name}-{n}".encode(), scope="first-use")
        with lock:
            out.append(text)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    barrier.wait(timeout=60)
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    (Path(directory) / f"{name}.txt").write_text("\n".join(out))
    counted = records.envelope.layers[0][0]
    assert isinstance(counted, MeetingWrap)
    (Path(directory) / f"{name}.wraps").write_text(str(getattr(counted, "wraps", 0)))


def shred(directory: str, scope: str, record_text: str) -> str:
    """Shred ``scope`` here, then report what this process's own decrypt of a record of it
    raises (it must fail at once)."""
    records = records_for(directory)
    records.decrypt(record_text, scope=scope)  # warm: the key set is in this cache too
    deleted = records.shred(scope)
    try:
        records.decrypt(record_text, scope=scope)
    except Exception as exc:
        return f"{deleted} {type(exc).__name__}"
    return f"{deleted} opened"


def decrypt(directory: str, scope: str, record_text: str) -> str:
    try:
        return records_for(directory).decrypt(record_text, scope=scope).decode()
    except Exception as exc:
        return type(exc).__name__
