"""Caches of data keys: one for encryption (reuse a layer's wrapped data key), one for
decryption (skip the unwrap of a wrapped key seen before).

Both exist because a remote KEK costs milliseconds per call and vaults throttle; both are
off unless an ``Envelope`` is given one. Reusing a data key across messages is safe: every
message derives its own message key from a fresh 256-bit salt (``docs/FORMAT.md`` §6), so
nonces never repeat. What a cache changes is *exposure*: a data key lives in memory longer
and protects more messages, and a KEK that was disabled or deleted keeps "working" for
messages served from the cache until the entry expires. Every entry is therefore bounded by
age, by the number of messages (and, for encryption, bytes) it serves, and the cache by its
number of entries.

This module knows nothing of keys, formats or Azure: values are opaque to it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ._flight import Flight

__all__ = ["CacheStats", "DataKeyCache", "UnwrapCache"]

_V = TypeVar("_V")

#: Defaults, stated in the README ("Caches"). A cached key is dropped at whichever limit it
#: reaches first.
DEFAULT_MAX_AGE = 60.0
DEFAULT_MAX_MESSAGES = 100_000
DEFAULT_MAX_BYTES = 1 << 34  # 16 GiB
DEFAULT_DATA_KEY_ENTRIES = 64
DEFAULT_UNWRAP_ENTRIES = 1024


@dataclass(frozen=True)
class CacheStats:
    """A snapshot of a cache's counters.

    ``hits`` and ``misses`` count lookups (a caller that waited for another's fill and
    then found its value counts a hit); ``kek_calls`` counts the KEK operations of the
    fills misses caused (for a :class:`DataKeyCache` a wrap under every KEK of the
    envelope, for an :class:`UnwrapCache` one unwrap), failed fills included; ``evictions``
    counts entries dropped at a limit; ``entries`` is the current size.
    """

    hits: int
    misses: int
    kek_calls: int
    evictions: int
    entries: int


class _Entry(Generic[_V]):
    __slots__ = ("bytes", "created", "messages", "owner", "value")

    def __init__(self, value: _V, created: float, owner: object, nbytes: int) -> None:
        self.value = value
        self.created = created
        # A new entry has just served the message whose miss filled it.
        self.messages = 1
        self.bytes = nbytes
        # Keeps the object whose id() is part of the cache key alive, so the id is not reused
        # by another object while the entry exists.
        self.owner = owner


class _BoundedCache(Generic[_V]):
    """An LRU map with per-entry age, message and byte limits, counters, and single-flight
    fills; one lock guards all of it."""

    def __init__(
        self, *, max_age: float, max_messages: int, max_bytes: int | None, max_entries: int
    ) -> None:
        if not max_age > 0:
            raise ValueError("max_age must be a positive number of seconds")
        if not isinstance(max_messages, int) or max_messages < 1:
            raise ValueError("max_messages must be a positive integer")
        if max_bytes is not None and (not isinstance(max_bytes, int) or max_bytes < 1):
            raise ValueError("max_bytes must be a positive integer")
        if not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError("max_entries must be a positive integer")
        self._max_age = float(max_age)
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        self._max_entries = max_entries
        self._entries: OrderedDict[Hashable, _Entry[_V]] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = self._misses = self._kek_calls = self._evictions = 0
        # Fills in progress, shared by threads and asyncio tasks of any event loop.
        self._flights: dict[Hashable, Flight] = {}

    @property
    def max_age(self) -> float:
        return self._max_age

    @property
    def max_messages(self) -> int:
        return self._max_messages

    @property
    def max_entries(self) -> int:
        return self._max_entries

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                self._hits, self._misses, self._kek_calls, self._evictions, len(self._entries)
            )

    def clear(self) -> None:
        """Drop every entry (e.g. right after disabling a key); counters are kept."""
        with self._lock:
            self._entries.clear()

    def forget_in_child(self) -> None:
        """In a child just made by ``fork()``, where no other thread exists: a new lock (the
        parent's may have been held by a thread the child does not have), no fills in flight
        (their threads are gone, so they would never land) and no entries; counters are
        kept. No lock is taken: there is no one to exclude."""
        self._lock = threading.Lock()
        self._flights = {}
        self._entries = OrderedDict()

    def discard(self, condition: Callable[[Hashable, _V], bool]) -> int:
        """Drop every entry whose key and value meet ``condition`` (e.g. the key sets of a
        shredded scope); returns how many were dropped, also counted as evictions. A fill
        in flight lands afterwards: a caller that must not see its value checks it."""
        with self._lock:
            doomed = [key for key, entry in self._entries.items() if condition(key, entry.value)]
            for key in doomed:
                del self._entries[key]
            self._evictions += len(doomed)
            return len(doomed)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def get_or_fill(
        self,
        key: Hashable,
        fill: Callable[[], _V | None],
        *,
        nbytes: int = 0,
        owner: object = None,
        kek_calls: int = 1,
    ) -> _V | None:
        """The value under ``key`` charged with one message of ``nbytes``, or else the one
        ``fill()`` makes, remembered unless it is None.

        Single flight: while one caller fills a key, the others asking for it (threads, and
        asyncio tasks of any event loop, see :meth:`get_or_fill_async`) wait and then look
        again, so a cold key costs one fill however many callers want it. If the fill
        raises or returns None, nothing is remembered and each waiter tries a fill of its
        own in turn. ``fill`` makes ``kek_calls`` KEK operations, counted when it runs,
        whether it succeeds or not; ``owner`` is kept alive with the entry.
        """
        while True:
            value, flight, leading = self._claim(key, nbytes)
            if flight is None:
                return value
            if leading or not flight.wait():
                break
        value = None
        try:
            value = fill()
        finally:
            self._land(key, flight if leading else None, value, owner, nbytes, kek_calls)
        return value

    async def get_or_fill_async(
        self,
        key: Hashable,
        fill: Callable[[], Awaitable[_V | None]],
        *,
        nbytes: int = 0,
        owner: object = None,
        kek_calls: int = 1,
    ) -> _V | None:
        """The asyncio twin of :meth:`get_or_fill`: tasks and threads share a fill."""
        while True:
            value, flight, leading = self._claim(key, nbytes)
            if flight is None:
                return value
            if leading or not await flight.wait_async():
                break
        value = None
        try:
            value = await fill()
        finally:
            self._land(key, flight if leading else None, value, owner, nbytes, kek_calls)
        return value

    def _claim(self, key: Hashable, nbytes: int) -> tuple[_V | None, Flight | None, bool]:
        """``(value, None, False)`` for a hit; ``(None, flight, False)`` to wait for the fill
        in flight; ``(None, flight, True)`` when this caller fills (a miss)."""
        with self._lock:
            value = self._lookup(key, nbytes)
            if value is not None:
                return value, None, False
            flight = self._flights.get(key)
            if flight is not None:
                return None, flight, False
            flight = self._flights[key] = Flight()
            self._misses += 1
            return None, flight, True

    def _land(
        self,
        key: Hashable,
        flight: Flight | None,
        value: _V | None,
        owner: object,
        nbytes: int,
        kek_calls: int,
    ) -> None:
        """Book a finished fill, remember its value if it has one, end its flight (None for a
        caller that could not wait for another's fill and made its own)."""
        with self._lock:
            if flight is not None:
                del self._flights[key]
            else:
                self._misses += 1
            self._kek_calls += kek_calls
            if value is not None:
                self._entries[key] = _Entry(value, time.monotonic(), owner, nbytes)
                self._entries.move_to_end(key)
                while len(self._entries) > self._max_entries:
                    self._entries.popitem(last=False)
                    self._evictions += 1
        if flight is not None:
            flight.land()

    def _lookup(self, key: Hashable, nbytes: int) -> _V | None:
        """Under the lock: the value if its entry may serve one more message of ``nbytes``,
        counted as a hit. An entry at a limit is dropped rather than served."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if (
            time.monotonic() - entry.created >= self._max_age
            or entry.messages >= self._max_messages
            or (self._max_bytes is not None and entry.bytes + nbytes > self._max_bytes)
        ):
            del self._entries[key]
            self._evictions += 1
            return None
        entry.messages += 1
        entry.bytes += nbytes
        self._entries.move_to_end(key)
        self._hits += 1
        return entry.value


class DataKeyCache(_BoundedCache[Any]):
    """Reuse each layer's data key and its wrapped copies across messages, for encryption.

    Pass it to ``Envelope(..., data_key_cache=DataKeyCache())``. One entry holds the data
    keys of every layer of one envelope; it serves one-shot encryption (``encrypt``,
    ``encrypt_into``, ``encrypt_async``) until the first limit is reached:

    ``max_age``
        seconds since the keys were wrapped (default 60). Also the bound on how long a
        disabled, expired or deleted KEK, or a rotated-away key version, keeps being used
        for new messages.
    ``max_messages``
        messages per data key (default 100,000): how many messages one leaked data key
        exposes.
    ``max_bytes``
        plaintext bytes per data key (default 16 GiB).
    ``max_entries``
        envelopes sharing this cache (default 64), least recently used dropped first.

    Streams and files always use fresh data keys: their length is unknown up front and
    they are large enough that one KEK call does not matter. Thread-safe; share one cache
    between envelopes freely (entries are per envelope). When an entry is missing or
    expired, one caller wraps new data keys while the others wait for them
    (:meth:`get_or_fill`). ``stats()`` returns the counters.
    """

    def __init__(
        self,
        *,
        max_age: float = DEFAULT_MAX_AGE,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_entries: int = DEFAULT_DATA_KEY_ENTRIES,
    ) -> None:
        super().__init__(
            max_age=max_age,
            max_messages=max_messages,
            max_bytes=max_bytes,
            max_entries=max_entries,
        )

    @property
    def max_bytes(self) -> int:
        assert self._max_bytes is not None
        return self._max_bytes

    def __repr__(self) -> str:
        return (
            f"DataKeyCache(max_age={self._max_age}, max_messages={self._max_messages}, "
            f"max_bytes={self._max_bytes}, max_entries={self._max_entries})"
        )


class UnwrapCache(_BoundedCache[bytes]):
    """Remember unwrapped data keys, for decryption: a message whose wrapped key was seen
    before is opened without a KEK call.

    Pass it to ``Envelope(..., unwrap_cache=UnwrapCache())``. An entry is keyed by the KEK
    object, the key id, the wrap algorithm and the wrapped bytes, and is stored only after
    the data key matched its layer's commitment, so a forged header never enters it. The
    header's key ids are still checked against the envelope's KEKs before every lookup.

    ``max_age`` (default 60 s) bounds how long a disabled or deleted KEK keeps opening
    messages served from the cache; ``max_messages`` (default 100,000) bounds the uses of
    one entry; ``max_entries`` (default 1,024) the number of data keys held in memory.
    Thread-safe. Concurrent decryptions that need the same wrapped key unwrap it once: one
    caller asks the KEK, the others wait for its answer (:meth:`get_or_fill`).
    ``stats()`` returns the counters.
    """

    def __init__(
        self,
        *,
        max_age: float = DEFAULT_MAX_AGE,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        max_entries: int = DEFAULT_UNWRAP_ENTRIES,
    ) -> None:
        super().__init__(
            max_age=max_age, max_messages=max_messages, max_bytes=None, max_entries=max_entries
        )

    def __repr__(self) -> str:
        return (
            f"UnwrapCache(max_age={self._max_age}, max_messages={self._max_messages}, "
            f"max_entries={self._max_entries})"
        )
