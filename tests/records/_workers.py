"""What the child processes of the records concurrency tests run (importable by ``spawn``)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from envelope import Envelope, LocalKey, WrappedKey
from envelope.records import KeySetCache, Records, SQLiteKeyStore


class SlowWrap(LocalKey):
    """A LocalKey whose wraps take ``delay`` seconds (and are counted), so that two
    processes creating a scope's first key set really overlap. With ``meet`` (a barrier
    shared with another process) the first wrap waits there instead: each process has then
    read the store, found it empty and made a key set before either adds one."""

    __slots__ = ("delay", "meet", "wraps")
    delay: float
    meet: Any
    wraps: int

    def wrap_key(self, data_key: bytes) -> WrappedKey:
        self.wraps = getattr(self, "wraps", 0) + 1
        meet = getattr(self, "meet", None)
        if meet is not None and self.wraps == 1:
            meet.wait(timeout=60)
        else:
            time.sleep(getattr(self, "delay", 0.0))
        return super().wrap_key(data_key)


def records_for(
    directory: str, *, delay: float = 0.0, max_age: float = 60.0, meet: Any = None
) -> Records:
    slow = SlowWrap.load(Path(directory) / "layer-0.key")
    assert isinstance(slow, SlowWrap)
    slow.delay = delay
    slow.meet = meet
    env = Envelope([slow, LocalKey.load(Path(directory) / "layer-1.key")])
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
    slow = records.envelope.layers[0][0]
    assert isinstance(slow, SlowWrap)
    (Path(directory) / f"{name}.wraps").write_text(str(getattr(slow, "wraps", 0)))


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
